"""Ctrl-C and SIGTERM during a run: stop the running cell, keep the record.

A responder's Ctrl-C (SIGINT to the process group) or a scheduler's SIGTERM must not lose
what the run found. The first signal interrupts the kernel's running cell (as JupyterLab's
stop button does), so papermill saves the partial notebook and the runner closes findings.json
with a `run.interrupted` finding. If the kernel does not stop within GRACE_S, or a second
signal comes, the run stops at once; the kernel is then ended here, never left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.findings import isoformat, utcnow

GRACE_S = thresholds.INTERRUPT_GRACE_S
HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in the runner when the run must stop now (BaseException: nothing swallows it)."""


@dataclass
class Guard:
    """What happened to a run: which signal stopped it, and when."""

    signum: int | None = None
    at: str | None = None
    executing: bool = True  # False once the notebook is done: then a signal only marks it
    _known_children: set[int] = field(default_factory=set)

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM: what a shell reports for a process so ended."""
        return 128 + int(self.signum or 0)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def kernels(self) -> list[psutil.Process]:
        """Processes this run started (its kernel): children that were not there before."""
        try:
            children = psutil.Process().children(recursive=False)
        except psutil.Error:
            return []
        return [c for c in children if c.pid not in self._known_children]


def _signal_group(proc: psutil.Process, signum: int) -> None:
    """The kernel leads its own session, so its group holds what its cell started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def end_kernels(guard: Guard, wait_s: float = 3.0) -> None:
    """End whatever kernel this run left: SIGTERM to its group, then SIGKILL."""
    kernels = guard.kernels()
    for proc in kernels:
        _signal_group(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(kernels, timeout=wait_s)
    for proc in alive:
        _signal_group(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=wait_s)


@contextlib.contextmanager
def guard() -> Iterator[Guard]:
    """Handle SIGINT/SIGTERM for the duration of a run (main thread only, as Python allows)."""
    state = Guard(_known_children={c.pid for c in psutil.Process().children()})
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_signal(signum: int, frame: object) -> None:
        if not state.executing:  # closing the record takes a moment: let it finish
            if not state.interrupted:
                state.signum, state.at = signum, isoformat(utcnow())
            return
        if state.interrupted:  # a second signal: stop now
            raise Interrupted
        state.signum, state.at = signum, isoformat(utcnow())
        kernels = state.kernels()
        if not kernels:  # the kernel is not up yet: nothing to interrupt gracefully
            raise Interrupted
        for proc in kernels:
            _signal_group(proc, signal.SIGINT)
        signal.setitimer(signal.ITIMER_REAL, GRACE_S)

    def on_alarm(signum: int, frame: object) -> None:
        if state.executing:
            raise Interrupted

    previous = {sig: signal.signal(sig, on_signal) for sig in HANDLED}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_alarm)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        end_kernels(state)
