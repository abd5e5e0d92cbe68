"""Supervising the sandbox's background processes by pid, safely.

A pid in `sandbox.json` may be stale and reused by an unrelated process after a reboot, so a
pid only counts as ours when its command line carries our marker; zombies count as gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path


def alive(pid: int | None, marker: str) -> bool:
    """Is `pid` a live (not zombie) process whose command line contains `marker`?"""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if marker not in cmdline.replace("\0", " "):
        return False
    return not stat.split(") ", 1)[-1].startswith("Z")


def spawn(argv: list[str], log_path: Path | None,
          env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a detached child (own session: a Ctrl-C in the caller does not reach it)."""
    if log_path is None:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, start_new_session=True)


def terminate(pid: int | None, marker: str, *, sig: int = signal.SIGTERM,
              timeout: float = 10) -> bool:
    """Signal our process and wait for it to go; SIGKILL if it will not. False if not ours."""
    if pid is None or not alive(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid, marker) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.05)
    if alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    reap(pid)
    return True


def reap(pid: int) -> None:
    """Collect a child's exit status, if it is ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
