"""Who and what produced a verdict, so a reviewer knows which runbook revision said it."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from fraiseql_rb import __version__


def who() -> str:
    """The person behind a run or a confirmed action, as `user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def notebook_sha256(path: Path | str | None) -> str | None:
    """The content hash of the notebook that ran; None when it cannot be read."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def describe(notebook: Path | str | None) -> dict[str, Any]:
    """The provenance keys of findings.json (findings.PROVENANCE_KEYS)."""
    user, _, host = who().partition("@")
    return {"run_by": {"user": user, "host": host}, "fraiseql_rb_version": __version__,
            "notebook_sha256": notebook_sha256(notebook)}
