"""Bring the drill sandbox up and down and report on it.

The pieces live beside this module, one per concern: `state` (the directory and its
secrets), `cluster` (PostgreSQL), `server` (the stand-in), `redis_server`, `traffic`,
`faults`. This module only orchestrates them; its names are the API the CLI and tests use.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import isoformat, utcnow

from . import (
    backups,
    exporter,
    instances,
    processes,
    prometheus,
    redis_server,
    schema_migrations,
    server,
    traffic,
)
from . import cluster as pgcluster
from . import replica as pgreplica
from .faults import FAULTS, heal, inject
from .server import service
from .state import SECRET_NAMES, Sandbox, SandboxError, progress

__all__ = ["FAULTS", "SECRET_NAMES", "Sandbox", "SandboxError", "down", "heal", "inject",
           "service", "status", "up"]


def write_inventory(sb: Sandbox) -> None:
    url = sb.app_database_url(with_password=False)
    entries = {
        "description": "the local drill sandbox (fraiseql-rb sandbox up)",
        "fraiseql_url": sb.server_url,
        "database_url": url,
        "probe_query": "query RunbookProbe { posts(limit: 1) { id title } }",  # reads v_post
        "database_password_file": "secrets/database_password",
        "admin_database_url": url.replace(pgcluster.APP_USER, pgcluster.SUPERUSER, 1),
        "admin_database_password_file": "secrets/superuser_password",
        "metrics_token_file": "secrets/metrics_token",
        "admin_token_file": "secrets/admin_token",
        "config_path": str(sb.server_config),
        "backup_dir": str(sb.cluster.backup_dir),
        "wal_archive_dir": str(sb.cluster.wal_archive_dir),
        "ca_bundle": str(sb.ca_cert),
        "oidc_issuer": sb.server_url,
        **({"prometheus_url": f"http://127.0.0.1:{sb.state['prometheus_port']}"}
           if sb.state.get("prometheus_port") else {}),
        **({"redis_url": f"redis://127.0.0.1:{sb.state['redis_port']}/0",
            "redis_password_file": "secrets/redis_password"}
           if sb.state.get("redis_port") else {}),
        "restart_command": sb.cli_command("service", "restart"),
        "status_command": sb.cli_command("service", "status"),
        "logs_command": sb.cli_command("service", "logs"),
        # planned changes: the release to install or go back to, and one instance more/less
        "upgrade_command": sb.cli_command("service", "upgrade") + " {version}",
        "rollback_command": sb.cli_command("service", "rollback") + " {version}",
        "scale_command": sb.cli_command("service", "scale") + " {direction} {instance}",
        "migrations_dir": str(sb.root / "migrations"),
        **_replica_entries(sb),
    }
    lines = ["# Written by `fraiseql-rb sandbox up`; secrets are files beside this one.",
             "[targets.sandbox]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in entries.items()]
    sb.inventory.write_text("\n".join(lines) + "\n")


def _replica_entries(sb: Sandbox) -> dict[str, str]:
    """The replica's keys: what database-unavailable reads and a later failover needs (both
    nodes' admin URLs, the replica's data directory, start/stop of each node)."""
    if not pgreplica.configured(sb):
        return {}
    node = pgreplica.node(sb)
    app = node.dsn(pgcluster.APP_USER, "x").replace(":x@", "@", 1)
    return {
        "replica_database_url": app,
        "replica_database_password_file": "secrets/database_password",
        "replica_admin_database_url": app.replace(pgcluster.APP_USER, pgcluster.SUPERUSER, 1),
        "replica_admin_database_password_file": "secrets/superuser_password",
        "replica_data_dir": str(node.pgdata),
        "replica_primary_data_dir": str(sb.cluster.pgdata),
        "replica_start_command": sb.cli_command("node", "replica", "start"),
        "replica_stop_command": sb.cli_command("node", "replica", "stop"),
        "replica_primary_start_command": sb.cli_command("node", "primary", "start"),
        "replica_primary_stop_command": sb.cli_command("node", "primary", "stop"),
    }


def _prometheus_dir(sb: Sandbox) -> Path:
    return sb.root / "prometheus"


def _prometheus_pid(sb: Sandbox) -> int | None:
    value = sb.state.get("prometheus_pid")
    return int(value) if processes.alive(value, str(_prometheus_dir(sb))) else None


def _setup_prometheus(sb: Sandbox) -> None:
    """Configure, backfill a week of history, so trends exist from the first minute."""
    directory = _prometheus_dir(sb)
    prometheus.configure(directory, port=sb.state["prometheus_port"],
                         scrape_url=sb.server_url, token_file=sb.secrets_dir / "metrics_token",
                         ca_file=sb.ca_cert, postgres_exporter_url=exporter.urls(sb) or None)
    release = server.release_of(sb.server_release)
    if release.v2_surface:  # a foreign server exports no fraiseql_* history to continue
        prometheus.backfill(directory, seed=sb.state.get("seed", 42),
                            cost_metric=release.cost_metric)


def _start_prometheus(sb: Sandbox) -> None:
    if not sb.state.get("prometheus_port") or _prometheus_pid(sb) is not None:
        return
    directory = _prometheus_dir(sb)
    proc = prometheus.start(directory, sb.state["prometheus_port"])
    sb.state["prometheus_pid"] = proc.pid
    sb.save()
    prometheus.wait_ready(sb.state["prometheus_port"], proc=proc,
                          log=directory / prometheus.LOG_FILE)


@dataclass(frozen=True)
class UpResult:
    inventory: Path
    timings: dict[str, float]


def up(root: Path, *, audit_events: int = 20_000, seed: int = 42,
       traffic_rps: float = traffic.DEFAULT_RPS, replica: bool = True,
       server_version: str | None = None, scale: int = 1) -> UpResult:
    """Build (or restart) the sandbox; idempotent. `server_version`: the FraiseQL release
    the stand-in emulates (None: main, or on an existing sandbox the one it records).
    `scale` N multiplies the generated data (audit events, users and posts) by N."""
    if audit_events < 0:
        raise UsageError("--audit-events must be zero or more")
    if scale < 1:
        raise UsageError("--scale must be 1 or more")
    release = server.release_of(server_version)  # an unknown release: exit 64, nothing built
    sb = Sandbox.open(root)
    timings: dict[str, float] = {}
    began = time.perf_counter()
    if sb.exists:
        progress(f"restarting the existing sandbox in {sb.root}")
        if not sb.cluster.is_running():
            sb.cluster.start()
        pgreplica.start(sb)
        exporter.start_all(sb)
        redis_server.start(sb)
        if server_version is not None and release.name != sb.server_release:
            server.restart(sb, release=release.name)
        else:
            server.start(sb)
        _start_prometheus(sb)
        if traffic_rps > 0:
            traffic.start(sb, traffic_rps)
        timings["restart"] = time.perf_counter() - began
        return UpResult(sb.inventory, timings)
    if sb.root.exists() and any(sb.root.iterdir()):
        raise UsageError(f"{sb.root} exists and is not a sandbox; choose another --dir")
    sb.root.mkdir(parents=True, exist_ok=True)
    os.chmod(sb.root, 0o755)  # the database server's own user must traverse it
    for name in SECRET_NAMES:
        sb.write_secret(name, pysecrets.token_urlsafe(24))
    sb.state["server_release"] = release.name
    try:
        _build(sb, audit_events * scale, seed, timings, traffic_rps, replica, scale)
    except BaseException:
        progress("build failed; stopping what was started")
        _stop_everything(sb)
        raise
    timings["total"] = time.perf_counter() - began
    progress(f"up in {timings['total']:.1f} s: {sb.server_url} "
             f"(PostgreSQL on port {sb.state['pg_port']})")
    return UpResult(sb.inventory, timings)


def _step(timings: dict[str, float], name: str, func: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = func()
    timings[name] = round(time.perf_counter() - began, 2)
    progress(f"{name} ({timings[name]:.1f} s)")
    return result


def _build(sb: Sandbox, audit_events: int, seed: int, timings: dict[str, float],
           traffic_rps: float, replica: bool = True, scale: int = 1) -> None:
    cl = pgcluster.Cluster(sb.root)
    sb.state.update({"created_at": isoformat(utcnow()), "pg_port": cl.port,
                     "server_port": pgcluster.free_port(), "audit_events": audit_events,
                     "seed": seed, "scale": scale, "faults": [],
                     "redis_port": pgcluster.free_port() if redis_server.available()
                     else None,
                     "prometheus_port": pgcluster.free_port() if prometheus.available()
                     else None})
    sb.save()
    _step(timings, "initdb", lambda: cl.init(sb.secret("superuser_password")))
    _step(timings, "postgres start", cl.start)
    _step(timings, f"provision ({audit_events} audit events)",
          lambda: cl.provision(sb.secret("database_password"), audit_events=audit_events,
                               seed=seed, scale=scale))
    _step(timings, "WAL archiving", lambda: cl.wait_archived(timeout=30))
    if replica:
        sb.state[pgreplica.STATE_PORT] = pgcluster.free_port()
        sb.save()
        _step(timings, "replica (pg_basebackup -R)", lambda: pgreplica.build(sb))
    exporter.plan(sb)
    if exporter.urls(sb):
        _step(timings, "postgres_exporter", lambda: exporter.start_all(sb))
    if sb.state["redis_port"]:
        _step(timings, "redis", lambda: redis_server.start(sb))
    server.issue_certificate(sb)
    server.write_config(sb)
    server.write_behaviour_faults(sb, {})
    schema_migrations.install(sb.root)  # confiture's migrations, pending
    write_inventory(sb)
    _step(timings, "backups (dumps, base backup, config and audit archives)",
          lambda: backups.make(sb))
    _step(timings, "stand-in server", lambda: server.start(sb))
    if sb.state["prometheus_port"]:
        _step(timings, "prometheus (7 days of history)", lambda: _setup_prometheus(sb))
        _step(timings, "prometheus start", lambda: _start_prometheus(sb))
    if traffic_rps > 0:
        traffic.start(sb, traffic_rps)


def _stop_everything(sb: Sandbox) -> None:
    traffic.stop(sb)
    prometheus.stop(sb.state.get("prometheus_pid"))
    sb.state["prometheus_pid"] = None
    instances.stop_all(sb)  # scale-out's extra stand-ins
    server.stop(sb)
    redis_server.stop(sb)
    exporter.stop_all(sb)
    pgreplica.stop(sb)
    cl = sb.cluster
    if cl.pgdata.exists() and cl.is_running():
        try:
            cl.stop("fast", timeout=20)
        except pgcluster.ClusterError:
            cl.stop("immediate", timeout=20)


def down(root: Path, *, purge: bool = False) -> None:
    """Stop everything the sandbox runs; with purge, delete its directory too.

    Faults are healed first, so that a sandbox brought up again starts healthy."""
    sb = Sandbox.open(root)
    if sb.exists:
        for name in sb.faults():
            if name in FAULTS and name not in ("db-down", "server-down"):
                try:
                    heal(sb.root, name)
                except Exception as exc:  # noqa: BLE001 - stopping matters more
                    progress(f"could not heal {name} before stopping: {exc}")
        sb = Sandbox.open(root)
        _stop_everything(sb)
        sb.state["server_pid"] = None
        sb.state["faults"] = []
        sb.save()
    if purge and sb.root.exists():
        shutil.rmtree(sb.root)


@dataclass
class StatusReport:
    root: Path
    components: dict[str, str]
    faults: list[str]
    healthy: bool

    def lines(self) -> list[str]:
        out = [f"sandbox: {self.root}"]
        out += [f"  {name:<10} {text}" for name, text in self.components.items()]
        out.append(f"  faults     {', '.join(self.faults) or 'none'} "
                   f"(available: {', '.join(FAULTS)})")
        return out


def status(root: Path) -> StatusReport:
    sb = Sandbox.open(root)
    if not sb.exists:
        return StatusReport(sb.root, {"state": "not created"}, [], False)
    cl = sb.cluster
    pg_up = cl.is_running()
    server_pid = server.pid(sb)
    components = {
        "postgres": (f"running, port {cl.port}, pid {cl.pid()}" if pg_up else "stopped"),
        "replica": pgreplica.status_line(sb),
        "exporter": exporter.status_line(sb),
        "server": (f"running, {sb.server_url}, pid {server_pid}, release "
                   f"{server.release_of(sb.server_release).show()}" if server_pid
                   else "stopped"),
        "instances": instances.status_line(sb),
        "redis": ("not installed" if not sb.state.get("redis_port") else
                  f"running, port {sb.state['redis_port']}" if redis_server.pid(sb)
                  else "stopped"),
        "prometheus": ("not installed" if not sb.state.get("prometheus_port") else
                       f"running, http://127.0.0.1:{sb.state['prometheus_port']}"
                       if _prometheus_pid(sb) else "stopped"),
        "traffic": "running" if traffic.running(sb) else "stopped",
        "inventory": str(sb.inventory),
    }
    return StatusReport(sb.root, components, sb.faults(), pg_up and server_pid is not None)
