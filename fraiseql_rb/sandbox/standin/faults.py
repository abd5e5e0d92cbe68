"""Fault flags the sandbox drops into --state-dir (``faults.json``), read cheaply: one stat
per request, parsed again only when the file changes.
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
        _log.info("fault flags now: %s", ", ".join(active) if active else "none")
        return data
