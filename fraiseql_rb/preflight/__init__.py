"""Runbook §1 and §10: one module per notebook under notebooks/preflight/."""
