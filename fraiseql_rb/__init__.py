"""Executable runbooks for FraiseQL: checks, findings and a papermill runner."""

__version__ = "0.1.0"
