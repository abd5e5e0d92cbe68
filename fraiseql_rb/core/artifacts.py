"""The dated artifact layout: OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/HHMMSSZ[_INCIDENT]/ (UTC)."""

from __future__ import annotations

import errno
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import ARTIFACT_DIR_MODE, ARTIFACT_FILE_MODE, utcnow

_INCIDENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_incident_id(incident_id: str | None) -> str | None:
    """An incident id becomes part of a directory name: letters, digits, '.', '_', '-'."""
    if incident_id is not None and not _INCIDENT_ID.match(incident_id):
        raise UsageError(f"incident id {incident_id!r} must be 1-64 letters, digits, '.', "
                         "'_' or '-'")
    return incident_id


def _claim_dated(output_dir: Path, runbook: str, name: Callable[[datetime], str],
                 create: Callable[[Path], None], wait_s: float) -> Path:
    """OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/<name(now)>, made by `create` (which raises
    FileExistsError when it is taken). Names carry the second, so one taken waits for the
    next second, spread so waiting runs do not all collide, up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        now = utcnow()
        parent = Path(output_dir) / now.strftime("%Y-%m-%d") / runbook
        parent.mkdir(parents=True, exist_ok=True, mode=ARTIFACT_DIR_MODE)
        path = parent / name(now)
        try:
            create(path)
            return path
        except FileExistsError:
            if time.monotonic() > deadline:
                break
            time.sleep(1.0 - utcnow().microsecond / 1e6 + random.uniform(0.005, 0.05))
    raise RuntimeError(f"could not create a fresh {runbook} artifact under {output_dir}")


def _leaf(now: datetime, incident_id: str | None) -> str:
    return now.strftime("%H%M%SZ") + (f"_{incident_id}" if incident_id else "")


def new_artifact_dir(output_dir: Path, runbook: str, incident_id: str | None = None,
                     *, wait_s: float = 300.0) -> Path:
    """Create a fresh artifact directory; never reuse one, so no run overwrites another.

    Runs in the same second would share a name, so a later one waits for the next second:
    the layout stays exactly as documented, and simultaneous runs of one runbook and
    incident each get their own second (a fleet of them waits in turn, up to `wait_s`).
    Directories get ARTIFACT_DIR_MODE (the reviewers' group may read them).
    """
    return _claim_dated(output_dir, runbook, lambda now: _leaf(now, incident_id),
                        lambda path: path.mkdir(mode=ARTIFACT_DIR_MODE), wait_s)


def new_dated_file(output_dir: Path, runbook: str, prefix: str, suffix: str,
                   incident_id: str | None = None, *, wait_s: float = 300.0) -> Path:
    """Create an empty file OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/<prefix>HHMMSSZ[_INCIDENT]<suffix>
    beside the run directories (a fleet's summary), never one another process took."""
    def create(path: Path) -> None:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ARTIFACT_FILE_MODE))

    return _claim_dated(output_dir, runbook,
                        lambda now: f"{prefix}{_leaf(now, incident_id)}{suffix}", create,
                        wait_s)


def seal(artifact_dir: Path) -> None:
    """Give every file of a finished run one mode (ARTIFACT_FILE_MODE): the notebook, its
    HTML, findings.json and anything a runbook added (a PDF) are read by the same people."""
    for path in artifact_dir.rglob("*"):
        if path.is_file():
            path.chmod(ARTIFACT_FILE_MODE)


def check_output_dir(path: str | Path) -> Path:
    """Make sure reports can be written under `path` before any kernel starts: create it if
    missing, then write and remove a real file, since permission bits say nothing as root,
    on a read-only mount or for an immutable directory. A directory we cannot use is a
    UsageError (exit 64) naming it and why, not a traceback after the notebook ran."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"the output directory {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=ARTIFACT_DIR_MODE)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {directory}: "
                         f"{_why(exc, directory)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".fraiseql-rb-write-test-", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write to the output directory {directory}: "
                         f"{_why(exc, directory)}") from None
    os.close(fd)
    os.unlink(probe)
    return directory


def _why(exc: OSError, directory: Path) -> str:
    """The reason in words a person can act on: which part is a file, or what the OS said
    (about which path, when it is not the directory itself)."""
    for part in directory.parents:
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a directory"
    reason = ("it is on a read-only file system" if exc.errno == errno.EROFS
              else (exc.strerror or str(exc)).lower())
    where = Path(exc.filename) if exc.filename else directory
    # the directory itself, or the probe file inside it, need no naming
    return reason if directory in (where, where.parent) else f"{where}: {reason}"
