"""Runbook §4.2 "Playbook: High Error Rate": measure, break down, locate, and say what next.

The runbook's steps are: 1. error metrics by type and endpoint, 2. the most affected
service/query, 3. isolate (block problematic queries), 4. mitigate (scale up, disable
features), 5. root cause after the incident, 6. prevention. Steps 1-2 are measured here; steps
3-6 are `info` findings naming the concrete commands and the next runbook for the cause found.
Nothing is executed: this playbook never changes anything.

**Where the numbers come from** (`sampling.Window`, shared with high-query-latency): the
run samples for `window_s` seconds: `/metrics` at both ends (and every few seconds), and
PostgreSQL's own counters (`pg_stat_database`: rollbacks, deadlocks, conflicts) at both ends.
When the target names a `prometheus_url` that holds current series of the FraiseQL job with
enough samples, the figures come from Prometheus over the last `window_s` seconds ending with
the window, widened to at least four scrape intervals (read from the job's `up` samples) so
a rate never rests on one or two scrapes; otherwise from the two scrapes. The source finding
says which. `lookback` is the span of history drawn from Prometheus.

**Diagnosis** (`candidates`), each score in [0, 1], the highest at or above 0.5 wins:
- nothing to explain (fewer than `MIN_ERRORS` failures, or every ratio below the warning
  line): `none` at 0.9;
- `database_errors`: execution errors (or 5xx) *and* database-side evidence — the application
  role cannot connect (0.95; then even one failure counts), the server reports its database
  disconnected while PostgreSQL answers here and the server's pool is not saturated (0.85),
  deadlocks or recovery conflicts in the window (0.85), rollbacks rising (0.8); without that
  evidence 0.1. A server reporting its database disconnected *with a saturated pool* is the
  pool, i.e. `server_errors`;
- `operation_errors`: the fewest operations holding >= 80 % of the per-operation errors are at
  most `FEW_OPERATIONS` and carry at most 60 % of the traffic (other busy operations work):
  0.85 x their share of the errors x the share of all errors that have an operation; an
  outage spread over nearly all traffic is not "one operation" (0.35 x ...);
- `server_errors`: server-side share (execution errors, 5xx) x 0.75 when the database shows
  nothing and the errors are not concentrated (x 0.6 when they are, x 0.4 with database
  evidence, which explains them better);
- `client_errors`: client-side share (parse, validation, 4xx) x 0.85 when it dominates (>= 50 %).

When errors are high and no candidate reaches 0.5, the verdict is `none` with the status raised
to warning; when the error rate could not be measured, `none` with the status `unknown`
(`verdict_status`): the vocabulary has no code for "unknown", the status says it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg
from matplotlib.figure import Figure

from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary, sampled_status
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import metrics, postgres, service
from fraiseql_rb.targets.sampling import (
    NO_SOURCE,
    PROMETHEUS,
    DatabaseProbe,
    Window,
    collect,
    failed_window,
    record_source,
    records,
    unmeasured,
)

# -- limits: defined (value, unit, why) in thresholds.CATALOGUE, named here for this module -----

ERROR_RATIO = thresholds.ERROR_RATIO
MIN_ERRORS = thresholds.ERROR_MIN_COUNT  # fewer failures in a window are noise
CONCENTRATION_SHARE = thresholds.ERROR_CONCENTRATION_SHARE  # "most" of per-operation errors
FEW_OPERATIONS = thresholds.ERROR_FEW_OPERATIONS  # "one or a few" operations
MINORITY_TRAFFIC = thresholds.ERROR_MINORITY_TRAFFIC  # failing operations' share of requests
ROLLBACK_SHARE = thresholds.ERROR_ROLLBACK_SHARE  # rollbacks / transactions that are "rising"

VOCABULARY = Vocabulary("high-error-rate", {
    "none": "no error spike to chase: the error ratio is within limits; if users still report "
            "failures, check the client side and rerun with a longer window_s",
    "operation_errors": "isolate the failing operation(s) named in the evidence (block them at "
                        "the gateway or reload the schema without them, see errors.isolate), "
                        "then read the server log for their error messages",
    "database_errors": "the database is behind the failures: run the database-unavailable "
                       "playbook (fraiseql-rb run database-unavailable) when it cannot be "
                       "reached, else read the PostgreSQL log for the rollbacks and deadlocks",
    "server_errors": "the server fails across operations without a database cause: read the "
                     "server log (logs_command) for the 5xx; a saturated pool is the "
                     "connection-pool-exhaustion playbook's; else roll back a recent deployment "
                     "or scale out (§6.1), and run service-down if instances are unhealthy",
    "client_errors": "clients send queries the schema refuses: find the client (access log, "
                     "operation names), roll back its release or rate-limit it; the service "
                     "itself is working",
}, fallback="none", severity={"client_errors": Status.WARNING})


# == the steps ================================================================================

# Cumulative since the last statistics reset; the window's difference is what happened in it.
STAT_DATABASE_SQL = """
SELECT xact_commit, xact_rollback, deadlocks, conflicts, temp_files,
       stats_reset, current_database() AS database
FROM pg_stat_database
WHERE datname = current_database()
"""


def _stat_database(conn: psycopg.Connection) -> dict[str, Any]:
    return postgres.one(conn, STAT_DATABASE_SQL)


def sample(ctx: RunContext, window_s: float = thresholds.METRICS_WINDOW_S,
           lookback: str = "1h") -> Window:
    """§4.2 step 1 "Check: error metrics": sample the window (see the module doc) and record
    where the numbers come from. Never raises: a window that could not be taken is `unknown`."""
    try:
        w = collect(ctx, window_s, lookback, probe=DatabaseProbe(at_ends=_stat_database))
    except Exception as exc:  # noqa: BLE001 - the source finding carries the reason
        w = failed_window(ctx, window_s, lookback, exc)
    w.finding = record_source(ctx, w, "errors.source")
    return w


def _require(w: Window) -> None:
    if not isinstance(w, Window) or w.source == NO_SOURCE:
        raise RunbookError("no metrics were sampled (see the source finding above)")


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def _level(value: float | None, limit: thresholds.Threshold) -> Status:
    if value is None:
        return Status.OK
    if value >= limit.critical:
        return Status.CRITICAL
    if value >= limit.warning:
        return Status.WARNING
    return Status.OK


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@check("errors.rate")
def error_rate(ctx: RunContext, w: Window, warning: float = ERROR_RATIO.warning,
               critical: float = ERROR_RATIO.critical) -> Finding:
    """The share of GraphQL queries that failed (queries_error / queries_total), and of HTTP
    answers that were 5xx and 4xx, against `warning` and `critical`."""
    _require(w)
    limit = thresholds.Threshold(warning, critical, ERROR_RATIO.unit, ERROR_RATIO.source)
    queries, errors = w.increase("queries_total"), w.increase("queries_error")
    http, h5, h4 = w.increase("http_requests"), w.increase("http_5xx"), w.increase("http_4xx")
    ratio, r5, r4 = _ratio(errors, queries), _ratio(h5, http), _ratio(h4, http)
    seconds = w.seconds or 0.0
    evidence = {
        "source": w.source, "seconds": round(seconds, 1), "queries": _round(queries),
        "errors": _round(errors), "error_ratio": _round(ratio, 4),
        "errors_per_s": _round((errors or 0) / seconds if seconds else None, 3),
        "http_requests": _round(http), "http_5xx": _round(h5), "http_4xx": _round(h4),
        "http_5xx_ratio": _round(r5, 4), "http_4xx_ratio": _round(r4, 4),
        "warning": warning, "critical": critical,
    }
    table = pd.DataFrame([
        {"measure": "GraphQL queries failing", "count": _round(errors),
         "of": _round(queries), "ratio": _pct(ratio)},
        {"measure": "HTTP 5xx answers", "count": _round(h5), "of": _round(http),
         "ratio": _pct(r5)},
        {"measure": "HTTP 4xx answers", "count": _round(h4), "of": _round(http),
         "ratio": _pct(r4)},
    ])
    absent = [c for c, v in (("queries_total", queries), ("queries_error", errors),
                             ("http_requests", http)) if v is None]
    evidence["unavailable"] = absent
    note = f"; {metrics.unavailable(*absent)}" if absent else ""
    if queries is None and http is None:
        return ctx.result(Status.UNKNOWN,
                          f"no request counter to measure an error rate over {w.describe()}: "
                          f"{metrics.unavailable(*absent)}", evidence,
                          "point the target at FraiseQL's own /metrics (or its Prometheus), "
                          "or read the error rate from the proxy in front of it", table=table)
    if not queries and not http:
        return ctx.result(Status.INFO,
                          f"no requests in {w.describe()}: there is no error rate to measure",
                          evidence, "send traffic (or wait for it) and rerun; if clients get "
                          "no answer at all, run the service-down playbook", table=table)
    counted = max(errors or 0, h5 or 0, h4 or 0)
    status = Status.OK
    if counted >= MIN_ERRORS:
        status = max((_level(x, limit) for x in (ratio, r5, r4)), key=_rank)
    summary = (f"{_pct(ratio)} of {_g(_round(queries))} GraphQL queries failed, "
               f"{_pct(r5)} 5xx and {_pct(r4)} 4xx of {_g(_round(http))} HTTP answers, "
               f"over {w.describe()}{note}")
    remediation = None if status is Status.OK else "break the errors down (next steps)"
    return ctx.result(status, summary, evidence, remediation, table=table)


def _rank(status: Status) -> int:
    return {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2}.get(status, 0)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


ERROR_TYPES = (
    # (type, side, what it means)
    ("parse", "client", "not GraphQL at all (syntax errors)"),
    ("validation", "client", "GraphQL the schema refuses (unknown fields, bad arguments)"),
    ("execution", "server", "accepted queries that failed while running (database, resolvers)"),
    ("http_4xx", "client", "HTTP 4xx answers: bad requests, auth refused, rate limited"),
    ("http_5xx", "server", "HTTP 5xx answers: the server failed"),
)


@check("errors.by_type")
def errors_by_type(ctx: RunContext, w: Window) -> Finding:
    """§4.2 step 1 "by type": parse, validation and execution errors, HTTP 4xx and 5xx."""
    _require(w)
    parse, validation = w.increase("parse_errors"), w.increase("validation_errors")
    counts = {
        "parse": parse,
        # v2's validation counter includes parse errors; shown here without them
        "validation": None if validation is None else max(0.0, validation - (parse or 0)),
        "execution": w.increase("execution_errors"),
        "http_4xx": w.increase("http_4xx"), "http_5xx": w.increase("http_5xx"),
    }
    seconds = w.seconds or 0.0
    rows = [{"type": name, "side": side, "count": _round(counts[name]),
             "per_s": _round((counts[name] or 0) / seconds, 3) if seconds else None,
             "meaning": meaning} for name, side, meaning in ERROR_TYPES]
    table = pd.DataFrame(rows)
    client = sum(counts[n] or 0 for n, side, _ in ERROR_TYPES if side == "client")
    server = max(counts["execution"] or 0, counts["http_5xx"] or 0)
    share = _ratio(client, client + server)
    evidence = {"counts": {k: _round(v) for k, v in counts.items()},
                "client_side": _round(client), "server_side": _round(server),
                "client_share": _round(share, 3)}
    if not client and not server:
        return ctx.result(Status.INFO, f"no errors of any type over "
                          f"{w.describe()}", evidence, table=table)
    top = max(rows, key=lambda r: r["count"] or 0)
    side = "client" if (share or 0) >= 0.5 else "server"
    return ctx.result(Status.INFO,
                      f"mostly {side}-side: {top['type']} leads with {_g(top['count'])} "
                      f"({_g(_round(client))} client-side, {_g(_round(server))} server-side)",
                      evidence, table=table)


def operation_table(w: Window) -> pd.DataFrame:
    """Per operation: requests and errors in the window, most errors first."""
    errors = w.increase_by("query_errors_by_operation", "operation")
    requests = w.increase_by("query_duration", "operation")
    names = sorted(set(errors) | set(requests))
    total_errors = sum(errors.values()) or 0.0
    total_requests = sum(requests.values()) or 0.0
    rows = []
    for name in names:
        e, r = errors.get(name, 0.0), requests.get(name, 0.0)
        rows.append({"operation": name or "(none)", "requests": round(r, 1),
                     "errors": round(e, 1), "error_ratio": round(e / r, 4) if r else None,
                     "share_of_errors": round(e / total_errors, 4) if total_errors else 0.0,
                     "share_of_requests": round(r / total_requests, 4) if total_requests
                     else 0.0})
    frame = pd.DataFrame(rows, columns=["operation", "requests", "errors", "error_ratio",
                                        "share_of_errors", "share_of_requests"])
    return frame.sort_values(["errors", "requests"], ascending=False,
                             kind="stable").reset_index(drop=True)


def concentration(table: pd.DataFrame) -> dict[str, Any]:
    """The fewest operations holding CONCENTRATION_SHARE of the errors, and their traffic."""
    failing = table[table["errors"] > 0]
    total = float(failing["errors"].sum())
    if total <= 0:
        return {"operations": [], "share_of_errors": 0.0, "share_of_requests": 0.0,
                "concentrated": False}
    picked, share, traffic = [], 0.0, 0.0
    for row in failing.itertuples():
        picked.append(row.operation)
        share += row.errors / total
        traffic += row.share_of_requests
        if share >= CONCENTRATION_SHARE:
            break
    others_busy = float(table[~table["operation"].isin(picked)]["requests"].sum()) > 0
    concentrated = (len(picked) <= FEW_OPERATIONS and traffic <= MINORITY_TRAFFIC
                    and others_busy)
    return {"operations": picked, "share_of_errors": round(share, 4),
            "share_of_requests": round(traffic, 4), "concentrated": concentrated}


@check("errors.by_operation")
def errors_by_operation(ctx: RunContext, w: Window) -> Finding:
    """§4.2 step 2 "Identify: most affected query": errors per GraphQL operation (v2's
    fraiseql_query_errors_total{operation}, execution errors only), most affected first."""
    _require(w)
    table = operation_table(w)
    conc = concentration(table)
    all_errors = w.increase("queries_error")
    op_errors = float(table["errors"].sum()) if not table.empty else 0.0
    coverage = min(1.0, op_errors / all_errors) if all_errors else (1.0 if op_errors else 0.0)
    evidence = {"by_operation": records(table.head(20)),
                "most_affected": table.iloc[0]["operation"] if op_errors else None,
                "concentration": conc, "errors_with_an_operation": round(coverage, 3)}
    if table.empty:
        return ctx.result(Status.INFO,
                          "no per-operation series yet (v2 exports them once an operation has "
                          "run)", evidence)
    if not op_errors:
        return ctx.result(Status.INFO,
                          f"no operation failed while executing over {w.describe()} "
                          f"({len(table)} operations seen)", evidence, table=table)
    top = table.iloc[0]
    where = ", ".join(conc["operations"])
    how = (f"concentrated in {where} ({conc['share_of_errors']:.0%} of the errors, "
           f"{conc['share_of_requests']:.0%} of the traffic); other operations work"
           if conc["concentrated"] else
           f"spread: {where} hold {conc['share_of_errors']:.0%} of the errors and "
           f"{conc['share_of_requests']:.0%} of the traffic")
    return ctx.result(Status.INFO,
                      f"most affected: {top['operation']} with {top['errors']:g} errors "
                      f"({_pct(top['error_ratio'])} of its requests); {how}", evidence,
                      table=table)


def operations_figure(w: Window) -> Figure:
    """Errors and successes per operation, most affected at the top."""
    table = operation_table(w) if isinstance(w, Window) and w.source != NO_SOURCE \
        else pd.DataFrame(columns=["operation", "requests", "errors"])
    frame = pd.DataFrame({
        "operation": table["operation"],
        "errors": table["errors"].astype(float),
        "succeeded": (table["requests"].astype(float) - table["errors"].astype(float)).clip(0),
    })
    where = w.describe() if isinstance(w, Window) else "no metrics"
    return plots.bar(frame, title=f"GraphQL operations: errors and successes ({where})",
                     xlabel="operation", ylabel="requests in the window", x="operation",
                     y=["errors", "succeeded"], horizontal=True)


@check("errors.history")
def error_history(ctx: RunContext, w: Window) -> Figure:
    """The error ratio over `lookback` from Prometheus, and since when it has been high; drawn
    with the warning and critical lines. Without Prometheus there is no history: the window's
    ratios are drawn as bars instead."""
    _require(w)
    lines = plots.threshold_lines(ERROR_RATIO, scale=100)
    if w.source != PROMETHEUS:
        ctx.result(Status.INFO,
                   f"no history: {w.prometheus_note}; the window above is all there is",
                   {"source": w.source})
        ev = (ctx.latest("errors.rate") or Finding("", Status.INFO, "")).evidence
        values = pd.Series({"GraphQL errors": (ev.get("error_ratio") or 0) * 100,
                            "HTTP 5xx": (ev.get("http_5xx_ratio") or 0) * 100,
                            "HTTP 4xx": (ev.get("http_4xx_ratio") or 0) * 100}, name="ratio")
        return plots.bar(values, title=f"Error ratios ({w.describe()}; no Prometheus history)",
                         xlabel="measure", ylabel="failing requests (%)", thresholds=lines)
    frame = history_frame(w)
    graphql = frame[frame["series"] == "GraphQL errors"].sort_values("time")
    peak = graphql["value"].max() if not graphql.empty else None
    since = None
    if not graphql.empty and graphql["value"].iloc[-1] >= ERROR_RATIO.warning:
        below = graphql[graphql["value"] < ERROR_RATIO.warning]
        after = graphql[graphql["time"] > below["time"].max()] if not below.empty else graphql
        since = after["time"].min()
    evidence = {"range": w.range_text, "points": len(frame), "peak_ratio": _round(peak, 4),
                "above_warning_since": since.to_pydatetime() if since is not None else None}
    if graphql.empty:
        summary = f"Prometheus has no error-ratio history over {w.range_text}"
    else:
        summary = f"error ratio over the last {w.range_text}: peak {_pct(peak)}"
        summary += (f"; above {ERROR_RATIO.warning:.0%} since {since:%H:%M:%S} UTC"
                    if since is not None else "; not above the warning line now")
    ctx.result(Status.INFO, summary, evidence)
    return plots.timeseries(frame.assign(value=frame["value"] * 100),
                            title=f"Error ratio, last {w.range_text} (Prometheus)",
                            ylabel="failing requests (%)", thresholds=lines)


def history_frame(w: Window) -> pd.DataFrame:
    """The GraphQL error ratio and the 5xx share of HTTP answers over `lookback` (Prometheus)."""
    sel = {}
    for key, concept in (("errors", "queries_error"), ("total", "queries_total"),
                         ("h5", "http_5xx"), ("http", "http_requests")):
        s = w.series(concept)
        if s is None:
            return pd.DataFrame({"time": [], "series": [], "value": []})
        sel[key] = s.selector()
    return w.history({
        "GraphQL errors": f"sum(rate({sel['errors']}[{{rate}}])) / "
                          f"sum(rate({sel['total']}[{{rate}}]))",
        "HTTP 5xx": f"sum(rate({sel['h5']}[{{rate}}])) / sum(rate({sel['http']}[{{rate}}]))",
    })


# -- database-side errors ------------------------------------------------------------------

@check("database.errors")
def database_errors(ctx: RunContext, w: Window) -> Finding:
    """Database-side evidence over the same window: can the application role connect, does the
    server see its database, and the deltas of pg_stat_database (rollbacks, deadlocks,
    conflicts)."""
    url = ctx.target.database_url()
    reach = postgres.attempt(url, 5)
    with service.client(ctx) as http:
        health = service.probe(http, "GET", f"{ctx.target.fraiseql_url}/health")
    body = health.body if isinstance(health.body, dict) else {}
    server_sees = (body.get("database") or {}).get("connected")
    start, end = (w.db.get("start"), w.db.get("end")) if isinstance(w, Window) else (None, None)
    deltas: dict[str, Any] = {}
    if start and end:
        for key in ("xact_commit", "xact_rollback", "deadlocks", "conflicts", "temp_files"):
            before, after = start.get(key), end.get(key)
            if before is not None and after is not None:
                deltas[key] = max(0, int(after) - int(before))
    transactions = deltas.get("xact_commit", 0) + deltas.get("xact_rollback", 0)
    rollback_share = _ratio(deltas.get("xact_rollback"), transactions)
    evidence = {
        "reachable": reach.failure.code == "none", "failure": reach.failure.code,
        "failure_detail": None if reach.failure.code == "none" else reach.failure.explanation,
        "server_sees_database": server_sees, "health_status": body.get("status"),
        "window_s": w.window_s if isinstance(w, Window) else None, "deltas": deltas,
        "rollback_share": _round(rollback_share, 4),
        "statistics_error": w.db_error if isinstance(w, Window) else None,
    }
    table = pd.DataFrame([{"counter": k, "in the window": v} for k, v in deltas.items()])
    if reach.failure.code != "none":
        return ctx.result(Status.CRITICAL,
                          f"the database is unreachable ({reach.failure.code}): "
                          f"{reach.failure.explanation}", evidence,
                          "run the database-unavailable playbook", table=table)
    if server_sees is False:
        # PostgreSQL answers this host, the server says it cannot reach it: its pool, or its
        # own path to the database. The pool gauges tell which.
        pool = _pool_state(w)
        evidence["server_pool"] = pool
        if pool.get("saturated"):
            return ctx.result(Status.WARNING,
                "the server reports its database disconnected, but PostgreSQL answers here and "
                f"the server's pool is saturated ({_g(pool.get('waiting'))} waiting, "
                f"{_g(pool.get('active'))} of {_g(pool.get('total'))} connections in use): the "
                "pool, not the database", evidence,
                "run the connection-pool-exhaustion playbook", table=table)
        return ctx.result(Status.CRITICAL,
                          "the server cannot reach its database although PostgreSQL answers "
                          "this host: the path from the server to the database is broken",
                          evidence, "check the network and DNS from the server to the database "
                          "host; then the database-unavailable playbook from the server's host",
                          table=table)
    if not deltas:
        return ctx.result(Status.UNKNOWN,
                          "the database answers, but its counters could not be read over the "
                          f"window: {evidence['statistics_error'] or 'no readings'}", evidence,
                          "grant the statistics role access to pg_stat_database and rerun")
    rising = (deltas.get("xact_rollback", 0) >= MIN_ERRORS
              and (rollback_share or 0) >= ROLLBACK_SHARE)
    summary = (f"{deltas.get('xact_rollback', 0)} rollbacks of {transactions} transactions "
               f"({_pct(rollback_share)}), {deltas.get('deadlocks', 0)} deadlocks, "
               f"{deltas.get('conflicts', 0)} recovery conflicts in {w.window_s:g} s")
    if deltas.get("deadlocks") or deltas.get("conflicts") or rising:
        return ctx.result(Status.WARNING, f"database-side errors: {summary}",
                          evidence, "read the PostgreSQL log for the failing statements "
                          "(ERROR/deadlock lines) in this window", table=table)
    return ctx.result(Status.OK,
                      f"the database answers and shows no error surge: {summary}", evidence,
                      table=table)


def _pool_state(w: Window) -> dict[str, Any]:
    """The server's pool in the window: saturated when requests waited with no idle
    connection left."""
    if not isinstance(w, Window):
        return {}
    waiting, active = w.gauge("pool_waiting", "max"), w.gauge("pool_active", "max")
    total, idle = w.gauge("pool_total", "last"), w.gauge("pool_idle", "last")
    saturated = bool(waiting) and (idle == 0 or (total is not None and active is not None
                                                 and active >= total))
    return {"waiting": waiting, "active": active, "total": total, "idle": idle,
            "saturated": saturated}


def _g(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


# -- §4.2 steps 3-6: what a person does next --------------------------------------------------

def _code(ctx: RunContext) -> str:
    ranked = sorted(candidates(ctx), key=lambda c: c.score, reverse=True)
    top = ranked[0] if ranked and ranked[0].score >= VOCABULARY.threshold else None
    return top.code if top else VOCABULARY.fallback


def _affected(ctx: RunContext) -> list[str]:
    found = ctx.latest("errors.by_operation")
    conc = (found.evidence.get("concentration") or {}) if found else {}
    return list(conc.get("operations") or [])


@check("next_steps")
def next_steps(ctx: RunContext) -> list[Finding]:
    """§4.2 steps 3-6 as `info` findings with concrete commands, chosen by the likely cause.
    Nothing here is run: a person decides and acts."""
    code = _code(ctx)
    target = ctx.target_name
    url = ctx.target.fraiseql_url
    ops = _affected(ctx)
    op_text = ", ".join(ops) if ops else "the failing operation"
    db = ctx.latest("database.errors")
    pool_full = bool(((db.evidence if db else {}).get("server_pool") or {}).get("saturated"))
    admin = (f"curl -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" "
             f"-H 'Content-Type: application/json' {url}/api/v1/admin/reload-schema "
             "-d '{\"schema_path\": \"<schema.compiled.json without the field>\", "
             "\"validate_only\": false}'")
    logs = ctx.target.get("logs_command")
    logs_cmd = f"{logs} | grep -iE 'error|{'|'.join(ops) or 'graphql'}'" if logs \
        else "journalctl -u fraiseql --since '-1h' | grep -i error"
    isolate = {
        "operation_errors": f"block {op_text} until it is fixed: refuse requests whose "
                            f"operationName is {op_text} at the gateway/load balancer, or "
                            f"compile the schema without it and reload: {admin}",
        "database_errors": "nothing to block: every operation that reads the database fails; "
                           f"run fraiseql-rb run database-unavailable --target {target}",
        "server_errors": (f"the server's pool is saturated: fraiseql-rb run "
                          f"connection-pool-exhaustion --target {target} (who holds the "
                          "connections)" if pool_full else
                          "no single query to block; take unhealthy instances out of the "
                          f"load balancer (fraiseql-rb run service-down --target {target})"),
        "client_errors": "rate-limit or block the client sending the refused queries "
                         "([rate_limiting] rps_per_ip, or a gateway rule for its address)",
        "none": "nothing to isolate: the error ratio is within limits",
    }[code]
    mitigate = {
        "operation_errors": "disable the feature behind it in the clients (feature flag), or "
                            "keep the schema without it until the fix ships",
        "database_errors": "fail over if the primary is gone (the database-unavailable "
                           "playbook decides); scaling FraiseQL out does not help",
        "server_errors": ("release the held connections: the connection-pool-exhaustion "
                          "playbook ends idle transactions with execute=True, or restart the "
                          "instance; more instances would only take more database slots"
                          if pool_full else
                          "scale out (§6.1): docker run -d --name fraiseql-new fraiseql:latest "
                          "&& lb-cli add-backend fraiseql-new http://fraiseql-new:4000; or roll "
                          "back the last deployment"),
        "client_errors": "the service works: publish the schema change the clients need, or "
                         "roll back the client release",
        "none": "nothing to mitigate",
    }[code]
    if code == "none":
        analyse = ("no incident to analyse; if one was reported, compare the reported time with "
                   "this report's window and rerun during the next occurrence")
        prevent = ("keep HighErrorRatio and HighDatabaseErrorRate alerting (check the rules with "
                   "fraiseql-rb lint-alerts)")
    else:
        analyse = (f"read the server log for the error messages ({logs_cmd}) and the "
                   "PostgreSQL log for the same minutes; this report's timeline (the `at` "
                   "times) fixes the window")
        prevent = (f"add a test case reproducing the failure ({op_text}) to CI and to the "
                   f"post-deploy check (fraiseql-rb run deployment-verification --target "
                   f"{target}); keep HighErrorRatio and HighDatabaseErrorRate alerting "
                   "(fraiseql-rb lint-alerts)")
    return [
        ctx.record("errors.isolate", Status.INFO, f"§4.2 step 3 (isolate): {isolate}",
                   {"cause": code, "operations": ops}),
        ctx.record("errors.mitigate", Status.INFO, f"§4.2 step 4 (mitigate): {mitigate}",
                   {"cause": code}),
        ctx.record("errors.root_cause", Status.INFO,
                   f"§4.2 step 5 (root cause, after the incident): {analyse}",
                   {"cause": code, "logs": logs_cmd}),
        ctx.record("errors.prevention", Status.INFO, f"§4.2 step 6 (prevention): {prevent}",
                   {"cause": code}),
    ]


# -- the diagnosis -------------------------------------------------------------------------

def candidates(ctx: RunContext) -> list[Candidate]:
    """The root causes the recorded steps support, scored as the module doc describes."""
    rate = ctx.latest("errors.rate")
    ev = rate.evidence if rate is not None and rate.status is not Status.UNKNOWN else {}
    if ev.get("queries") is None and ev.get("http_requests") is None:
        return [unmeasured(VOCABULARY, "the error rate could not be measured (see the unknown "
                           "findings above): no cause can be named from this run")]
    counted = max(ev.get("errors") or 0, ev.get("http_5xx") or 0, ev.get("http_4xx") or 0)
    ratios = [ev.get(k) or 0 for k in ("error_ratio", "http_5xx_ratio", "http_4xx_ratio")]
    keep = {k: ev.get(k) for k in ("errors", "queries", "error_ratio", "http_5xx_ratio",
                                   "http_4xx_ratio", "source", "seconds")}
    warning = ev.get("warning", ERROR_RATIO.warning)
    db = ctx.latest("database.errors")
    dev = db.evidence if db is not None and db.status is not Status.UNKNOWN else {}
    pool_full = bool((dev.get("server_pool") or {}).get("saturated"))
    unreachable = bool(dev) and (dev.get("reachable") is False or (
        dev.get("server_sees_database") is False and not pool_full))
    failing = max(ev.get("errors") or 0, ev.get("http_5xx") or 0)
    # a database outage is never noise: one failed query with the database gone is enough
    if not (unreachable and failing) and (counted < MIN_ERRORS or max(ratios) < warning):
        why = (f"only {counted:g} errors (fewer than {MIN_ERRORS})" if counted < MIN_ERRORS
               else f"below the {warning:.0%} line")
        return [Candidate("none", 0.9, f"{_pct(ev.get('error_ratio'))} of "
                          f"{_g(ev.get('queries'))} queries failed over "
                          f"{ev.get('seconds')} s: {why}", keep)]
    by_type = ctx.latest("errors.by_type")
    tev = by_type.evidence if by_type is not None and by_type.status is not Status.UNKNOWN \
        else {}
    client_share = tev.get("client_share")
    if client_share is None:
        client_share = 0.0 if (ev.get("errors") or ev.get("http_5xx")) else 1.0
    server_share = 1.0 - client_share
    server_count = (tev.get("server_side") if tev else
                    max(ev.get("errors") or 0, ev.get("http_5xx") or 0)) or 0
    out: list[Candidate] = []

    # database-side evidence
    deltas = dev.get("deltas") or {}
    db_score, db_reason = 0.0, ""
    if unreachable and dev.get("reachable") is False:
        db_score, db_reason = 0.95, f"the database is unreachable ({dev.get('failure')})"
    elif unreachable:
        db_score, db_reason = 0.85, "the server cannot reach its database (PostgreSQL answers "
        db_reason += "this host)"
    elif deltas.get("deadlocks") or deltas.get("conflicts"):
        db_score, db_reason = 0.85, (f"{deltas.get('deadlocks', 0)} deadlocks and "
                                     f"{deltas.get('conflicts', 0)} conflicts in the window")
    elif (deltas.get("xact_rollback", 0) >= MIN_ERRORS
          and (dev.get("rollback_share") or 0) >= ROLLBACK_SHARE):
        db_score, db_reason = 0.8, (f"rollbacks rising: {deltas['xact_rollback']} "
                                    f"({_pct(dev.get('rollback_share'))} of transactions)")
    db_evidence = {k: dev.get(k) for k in ("reachable", "failure", "server_sees_database",
                                           "server_pool", "deltas", "rollback_share")}
    if db_score and (server_count >= MIN_ERRORS or (unreachable and server_count)):
        out.append(Candidate("database_errors", db_score,
                             f"{server_count:g} execution errors/5xx and {db_reason}",
                             db_evidence))
    elif db_score:
        out.append(Candidate("database_errors", 0.3 * db_score,
                             f"{db_reason}, but few server-side errors", db_evidence))
    elif server_count:
        out.append(Candidate("database_errors", 0.1, "execution errors, but the database "
                             "answers with no rollback, deadlock or conflict surge",
                             db_evidence))

    # concentration in operations
    ops = ctx.latest("errors.by_operation")
    oev = ops.evidence if ops is not None and ops.status is not Status.UNKNOWN else {}
    conc = oev.get("concentration") or {}
    if conc.get("operations"):
        coverage = oev.get("errors_with_an_operation") or 0.0
        weight = 0.85 if conc.get("concentrated") else 0.35
        names = ", ".join(conc["operations"])
        how = ("carrying only" if conc.get("concentrated") else "but they carry")
        out.append(Candidate(
            "operation_errors", weight * conc.get("share_of_errors", 0) * coverage,
            f"{conc.get('share_of_errors', 0):.0%} of the errors are in {names}, {how} "
            f"{conc.get('share_of_requests', 0):.0%} of the traffic",
            {"most_affected": oev.get("most_affected"), "concentration": conc,
             "by_operation": (oev.get("by_operation") or [])[:5]}))

    # server-side, without a database cause
    if server_share > 0:
        factor = 0.4 if db_score >= 0.8 else 0.6 if conc.get("concentrated") else 0.75
        why = (f"; {db_reason}" if db_score else
               "; PostgreSQL answers but the server's pool is saturated" if pool_full else
               "; the database shows no cause")
        out.append(Candidate("server_errors", factor * server_share,
                             f"{server_share:.0%} of the errors are server-side (execution "
                             f"errors, 5xx){why}",
                             {"server_share": round(server_share, 3),
                              "counts": tev.get("counts"),
                              "server_pool": dev.get("server_pool")}))
    if client_share > 0:
        weight = 0.85 if client_share >= 0.5 else 0.4
        out.append(Candidate("client_errors", weight * client_share,
                             f"{client_share:.0%} of the errors are client-side (parse, "
                             "validation, 4xx)",
                             {"client_share": round(client_share, 3),
                              "counts": tev.get("counts")}))
    if not any(c.score >= VOCABULARY.threshold for c in out):
        out.append(Candidate("none", VOCABULARY.threshold,
                             f"errors are above the line ({_pct(max(ratios))}) but no cause "
                             "stands out: read the by-type and by-operation tables and the "
                             "server log", keep))
    return out


def verdict_status(ctx: RunContext, found: list[Candidate] | None = None) -> Status | None:
    """The diagnosis status when the vocabulary's own would mislead: `unknown` when the error
    rate could not be measured, `warning` when errors are high but no cause stands out."""
    return sampled_status(candidates(ctx) if found is None else found, sure=0.9)
