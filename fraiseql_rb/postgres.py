"""Read-only PostgreSQL access for diagnostics, and the SQL each check runs.

Every session is read-only with connect and statement timeouts: a diagnostic must never
change the database or hang on it. User values reach SQL only as bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from . import reachability, secrets, thresholds


def connect(url: str, *, connect_timeout_s: int = thresholds.DB_CONNECT_TIMEOUT_S,
            statement_timeout_ms: int = thresholds.DB_STATEMENT_TIMEOUT_MS) -> psycopg.Connection:
    """Open a read-only, autocommit session with timeouts."""
    options = (f"-c default_transaction_read_only=on -c statement_timeout={statement_timeout_ms}"
               " -c lock_timeout=2000")
    try:
        return open_session(url, connect_timeout_s=connect_timeout_s, autocommit=True,
                            options=options, application_name="fraiseql-rb",
                            row_factory=dict_row)
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
