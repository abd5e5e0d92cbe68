"""Performance dashboard (runbook §9.2): GraphQL latency percentiles, query rate, database
query duration and the query-cache hit ratio.

Percentiles are `histogram_quantile` over bucket rates summed by `le` (all operations and
instances together), as §3.2's HighQueryLatency reads them. Thresholds: §6.1 scale up when
P95 > 2 s (warning), §3.2 HighQueryLatency at P99 > 5 s (critical), §3.2 LowCacheHitRatio
below 0.7 (warning).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.findings import Finding, Status

from .board import (
    CACHE_HIT_FLOOR,
    LATENCY_CRITICAL_S,
    LATENCY_WARNING_S,
    PROMETHEUS,
    Board,
    Gauge,
    Quantile,
    Rate,
    Ratio,
    board_check,
    fmt_time,
    how_read,
    judge_latency,
    level,
    no_data,
    safe_figure,
)

WARNING_S, CRITICAL_S = LATENCY_WARNING_S, LATENCY_CRITICAL_S
MIN_LOOKUPS = thresholds.CACHE_MIN_LOOKUPS  # fewer make no ratio worth judging

LATENCY = {f"p{round(q * 100)}": Quantile("query_duration", q) for q in (0.5, 0.95, 0.99)}
DB_LATENCY = {f"p{round(q * 100)}": Quantile("db_query_duration", q) for q in (0.5, 0.95, 0.99)}
QUERY_RATE = {"GraphQL queries": Rate("queries_total"), "failed": Rate("queries_error"),
              "database queries": Rate("db_queries_total")}
CACHE = {
    "hit ratio in window": Ratio(Rate("cache_hits"), (Rate("cache_hits"), Rate("cache_misses"))),
    "hit ratio since start": Gauge("cache_hit_ratio"),
}


@safe_figure("GraphQL latency")
def latency_figure(board: Board, warning_s: float = WARNING_S,
                   critical_s: float = CRITICAL_S) -> Figure:
    """GraphQL p50/p95/p99 (log scale) with §6.1's 2 s and §3.2's 5 s lines."""
    return board.figure(board.panel(LATENCY), title="GraphQL query latency", ylabel="latency (s)",
                        thresholds=plots.latency_lines(warning_s, critical_s), si_unit="s",
                        log=True)


@board_check("dashboard.latency")
def check_latency(board: Board, warning_s: float = WARNING_S,
                  critical_s: float = CRITICAL_S) -> list[Finding]:
    """`dashboard.latency_p95` and `dashboard.latency_p99` for GraphQL queries."""
    return judge_latency(board, board.panel(LATENCY), "dashboard.latency", "GraphQL",
                          warning_s, critical_s)


@safe_figure("query rate")
def query_rate_figure(board: Board) -> Figure:
    """GraphQL queries per second (and failed ones), and queries sent to PostgreSQL."""
    return board.figure(board.panel(QUERY_RATE), title="Query rate", ylabel="queries/s")


@safe_figure("database query duration")
def db_latency_figure(board: Board, warning_s: float = WARNING_S,
                      critical_s: float = CRITICAL_S) -> Figure:
    """PostgreSQL query p50/p95/p99 as the server measures them, against the same lines: a
    database query above them alone breaks the GraphQL targets."""
    return board.figure(board.panel(DB_LATENCY), title="Database query duration",
                        ylabel="duration (s)",
                        thresholds=plots.latency_lines(warning_s, critical_s),
                        si_unit="s", log=True)


@board_check("dashboard.db_latency")
def check_db_latency(board: Board, warning_s: float = WARNING_S,
                     critical_s: float = CRITICAL_S) -> list[Finding]:
    """`dashboard.db_latency_p95` and `dashboard.db_latency_p99`."""
    return judge_latency(board, board.panel(DB_LATENCY), "dashboard.db_latency",
                          "database query", warning_s, critical_s)


@safe_figure("query cache")
def cache_figure(board: Board, floor: float = CACHE_HIT_FLOOR) -> Figure:
    """Query-cache hit ratio: per rate window (hits / lookups) and the server's lifetime
    gauge, which is what §3.2's LowCacheHitRatio reads, with its 0.7 line."""
    line = plots.ThresholdLine(floor, f"§3.2 LowCacheHitRatio < {floor:g}", "warning")
    return board.figure(board.panel(CACHE), title="Query-cache hit ratio",
                        ylabel="hit ratio (0-1)", thresholds=[line])


@board_check("dashboard.cache_hit_ratio")
def check_cache(board: Board, floor: float = CACHE_HIT_FLOOR) -> Finding:
    """Warning when the hit ratio fell below 0.7 (§3.2) in a window with enough lookups to
    mean something; the lifetime gauge judges when no window does."""
    run, panel = board.run, board.panel(CACHE)
    window_label = board.label_of(panel, "hit ratio in window")
    ratios = panel.values(window_label)
    hits = board.panel({"hits/s": Rate("cache_hits")}).values("hits/s")
    misses = board.panel({"misses/s": Rate("cache_misses")}).values("misses/s")
    span = board.window_s if board.source == PROMETHEUS else board.sample_interval_s
    counted = hits.add(misses, fill_value=0) * span  # lookups per window
    judged = ratios[ratios.index.isin(counted[counted >= MIN_LOOKUPS].index)]
    lifetime = panel.latest(board.label_of(panel, "hit ratio since start"))
    evidence = {**panel.evidence(), "floor": floor, "min_lookups_per_window": MIN_LOOKUPS,
                "windows_judged": len(judged), "lifetime_ratio": lifetime}
    if len(judged):
        low, at = float(judged.min()), judged.idxmin().to_pydatetime()
        evidence.update({"lowest": round(low, 4), "lowest_at": fmt_time(at),
                         "mean": round(float(judged.mean()), 4)})
        basis = f"lowest {low:.2f} {how_read(panel)}" + (
            f" at {fmt_time(at)}" if board.source == PROMETHEUS else "")
    elif lifetime is not None:
        low, basis = lifetime, f"lifetime ratio {lifetime:.2f} (too few lookups per window)"
    else:
        return no_data(run, "dashboard.cache_hit_ratio", panel, "the query cache")
    status = level(low, floor, higher_is_worse=False)
    remediation = None if status is Status.OK else (
        "check the cache backend (Redis) and the cache TTLs; a cold cache after a restart "
        "recovers by itself")
    return run.record("dashboard.cache_hit_ratio", status,
                      f"query-cache hit ratio: {basis}, floor {floor:g}", evidence, remediation)
