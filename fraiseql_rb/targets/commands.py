"""The inventory's `status_command`, `logs_command` and `restart_command`, run with timeouts.

They are the target's own words for systemctl/docker/kubectl, so we run them through the
shell exactly as written, and mask their output before anyone sees it: a log line can carry
a token. What a status command prints is read here (`parse_status`, `parse_pid`), and the
restart is done here (`restart`), for every playbook that needs one.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from fraiseql_rb.core import progress, secrets, thresholds
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Action, Status
from fraiseql_rb.targets import service

COMMAND_TIMEOUT_S = thresholds.COMMAND_TIMEOUT_S

_MAIN_PID = re.compile(r"Main PID:\s*(\d+)")  # systemctl status
# Where status commands print the server's pid.
_PID_PATTERNS = (
    _MAIN_PID,  # systemctl status
    re.compile(r"^\s*MainPID=(\d+)\s*$", re.M),  # systemctl show -p MainPID
    re.compile(r'"Pid"\s*:\s*(\d+)'),  # docker inspect (JSON)
    re.compile(r"^\s*(\d+)\s*$", re.M),  # docker inspect -f '{{.State.Pid}}', pidof, pgrep
)


def parse_pid(output: str) -> int | None:
    """The server's pid in a status command's output; None when absent, 0 (not running) or
    ambiguous (several bare pids, as `pidof` prints for several processes)."""
    for pattern in _PID_PATTERNS[:3]:
        if m := pattern.search(output):
            return int(m.group(1)) or None
    bare = _PID_PATTERNS[3].findall(output)
    if len(bare) == 1:
        return int(bare[0]) or None
    return None


@dataclass(frozen=True)
class ProcessState:
    """What a status command says: running, stopped, failed, starting, restarting, stopping,
    paused or unknown; `source` names the dialect it was read in."""

    state: str
    detail: str
    source: str
    pid: int | None = None


_SYSTEMD_ACTIVE = re.compile(r"^\s*Active:\s*(?P<active>[a-z-]+)(?:\s*\((?P<sub>[^)]*)\))?",
                             re.MULTILINE)
_SYSTEMD_STATES = {"active": "running", "reloading": "running", "inactive": "stopped",
                   "failed": "failed", "activating": "starting", "deactivating": "stopping"}
# `docker inspect -f '{{.State.Status}}'`, or the "State"/"Status" of `docker inspect` JSON
_DOCKER_STATUS = re.compile(r"^\s*(?:\"(?:Status|State)\"\s*:\s*)?\"?(running|exited|restarting|"
                            r"paused|dead|created|removing)\"?,?\s*$", re.MULTILINE | re.I)
# the STATUS column of `docker ps -a`
_DOCKER_PS = re.compile(r"\b(Up (?:\d+|About|Less)|Exited \(\d+\)|Restarting \(\d+\)|Dead\b)")
_DOCKER_STATES = {"running": "running", "up": "running", "exited": "stopped",
                  "restarting": "restarting", "paused": "paused", "dead": "failed",
                  "created": "stopped", "removing": "stopping"}
# the STATUS column of `kubectl get pod`
_KUBE = re.compile(r"\b(Running|CrashLoopBackOff|Error|Completed|Pending|Terminating|"
                   r"ContainerCreating|ImagePullBackOff|OOMKilled)\b")
_KUBE_STATES = {"Running": "running", "CrashLoopBackOff": "restarting", "Error": "failed",
                "OOMKilled": "failed", "Completed": "stopped", "Pending": "starting",
                "ContainerCreating": "starting", "ImagePullBackOff": "failed",
                "Terminating": "stopping"}


def parse_status(output: str, returncode: int | None) -> ProcessState:
    """Read systemd-like (`Active:`), docker-like or kubectl-like status output; fall back on
    systemctl's exit codes (0 running, 3 not running, 4 no such unit)."""
    pid_match = _MAIN_PID.search(output)
    pid = int(pid_match.group(1)) if pid_match else None
    if m := _SYSTEMD_ACTIVE.search(output):
        active, sub = m.group("active"), (m.group("sub") or "")
        state = _SYSTEMD_STATES.get(active, "unknown")
        if active == "active" and sub.startswith("exited"):
            state = "stopped"  # a oneshot that finished: nothing is serving
        if active == "activating" and "auto-restart" in sub:
            state = "restarting"  # systemd's crash loop
        return ProcessState(state, m.group(0).strip(), "systemd", pid if state == "running"
                            else None)
    if m := _DOCKER_STATUS.search(output):
        return ProcessState(_DOCKER_STATES[m.group(1).lower()], m.group(0).strip(), "docker")
    if m := _DOCKER_PS.search(output):
        word = m.group(1).split()[0].lower()
        return ProcessState(_DOCKER_STATES.get(word, "unknown"), m.group(0), "docker ps")
    if m := _KUBE.search(output):
        return ProcessState(_KUBE_STATES[m.group(1)], m.group(1), "kubectl")
    if returncode == 0:
        return ProcessState("running", "exit code 0", "exit code", pid)
    if returncode == 3:
        return ProcessState("stopped", "exit code 3 (systemctl: not running)", "exit code")
    if returncode is None:
        return ProcessState("unknown", "the status command timed out", "exit code")
    return ProcessState("unknown", f"exit code {returncode}", "exit code")


@dataclass(frozen=True)
class CommandResult:
    command: str
    returncode: int | None  # None: it timed out
    stdout: str
    stderr: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(ctx: RunContext, key: str, timeout_s: float = COMMAND_TIMEOUT_S) -> CommandResult:
    """Run the target's `key` command (e.g. "logs_command"); output masked."""
    command = str(ctx.target.require(key))
    began = time.monotonic()
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL,
                              env=secrets.clean_environment())
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return CommandResult(command, None, secrets.mask(out), "timed out",
                             round(time.monotonic() - began, 2))
    return CommandResult(command, done.returncode, secrets.mask(done.stdout),
                         secrets.mask(done.stderr), round(time.monotonic() - began, 2))


@dataclass(frozen=True)
class Restart:
    """What `restart` did. A dry run has no `result` (its action is recorded, not executed);
    `health` is `service.wait_for_health`'s answer, None when the command failed or did not
    run."""

    command: str
    action: Action
    result: CommandResult | None = None
    output: tuple[str, ...] = ()  # the command's last lines of output, masked
    health: tuple[service.Probe, Status, str, float, int] | None = None

    @property
    def executed(self) -> bool:
        return self.result is not None


def restart(ctx: RunContext, wait_s: float, poll_s: float = 1.0, *, why: str | None = None,
            step: str | None = None) -> Restart:
    """The target's restart_command, run only when `ctx.may_execute()`; otherwise the exact
    command is recorded as an action not executed. Run, the action carries its exit code, time
    and last output lines, and then /health is polled for up to `wait_s` (not after a failed
    command). `why` is printed with the command; `step` (the runbook step the wait is) makes
    the wait announced under the cell. The caller checks that restart_command exists."""
    command = str(ctx.target.require("restart_command"))
    if not ctx.may_execute():
        return Restart(command, ctx.action("restart_service", command, executed=False))
    print(f"restarting{f' ({why})' if why else ''}: {secrets.mask(command)}", flush=True)
    result = run(ctx, "restart_command")
    output = tuple((result.stdout + result.stderr).strip().splitlines()[-5:])
    action = ctx.action("restart_service", command, executed=True,
                        result={"returncode": result.returncode, "elapsed_s": result.elapsed_s,
                                "output": list(output)})
    if not result.ok:
        return Restart(command, action, result, output)
    if step:
        print(f"waiting up to {wait_s:g} s for /health to answer healthy ({step})", flush=True)
    with progress.waiting("waiting for /health after the restart", wait_s):
        health = service.wait_for_health(ctx, wait_s, poll_s)
    return Restart(command, action, result, output, health)
