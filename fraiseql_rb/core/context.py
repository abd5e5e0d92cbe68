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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from fraiseql_rb.core import (
    artifacts,
    inventory,
    paths,
    progress,
    provenance,
    reachability,
    secrets,
)
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import Action, Finding, FindingsLog, Status

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
    # Endpoints that hung in this run: later probes of them are skipped (see reachability).
    unresponsive: reachability.Unresponsive = field(default_factory=reachability.Unresponsive,
                                                    repr=False)
    # The checks running now, innermost last (set by `check`): `result` records under it, so
    # a check's name is written once, in its decorator (as Barman's running_check).
    running: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        reachability.activate(self.unresponsive)

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
               remediation: str | None = None, table: Any = None,
               resolves: tuple[str, ...] = ()) -> Finding:
        return self.log.record(check, status, summary, evidence, remediation, table,
                               resolves=resolves)

    def latest(self, check: str) -> Finding | None:
        """The most recent finding of `check` in this run (what a later step builds on)."""
        return self.log.latest(check)

    def result(self, status: Status | str, summary: str,
               evidence: dict[str, Any] | None = None, remediation: str | None = None,
               table: Any = None, resolves: tuple[str, ...] = ()) -> Finding:
        """Record the verdict of the running check (see `check`) under its own name."""
        if not self.running:
            raise RuntimeError("result() outside a @check function: use record(name, ...)")
        return self.record(self.running[-1], status, summary, evidence, remediation, table,
                           resolves=resolves)

    def skip(self, why: str) -> Finding:
        """The running check does not apply here (an earlier step made it moot): info."""
        return self.result(Status.INFO, f"skipped: {why}", {"skipped": True})

    def record_skipped(self, check: str, timeout: reachability.Timeout) -> Finding:
        """`check` was not run because its endpoint already hung in this run: unknown."""
        return self.record(check, Status.UNKNOWN, timeout.summary(), timeout.evidence(),
                           f"find why {timeout.endpoint} accepts connections but never "
                           "answers (a hung process, a stuck proxy, a firewall dropping "
                           "replies), then rerun")

    def endpoint_hung(self, timeout: reachability.Timeout) -> Finding:
        """The running check was not run: its endpoint already hung in this run (unknown)."""
        if not self.running:
            raise RuntimeError("endpoint_hung() outside a @check function: use record_skipped")
        return self.record_skipped(self.running[-1], timeout)

    def could_not_run(self, check: str, exc: BaseException,
                      remediation: str = "fix what stopped the check (inventory, network, "
                                         "credentials) and rerun") -> Finding:
        """The `unknown` finding for a check that raised; a skip says which endpoint hung."""
        if isinstance(exc, reachability.Skipped):
            return self.record_skipped(check, exc.timeout)
        return self.record(check, Status.UNKNOWN,
                           f"could not run the check: {describe_error(exc)}",
                           {"error": type(exc).__name__}, remediation)

    def action(self, action: str, command: str, *, executed: bool,
               result: Any = None) -> Action:
        """Record an action; an executed one names who let it run and with which switch."""
        confirmed_by = None
        if executed:
            switches = "execute=True" + (f", confirm={self.confirm}" if self.confirm else "")
            confirmed_by = f"{provenance.who()} ({switches})"
        return self.log.action(action, command, executed=executed, result=result,
                               confirmed_by=confirmed_by)

    def save(self, notebook: Path | str | None = None) -> Path | None:
        """Live sessions: write this notebook (as last saved, so save it first) and its HTML
        into the run's dated directory, as a papermill run leaves them. Under
        `fraiseql-rb run` the runner does this itself, so nothing happens here."""
        if RUN_ENV in os.environ:
            return None
        source = Path(notebook) if notebook else live_notebook_path()
        if source is None or not source.is_file():
            raise RunbookError("cannot tell which notebook this is: pass its path, "
                               "run.save('notebooks/incidents/service_down.ipynb')")
        path = self.log.open()  # nothing recorded yet: the run still gets its directory
        if path is None:
            raise RunbookError("this run has no artifact directory to save into")
        self.log.finish()
        from fraiseql_rb.core import render  # nbconvert is heavy: only when a live session saves

        directory = path.parent
        render.write_artifacts(source, directory / f"{self.runbook}.ipynb",
                               directory / f"{self.runbook}.html", findings=self.log.to_dict())
        artifacts.seal(directory)
        print(f"Saved {source.name} and its HTML into {directory}")
        return directory

    def may_execute(self, *, dangerous: bool = False) -> bool:
        """Changing actions need execute=True; the most dangerous also confirm=<target>."""
        if not self.execute:
            return False
        return not dangerous or self.confirm == self.target_name

    @property
    def status(self) -> Status:
        return self.log.status

    def summary(self) -> Any:
        """The findings table that closes every notebook: the timeline (by `at`, then in
        recording order), every summary whole, then the actions; as text and as HTML."""
        from fraiseql_rb.core.report import FindingsTable

        print(f"Overall status: {self.status.upper()} — {len(self.log.findings)} findings, "
              f"{len(self.log.actions)} actions")
        return FindingsTable([f.to_dict() for f in self.log.findings],
                             [a.to_dict() for a in self.log.actions])


def check(name: str) -> Callable[[Callable[P, R]], Callable[P, R | Finding]]:
    """Make a check total: if it cannot run, that is an `unknown` finding, not a crash.

    The wrapped function takes the RunContext first and returns what it recorded (a Finding,
    or a list of them for checks with several aspects). While it runs, `ctx.result(...)`
    records under `name`, so the name is written here only. A caller that decides the check
    does not apply records that under the same name with `the_check.skip(ctx, why)`.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R | Finding]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Finding:
            ctx = args[0]
            assert isinstance(ctx, RunContext)
            ctx.running.append(name)
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means "could not check"
                return ctx.could_not_run(name, exc)
            finally:
                ctx.running.pop()

        def skip(ctx: RunContext, why: str) -> Finding:
            """Record this check as skipped, for a caller that decides it does not apply."""
            ctx.running.append(name)
            try:
                return ctx.skip(why)
            finally:
                ctx.running.pop()

        wrapper.check_name = name  # type: ignore[attr-defined]
        wrapper.skip = skip  # type: ignore[attr-defined]
        return wrapper

    return decorate


def describe_error(exc: BaseException) -> str:
    """One masked line for an exception: its message without our own internals."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, RunbookError):
        return secrets.mask(text)
    return secrets.mask(f"{type(exc).__name__}: {text}")


def start(runbook: str, target: str, incident_id: str | None = None,
          execute: bool = False, confirm: str | None = None,
          **parameters: Any) -> RunContext:
    """Begin a run. Called from each notebook's second code cell."""
    secrets.register_environment()
    spec = json.loads(os.environ[RUN_ENV]) if RUN_ENV in os.environ else None
    if spec:
        _read_secrets(spec.get("secrets_file"))
        progress.configure(spec.get("waits_file"))
        log = FindingsLog(runbook, target, incident_id=incident_id,
                          parameters=spec["parameters"], path=Path(spec["findings_path"]),
                          started_at=spec.get("started_at"), provenance=spec.get("provenance"))
        inventory_path = spec.get("inventory")
    else:
        log = _live_log(runbook, target, incident_id,
                        {"target": target, "incident_id": incident_id, "execute": execute,
                         "confirm": confirm, **parameters})
        inventory_path = None
    ctx = RunContext(runbook=runbook, target_name=target, log=log, execute=execute,
                     confirm=confirm, inventory_path=inventory_path)
    _record_cell_errors(ctx)
    from fraiseql_rb.core.report import install_display_formatters

    install_display_formatters()  # lists of findings display as findings, not as reprs
    return ctx


def _read_secrets(path: str | None) -> None:
    """Register the secret values the runner passed in its private file, then delete it:
    they live in this process only, never in an environment a child would inherit."""
    if not path:
        return
    with contextlib.suppress(FileNotFoundError):
        values = json.loads(Path(path).read_text())
        Path(path).unlink()
        for value in values:
            secrets.register(value)


_live: FindingsLog | None = None  # the live session's current run (JupyterLab)


def _live_log(runbook: str, target: str, incident_id: str | None,
              parameters: dict[str, Any]) -> FindingsLog:
    """A run stepped through live: same dated layout as the runner's, made on the first
    finding, so re-running the first cell leaves no empty run behind; a previous run of
    this session with findings is closed."""
    global _live
    artifacts.check_incident_id(incident_id)
    if _live is not None and _live.path is not None and _live.finished_at is None:
        _live.finish()
    out = Path(os.environ.get("FRAISEQL_RB_OUTPUT_DIR", paths.DEFAULT_OUTPUT_DIR))

    def open_path() -> Path:
        path = artifacts.new_artifact_dir(out, runbook, incident_id) / "findings.json"
        print(f"Findings are recorded in {path}")
        return path

    _live = FindingsLog(runbook, target, incident_id=incident_id, parameters=parameters,
                        provenance=provenance.describe(live_notebook_path()),
                        open_path=open_path)
    print(f"Findings will be recorded under {out}/ from the first check on; "
          "`run.save()` adds this notebook and its HTML.")
    return _live


def live_notebook_path() -> Path | None:
    """The notebook file of a live JupyterLab session (jupyter_server tells the kernel)."""
    name = os.environ.get("JPY_SESSION_NAME")
    with contextlib.suppress(ImportError, AttributeError):
        from IPython import get_ipython

        name = get_ipython().user_ns.get("__session__") or name  # type: ignore[union-attr]
    return Path(name) if name and Path(name).suffix == ".ipynb" else None


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
