"""Adapters to the outside systems a runbook reaches: PostgreSQL, Prometheus, the FraiseQL HTTP
surface and its /metrics, the inventory's commands. They say how to reach and read a system;
the checks that judge what they read live in checks/ and in the runbook modules."""
