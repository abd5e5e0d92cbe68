"""Planned changes (§2.2 step 2, §6, §7): the three phases every change runbook goes through,
the gate between the pre-checks and the change, the inventory's commands run with their
values, and the change record a reviewer reads like an incident report.

A change runbook is: **pre-checks** (is it safe now, what will it cost), **the change** (only
with execute=True, the most dangerous also with confirm = the target's name; otherwise every
command is recorded, not run), **verification**, and **rollback** where the runbook gives one.
`phase` marks where the run is, so an interrupted change says which phase it reached (the
runner reads the last `change.phase` finding into its `run.interrupted` finding). `gate`
decides once whether the change may run: a failed or unmeasured pre-check stops it before the
change (no upgrade after a failed backup), and the reason is a finding.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import PHASE_CHECK, Finding, Status, isoformat, utcnow

PHASES = ("pre-checks", "change", "verification", "rollback")
OUTCOMES = {
    "dry-run": "nothing was changed: every command is recorded with executed=false",
    "refused": "the pre-checks stopped the change before it began",
    "nothing-to-do": "the pre-checks found nothing to change",
    "applied": "the change ran and its verification passed",
    "failed": "the change or its verification failed, and no rollback ran or applied",
    "rolled-back": "the change failed its verification and was rolled back",
    "rollback-failed": "the change failed its verification and the rollback failed too",
}


def phase(ctx: RunContext, name: str, what: str) -> Finding:
    """Enter phase `name` (one of PHASES): an info finding, so the timeline shows where the
    change was at each moment and an interruption can say which phase it reached."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}: one of {', '.join(PHASES)}")
    print(f"── phase: {name}: {what}", flush=True)
    return ctx.record(PHASE_CHECK, Status.INFO, f"phase {name}: {what}",
                      {"phase": name, "order": PHASES.index(name) + 1})


def reached(ctx: RunContext) -> str | None:
    """The phase the run is in (None before the first)."""
    found = ctx.latest(PHASE_CHECK)
    return found.evidence.get("phase") if found is not None else None


_BLOCKING = (Status.CRITICAL, Status.UNKNOWN)


def stopping(ctx: RunContext, prechecks: Iterable[str]) -> list[str]:
    """The pre-checks recorded so far that stop the change (critical, or unknown: what could
    not be measured is not safe): the gate's rule, for a step that must not run before it
    (a backup or dump nobody will need)."""
    return [name for name in prechecks
            if (found := ctx.latest(name)) is not None and found.status in _BLOCKING]


@check("change.gate")
def gate(ctx: RunContext, prechecks: Iterable[str], *, dangerous: bool = False,
         needed: bool = True, nothing_to_do: str = "nothing needs changing") -> Finding:
    """May the change run? Only when every pre-check in `prechecks` was recorded and none is
    critical or unknown (what could not be measured does not count as safe), something needs
    changing (`needed`), execute=True, and for a `dangerous` change confirm = the target's
    name. The answer is `evidence.proceed`; `allowed` reads it."""
    names = list(prechecks)
    stopped = set(stopping(ctx, names))
    blocking = []
    for name in names:
        found = ctx.latest(name)
        if found is None:
            blocking.append({"check": name, "status": "missing", "summary": "did not run"})
        elif name in stopped:
            blocking.append({"check": name, "status": str(found.status),
                             "summary": found.summary})
    evidence: dict[str, Any] = {"prechecks": names, "blocking": blocking,
                                "execute": ctx.execute, "dangerous": dangerous,
                                "confirmed": bool(ctx.confirm) and
                                ctx.confirm == ctx.target_name, "proceed": False}
    if blocking:
        which = "; ".join(f"{b['check']} ({b['status']})" for b in blocking)
        return ctx.result(Status.WARNING if ctx.execute else Status.INFO,
                          f"the change does not run: a pre-check failed or could not be "
                          f"measured: {which}", evidence | {"outcome": "refused"},
                          "fix what the pre-checks found (read them above), then rerun")
    if not needed:
        return ctx.result(Status.INFO, f"no change: {nothing_to_do}",
                          evidence | {"outcome": "nothing-to-do"})
    if not ctx.execute:
        how = "-p execute true" + (f" -p confirm {ctx.target_name}" if dangerous else "")
        return ctx.result(Status.INFO, "dry run: the pre-checks pass; the change's commands "
                          "are recorded (executed=false) and nothing changes",
                          evidence | {"outcome": "dry-run"}, f"rerun with {how} to make it")
    if dangerous and not evidence["confirmed"]:
        given = "is not set" if ctx.confirm is None else f"is {ctx.confirm!r}"
        return ctx.result(Status.WARNING, f"execute=True but confirm {given}, not the "
                          f"target's name {ctx.target_name!r}: nothing runs",
                          evidence | {"outcome": "dry-run"},
                          f"rerun with -p execute true -p confirm {ctx.target_name}")
    return ctx.result(Status.INFO, "the pre-checks pass and the change is authorized "
                      f"(execute=True{f', confirm={ctx.confirm}' if dangerous else ''})",
                      evidence | {"proceed": True, "outcome": "applied"})


def allowed(ctx: RunContext) -> bool:
    """The gate let the change run in this run."""
    found = ctx.latest(gate.check_name)  # type: ignore[attr-defined]
    return found is not None and bool(found.evidence.get("proceed"))


def gate_outcome(ctx: RunContext) -> str | None:
    """What the gate decided, as an OUTCOMES key (None before the gate)."""
    found = ctx.latest(gate.check_name)  # type: ignore[attr-defined]
    return found.evidence.get("outcome") if found is not None else None


# -- the inventory's commands ----------------------------------------------------------------

@dataclass(frozen=True)
class CommandOutcome:
    """One run (or recording) of an inventory command. `returncode` None with `executed`
    means it timed out; `missing` means the inventory has no such command."""

    key: str
    command: str
    executed: bool
    returncode: int | None = None
    elapsed_s: float = 0.0
    output: tuple[str, ...] = ()  # last lines of stdout and stderr, masked
    missing: bool = False
    timeout_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.executed and self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.executed and self.returncode is None and not self.missing

    def describe(self) -> str:
        """One line: how the command ended, with its last line of output."""
        if self.missing:
            return f"the inventory has no {self.key}"
        if not self.executed:
            return f"not run: {self.command}"
        if self.timed_out:
            how = f"did not finish within {self.timeout_s:g} s (stopped)"
        else:
            how = f"exited {self.returncode} after {self.elapsed_s:g} s"
        last = f": {self.output[-1]}" if self.output else ""
        return f"{self.key} {how}{last}"

    def evidence(self) -> dict[str, Any]:
        return {"key": self.key, "command": self.command, "executed": self.executed,
                "returncode": self.returncode, "timed_out": self.timed_out,
                "elapsed_s": self.elapsed_s, "output": list(self.output),
                "missing": self.missing}


def command_text(ctx: RunContext, key: str, values: Mapping[str, Any] | None = None) -> str:
    """The target's `key` command with its `{placeholders}` filled in, each value shell-quoted
    (`upgrade_command = "deploy.sh {version}"`). An unknown placeholder is a usage error
    naming the key, not a KeyError half-way through a change."""
    template = str(ctx.target.require(key))
    quoted = {name: shlex.quote(str(value)) for name, value in (values or {}).items()}
    try:
        return template.format_map(quoted)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join(f"{{{n}}}" for n in quoted) or "none"
        raise ValueError(f"{key} of target {ctx.target_name!r} has a placeholder this runbook "
                         f"does not fill ({exc}); it fills {known}") from None


def run_command(ctx: RunContext, key: str, action: str, *,
                values: Mapping[str, Any] | None = None,
                timeout_s: float = thresholds.COMMAND_TIMEOUT_S,
                dangerous: bool = False) -> CommandOutcome:
    """Run the target's `key` command, or record it: it runs only when the gate allowed the
    change (or, outside a gated change, when `ctx.may_execute(dangerous)`). Either way it
    lands in `actions`, run with its exit code, time and last lines of output. A command
    that hangs is stopped at `timeout_s`."""
    if not ctx.target.get(key):
        return CommandOutcome(key, "", False, missing=True)
    command = command_text(ctx, key, values)
    gated = ctx.latest(gate.check_name) is not None  # type: ignore[attr-defined]
    may = allowed(ctx) if gated else ctx.may_execute(dangerous=dangerous)
    if not may:
        print(repr(ctx.action(action, command, executed=False)))
        return CommandOutcome(key, command, False)
    print(f"running {key}: {secrets.mask(command)}", flush=True)
    began = time.monotonic()
    returncode, text = _run_group(command, timeout_s)
    elapsed = round(time.monotonic() - began, 2)
    lines = text.strip().splitlines()[-thresholds.COMMAND_OUTPUT_LINES:]
    output = tuple(secrets.mask(line) for line in lines)
    outcome = CommandOutcome(key, command, True, returncode, elapsed, output,
                             timeout_s=timeout_s)
    ctx.action(action, command, executed=True,
               result={"returncode": returncode, "timed_out": outcome.timed_out,
                       "elapsed_s": elapsed, "output": list(output[-5:])})
    return outcome


def _run_group(command: str, timeout_s: float) -> tuple[int | None, str]:
    """Run `command` through the shell in its own process group; at the timeout the whole
    group is killed (a shell's children too, which would otherwise hold the pipes open),
    and the exit code is None."""
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            env=secrets.clean_environment(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out or ""
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out or ""


def command_failed(ctx: RunContext, outcome: CommandOutcome, what: str,
                   remediation: str) -> Finding:
    """The running check's critical finding for a command that failed, hung or is missing:
    its exit code and last output lines, and that the runbook stops here."""
    return ctx.result(Status.CRITICAL, f"{what} failed: {outcome.describe()}; the change "
                      "stops here", outcome.evidence(), remediation)


# -- the change record ----------------------------------------------------------------------

@check("change.record")
def record(ctx: RunContext, what: str, parameters: Mapping[str, Any],
           outcome: str | None = None) -> Finding:
    """The change record: what was to change, when, by which parameters, which phases ran,
    every command (run or recorded) and the result, as one finding a reviewer reads first.
    `outcome` (an OUTCOMES key) defaults to what the gate decided."""
    result = outcome or gate_outcome(ctx) or "refused"
    if result not in OUTCOMES:
        raise ValueError(f"unknown outcome {result!r}: one of {', '.join(OUTCOMES)}")
    phases = [f.evidence.get("phase") for f in ctx.log.findings if f.check == PHASE_CHECK]
    actions = [a.to_dict() for a in ctx.log.actions]
    problems = [{"check": f.check, "status": str(f.status), "summary": f.summary}
                for f in ctx.log.findings
                if f.status in (Status.CRITICAL, Status.WARNING, Status.UNKNOWN)
                and f.resolved_by is None]
    evidence = {"what": what, "outcome": result, "meaning": OUTCOMES[result],
                "started_at": ctx.log.started_at, "recorded_at": isoformat(utcnow()),
                "target": ctx.target_name, "parameters": dict(parameters),
                "execute": ctx.execute, "phases": phases,
                "executed_commands": sum(1 for a in actions if a["executed"]),
                "recorded_commands": sum(1 for a in actions if not a["executed"]),
                "problems": problems}
    table = pd.DataFrame([{"action": a["action"], "executed": a["executed"],
                           "command": a["command"], "at": a["at"],
                           "result": a.get("result")} for a in actions],
                         columns=["action", "executed", "command", "at", "result"])
    return ctx.result(Status.INFO, f"change record: {what}: {result} ({OUTCOMES[result]}); "
                      f"phases {' → '.join(phases) or 'none'}; "
                      f"{evidence['executed_commands']} command(s) run, "
                      f"{evidence['recorded_commands']} recorded", evidence, table=table)
