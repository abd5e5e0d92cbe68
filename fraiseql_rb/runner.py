"""`fraiseql-rb run`: execute a runbook notebook with papermill and leave dated artifacts.

The steps are separate so each can be reasoned about: bind and check parameters (no kernel
yet, so bad input costs nothing), make the artifact directory, execute into a private
temporary file, then mask and render into the artifact directory. Secrets reach the kernel
only through the environment and the inventory, never as parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import papermill

from . import artifacts, inventory, render, runbooks, secrets
from .context import RUN_ENV, describe_error
from .errors import EXIT_CRITICAL, EXIT_OK, EXIT_UNKNOWN, EXIT_WARNING, UsageError
from .findings import FindingsLog, Status, isoformat, utcnow

EXIT_BY_STATUS = {Status.OK: EXIT_OK, Status.WARNING: EXIT_WARNING,
                  Status.CRITICAL: EXIT_CRITICAL, Status.UNKNOWN: EXIT_UNKNOWN}
CELL_TIMEOUT_S = int(os.environ.get("FRAISEQL_RB_CELL_TIMEOUT", "600"))
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class RunResult:
    runbook: str
    artifact_dir: Path
    status: Status
    findings: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return EXIT_BY_STATUS[self.status]


@dataclass(frozen=True)
class RunRequest:
    runbook: runbooks.Runbook
    target: str
    inventory_path: Path
    parameters: dict[str, Any]
    incident_id: str | None
    output_dir: Path


def prepare(name: str, *, target: str | None = None, inventory_path: str | None = None,
            overrides: dict[str, str] | None = None, incident_id: str | None = None,
            output_dir: str | Path = "reports") -> RunRequest:
    """Check everything that can be checked before a kernel starts; raise UsageError."""
    runbook = runbooks.get(name)
    bound = runbook.bind(overrides or {})
    inv = inventory.load(inventory_path)
    chosen = target or bound.get("target") or runbook.defaults().get("target")
    if not chosen:
        if len(inv.targets) != 1:
            raise UsageError("several targets in the inventory: pass --target NAME")
        chosen = next(iter(inv.targets))
    inv.target(chosen)
    if incident_id is not None and not _SAFE_ID.match(incident_id):
        raise UsageError(f"incident id {incident_id!r} must be 1-64 letters, digits, '.', "
                         "'_' or '-'")
    params = {**runbook.defaults(), **bound}
    if "target" in runbook.parameters:
        params["target"] = chosen
    if "incident_id" in runbook.parameters:
        params["incident_id"] = incident_id
    return RunRequest(runbook, chosen, inv.path.resolve(), params, incident_id,
                      Path(output_dir))


def _collect_secrets(request: RunRequest) -> list[str]:
    """Read the target's secrets in the runner too, so it can mask what the kernel wrote."""
    target = inventory.load(request.inventory_path).target(request.target)
    found = []
    for name in sorted(inventory.SECRET_NAMES):
        with contextlib.suppress(Exception):  # unreadable secrets become findings later
            value = target.secret(name)
            if value:
                found.append(value)
    for name, value in request.parameters.items():
        if isinstance(value, str) and secrets.SECRET_KEY_PATTERN.search(name):
            secrets.register(value)
            found.append(value)
    secrets.register_environment()
    return found


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def execute(request: RunRequest, *, progress: bool = True) -> RunResult:
    """Run the notebook; whatever happens, the artifact directory ends up complete."""
    name = request.runbook.name
    secret_values = _collect_secrets(request)
    artifact_dir = artifacts.new_artifact_dir(request.output_dir, name, request.incident_id)
    findings_path = artifact_dir / "findings.json"
    started_at = isoformat(utcnow())
    # The runner writes the first findings.json, so even a kernel that never starts leaves one.
    log = FindingsLog(name, request.target, incident_id=request.incident_id,
                      parameters=request.parameters, path=findings_path,
                      started_at=started_at)
    spec = {
        "runbook": name, "target": request.target, "parameters": log.parameters,
        "findings_path": str(findings_path.resolve()), "started_at": started_at,
        "inventory": str(request.inventory_path), "secret_values": secret_values,
    }
    if progress:
        print(f"running {name} against {request.target} -> {artifact_dir}", file=sys.stderr)
    error: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="fraiseql-rb-") as scratch:
        executed = Path(scratch) / f"{name}.ipynb"
        try:
            with _environment({RUN_ENV: json.dumps(spec)}):
                papermill.execute_notebook(
                    str(request.runbook.path), str(executed),
                    parameters=request.parameters, kernel_name="python3",
                    progress_bar=False, log_output=False, execution_timeout=CELL_TIMEOUT_S,
                    # the kernel talks to us over loopback only; its TCP notice is noise
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                    cwd=os.getcwd(),
                )
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, not raised
            error = exc
        if executed.exists():
            render.write_artifacts(executed, artifact_dir / f"{name}.ipynb",
                                   artifact_dir / f"{name}.html")
    findings = _finalise(findings_path, error)
    status = Status(findings["status"])
    if progress:
        print(f"{name}: {status.upper()} ({len(findings['findings'])} findings)",
              file=sys.stderr)
    for finding in findings["findings"]:
        if finding["check"] == "notebook.error":  # say why in one line, as for bad input
            print(f"fraiseql-rb: {finding['summary']}", file=sys.stderr)
    return RunResult(name, artifact_dir, status, findings)


def _finalise(path: Path, error: BaseException | None) -> dict[str, Any]:
    """Re-read what the kernel recorded, add the error if it did not, mask, close."""
    log = FindingsLog.from_file(path)
    if error is not None and not any(f.check == "notebook.error" for f in log.findings):
        message = getattr(error, "evalue", None) or describe_error(error)
        log.record("notebook.error", Status.UNKNOWN,
                   f"the runbook did not complete: {message}",
                   {"error": getattr(error, "ename", type(error).__name__)},
                   "read the executed notebook for the failing cell; findings above it stand")
    log.mask()
    log.finish()
    return log.to_dict()
