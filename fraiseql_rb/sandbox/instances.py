"""More stand-in instances behind the sandbox's "load balancer": what the inventory's
`scale_command` does in the sandbox (`sandbox service scale out`, `... scale in URL`).

`scale out` starts one more stand-in exactly as `server.start` starts the primary one (same
release, same environment, same `--state-dir`, so the behaviour faults reach it too) from a
copy of the primary's config that differs only in `bind_addr` (a new free port), waits until
its /health answers, records it in `sandbox.json` (`instances`: url, port, pid, config)
and prints its URL as the last line of output: that is the contract the scale-out runbook
reads. `scale in URL` stops that instance with SIGTERM (the stand-in finishes the requests in
flight, closes its pool and exits), deletes its config copy and forgets it. The primary
instance (the inventory's `fraiseql_url`) is never removed by `scale in`. `sandbox down`
stops the extra instances with the rest (`stop_all`); `sandbox status` lists them.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import isoformat, utcnow

from . import cluster as pgcluster
from . import processes, server
from .state import Sandbox, SandboxError

STATE_KEY = "instances"
_BIND = re.compile(r"^bind_addr\s*=.*$", re.MULTILINE)


def listed(sb: Sandbox) -> list[dict[str, Any]]:
    """The extra instances `sandbox.json` records (alive or not)."""
    return [dict(entry) for entry in sb.state.get(STATE_KEY) or []]


def alive(entry: dict[str, Any]) -> bool:
    """Is the recorded process still that instance (its command line names its config)?"""
    return processes.alive(entry.get("pid"), str(entry.get("config")))


def scale(sb: Sandbox, values: list[str]) -> int:
    """`scale out` or `scale in URL` (see the module docstring); 0 when done."""
    direction = values[0] if values else ""
    if direction == "out":
        print(add(sb))
        return 0
    if direction == "in":
        url = values[1].strip().rstrip("/") if len(values) > 1 else ""
        if not url:
            raise UsageError("service scale in takes the URL of the instance to remove")
        remove(sb, url)
        print(f"stopped and removed {url}")
        return 0
    raise UsageError("service scale takes `out`, or `in` and the instance URL")


def _config_text(sb: Sandbox, port: int) -> str:
    """The primary's config with only `bind_addr` changed (checked by reading it back)."""
    text = sb.server_config.read_text()
    address = f"127.0.0.1:{port}"
    copied, count = _BIND.subn(f'bind_addr = "{address}"', text, count=1)
    if count == 0:  # the server's default is bind_addr; a config may omit it
        copied = f'bind_addr = "{address}"\n' + text
    original = tomllib.loads(text)
    parsed = tomllib.loads(copied)
    if parsed.get("bind_addr") != address or (
            {k: v for k, v in parsed.items() if k != "bind_addr"}
            != {k: v for k, v in original.items() if k != "bind_addr"}):
        raise SandboxError(f"could not copy {sb.server_config} with a new bind_addr")
    return copied


def add(sb: Sandbox, wait_s: float = server.HEALTH_WAIT_S) -> str:
    """Start one more stand-in on a new port; its URL once /health answers."""
    if server.pid(sb) is None:
        raise SandboxError("the primary stand-in is not running: nothing to scale out from "
                           "(sandbox service start)")
    port = pgcluster.free_port()
    config = sb.server_dir / f"instance-{port}.toml"
    config.write_text(_config_text(sb, port))
    url = f"https://127.0.0.1:{port}"
    release = server.release_of(sb.server_release)
    env = {**os.environ,
           "DATABASE_URL": server.configured_database_url(sb),
           "FRAISEQL_METRICS_TOKEN": sb.secret("metrics_token"),
           "FRAISEQL_ADMIN_TOKEN": sb.secret("admin_token")}
    log = sb.logs_dir / f"fraiseql-server-{port}.log"
    proc = processes.spawn([sys.executable, "-m", server.SERVER_MODULE, "--config",
                            str(config), "--state-dir", str(sb.server_dir),
                            "--release", release.name], log, env)
    entry = {"url": url, "port": port, "pid": proc.pid, "config": str(config),
             "log": str(log), "started_at": isoformat(utcnow())}
    sb.state[STATE_KEY] = [*listed(sb), entry]
    sb.save()
    try:
        server.wait_healthy(sb, proc, url=url, wait_s=wait_s)
    except SandboxError:
        _stop(sb, entry)
        raise
    return url


def remove(sb: Sandbox, url: str) -> None:
    """Stop (SIGTERM: it drains) and forget the extra instance at `url`."""
    if url.rstrip("/") == sb.server_url:
        raise UsageError(f"{url} is the primary instance (fraiseql_url): scale in never "
                         "removes it")
    entries = listed(sb)
    entry = next((e for e in entries if e.get("url") == url.rstrip("/")), None)
    if entry is None:
        known = ", ".join(e["url"] for e in entries) or "none"
        raise UsageError(f"{url} is not an instance this sandbox started (extra instances: "
                         f"{known})")
    _stop(sb, entry)


def _stop(sb: Sandbox, entry: dict[str, Any]) -> None:
    processes.terminate(entry.get("pid"), str(entry.get("config")))
    Path(str(entry["config"])).unlink(missing_ok=True)
    sb.state[STATE_KEY] = [e for e in listed(sb) if e.get("url") != entry.get("url")]
    sb.save()


def stop_all(sb: Sandbox) -> None:
    """Stop every extra instance (`sandbox down`)."""
    for entry in listed(sb):
        _stop(sb, entry)


def status_line(sb: Sandbox) -> str:
    """For `sandbox status`: the extra instances and whether each runs."""
    entries = listed(sb)
    if not entries:
        return "none beyond the server (scale out adds some)"
    return "; ".join(f"{e['url']} pid {e['pid']} "
                     f"{'running' if alive(e) else 'not running'}" for e in entries)
