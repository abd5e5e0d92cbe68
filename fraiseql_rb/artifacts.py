"""The dated artifact layout: OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/HHMMSSZ[_INCIDENT]/ (UTC)."""

from __future__ import annotations

import time
from pathlib import Path

from .findings import utcnow


def new_artifact_dir(output_dir: Path, runbook: str, incident_id: str | None = None) -> Path:
    """Create a fresh artifact directory; never reuse one, so no run overwrites another.

    Two runs in the same second would share a name, so the second waits for the next one:
    the layout stays exactly as documented.
    """
    for _ in range(5):
        now = utcnow()
        leaf = now.strftime("%H%M%SZ") + (f"_{incident_id}" if incident_id else "")
        path = Path(output_dir) / now.strftime("%Y-%m-%d") / runbook / leaf
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            time.sleep(1.0 - (utcnow().microsecond / 1e6) + 0.01)
    raise RuntimeError(f"could not create a fresh artifact directory under {output_dir}")
