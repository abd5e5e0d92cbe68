"""The inventory's `status_command`, `logs_command` and `restart_command`, run with timeouts.

They are the target's own words for systemctl/docker/kubectl, so we run them through the
shell exactly as written, and mask their output before anyone sees it: a log line can carry
a token.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from . import secrets
from .context import RunContext, check
from .findings import Finding, Status

COMMAND_TIMEOUT_S = 60.0

# Where status commands print the server's pid.
_PID_PATTERNS = (
    re.compile(r"Main PID:\s*(\d+)"),  # systemctl status
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


@check("service.logs")
def check_logs_command(ctx: RunContext, lines: int = 20) -> Finding:
    """The logs are readable where the inventory says (§4.2 "docker logs fraiseql")."""
    if not ctx.target.get("logs_command"):
        return ctx.record("service.logs", Status.UNKNOWN,
                          "the target has no logs_command, so its logs cannot be read "
                          "from here", {}, "add logs_command (e.g. journalctl -u fraiseql)")
    result = run(ctx, "logs_command")
    tail = result.stdout.splitlines()[-lines:]
    evidence = {"command": result.command, "returncode": result.returncode,
                "lines": len(result.stdout.splitlines()), "last_lines": tail}
    if not result.ok:
        return ctx.record("service.logs", Status.WARNING,
                          f"logs_command failed ({result.returncode}): "
                          f"{(result.stderr.strip().splitlines() or [''])[-1]}", evidence,
                          "fix logs_command in the inventory")
    if not tail:
        return ctx.record("service.logs", Status.WARNING, "logs_command printed nothing",
                          evidence, "check that the service logs where logs_command reads")
    return ctx.record("service.logs", Status.OK,
                      f"logs readable: {len(result.stdout.splitlines())} lines", evidence)
