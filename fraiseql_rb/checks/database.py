"""Database checks over the target's `database_url`, read-only (see `postgres`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import confiture, postgres


@check("database.reachable")
def check_reachable(ctx: RunContext) -> Finding:
    """§1.2 `psql ... -c "SELECT 1"`, as the application role the server uses."""
    url = ctx.target.database_url()
    try:
        info = postgres.server_info(url)
    except postgres.ConnectionSkipped as exc:
        return ctx.endpoint_hung(exc.timeout)
    except postgres.ConnectionFailed as exc:
        return ctx.result(Status.CRITICAL,
                          f"cannot connect to PostgreSQL as the application role: {exc}",
                          {"database": postgres.url_database(url), "error": str(exc)},
                          "run the database-unavailable playbook")
    evidence = {"database": info.database, "user": info.user, "connect_ms": info.connect_ms,
                "ssl": info.ssl, "connections": info.connections,
                "max_connections": info.max_connections}
    return ctx.result(Status.OK,
                      f"connected to {info.database} as {info.user} in {info.connect_ms} ms"
                      f"{' over TLS' if info.ssl else ''}", evidence)


VERSION_SQL = """
SELECT version() AS version,
       current_setting('server_version_num')::int AS version_num,
       pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END
           AS current_wal_lsn,
       current_setting('max_connections')::int AS max_connections,
       (SELECT count(*) FROM pg_stat_activity) AS connections
"""


@check("database.version")
def check_version(ctx: RunContext,
                  minimum: int = int(thresholds.POSTGRES_MIN_VERSION.critical),
                  recommended: int = int(thresholds.POSTGRES_MIN_VERSION.warning),
                  connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§1.1 and §4.2 step 2 `SELECT version();`: PostgreSQL 10+ for SCRAM-SHA-256, 11+ for
    SCRAM-SHA-256-PLUS, and whether database_url reaches a primary (a standby takes reads
    and fails every write)."""
    with postgres.connect(ctx.target.database_url(),
                          connect_timeout_s=max(1, int(round(connect_timeout_s)))) as conn:
        row = postgres.one(conn, VERSION_SQL)
    major = row["version_num"] // 10000
    evidence = dict(row) | {"major": major, "minimum": minimum, "recommended": recommended}
    if major < minimum:
        return ctx.result(Status.CRITICAL,
                          f"PostgreSQL {major} is below the supported {minimum}", evidence,
                          "upgrade PostgreSQL before deploying FraiseQL")
    if row["in_recovery"]:
        return ctx.result(Status.WARNING,
                          f"PostgreSQL {major} answers but is in recovery (a standby): reads "
                          "work, every write fails", evidence,
                          "point database_url at the primary; if the primary is gone, fail "
                          "over with the failover runbook")
    if major < recommended:
        return ctx.result(Status.WARNING,
                          f"PostgreSQL {major}: SCRAM-SHA-256-PLUS needs {recommended}+",
                          evidence, "plan an upgrade to PostgreSQL 11 or later")
    return ctx.result(Status.OK,
                      f"PostgreSQL {major} answers: {row['version'].split(' on ')[0]}, "
                      f"{row['connections']} of {row['max_connections']} connections in use",
                      evidence)


@check("database.role_grants")
def check_role_grants(ctx: RunContext) -> Finding:
    """§2.1 step 1: CONNECT on the database, USAGE on public, ALL on its tables."""
    url = ctx.target.database_url()
    role = postgres.url_user(url)
    with postgres.connect(url) as conn:
        grants = postgres.role_grants(conn, role)
    # a migration tool's own ledger (confiture's, made by whoever ran the migration) is not
    # the application's: a missing grant there is no reason to warn
    tool_tables = sorted({m["table"] for m in grants["missing_table_privileges"]
                          if m["table"] in confiture.LEDGER_TABLES})
    missing = [m for m in grants["missing_table_privileges"]
               if m["table"] not in confiture.LEDGER_TABLES]
    table = pd.DataFrame(missing) if missing else None
    evidence: dict[str, Any] = {
        "role": role, "connect": grants["can_connect"], "schema_usage": grants["schema_usage"],
        "tables": grants["tables"], "missing_table_privileges": len(missing),
        "tool_tables_not_granted": tool_tables,
    }
    if not grants["can_connect"] or not grants["schema_usage"]:
        lacking = [name for name, ok in (("CONNECT on the database", grants["can_connect"]),
                                         ("USAGE on schema public", grants["schema_usage"]))
                   if not ok]
        return ctx.result(Status.CRITICAL,
                          f"role {role} lacks {' and '.join(lacking)}", evidence,
                          "apply the grants of runbook §2.1 step 1", table=table)
    if missing:
        tables = sorted({m["table"] for m in missing})
        return ctx.result(Status.WARNING,
                          f"role {role} lacks {len(missing)} table privileges on "
                          f"{len(tables)} tables", evidence | {"tables_affected": tables[:20]},
                          "GRANT ALL ON ALL TABLES IN SCHEMA public TO the role (§2.1 step 1)",
                          table=table)
    return ctx.result(Status.OK,
                      f"role {role} has CONNECT, USAGE on public and ALL on "
                      f"{grants['tables']} tables", evidence)


@check("database.password_encryption")
def check_password_encryption(ctx: RunContext) -> Finding:
    """§1.1: SCRAM-SHA-256. With md5, new passwords are stored as MD5 hashes."""
    with postgres.connect(ctx.target.database_url()) as conn:
        value = postgres.one(conn, postgres.PASSWORD_ENCRYPTION_SQL)["value"]
    evidence = {"password_encryption": value}
    if value != "scram-sha-256":
        return ctx.result(Status.CRITICAL,
                          f"password_encryption is {value}: new passwords are not stored as "
                          "SCRAM-SHA-256 (§1.1)", evidence,
                          "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; reload; "
                          "then reset every login role's password")
    return ctx.result(Status.OK,
                      "password_encryption is scram-sha-256", evidence)


def _needs_admin(ctx: RunContext, what: str) -> Finding:
    """The running check could not see: `what` needs the privileged connection."""
    return ctx.result(Status.UNKNOWN,
                      f"not checked: {what} needs a privileged connection, and the target has "
                      "no admin_database_url", {},
                      "add admin_database_url (with admin_database_password_env/_file) to the "
                      "inventory")


@check("database.role_passwords")
def check_role_passwords(ctx: RunContext) -> Finding:
    """Login roles whose stored password is not SCRAM (needs `admin_database_url`)."""
    url = ctx.target.admin_database_url()
    if url is None:
        return _needs_admin(ctx, "reading stored passwords")
    with postgres.connect(url) as conn:
        found = postgres.rows(conn, postgres.LOGIN_ROLE_PASSWORDS_SQL)
    weak = [r for r in found if r["stored_as"] in ("md5", "plaintext")]
    table = pd.DataFrame(found)
    evidence = {"login_roles": len(found), "not_scram": [r["role"] for r in weak]}
    if weak:
        return ctx.result(Status.CRITICAL,
                          f"{len(weak)} login role(s) with a non-SCRAM password: "
                          + ", ".join(f"{r['role']} ({r['stored_as']})" for r in weak),
                          evidence, "with password_encryption=scram-sha-256, reset each "
                          "listed role's password (\\password in psql)", table=table)
    return ctx.result(Status.OK,
                      f"all {len(found)} login roles use SCRAM-SHA-256 or no password",
                      evidence, table=table)


HBA_SEVERITY = {"trust": Status.CRITICAL, "password": Status.CRITICAL, "md5": Status.WARNING}


@check("database.hba")
def check_hba(ctx: RunContext) -> Finding:
    """pg_hba.conf: trust or cleartext password on host lines is critical, md5 a warning."""
    url = ctx.target.admin_database_url()
    if url is None:
        return _needs_admin(ctx, "pg_hba_file_rules")
    with postgres.connect(url) as conn:
        rules = postgres.rows(conn, postgres.HBA_RULES_SQL)
    problems = []
    for rule in rules:
        if rule["error"]:
            problems.append((Status.CRITICAL, rule, f"line {rule['line_number']} is rejected "
                             f"by the server: {rule['error']}"))
        elif str(rule["type"]).startswith("host") and rule["auth_method"] in HBA_SEVERITY:
            problems.append((HBA_SEVERITY[rule["auth_method"]], rule,
                             f"line {rule['line_number']}: {rule['type']} "
                             f"{rule['address'] or ''} uses {rule['auth_method']}"))
    table = pd.DataFrame(rules).drop(columns=["netmask"], errors="ignore")
    evidence = {"rules": len(rules), "problems": [text for _, _, text in problems]}
    if not problems:
        return ctx.result(Status.OK,
                          f"{len(rules)} pg_hba rules, none with trust, password or md5 on "
                          "network lines", evidence, table=table)
    status = Status.CRITICAL if any(s is Status.CRITICAL for s, _, _ in problems) else \
        Status.WARNING
    return ctx.result(status, "; ".join(text for _, _, text in problems),
                      evidence, "use scram-sha-256 on every host line of pg_hba.conf, fix "
                      "rejected lines, then reload", table=table)


MISSING_DATABASE = re.compile(r'database "[^"]*" does not exist')
MISSING_DATABASE_REMEDIATION = (
    "create it (§2.1 step 1) if this is a new deployment; if it was dropped, restore it from "
    "the latest backup (§5.1) and page the database team; or fix the name in database_url")


@check("database.exists")
def check_database_exists(ctx: RunContext,
                          connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S, *,
                          app_role_failure: str | None = None) -> Finding:
    """§4.2 step 3 `SELECT datname FROM pg_database WHERE datname='fraiseql'`.

    Asked as the application role when it is known to connect (`app_role_failure` "none",
    the database-unavailable playbook's step 1), else through admin_database_url when the
    inventory has one, else as the application role; a refusal that names the database as
    missing is the server's own answer. When the admin URL names the missing database too,
    the maintenance database `postgres` is asked."""
    url = ctx.target.database_url()
    name = postgres.url_database(url) or conninfo_to_dict(url).get("dbname")
    timeout = max(1, int(round(connect_timeout_s)))
    admin = ctx.target.admin_database_url()
    if app_role_failure == "none" or (admin is None and app_role_failure is None):
        via, conninfo = "the application role", url
    elif admin is not None:
        via, conninfo = "the admin URL", admin
    else:
        return ctx.result(Status.UNKNOWN,
                          "not checked: the application role cannot connect "
                          f"({app_role_failure}) and the target has no admin_database_url",
                          {"database": name},
                          "add admin_database_url (and its password secret) to the "
                          "inventory, or ask the database team to run the query")
    try:
        conn = postgres.connect(conninfo, connect_timeout_s=timeout)
    except postgres.ConnectionFailed as exc:
        if not MISSING_DATABASE.search(str(exc)):
            raise
        if via == "the application role":  # the server itself says so
            return ctx.result(Status.CRITICAL,
                              f"database {name} does not exist (the server refused the "
                              "application role: database does not exist)",
                              {"database": name, "checked_via": via},
                              MISSING_DATABASE_REMEDIATION)
        via = "the admin URL (maintenance database postgres)"
        conn = postgres.connect(make_conninfo(conninfo, dbname="postgres"),
                                connect_timeout_s=timeout)
    with conn:
        found = postgres.rows(conn, postgres.DATABASE_EXISTS_SQL, {"name": name})
    evidence = {"database": name, "checked_via": via}
    if found:
        return ctx.result(Status.OK, f"database {name} exists (checked via {via})", evidence)
    return ctx.result(Status.CRITICAL,
                      f"database {name} does not exist in pg_database (checked via {via})",
                      evidence, MISSING_DATABASE_REMEDIATION)


@check("database.wal_archiving")
def check_wal_archiving(ctx: RunContext) -> Finding:
    """§5.1 continuous WAL archiving: on, with a command, and not failing."""
    with postgres.connect(ctx.target.admin_database_url() or ctx.target.database_url()) as conn:
        row = postgres.one(conn, postgres.ARCHIVING_SQL)
    evidence = dict(row)
    if row["archive_mode"] not in ("on", "always"):
        return ctx.result(Status.CRITICAL,
                          f"archive_mode is {row['archive_mode']}: no continuous WAL archive, "
                          "so point-in-time recovery is impossible (§5.1)", evidence,
                          "set archive_mode=on and archive_command (needs a restart)")
    if not row["archive_command"] or row["archive_command"] == "(disabled)":
        return ctx.result(Status.CRITICAL,
                          "archive_mode is on but archive_command is empty: WAL piles up "
                          "in pg_wal", evidence, "set archive_command (§5.1) and reload")
    failed_at, archived_at = row["last_failed_time"], row["last_archived_time"]
    if failed_at and (archived_at is None or failed_at > archived_at):
        return ctx.result(Status.CRITICAL,
                          f"archiving is failing: last failure {row['last_failed_wal']} at "
                          f"{failed_at:%Y-%m-%d %H:%M:%S}Z, {row['failed_count']} failures",
                          evidence, "read the PostgreSQL log for archive_command errors; "
                          "check the archive directory's space and permissions")
    return ctx.result(Status.OK,
                      f"archiving on, {row['archived_count']} segments archived, "
                      f"{row['failed_count']} failures", evidence)


# -- replication delay, measured as check_postgres hot_standby_delay does --------------------

# On the standby. pg_is_wal_replay_paused() fails outside recovery, so the CASE guards it.
STANDBY_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
       pg_last_xact_replay_timestamp() AS last_replay_at,
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float AS replay_lag_s,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       -- after the WAL receiver restarts (its primary gone) the receive position falls back
       -- to a segment boundary, behind what was replayed: nothing is waiting then
       GREATEST(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint
           AS replay_gap_bytes,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status
"""


def standby_state(conn: Any) -> dict[str, Any]:
    """What a standby says of its own replay: paused, positions, last replayed commit."""
    return postgres.one(conn, STANDBY_SQL)


# On the primary. pg_last_committed_xact() needs track_commit_timestamp; replay_lag is NULL
# for a role without pg_read_all_stats (and for a caught-up idle standby).
PRIMARY_WAL_SQL = """
SELECT pg_current_wal_lsn()::text AS current_wal_lsn,
       CASE WHEN current_setting('track_commit_timestamp')::bool
            THEN (pg_last_committed_xact()).timestamp END AS last_commit_at,
       (SELECT max(EXTRACT(EPOCH FROM replay_lag))::float FROM pg_stat_replication)
           AS primary_replay_lag_s
"""


def primary_state(conn: Any) -> dict[str, Any]:
    """The primary's WAL position now and, where it keeps them, its newest commit's time."""
    return postgres.one(conn, PRIMARY_WAL_SQL)


def lsn_bytes(lsn: str | None) -> int | None:
    """A pg_lsn's text form ("16/B374D848") as a byte position."""
    if not lsn or "/" not in lsn:
        return None
    high, low = lsn.split("/", 1)
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True)
class Delay:
    """How far a standby is behind: WAL bytes not replayed and seconds of commits."""

    paused: bool
    behind_bytes: int | None  # the primary's WAL position minus the replayed one
    seconds: float | None  # None: cannot be measured (nothing replayed since start)
    basis: str  # how `seconds` was measured, for the summary

    def describe(self) -> str:
        """"replay paused, 12.3 s behind (416 bytes of WAL)" and the like."""
        parts = ["replay paused"] if self.paused else []
        parts.append("delay unknown" if self.seconds is None
                     else f"{self.seconds:.1f} s behind")
        text = ", ".join(parts)
        if self.behind_bytes is not None:
            text += f" ({self.behind_bytes} bytes of WAL not replayed)"
        return text


def replication_delay(standby: dict[str, Any], primary: dict[str, Any] | None,
                      caught_up_bytes: int = thresholds.REPLICA_CAUGHT_UP_BYTES) -> Delay:
    """check_postgres hot_standby_delay's measure: bytes against the primary's WAL position,
    seconds since the standby's last replayed commit, but only while something the primary
    wrote is not replayed (an idle primary with nothing new is no lag). A small gap on a
    replaying standby is WAL in flight, timed by the primary's own replay_lag."""
    paused = bool(standby.get("replay_paused"))
    age = standby.get("replay_lag_s")
    if primary is None or lsn_bytes(primary.get("current_wal_lsn")) is None:
        return Delay(paused, None, age, "since the last replayed commit (the primary's WAL "
                     "position is unknown: an idle primary makes this grow)")
    replayed = lsn_bytes(standby.get("replay_lsn"))
    if replayed is None:
        return Delay(paused, None, None, "no WAL replayed yet")
    behind = max(0, int(lsn_bytes(primary["current_wal_lsn"]) or 0) - replayed)
    if behind == 0:
        return Delay(paused, 0, 0.0, "everything the primary wrote is replayed")
    last_commit, last_replay = primary.get("last_commit_at"), standby.get("last_replay_at")
    if last_commit is not None and last_replay is not None and last_commit <= last_replay:
        return Delay(paused, behind, 0.0, "no commit on the primary after the last replayed "
                     "one")
    if paused or behind >= caught_up_bytes:
        return Delay(paused, behind, age, "since the last replayed commit, with the "
                     "primary's WAL not replayed")
    in_flight = primary.get("primary_replay_lag_s")
    return Delay(paused, behind, float(in_flight or 0.0), "WAL in flight (the primary's "
                 "replay_lag)")


def grade_delay(delay: Delay, warning_s: float, critical_s: float) -> Status:
    """critical beyond `critical_s`, warning beyond `warning_s`, a paused replay or an
    unmeasurable delay; else ok."""
    if delay.seconds is not None and delay.seconds > critical_s:
        return Status.CRITICAL
    if delay.seconds is None or delay.seconds > warning_s or delay.paused:
        return Status.WARNING
    return Status.OK


# On the primary: each standby as the primary sees it (NULL columns without pg_read_all_stats).
SENDERS_SQL = """
SELECT application_name, client_addr::text AS client_addr, state, sync_state,
       sent_lsn::text AS sent_lsn, replay_lsn::text AS replay_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS behind_bytes,
       EXTRACT(EPOCH FROM replay_lag)::float AS replay_lag_s
FROM pg_stat_replication
ORDER BY application_name
"""


def _replica_delay(ctx: RunContext, primary: dict[str, Any]) -> tuple[str, Delay] | None:
    """The configured replica's delay (where, Delay), None when no replica_database_url."""
    if not ctx.target.get("replica_database_url"):
        return None
    url = ctx.target.database_url("replica_database")
    host, port = postgres.endpoint(url)
    with postgres.connect(url) as conn:
        standby = standby_state(conn)
    return (f"{host}:{port}" if host else "its unix socket"), replication_delay(standby, primary)


@check("database.replication")
def check_replication(ctx: RunContext,
                      warning_s: float = thresholds.REPLICA_DELAY_S.warning,
                      critical_s: float = thresholds.REPLICA_DELAY_S.critical) -> Finding:
    """§1.1 "Streaming replication for HA": required when the target says it is HA; a
    streaming replica must also replay (paused or minutes behind is no HA)."""
    ha = bool(ctx.target.get("ha")) or bool(ctx.target.get("replica_database_url"))
    with postgres.connect(ctx.target.admin_database_url() or ctx.target.database_url()) as conn:
        replicas = postgres.rows(conn, SENDERS_SQL)
        primary = primary_state(conn)
    evidence: dict[str, Any] = {"ha": ha, "replicas": replicas, "warning_s": warning_s,
                                "critical_s": critical_s}
    table = pd.DataFrame(replicas) if replicas else None
    streaming = [r for r in replicas if r["state"] == "streaming"]
    if streaming:
        measured = _replica_delay(ctx, primary)
        if measured is not None:
            where, delay = measured
            status = grade_delay(delay, warning_s, critical_s)
            evidence |= {"replica": where, "paused": delay.paused, "delay_s": delay.seconds,
                         "behind_bytes": delay.behind_bytes, "basis": delay.basis}
            summary = (f"{len(streaming)} replica(s) streaming; the replica at {where}: "
                       f"{delay.describe()} ({delay.basis}; warning {warning_s:g} s, "
                       f"critical {critical_s:g} s)")
        else:  # the primary's view only: replay_lag, bytes not replayed
            lags = [r["replay_lag_s"] for r in streaming if r["replay_lag_s"] is not None]
            worst_lag = max(lags) if lags else 0.0
            status = (Status.CRITICAL if worst_lag > critical_s else
                      Status.WARNING if worst_lag > warning_s else Status.OK)
            behind = [r["behind_bytes"] for r in streaming if r["behind_bytes"] is not None]
            evidence |= {"delay_s": worst_lag, "behind_bytes": max(behind) if behind else None}
            summary = (f"{len(streaming)} replica(s) streaming, replay_lag at most "
                       f"{worst_lag:.1f} s as the primary sees it (add replica_database_url "
                       "to see a paused replay and the commit delay)")
        remediation = None if status is Status.OK else (
            "on the replica: SELECT pg_wal_replay_resume() if replay is paused; else read its "
            "log for replay conflicts or I/O, and compare pg_last_wal_replay_lsn() with the "
            "primary's pg_current_wal_lsn()")
        return ctx.result(status, summary, evidence, remediation, table=table)
    if ha:
        return ctx.result(Status.CRITICAL,
                          "the target is HA but no replica is streaming from this primary",
                          evidence, "check the replica's primary_conninfo and its log",
                          table=table)
    return ctx.result(Status.INFO,
                      "no streaming replica (the target is not marked HA; §1.1 recommends "
                      "one for production)", evidence)


def bloat_level(ratio: float, wasted_bytes: float) -> Status:
    """check_postgres bloat's grading with the catalogue's levels: beyond BOTH the ratio and
    the wasted bytes of a level (a small table twice its size wastes nothing worth a lock).
    The database dashboard and database-maintenance grade with this one rule."""
    if (ratio > thresholds.BLOAT_RATIO.critical
            and wasted_bytes > thresholds.BLOAT_WASTED_BYTES.critical):
        return Status.CRITICAL
    if (ratio > thresholds.BLOAT_RATIO.warning
            and wasted_bytes > thresholds.BLOAT_WASTED_BYTES.warning):
        return Status.WARNING
    return Status.OK
