"""Runbook §4.2 "Playbook: Database Unavailable": connect, classify why not, and decide.

The runbook's steps are `psql -h postgres -U fraiseql_user -d fraiseql`, `SELECT version()`,
`SELECT datname FROM pg_database WHERE datname='fraiseql'`, then fail over to a replica, page
the on-call database team and update the status page. Here a failed connection is classified:
a TCP pre-check tells "nothing listens" (refused) from "no answer" (timeout), and libpq's
message tells the rest. psycopg carries no SQLSTATE for a connection that never started (the
server's FATAL text is all libpq keeps), so the SQLSTATE is used when present and otherwise
read from the message. The classifier is `postgres.attempt` (its table names the SQLSTATE each
message stands for); its codes are this playbook's vocabulary.

The failover is a recommendation with the exact commands, recorded as actions that were not
executed: promoting a replica belongs to the failover runbook (execute=True and confirm=<target>
there). This playbook never changes anything.
"""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict

from fraiseql_rb.checks import database
from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import postgres

# §5.2 "Tier 2 (High): RTO 1hr, RPO 5min", the runbook's default objective.
DEFAULT_RPO_S = thresholds.FAILOVER_RPO_S
# With the primary answering, a replica less than this far behind its WAL position is
# streaming normally (WAL in flight); its time lag then only says how idle the primary is.
CAUGHT_UP_BYTES = thresholds.REPLICA_CAUGHT_UP_BYTES
# a delay beyond this share of the RPO is a warning (check_postgres' 150 s of 300 s)
WARNING_SHARE_OF_RPO = thresholds.REPLICA_DELAY_S.warning / thresholds.REPLICA_DELAY_S.critical
PROMOTE_SQL = "SELECT pg_promote();"  # run on the replica by the failover runbook, never here

VOCABULARY = Vocabulary("database-unavailable", {
    "none": "nothing to fix in PostgreSQL: the database answers the application role; if the "
            "service still fails, run the service-down playbook",
    "server_down": "start PostgreSQL on the database host (pg_ctl start, systemctl start "
                   "postgresql) and read its log for why it stopped; if it cannot be started "
                   "soon, fail over to the replica with the failover runbook (§5.2)",
    "network_timeout": "check the path to the database host and port (firewall, security group, "
                       "DNS, routing) and the host itself: a hung server looks the same from here",
    "auth_rejected": "compare the application role's password with the secret the inventory "
                     "names, and pg_hba.conf with this client's address; the PostgreSQL log "
                     "names the rule or the reason that refused it",
    "database_missing": "check the database name in database_url; if the database was dropped, "
                        "restore it from the latest backup (§5.1) and page the database team",
    "too_many_connections": "connection slots are exhausted: run the connection-pool-exhaustion "
                            "playbook to see who holds them, and keep pool_max_size × instances "
                            "below max_connections minus the reserved slots",
    "tls_error": "align TLS between client and server: sslmode in database_url against the "
                 "server's ssl setting, and the CA bundle and certificate host name for "
                 "verify-ca/verify-full",
    "unknown": "the connection failed for a reason outside the known causes: read the error and "
               "the PostgreSQL log, and page the on-call database team",
}, fallback="unknown")


# -- the steps --------------------------------------------------------------------------------

def _failure_code(ctx: RunContext) -> str | None:
    """The classification step 1 recorded: "none", a failure code, or None (not run)."""
    found = ctx.latest("database.connection")
    return found.evidence.get("failure") if found is not None else None


@check("database.connection")
def check_connection(ctx: RunContext,
                     connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§4.2 step 1 `psql -h postgres -U fraiseql_user -d fraiseql`, classified if it fails."""
    url = ctx.target.database_url()
    params = conninfo_to_dict(url)
    result = postgres.attempt(url, connect_timeout_s)
    evidence: dict[str, Any] = {
        "host": result.host or "(unix socket)", "port": result.port,
        "database": params.get("dbname"), "user": params.get("user"),
        "sslmode": params.get("sslmode", "prefer"), "connect_timeout_s": connect_timeout_s,
        "tcp": result.tcp.outcome if result.tcp else "skipped (unix socket)",
        "tcp_ms": result.tcp.elapsed_ms if result.tcp else None,
        "failure": result.failure.code, "sqlstate": result.failure.sqlstate,
        "certainty": result.failure.certainty, "error": result.error,
        "connect_ms": result.connect_ms, "ssl": result.ssl,
    }
    if result.failure.code == "none":
        return ctx.result(Status.OK,
                          f"connected to {evidence['database']} as {evidence['user']} in "
                          f"{result.connect_ms} ms{' over TLS' if result.ssl else ''}", evidence)
    return ctx.result(Status.CRITICAL,
                      f"the application role cannot connect ({result.failure.code}): "
                      f"{result.failure.explanation}", evidence,
                      VOCABULARY.remediation[result.failure.code])


def check_version(ctx: RunContext,
                  connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§4.2 step 2 `SELECT version();`, and whether database_url reaches a primary; skipped
    when step 1 found that the application role cannot connect."""
    code = _failure_code(ctx)
    if code != "none":
        return database.check_version.skip(
            ctx, f"the application role cannot connect ({code or 'step 1 not run'}), so no "
                 "session can run SELECT version()")
    return database.check_version(ctx, connect_timeout_s=connect_timeout_s)


def check_database_exists(ctx: RunContext,
                          connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§4.2 step 3: the database in `pg_database`, through the admin URL when the application
    role cannot get in (a missing database, a rejected role or full slots)."""
    code = _failure_code(ctx)
    if code in ("server_down", "network_timeout"):
        return database.check_database_exists.skip(
            ctx, f"the server cannot be reached ({code})")
    return database.check_database_exists(ctx, connect_timeout_s,
                                          app_role_failure=code or "connection not classified")


@check("database.replica")
def check_replica(ctx: RunContext, connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S,
                  rpo_seconds: float = DEFAULT_RPO_S) -> Finding:
    """§4.2 step 4 "If replica available": reachable, in recovery, and how far behind.

    Measured as check_postgres hot_standby_delay does (`database.replication_delay`): bytes
    against the primary's WAL position and seconds since the last replayed commit while the
    primary has written what is not replayed; a paused replay is a warning by itself. With
    the primary answering, a delay beyond the RPO is critical (warning from the catalogue's
    share of it); with the primary gone the time since the last replayed commit is all there
    is, and it overstates the loss when the primary was idle, so it stays a warning.
    """
    if not ctx.target.get("replica_database_url"):
        return ctx.result(Status.INFO,
                          "no replica configured (replica_database_url): failover is not an "
                          "option for this target", {"configured": False})
    url = ctx.target.database_url("replica_database")
    host, port = postgres.endpoint(url)
    where = f"{host}:{port}" if host else "its unix socket"
    timeout = max(1, int(round(connect_timeout_s)))
    try:
        with postgres.connect(url, connect_timeout_s=timeout) as conn:
            row = database.standby_state(conn)
    except postgres.ConnectionFailed as exc:
        return ctx.result(Status.WARNING,
                          f"the replica at {where} does not answer: {exc}",
                          {"configured": True, "reachable": False, "host": host, "port": port,
                           "error": str(exc)},
                          "run this playbook against the replica's host to see why; without "
                          "it there is no failover")
    primary = _primary_state(ctx, timeout)
    delay = database.replication_delay(row, primary)
    lag = delay.seconds
    within = lag is not None and lag <= rpo_seconds
    evidence: dict[str, Any] = {
        "configured": True, "reachable": True, "host": host, "port": port, **row,
        "primary_answers": primary is not None,
        "behind_primary_bytes": delay.behind_bytes,
        "lag_s": None if lag is None else round(lag, 1), "lag_basis": delay.basis,
        "rpo_seconds": rpo_seconds, "within_rpo": bool(row["in_recovery"]) and within,
    }
    if not row["in_recovery"]:
        return ctx.result(Status.WARNING,
                          f"replica_database_url ({where}) answers but is not in recovery: it "
                          "is a primary (already promoted?)", evidence,
                          "find out who promoted it before writing to it: two primaries "
                          "split the data")
    gap = row["replay_gap_bytes"]
    facts = f"{gap if gap is not None else '?'} bytes received but not replayed"
    if lag is None:
        return ctx.result(Status.WARNING,
                          f"the replica at {where} is in recovery but its lag cannot be "
                          f"measured (no transaction replayed since it started); {facts}",
                          evidence, "compare pg_last_wal_replay_lsn() on the replica with "
                          "the primary's pg_current_wal_lsn() once the primary answers")
    summary = (f"the replica at {where} is in recovery, {delay.describe()} against an RPO "
               f"of {rpo_seconds:g} s ({delay.basis}); {facts}")
    if primary is not None:
        status = database.grade_delay(delay, rpo_seconds * WARNING_SHARE_OF_RPO, rpo_seconds)
    else:
        status = Status.WARNING if delay.paused or not within else Status.OK
    if status is Status.OK:
        return ctx.result(status, summary, evidence)
    if delay.paused:
        remediation = ("replay is paused on the replica: SELECT pg_wal_replay_resume(); there "
                       "(after finding who paused it) before relying on it for failover")
    elif primary is not None:
        remediation = ("the replica is not keeping up: read its log for replay conflicts, "
                       "I/O or a broken WAL receiver; a failover now loses the writes since "
                       "last_replay_at")
    else:
        remediation = ("the lag counts from the last replayed transaction: on an idle or "
                       "failed primary it overstates what is missing; judge with "
                       "last_replay_at")
    return ctx.result(status, summary, evidence, remediation)


def _primary_state(ctx: RunContext, timeout: int) -> dict[str, Any] | None:
    """The primary's WAL position (after the replica's, so the gap is never negative), or
    None when step 1 found that it does not answer the application role."""
    if _failure_code(ctx) != "none":
        return None
    try:
        with postgres.connect(ctx.target.database_url(), connect_timeout_s=timeout) as conn:
            return database.primary_state(conn)
    except postgres.ConnectionFailed:
        return None


@check("failover.recommendation")
def recommend_failover(ctx: RunContext, rpo_seconds: float = DEFAULT_RPO_S) -> Finding:
    """§4.2 step 4 "Failover: if replica available, switch connection string" (§5.2 steps 2-3),
    as a recommendation: the commands are recorded, never run (the failover runbook runs them
    with execute=True and confirm=<target>)."""
    code = _failure_code(ctx)
    replica = ctx.latest("database.replica")
    rep = replica.evidence if replica is not None else {}
    if code == "none":
        return ctx.result(Status.INFO,
                          "no failover: the primary answers", {"recommended": False})
    if code not in ("server_down", "network_timeout"):
        return ctx.result(Status.INFO,
                          f"no failover: {code} would follow the service to a replica "
                          "(fix the cause on the primary)",
                          {"recommended": False, "failure": code})
    if not rep.get("configured"):
        return ctx.result(Status.INFO,
                          "no failover possible: no replica is configured; restore the "
                          "primary (or from backup, §5.2)", {"recommended": False})
    if not rep.get("reachable") or not rep.get("in_recovery"):
        return ctx.result(Status.WARNING,
                          "no failover: the replica is not a reachable standby (see the replica "
                          "step)", {"recommended": False, "failure": code},
                          "restore the primary, or repair the replica before failing over")
    if not rep.get("within_rpo"):
        return ctx.result(Status.WARNING,
                          f"failover not recommended automatically: the replica's lag "
                          f"({rep.get('lag_s')} s) is not known to be within the RPO of "
                          f"{rpo_seconds:g} s", {"recommended": False, "lag_s": rep.get("lag_s"),
                                                "rpo_seconds": rpo_seconds},
                          "decide with the incident lead whether the writes at risk are "
                          "acceptable; then use the failover runbook")
    replica_url = str(ctx.target.get("replica_database_url"))  # without its password
    # pg_promote() needs a superuser (or a granted role): the replica's admin URL when known
    admin_url = str(ctx.target.get("replica_admin_database_url") or replica_url)
    promote = f"psql '{admin_url}' -c '{PROMOTE_SQL}'"
    switch = _switch_command(ctx, replica_url)
    for action in (ctx.action("promote_replica", promote, executed=False),
                   ctx.action("switch_connection_string", switch, executed=False)):
        print(repr(action))  # the responder sees the exact commands under the cell
    return ctx.result(Status.INFO,
        f"failover recommended: the primary is unreachable ({code}) and the replica is a "
        f"standby {rep.get('lag_s')} s behind, within the RPO of {rpo_seconds:g} s. Not run "
        "here: execution belongs to the failover runbook",
        {"recommended": True, "failure": code, "lag_s": rep.get("lag_s"),
         "rpo_seconds": rpo_seconds, "promote": promote, "switch": switch},
        "run the failover runbook (execute=True, confirm=<target>), which promotes the replica "
        "and switches the connection string as recorded in the actions")


def _switch_command(ctx: RunContext, replica_url: str) -> str:
    """§5.2 step 3 `sed -i "s/primary:5432/replica:5432/" config` for this target."""
    primary_host, primary_port = postgres.endpoint(str(ctx.target.require("database_url")))
    replica_host, replica_port = postgres.endpoint(replica_url)
    config_path = ctx.target.get("config_path")
    old, new = f"{primary_host}:{primary_port}", f"{replica_host}:{replica_port}"
    if config_path:
        command = f"sed -i 's#{old}#{new}#' '{config_path}'"
    else:
        command = f"point the server's DATABASE_URL at {new} (was {old})"
    restart = ctx.target.get("restart_command")
    if restart:
        command += f" && {restart}"
    return command + f"  # and database_url of target {ctx.target_name} in the inventory"


@check("manual")
def manual_steps(ctx: RunContext) -> list[Finding]:
    """§4.2 steps 5-6: page the on-call database team, update the status page. A person does
    these; they are recorded so the timeline shows they were called for."""
    code = _failure_code(ctx)
    if code == "none":
        return [ctx.record("manual.page_database_team", Status.INFO,
                           "no page needed: the database answers", {"needed": False}),
                ctx.record("manual.status_page", Status.INFO,
                           "no status-page update needed for the database", {"needed": False})]
    cause = code or "unknown"
    return [
        ctx.record("manual.page_database_team", Status.INFO,
                   f"page the on-call database team now (§4.2 step 5): cause {cause}, with "
                   "this report's findings", {"needed": True, "cause": cause},
                   "page them and note the time in the incident"),
        ctx.record("manual.status_page", Status.INFO,
                   "update the status page (§4.2 step 6): the API is degraded or down while "
                   "its database is unavailable", {"needed": True},
                   "post an update, and again when the database is back"),
    ]


# -- the diagnosis ----------------------------------------------------------------------------

def candidates(ctx: RunContext) -> list[Candidate]:
    """The root causes the recorded steps support, for `diagnosis.conclude`."""
    found = ctx.latest("database.connection")
    if found is None or found.status is Status.UNKNOWN:
        return []
    ev = found.evidence
    code = ev.get("failure")
    keep = {k: ev.get(k) for k in ("host", "port", "tcp", "sqlstate", "error", "connect_ms")}
    if code == "none":
        return [Candidate("none", 1.0, "the application role connected and the server "
                          "answered", keep)]
    out: list[Candidate] = []
    if code in VOCABULARY.remediation and code != "unknown":
        reason = found.summary.split(": ", 1)[-1]
        out.append(Candidate(code, float(ev.get("certainty") or 0.9), reason, keep))
    exists = ctx.latest("database.exists")
    if exists is not None and exists.status is Status.CRITICAL:
        out = [c for c in out if c.code != "database_missing"]
        out.append(Candidate("database_missing", 1.0, exists.summary, exists.evidence))
    return out
