"""Runbook §1 and §10 (notebooks/preflight/): the operational checklist's items. The
config-preflight notebook composes checks only (checks.config, tls, database, cache, host)."""
