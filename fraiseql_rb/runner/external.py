"""Finish a run that a scheduler executed with papermill itself (Airflow's PapermillOperator).

Such a run has no `fraiseql-rb run` around it: the notebook's own `context.start` wrote
findings.json into a dated directory of $FRAISEQL_RB_OUTPUT_DIR (and printed its path in the
executed notebook), but the executed notebook lies where the scheduler put it, nothing
rendered the HTML, and a critical verdict did not fail the task. `finish` adds what the runner
would have: the masked notebook and its HTML beside findings.json, `finished_at`, the
artifact modes, and the verdict, so the scheduler can fail the task on it.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from fraiseql_rb.core import artifacts, inventory, render
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import Status, isoformat, utcnow, write_json_atomic

# what context.start prints when a run outside the runner records its first finding
_RECORDED_IN = re.compile(r"Findings are recorded in (\S+findings\.json)")


def findings_path(nb: nbformat.NotebookNode) -> Path:
    """The run's findings.json, as the executed notebook itself printed it."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            match = _RECORDED_IN.search(str(output.get("text", "")))
            if match:
                return Path(match.group(1))
    raise RunbookError("the executed notebook never recorded a finding: it did not get as "
                       "far as its first check (read its first cells' errors)")


def finish(executed: str | Path, inventory_path: str | Path | None = None
           ) -> tuple[Path, dict[str, Any]]:
    """Complete the run of `executed` (an executed notebook); returns its artifact directory
    and final findings. `inventory_path` (default $FRAISEQL_RB_INVENTORY, as the notebook
    used) names the secrets to mask in the copies."""
    executed = Path(executed)
    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError) as exc:
        raise RunbookError(f"cannot read the executed notebook {executed}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    path = findings_path(nb)
    try:
        findings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunbookError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
                           ) from None
    with_secrets = inventory_path or os.environ.get("FRAISEQL_RB_INVENTORY")
    if with_secrets and findings.get("target"):
        inventory.register_secrets(with_secrets, [str(findings["target"])])
    if not findings.get("finished_at"):  # the kernel ended without closing its live log
        ended = (nb.metadata.get("papermill") or {}).get("end_time")
        findings["finished_at"] = isoformat(
            datetime.fromisoformat(ended).replace(tzinfo=UTC) if ended else utcnow())
        findings.setdefault("status", str(Status.UNKNOWN))
        write_json_atomic(path, findings)
    directory, runbook = path.parent, str(findings.get("runbook") or executed.stem)
    render.write_artifacts(executed, directory / f"{runbook}.ipynb",
                           directory / f"{runbook}.html", findings=findings)
    artifacts.seal(directory)
    return directory, findings
