"""Runbook §3: one module per notebook under notebooks/monitoring/."""
