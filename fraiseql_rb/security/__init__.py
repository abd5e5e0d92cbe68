"""Runbook §8.1: the daily, weekly and monthly security reviews, one module per notebook."""
