"""Runbook §8.1: the daily, weekly and monthly security reviews, one module per notebook
(notebooks/security/X.ipynb -> X.py); `compliance` and `monthly_pdf` are helpers of
monthly_security_report."""
