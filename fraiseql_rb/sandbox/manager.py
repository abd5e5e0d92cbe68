"""Bring the drill sandbox up and down, report on it, control its server, inject faults.

Layout of a sandbox directory (besides the cluster's own, see `cluster`):

    sandbox.json                 ports, pids, active faults (the state other commands read)
    inventory.toml               target `sandbox`, secrets by *_file reference only
    secrets/                     0700; one 0600 file per secret
    server/fraiseql-server.toml  the stand-in's config, in the real v2 server format
    server/faults.json           behaviour faults the stand-in reads (error-spike, ...)
    logs/fraiseql-server.log     the stand-in's log
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets as pysecrets
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql

from .. import secrets
from ..errors import RunbookError, UsageError
from ..findings import isoformat, utcnow
from . import cluster as pgcluster

STATE_FILE = "sandbox.json"
SERVER_MODULE = "fraiseql_rb.sandbox.standin"
SECRET_NAMES = ("superuser_password", "database_password", "metrics_token", "admin_token",
                "redis_password")
POOL_MAX = 10  # the stand-in's pool_max_size: small, so pool drills are quick
HEALTH_WAIT_S = 20.0


class SandboxError(RunbookError):
    """The sandbox could not do what was asked; one line says why."""


def _progress(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


@dataclass
class Sandbox:
    """Paths and state of one sandbox directory."""

    root: Path
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path) -> Sandbox:
        root = Path(root).absolute()
        path = root / STATE_FILE
        state = json.loads(path.read_text()) if path.is_file() else {}
        return cls(root=root, state=state)

    @property
    def exists(self) -> bool:
        return bool(self.state)

    def require(self) -> None:
        if not self.exists:
            raise UsageError(f"no sandbox in {self.root}: run `fraiseql-rb sandbox up` first")

    def save(self) -> None:
        tmp = self.root / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.root / STATE_FILE)

    # paths
    @property
    def inventory(self) -> Path:
        return self.root / "inventory.toml"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def server_config(self) -> Path:
        return self.server_dir / "fraiseql-server.toml"

    @property
    def server_certs(self) -> Path:
        return self.server_dir / "certs"

    @property
    def ca_cert(self) -> Path:
        return self.cluster.tls.ca_cert

    @property
    def server_log(self) -> Path:
        return self.root / "logs" / "fraiseql-server.log"

    @property
    def cluster(self) -> pgcluster.Cluster:
        return pgcluster.Cluster(self.root, port=self.state.get("pg_port"))

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.state['server_port']}"

    def secret(self, name: str) -> str:
        value = (self.secrets_dir / name).read_text().strip()
        secrets.register(value)
        return value

    def app_database_url(self, with_password: bool = True) -> str:
        password = self.secret("database_password") if with_password else None
        url = self.cluster.dsn(pgcluster.APP_USER, password or "x")
        return url if with_password else url.replace(":x@", "@", 1)

    def faults(self) -> list[str]:
        return list(self.state.get("faults", []))


def _write_secret(directory: Path, name: str, value: str) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def _cli_command(sb: Sandbox, *args: str) -> str:
    """A shell command that runs our CLI with this interpreter (no reliance on PATH)."""
    words = [sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir", str(sb.root), *args]
    return " ".join(shlex.quote(w) for w in words)


def write_server_config(sb: Sandbox, overrides: dict[str, Any] | None = None,
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


def issue_server_certificate(sb: Sandbox, days: float = 365) -> None:
    """The stand-in's own certificate, from the sandbox CA; the server picks up a new one
    without a restart, as a certificate renewal in production would be."""
    pgcluster.issue_server_cert(sb.cluster.certs_dir, days=days, out_dir=sb.server_certs)


def write_inventory(sb: Sandbox) -> None:
    url = sb.app_database_url(with_password=False)
    entries = {
        "description": "the local drill sandbox (fraiseql-rb sandbox up)",
        "fraiseql_url": sb.server_url,
        "database_url": url,
        "database_password_file": "secrets/database_password",
        "admin_database_url": url.replace(pgcluster.APP_USER, pgcluster.SUPERUSER, 1),
        "admin_database_password_file": "secrets/superuser_password",
        "metrics_token_file": "secrets/metrics_token",
        "admin_token_file": "secrets/admin_token",
        "config_path": str(sb.server_config),
        "backup_dir": str(sb.cluster.backup_dir),
        "wal_archive_dir": str(sb.cluster.wal_archive_dir),
        "ca_bundle": str(sb.ca_cert),
        **({"redis_url": f"redis://127.0.0.1:{sb.state['redis_port']}/0",
            "redis_password_file": "secrets/redis_password"}
           if sb.state.get("redis_port") else {}),
        "restart_command": _cli_command(sb, "service", "restart"),
        "status_command": _cli_command(sb, "service", "status"),
        "logs_command": _cli_command(sb, "service", "logs"),
    }
    lines = ["# Written by `fraiseql-rb sandbox up`; secrets are files beside this one.",
             "[targets.sandbox]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in entries.items()]
    sb.inventory.write_text("\n".join(lines) + "\n")


# -- the stand-in server ---------------------------------------------------------------------

def server_pid(sb: Sandbox) -> int | None:
    """The stand-in's pid if that process is alive and really is our stand-in."""
    pid = sb.state.get("server_pid")
    if not pid:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    if SERVER_MODULE not in cmdline or str(sb.server_config) not in cmdline:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().split(") ", 1)[1].startswith("Z"):
                return None
    except (OSError, IndexError):
        return None
    return int(pid)


def start_server(sb: Sandbox, *, wait: bool = True) -> int:
    if (pid := server_pid(sb)) is not None:
        return pid
    env = {**os.environ,
           "DATABASE_URL": sb.app_database_url(),
           "FRAISEQL_METRICS_TOKEN": sb.secret("metrics_token"),
           "FRAISEQL_ADMIN_TOKEN": sb.secret("admin_token")}
    sb.server_log.parent.mkdir(parents=True, exist_ok=True)
    with open(sb.server_log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--config", str(sb.server_config),
             "--state-dir", str(sb.server_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
        )
    sb.state["server_pid"] = proc.pid
    sb.state["server_started_at"] = isoformat(utcnow())
    sb.save()
    if wait:
        _wait_for_server(sb, proc)
    return proc.pid


def _wait_for_server(sb: Sandbox, proc: subprocess.Popen[bytes] | None = None) -> None:
    verify = ssl.create_default_context(cafile=str(sb.ca_cert))
    deadline = time.monotonic() + HEALTH_WAIT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SandboxError(f"the stand-in server exited ({proc.returncode}); "
                               f"see {sb.server_log}")
        try:
            response = httpx.get(f"{sb.server_url}/health", timeout=2, verify=verify)
            if response.status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SandboxError(f"the stand-in server did not answer within {HEALTH_WAIT_S:.0f} s; "
                       f"see {sb.server_log}")


def stop_server(sb: Sandbox, *, sig: int = signal.SIGTERM, timeout: float = 10) -> bool:
    pid = server_pid(sb)
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while server_pid(sb) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if server_pid(sb) is not None:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect a child's exit status, if it is ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def service(root: Path, action: str, *, lines: int = 50) -> int:
    """systemctl-like control of the stand-in: what the inventory's commands call.

    Exit codes follow systemctl: `status` is 0 when running and 3 when not.
    """
    sb = Sandbox.open(root)
    sb.require()
    if action == "start":
        print(f"started, pid {start_server(sb)}")
        return 0
    if action == "stop":
        print("stopped" if stop_server(sb) else "was not running")
        return 0
    if action == "restart":
        stop_server(sb)
        print(f"restarted, pid {start_server(sb)}")
        return 0
    if action == "status":
        pid = server_pid(sb)
        print("● fraiseql-server.service - FraiseQL v2 (sandbox stand-in)")
        if pid is None:
            print("     Active: inactive (dead)")
            return 3
        print(f"     Active: active (running) since {sb.state.get('server_started_at')}")
        print(f"   Main PID: {pid}")
        print(f"     Listen: {sb.server_url}")
        return 0
    if action == "logs":
        if not sb.server_log.is_file():
            return 0
        tail = sb.server_log.read_text(errors="replace").splitlines()[-lines:]
        for line in tail:
            print(secrets.mask(line))
        return 0
    raise UsageError(f"unknown service action {action!r}")


# -- Redis (optional: only when redis-server is installed) -----------------------------------

def _redis_dir(sb: Sandbox) -> Path:
    return sb.root / "redis"


def redis_pid(sb: Sandbox) -> int | None:
    pid = sb.state.get("redis_pid")
    if not pid:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return int(pid) if "redis-server" in cmdline else None


def start_redis(sb: Sandbox) -> int | None:
    """Start redis-server on the sandbox's port; the password sits in a 0600 config file,
    never on a command line where `ps` would show it."""
    binary = shutil.which("redis-server")
    if binary is None or not sb.state.get("redis_port"):
        return None
    if (pid := redis_pid(sb)) is not None:
        return pid
    directory = _redis_dir(sb)
    directory.mkdir(mode=0o700, exist_ok=True)
    conf = directory / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"port {sb.state['redis_port']}\nbind 127.0.0.1\nsave \"\"\n"
                     f"appendonly no\ndir {directory}\nlogfile {sb.root / 'logs' / 'redis.log'}\n"
                     f"requirepass {sb.secret('redis_password')}\n")
    proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    sb.state["redis_pid"] = proc.pid
    sb.save()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"redis-server exited ({proc.returncode}); see logs/redis.log")
        try:
            redis.Redis(port=sb.state["redis_port"], password=sb.secret("redis_password"),
                               socket_timeout=1).ping()
            return proc.pid
        except (redis.RedisError, OSError):
            time.sleep(0.05)
    raise SandboxError("redis-server did not answer within 10 s")


def stop_redis(sb: Sandbox) -> None:
    pid = redis_pid(sb)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while redis_pid(sb) is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    sb.state["redis_pid"] = None


# -- up, down, status ------------------------------------------------------------------------

@dataclass(frozen=True)
class UpResult:
    inventory: Path
    timings: dict[str, float]


def up(root: Path, *, audit_events: int = 20_000, seed: int = 42) -> UpResult:
    """Build (or restart) the sandbox; idempotent."""
    if audit_events < 0:
        raise UsageError("--audit-events must be zero or more")
    sb = Sandbox.open(root)
    timings: dict[str, float] = {}
    began = time.perf_counter()
    if sb.exists:
        _progress(f"restarting the existing sandbox in {sb.root}")
        if not sb.cluster.is_running():
            sb.cluster.start()
        start_redis(sb)
        start_server(sb)
        sb.state["faults"] = []
        sb.save()
        timings["restart"] = time.perf_counter() - began
        return UpResult(sb.inventory, timings)
    if sb.root.exists() and any(sb.root.iterdir()):
        raise UsageError(f"{sb.root} exists and is not a sandbox; choose another --dir")
    sb.root.mkdir(parents=True, exist_ok=True)
    os.chmod(sb.root, 0o755)  # the database server's own user must traverse it
    for name in SECRET_NAMES:
        _write_secret(sb.secrets_dir, name, pysecrets.token_urlsafe(24))
    try:
        _build(sb, audit_events, seed, timings)
    except BaseException:
        _progress("build failed; stopping what was started")
        _stop_everything(sb)
        raise
    timings["total"] = time.perf_counter() - began
    _progress(f"up in {timings['total']:.1f} s: {sb.server_url} "
              f"(PostgreSQL on port {sb.state['pg_port']})")
    return UpResult(sb.inventory, timings)


def _step(timings: dict[str, float], name: str, func: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = func()
    timings[name] = round(time.perf_counter() - began, 2)
    _progress(f"{name} ({timings[name]:.1f} s)")
    return result


def _build(sb: Sandbox, audit_events: int, seed: int, timings: dict[str, float]) -> None:
    cl = pgcluster.Cluster(sb.root)
    sb.state.update({"created_at": isoformat(utcnow()), "pg_port": cl.port,
                     "server_port": pgcluster.free_port(), "audit_events": audit_events,
                     "seed": seed, "faults": [],
                     "redis_port": pgcluster.free_port() if shutil.which("redis-server")
                     else None})
    sb.save()
    _step(timings, "initdb", lambda: cl.init(sb.secret("superuser_password")))
    _step(timings, "postgres start", cl.start)
    _step(timings, f"provision ({audit_events} audit events)",
          lambda: cl.provision(sb.secret("database_password"), audit_events=audit_events,
                               seed=seed))
    _step(timings, "backup (pg_dump -Fc)", cl.dump)
    _step(timings, "WAL archiving", lambda: cl.wait_archived(timeout=30))
    if sb.state["redis_port"]:
        _step(timings, "redis", lambda: start_redis(sb))
    issue_server_certificate(sb)
    write_server_config(sb)
    write_inventory(sb)
    _step(timings, "stand-in server", lambda: start_server(sb))


def _stop_everything(sb: Sandbox) -> None:
    stop_server(sb)
    stop_redis(sb)
    cl = sb.cluster
    if cl.pgdata.exists() and cl.is_running():
        try:
            cl.stop("fast", timeout=20)
        except pgcluster.ClusterError:
            cl.stop("immediate", timeout=20)


def down(root: Path, *, purge: bool = False) -> None:
    """Stop everything the sandbox runs; with purge, delete its directory too."""
    sb = Sandbox.open(root)
    if sb.exists:
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
    pid = server_pid(sb)
    components = {
        "postgres": (f"running, port {cl.port}, pid {cl.pid()}" if pg_up else "stopped"),
        "server": (f"running, {sb.server_url}, pid {pid}" if pid else "stopped"),
        "redis": ("not installed" if not sb.state.get("redis_port") else
                  f"running, port {sb.state['redis_port']}" if redis_pid(sb) else "stopped"),
        "inventory": str(sb.inventory),
    }
    return StatusReport(sb.root, components, sb.faults(), pg_up and pid is not None)


# -- faults ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    description: str
    inject: Callable[[Sandbox], None]
    heal: Callable[[Sandbox], None]


def _db_down(sb: Sandbox) -> None:
    sb.cluster.stop("fast")


def _db_up(sb: Sandbox) -> None:
    if not sb.cluster.is_running():
        sb.cluster.start()


def _server_crash(sb: Sandbox) -> None:
    if not stop_server(sb, sig=signal.SIGKILL):
        raise SandboxError("the stand-in server is not running")


def _server_start(sb: Sandbox) -> None:
    start_server(sb)


def _restart_server(sb: Sandbox) -> None:
    stop_server(sb)
    start_server(sb)


def _config_insecure(sb: Sandbox) -> None:
    """What §1.2 warns against: bound to every interface, introspection open to anyone,
    no rate limiting. The server still answers on 127.0.0.1."""
    write_server_config(
        sb, {"bind_addr": f"0.0.0.0:{sb.state['server_port']}", "introspection_enabled": True,
             "introspection_require_auth": False},
        {"rate_limiting": {"enabled": False}})
    _restart_server(sb)


def _config_secure(sb: Sandbox) -> None:
    write_server_config(sb)
    _restart_server(sb)


def _set_app_password(conn: psycopg.Connection[Any], password: str, algorithm: str) -> None:
    """Store the app role's password with `algorithm`, sending only a verifier (a hash)."""
    user = pgcluster.APP_USER
    if algorithm == "md5":
        verifier = "md5" + hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324
    else:
        verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(),
                                                b"scram-sha-256").decode()
    with contextlib.suppress(psycopg.Error):
        conn.execute("SET pg_stat_statements.track_utility = off")
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user),
                                                            sql.Literal(verifier)))


MD5_HOST_RULES = [rule.replace("scram-sha-256", "md5") for rule in pgcluster.DEFAULT_HOST_RULES]


def _scram_off(sb: Sandbox) -> None:
    """A cluster still on MD5: password_encryption md5, md5 host lines, an md5 password.
    md5 host lines accept both kinds of stored password, so the service keeps working."""
    cl = sb.cluster
    cl.write_hba(MD5_HOST_RULES)
    with cl.connect() as conn:
        conn.execute("ALTER SYSTEM SET password_encryption = 'md5'")
        _set_app_password(conn, sb.secret("database_password"), "md5")
    cl.reload()


def _scram_on(sb: Sandbox) -> None:
    cl = sb.cluster
    with cl.connect() as conn:
        conn.execute("ALTER SYSTEM RESET password_encryption")
        _set_app_password(conn, sb.secret("database_password"), "scram-sha-256")
    cl.write_hba(None)
    cl.reload()


FAULTS: dict[str, Fault] = {
    "db-down": Fault("PostgreSQL stopped (pg_ctl stop -m fast)", _db_down, _db_up),
    "server-down": Fault("the FraiseQL server process killed (SIGKILL)", _server_crash,
                         _server_start),
    "config-insecure": Fault("server config rewritten: bind 0.0.0.0, introspection open, "
                             "rate limiting off; server restarted", _config_insecure,
                             _config_secure),
    "cert-expiring": Fault("the server's TLS certificate replaced by one expiring in 5 days",
                           lambda sb: issue_server_certificate(sb, days=5),
                           lambda sb: issue_server_certificate(sb)),
    "scram-off": Fault("password_encryption md5, md5 pg_hba host lines, the app role's "
                       "password stored as md5", _scram_off, _scram_on),
}


def _fault(name: str) -> Fault:
    if name not in FAULTS:
        raise UsageError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
    return FAULTS[name]


def inject(root: Path, name: str) -> str:
    fault = _fault(name)
    sb = Sandbox.open(root)
    sb.require()
    fault.inject(sb)
    sb.state["faults"] = sorted(set(sb.faults()) | {name})
    sb.save()
    return f"fault {name} injected: {fault.description}"


def heal(root: Path, name: str) -> str:
    fault = _fault(name)
    sb = Sandbox.open(root)
    sb.require()
    fault.heal(sb)
    sb.state["faults"] = [f for f in sb.faults() if f != name]
    sb.save()
    return f"fault {name} healed"
