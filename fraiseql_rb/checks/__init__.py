"""Reusable checks by domain (database, tls, config, host, cache, backup, audit, alert rules):
the checks more than one runbook calls, each under its one name."""
