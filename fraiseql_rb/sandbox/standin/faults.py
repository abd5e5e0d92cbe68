"""Fault flags the sandbox drops into --state-dir (``faults.json``), read cheaply: one stat
per request, parsed again only when the file changes; and ``MemoryLeak``, the memory the
``memory-leak`` drill holds.

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
- ``observer-fail`` ``{"events_processed": N, "errors": E}`` (both optional): the observer
  runtime has stopped, so /health says ``degraded`` (200) with an ``observers`` block.
- ``bad-release`` ``{"release": R}``: a stand-in emulating any release but R (the one running
  when the fault was injected) selects a column its views lack in every GraphQL read, so each
  fails with PostgreSQL's ``column v_post.summary does not exist`` (``DATABASE_ERROR``, 500),
  uncached. /health stays ``healthy`` with the new version: the real server's health check
  only connects (routes/health.rs), it runs none of the schema's queries.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

MAX_LEAK_BYTES = 4 << 30  # the memory-leak drill must never take the host down

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


class MemoryLeak:
    """The ``memory-leak`` drill: a chunk of memory kept per request while the flag is set.

    Growth stops at a cap (the setting ``max_bytes``, else a quarter of the memory available
    when the leak starts, at most 4 GiB): a drill left on must not take the host down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[bytearray] = []
        self._bytes = 0
        self._cap: int | None = None

    def grow(self, flag: dict[str, Any]) -> None:
        """Keep one more chunk (``bytes_per_request``, default 1 MiB) unless the cap is hit."""
        size = int_setting(flag, "bytes_per_request", 1 << 20, 1, 64 << 20)
        with self._lock:
            if self._cap is None:
                self._cap = int_setting(flag, "max_bytes", _default_leak_cap(), 0,
                                        MAX_LEAK_BYTES)
            if self._bytes + size <= self._cap:
                self._chunks.append(bytearray(b"\xa5") * size)  # written, so it is resident
                self._bytes += size

    def release(self) -> None:
        """Drop the chunks and hand the pages back to the OS (glibc keeps them else)."""
        with self._lock:
            if not self._chunks and self._cap is None:
                return
            self._chunks.clear()
            self._bytes, self._cap = 0, None
        _malloc_trim()


def _default_leak_cap() -> int:
    """A quarter of MemAvailable (Linux), else 1 GiB; never above MAX_LEAK_BYTES."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return min(MAX_LEAK_BYTES, int(line.split()[1]) * 1024 // 4)
    return 1 << 30


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc only; elsewhere freeing is enough)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
