"""Adapters to the outside systems a runbook reaches: PostgreSQL, Prometheus, the FraiseQL HTTP
surface and its metrics, and the inventory's commands. No verdicts here: checks decide."""
