"""Drill faults: each injected into the sandbox's real processes, each with its heal.

A fault is data (name, what it does, inject, heal) so `sandbox status` and the README list
them from one place, and a playbook's drill test can rely on exactly what was done.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import UsageError
from . import cluster as pgcluster
from . import server
from .state import Sandbox, SandboxError

ERROR_SPIKE_OPERATION = "posts"  # the operation that starts failing in `error-spike`


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
    if not server.stop(sb, sig=signal.SIGKILL):
        raise SandboxError("the stand-in server is not running")


def _server_start(sb: Sandbox) -> None:
    server.start(sb)


def _config_insecure(sb: Sandbox) -> None:
    """What §1.2 warns against: bound to every interface, introspection open to anyone,
    no rate limiting. The server still answers on 127.0.0.1."""
    server.write_config(
        sb, {"bind_addr": f"0.0.0.0:{sb.state['server_port']}", "introspection_enabled": True,
             "introspection_require_auth": False},
        {"rate_limiting": {"enabled": False}})
    server.restart(sb)


def _config_secure(sb: Sandbox) -> None:
    server.write_config(sb)
    server.restart(sb)


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


def _behaviour(name: str, settings: dict[str, Any] | None) -> Callable[[Sandbox], None]:
    """Set (or with None, clear) one behaviour fault the stand-in reads from faults.json."""

    def apply(sb: Sandbox) -> None:
        current = server.read_behaviour_faults(sb)
        if settings is None:
            current.pop(name, None)
        else:
            current[name] = settings
        server.write_behaviour_faults(sb, current)

    return apply


FAULTS: dict[str, Fault] = {
    "db-down": Fault("PostgreSQL stopped (pg_ctl stop -m fast)", _db_down, _db_up),
    "server-down": Fault("the FraiseQL server process killed (SIGKILL)", _server_crash,
                         _server_start),
    "config-insecure": Fault("server config rewritten: bind 0.0.0.0, introspection open, "
                             "rate limiting off; server restarted", _config_insecure,
                             _config_secure),
    "cert-expiring": Fault("the server's TLS certificate replaced by one expiring in 5 days",
                           lambda sb: server.issue_certificate(sb, days=5),
                           lambda sb: server.issue_certificate(sb)),
    "scram-off": Fault("password_encryption md5, md5 pg_hba host lines, the app role's "
                       "password stored as md5", _scram_off, _scram_on),
    "error-spike": Fault(f"the GraphQL operation `{ERROR_SPIKE_OPERATION}` fails with a "
                         "database error on every call",
                         _behaviour("error-spike", {"operation": ERROR_SPIKE_OPERATION}),
                         _behaviour("error-spike", None)),
}


def get(name: str) -> Fault:
    if name not in FAULTS:
        raise UsageError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
    return FAULTS[name]


def inject(root: Path, name: str) -> str:
    fault = get(name)
    sb = Sandbox.open(root)
    sb.require()
    fault.inject(sb)
    sb.state["faults"] = sorted(set(sb.faults()) | {name})
    sb.save()
    return f"fault {name} injected: {fault.description}"


def heal(root: Path, name: str) -> str:
    fault = get(name)
    sb = Sandbox.open(root)
    sb.require()
    fault.heal(sb)
    sb.state["faults"] = [f for f in sb.faults() if f != name]
    sb.save()
    return f"fault {name} healed"
