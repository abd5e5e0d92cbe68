"""`fraiseql-rb run RUNBOOK --targets a,b | --all-targets [--jobs N] [--dask-scheduler ADDR]`.

One runbook against many targets. Each target's run is exactly `fraiseql-rb run RUNBOOK
--target T --quiet ...` in a child process, so every guarantee of a single run holds per
target without a second code path: secrets reach the kernel the same way, the artifacts are
masked the same way, a signal leaves the same `run.interrupted` record, the exit code means
the same. The fleet adds only scheduling and a summary:

- locally, `--jobs N` child processes at a time (threads wait on them: the work is in the
  children);
- on Dask, one task per target on an existing distributed cluster (`--dask-scheduler ADDR` or
  $DASK_SCHEDULER_ADDRESS); the task (`run_target`, importable on the workers) starts the same
  child on the worker, whose output directory must be the one this machine sees.

Everything that can be refused is refused before the first child starts (unknown targets, a
bad parameter for any target, `--jobs` below 1, a scheduler that does not answer): one line,
exit 64. The summary is a table on stdout and `fleet-HHMMSSZ[_INCIDENT].json` beside the
runbook's dated artifact directories; its path is the last line of stdout, as a run's
artifact directory is. A target whose run never finished (not started before Ctrl-C/SIGTERM,
or lost with a Dask scheduler that died) is listed as "not run", never dropped; one whose
Dask worker died mid-run is not started again (`run_target`) and is listed as unknown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraiseql_rb.core import artifacts, inventory, report, secrets, thresholds
from fraiseql_rb.core.errors import EXIT_UNKNOWN, UsageError
from fraiseql_rb.core.findings import (
    EXIT_CODE,
    Status,
    isoformat,
    utcnow,
    worst,
    write_json_atomic,
)

if TYPE_CHECKING:  # at run time only where needed: a Dask worker's task never loads papermill
    from fraiseql_rb.runner import execute as runner

NOT_RUN = "not run"
# How long to wait for a Dask scheduler (and one of its workers) before refusing: a typo in
# the address must not hang the command.
SCHEDULER_TIMEOUT_S = float(os.environ.get("FRAISEQL_RB_DASK_TIMEOUT",
                                           thresholds.DASK_SCHEDULER_TIMEOUT_S))
# How often the fleet looks at its children and tasks, and a Dask task whether the fleet was
# interrupted (one small request to the scheduler per running task and look).
POLL_S = 0.5
TASK_POLL_S = thresholds.FLEET_TASK_POLL_S
# Names of the Dask events that carry a fleet's Ctrl-C/SIGTERM to its tasks.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass
class TargetResult:
    """One row of the fleet summary."""

    target: str
    status: str = NOT_RUN
    root_cause: str = ""
    artifact_dir: str | None = None
    exit_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "root_cause": self.root_cause,
                "artifact_dir": self.artifact_dir, "exit_code": self.exit_code}


# ---- validation: everything before anything runs ---------------------------------------------


def _chosen_targets(args: argparse.Namespace) -> tuple[list[str], Path]:
    """The targets named by --targets (in that order, once each) or every inventory target;
    all unknown names are refused in one line."""
    if args.target:
        raise UsageError("--target and --targets/--all-targets cannot be combined")
    inv = inventory.load(args.inventory)
    if args.all_targets:
        return list(inv.targets), inv.path
    names = list(dict.fromkeys(n.strip() for n in str(args.targets).split(",") if n.strip()))
    if not names:
        raise UsageError("--targets names no target (expected a comma-separated list)")
    unknown = [n for n in names if n not in inv.targets]
    if unknown:
        known = ", ".join(sorted(inv.targets))
        raise UsageError(f"unknown target{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(n) for n in unknown)} in {inv.path} (known: {known})")
    return names, inv.path


def _prepare_all(args: argparse.Namespace, names: list[str], inventory_path: Path,
                 overrides: dict[str, str]) -> list[runner.RunRequest]:
    """`runner.prepare` for every target (raises UsageError on the first bad one); a renamed
    `-p` is said once, not once per target."""
    from fraiseql_rb.core import runbooks  # nbformat: not needed on a Dask worker
    from fraiseql_rb.runner import execute as runner

    requests = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", runbooks.DeprecatedParameter)
        for name in names:
            requests.append(runner.prepare(
                args.runbook, target=name, inventory_path=str(inventory_path),
                overrides=overrides, incident_id=args.incident_id,
                output_dir=args.output_dir))
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"fraiseql-rb: {message}", file=sys.stderr)
    return requests


def _scheduler_address(args: argparse.Namespace) -> str | None:
    """--dask-scheduler, else $DASK_SCHEDULER_ADDRESS unless --jobs asks for local runs."""
    if args.dask_scheduler:
        if args.jobs is not None:
            raise UsageError("--jobs and --dask-scheduler cannot be combined (the Dask "
                             "cluster's workers decide how many run at once)")
        return str(args.dask_scheduler)
    if args.jobs is None:
        return os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    return None


def _connect(address: str) -> Any:
    """A distributed.Client, or one UsageError line: a scheduler that does not answer within
    SCHEDULER_TIMEOUT_S, or one with no worker to run on."""
    import logging

    import distributed

    # the client logs its connection failures (a scheduler gone) with tracebacks; ours is one
    # line per target
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        client = distributed.Client(address, timeout=SCHEDULER_TIMEOUT_S,
                                    set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot reach the Dask scheduler {address}: "
                         f"{secrets.mask(reason)}") from None
    try:
        client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, TimeoutError):
        client.close()
        raise UsageError(f"the Dask scheduler {address} has no worker (none joined within "
                         f"{SCHEDULER_TIMEOUT_S:g} s)") from None
    return client


# ---- one target: the child process -----------------------------------------------------------


def command_for(request: runner.RunRequest, overrides: dict[str, str],
                notify: str | None) -> list[str]:
    """`fraiseql-rb run` for one target (the arguments: the interpreter is the one where it
    runs, which on a Dask worker's host may live elsewhere), every path absolute (a worker's
    working directory is not ours)."""
    command = ["run", request.runbook.name,
               "--target", request.target, "--inventory", str(request.inventory_path),
               "--output-dir", str(Path(request.output_dir).resolve()), "--quiet"]
    for name, value in overrides.items():
        command += ["-p", name, value]
    if request.incident_id:
        command += ["--incident-id", request.incident_id]
    if notify:
        command += ["--notify", notify]
    return command


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the thread that started it dies (Linux's
    PR_SET_PDEATHSIG), so a run whose Dask worker was killed closes its record as interrupted
    instead of running on unwatched."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _run_child(command: list[str], should_stop: Callable[[], int | None],
               on_start: Callable[[subprocess.Popen[str]], None] | None = None,
               poll_s: float = POLL_S, die_with_parent: bool = False) -> dict[str, Any]:
    """Run one `fraiseql-rb run` to its end. It leads its own session, so a terminal's Ctrl-C
    reaches the fleet only, which passes it on once (a second signal would mean "stop now").
    When `should_stop` names a signal, it is passed on and the child's own handling closes
    its record (run.interrupted)."""
    if should_stop() is not None:
        return {"started": False}
    proc = subprocess.Popen([sys.executable, "-m", "fraiseql_rb", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=_die_with_parent if die_with_parent else None)
    if on_start is not None:
        on_start(proc)
    sent: int | None = None
    while True:
        try:
            out, err = proc.communicate(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            signum = should_stop()
            if signum is not None and sent is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)
                sent = signum
    return {"started": True, "returncode": proc.returncode, "stdout": out, "stderr": err}


def run_target(command: list[str], stop_prefix: str | None = None,
               claim: str | None = None) -> dict[str, Any]:
    """The Dask task: one target's run on a worker (`command`: the arguments of
    `python -m fraiseql_rb`). The fleet's Ctrl-C/SIGTERM arrives as a
    Dask event named `stop_prefix-SIGNAL`; a task that has not started yet then does nothing
    (reported "not run"), a running one passes the signal to its child.

    Dask gives the task of a worker that died to another worker. A runbook may change things
    (a planned change with execute), so a target's run is started at most once: the `claim`
    event is set when it starts, and a second attempt finds it set and reports the loss
    instead of running again."""
    events: list[tuple[int, Any]] = []
    if stop_prefix:
        import distributed

        events = [(int(s), distributed.Event(f"{stop_prefix}-{s.name}")) for s in _STOP_SIGNALS]
    if claim:
        import distributed

        started = distributed.Event(claim)
        if started.is_set():
            return {"started": False, "lost": True}
        started.set()

    def should_stop() -> int | None:
        for signum, event in events:
            with contextlib.suppress(Exception):  # a scheduler gone: let the child finish
                if event.is_set():
                    return signum
        return None

    return _run_child(command, should_stop, poll_s=TASK_POLL_S, die_with_parent=True)


def _result_of(target: str, outcome: dict[str, Any] | None) -> TargetResult:
    """A row from what the child left: its last stdout line is its artifact directory and
    findings.json there says status and root cause."""
    row = TargetResult(target)
    if outcome and outcome.get("lost"):
        row.status = str(Status.UNKNOWN)
        row.root_cause = ("the Dask worker running it died; not started again (the run was "
                          "stopped with it and may have done part of its work: its artifact "
                          "directory, if any, ends with run.interrupted)")
        return row
    if not outcome or not outcome.get("started"):
        return row
    row.exit_code = int(outcome["returncode"])
    lines = str(outcome.get("stdout") or "").strip().splitlines()
    where = Path(lines[-1]) if lines else None
    findings: dict[str, Any] = {}
    if where is not None and (where / "findings.json").is_file():
        row.artifact_dir = str(where)
        with contextlib.suppress(OSError, ValueError):
            findings = json.loads((where / "findings.json").read_text())
    if findings:
        row.status = str(findings.get("status") or Status.UNKNOWN)
        row.root_cause = _root_cause(findings)
    else:  # refused or broken before it wrote anything: its one stderr line says why
        row.status = str(Status.UNKNOWN)
        errors = str(outcome.get("stderr") or "").strip().splitlines()
        row.root_cause = secrets.mask(errors[-1]) if errors else (
            f"the run ended with exit code {row.exit_code} and left no findings.json")
    return row


def _root_cause(findings: dict[str, Any]) -> str:
    """The diagnosis's root cause; without one, the first finding that set the verdict."""
    cause = report.root_cause(findings)
    if cause is not None:
        code, reason, _ = cause
        text = f"{code} — {reason}" if reason else code
    else:
        status = findings.get("status")
        text = ""
        if status not in (None, "ok"):
            for finding in findings.get("findings") or []:
                if finding.get("status") == status and not finding.get("resolved_by"):
                    text = f"{finding.get('check')}: {finding.get('summary')}"
                    break
    return secrets.mask(" ".join(str(text).split()))


# ---- scheduling ------------------------------------------------------------------------------


class _Stop:
    """The fleet's Ctrl-C/SIGTERM: remembered, never raised, so that no child is orphaned
    and every target is accounted for."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.listeners: list[Callable[[int], None]] = []
        self.lock = threading.Lock()

    def __call__(self) -> int | None:
        return self.signum

    def on_signal(self, signum: int, frame: object) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if first:
            print(f"fraiseql-rb: {signal.Signals(signum).name}: starting no more targets; "
                  "stopping the running ones", file=sys.stderr)
        for listener in list(self.listeners):
            listener(signum)


@contextlib.contextmanager
def _signals(stop: _Stop) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, stop.on_signal) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_print_lock = threading.Lock()


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        _err(f"fraiseql-rb: {secrets.mask(text)}")


def _err(line: str) -> None:
    """One whole line on stderr: threads report targets as they end."""
    with _print_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _echo_child_errors(target: str, outcome: dict[str, Any] | None) -> None:
    """A child's stderr (under --quiet only its errors and interruption) with its target."""
    for line in str((outcome or {}).get("stderr") or "").strip().splitlines():
        _err(f"[{target}] {secrets.mask(line)}")


def _run_local(commands: dict[str, list[str]], jobs: int, stop: _Stop,
               quiet: bool) -> dict[str, dict[str, Any] | None]:
    """N children at a time; on a signal, no new child starts and the running ones get it."""
    running: dict[str, subprocess.Popen[str]] = {}
    signalled: set[str] = set()
    lock = threading.Lock()

    def forward(signum: int) -> None:
        with lock:
            for target, proc in running.items():
                signalled.add(target)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    stop.listeners.append(forward)

    def one(target: str) -> dict[str, Any]:
        def started(proc: subprocess.Popen[str]) -> None:
            with lock:
                running[target] = proc
                signum = stop()
                if signum is not None and target not in signalled:  # came while starting
                    signalled.add(target)
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signum)
            _say(quiet, f"{target}: started")

        # `forward` signals the running children (every signal: a second one means "stop
        # now"), so the child's own poll has nothing to pass on
        outcome = (_run_child(commands[target], lambda: None, started)
                   if stop() is None else {"started": False})
        with lock:
            running.pop(target, None)
        return outcome

    outcomes: dict[str, dict[str, Any] | None] = dict.fromkeys(commands)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fleet") as pool:
        futures: dict[Future[dict[str, Any]], str] = {pool.submit(one, t): t for t in commands}
        pending = set(futures)
        while pending:  # short waits: the main thread must stay free for signal handlers
            done, pending = wait_futures(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                target = futures[future]
                outcomes[target] = future.result()
                _report_progress(target, outcomes[target], quiet)
    return outcomes


def _report_progress(target: str, outcome: dict[str, Any] | None, quiet: bool) -> None:
    _echo_child_errors(target, outcome)
    row = _result_of(target, outcome)
    if row.status != NOT_RUN:
        _say(quiet, f"{target}: {row.status.upper()} (exit {row.exit_code})")


def _run_dask(client: Any, commands: dict[str, list[str]], stop: _Stop, quiet: bool,
              fleet_id: str) -> dict[str, dict[str, Any] | None]:
    """One task per target. A task whose result never arrives (the scheduler or its worker
    died) leaves its target "not run"; it is never dropped."""
    import distributed

    def tell_workers(signum: int) -> None:
        with contextlib.suppress(Exception):  # a scheduler already gone cannot be told
            distributed.Event(f"{fleet_id}-{signal.Signals(signum).name}", client=client).set()

    stop.listeners.append(tell_workers)
    futures = {client.submit(run_target, command, fleet_id, f"{fleet_id}-{target}-started",
                             key=f"{fleet_id}-{target}", pure=False): target
               for target, command in commands.items()}
    outcomes: dict[str, dict[str, Any] | None] = dict.fromkeys(commands)
    pending = set(futures)
    while pending:  # polled: the main thread stays free for signal handlers
        done = {f for f in pending if f.done()}
        pending -= done
        for future in done:
            target = futures[future]
            try:
                outcomes[target] = future.result(timeout=SCHEDULER_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - lost with its worker or scheduler
                _say(False, f"{target}: no result from the Dask cluster "
                     f"({type(exc).__name__}); reported as not run")
                continue
            _report_progress(target, outcomes[target], quiet)
        if pending and client.status in ("closed", "closing", "failed"):
            _say(False, f"the Dask cluster stopped answering; {len(pending)} target(s) "
                 "not run")
            break
        if pending:
            time.sleep(POLL_S)
    return outcomes


# ---- the summary -----------------------------------------------------------------------------


def _summary_path(output_dir: Path, runbook: str, incident_id: str | None) -> Path:
    """OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/fleet-HHMMSSZ[_INCIDENT].json, created empty now so that
    no other fleet takes the name (a second fleet in the same second waits for the next)."""
    return artifacts.new_dated_file(output_dir, runbook, "fleet-", ".json", incident_id)


def _write_summary(path: Path, data: dict[str, Any]) -> None:
    """Masked, and whole or not at all: a reader never sees half a file."""
    write_json_atomic(path, secrets.mask_data(data))


def _table(rows: list[TargetResult]) -> list[str]:
    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[:width - 1] + "…"

    cells = [("target", "status", "root cause", "artifact dir")] + [
        (r.target, r.status.upper() if r.status != NOT_RUN else NOT_RUN,
         cut(r.root_cause, 60) or "-", r.artifact_dir or "-") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return [secrets.mask("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3])
            for c in cells]


def fleet_status(rows: list[TargetResult]) -> Status:
    """The worst target; a target not run counts as unknown (its state was not checked)."""
    return worst([Status.UNKNOWN if r.status == NOT_RUN else r.status for r in rows])


def main(args: argparse.Namespace) -> int:
    """Validate everything, run every target, print the table and write fleet.json; the exit
    code is the worst target's (130/143 when the fleet itself was interrupted)."""
    names, inventory_path = _chosen_targets(args)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be 1 or more, got {args.jobs}")
    overrides = {name: value for name, value in args.parameter or []}
    requests = _prepare_all(args, names, inventory_path, overrides)
    inventory.register_secrets(inventory_path, names)
    address = _scheduler_address(args)
    client = _connect(address) if address else None  # refused here, before anything runs

    runbook = requests[0].runbook.name
    output_dir = Path(requests[0].output_dir).resolve()
    commands = {r.target: command_for(r, overrides, args.notify) for r in requests}
    summary = _summary_path(output_dir, runbook, args.incident_id)
    started_at = isoformat(utcnow())
    parameters = {k: v for k, v in requests[0].parameters.items()
                  if k not in ("target", "incident_id")}
    document: dict[str, Any] = {
        "kind": "fleet", "runbook": runbook, "incident_id": args.incident_id,
        "inventory": str(inventory_path.resolve()), "started_at": started_at,
        "finished_at": None, "parameters": parameters,
        "scheduler": address or f"local ({args.jobs or 1} at a time)",
        "status": str(Status.UNKNOWN), "interrupted_by": None,
        "targets": [TargetResult(n).as_dict() for n in names],
    }
    _write_summary(summary, document)  # a fleet killed outright still leaves its targets

    stop = _Stop()
    _say(args.quiet, f"fleet: {runbook} on {len(names)} target(s), {document['scheduler']}")
    try:
        with _signals(stop):
            if client is not None:
                fleet_id = summary.stem + "-" + os.urandom(4).hex()
                outcomes = _run_dask(client, commands, stop, args.quiet, fleet_id)
            else:
                outcomes = _run_local(commands, args.jobs or 1, stop, args.quiet)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=SCHEDULER_TIMEOUT_S)

    rows = [_result_of(n, outcomes.get(n)) for n in names]
    status = fleet_status(rows)
    document.update(finished_at=isoformat(utcnow()), status=str(status),
                    interrupted_by=signal.Signals(stop.signum).name if stop.signum else None,
                    targets=[r.as_dict() for r in rows])
    _write_summary(summary, document)
    not_run = [r.target for r in rows if r.status == NOT_RUN]
    print(f"status: {status}")
    for line in _table(rows):
        print(line)
    if not_run:
        print(f"not run: {', '.join(not_run)}")
    print(summary)  # the contract: the last line of stdout is where the artifacts are
    if stop.signum:
        return 128 + int(stop.signum)
    return EXIT_CODE.get(status, EXIT_UNKNOWN)
