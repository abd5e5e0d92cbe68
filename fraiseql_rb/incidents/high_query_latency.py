"""Runbook §4.1 "High Query Latency": how slow, and which of the four causes.

§4.1: symptoms P99 > 5 s; causes database slow query, connection pool exhausted, network
latency, complex query; resolution 1. the database slow query log, 2. the connection pool
(`SHOW max_connections`), 3. network latency (`mtr` to the database), 4. `EXPLAIN ANALYZE`,
5. caching or query optimisation. Lock waits are added: a statement queued behind a lock is a
common "slow query" that a slow-query log shows only once it finally ends.

**The window.** `sampling.Window`, as in the high-error-rate playbook: the percentiles come from
the duration histogram over the window — Prometheus over the last `window_s` (at least four
scrape intervals) when the target's Prometheus holds the job's current series, else two
scrapes `window_s` apart — and
while the window runs, PostgreSQL is read at both ends (`pg_stat_statements`, whose difference
is what ran *in* the window) and at every tick (active sessions and blocked/blocking pairs),
through `admin_database_url` when the inventory has it (it sees every role's statements).
Requests still running when the window closes are not in the histogram yet; the lock and
activity samples see them.

**Safety.** Every session is read-only with timeouts. `explain_query` is planned with plain
`EXPLAIN`, which never runs it. `EXPLAIN (ANALYZE, BUFFERS)` *runs the query* and happens only
with `execute=True` (still in a read-only session, so a write is refused); either way it is
recorded as the action `explain_analyze`. Both are run with `FORMAT JSON`: the cost, rows,
times and sequential scans are read from the plan tree (`pgplan`), and the responder sees the
usual text form rendered from it.

**Diagnosis** (`candidates`), scores in [0, 1], the highest at or above 0.5 wins:
- `lock_contention`: sessions waiting on a lock held by another: 0.6 at the warning wait
  (`lock_wait_warning_s`, 1 s), rising to 0.95 at the critical one (5 s) and beyond;
- `database_slow_query`: statements whose mean time in the window is at least `slow_ms`
  (0.9; 0.75 when they ran only once), else the server's own database-time p95 at least
  `slow_ms` (0.8; x 0.6 when lock waits explain it), else long statements still running (0.6);
- `connection_pool_exhausted`: requests waiting for a pool connection with the pool at its
  maximum (0.9), waiting alone or >= 80 % of the pool in use (0.65), PostgreSQL's connection
  slots >= 80 % used (0.7); x 0.6 when lock waits or slow statements explain why connections
  are held (then the pool is the symptom);
- `network_latency`: median TCP connect time to the database at or above the warning (0.7)
  or critical (0.85) line of `NETWORK_RTT_MS`; x 0.85 for the path to the server;
- `complex_query`: mean estimated cost per query at or above `complexity_warning` (0.7), or the
  EXPLAIN of `explain_query` costing at least `EXPLAIN_COST_HIGH` (0.75);
- `none`: latency within the §6.1/§3.2 lines and no cause above: 0.8; if latency is high and
  no cause stands out, `none` at 0.5 with the status raised to warning; if latency could not
  be measured and no cause shows, `none` with the status `unknown` (`verdict_status`).
"""

from __future__ import annotations

import re
import statistics
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import psycopg
from matplotlib.figure import Figure
from psycopg import sql

from fraiseql_rb.checks import config
from fraiseql_rb.core import plots, releases, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary, sampled_status
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import metrics, pgplan, pgstats, postgres, service
from fraiseql_rb.targets.sampling import (
    NO_SOURCE,
    PROMETHEUS,
    DatabaseProbe,
    Window,
    clean,
    collect,
    failed_window,
    record_source,
    records,
    stats_url,
    unmeasured,
)

# -- limits: defined (value, unit, why) in thresholds.CATALOGUE, named here for this module -----

SLOW_STATEMENT_MS = thresholds.SLOW_STATEMENT_MS  # mean time in the window that is slow
LOCK_WAIT_S = thresholds.LOCK_WAIT_S  # seconds waiting for a lock
NETWORK_RTT_MS = thresholds.NETWORK_RTT_MS  # ms per TCP connect
COMPLEXITY_WARNING = thresholds.COMPLEXITY_WARNING  # estimated cost units per query, on average
EXPLAIN_COST_HIGH = thresholds.EXPLAIN_COST_HIGH  # planner cost of one statement
POOL_BUSY_SHARE = thresholds.POOL_OF_MAX_CONNECTIONS.warning  # §6.1 "> 80 % pool capacity"
OWN_APPLICATION = postgres.APPLICATION_NAME  # our own sessions (postgres.session)
MARKER = "/* fraiseql-rb */"  # on our statistics SQL, so pg_stat_statements can leave it out

VOCABULARY = Vocabulary("high-query-latency", {
    "none": "latency is within the §6.1/§3.2 lines and no cause shows; if users still see slow "
            "answers, measure from their side (network, client) and rerun during the next "
            "occurrence with a longer window_s",
    "database_slow_query": "take the slowest statement from the slow-statements table, rerun "
                           "with explain_query set to it (and execute=True to see where the "
                           "time goes), then add the missing index or rewrite it; end runaway "
                           "statements with pg_cancel_backend(pid) (a DBA's decision)",
    "lock_contention": "find why the blocking session holds its lock (the pid and query are in "
                       "the lock-waits table): have its owner commit or roll back, or end it "
                       "with pg_terminate_backend(pid), which rolls its transaction back (a "
                       "DBA's decision); then shorten the transactions that take such locks",
    "connection_pool_exhausted": "run the connection-pool-exhaustion playbook (fraiseql-rb "
                                 "run connection-pool-exhaustion): it shows who holds the "
                                 "connections (idle-in-transaction leaks, long statements); "
                                 "raise pool_max_size only if max_connections has room (§6.1: "
                                 "scale when connections exceed 80 % of capacity)",
    "network_latency": "the path to the database (or server) is slow: check the route and the "
                       "hosts' network (mtr to the database host), and keep the server in the "
                       "database's zone",
    "complex_query": "queries ask for too much per request: set a query complexity/depth limit, "
                     "paginate, cache the heavy queries (§4.1 step 5), and optimise the plan "
                     "EXPLAIN shows",
}, fallback="none", severity={"network_latency": Status.WARNING,
                              "complex_query": Status.WARNING})


# -- what is read from PostgreSQL during the window --------------------------------------------

PGSS_SCHEMA_SQL = f"""{MARKER}
SELECT n.nspname AS schema, current_setting('server_version_num')::int AS version_num
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

# {schema} and {total} are identifiers (the extension's schema; total_exec_time from 13 on,
# total_time before), filled with psycopg.sql, never with text.
STATEMENTS_SQL = MARKER + """
SELECT queryid::text AS queryid, left(query, 1000) AS query, calls, {total} AS total_ms, rows,
       shared_blks_hit, shared_blks_read
FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND queryid IS NOT NULL
"""


def statements_snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """pg_stat_statements for this database, keyed by queryid; `installed` False without it."""
    found = postgres.one(conn, PGSS_SCHEMA_SQL)
    if not found:
        return {"installed": False, "reason": "the pg_stat_statements extension is not "
                                              "installed in this database"}
    total = "total_exec_time" if found["version_num"] >= 130000 else "total_time"
    query = sql.SQL(STATEMENTS_SQL).format(schema=sql.Identifier(found["schema"]),
                                           total=sql.Identifier(total))
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
    except psycopg.Error as exc:  # e.g. created but not in shared_preload_libraries
        return {"installed": False, "reason": secrets.mask(postgres.first_line(exc))}
    return {"installed": True, "at": datetime.now(UTC),
            "statements": {r["queryid"]: r for r in rows}}


ACTIVITY_SQL = MARKER + """
SELECT pid, usename AS "user", coalesce(application_name, '') AS application, state,
       wait_event_type, wait_event,
       EXTRACT(EPOCH FROM now() - query_start)::float8 AS running_s,
       EXTRACT(EPOCH FROM now() - xact_start)::float8 AS xact_s,
       left(query, 1000) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND state IS DISTINCT FROM 'idle'
"""

# Every (blocked, blocking) pair, via pg_blocking_pids(). The wait starts at pg_locks.waitstart
# (PostgreSQL 14+; {since} is NULL before), else at the blocked statement's start.
LOCK_PAIRS_SQL = MARKER + """
SELECT w.pid AS blocked_pid, w.usename AS blocked_user,
       coalesce(w.application_name, '') AS blocked_application,
       EXTRACT(EPOCH FROM now() - coalesce(lw.since, w.query_start))::float8 AS waiting_s,
       w.wait_event AS waiting_for, left(w.query, 1000) AS blocked_query,
       b.pid AS blocking_pid, b.usename AS blocking_user,
       coalesce(b.application_name, '') AS blocking_application, b.state AS blocking_state,
       EXTRACT(EPOCH FROM now() - b.xact_start)::float8 AS blocking_xact_s,
       left(b.query, 1000) AS blocking_query,
       cardinality(pg_blocking_pids(b.pid)) = 0 AS blocking_is_root,
       (SELECT string_agg(DISTINCT g.mode || ' on ' || coalesce(g.relation::regclass::text,
                                                                g.locktype), ', ')
          FROM pg_locks g
         WHERE g.pid = b.pid AND g.granted
           AND (g.database IS NULL OR g.database = (SELECT oid FROM pg_database
                                                     WHERE datname = current_database()))
           AND g.locktype IN ('relation', 'tuple', 'transactionid', 'advisory'))
           AS blocking_locks
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
LEFT JOIN LATERAL (SELECT {since} AS since FROM pg_locks l
                    WHERE l.pid = w.pid AND NOT l.granted) AS lw ON true
WHERE w.wait_event_type = 'Lock'
ORDER BY waiting_s DESC NULLS LAST
"""


def lock_pairs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Blocked/blocking session pairs now, longest wait first."""
    since = sql.SQL("min(l.waitstart)" if conn.info.server_version >= 140000
                    else "NULL::timestamptz")
    query = sql.SQL(LOCK_PAIRS_SQL).format(since=since)
    with conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def _tick(conn: psycopg.Connection) -> dict[str, Any]:
    return {"at": datetime.now(UTC), "activity": postgres.rows(conn, ACTIVITY_SQL),
            "locks": lock_pairs(conn)}


def _after(conn: psycopg.Connection) -> dict[str, Any]:
    """Read after the window's last statements snapshot, so it is not counted in it."""
    return {"connections": records(pgstats.connections(conn))}


# -- step 1: the window ------------------------------------------------------------------------

def sample(ctx: RunContext, window_s: float = thresholds.METRICS_WINDOW_S,
           lookback: str = "1h") -> Window:
    """Sample the window (see the module doc) and record where the numbers come from. Never
    raises: a window that could not be taken is `unknown`."""
    try:
        probe = DatabaseProbe(at_ends=statements_snapshot, each_tick=_tick, after=_after)
        w = collect(ctx, window_s, lookback, probe=probe)
    except Exception as exc:  # noqa: BLE001 - the source finding carries the reason
        w = failed_window(ctx, window_s, lookback, exc)
    w.finding = record_source(ctx, w, "latency.source")
    return w


def _require(w: Window, what: str = "metrics") -> None:
    if not isinstance(w, Window):
        raise RunbookError("no sampling window (the sample step did not run)")
    if w.error:
        raise RunbookError(f"the window could not be taken: {w.error}")
    if what == "metrics" and w.source == NO_SOURCE:
        raise RunbookError("no metrics were sampled (see the source finding above)")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# -- step 2: percentiles -----------------------------------------------------------------------

def percentile_table(w: Window) -> pd.DataFrame:
    """p50/p95/p99 (ms) of GraphQL queries overall and per operation, of the server's database
    statements and of HTTP requests, over the window."""
    rows = []

    def row(measure: str, concept: str, count: float | None, **labels: str) -> None:
        rows.append({"measure": measure, "observed": None if count is None else round(count, 1),
                     **{f"p{int(q * 100)}_ms": _ms(w.quantile(concept, q, **labels))
                        for q in (0.5, 0.95, 0.99)}})

    row("GraphQL queries (all)", "query_duration", w.increase("query_duration"))
    counts = w.increase_by("query_duration", "operation")
    for op, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        if count > 0:
            row(f"  operation {op or '(none)'}", "query_duration", count, operation=op)
    row("database statements (server's view)", "db_query_duration",
        w.increase("db_query_duration"))
    row("HTTP requests", "http_request_duration", w.increase("http_request_duration"))
    return pd.DataFrame(rows, columns=["measure", "observed", "p50_ms", "p95_ms", "p99_ms"])


def in_flight(ctx: RunContext, w: Window) -> dict[str, Any]:
    """Requests the histogram has not counted yet: the server's own statements still active
    (their ages, lock waits among them) in the window's database samples, and requests waiting
    for a pool connection (`fraiseql_db_pool_requests_waiting` where the release exports it).
    A request stuck behind a lock is the slowest of all and appears in no bucket until it
    ends."""
    role = postgres.url_user(ctx.target.database_url()) if ctx.target is not None else None
    oldest: dict[int, dict[str, Any]] = {}
    for tick in w.db.get("ticks") or []:
        for a in tick.get("activity") or []:
            if (a.get("state") != "active" or a.get("user") != role
                    or a.get("application") == OWN_APPLICATION or a.get("running_s") is None):
                continue
            if a["pid"] not in oldest or a["running_s"] > oldest[a["pid"]]["running_s"]:
                oldest[a["pid"]] = a
    ages = sorted((a["running_s"] for a in oldest.values()), reverse=True)
    waiting = w.gauge("pool_waiting", "max") if w.last is not None else None
    return {"role": role, "sessions": len(ages),
            "lock_waiting": sum(1 for a in oldest.values()
                                if a.get("wait_event_type") == "Lock"),
            "oldest_ms": _ms(ages[0]) if ages else None, "pool_waiting_max": waiting}


@check("latency.percentiles")
def latency_percentiles(ctx: RunContext, w: Window,
                        p95_warning_ms: float = thresholds.RESPONSE_TIME_MS.warning,
                        p99_critical_ms: float = thresholds.RESPONSE_TIME_MS.critical
                        ) -> Finding:
    """GraphQL query latency in the window against §6.1 (P95 > 2 s: scale) and §3.2 (P99 > 5 s:
    HighQueryLatency). The histogram's last bucket is 5 s, so a p99 of 5000 ms means "5 s or
    more"."""
    _require(w)
    table = percentile_table(w)
    overall = clean(table.iloc[0].to_dict())
    db = clean(table[table["measure"].str.startswith("database")].iloc[0].to_dict())
    per_op = table[table["measure"].str.startswith("  operation")]
    evidence = {
        "source": w.source, "seconds": w.seconds, "observed": overall["observed"],
        "p50_ms": overall["p50_ms"], "p95_ms": overall["p95_ms"], "p99_ms": overall["p99_ms"],
        "db_p50_ms": db["p50_ms"], "db_p95_ms": db["p95_ms"],
        "per_operation": clean([{"operation": r.measure.strip().removeprefix("operation "),
                                 "observed": r.observed, "p95_ms": r.p95_ms,
                                 "p99_ms": r.p99_ms} for r in per_op.itertuples()]),
        "p95_warning_ms": p95_warning_ms, "p99_critical_ms": p99_critical_ms,
    }
    flight = in_flight(ctx, w)
    evidence["in_flight"] = flight
    oldest = flight["oldest_ms"] or 0.0
    stuck = (f"; {flight['sessions']} of the server's statements still running, the oldest "
             f"{oldest:g} ms ({flight['lock_waiting']} waiting on a lock)"
             if flight["sessions"] else "")
    if flight["pool_waiting_max"]:
        stuck += f"; {flight['pool_waiting_max']:g} request(s) waiting for a pool connection"
    flight_status = (Status.CRITICAL if oldest >= p99_critical_ms else
                     Status.WARNING if oldest > p95_warning_ms or flight["pool_waiting_max"]
                     else Status.OK)
    if flight_status is not Status.OK and (not overall["observed"]
                                           or overall["p50_ms"] is None):
        return ctx.result(flight_status,
                          f"no GraphQL query completed in {w.describe()}, but requests are "
                          f"stuck{stuck}", evidence,
                          "find what holds them in the steps below (lock waits, pool)",
                          table=table)
    if not overall["observed"] or overall["p50_ms"] is None:
        return ctx.result(Status.INFO,
                          f"no GraphQL query completed in {w.describe()}: nothing to take "
                          "percentiles of (requests still running are not counted)", evidence,
                          "check whether requests hang (lock waits, pool) in the steps below",
                          table=table)
    p95, p99 = overall["p95_ms"] or 0.0, overall["p99_ms"] or 0.0
    beyond = " (the histogram's last bucket: 5 s or more)" if p99 >= 5000 else ""
    summary = (f"p50 {overall['p50_ms']:g} ms, p95 {p95:g} ms, p99 {p99:g} ms{beyond} over "
               f"{overall['observed']:g} queries ({w.describe()})")
    if p99 >= p99_critical_ms:
        status, remediation = Status.CRITICAL, "find the cause in the steps below (§4.1)"
    elif p95 > p95_warning_ms:
        status, remediation = Status.WARNING, ("find the cause below; §6.1 says scale up when "
                                               "P95 stays above 2 s")
    else:
        status, remediation = Status.OK, None
    if _RANK[flight_status] > _RANK[status]:  # in-flight requests count in the verdict
        status, remediation = flight_status, ("requests are stuck right now: find what holds "
                                              "them in the steps below (lock waits, pool)")
    summary += stuck
    slowest = per_op.sort_values("p95_ms", ascending=False).head(1)
    if not slowest.empty and status is not Status.OK:
        summary += f"; slowest operation {slowest.iloc[0]['measure'].strip()}"
    return ctx.result(status, summary, evidence, remediation,
                      table=table)


LATENCY_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_RANK = {Status.INFO: -1, Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2,
         Status.CRITICAL: 3}


@check("latency.history")
def latency_history(ctx: RunContext, w: Window,
                    p95_warning_ms: float = thresholds.RESPONSE_TIME_MS.warning,
                    p99_critical_ms: float = thresholds.RESPONSE_TIME_MS.critical) -> Figure:
    """p50/p95/p99 over `lookback` from Prometheus with the §6.1 (2 s) and §3.2 (5 s) lines; the
    window's percentiles as bars when there is no Prometheus."""
    _require(w)
    lines = plots.latency_lines(p95_warning_ms / 1000, p99_critical_ms / 1000)
    s = w.series("query_duration") if w.source == PROMETHEUS else None
    if s is None or s.kind != "histogram":
        found = ctx.latest("latency.percentiles")
        ev = found.evidence if found is not None else {}
        ctx.result(Status.INFO,
                   f"no history: {w.prometheus_note}; the window's percentiles are drawn",
                   {"source": w.source})
        values = pd.Series({k: (ev.get(f"{k}_ms") or 0) / 1000 for k in LATENCY_QUANTILES},
                           name="latency")
        return plots.bar(values, title=f"GraphQL latency ({w.describe()}; no Prometheus "
                         "history)", xlabel="percentile", ylabel="latency (s)",
                         thresholds=lines, si_unit="s")
    bucket = s.selector("_bucket")
    frame = w.history({k: f"histogram_quantile({q}, sum by (le) (rate({bucket}[{{rate}}])))"
                       for k, q in LATENCY_QUANTILES.items()})
    p99 = frame[frame["series"] == "p99"].sort_values("time")
    peak = p99["value"].max() if not p99.empty else None
    since = None
    warning_s = p95_warning_ms / 1000
    p95 = frame[frame["series"] == "p95"].sort_values("time")
    if not p95.empty and p95["value"].iloc[-1] > warning_s:
        below = p95[p95["value"] <= warning_s]
        after = p95[p95["time"] > below["time"].max()] if not below.empty else p95
        since = after["time"].min()
    evidence = {"range": w.range_text, "points": len(frame),
                "peak_p99_ms": _ms(peak) if peak is not None else None,
                "p95_above_warning_since": since.to_pydatetime() if since is not None else None}
    summary = (f"over the last {w.range_text}: p99 peaked at {_ms(peak):g} ms"
               if peak is not None else f"no latency history over {w.range_text}")
    if since is not None:
        summary += f"; p95 above {warning_s:g} s since {since:%H:%M:%S} UTC"
    ctx.result(Status.INFO, summary, evidence)
    return plots.timeseries(frame, title=f"GraphQL query latency, last {w.range_text} "
                            "(Prometheus)", ylabel="latency (s)", thresholds=lines,
                            si_unit="s")


# -- §4.1 step 1: slow statements --------------------------------------------------------------

def statement_deltas(w: Window) -> pd.DataFrame | None:
    """What pg_stat_statements counted between the window's ends, slowest total first; None
    when it is not available."""
    start, end = w.db.get("start") or {}, w.db.get("end") or {}
    if not (start.get("installed") and end.get("installed")):
        return None
    before = start["statements"]
    rows = []
    for qid, after in end["statements"].items():
        if after["query"].startswith(MARKER):
            continue
        prior = before.get(qid, {})
        calls = int(after["calls"]) - int(prior.get("calls", 0))
        total = float(after["total_ms"]) - float(prior.get("total_ms", 0.0))
        if calls <= 0 or total < 0:
            continue
        rows.append({"query": after["query"], "calls": calls, "mean_ms": round(total / calls, 1),
                     "total_ms": round(total, 1), "rows": int(after["rows"]) -
                     int(prior.get("rows", 0)), "queryid": qid})
    frame = pd.DataFrame(rows, columns=["query", "calls", "mean_ms", "total_ms", "rows",
                                        "queryid"])
    all_ms = frame["total_ms"].sum()
    frame["share_of_db_time"] = (frame["total_ms"] / all_ms).round(3) if all_ms else 0.0
    return frame.sort_values("total_ms", ascending=False).reset_index(drop=True)


def long_running(w: Window) -> pd.DataFrame:
    """Statements seen active during the window (not waiting on a lock), longest first."""
    seen: dict[int, dict[str, Any]] = {}
    for tick in w.db.get("ticks") or []:
        for a in tick.get("activity") or []:
            if (a.get("state") != "active" or a.get("wait_event_type") == "Lock"
                    or a.get("application") == OWN_APPLICATION or a.get("running_s") is None):
                continue
            if a["pid"] not in seen or a["running_s"] > seen[a["pid"]]["running_s"]:
                seen[a["pid"]] = a
    rows = [{"pid": a["pid"], "user": a["user"], "application": a["application"],
             "running_s": round(a["running_s"], 1), "wait_event": a.get("wait_event"),
             "query": a.get("query")} for a in seen.values()]
    frame = pd.DataFrame(rows, columns=["pid", "user", "application", "running_s",
                                        "wait_event", "query"])
    return frame.sort_values("running_s", ascending=False).reset_index(drop=True)


@check("latency.slow_statements")
def slow_statements(ctx: RunContext, w: Window, slow_ms: float = SLOW_STATEMENT_MS,
                    top: int = thresholds.TOP_N) -> Finding:
    """§4.1 step 1 "Check database slow query log": what PostgreSQL ran in the window
    (pg_stat_statements), slowest first, and the statements seen running during it."""
    _require(w, "database")
    deltas = statement_deltas(w)
    running = long_running(w)
    long_now = running[running["running_s"] * 1000 >= slow_ms]
    evidence: dict[str, Any] = {"slow_ms": slow_ms, "role": w.db_role,
                                "statistics_error": w.db_error}
    if deltas is not None:
        slow = deltas[deltas["mean_ms"] >= slow_ms]
        evidence.update({"source": "pg_stat_statements", "statements": len(deltas),
                         "db_time_ms": round(float(deltas["total_ms"].sum()), 1),
                         "slow": records(slow.head(top).drop(columns=["queryid"])),
                         "slow_share_of_db_time": round(float(slow["share_of_db_time"].sum()),
                                                        3)})
        table = deltas.head(top).drop(columns=["queryid"])
    else:
        end = w.db.get("end") or {}
        evidence.update({"source": "pg_stat_activity samples",
                         "pg_stat_statements": end.get("reason") or w.db_error})
        slow = pd.DataFrame()
        table = running.head(top)
    evidence["long_running"] = records(long_now.head(top))
    if w.db_error and not w.db.get("end"):
        raise RunbookError(f"the database statistics could not be read: {w.db_error}")
    parts = []
    if not slow.empty:
        first = slow.iloc[0]
        parts.append(f"{len(slow)} statement(s) averaged >= {slow_ms:g} ms in the window, the "
                     f"slowest {first['mean_ms']:g} ms x {first['calls']} calls: "
                     f"{_one_line(first['query'])}")
    if not long_now.empty:
        first = long_now.iloc[0]
        parts.append(f"{len(long_now)} statement(s) running >= {slow_ms / 1000:g} s, the "
                     f"longest {first['running_s']:g} s (pid {first['pid']}, "
                     f"{first['application'] or first['user']}): {_one_line(first['query'])}")
    if parts:
        return ctx.result(Status.WARNING, "; ".join(parts), evidence,
                          "rerun with explain_query set to the slowest statement (placeholders "
                          "replaced with values); pg_cancel_backend(pid) ends a runaway one",
                          table=table)
    source = evidence["source"]
    count = f"{len(deltas)} statements ran, " if deltas is not None else ""
    return ctx.result(Status.OK,
                      f"no slow statement: {count}none averaged {slow_ms:g} ms or more "
                      f"({source})", evidence, table=table)


def _one_line(text: Any, limit: int = 120) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- §4.1 step 2: the pool ---------------------------------------------------------------------

def pool_max(ctx: RunContext) -> tuple[int, str]:
    """The server's pool maximum: the admin API, else the config file, else v2's default."""
    token = ctx.target.admin_token() if ctx.target.has("admin_token") else None
    if token:
        with service.client(ctx) as http:
            p = service.probe(http, "GET", f"{ctx.target.fraiseql_url}/admin/v1/health/detailed",
                              token=token)
        if p.status_code == 200 and isinstance(p.body, dict) and p.body.get("pool_max"):
            return int(p.body["pool_max"]), "admin API /admin/v1/health/detailed"
    size, source = config.pool_max(ctx.target.get("config_path"))
    if size is not None:
        return int(size), source
    return thresholds.V2_DEFAULT_POOL_MAX, "v2 default pool_max_size (assumed)"


@check("latency.pool")
def pool_pressure(ctx: RunContext, w: Window,
                  busy_share: float = POOL_BUSY_SHARE) -> Finding:
    """§4.1 step 2 "Verify connection pool: SHOW max_connections": requests waiting for a
    connection, active against the pool maximum, and PostgreSQL's slots in use."""
    _require(w, "window")
    waiting, active = w.gauge("pool_waiting", "max"), w.gauge("pool_active", "max")
    total, idle = w.gauge("pool_total", "last"), w.gauge("pool_idle", "last")
    size, size_source = pool_max(ctx)
    conns = pd.DataFrame((w.db.get("after") or {}).get("connections") or [])
    pg: dict[str, Any] = {}
    if not conns.empty:
        max_conn = int(conns["max_connections"].iloc[0])
        reserved = int(conns["reserved_connections"].iloc[0])
        in_use = int(conns["connections"].sum())
        idle_tx = conns[conns["state"] == "idle in transaction"]
        pg = {"connections": in_use, "max_connections": max_conn, "reserved": reserved,
              "share": round(in_use / max(1, max_conn - reserved), 3),
              "idle_in_transaction": int(idle_tx["connections"].sum()),
              "idle_in_transaction_longest_s": _round(idle_tx["longest_in_state_s"].max())
              if not idle_tx.empty else None}
    evidence = {"pool_waiting_max": waiting, "pool_active_max": active, "pool_total": total,
                "pool_idle": idle, "pool_max": size, "pool_max_source": size_source,
                "pool_active_share": round(active / size, 3) if active is not None else None,
                "busy_share": busy_share, "postgres": pg}
    table = pd.DataFrame([
        {"measure": "requests waiting for a connection (max in window)", "value": waiting},
        {"measure": "pool connections in use (max in window)", "value": active},
        {"measure": f"pool maximum ({size_source})", "value": size},
        {"measure": "PostgreSQL connections in use", "value": pg.get("connections")},
        {"measure": "PostgreSQL max_connections less reserved",
         "value": (pg["max_connections"] - pg["reserved"]) if pg else None},
        {"measure": "sessions idle in transaction", "value": pg.get("idle_in_transaction")},
    ])
    if waiting is None and active is None and not pg:
        raise RunbookError("neither the pool gauges nor PostgreSQL's connections could be read")
    facts = (f"{_g(waiting)} requests waiting, {_g(active)} of {size} pool connections in use"
             if waiting is not None or active is not None else
             ("the server's pool gauges are unavailable: "
              + (metrics.unavailable("pool_waiting", "pool_active") if w.last is not None
                 else "no /metrics page was read")))
    facts += (f"; PostgreSQL {pg['connections']} of {pg['max_connections'] - pg['reserved']}"
              f" slots ({pg['share']:.0%})" if pg else "")
    if pg.get("idle_in_transaction"):
        facts += f", {pg['idle_in_transaction']} sessions idle in transaction"
    full = active is not None and active >= size
    if ((waiting or 0) > 0 and full) or (pg and pg["share"] >= 1):
        return ctx.result(Status.CRITICAL, f"pool exhausted: {facts}", evidence,
                          VOCABULARY.remediation["connection_pool_exhausted"], table=table)
    if (waiting or 0) > 0 or (active or 0) >= busy_share * size or (
            pg and pg["share"] >= busy_share):
        return ctx.result(Status.WARNING, f"pool under pressure: {facts}",
                          evidence, f"§6.1: connections above {busy_share:.0%} of capacity",
                          table=table)
    return ctx.result(Status.OK, f"pool has room: {facts}", evidence,
                      table=table)


def _g(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _round(value: Any, digits: int = 1) -> float | None:
    try:
        return None if value is None or pd.isna(value) else round(float(value), digits)
    except (TypeError, ValueError):
        return None


# -- lock waits ----------------------------------------------------------------------------------

def lock_table(w: Window, live: list[dict[str, Any]]) -> pd.DataFrame:
    """Blocked/blocking pairs seen during the window and now, each with its longest wait."""
    pairs: dict[tuple[int, int], dict[str, Any]] = {}
    ticks = [t.get("locks") or [] for t in (w.db.get("ticks") or [])] + [live]
    for rows in ticks:
        for r in rows:
            key = (r["blocked_pid"], r["blocking_pid"])
            if key not in pairs or (r["waiting_s"] or 0) >= (pairs[key]["waiting_s"] or 0):
                pairs[key] = r
    columns = ["blocked_pid", "blocked_application", "waiting_s", "blocked_query",
               "blocking_pid", "blocking_application", "blocking_state", "blocking_xact_s",
               "blocking_locks", "blocking_is_root", "blocking_query"]
    frame = pd.DataFrame(list(pairs.values()), columns=columns)
    for col in ("waiting_s", "blocking_xact_s"):
        frame[col] = frame[col].astype(float).round(1)
    return frame.sort_values("waiting_s", ascending=False).reset_index(drop=True)


@check("latency.lock_waits")
def lock_waits(ctx: RunContext, w: Window, warning_s: float = LOCK_WAIT_S.warning,
               critical_s: float = LOCK_WAIT_S.critical) -> Finding:
    """Sessions waiting for a lock another session holds (pg_locks via pg_blocking_pids()):
    both queries, how long each waits, and the root blocker."""
    _require(w, "window")
    url, role = stats_url(ctx)
    with postgres.connect(url) as conn:
        live = lock_pairs(conn)
    table = lock_table(w, live)
    if table.empty:
        return ctx.result(Status.OK,
                          "no session waited for a lock during the window or now",
                          {"pairs": [], "blocking_pids": [], "role": role})
    roots = table[table["blocking_is_root"].fillna(False).astype(bool)]
    root_pids = sorted(set(roots["blocking_pid"])) or sorted(set(table["blocking_pid"]))
    blocking = sorted(set(table["blocking_pid"]))
    max_wait = float(table["waiting_s"].max() or 0.0)
    worst = table.iloc[0]
    root = (roots.iloc[0] if not roots.empty else worst)
    evidence = {"pairs": records(table.head(20)), "blocking_pids": blocking,
                "root_blocking_pids": root_pids, "blocked_sessions":
                int(table["blocked_pid"].nunique()), "max_wait_s": round(max_wait, 1),
                "warning_s": warning_s, "critical_s": critical_s, "role": role}
    summary = (f"{evidence['blocked_sessions']} session(s) waited for locks, up to "
               f"{max_wait:.1f} s; root blocker pid {root['blocking_pid']} "
               f"({root['blocking_application'] or '?'}, {root['blocking_state']}, "
               f"transaction open {_g(_round(root['blocking_xact_s']))} s, holding "
               f"{root['blocking_locks'] or '?'}): {_one_line(root['blocking_query'], 80)}")
    remediation = (f"have the owner of pid {root['blocking_pid']} commit or roll back; or end "
                   f"it (a DBA's decision, its transaction is rolled back): SELECT "
                   f"pg_terminate_backend({root['blocking_pid']});")
    status = (Status.CRITICAL if max_wait >= critical_s else
              Status.WARNING if max_wait >= warning_s else Status.INFO)
    return ctx.result(status, summary, evidence, remediation,
                      table=table.drop(columns=["blocking_is_root"]))


# -- §4.1 step 3: network ---------------------------------------------------------------------

def _server_endpoint(url: str) -> tuple[str | None, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


@check("latency.network")
def network_latency(ctx: RunContext, samples: int = 5,
                    warning_ms: float = NETWORK_RTT_MS.warning,
                    critical_ms: float = NETWORK_RTT_MS.critical) -> Finding:
    """§4.1 step 3 "mtr to database": TCP connect round trips to the database's and the
    server's host:port, several each (a connect is one round trip; no ICMP needed)."""
    samples = max(1, min(int(samples), 50))
    targets = {"database": postgres.endpoint(ctx.target.database_url()),
               "server": _server_endpoint(ctx.target.fraiseql_url)}
    rows, evidence = [], {"samples": samples, "warning_ms": warning_ms,
                          "critical_ms": critical_ms}
    for name, (host, port) in targets.items():
        if host is None:
            rows.append({"endpoint": name, "address": "(unix socket)", "connected": 0,
                         "median_ms": None, "max_ms": None, "failures": 0})
            continue
        probes = [postgres.tcp_probe(host, port, 3.0) for _ in range(samples)]
        ok = [p.elapsed_ms for p in probes if p.outcome == "connected"]
        failed = [p for p in probes if p.outcome != "connected"]
        row = {"endpoint": name, "address": f"{host}:{port}", "connected": len(ok),
               "median_ms": round(statistics.median(ok), 2) if ok else None,
               "max_ms": round(max(ok), 2) if ok else None, "failures": len(failed)}
        if failed:
            row["error"] = failed[0].detail
        rows.append(row)
        evidence[name] = row
    table = pd.DataFrame(rows)
    measured = [r for r in rows if r["median_ms"] is not None]
    failing = [r for r in rows if r.get("failures")]
    text = "; ".join(f"{r['endpoint']} {r['address']}: median {r['median_ms']} ms, max "
                     f"{r['max_ms']} ms" for r in measured)
    if failing:
        return ctx.result(Status.CRITICAL,
                          "TCP connects failed: " + "; ".join(
                              f"{r['endpoint']}: {r.get('error')}" for r in failing),
                          evidence, "run the database-unavailable or service-down playbook",
                          table=table)
    worst = max((r["median_ms"] for r in measured), default=0.0)
    if worst >= critical_ms:
        status = Status.CRITICAL
    elif worst >= warning_ms:
        status = Status.WARNING
    else:
        status = Status.OK
    return ctx.result(status, f"TCP connect round trips: {text}", evidence,
                      None if status is Status.OK else VOCABULARY.remediation["network_latency"],
                      table=table)


# -- §4.1 step 4: EXPLAIN ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\d+")


def explain_statement(query: str, analyze: bool, *, as_json: bool = False) -> str:
    """The EXPLAIN of `query` (one statement, trailing semicolon dropped): `as_json` is the
    form the playbook runs and reads (`pgplan`); without it, the form a person types, which is
    the command recorded for the action."""
    text = query.strip().rstrip(";").strip()
    options = (["ANALYZE", "BUFFERS"] if analyze else []) + (["FORMAT JSON"] if as_json else [])
    return f"EXPLAIN ({', '.join(options)}) {text}" if options else f"EXPLAIN {text}"


def _plan_advice(seq_scans: list[dict[str, Any]]) -> str:
    """The remediation of an expensive plan, naming its costliest sequential scans."""
    advice = ("an expensive plan: look for sequential scans on large tables and missing "
              "indexes in the plan")
    if not seq_scans:
        return advice
    named = []
    for scan in seq_scans[:3]:
        read = (f", {scan['rows_read']} rows read" if scan.get("rows_read") is not None
                else f", ~{_g(scan.get('estimated_rows'))} rows out")
        named.append(f"{scan.get('relation')} (cost {_g(scan.get('total_cost'))}{read})")
    return f"{advice}; sequential scans here: {', '.join(named)}"


@check("latency.explain")
def explain(ctx: RunContext, query: str | None, *, cost_high: float = EXPLAIN_COST_HIGH
            ) -> Finding:
    """§4.1 step 4 "Profile query execution: EXPLAIN ANALYZE", as the application role in a
    read-only session. Plain EXPLAIN plans without running; EXPLAIN (ANALYZE, BUFFERS) runs
    the query and happens only with execute=True. Recorded as the action `explain_analyze`
    either way."""
    if not query or not str(query).strip():
        return ctx.result(Status.INFO,
                          "no explain_query given: set it to a slow statement from the "
                          "slow-statements step and rerun", {"query": None})
    query = str(query)
    analyze_command = explain_statement(query, analyze=True)
    analyze = ctx.may_execute()
    if _PLACEHOLDER.search(query):
        ctx.action("explain_analyze", analyze_command, executed=False,
                   result="not run: the query has $n placeholders")
        return ctx.result(Status.UNKNOWN,
                          "explain_query has $1-style placeholders (as pg_stat_statements "
                          "shows statements): replace them with representative values",
                          {"query": query, "analyzed": False}, "rerun with literal values")
    statement = explain_statement(query, analyze, as_json=True)
    if analyze:
        print("execute=True: EXPLAIN (ANALYZE, BUFFERS) RUNS the query (read-only session, "
              f"statement timeout {thresholds.DB_STATEMENT_TIMEOUT_MS / 1000:g} s)", flush=True)
    try:
        with postgres.connect(ctx.target.database_url()) as conn, conn.cursor() as cur:
            # prepare=True: the extended protocol, so exactly one statement is accepted
            cur.execute(statement, prepare=True)
            row = cur.fetchone()
    except psycopg.Error as exc:
        error = secrets.mask(" ".join(str(exc).split()))
        ctx.action("explain_analyze", analyze_command, executed=False,
                   result=f"refused: {error}" if analyze else None)
        return ctx.result(Status.UNKNOWN,
                          f"PostgreSQL refused the EXPLAIN: {error}",
                          {"query": query, "analyzed": False, "error": error},
                          "fix explain_query (one SELECT, valid values) and rerun")
    try:
        plan = pgplan.Plan.from_json(next(iter(row.values())) if row else None)
    except ValueError as exc:
        ctx.action("explain_analyze", analyze_command, executed=analyze,
                   result=f"unreadable plan: {exc}" if analyze else None)
        return ctx.result(Status.UNKNOWN,
                          f"the EXPLAIN output could not be read: {exc}",
                          {"query": query, "analyzed": analyze, "statement": statement,
                           "error": str(exc)}, "run the EXPLAIN by hand in psql")
    lines = plan.lines()  # the text form, rendered from the JSON tree
    total = plan.total_cost
    ran = plan.execution_ms if analyze else None
    seq_scans = plan.seq_scans()
    ctx.action("explain_analyze", analyze_command, executed=analyze,
               result={"execution_ms": ran, "plan_lines": len(lines)} if analyze else None)
    evidence = {"query": query, "analyzed": analyze, "statement": statement,
                "total_cost": total, "execution_ms": ran, "plan": lines[:80],
                "cost_high": cost_high, "estimated_rows": plan.estimated_rows,
                "actual_rows": plan.actual_rows, "node_types": plan.node_types(),
                "seq_scans": seq_scans[:10], "underestimates": plan.underestimates()[:5]}
    how = (f"ran it: {ran:g} ms" if analyze and ran is not None else
           "planned only (execute=False: the query was not run)")
    status = Status.WARNING if total is not None and total >= cost_high else Status.INFO
    return ctx.result(status,
                      f"plan estimated at cost {_g(total)}; {how}; top node: "
                      f"{lines[0].strip() if lines else '?'}", evidence,
                      _plan_advice(seq_scans) if status is Status.WARNING else None,
                      table=pd.DataFrame({"QUERY PLAN": lines}))


# -- complexity ------------------------------------------------------------------------------------

@check("latency.complexity")
def query_complexity(ctx: RunContext, w: Window,
                     warning_cost: float = COMPLEXITY_WARNING) -> Finding:
    """Estimated cost per GraphQL query in the window (v2: fraiseql_graphql_queries_cost_total
    over fraiseql_graphql_queries_total; the runbook's per-operation complexity gauge where a
    deployment exports it)."""
    _require(w)
    res = metrics.resolve(w.last, "query_cost") if w.last is not None else None
    s = w.series("query_cost")
    kind = s.kind if s is not None else res.kind if res is not None else None
    queries = w.increase("queries_total")
    if kind is None:  # only unreleased main exports it (releases.FEATURES)
        return ctx.result(Status.INFO,
                          f"{releases.not_available('query_cost_metric', None)}: "
                          "not available on this release (fraiseql_graphql_queries_cost_total "
                          "is absent from the scrape), so complexity is not measured here",
                          {"looked_for": "fraiseql_graphql_queries_cost_total",
                           "feature": "query_cost_metric"})
    if kind == "gauge":
        per_query = w.gauge("query_cost", "max")
        how = "the highest per-operation complexity gauge"
    else:
        cost = w.increase("query_cost")
        per_query = cost / queries if cost is not None and queries else None
        how = "cost units per query (running sum over query count)"
    evidence = {"per_query": _round(per_query, 2), "queries": _round(queries),
                "warning_cost": warning_cost, "measure": how,
                "approximate": metrics.concept("query_cost").approximate,
                "note": metrics.concept("query_cost").note}
    if per_query is None:
        return ctx.result(Status.INFO,
                          f"no queries in {w.describe()} to average the cost over", evidence)
    status = Status.WARNING if per_query >= warning_cost else Status.OK
    return ctx.result(status,
                      f"{per_query:.1f} {how} (warning at {warning_cost:g})", evidence,
                      VOCABULARY.remediation["complex_query"] if status is Status.WARNING
                      else None)


# -- the diagnosis ---------------------------------------------------------------------------------

def _ev(ctx: RunContext, check_name: str) -> dict[str, Any]:
    found = ctx.latest(check_name)
    return found.evidence if found is not None and found.status is not Status.UNKNOWN else {}


def candidates(ctx: RunContext) -> list[Candidate]:
    """The root causes the recorded steps support, scored as the module doc describes."""
    out: list[Candidate] = []
    lat = _ev(ctx, "latency.percentiles")
    slow_ms = _ev(ctx, "latency.slow_statements").get("slow_ms", SLOW_STATEMENT_MS)

    locks = _ev(ctx, "latency.lock_waits")
    lock_wait = locks.get("max_wait_s") or 0.0
    low = locks.get("warning_s", LOCK_WAIT_S.warning)
    high = max(low, locks.get("critical_s", LOCK_WAIT_S.critical))
    if locks and lock_wait >= low:
        score = 0.6 + 0.35 * (min(1.0, (lock_wait - low) / (high - low)) if high > low else 1)
        out.append(Candidate("lock_contention", score,
                             f"{locks.get('blocked_sessions')} session(s) waited up to "
                             f"{lock_wait:g} s for locks held by pid(s) "
                             f"{', '.join(map(str, locks.get('root_blocking_pids') or []))}",
                             {"blocking_pids": locks.get("blocking_pids"),
                              "root_blocking_pids": locks.get("root_blocking_pids"),
                              "max_wait_s": lock_wait,
                              "pairs": (locks.get("pairs") or [])[:3]}))

    stm = _ev(ctx, "latency.slow_statements")
    slow = stm.get("slow") or []
    db_p95 = lat.get("db_p95_ms")
    if slow:
        top = slow[0]
        score = 0.9 if any(s.get("calls", 0) >= 2 for s in slow) else 0.75
        out.append(Candidate("database_slow_query", score,
                             f"{len(slow)} statement(s) averaged >= {slow_ms:g} ms in the "
                             f"window, the slowest {top['mean_ms']:g} ms x {top['calls']}: "
                             f"{_one_line(top['query'], 80)}",
                             {"slow": slow[:3], "db_p95_ms": db_p95}))
    elif db_p95 is not None and db_p95 >= slow_ms:
        locked = any(c.code == "lock_contention" and c.score >= 0.75 for c in out)
        out.append(Candidate("database_slow_query", 0.8 * (0.6 if locked else 1.0),
                             f"the server's database statements took {db_p95:g} ms at p95"
                             + (" (waiting on the locks above)" if locked else ""),
                             {"db_p95_ms": db_p95}))
    elif stm.get("long_running"):
        first = stm["long_running"][0]
        out.append(Candidate("database_slow_query", 0.6,
                             f"long statements are running: pid {first['pid']} for "
                             f"{first['running_s']:g} s",
                             {"long_running": stm["long_running"][:3]}))

    pool = _ev(ctx, "latency.pool")
    if pool:
        size = pool.get("pool_max") or 0
        waiting, active = pool.get("pool_waiting_max") or 0, pool.get("pool_active_max") or 0
        pg = pool.get("postgres") or {}
        busy = pool.get("busy_share", POOL_BUSY_SHARE)
        score, why = 0.0, ""
        if waiting > 0 and size and active >= size:
            score, why = 0.9, f"{waiting:g} requests waited with all {size} connections in use"
        elif pg.get("share", 0) >= busy:
            score, why = 0.7, (f"PostgreSQL has {pg.get('connections')} of "
                               f"{pg.get('max_connections')} connection slots in use")
        elif waiting > 0 or (size and active >= busy * size):
            score, why = 0.65, f"{waiting:g} waiting, {active:g} of {size} pool connections busy"
        if score:
            explained = [c.code for c in out if c.score >= 0.75]
            if explained:
                score *= 0.6
                why += f" (held by {' and '.join(explained)}: the pool is the symptom)"
            if pg.get("idle_in_transaction"):
                why += f"; {pg['idle_in_transaction']} sessions idle in transaction (leak?)"
            out.append(Candidate("connection_pool_exhausted", score, why,
                                 {k: pool.get(k) for k in ("pool_waiting_max", "pool_active_max",
                                                           "pool_max", "postgres")}))

    net = _ev(ctx, "latency.network")
    for name, weight in (("database", 1.0), ("server", 0.85)):
        row = net.get(name) or {}
        median = row.get("median_ms")
        if median is None or median < net.get("warning_ms", NETWORK_RTT_MS.warning):
            continue
        score = 0.85 if median >= net.get("critical_ms", NETWORK_RTT_MS.critical) else 0.7
        out.append(Candidate("network_latency", score * weight,
                             f"TCP connect to the {name} ({row.get('address')}) takes "
                             f"{median:g} ms (median of {row.get('connected')})", row))

    cx = _ev(ctx, "latency.complexity")
    per_query = cx.get("per_query")
    if per_query is not None and per_query >= cx.get("warning_cost", COMPLEXITY_WARNING):
        out.append(Candidate("complex_query", 0.7, f"{per_query:g} cost units per query on "
                             "average", cx))
    plan = _ev(ctx, "latency.explain")
    if (plan.get("total_cost") or 0) >= plan.get("cost_high", EXPLAIN_COST_HIGH):
        out.append(Candidate("complex_query", 0.75, f"EXPLAIN estimates cost "
                             f"{plan['total_cost']:g} for explain_query",
                             {"total_cost": plan.get("total_cost"), "query": plan.get("query")}))

    if not any(c.score >= VOCABULARY.threshold for c in out) and lat.get("p50_ms") is None:
        out.append(unmeasured(VOCABULARY, "latency could not be measured (see the unknown or "
                              "info findings above) and no cause shows in the database"))
    elif not any(c.score >= VOCABULARY.threshold for c in out):
        p95, p99 = lat.get("p95_ms") or 0, lat.get("p99_ms") or 0
        high = (p95 > lat.get("p95_warning_ms", thresholds.RESPONSE_TIME_MS.warning)
                or p99 >= lat.get("p99_critical_ms", thresholds.RESPONSE_TIME_MS.critical))
        facts = f"p95 {p95:g} ms, p99 {p99:g} ms over {lat.get('observed'):g} queries"
        if high:
            out.append(Candidate("none", VOCABULARY.threshold,
                                 f"latency is high ({facts}) but none of the §4.1 causes shows "
                                 "in the evidence: EXPLAIN the slowest operation's statements "
                                 "and rerun during the next occurrence", lat))
        else:
            out.append(Candidate("none", 0.8, f"{facts}, within the §6.1/§3.2 lines, and no "
                                 "cause shows", {k: lat.get(k) for k in
                                                 ("p50_ms", "p95_ms", "p99_ms", "observed")}))
    return out


def verdict_status(ctx: RunContext) -> Status | None:
    """The diagnosis status when the vocabulary's own would mislead: `unknown` when nothing
    could be measured, `warning` when latency is high but no cause stands out; and never more
    severe than the findings behind it (one slow statement of another application, while
    FraiseQL's latency is fine, is a warning, not an incident)."""
    found = candidates(ctx)
    status = sampled_status(found, sure=0.8)
    if status is not None:
        return status
    top = max(found, key=lambda c: c.score, default=None)
    if top is None or top.score < VOCABULARY.threshold or top.code == "none":
        return None
    own = VOCABULARY.severity.get(top.code, Status.CRITICAL)
    behind = [f.status for f in ctx.log.findings if f.check.startswith("latency.")
              and f.status in (Status.OK, Status.WARNING, Status.CRITICAL)]
    ceiling = max([Status.WARNING, *behind], key=_RANK.__getitem__)
    return own if _RANK[own] <= _RANK[ceiling] else ceiling
