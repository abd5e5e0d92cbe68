"""Read-only PostgreSQL access for diagnostics, and the SQL each check runs.

Every session is read-only with connect, statement and lock timeouts: a diagnostic must never
change the database or hang on it. User values reach SQL only as bound parameters. One
factory (`session`) opens them all; `connect` is it with dict rows and a masked one-line
error, `attempt` a connection classified when it fails (refused, timed out, rejected, ...).
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from fraiseql_rb.core import reachability, secrets, thresholds

APPLICATION_NAME = "fraiseql-rb"  # our sessions in pg_stat_activity; the playbooks skip them


def session(url: str, *, read_only: bool = True,
            connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S,
            statement_timeout_ms: int = thresholds.DB_STATEMENT_TIMEOUT_MS,
            **kwargs: Any) -> psycopg.Connection:
    """The one factory of our database sessions: autocommit, read-only, statement and lock
    timeouts, application_name `fraiseql-rb`, through `open_session`'s memo of hung endpoints.

    `read_only=False` is only for an action that runs with execute=True (and confirm where it
    is dangerous); diagnostics never ask for it. psycopg's errors pass through unchanged, for
    callers that classify them (`attempt`); `connect` turns them into `ConnectionFailed`.
    `kwargs` go to psycopg (e.g. `row_factory`)."""
    options = (f"-c statement_timeout={statement_timeout_ms}"
               f" -c lock_timeout={thresholds.DB_LOCK_TIMEOUT_MS}")
    if read_only:
        options = "-c default_transaction_read_only=on " + options
    return open_session(url, connect_timeout_s=connect_timeout_s, autocommit=True,
                        options=options, application_name=APPLICATION_NAME, **kwargs)


def connect(url: str, *, connect_timeout_s: int = thresholds.DB_CONNECT_TIMEOUT_S,
            statement_timeout_ms: int = thresholds.DB_STATEMENT_TIMEOUT_MS,
            read_only: bool = True) -> psycopg.Connection:
    """A `session` with dict rows (read-only unless `read_only=False`, see there); a failure
    raises `ConnectionFailed`, masked and one line."""
    try:
        return session(url, read_only=read_only, connect_timeout_s=connect_timeout_s,
                       statement_timeout_ms=statement_timeout_ms, row_factory=dict_row)
    except psycopg.Error as exc:
        raise ConnectionFailed(secrets.mask(first_line(exc))) from None


def open_session(url: str, *, connect_timeout_s: float, **kwargs: Any) -> psycopg.Connection:
    """`psycopg.connect` through the run's memo of hung endpoints (see `reachability`).

    Every connection to a target's database goes through here. A host:port whose connection
    attempt already timed out in this run raises `ConnectionSkipped` (a ConnectionFailed) at
    once; a new connect timeout on a server that does not even answer an SSLRequest is
    remembered. psycopg's own errors pass through unchanged for callers that classify them.
    """
    memo = reachability.active()
    endpoint = reachability.postgres_endpoint(url) if memo is not None else None
    if memo is not None and endpoint is not None:
        memo.check(endpoint, ConnectionSkipped)
    try:
        conn = psycopg.connect(url, connect_timeout=connect_timeout_s, **kwargs)
    except psycopg.OperationalError as exc:
        if memo is not None and is_timeout(exc):
            reachability.postgres_timed_out(memo, url, connect_timeout_s)
        raise
    if memo is not None and endpoint is not None:
        memo.forget(endpoint)
    return conn


def is_timeout(exc: BaseException) -> bool:
    """Did a connection attempt run out of connect_timeout (not refused, not rejected)?"""
    timeout = getattr(psycopg.errors, "ConnectionTimeout", None)  # psycopg >= 3.2
    return (timeout is not None and isinstance(exc, timeout)) or "timeout expired" in str(exc)


class ConnectionFailed(Exception):
    """The database could not be reached; the message is masked and one line."""


class ConnectionSkipped(ConnectionFailed, reachability.Skipped):
    """No connection attempted: the database's host:port already hung in this run."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


def one(conn: psycopg.Connection, query: str, params: Any = None) -> dict[str, Any]:
    found = rows(conn, query, params)
    return found[0] if found else {}


def url_user(url: str) -> str | None:
    return urlsplit(url).username


def url_database(url: str) -> str | None:
    path = urlsplit(url).path.lstrip("/")
    return path or None


# -- a classified connection attempt (codes of the database-unavailable vocabulary) --------

@dataclass(frozen=True)
class TcpProbe:
    """The TCP pre-check: can anything at host:port be reached at all?"""

    host: str
    port: int
    outcome: str  # connected | refused | timeout | unreachable | unresolved
    detail: str
    elapsed_ms: float


def tcp_probe(host: str, port: int, timeout_s: float) -> TcpProbe:
    """`socket.create_connection` to host:port: refused, timed out, unreachable or connected."""
    began = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            outcome, detail = "connected", f"TCP connection to {host}:{port} accepted"
    except ConnectionRefusedError:
        outcome, detail = "refused", f"nothing listens on {host}:{port} (connection refused)"
    except TimeoutError:
        outcome, detail = "timeout", f"no TCP answer from {host}:{port} within {timeout_s:g} s"
    except socket.gaierror as exc:
        outcome, detail = "unresolved", f"host name {host} does not resolve ({exc.strerror})"
    except OSError as exc:
        outcome, detail = "unreachable", f"{host}:{port} is unreachable ({exc.strerror or exc})"
    return TcpProbe(host, port, outcome, detail, round((time.perf_counter() - began) * 1000, 1))


def endpoint(url: str) -> tuple[str | None, int]:
    """The first host and port a connection string names; host None for a unix socket."""
    params = conninfo_to_dict(url)
    host = str(params.get("hostaddr") or params.get("host") or "").split(",")[0]
    port = int(str(params.get("port") or "5432").split(",")[0] or 5432)
    if not host or host.startswith("/") or host.startswith("@"):
        return None, port
    return host, port


@dataclass(frozen=True)
class Failure:
    """Why a connection failed, as a vocabulary code; `code` is "none" when it succeeded."""

    code: str
    explanation: str
    sqlstate: str | None = None
    certainty: float = 0.95


# SQLSTATE -> code, for errors that carry one.
SQLSTATE_CODES = {
    "28P01": "auth_rejected",  # invalid_password
    "28000": "auth_rejected",  # invalid_authorization_specification (pg_hba, unknown role)
    "42501": "auth_rejected",  # insufficient_privilege (no CONNECT on the database)
    "3D000": "database_missing",  # invalid_catalog_name
    "53300": "too_many_connections",  # too_many_connections
    "57P03": "server_down",  # cannot_connect_now (starting up, shutting down)
}

# libpq's connection messages, in the order they must be tried (pg_hba's refusal mentions
# "SSL encryption", so authentication comes before TLS), with the SQLSTATE the server sent.
MESSAGE_PATTERNS: list[tuple[re.Pattern[str], str, str | None, float, str]] = [
    (re.compile(r"password authentication failed|SASL authentication failed", re.I),
     "auth_rejected", "28P01", 0.95, "the server rejected the application role's password "
     "(or the role does not exist: the server does not say which)"),
    (re.compile(r"no pg_hba\.conf entry|pg_hba\.conf rejects", re.I),
     "auth_rejected", "28000", 0.95, "pg_hba.conf has no rule admitting this role from this "
     "address"),
    (re.compile(r"role \"[^\"]*\" does not exist|(peer|ident|cert|gss|ldap|radius) "
                r"authentication failed", re.I),
     "auth_rejected", "28000", 0.95, "the server refused to authenticate the application role"),
    (re.compile(r"permission denied for database|CONNECT privilege", re.I),
     "auth_rejected", "42501", 0.9, "the application role lacks CONNECT on the database"),
    (re.compile(r"database \"[^\"]*\" does not exist", re.I),
     "database_missing", "3D000", 0.95, "the server answers, but the database does not exist"),
    (re.compile(r"too many clients|remaining connection slots are reserved|too many connections",
                re.I),
     "too_many_connections", "53300", 0.95, "every connection slot open to the application "
     "role is taken"),
    (re.compile(r"the database system is (starting up|shutting down|in recovery mode)|"
                r"not yet accepting connections", re.I),
     "server_down", "57P03", 0.9, "PostgreSQL is running but not accepting connections "
     "(starting up, shutting down or recovering)"),
    (re.compile(r"\bSSL\b|\bTLS\b|certificate|sslmode", re.I),
     "tls_error", None, 0.9, "the TLS negotiation failed"),
    (re.compile(r"timeout expired|timed out", re.I),
     "network_timeout", None, 0.9, "the server did not complete the connection in time"),
    (re.compile(r"Connection refused|Is the server running|No such file or directory", re.I),
     "server_down", None, 0.9, "nothing accepts connections where database_url points"),
    (re.compile(r"could not translate host name|Name or service not known|No route to host|"
                r"Network is unreachable|Host is unreachable", re.I),
     "network_timeout", None, 0.9, "the database host cannot be reached"),
    (re.compile(r"server closed the connection unexpectedly|terminating connection", re.I),
     "server_down", None, 0.7, "the server closed the connection while it was being set up "
     "(crashing or shutting down)"),
]


def error_text(exc: BaseException) -> str:
    """The libpq message on one line (it may span several), masked."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return secrets.mask(text or type(exc).__name__)


def server_message(text: str) -> str:
    """The part of libpq's message after the address it tried (`... failed: FATAL: ...`)."""
    tail = text.rsplit(" failed: ", 1)[-1]
    return re.sub(r"^(FATAL|ERROR):\s+", "", tail).strip()


def classify(tcp: TcpProbe | None, error: BaseException | None,
             timeout_s: float | None = None) -> Failure:
    """A failed (or successful) connection as a vocabulary code with its explanation."""
    if tcp is not None and tcp.outcome != "connected":
        code = "server_down" if tcp.outcome == "refused" else "network_timeout"
        hint = (" — PostgreSQL is not running there, or listens on another address or port"
                if code == "server_down" else "")
        return Failure(code, tcp.detail + hint)
    if error is None:
        return Failure("none", "connected", certainty=1.0)
    sqlstate = getattr(error, "sqlstate", None)
    text = error_text(error)
    if sqlstate in SQLSTATE_CODES:
        return Failure(SQLSTATE_CODES[sqlstate], f"{server_message(text)} (SQLSTATE {sqlstate})",
                       sqlstate)
    timeout_type = getattr(psycopg.errors, "ConnectionTimeout", None)
    if timeout_type is not None and isinstance(error, timeout_type):
        within = f" within {timeout_s:g} s" if timeout_s else ""
        how = ("the TCP connection is accepted but the server never answered the PostgreSQL "
               f"handshake{within}" if tcp is not None else
               f"the connection did not complete{within}")
        return Failure("network_timeout", how + " (a firewall dropping packets, a hung server, "
                       "or another service on that port)")
    for pattern, code, state, certainty, meaning in MESSAGE_PATTERNS:
        if pattern.search(text):
            return Failure(code, f"{meaning}: {server_message(text)}", sqlstate or state,
                           certainty)
    return Failure("unknown", f"unrecognised connection error: {server_message(text)}",
                   sqlstate, 0.0)


@dataclass
class Attempt:
    """One connection attempt as the application role, kept whole for the finding."""

    host: str | None
    port: int
    tcp: TcpProbe | None
    failure: Failure
    error: str | None = None
    connect_ms: float | None = None
    ssl: bool | None = None
    server_version: int | None = None


def attempt(url: str, timeout_s: float) -> Attempt:
    """TCP pre-check, then a real libpq connection (closed at once); classified."""
    host, port = endpoint(url)
    tcp = tcp_probe(host, port, timeout_s) if host else None
    if tcp is not None and tcp.outcome != "connected":
        return Attempt(host, port, tcp, classify(tcp, None))
    began = time.perf_counter()
    try:
        conn = session(url, connect_timeout_s=max(1, int(round(timeout_s))))
    except psycopg.Error as exc:
        return Attempt(host, port, tcp, classify(tcp, exc, timeout_s), error_text(exc),
                       round((time.perf_counter() - began) * 1000, 1))
    with conn:
        elapsed = round((time.perf_counter() - began) * 1000, 1)
        return Attempt(host, port, tcp, classify(tcp, None), None, elapsed,
                       bool(conn.pgconn.ssl_in_use), conn.info.server_version)


# -- client sessions (pg_stat_activity) -------------------------------------------------------

IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")
QUERY_CHARS = 160  # of each session's last statement shown (masked)

# Every client session but our own, with its ages in seconds; the playbooks filter this one
# list for idle-in-transaction sessions, long statements and long transactions.
SESSIONS_SQL = """
SELECT a.pid, a.usename AS "user",
       coalesce(NULLIF(a.application_name, ''), '(none)') AS application,
       CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
            WHEN a.backend_type IS NULL THEN 'not visible' ELSE 'local' END AS client_addr,
       a.datname AS database, coalesce(a.state, 'not visible') AS state,
       EXTRACT(EPOCH FROM now() - a.backend_start)::float8 AS connected_s,
       EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS xact_s,
       EXTRACT(EPOCH FROM now() - a.query_start)::float8 AS query_s,
       EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_s,
       a.wait_event_type, a.wait_event, left(a.query, %(chars)s) AS query,
       a.backend_start, a.xact_start
FROM pg_stat_activity a
WHERE (a.backend_type = 'client backend'
       OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datname IS NOT NULL))
  AND a.pid <> pg_backend_pid()
ORDER BY a.pid
"""


def sessions(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Client sessions but ours (see SESSIONS_SQL), query text masked and cut short."""
    found = rows(conn, SESSIONS_SQL, {"chars": QUERY_CHARS})
    for row in found:
        if row.get("query"):
            row["query"] = secrets.mask(" ".join(str(row["query"]).split()))
    return found


def is_idle_in_transaction(row: dict[str, Any]) -> bool:
    return row.get("state") in IDLE_IN_TRANSACTION


def is_server_session(row: dict[str, Any], role: str | None) -> bool:
    """A session of the FraiseQL server: its role, and not one of our diagnostic sessions."""
    return role is not None and row.get("user") == role \
        and row.get("application") != APPLICATION_NAME


SERVER_INFO_SQL = """
SELECT version() AS version,
       current_setting('server_version_num')::int AS version_num,
       current_database() AS database,
       current_user AS "user",
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved_connections,
       (SELECT count(*) FROM pg_stat_activity) AS connections,
       (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl
"""


@dataclass(frozen=True)
class ServerInfo:
    version: str
    major: int
    database: str
    user: str
    max_connections: int
    reserved_connections: int
    connections: int
    ssl: bool | None
    connect_ms: float


def server_info(url: str) -> ServerInfo:
    """Connect, and read the facts most checks need in one round trip."""
    import time

    started = time.perf_counter()
    with connect(url) as conn:
        elapsed = (time.perf_counter() - started) * 1000
        row = one(conn, SERVER_INFO_SQL)
    return ServerInfo(
        version=row["version"], major=row["version_num"] // 10000, database=row["database"],
        user=row["user"], max_connections=row["max_connections"],
        reserved_connections=row["reserved_connections"], connections=row["connections"],
        ssl=row["ssl"], connect_ms=round(elapsed, 1),
    )


# The privileges runbook §2.1 step 1 grants: CONNECT on the database, USAGE on schema
# public, ALL on every table in public.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
ROLE_GRANTS_SQL = """
SELECT has_database_privilege(%(role)s, current_database(), 'CONNECT') AS can_connect,
       has_schema_privilege(%(role)s, 'public', 'USAGE') AS schema_usage,
       (SELECT count(*) FROM pg_tables WHERE schemaname = 'public') AS tables
"""
MISSING_TABLE_PRIVILEGES_SQL = """
SELECT t.tablename AS "table", p.privilege
FROM pg_tables t
CROSS JOIN unnest(%(privileges)s::text[]) AS p(privilege)
WHERE t.schemaname = 'public'
  AND NOT has_table_privilege(%(role)s, format('%%I.%%I', t.schemaname, t.tablename),
                              p.privilege)
ORDER BY 1, 2
"""


def role_grants(conn: psycopg.Connection, role: str) -> dict[str, Any]:
    """What runbook §2.1 step 1 grants the application role, and what is missing."""
    summary = one(conn, ROLE_GRANTS_SQL, {"role": role})
    missing = rows(conn, MISSING_TABLE_PRIVILEGES_SQL,
                   {"role": role, "privileges": list(TABLE_PRIVILEGES)})
    return {**summary, "missing_table_privileges": missing}


# -- authentication and pre-flight -----------------------------------------------------------

PASSWORD_ENCRYPTION_SQL = "SELECT current_setting('password_encryption') AS value"

# Needs a superuser (pg_authid holds the verifiers); classifies without reading them out.
LOGIN_ROLE_PASSWORDS_SQL = """
SELECT rolname AS role,
       CASE WHEN rolpassword IS NULL THEN 'none'
            WHEN rolpassword LIKE 'SCRAM-SHA-256$%%' THEN 'scram-sha-256'
            WHEN rolpassword LIKE 'md5%%' AND length(rolpassword) = 35 THEN 'md5'
            ELSE 'plaintext' END AS stored_as,
       rolsuper AS superuser
FROM pg_authid
WHERE rolcanlogin
ORDER BY rolname
"""

# pg_hba_file_rules is readable by superusers only; `error` marks lines the server rejected.
HBA_RULES_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules
ORDER BY line_number
"""

ARCHIVING_SQL = """
SELECT current_setting('archive_mode') AS archive_mode,
       current_setting('archive_command') AS archive_command,
       current_setting('wal_level') AS wal_level,
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time
FROM pg_stat_archiver a
"""

REPLICATION_SQL = """
SELECT application_name, client_addr::text AS client_addr, state, sync_state,
       EXTRACT(EPOCH FROM replay_lag)::float AS replay_lag_s
FROM pg_stat_replication
ORDER BY application_name
"""

DATABASE_EXISTS_SQL = "SELECT datname FROM pg_database WHERE datname = %(name)s"
