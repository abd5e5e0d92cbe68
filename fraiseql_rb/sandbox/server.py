"""The stand-in FraiseQL server as the sandbox runs it: config, certificate, process,
and the systemctl-like `service` command the inventory's commands call."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

from fraiseql_rb.core import secrets
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import isoformat, utcnow
from fraiseql_rb.core.inventory import with_password

from . import cluster as pgcluster
from . import processes, traffic
from .standin.releases import Release, UnknownRelease, resolve
from .state import Sandbox, SandboxError

SERVER_MODULE = "fraiseql_rb.sandbox.standin"
POOL_MAX = 10  # the stand-in's pool_max_size: small, so pool drills are quick
HEALTH_WAIT_S = 20.0


def write_config(sb: Sandbox, overrides: dict[str, Any] | None = None,
                 tables: dict[str, dict[str, Any]] | None = None) -> None:
    """The stand-in's config in the real v2 format: top-level keys, no secrets in the file."""
    settings: dict[str, Any] = {
        "bind_addr": f"127.0.0.1:{sb.state['server_port']}",
        "database_url": sb.app_database_url(with_password=False),
        "pool_min_size": 2,
        "pool_max_size": POOL_MAX,
        "pool_timeout_secs": 5,
        "metrics_enabled": True,
        "admin_api_enabled": True,
        "introspection_enabled": False,
        "introspection_require_auth": True,
        "cors_enabled": False,
        "request_timeout_secs": 30,
        **(overrides or {}),
    }
    sections: dict[str, dict[str, Any]] = {
        "tls": {"enabled": True, "cert_path": str(sb.server_certs / "server.crt"),
                "key_path": str(sb.server_certs / "server.key"), "min_version": "1.2"},
        "rate_limiting": {"enabled": True, "rps_per_ip": 100, "rps_per_user": 1000,
                          "burst_size": 500},
        # the stand-in is its own OIDC issuer (discovery + JWKS), so oidc-down is real;
        # required = false: the stand-in serves anonymous traffic and must say so
        "auth": {"issuer": sb.server_url, "audience": "fraiseql-sandbox",
                 "jwks_uri": f"{sb.server_url}/.well-known/jwks.json",
                 "jwks_cache_ttl_secs": 300, "allowed_algorithms": ["ES256"],
                 "required": False},
    }
    for name, values in (tables or {}).items():
        sections[name] = {**sections.get(name, {}), **values}
    lines = ["# FraiseQL v2 server config for the drill sandbox (secrets come from the env)"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    sb.server_dir.mkdir(parents=True, exist_ok=True)
    sb.server_config.write_text("\n".join(lines) + "\n")


def issue_certificate(sb: Sandbox, days: float = 365) -> None:
    """The stand-in's own certificate, from the sandbox CA; the server picks up a new one
    without a restart, as a certificate renewal in production would be."""
    pgcluster.issue_server_cert(sb.cluster.certs_dir, days=days, out_dir=sb.server_certs)


def write_behaviour_faults(sb: Sandbox, faults: dict[str, Any]) -> None:
    """`server/faults.json`: behaviour faults the running stand-in picks up at once."""
    path = sb.server_dir / "faults.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(faults, indent=2) + "\n")
    os.replace(tmp, path)


def read_behaviour_faults(sb: Sandbox) -> dict[str, Any]:
    path = sb.server_dir / "faults.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def pid(sb: Sandbox) -> int | None:
    """The stand-in's pid if that process is alive and really is this sandbox's stand-in."""
    value = sb.state.get("server_pid")
    return int(value) if processes.alive(value, str(sb.server_config)) else None


def release_of(name: str | None) -> Release:
    """The release `name` names (None: main); an unknown one is a usage error (exit 64)."""
    try:
        return resolve(name)
    except UnknownRelease as exc:
        raise UsageError(str(exc)) from None


def record_release(sb: Sandbox, name: str | None) -> Release:
    """Validate `name` and record it as the release the next start emulates."""
    release = release_of(name)
    sb.state["server_release"] = release.name
    sb.save()
    return release


def start(sb: Sandbox, *, wait: bool = True) -> int:
    """Start the stand-in emulating the recorded release (`Sandbox.server_release`)."""
    if (running := pid(sb)) is not None:
        return running
    release = release_of(sb.server_release)
    env = {**os.environ,
           "DATABASE_URL": configured_database_url(sb),
           "FRAISEQL_METRICS_TOKEN": sb.secret("metrics_token"),
           "FRAISEQL_ADMIN_TOKEN": sb.secret("admin_token")}
    proc = processes.spawn([sys.executable, "-m", SERVER_MODULE, "--config",
                            str(sb.server_config), "--state-dir", str(sb.server_dir),
                            "--release", release.name],
                           sb.server_log, env)
    sb.state["server_pid"] = proc.pid
    sb.state["server_started_at"] = isoformat(utcnow())
    sb.save()
    if wait:
        wait_healthy(sb, proc)
    return proc.pid


def configured_database_url(sb: Sandbox) -> str:
    """What the stand-in connects with: its config's `database_url` (the node the config
    names, which the failover runbook rewrites) with the application role's password, which
    never sits in the file, passed as DATABASE_URL as a unit's environment file would; the
    primary's URL when the config names none."""
    try:
        configured = tomllib.loads(sb.server_config.read_text()).get("database_url")
    except (OSError, tomllib.TOMLDecodeError):
        configured = None
    if not isinstance(configured, str) or not configured:
        return sb.app_database_url()
    return with_password(configured, sb.secret("database_password"))


def wait_healthy(sb: Sandbox, proc: subprocess.Popen[bytes] | None = None, *,
                 url: str | None = None, wait_s: float = HEALTH_WAIT_S) -> None:
    """Until `url` (default: the primary instance) /health answers at all (200, or 503 when
    the database is down on purpose); a `proc` that exits meanwhile is an error at once."""
    url = url or sb.server_url
    verify = ssl.create_default_context(cafile=str(sb.ca_cert))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SandboxError(f"the stand-in server at {url} exited ({proc.returncode}); "
                               f"see {sb.logs_dir}")
        try:
            response = httpx.get(f"{url}/health", timeout=2, verify=verify)
            if response.status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SandboxError(f"the stand-in server at {url} did not answer within {wait_s:.0f} s; "
                       f"see {sb.logs_dir}")


def stop(sb: Sandbox, *, sig: int = signal.SIGTERM, timeout: float = 10) -> bool:
    stopped = processes.terminate(sb.state.get("server_pid"), str(sb.server_config), sig=sig,
                                  timeout=timeout)
    return stopped


def restart(sb: Sandbox, *, release: str | None = None) -> int:
    """Stop and start the stand-in; with `release`, it comes back emulating that release
    (a patch upgrade or a rollback), else the recorded one."""
    if release is not None:
        release_of(release)  # refuse an unknown release before stopping anything
    stop(sb)
    if release is not None:
        record_release(sb, release)
    started = start(sb)
    if release is not None:
        traffic.restart(sb)
    return started


def service(root: Path, action: str, values: list[str] | None = None, *,
            lines: int = 50) -> int:
    """systemctl-like control of the stand-in: what the inventory's commands call.

    Exit codes follow systemctl: `status` is 0 when running and 3 when not. `upgrade V` and
    `rollback V` (upgrade_command, rollback_command) restart it as release V; `scale out`
    and `scale in URL` (scale_command) add or remove one more stand-in.
    """
    sb = Sandbox.open(root)
    sb.require()
    values = list(values or [])
    if action in ("upgrade", "rollback"):
        if len(values) != 1:
            raise UsageError(f"service {action} takes one release, e.g. 2.14.1")
        print(f"{action} to {values[0]}: restarted, pid {restart(sb, release=values[0])}")
        return 0
    if action == "scale":
        from . import instances

        return instances.scale(sb, values)
    if action == "start":
        print(f"started, pid {start(sb)}")
        return 0
    if action == "stop":
        print("stopped" if stop(sb) else "was not running")
        return 0
    if action == "restart":
        print(f"restarted, pid {restart(sb)}")
        return 0
    if action == "status":
        running = pid(sb)
        print("● fraiseql-server.service - FraiseQL v2 (sandbox stand-in)")
        if running is None:
            print("     Active: inactive (dead)")
            return 3
        print(f"     Active: active (running) since {sb.state.get('server_started_at')}")
        print(f"   Main PID: {running}")
        print(f"     Listen: {sb.server_url}")
        print(f"    Release: {release_of(sb.server_release).show()}")
        return 0
    if action == "logs":
        if not sb.server_log.is_file():
            return 0
        tail = sb.server_log.read_text(errors="replace").splitlines()[-lines:]
        for line in tail:
            print(secrets.mask(line))
        return 0
    raise UsageError(f"unknown service action {action!r}")
