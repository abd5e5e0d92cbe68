"""Where a run is, on stderr: each step as it starts, each finding as it is recorded, and a
bar with the time left for long waits (sampling windows, a restart's health wait).

Two halves: the kernel announces a wait with `waiting()` (a small JSON file the runner named),
and the runner's `Reporter` prints steps, new findings and the bar. On a terminal the bar is
tqdm's; without one (cron, CI) every event is one plain line; `--quiet` prints nothing.
stdout is never touched: its last line is the artifact directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

POLL_S = 0.25

_waits_file: Path | None = None


def configure(path: str | Path | None) -> None:
    """Kernel side: where `waiting` announces waits (None: not under the runner)."""
    global _waits_file
    _waits_file = Path(path) if path else None


@contextlib.contextmanager
def waiting(label: str, total_s: float) -> Iterator[None]:
    """Kernel side: announce a wait of up to `total_s` seconds for the runner's bar."""
    path = _waits_file
    if path is None or total_s < 2:
        yield
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"label": label, "total_s": total_s, "started": time.time()}))
    os.replace(tmp, path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def pause(seconds: float, label: str) -> None:
    """Kernel side: sleep `seconds`, shown by the runner as a wait with time left."""
    with waiting(label, seconds):
        time.sleep(max(0.0, seconds))


def heading(nb: Any, index: int) -> str | None:
    """The step a code cell belongs to: the first line of the markdown cell just above it."""
    if index <= 0 or nb.cells[index].cell_type != "code":
        return None
    above = nb.cells[index - 1]
    if above.cell_type != "markdown":
        return None
    first = next((ln for ln in above.source.splitlines() if ln.strip()), "")
    return first.lstrip("#").strip() or None


class Reporter:
    """Runner side: prints progress to `stream` while papermill runs the notebook."""

    def __init__(self, findings_path: Path, waits_path: Path, *, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.findings_path = findings_path
        self.waits_path = waits_path
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.began = time.monotonic()
        self._seen = 0
        self._mtime = 0.0
        self._wait: dict[str, Any] | None = None
        self._bar: tqdm | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="progress", daemon=True)

    def __enter__(self) -> Reporter:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=2)
            self._poll_once()
            self._close_bar()

    def _line(self, text: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def cell_started(self, nb: Any, index: int) -> None:
        """The engine's observer: print the step's heading as its cell starts."""
        if not self.enabled:
            return
        self._poll_once()  # the previous step's findings first, so the lines read in order
        title = heading(nb, index)
        if title:
            self._line(f"[{time.monotonic() - self.began:6.1f}s] {title}")

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll_once()

    def _poll_once(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            self._new_findings()
        with contextlib.suppress(OSError, ValueError, KeyError):
            self._waits()

    def _new_findings(self) -> None:
        mtime = self.findings_path.stat().st_mtime
        if mtime == self._mtime:
            return
        self._mtime = mtime
        findings = json.loads(self.findings_path.read_text())["findings"]
        for finding in findings[self._seen:]:
            self._line(f"{'':9}{finding['status'].upper():<8} {finding['check']}: "
                       f"{finding['summary']}")
        self._seen = max(self._seen, len(findings))

    def _waits(self) -> None:
        wait = json.loads(self.waits_path.read_text()) if self.waits_path.exists() else None
        if wait != self._wait:
            self._close_bar()
            self._wait = wait
            if wait is None:
                return
            if self.tty:
                with self._lock:
                    self._bar = tqdm(total=round(wait["total_s"]), desc=f"{'':9}{wait['label']}",
                                     unit="s", file=self.stream, leave=False,
                                     bar_format="{desc} {bar} {n_fmt}/{total_fmt} s, "
                                                "{remaining} left")
            else:
                self._line(f"{'':9}waiting up to {wait['total_s']:g} s: {wait['label']}")
        if self._bar is not None and wait is not None:
            done = min(self._bar.total, round(time.time() - wait["started"]))
            with self._lock:
                self._bar.update(done - self._bar.n)

    def _close_bar(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
