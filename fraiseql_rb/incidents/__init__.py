"""Incident playbooks (runbook §4): the checks and the diagnosis behind each incident notebook."""
