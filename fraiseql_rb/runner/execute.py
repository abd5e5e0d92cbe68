"""`fraiseql-rb run`: execute a runbook notebook with papermill and leave dated artifacts.

The steps are separate so each can be reasoned about: bind and check parameters (no kernel
yet, so bad input costs nothing), make the artifact directory, execute into a private
temporary file, then mask and render into the artifact directory. Secret values reach the
kernel in a 0600 file it reads and deletes, never in its environment (which every process it
starts would inherit) and never as parameters. papermill runs with our engine
(`engine.py`); signals are handled by `interruption.py`, progress by `progress.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import papermill

from fraiseql_rb.core import artifacts, inventory, provenance, render, runbooks, secrets, thresholds
from fraiseql_rb.core import progress as progress_display
from fraiseql_rb.core.context import RUN_ENV, describe_error
from fraiseql_rb.core.errors import (
    InventoryError,
    UsageError,
)
from fraiseql_rb.core.findings import (
    EXIT_CODE,
    PHASE_CHECK,
    FindingsLog,
    Status,
    isoformat,
    utcnow,
)
from fraiseql_rb.runner import engine, interruption

CELL_TIMEOUT_S = int(os.environ.get("FRAISEQL_RB_CELL_TIMEOUT", thresholds.CELL_TIMEOUT_S))
KERNEL_START_ATTEMPTS = thresholds.KERNEL_START_ATTEMPTS


@dataclass(frozen=True)
class RunResult:
    runbook: str
    artifact_dir: Path
    status: Status
    findings: dict[str, Any]
    interrupted_exit: int | None = None  # 130 (SIGINT) or 143 (SIGTERM) when a signal ended it

    @property
    def exit_code(self) -> int:
        return self.interrupted_exit or EXIT_CODE[self.status]


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
    from fraiseql_rb.sandbox import (
        state as sandbox_state,  # here, not at the top: only `run` needs it
    )

    sandbox_state.refuse_stale_inventory(inv.path)
    chosen = target or bound.get("target") or runbook.defaults().get("target")
    if not chosen:
        if len(inv.targets) != 1:
            raise UsageError("several targets in the inventory: pass --target NAME")
        chosen = next(iter(inv.targets))
    chosen_target = inv.target(chosen)  # an unknown target is refused here
    missing = [key for key in runbook.requires if not chosen_target.has(key)]
    if missing:
        raise InventoryError(f"inventory {inv.path}: target {chosen!r} has no "
                             f"{' and no '.join(missing)}, which runbook {runbook.name!r} needs")
    artifacts.check_incident_id(incident_id)
    params = {**runbook.defaults(), **bound}
    if "target" in runbook.parameters:
        params["target"] = chosen
    if "incident_id" in runbook.parameters:
        params["incident_id"] = incident_id
    # last: it creates the directory, and refused input must leave nothing behind
    return RunRequest(runbook, chosen, inv.path.resolve(), params, incident_id,
                      artifacts.check_output_dir(output_dir))


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


def _write_private(path: Path, data: Any) -> None:
    """A file only our user can read: how secret values reach the kernel (never its
    environment, which every process the kernel starts would inherit)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)


def execute(request: RunRequest, *, progress: bool = True) -> RunResult:
    """Run the notebook; whatever happens (a failing cell, Ctrl-C, SIGTERM), the artifact
    directory ends up complete: findings.json, the executed notebook and its HTML."""
    name = request.runbook.name
    secret_values = _collect_secrets(request)
    with interruption.guard() as stop:
        artifact_dir = artifacts.new_artifact_dir(request.output_dir, name, request.incident_id)
        findings_path = artifact_dir / "findings.json"
        started_at = isoformat(utcnow())
        # The runner writes the first findings.json, so even a kernel that never starts
        # leaves one.
        log = FindingsLog(name, request.target, incident_id=request.incident_id,
                          parameters=request.parameters, path=findings_path,
                          started_at=started_at,
                          provenance=provenance.describe(request.runbook.path))
        error: BaseException | None = None
        with tempfile.TemporaryDirectory(prefix="fraiseql-rb-") as tmp:
            scratch = Path(tmp)
            executed = scratch / f"{name}.ipynb"
            secrets_file = scratch / "secrets.json"
            kernel_log = scratch / "kernel.log"
            _write_private(secrets_file, secret_values)
            spec = {
                "runbook": name, "target": request.target, "parameters": log.parameters,
                "findings_path": str(findings_path.resolve()), "started_at": started_at,
                "inventory": str(request.inventory_path), "secrets_file": str(secrets_file),
                "waits_file": str(scratch / "waits.json"),
                "provenance": log.provenance,
            }
            if progress:
                print(f"running {name} against {request.target} -> {artifact_dir}",
                      file=sys.stderr)
            reporter = progress_display.Reporter(findings_path, scratch / "waits.json",
                                                 enabled=progress)
            try:
                with reporter, _environment({RUN_ENV: json.dumps(spec)}):
                    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
                        try:
                            papermill.execute_notebook(
                                str(request.runbook.path), str(executed),
                                parameters=request.parameters, kernel_name="python3",
                                engine_name=engine.NAME, observer=reporter.cell_started,
                                kernel_manager_class=engine.kernel_manager(kernel_log),
                                progress_bar=False, log_output=False,
                                execution_timeout=CELL_TIMEOUT_S,
                                # the kernel talks to us over loopback only; its TCP notice is
                                # noise
                                extra_arguments=["--IPKernelApp.log_level=ERROR"],
                                cwd=os.getcwd(),
                            )
                            error = None
                        except Exception as exc:  # noqa: BLE001 - recorded, not raised
                            error = exc
                        if (error is None or stop.interrupted or attempt == KERNEL_START_ATTEMPTS
                                or not _kernel_never_started(error, findings_path)):
                            break
                        # No cell ran, so nothing was done: starting again repeats nothing.
                        print(f"fraiseql-rb: the kernel did not start ({describe_error(error)}); "
                              "starting it again", file=sys.stderr)
                        interruption.end_kernels(stop)
            except interruption.Interrupted:
                pass  # `stop` says which signal; the record is closed below
            stop.executing = False
            interruption.end_kernels(stop)
            findings = _finalise(findings_path, error, stop, engine.log_tail(kernel_log))
            if executed.exists():
                render.write_artifacts(executed, artifact_dir / f"{name}.ipynb",
                                       artifact_dir / f"{name}.html", findings=findings)
        artifacts.seal(artifact_dir)
    status = Status(findings["status"])
    if progress:
        print(f"{name}: {status.upper()} ({len(findings['findings'])} findings)",
              file=sys.stderr)
    for finding in findings["findings"]:
        if finding["check"] in ("notebook.error", "run.interrupted"):
            print(f"fraiseql-rb: {finding['summary']}", file=sys.stderr)
    return RunResult(name, artifact_dir, status, findings,
                     stop.exit_code if stop.interrupted else None)


def _kernel_never_started(error: BaseException, findings_path: Path) -> bool:
    """Did the run fail before its first cell: the kernel died or never answered while
    starting (a loaded machine), and the notebook recorded nothing?"""
    text = str(error)
    if not ("before replying to kernel_info" in text or "didn't respond in" in text):
        return False
    try:
        return not FindingsLog.from_file(findings_path).findings
    except (OSError, ValueError):
        return False


def _finalise(path: Path, error: BaseException | None, stop: interruption.Guard,
              kernel_log: list[str] | None = None) -> dict[str, Any]:
    """Re-read what the kernel recorded, add the interruption or the error, mask, close."""
    log = FindingsLog.from_file(path)
    if stop.interrupted:
        entered = log.latest(PHASE_CHECK)
        phase = entered.evidence.get("phase") if entered is not None else None
        where = (f"; the change had reached its {phase} phase (see the findings of that "
                 "phase for what ran)" if phase else "")
        log.record("run.interrupted", Status.UNKNOWN,
                   f"the run was interrupted by {stop.signal_name} at {stop.at}; the checks "
                   f"after that point did not run{where}",
                   {"signal": stop.signal_name, "exit_code": stop.exit_code,
                    **({"phase": phase} if phase else {})},
                   "rerun the runbook to complete it; findings above this one stand"
                   + (f"; check the target's state after an interrupted {phase} phase "
                      "before rerunning a change" if phase else ""))
    elif error is not None and not any(f.check == "notebook.error" for f in log.findings):
        message = getattr(error, "evalue", None) or describe_error(error)
        log.record("notebook.error", Status.UNKNOWN,
                   f"the runbook did not complete: {message}",
                   {"error": getattr(error, "ename", type(error).__name__),
                    "kernel_log": kernel_log or []},
                   "read the executed notebook for the failing cell; findings above it stand")
    log.mask()
    if stop.interrupted:
        log.interrupt(str(stop.at))
    else:
        log.finish()
    return log.to_dict()
