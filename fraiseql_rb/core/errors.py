"""Exit codes and the errors that map onto them.

The codes are a contract (DESIGN.md): schedulers and wrappers branch on them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2
EXIT_UNKNOWN = 3
EXIT_USAGE = 64


class RunbookError(Exception):
    """An error the CLI reports as one line; `exit_code` says how the process ends."""

    exit_code = EXIT_UNKNOWN


class UsageError(RunbookError):
    """Bad input from the user: unknown runbook, bad parameter, missing file."""

    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    """The inventory is missing, malformed, or lacks what a runbook needs."""


class SecretError(UsageError):
    """A secret the inventory names cannot be read (unset variable, unreadable file)."""
