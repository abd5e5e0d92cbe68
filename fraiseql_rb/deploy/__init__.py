"""Runbook §2: one module per notebook under notebooks/deploy/ that needs code of its own."""
