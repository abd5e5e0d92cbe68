"""Runbook §4.1 "Memory Leak" (and §3.2 MemoryLeakSuspected, `process_resident_memory_bytes >
7_000_000_000`): is the server's resident memory growing, how fast, when does it reach the
threshold, and which of §4.1's root causes goes with it.

Where the memory comes from. FraiseQL v2 exports no `process_*` metrics, so the resident set is
read from `/proc/PID/status` (VmRSS), PID from the target's `status_command` (`Main PID: N` of
systemd, `MainPID=N` of `systemctl show`, docker's `.State.Pid` or `"Pid": N`, a bare pid) —
only when the server's host is this machine (`host.is_local`); or from the `resident_memory`
concept (`process_resident_memory_bytes`, process-exporter's resident bytes) when the target's
/metrics exports it. Otherwise the trend is `unknown`, with what to set up.

Over `window_s` seconds, every `interval_s`, one sample holds the RSS, the application role's
connection count in pg_stat_activity and the pool gauges; the admin API's `cache_entries` is
read at the start and the end. Then: the RSS trend (least squares, growth per hour, r²) and its
projected crossing of the §3.2 threshold (and of the host's memory, when smaller), with a plot;
the connection trend; long-running transactions; large results per call (pg_stat_statements);
cache growth; §4.1 step 1 (pprof is Go's: for the Rust server, heaptrack or jemalloc profiling);
and §4.1 step 5, the restart when the trend is critical, run only with execute=True.

A leak is called only when all three hold: the trend line grows at least
`min_growth_mb_per_hour`, it grew at least MIN_WINDOW_GROWTH_BYTES (or 1 % of the RSS) across
the window, and r² >= MIN_R2. A short window therefore sees only fast leaks (about 1 GB/h at
the 20 s default): for a slow one, run with `window_s` of 15 minutes or more.

Diagnosis codes: `unclosed_connections`, `long_running_transactions`, `large_query_results`,
`cache_growth`, `steady_growth`, `no_leak`. With the RSS growing, each cause the steps found is a
candidate (connections growing 0.85, long transactions 0.8, cache growing 0.8, large results
0.7); `steady_growth` (0.75) is the growth with none of them: memory the process keeps per
request or over time, which only a heap profile can place. Without growth: `no_leak`, the other
findings listed below 0.5 as context. RSS not measured: `no_leak` with status `unknown` and the
reason (the vocabulary has no `unknown` code; the status carries it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from fraiseql_rb.checks import host
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import capacity, plots, progress, report, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import commands, metrics, postgres, service

# Limits: defined (value, unit, why) in thresholds.CATALOGUE, named here for this module.
THRESHOLD_BYTES = thresholds.MEMORY_LEAK_RSS_BYTES  # §3.2 MemoryLeakSuspected: RSS > 7e9
MIN_R2 = thresholds.MEMORY_MIN_R2  # below this the samples are not a trend
MIN_WINDOW_GROWTH_BYTES = thresholds.MEMORY_MIN_WINDOW_GROWTH_BYTES  # allocator noise ...
MIN_WINDOW_GROWTH_SHARE = thresholds.MEMORY_MIN_WINDOW_GROWTH_SHARE  # ... as share of the RSS
MIN_CONNECTION_GROWTH = thresholds.MEMORY_MIN_CONNECTION_GROWTH  # connections gained: "growing"
MIN_CACHE_GROWTH = thresholds.MEMORY_MIN_CACHE_GROWTH  # cache entries gained over the window ...
MIN_CACHE_GROWTH_SHARE = thresholds.MEMORY_MIN_CACHE_GROWTH_SHARE  # ... and this much more

VOCABULARY = Vocabulary("memory-leak", {
    "no_leak": "resident memory is not growing over the window: nothing to fix now; if "
               "MemoryLeakSuspected fired, read process_resident_memory_bytes over hours (a "
               "slow leak needs window_s of 15 minutes or more)",
    "steady_growth": "the heap grows with traffic and neither connections, transactions, "
                     "result sizes nor the cache explain it: profile the process (heaptrack -p "
                     "PID, or jemalloc heap profiling with jeprof) and report the growing "
                     "allocation sites with the FraiseQL version; restart (step 5) buys time",
    "unclosed_connections": "the server opens database connections and does not close them: "
                            "run the connection-pool-exhaustion playbook, compare the role's "
                            "sessions with pool_max_size × instances, and set "
                            "idle_session_timeout as a guard",
    "long_running_transactions": "long-open transactions keep their state (and results) alive in "
                                 "the server: end them (connection-pool-exhaustion with execute "
                                 "and confirm), and set idle_in_transaction_session_timeout and "
                                 "statement_timeout for the application role",
    "large_query_results": "statements return very large results that the server holds whole: "
                           "paginate or limit the GraphQL queries behind the statements listed, "
                           "and cap query depth/complexity",
    "cache_growth": "the query cache keeps growing: check its eviction (TTL, maximum entries) in "
                    "the server config, clear it (POST /api/v1/admin/cache/clear) as a stopgap "
                    "and watch the RSS",
}, fallback="no_leak")


def _usable(ctx: RunContext, check_name: str) -> Finding | None:
    found = ctx.latest(check_name)
    return found if found is not None and found.status is not Status.UNKNOWN else None


def _mb(value: float | None) -> str:
    return "?" if value is None else f"{value / 2**20:,.1f} MiB"


# -- step 1: where the resident memory is read from ------------------------------------------

proc_memory = host.process_memory


@dataclass(frozen=True)
class MemorySource:
    """How RSS is read: `proc` (pid) or `metrics` (a concept on /metrics); `None` with why."""

    kind: str | None
    detail: str
    pid: int | None = None
    series: str | None = None


def locate(ctx: RunContext) -> MemorySource:
    """/proc by the status_command's pid on this machine, else the resident_memory concept."""
    url = ctx.target.fraiseql_url
    local = host.is_local(url)
    why = []
    if local and ctx.target.get("status_command"):
        result = commands.run(ctx, "status_command")
        pid = commands.parse_pid(result.stdout + "\n" + result.stderr)
        if pid is None:
            why.append("status_command printed no pid (Main PID: N, MainPID=N, \"Pid\": N)")
        else:
            try:
                proc_memory(pid)
                return MemorySource("proc", f"/proc/{pid}/status VmRSS", pid)
            except (OSError, RuntimeError) as exc:
                why.append(f"/proc/{pid}/status unreadable: {exc}")
    elif local:
        why.append("the target has no status_command to find the server's pid")
    else:
        why.append(f"the server's host ({url}) is not this machine, so /proc cannot be read")
    try:
        page = metrics.scrape(ctx)
        res = metrics.resolve(page, "resident_memory")
        if res is not None:
            return MemorySource("metrics", f"{res.ref} on /metrics", series=str(res.ref))
        why.append("/metrics exports no resident memory (FraiseQL v2 has no process_* metrics)")
    except Exception as exc:  # noqa: BLE001 - one reason among several
        why.append(f"/metrics unreadable: {exc}")
    return MemorySource(None, "; ".join(why))


@check("memory.process")
def check_process(ctx: RunContext) -> Finding:
    """Where the server's resident memory can be read: its pid on this host, or a metric."""
    source = locate(ctx)
    evidence = {"source": source.kind, "detail": source.detail, "pid": source.pid,
                "series": source.series, "local": host.is_local(ctx.target.fraiseql_url)}
    if source.kind is None:
        return ctx.result(Status.UNKNOWN,
                          f"the server's resident memory cannot be read: {source.detail}",
                          evidence, "run this playbook on the FraiseQL host with status_command "
                          "in the inventory (it must print the pid), or export "
                          "process_resident_memory_bytes with process-exporter")
    if source.kind == "proc":
        mem = proc_memory(source.pid or 0)
        evidence.update({k.lower(): v for k, v in mem.items()})
        return ctx.result(Status.INFO,
                          f"server pid {source.pid}: resident {_mb(mem['VmRSS'])} (heap and "
                          f"stacks {_mb(mem.get('RssAnon'))}, peak {_mb(mem.get('VmHWM'))})",
                          evidence)
    return ctx.result(Status.INFO,
                      f"resident memory read from {source.detail}", evidence)


# -- step 2: sampling over the window -----------------------------------------------------------

APP_CONNECTIONS_SQL = """
SELECT count(*) AS connections,
       count(*) FILTER (WHERE state IN ('idle in transaction',
                                        'idle in transaction (aborted)')) AS idle_in_transaction,
       current_setting('max_connections')::int AS max_connections
FROM pg_stat_activity
WHERE usename = current_user AND backend_type = 'client backend'
  AND application_name <> %(own)s
"""


def _source(ctx: RunContext) -> MemorySource:
    found = ctx.latest("memory.process")
    if found is not None and found.evidence.get("source"):
        ev = found.evidence
        return MemorySource(ev["source"], ev.get("detail", ""), ev.get("pid"), ev.get("series"))
    return locate(ctx)


def _cache_reading(ctx: RunContext) -> dict[str, Any]:
    try:
        detail = service.admin_detail(ctx)
    except Exception as exc:  # noqa: BLE001 - recorded with the reading
        return {"at": _now(), "error": secrets.mask(str(exc))}
    return {"at": _now(), "cache_entries": detail.get("cache_entries"),
            "pool_max": detail.get("pool_max"), "uptime_secs": detail.get("uptime_secs")}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@check("memory.samples")
def sample(ctx: RunContext, window_s: float = thresholds.MEMORY_WINDOW_S,
           interval_s: float = thresholds.MEMORY_INTERVAL_S) -> Finding:
    """Every `interval_s` for `window_s`: RSS, the application role's connections and the pool
    gauges; the cache's entries at the start and the end."""
    if interval_s <= 0 or window_s < interval_s:
        raise ValueError(f"need 0 < interval_s <= window_s (got {interval_s}, {window_s})")
    source = _source(ctx)
    errors: dict[str, str] = {}
    cache = [_cache_reading(ctx)]
    conn = None
    try:
        conn = postgres.connect(ctx.target.database_url())
    except Exception as exc:  # noqa: BLE001 - the memory samples still count
        errors["database"] = str(exc)
    count = int(window_s // interval_s) + 1
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    print(f"sampling {count} times, every {interval_s:g} s ({source.detail or 'no RSS'})",
          flush=True)
    try:
        with progress.waiting("sampling the server's memory", window_s):
            for i in range(count):
                time.sleep(max(0.0, began + i * interval_s - time.monotonic()))
                rows.append(_one_sample(ctx, source, conn, began, errors))
                row = rows[-1]
                print(f"  {row['elapsed_s']:6.1f} s  rss {_mb(row['rss_bytes']):>12}  "
                      f"app connections {row['app_connections']}  pool active "
                      f"{row['pool_active']} waiting {row['pool_waiting']}", flush=True)
                if source.kind != "proc" and conn is None \
                        and ctx.unresponsive.hung(ctx.target.fraiseql_url):
                    print("  nothing more to sample: the server hung and no database session",
                          flush=True)
                    break
    finally:
        if conn is not None:
            conn.close()
    cache.append(_cache_reading(ctx))
    table = pd.DataFrame(rows).drop(columns=["at"])
    measured = sum(1 for r in rows if r["rss_bytes"] is not None)
    evidence = {"samples": rows, "cache_readings": cache, "source": source.kind,
                "pid": source.pid, "window_s": window_s, "interval_s": interval_s,
                "rss_samples": measured, "errors": errors,
                "max_connections": next((r["max_connections"] for r in rows
                                         if r.get("max_connections")), None)}
    return ctx.result(Status.INFO,
                      f"{len(rows)} samples over {rows[-1]['elapsed_s']:.0f} s, {measured} with "
                      f"the resident memory"
                      + (f"; not read: {', '.join(sorted(errors))}" if errors else ""),
                      evidence, table=table)


def _one_sample(ctx: RunContext, source: MemorySource, conn: Any, began: float,
                errors: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"at": _now(), "elapsed_s": round(time.monotonic() - began, 2),
                           "rss_bytes": None, "app_connections": None,
                           "app_idle_in_transaction": None, "max_connections": None}
    page = None
    try:
        page = metrics.scrape(ctx)
    except Exception as exc:  # noqa: BLE001
        errors["metrics"] = str(exc)
    for name in ("pool_active", "pool_idle", "pool_total", "pool_waiting"):
        value = metrics.value(page, name) if page is not None else None
        row[name] = int(value) if value is not None else None
    try:
        if source.kind == "proc":
            row["rss_bytes"] = proc_memory(source.pid or 0)["VmRSS"]
        elif source.kind == "metrics" and page is not None:
            value = metrics.value(page, "resident_memory")
            row["rss_bytes"] = int(value) if value is not None else None
    except (OSError, RuntimeError) as exc:
        errors["rss"] = f"{type(exc).__name__}: {exc} (did the process exit?)"
    if conn is not None:
        try:
            found = postgres.one(conn, APP_CONNECTIONS_SQL, {"own": postgres.APPLICATION_NAME})
            row["app_connections"] = found["connections"]
            row["app_idle_in_transaction"] = found["idle_in_transaction"]
            row["max_connections"] = found["max_connections"]
        except Exception as exc:  # noqa: BLE001
            errors["database"] = postgres.first_line(exc)
    return row


def _frame(ctx: RunContext) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The samples as a frame indexed by UTC time, and the sampling finding's evidence."""
    found = _usable(ctx, "memory.samples")
    if found is None:
        raise RuntimeError("no samples: the sampling step did not run or failed")
    frame = pd.DataFrame(found.evidence["samples"])
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("at"), utc=True), name="time")
    return frame, found.evidence


# -- step 3: the RSS trend -----------------------------------------------------------------------

@dataclass(frozen=True)
class Trend:
    fit: capacity.Projection
    first: float
    last: float
    growth_window: float  # bytes the trend line gained across the window
    per_hour: float
    growing: bool


def rss_trend_of(series: pd.Series, min_growth_mb_per_hour: float) -> Trend:
    fit = capacity.linear_projection(series.index, series.to_numpy(dtype=float))
    span_days = (series.index.max() - series.index.min()).total_seconds() / 86400
    growth = fit.slope_per_day * span_days
    per_hour = fit.slope_per_day / 24
    first = float(series.iloc[0])
    floor = max(MIN_WINDOW_GROWTH_BYTES, MIN_WINDOW_GROWTH_SHARE * first)
    growing = (per_hour >= min_growth_mb_per_hour * 2**20 and growth >= floor
               and fit.r2 >= MIN_R2)
    return Trend(fit, first, float(series.iloc[-1]), growth, per_hour, growing)


def _hours(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (moment - now).total_seconds() / 3600


@check("memory.trend")
def rss_trend(ctx: RunContext, threshold_gb: float = THRESHOLD_BYTES / 1e9,
              min_growth_mb_per_hour: float = thresholds.MEMORY_MIN_GROWTH_MB_PER_HOUR,
              critical_hours: float = thresholds.MEMORY_CRITICAL_HOURS) -> Finding:
    """Growth per hour and r² of the RSS samples; when the trend reaches the §3.2 threshold
    (and the host's memory, if smaller and this is the host). Plot: samples, trend, limits."""
    frame, sampled = _frame(ctx)
    series = frame["rss_bytes"].dropna().astype(float)
    if len(series) < 3:
        process = ctx.latest("memory.process")
        why = process.summary if process is not None and process.status is Status.UNKNOWN \
            else f"only {len(series)} RSS samples ({sampled.get('errors') or 'no source'})"
        return ctx.result(Status.UNKNOWN,
                          f"no resident-memory trend: {why}", {"rss_samples": len(series)},
                          "run on the FraiseQL host with status_command set, or export "
                          "process_resident_memory_bytes (process-exporter)")
    trend = rss_trend_of(series, min_growth_mb_per_hour)
    threshold = threshold_gb * 1e9
    lines = [plots.ThresholdLine(threshold, f"§3.2 MemoryLeakSuspected {threshold_gb:g} GB",
                                 "warning")]
    host_bytes = None
    if sampled.get("source") == "proc":
        host_bytes, _ = host.memory_total()
        if host_bytes < threshold:
            lines.append(plots.ThresholdLine(float(host_bytes),
                                             f"host memory {host_bytes / 1e9:.1f} GB",
                                             "critical"))
    last_at = series.index.max().to_pydatetime()
    crossings = [capacity.crossing_time(trend.fit, line.value) if trend.per_hour > 0 else None
                 for line in lines]
    hours = [_hours(c, last_at) for c in crossings]
    soonest = min((h for h in hours if h is not None), default=None)
    report.show(_figure(series, trend, lines, crossings, soonest))
    evidence = {
        "rss_first_bytes": int(trend.first), "rss_last_bytes": int(trend.last),
        "growth_per_hour_bytes": round(trend.per_hour),
        "growth_per_hour_mb": round(trend.per_hour / 2**20, 1),
        "growth_in_window_bytes": round(trend.growth_window), "r2": round(trend.fit.r2, 3),
        "growing": trend.growing, "samples": len(series), "threshold_bytes": threshold,
        "host_memory_bytes": host_bytes,
        "hours_to_threshold": None if hours[0] is None else round(hours[0], 2),
        "hours_to_host_memory": round(hours[1], 2) if len(hours) > 1 and hours[1] is not None
        else None,
        "hours_to_limit": None if soonest is None else round(soonest, 2),
        "min_growth_mb_per_hour": min_growth_mb_per_hour, "critical_hours": critical_hours,
        "min_r2": MIN_R2,
    }
    rate = (f"{trend.per_hour / 2**20:+,.1f} MiB/h (r² {trend.fit.r2:.2f}), "
            f"{_mb(trend.first)} -> {_mb(trend.last)} in {len(series)} samples")
    if not trend.growing:
        above = trend.last > threshold
        return ctx.result(Status.WARNING if above else Status.OK,
                          f"not growing: {rate}"
                          + (f"; but above the {threshold_gb:g} GB threshold" if above else ""),
                          evidence, "high but flat: check the host's headroom and the cache "
                          "size" if above else None)
    when = ("already past it" if soonest is not None and soonest <= 0 else
            f"reaches {lines[hours.index(soonest)].label} in {soonest:.1f} h"
            if soonest is not None else "no limit ahead")
    critical = trend.last > threshold or (soonest is not None and soonest <= critical_hours)
    return ctx.result(Status.CRITICAL if critical else Status.WARNING,
                      f"growing {rate}; {when}", evidence,
                      "restart before the limit (step 5) and find the cause below" if critical
                      else "find the cause below; rerun over a longer window to confirm")


def _figure(series: pd.Series, trend: Trend, lines: list[plots.ThresholdLine],
            crossings: list[datetime | None], soonest: float | None) -> Any:
    """Left: the samples and the fitted line. Right: the projection to the limits."""
    fig, (near, far) = plots.new_figure(1, 2, width=12)
    fitted = pd.Series([trend.fit.value_at(t) for t in series.index], index=series.index,
                       name=f"trend {trend.per_hour / 2**20:+,.1f} MiB/h")
    plots.timeseries(pd.DataFrame({"RSS": series, fitted.name: fitted}),
                     title="Resident memory over the window", ylabel="RSS (bytes)",
                     si_unit="B", ax=near)
    window = series.index.max() - series.index.min()
    horizon = window
    if soonest is not None and 0 < soonest <= 48:
        horizon = max(window, timedelta(hours=soonest * 1.15))
    plots.projection(series, trend.fit, crossings, title="Projection to the limits",
                     ylabel="RSS (bytes)", threshold=lines, horizon=horizon, si_unit="B",
                     ax=far)
    return fig


# -- step 4: connections over the window ---------------------------------------------------------

def _change(values: pd.Series) -> dict[str, Any]:
    values = values.dropna().astype(float)
    if len(values) < 2:
        return {"samples": len(values)}
    fit = capacity.linear_projection(values.index, values.to_numpy())
    days = (values.index.max() - values.index.min()).total_seconds() / 86400
    return {"samples": len(values), "first": values.iloc[0], "last": values.iloc[-1],
            "min": values.min(), "max": values.max(),
            "trend_change": round(fit.slope_per_day * days, 2), "r2": round(fit.r2, 2)}


@check("memory.connections")
def connection_trend(ctx: RunContext) -> Finding:
    """§4.1 "Unclosed connections" / step 2 "Verify connection limits": the application role's
    sessions and the pool gauges over the same window, against pool_max and max_connections."""
    frame, sampled = _frame(ctx)
    series = {"app_connections": "sessions of the application role (pg_stat_activity)",
              "pool_total": "pool connections open", "pool_active": "pool connections in use",
              "pool_waiting": "requests waiting for a connection"}
    rows = [{"series": name, "meaning": meaning, **_change(frame[name])}
            for name, meaning in series.items() if name in frame]
    usable = [r for r in rows if r.get("samples", 0) >= 2]
    if not usable:
        raise RuntimeError("neither pg_stat_activity nor the pool gauges were sampled: "
                           + str(sampled.get("errors")))
    report.show(plots.timeseries(frame[[r["series"] for r in usable]],
                                 title="Connections over the window", ylabel="connections"))
    pool_max = next((c.get("pool_max") for c in sampled.get("cache_readings", [])
                     if c.get("pool_max") is not None), None)
    growing = [r["series"] for r in usable if r["series"] in ("app_connections", "pool_total")
               and max(r["trend_change"], r["last"] - r["first"]) >= MIN_CONNECTION_GROWTH]
    app_last = next((r["last"] for r in usable if r["series"] == "app_connections"), None)
    beyond = (app_last is not None and pool_max is not None
              and app_last > pool_max * len(ctx.target.instances))
    evidence = {"series": rows, "growing": growing, "pool_max": pool_max,
                "instances": len(ctx.target.instances), "app_connections_last": app_last,
                "beyond_pool": beyond, "max_connections": sampled.get("max_connections"),
                "min_growth": MIN_CONNECTION_GROWTH}
    table = pd.DataFrame(rows)
    described = ", ".join(f"{r['series']} {r['first']:g} -> {r['last']:g}" for r in usable)
    if growing or beyond:
        why = []
        if growing:
            why.append(f"growing by {MIN_CONNECTION_GROWTH}+ over the window: "
                       + ", ".join(growing))
        if beyond:
            why.append(f"{app_last:g} sessions of the role exceed pool_max {pool_max} × "
                       f"{len(ctx.target.instances)} instance(s): connections outside the pool")
        return ctx.result(Status.WARNING,
                          f"connections not closed: {'; '.join(why)} ({described})", evidence,
                          "run the connection-pool-exhaustion playbook", table=table)
    limits = ", ".join(f"{name} {value}" for name, value in (
        ("pool_max", pool_max), ("max_connections", sampled.get("max_connections")))
        if value is not None)
    return ctx.result(Status.OK,
                      f"connections steady ({described})" + (f"; {limits}" if limits else ""),
                      evidence, table=table)


# -- step 5: cache ---------------------------------------------------------------------------------

@check("memory.cache")
def cache_growth(ctx: RunContext) -> Finding:
    """§4.1 "Circular references in cache" / step 3 "Check cache eviction policies": the admin
    API's cache_entries at the start and the end of the window."""
    _, sampled = _frame(ctx)
    readings = sampled.get("cache_readings") or []
    values = [r.get("cache_entries") for r in readings]
    evidence = {"readings": readings, "min_growth": MIN_CACHE_GROWTH,
                "min_growth_share": MIN_CACHE_GROWTH_SHARE}
    if len(values) < 2 or any(v is None for v in values):
        errors = [r.get("error") for r in readings if r.get("error")]
        reason = errors[0] if errors else "the server reports no cache_entries (cache off?)"
        return ctx.result(Status.UNKNOWN, f"cache size not read: {reason}",
                          evidence, "enable the admin API (admin_api_enabled, admin_token) and "
                          "name admin_token_env/_file in the inventory")
    first, last = int(values[0]), int(values[-1])
    grew = last - first
    evidence.update({"first": first, "last": last, "growth": grew})
    growing = grew >= MIN_CACHE_GROWTH and grew >= MIN_CACHE_GROWTH_SHARE * max(first, 1)
    evidence["growing"] = growing
    if growing:
        return ctx.result(Status.WARNING,
                          f"the query cache grew from {first} to {last} entries over the window",
                          evidence, "check the cache's TTL and maximum entries; clear it as a "
                          "stopgap (POST /api/v1/admin/cache/clear)")
    return ctx.result(Status.OK,
                      f"cache steady: {first} -> {last} entries over the window", evidence)


# -- step 6: long-running transactions ---------------------------------------------------------

@check("memory.long_transactions")
def long_transactions(ctx: RunContext,
                      long_transaction_s: float = thresholds.LONG_TRANSACTION_S) -> Finding:
    """§4.1 "Long-running transactions" / step 4: the application role's transactions open
    longer than `long_transaction_s` (xact_start)."""
    role = postgres.url_user(ctx.target.database_url())
    with postgres.connect(ctx.target.database_url()) as conn:
        found = postgres.sessions(conn)
    long = sorted((s for s in found if postgres.is_server_session(s, role)
                   and (s["xact_s"] or 0) > long_transaction_s), key=lambda s: -s["xact_s"])
    rows = [{"pid": s["pid"], "application": s["application"], "state": s["state"],
             "xact_s": round(s["xact_s"], 1), "idle_s": round(s["state_s"] or 0, 1),
             "query": s["query"]} for s in long]
    evidence = {"pids": [s["pid"] for s in long], "count": len(long), "role": role,
                "longest_s": rows[0]["xact_s"] if rows else None,
                "long_transaction_s": long_transaction_s, "transactions": rows[:50]}
    if not long:
        return ctx.result(Status.OK,
                          f"no transaction of {role} open longer than {long_transaction_s:g} s",
                          evidence)
    return ctx.result(Status.WARNING,
                      f"{len(long)} transaction(s) of {role} open longer than "
                      f"{long_transaction_s:g} s (longest {rows[0]['xact_s']} s)", evidence,
                      "find their code path; end them with the connection-pool-exhaustion "
                      "playbook (execute and confirm)", table=pd.DataFrame(rows))


# -- step 7: large results per call ------------------------------------------------------------

STATEMENTS_SQL = """
SELECT s.queryid::text AS queryid, left(s.query, 160) AS query, s.calls, s.rows,
       round((s.rows::numeric / NULLIF(s.calls, 0)), 1)::float8 AS rows_per_call
FROM pg_stat_statements s
WHERE s.userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.calls > 0
  AND s.query !~* 'pg_stat_(statements|activity)|pg_catalog|current_setting'
ORDER BY rows_per_call DESC NULLS LAST, s.calls DESC
LIMIT %(limit)s
"""
EXTENSION_SQL = "SELECT 1 AS present FROM pg_extension WHERE extname = 'pg_stat_statements'"


@check("memory.large_results")
def large_results(ctx: RunContext, large_result_rows: int = thresholds.LARGE_RESULT_ROWS,
                  top_n: int = thresholds.TOP_N) -> Finding:
    """§4.1 "Large query results": the application role's statements by rows returned per
    call (pg_stat_statements, cumulative since its last reset), when the extension is there."""
    with postgres.connect(ctx.target.database_url()) as conn:
        if not postgres.rows(conn, EXTENSION_SQL):
            return ctx.result(Status.UNKNOWN,
                              "pg_stat_statements is not installed in this database, so result "
                              "sizes per call cannot be read", {},
                              "add pg_stat_statements to shared_preload_libraries and CREATE "
                              "EXTENSION pg_stat_statements")
        found = postgres.rows(conn, STATEMENTS_SQL, {"limit": int(top_n)})
    for row in found:
        row["query"] = secrets.mask(" ".join(str(row["query"]).split()))
    large = [r for r in found if (r["rows_per_call"] or 0) >= large_result_rows]
    evidence = {"statements": found, "large": len(large), "threshold_rows": large_result_rows,
                "largest_rows_per_call": found[0]["rows_per_call"] if found else None}
    table = pd.DataFrame(found) if found else None
    if large:
        return ctx.result(Status.WARNING,
                          f"{len(large)} statement(s) return {large_result_rows:,}+ rows per call "
                          f"(largest {large[0]['rows_per_call']:,.0f})", evidence,
                          "paginate or limit the GraphQL queries behind them", table=table)
    top = f"largest {found[0]['rows_per_call']:,.1f} rows per call" if found else "none recorded"
    return ctx.result(Status.OK,
                      f"no statement returns {large_result_rows:,}+ rows per call ({top})",
                      evidence, table=table)


# -- step 8: §4.1 step 1, the memory profile -----------------------------------------------------

@check("manual.memory_profile")
def memory_profile(ctx: RunContext) -> Finding:
    """§4.1 step 1 says `pprof`: that is Go's profiler and does not apply to the Rust server.
    What to run instead, with this server's pid; and its memory split from /proc when local."""
    found = ctx.latest("memory.process")
    pid = found.evidence.get("pid") if found is not None else None
    target = str(pid) if pid else "PID"
    steps = [
        f"heaptrack --pid {target}  (attach for a few minutes of traffic, then heaptrack_print "
        "or heaptrack_gui on the file: the allocation sites that grow)",
        "jemalloc builds: start with MALLOC_CONF=prof:true,prof_active:true,lg_prof_interval:30 "
        "and compare two dumps with jeprof --base=OLD NEW",
        "in staging: valgrind --tool=massif or bytehound (LD_PRELOAD) under replayed traffic",
        f"quick look on the host: grep -E 'Rss|VmHWM' /proc/{target}/status (RssAnon is heap) "
        f"and pmap -x {target} | sort -k3 -n | tail",
    ]
    evidence: dict[str, Any] = {"pid": pid, "instead_of": "pprof (Go only)", "steps": steps}
    if pid:
        try:
            evidence.update({k.lower(): v for k, v in proc_memory(int(pid)).items()})
        except (OSError, RuntimeError) as exc:
            evidence["proc_error"] = str(exc)
    for line in steps:
        print(f"  - {line}")
    anon = evidence.get("rssanon")
    split = (f"; now {_mb(anon)} of {_mb(evidence.get('vmrss'))} resident is heap/stacks "
             "(RssAnon)" if anon is not None else "")
    return ctx.result(Status.INFO,
                      "§4.1 step 1 (pprof) does not apply to the Rust server: profile the heap "
                      f"with heaptrack or jemalloc's profiler{split}", evidence,
                      "run one of the steps listed if the diagnosis points at the process")


# -- step 9: §4.1 step 5, restart if critical --------------------------------------------------

def restart_if_critical(ctx: RunContext, wait_s: float = thresholds.RESTART_WAIT_S) -> Finding:
    """§4.1 step 5 "Restart service if critical": when the trend is critical, the target's
    restart_command, only with execute=True (then wait for health); otherwise recorded. A
    restart resets the memory, not the leak: healthy again is still a warning."""
    trend = ctx.latest("memory.trend")
    if trend is None or trend.status is not Status.CRITICAL:
        state = "not measured" if trend is None or trend.status is Status.UNKNOWN else \
            trend.status.value
        return service_checks.restart(ctx, False, f"the memory trend is {state}, not critical")
    return service_checks.restart(ctx, True, f"resident memory is critical ({trend.summary})",
                                  wait_s=wait_s, leaves="memory is reset, the leak is not fixed")


# -- the diagnosis -----------------------------------------------------------------------------

def candidates(ctx: RunContext) -> list[Candidate]:
    """The §4.1 causes the recorded steps support (rules in the module docstring)."""
    trend = _usable(ctx, "memory.trend")
    conns = _usable(ctx, "memory.connections")
    cache = _usable(ctx, "memory.cache")
    txns = _usable(ctx, "memory.long_transactions")
    large = _usable(ctx, "memory.large_results")
    causes: list[tuple[str, float, str, dict[str, Any]]] = []
    if conns is not None and conns.status is Status.WARNING:
        causes.append(("unclosed_connections", 0.85, conns.summary,
                       {k: conns.evidence.get(k) for k in ("growing", "beyond_pool")}))
    if txns is not None and txns.evidence.get("count"):
        causes.append(("long_running_transactions", 0.8, txns.summary,
                       {"pids": txns.evidence.get("pids")}))
    if cache is not None and cache.evidence.get("growing"):
        causes.append(("cache_growth", 0.8, cache.summary,
                       {k: cache.evidence.get(k) for k in ("first", "last")}))
    if large is not None and large.evidence.get("large"):
        causes.append(("large_query_results", 0.7, large.summary,
                       {"largest_rows_per_call": large.evidence.get("largest_rows_per_call")}))
    if trend is None:
        found = ctx.latest("memory.trend")
        why = found.summary if found is not None else "the trend step did not run"
        return [Candidate("no_leak", 0.5, f"resident memory was not measured, so a leak can be "
                          f"neither confirmed nor ruled out ({why})", {})] + [
            Candidate(code, 0.3, f"seen, but unrelated to a measured growth: {text}", ev)
            for code, _, text, ev in causes]
    tev = trend.evidence
    growth = {k: tev.get(k) for k in ("growth_per_hour_mb", "r2", "hours_to_limit")}
    if not tev.get("growing"):
        return [Candidate("no_leak", 0.9, trend.summary, growth)] + [
            Candidate(code, 0.3, f"present, but the RSS is not growing: {text}", ev)
            for code, _, text, ev in causes]
    rate = f"RSS grows {tev['growth_per_hour_mb']:+,.1f} MiB/h (r² {tev['r2']})"
    out = [Candidate(code, score, f"{rate} and {text}", {**ev, **growth})
           for code, score, text, ev in causes]
    if causes:
        out.append(Candidate("steady_growth", 0.35, f"{rate}; other causes found first",
                             growth))
    else:
        out.append(Candidate("steady_growth", 0.75,
                             f"{rate} with the connections, transactions, result sizes and "
                             "cache all steady: memory kept by the process itself", growth))
    return out


def verdict_status(ctx: RunContext) -> Status | None:
    """The diagnosis' status for `diagnosis.conclude(..., status=...)`: the trend's (warning
    or critical) for a leak, unknown when RSS was not measured, None (ok) for no_leak."""
    trend = _usable(ctx, "memory.trend")
    if trend is None:
        return Status.UNKNOWN
    if not trend.evidence.get("growing"):
        return None
    return trend.status if trend.status in (Status.WARNING, Status.CRITICAL) else Status.WARNING
