"""The kernel side of a run: what a notebook calls to reach its target and record findings.

`start()` is the first call in every runbook. Under `fraiseql-rb run` it picks up the
artifact paths and parameters the runner put in the environment; stepped through live in
JupyterLab it writes its own findings.json in the same dated layout, so a live incident
leaves the same record as a scheduled one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from . import artifacts, inventory, paths, secrets
from .errors import RunbookError
from .findings import Action, Finding, FindingsLog, Status

RUN_ENV = "FRAISEQL_RB_RUN"  # JSON from the runner: runbook, target, parameters, findings path

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class RunContext:
    """A runbook run: its target, its switches, and its findings log."""

    runbook: str
    target_name: str
    log: FindingsLog
    execute: bool = False
    confirm: str | None = None
    inventory_path: str | None = None
    _target: inventory.Target | None = None

    @classmethod
    def adhoc(cls, runbook: str = "adhoc", target: inventory.Target | None = None, *,
              findings_path: Path | None = None, execute: bool = False,
              confirm: str | None = None) -> RunContext:
        """A context for calling checks from Python or tests, without a notebook."""
        name = target.name if target is not None else "none"
        log = FindingsLog(runbook, name, path=findings_path)
        return cls(runbook=runbook, target_name=name, log=log, execute=execute,
                   confirm=confirm, _target=target)

    @property
    def target(self) -> inventory.Target:
        """The inventory target, loaded on first use so that a bad inventory is a finding."""
        if self._target is None:
            self._target = inventory.load_target(self.target_name, self.inventory_path)
        return self._target

    def record(self, check: str, status: Status | str, summary: str,
               evidence: dict[str, Any] | None = None,
               remediation: str | None = None, table: Any = None) -> Finding:
        return self.log.record(check, status, summary, evidence, remediation, table)

    def action(self, action: str, command: str, *, executed: bool,
               result: Any = None) -> Action:
        return self.log.action(action, command, executed=executed, result=result)

    def may_execute(self, *, dangerous: bool = False) -> bool:
        """Changing actions need execute=True; the most dangerous also confirm=<target>."""
        if not self.execute:
            return False
        return not dangerous or self.confirm == self.target_name

    @property
    def status(self) -> Status:
        return self.log.status

    def summary(self) -> Any:
        """The findings table that closes every notebook, worst first."""
        rows = [{"status": f.status.value, "check": f.check, "summary": f.summary,
                 "next step": f.remediation or "", "at": f.at} for f in self.log.findings]
        frame = pd.DataFrame(rows, columns=["status", "check", "summary", "next step", "at"])
        order = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3, "info": 4}
        frame = frame.sort_values("status", key=lambda s: s.map(order), kind="stable")
        print(f"Overall status: {self.status.upper()} — {len(rows)} findings, "
              f"{len(self.log.actions)} actions")
        return frame.reset_index(drop=True)


def check(name: str) -> Callable[[Callable[P, R]], Callable[P, R | Finding]]:
    """Make a check total: if it cannot run, that is an `unknown` finding, not a crash.

    The wrapped function takes the RunContext first and returns what it recorded (a Finding,
    or a list of them for checks with several aspects).
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R | Finding]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Finding:
            ctx = args[0]
            assert isinstance(ctx, RunContext)
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means "could not check"
                return ctx.record(
                    name, Status.UNKNOWN, f"could not run the check: {describe_error(exc)}",
                    {"error": type(exc).__name__},
                    "fix what stopped the check (inventory, network, credentials) and rerun",
                )

        return wrapper

    return decorate


def describe_error(exc: BaseException) -> str:
    """One masked line for an exception: its message without our own internals."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, RunbookError):
        return secrets.mask(text)
    return secrets.mask(f"{type(exc).__name__}: {text}")


_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def start(runbook: str, target: str, incident_id: str | None = None,
          execute: bool = False, confirm: str | None = None,
          **parameters: Any) -> RunContext:
    """Begin a run. Called from each notebook's second code cell."""
    secrets.register_environment()
    spec = json.loads(os.environ[RUN_ENV]) if RUN_ENV in os.environ else None
    if spec:
        findings_path = Path(spec["findings_path"])
        all_params = spec["parameters"]
        started_at = spec.get("started_at")
        inventory_path = spec.get("inventory")
        for value in spec.get("secret_values", []):
            secrets.register(value)
    else:
        if incident_id is not None and not _SAFE_ID.match(incident_id):
            raise RunbookError(f"incident_id {incident_id!r} must be letters, digits, . _ -")
        out = Path(os.environ.get("FRAISEQL_RB_OUTPUT_DIR", paths.DEFAULT_OUTPUT_DIR))
        artifact_dir = artifacts.new_artifact_dir(out, runbook, incident_id)
        findings_path = artifact_dir / "findings.json"
        all_params = {"target": target, "incident_id": incident_id, "execute": execute,
                      "confirm": confirm, **parameters}
        started_at = None
        inventory_path = None
    log = FindingsLog(runbook, target, incident_id=incident_id, parameters=all_params,
                      path=findings_path, started_at=started_at)
    if spec is None:
        print(f"Findings are recorded in {findings_path}")
    ctx = RunContext(runbook=runbook, target_name=target, log=log, execute=execute,
                     confirm=confirm, inventory_path=inventory_path)
    _record_cell_errors(ctx)
    return ctx


def _record_cell_errors(ctx: RunContext) -> None:
    """Record an exception that escapes a cell, so findings.json carries the error."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - always present with ipykernel
        return
    shell = get_ipython()
    if shell is None:
        return
    # httpx's connection pool imports trio when one is installed, and trio warns into the
    # notebook when it finds our handler already in place: import it first, quietly.
    with contextlib.suppress(ImportError):
        import trio  # noqa: F401

    def handler(shell: Any, etype: type, value: BaseException, tb: Any,
                tb_offset: int | None = None) -> Any:
        ctx.record("notebook.error", Status.UNKNOWN,
                   f"the runbook stopped with an error: {describe_error(value)}",
                   {"error": etype.__name__},
                   "read the failing cell in the executed notebook; findings above it stand")
        return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell.set_custom_exc((Exception,), handler)
