"""Fault flags the sandbox drops into --state-dir (``faults.json``), read cheaply: one stat
per request, parsed again only when the file changes.

Each flag is ``name: {settings}``; the stand-in acts on these (anything else is ignored):

- ``error-spike`` ``{"operation": "posts"}``: that operation fails with a database error.
- ``slow-query`` ``{"delay_ms": 1500}``: every GraphQL database statement first sleeps in
  PostgreSQL (``pg_sleep`` inside the statement), and the query result cache is bypassed so
  every request pays it, as uncacheable traffic would.
- ``memory-leak`` ``{"bytes_per_request": N, "max_bytes": M}``: N bytes kept per request, up to
  M (default a quarter of the memory available when it starts, at most 4 GiB), freed when
  the flag goes.
- ``leak-connections`` ``{"count": N}``: N pool connections checked out and left idle in
  transaction (``BEGIN; SELECT 1``) until the flag goes, then rolled back and returned.
- ``oidc-down`` ``{}``: the discovery document and the JWKS answer 503.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

_log = logging.getLogger("fraiseql_standin")


class FaultFlags:
    """``STATE_DIR/faults.json``: which injected faults are active right now."""

    def __init__(self, state_dir: Path | None) -> None:
        self._path = state_dir / "faults.json" if state_dir else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._faults: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        try:
            st = self._path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._faults = self._load() if stamp else {}
            return self._faults

    def _load(self) -> dict[str, Any]:
        assert self._path is not None
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _log.warning("ignoring unreadable fault file %s", self._path)
            return {}
        if not isinstance(data, dict):
            return {}
        active = sorted(data)
        _log.debug("fault flags now: %s", ", ".join(active) if active else "none")
        return data


def int_setting(settings: Any, key: str, default: int, low: int, high: int) -> int:
    """An integer fault setting, clamped to [low, high]; `default` when absent or not an int.

    Fault files are written by the sandbox, but a hand-edited one must not crash a request or
    make the stand-in sleep for an hour.
    """
    value = settings.get(key, default) if isinstance(settings, dict) else default
    if not isinstance(value, int) or isinstance(value, bool):
        value = default
    return max(low, min(high, value))
