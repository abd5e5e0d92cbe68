"""Drill faults: each injected into the sandbox's real processes, each with its heal.

A fault is data (name, what it does, inject, heal) so `sandbox status` and the README list
them from one place, and a playbook's drill test can rely on exactly what was done.

Three kinds of injection, all real:
- the database or the server process is changed (stopped, reconfigured, its certificate
  swapped, rows inserted);
- a `holder` process keeps sessions busy (slow statements, a held lock), its pid kept in
  sandbox.json (`slow_query_pid`, `lock_contention_pid`) and its sessions named
  `fraiseql-rb-drill-<mode>`;
- a behaviour fault in `server/faults.json` changes what the running stand-in does.
Every heal undoes exactly what its inject did, and injecting twice never stacks anything.
The stand-in's query result cache (60 s TTL) answers the background traffic's popular
queries, so the database-side faults clear it through the admin API when they start: the next
requests reach PostgreSQL and meet the fault at once, not up to a minute later.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import secrets as pysecrets
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography import x509
from psycopg import sql

from fraiseql_rb.checks import tls
from fraiseql_rb.core.errors import UsageError

from . import audit_data, backups, holder, server
from . import cluster as pgcluster
from . import replica as pgreplica
from .state import Sandbox, SandboxError, progress

ERROR_SPIKE_OPERATION = "posts"  # the operation that starts failing in `error-spike`
SLOW_QUERY_DELAY_MS = 1500  # added inside PostgreSQL to each of the stand-in's statements
MEMORY_LEAK_BYTES = 2 * 1024 * 1024  # kept by the stand-in per request
LEAKED_CONNECTIONS = server.POOL_MAX  # all of them: requests then wait and time out
AUTH_ATTACK_EVENTS = 600
AUTH_ATTACK_HOURS = 1.5  # so all of them stay "in the last 2 hours" for half an hour
AUTH_ATTACK_ATTEMPTS = 30  # live wrong-token requests: 9 answered 403, then 429
ATTACKER_ADDRESS = "127.0.0.2"  # the limiter blocks this one, never 127.0.0.1
CSRF_ATTACK_EVENTS = 300
SQLI_ATTACK_EVENTS = 240
BURST_HOURS = 2.0  # csrf-attack and sqli-attack: all in the last 2 hours
STANDIN_APPLICATION = "fraiseql-standin"  # the stand-in's application_name in PostgreSQL
WAIT_S = 10.0


@dataclass(frozen=True)
class Fault:
    description: str
    inject: Callable[[Sandbox], None]
    heal: Callable[[Sandbox], None]


def _db_down(sb: Sandbox) -> None:
    sb.cluster.stop("fast")


def _db_up(sb: Sandbox) -> None:
    """Start PostgreSQL again and wait until the stand-in's pool has reconnected, so that the
    sandbox is healthy when the heal returns, not a pool retry later."""
    if not sb.cluster.is_running():
        sb.cluster.start()
    if server.pid(sb) is not None:
        _wait(lambda: _database_connected(sb), "the stand-in reconnecting to PostgreSQL")


def _database_connected(sb: Sandbox) -> bool:
    """Does the stand-in's /health say its database is connected (HTTP 200)?"""
    try:
        return httpx.get(f"{sb.server_url}/health", timeout=2,
                         verify=_verify(sb)).status_code == 200
    except httpx.HTTPError:
        return False


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


def _all_or_nothing(inject: Callable[[Sandbox], None], heal: Callable[[Sandbox], None]
                    ) -> Callable[[Sandbox], None]:
    """An inject that undoes its partial work when it fails, so no half-fault lingers
    (the fault is only recorded as active once inject returns)."""

    def run(sb: Sandbox) -> None:
        try:
            inject(sb)
        except BaseException:
            with contextlib.suppress(Exception):
                heal(sb)
            raise

    return run


def _wait(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SandboxError(f"{what} did not happen within {timeout:.0f} s")


def _verify(sb: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sb.ca_cert))


def _clear_query_cache(sb: Sandbox, entity: str | None = None) -> None:
    """Empty the stand-in's query result cache (admin API), so the next requests reach the
    database; a server that is down or unreachable has nothing cached that matters."""
    body = {"scope": "entity", "entity_type": entity} if entity else {"scope": "all"}
    with contextlib.suppress(httpx.HTTPError, OSError):
        httpx.post(f"{sb.server_url}/api/v1/admin/cache/clear", json=body, timeout=5,
                   verify=_verify(sb),
                   headers={"Authorization": f"Bearer {sb.secret('admin_token')}"})


def _count_sessions(sb: Sandbox, application: str, state: str) -> int:
    with sb.cluster.connect(pgcluster.APP_DB) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = %s AND state = %s",
                           (application, state)).fetchone()
    return int(row[0]) if row else 0


# ---- slow-query and lock-contention: a holder process --------------------------------------


def _slow_query(sb: Sandbox) -> None:
    holder.start(sb, "slow", "slow_query_pid")
    _behaviour("slow-query", {"delay_ms": SLOW_QUERY_DELAY_MS})(sb)


def _slow_query_heal(sb: Sandbox) -> None:
    _behaviour("slow-query", None)(sb)
    holder.stop(sb, "slow", "slow_query_pid")


def _lock_contention(sb: Sandbox) -> None:
    holder.start(sb, "lock", "lock_contention_pid")
    _clear_query_cache(sb, "Post")


def _lock_contention_heal(sb: Sandbox) -> None:
    holder.stop(sb, "lock", "lock_contention_pid")


# ---- pool-exhaustion: the stand-in leaks its own connections --------------------------------


def _pool_exhaustion(sb: Sandbox) -> None:
    _behaviour("leak-connections", {"count": LEAKED_CONNECTIONS})(sb)
    if server.pid(sb) is None:
        raise SandboxError("the stand-in server is not running")
    _wait(lambda: _count_sessions(sb, STANDIN_APPLICATION, "idle in transaction")
          >= LEAKED_CONNECTIONS, "the stand-in holding its pool connections")
    _clear_query_cache(sb)


def _pool_active(sb: Sandbox) -> int | None:
    """The stand-in's own count of pool connections in use (/metrics/json)."""
    try:
        response = httpx.get(f"{sb.server_url}/metrics/json", verify=_verify(sb), timeout=3,
                             headers={"Authorization": f"Bearer {sb.secret('metrics_token')}"})
        return int(response.json()["pool_connections_active"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _pool_exhaustion_heal(sb: Sandbox) -> None:
    _behaviour("leak-connections", None)(sb)
    if server.pid(sb) is not None and sb.cluster.is_running():
        _wait(lambda: _count_sessions(sb, STANDIN_APPLICATION, "idle in transaction") == 0,
              "the stand-in returning its pool connections")
        # the sessions may be gone because someone terminated them: the heal is over only
        # when the stand-in itself has let go of them too, or a new inject would not take
        _wait(lambda: (_pool_active(sb) or 0) < server.POOL_MAX,
              "the stand-in's pool to have free connections")


# ---- auth-attack: audit rows plus live failed logins ----------------------------------------


def attack_ips(seed: int) -> list[str]:
    """Three attacker addresses, one per RFC 5737 range, none of which the generated
    history uses: their counts are exactly what the drill inserted."""
    background = set(audit_data.ip_pool(seed))
    picked = []
    for net in audit_data.DOC_NETWORKS:
        hosts = list(ipaddress.ip_network(net).hosts())
        picked.append(next(str(h) for h in reversed(hosts) if str(h) not in background))
    return picked


def _failed_metrics_logins(sb: Sandbox, attempts: int = AUTH_ATTACK_ATTEMPTS) -> dict[str, int]:
    """Wrong bearer tokens on /metrics from ATTACKER_ADDRESS; returns {status: count}.

    From another loopback address, so the server's limiter (429 for 60 s after 10 failures
    from one peer) never blocks the playbooks that scrape from 127.0.0.1.
    """
    statuses: dict[str, int] = {}
    transport = httpx.HTTPTransport(verify=_verify(sb), local_address=ATTACKER_ADDRESS)
    try:
        with httpx.Client(transport=transport, base_url=sb.server_url, timeout=5) as client:
            for i in range(attempts):
                guess = f"guess-{i}-{pysecrets.token_hex(8)}"
                response = client.get("/metrics", headers={"Authorization": f"Bearer {guess}"})
                key = str(response.status_code)
                statuses[key] = statuses.get(key, 0) + 1
    except (httpx.HTTPError, OSError) as exc:
        progress(f"auth-attack: live failed logins stopped early: {type(exc).__name__}")
    return statuses


def _auth_attack(sb: Sandbox) -> None:
    _auth_attack_heal(sb)  # a second inject replaces the first burst, never adds to it
    ips = attack_ips(int(sb.state.get("seed", 42)))
    with sb.cluster.connect(pgcluster.APP_DB) as conn, conn.transaction():
        row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {audit_data.AUDIT_TABLE}"
                           ).fetchone()
        before = int(row[0]) if row else 0
        audit_data.insert_burst(conn, "authentication_failed", ips, AUTH_ATTACK_EVENTS,
                                hours=AUTH_ATTACK_HOURS)
        first, last, rows = conn.execute(
            f"SELECT min(id), max(id), count(*) FROM {audit_data.AUDIT_TABLE} "
            "WHERE id > %s AND event_type = 'authentication_failed' "
            "AND ip_address = ANY(%s::inet[])", (before, ips)).fetchone() or (None, None, 0)
    sb.state["auth_attack"] = {"first_id": first, "last_id": last, "rows": rows, "ips": ips}
    sb.save()
    sb.state["auth_attack"]["http_statuses"] = _failed_metrics_logins(sb)
    sb.save()


def _auth_attack_heal(sb: Sandbox) -> None:
    """Delete exactly the rows the inject recorded (their id range, type and addresses)."""
    record = sb.state.get("auth_attack")
    if not record:
        return
    if record.get("rows"):
        with sb.cluster.connect(pgcluster.APP_DB) as conn:
            conn.execute(f"DELETE FROM {audit_data.AUDIT_TABLE} "
                         "WHERE id BETWEEN %s AND %s AND event_type = 'authentication_failed' "
                         "AND ip_address = ANY(%s::inet[])",
                         (record["first_id"], record["last_id"], record["ips"]))
    sb.state.pop("auth_attack", None)
    sb.save()


# ---- csrf-attack, sqli-attack: audit rows only ------------------------------------------------


def burst_ips(seed: int, offset: int) -> list[str]:
    """Three attacker addresses, one per RFC 5737 range, none of which the generated history
    uses; `offset` 0 gives auth-attack's (`attack_ips`), 1 csrf-attack's, 2 sqli-attack's, so
    every drill's addresses are its own and its counts exactly what it inserted."""
    background = set(audit_data.ip_pool(seed))
    picked = []
    for net in audit_data.DOC_NETWORKS:
        hosts = list(ipaddress.ip_network(net).hosts())
        unused = [str(h) for h in reversed(hosts) if str(h) not in background]
        picked.append(unused[offset])
    return picked


@dataclass(frozen=True)
class _Burst:
    """A burst of one audit event type from three addresses, recorded in sandbox.json under
    `key` (id range, rows, addresses) so that heal deletes exactly those rows."""

    key: str
    event_type: str
    events: int
    offset: int
    hours: float = BURST_HOURS

    def ips(self, sb: Sandbox) -> list[str]:
        return burst_ips(int(sb.state.get("seed", 42)), self.offset)

    def inject(self, sb: Sandbox) -> None:
        self.heal(sb)  # a second inject replaces the first burst, never adds to it
        ips = self.ips(sb)
        table = audit_data.AUDIT_TABLE
        with sb.cluster.connect(pgcluster.APP_DB) as conn, conn.transaction():
            row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
            before = int(row[0]) if row else 0
            audit_data.insert_burst(conn, self.event_type, ips, self.events, hours=self.hours)
            first, last, rows = conn.execute(
                f"SELECT min(id), max(id), count(*) FROM {table} "
                "WHERE id > %s AND event_type = %s AND ip_address = ANY(%s::inet[])",
                (before, self.event_type, ips)).fetchone() or (None, None, 0)
        sb.state[self.key] = {"first_id": first, "last_id": last, "rows": rows, "ips": ips,
                              "event_type": self.event_type}
        sb.save()

    def heal(self, sb: Sandbox) -> None:
        """Delete exactly the rows the inject recorded (their id range, type, addresses)."""
        record = sb.state.get(self.key)
        if not record:
            return
        if record.get("rows"):
            with sb.cluster.connect(pgcluster.APP_DB) as conn:
                conn.execute(f"DELETE FROM {audit_data.AUDIT_TABLE} "
                             "WHERE id BETWEEN %s AND %s AND event_type = %s "
                             "AND ip_address = ANY(%s::inet[])",
                             (record["first_id"], record["last_id"], self.event_type,
                              record["ips"]))
        sb.state.pop(self.key, None)
        sb.save()

    def describe(self) -> str:
        return (f"{self.events} {self.event_type} audit events from 3 addresses (not "
                f"auth-attack's) over the last {self.hours:g} hours; healed, exactly those "
                "rows deleted")

    def fault(self) -> Fault:
        return Fault(self.describe(), _all_or_nothing(self.inject, self.heal), self.heal)


CSRF_ATTACK = _Burst("csrf_attack", "csrf_failure", CSRF_ATTACK_EVENTS, offset=1)
SQLI_ATTACK = _Burst("sqli_attack", "sql_injection_attempt", SQLI_ATTACK_EVENTS, offset=2)


# ---- bad-release ----------------------------------------------------------------------------


def _bad_release(sb: Sandbox) -> None:
    """Remember the release running now: every other one the stand-in is switched to (a
    patch upgrade) fails its reads; this one (the rollback) works. Injected twice, the
    first release is kept."""
    current = server.read_behaviour_faults(sb)
    if not isinstance(current.get("bad-release"), dict):
        _behaviour("bad-release", {"release": sb.server_release})(sb)


def _bad_release_heal(sb: Sandbox) -> None:
    """Clear the flag and, when the stand-in runs another release than at injection (an
    upgrade that was not rolled back), restart it on that one: the sandbox ends as it was."""
    flag = server.read_behaviour_faults(sb).get("bad-release")
    _behaviour("bad-release", None)(sb)
    release = flag.get("release") if isinstance(flag, dict) else None
    if release and release != sb.server_release:
        server.restart(sb, release=release)


# ---- cert-expired ---------------------------------------------------------------------------


def _served_certificate_expired(sb: Sandbox) -> bool | None:
    """Is the certificate the stand-in serves now expired? None when it does not answer."""
    try:
        peer = tls.fetch_peer_certificate("127.0.0.1", int(sb.state["server_port"]),
                                          timeout=3)
    except (OSError, ssl.SSLError):
        return None
    if not peer.chain:
        return None
    leaf = x509.load_der_x509_certificate(peer.chain[0])
    return leaf.not_valid_after_utc < datetime.now(UTC)


def _issue_and_wait(sb: Sandbox, expired: bool) -> None:
    """Swap the stand-in's certificate and wait until it serves the new one (it reloads
    the files at most once a second); a server that is down picks it up when it starts."""
    if expired:
        now = datetime.now(UTC)
        pgcluster.issue_server_cert(sb.cluster.certs_dir, days=1,
                                    not_before=now - timedelta(days=2), out_dir=sb.server_certs)
    else:
        server.issue_certificate(sb)
    if server.pid(sb) is not None:
        _wait(lambda: _served_certificate_expired(sb) is expired,
              "the stand-in serving its new certificate")


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
    "slow-query": Fault(
        "heavy statements keep running: a holder runs `SELECT pg_sleep(600)` and a CPU-bound "
        "cross join (application_name fraiseql-rb-drill-slow), and every GraphQL database "
        f"statement of the stand-in sleeps {SLOW_QUERY_DELAY_MS} ms inside PostgreSQL with its "
        "query cache bypassed",
        _all_or_nothing(_slow_query, _slow_query_heal), _slow_query_heal),
    "lock-contention": Fault(
        "a holder session (fraiseql-rb-drill-lock) takes LOCK TABLE tb_post IN ACCESS "
        "EXCLUSIVE MODE and sits idle in that transaction; the stand-in's `posts` reads "
        "(v_post) queue behind it, query cache cleared so they start at once",
        _all_or_nothing(_lock_contention, _lock_contention_heal), _lock_contention_heal),
    "memory-leak": Fault(
        f"the stand-in keeps {MEMORY_LEAK_BYTES // (1024 * 1024)} MiB per request it serves "
        "(its RSS climbs with the background traffic, up to a cap); healed, it frees them",
        _behaviour("memory-leak", {"bytes_per_request": MEMORY_LEAK_BYTES}),
        _behaviour("memory-leak", None)),
    "pool-exhaustion": Fault(
        f"the stand-in leaks {LEAKED_CONNECTIONS} of its {server.POOL_MAX} pool connections, "
        "each left idle in transaction after `BEGIN; SELECT 1`: requests that need the "
        "database wait, then fail at pool_timeout_secs (query cache cleared so they do now)",
        _all_or_nothing(_pool_exhaustion, _pool_exhaustion_heal), _pool_exhaustion_heal),
    "auth-attack": Fault(
        f"{AUTH_ATTACK_EVENTS} authentication_failed audit events from 3 addresses over the last "
        f"{AUTH_ATTACK_HOURS:g} hours, plus {AUTH_ATTACK_ATTEMPTS} live wrong-token requests to "
        f"/metrics from {ATTACKER_ADDRESS} (403, then 429); healed, exactly those rows deleted",
        _all_or_nothing(_auth_attack, _auth_attack_heal), _auth_attack_heal),
    "csrf-attack": CSRF_ATTACK.fault(),
    "sqli-attack": SQLI_ATTACK.fault(),
    "oidc-down": Fault(
        "the identity provider is down: the stand-in's /.well-known/openid-configuration and "
        "/.well-known/jwks.json answer 503",
        _behaviour("oidc-down", {}), _behaviour("oidc-down", None)),
    "observer-fail": Fault(
        "the stand-in's observer runtime has stopped: /health answers 200 `degraded` with "
        "an `observers` block (running false, last_error); the database is fine",
        _behaviour("observer-fail", {}), _behaviour("observer-fail", None)),
    "bad-release": Fault(
        "the next release the stand-in is switched to (service upgrade V, any release but the "
        "one running at injection) answers /health healthy with its version, but every "
        "GraphQL read fails: its statements select a column the views lack (column "
        "v_post.summary does not exist), as a release expecting a migration that never ran; "
        "the release running at injection (the rollback) works; healed, the flag cleared and "
        "the stand-in restarted on that release if it runs another",
        _bad_release, _bad_release_heal),
    "cert-expired": Fault(
        "the server's TLS certificate replaced by one that expired yesterday (clients that "
        "verify refuse the handshake)",
        lambda sb: _issue_and_wait(sb, expired=True),
        lambda sb: _issue_and_wait(sb, expired=False)),
    "replica-lag": Fault(
        "WAL replay paused on the replica (pg_wal_replay_pause) while a writer commits a row "
        f"a second on the primary (table {pgreplica.WRITER_TABLE} in database postgres): the "
        "replica falls behind in bytes and in time; healed, replay resumes, the writer stops "
        "and its table is dropped",
        _all_or_nothing(pgreplica.pause_replay, pgreplica.resume_replay),
        pgreplica.resume_replay),
    "replica-down": Fault("the streaming replica stopped (pg_ctl stop -m fast); healed, "
                          "started and streaming again", pgreplica.take_down,
                          pgreplica.bring_up),
    "archive-broken": Fault(
        "the WAL archive directory made read-only (mode 0500): archive_command fails and "
        "`.ready` files pile up in pg_wal/archive_status; healed, writable again and the "
        "backlog archived",
        _all_or_nothing(lambda sb: sb.cluster.break_archiving(),
                        lambda sb: sb.cluster.restore_archiving()),
        lambda sb: sb.cluster.restore_archiving()),
    "backup-stale": Fault(
        "the dumps of the two newest days (fraiseql-YYYYMMDD.sql and .dump) moved out of "
        "backup_dir into the sandbox's .backup-stale/: no dump in the last 26 h (the daily "
        "cron has stopped); healed, moved back with their times",
        _all_or_nothing(backups.inject_stale, backups.heal_stale), backups.heal_stale),
    "backup-corrupt": Fault(
        "the newest custom dump (fraiseql-*.dump) and the newest audit archive (audit-*.gz) "
        "truncated to half their size, file times kept: restoring the dump fails (its table "
        "of contents at the start still lists) and gunzip -t fails; healed, the pristine "
        "copies kept in .backup-corrupt/ restored byte for byte",
        _all_or_nothing(backups.inject_corrupt, backups.heal_corrupt), backups.heal_corrupt),
    "primary-down": Fault(
        "the primary PostgreSQL stopped (pg_ctl stop -m fast); the stand-in stays up and "
        "answers /health unhealthy, the replica waits for a primary; healed, the layout "
        "`sandbox up` left: the primary started again, or, after the failover runbook "
        "promoted the replica, the primary rebuilt from a base backup of the promoted node on "
        "its own port with its own configuration, the replica rebuilt from it and streaming, "
        "the server config restored from the failover's backup copy and the stand-in "
        "restarted on it",
        pgreplica.primary_down, pgreplica.primary_up),
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
