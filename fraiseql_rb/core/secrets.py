"""Masking of secret values in anything we display or write.

Secrets are collected where they are read (inventory, environment) into one process-wide
registry; every artifact writer passes its text through `mask`. Masking is by value, so a
token is hidden wherever it leaks: an exception message, a log line, a URL.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

MASK = "***"

# Environment variables whose values are treated as secrets even if no inventory names them.
SECRET_ENV_PATTERN = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|PRIVATE_KEY|CREDENTIAL)",
                                re.IGNORECASE)
# Parameter or evidence keys whose values are always masked.
SECRET_KEY_PATTERN = re.compile(r"(token|password|passwd|secret|api_key|credential)$",
                                re.IGNORECASE)
# The runner's own variables (the run's spec); never passed on to a child process.
PRIVATE_ENV_PREFIX = "FRAISEQL_RB_RUN"
# user:password@ in any URL, whatever the scheme.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)")
# Secrets shorter than this are not masked by value: masking "1" would shred every number.
_MIN_SECRET_LEN = 6

_lock = threading.Lock()
_secrets: set[str] = set()


def register(value: str | None) -> None:
    """Remember a secret value so that `mask` hides it from now on."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def register_environment(environ: dict[str, str] | None = None) -> None:
    """Register the values of secret-looking environment variables."""
    for name, value in (environ if environ is not None else os.environ).items():
        if SECRET_ENV_PATTERN.search(name):
            register(value)


def known() -> list[str]:
    """Registered secrets, longest first so that overlapping values mask completely."""
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def mask(text: str, extra: list[str] | None = None) -> str:
    """Hide every known secret and every URL password in `text`."""
    if not text:
        return text
    for secret in known() + [s for s in (extra or []) if s and len(s) >= _MIN_SECRET_LEN]:
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def clean_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process a runbook starts (restart_command, pg_restore, ...).

    Such processes outlive the run (a restarted server keeps its environment for weeks), so
    they get none of our secrets: no secret-named variable, no variable holding a registered
    secret or a URL with a password, and none of the runner's own variables.
    """
    source = os.environ if environ is None else environ
    values = known()
    clean = {}
    for name, value in source.items():
        if (SECRET_ENV_PATTERN.search(name) or name.startswith(PRIVATE_ENV_PREFIX)
                or _URL_PASSWORD.search(value) or any(s in value for s in values)):
            continue
        clean[name] = value
    return clean


def mask_data(value: Any, extra: list[str] | None = None) -> Any:
    """Mask secrets throughout a JSON-like structure; secret-named keys lose their value."""
    if isinstance(value, str):
        return mask(value, extra)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and SECRET_KEY_PATTERN.search(key) and item not in (None, ""):
                out[key] = MASK
            else:
                out[key] = mask_data(item, extra)
        return out
    if isinstance(value, (list, tuple)):
        return [mask_data(item, extra) for item in value]
    return value
