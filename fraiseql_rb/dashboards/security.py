"""Security dashboard (runbook §9.2, with the reviews of §8.1): failed authentications,
rate-limited (429) and rejected requests from the metrics, and the audit log's events per
hour by type and the client addresses behind them.

FraiseQL v2 has no dedicated auth-failure or rate-limit counter: its nearest metric is every
4xx answer (`metrics.CATALOG` says so, and the figure's legend names the series it read).
The audit table is exact: PostgreSQL counts its rows per hour and type (`AUDIT_BY_HOUR_SQL`)
and per client address (`TOP_IPS_SQL`), so only aggregated rows leave the database. The
runbook sets no numeric limit on these; the findings report them, and only a silent audit
log (no events at all over the range) is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import postgres

from .board import PROMETHEUS, Board, Rate, board_check, fmt_time, no_data, records, safe_figure

AUDIT_TABLE = "fraiseql_audit_logs"  # runbook §8.1
# The events §8.1's daily and weekly reviews count.
SECURITY_EVENTS = ("authentication_failed", "sql_injection_attempt", "csrf_failure",
                   "rate_limit_exceeded")
# Concepts of the security panel, in legend order (§3.1 "Security metrics").
SECURITY_CONCEPTS = ("auth_failures", "rate_limited", "csrf_failures", "sql_injection_attempts",
                     "jwt_replays_rejected", "rate_limit_fail_open")
TOP_IPS = thresholds.TOP_N

# Events per UTC hour and type over the range: at most hours x types rows leave PostgreSQL.
AUDIT_BY_HOUR_SQL = """
SELECT date_trunc('hour', "timestamp", 'UTC') AS hour, event_type, count(*) AS events
FROM fraiseql_audit_logs
WHERE "timestamp" >= %(since)s AND "timestamp" < %(until)s
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The client addresses with the most security events (then the most events) over the range.
TOP_IPS_SQL = """
SELECT host(ip_address) AS ip,
       count(*) FILTER (WHERE event_type = ANY(%(security)s)) AS security_events,
       count(*) FILTER (WHERE NOT event_type = ANY(%(security)s)) AS other_events,
       count(*) FILTER (WHERE event_type = 'authentication_failed') AS failed_logins,
       count(*) FILTER (WHERE event_type = 'rate_limit_exceeded') AS rate_limited,
       count(DISTINCT user_id) AS users,
       max("timestamp") AS last_seen
FROM fraiseql_audit_logs
WHERE "timestamp" >= %(since)s AND "timestamp" < %(until)s AND ip_address IS NOT NULL
GROUP BY ip_address
ORDER BY security_events DESC, count(*) DESC, ip
LIMIT %(limit)s
"""


# -- metrics -------------------------------------------------------------------------------

def metric_signals(board: Board) -> dict[str, Rate]:
    """One line per distinct series: concepts v2 serves from the same counter (auth failures,
    429s and CSRF failures all read fraiseql_http_responses_4xx) share a line whose legend
    says so."""
    groups: dict[str, list[str]] = {}
    approx: dict[str, bool] = {}
    for concept in SECURITY_CONCEPTS:
        found = board.series_name(concept)
        if found is not None:
            groups.setdefault(found[0], []).append(concept)
            approx[found[0]] = approx.get(found[0], False) or found[1]
    return {(f"{' / '.join(cs)} (≈ {name})" if approx[name] else " / ".join(cs)): Rate(cs[0])
            for name, cs in groups.items()}


@safe_figure("security metrics")
def metrics_figure(board: Board) -> Figure:
    """Security-relevant rejections per second from the server's metrics."""
    return board.figure(board.panel(metric_signals(board)),
                        title="Auth failures, 4xx and rate limiting", ylabel="requests/s")


@board_check("dashboard.security_metrics")
def check_metrics(board: Board) -> Finding:
    """What the metrics say, with the caveat of approximate names (info: no runbook limit)."""
    run, panel = board.run, board.panel(metric_signals(board))
    if panel.empty:
        return no_data(run, "dashboard.security_metrics", panel, "security metrics")
    rates = {}
    for label in panel.frame["series"].unique():
        values = panel.values(label)
        peak, at = panel.peak(label)
        rates[label] = {"mean_per_s": round(float(values.mean()), 4), "peak_per_s": peak,
                        "peak_at": fmt_time(at) if board.source == PROMETHEUS else None}
    first, stats = next(iter(rates.items()))
    peak = stats["peak_per_s"]  # None when every sample of the series was NaN
    summary = (f"{first}: {stats['mean_per_s']:.3g}/s on average, at most "
               + ("?" if peak is None else f"{peak:.3g}") + "/s")
    if panel.approximate:
        summary += "; v2 counts every 4xx there, so the audit log below is the exact record"
    return run.record("dashboard.security_metrics", Status.INFO, summary,
                      {**panel.evidence(), "rates": rates})


# -- the audit log -------------------------------------------------------------------------

@dataclass(frozen=True)
class Audit:
    by_hour: pd.DataFrame  # hour, event_type, events (zero-filled)
    top_ips: pd.DataFrame
    since: Any
    until: Any


def _fill_hours(rows: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """Every hour of the range for every type seen, 0 where nothing happened (a quiet hour is
    a zero, not a gap in the line)."""
    if rows.empty:
        return pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]"),
                             "series": pd.Series(dtype=object),
                             "value": pd.Series(dtype=float)})
    rows = rows.assign(hour=pd.to_datetime(rows["hour"], utc=True))
    wide = rows.pivot_table(index="hour", columns="event_type", values="events",
                            aggfunc="sum", fill_value=0)
    hours = pd.date_range(since.floor("h"), until.floor("h"), freq="h", tz="UTC")
    wide = wide.reindex(hours, fill_value=0)
    wide.index.name = "time"
    long = wide.reset_index().melt(id_vars="time", var_name="series", value_name="value")
    return long.astype({"value": float})


def audit(board: Board) -> Audit:
    """Both audit queries, once per run, in one read-only session."""

    def fetch() -> Audit:
        params = {"since": board.start, "until": board.end, "security": list(SECURITY_EVENTS),
                  "limit": TOP_IPS}
        with postgres.connect(board.run.target.database_url()) as conn:
            by_hour = pd.DataFrame(postgres.rows(conn, AUDIT_BY_HOUR_SQL, params),
                                   columns=["hour", "event_type", "events"])
            top = pd.DataFrame(postgres.rows(conn, TOP_IPS_SQL, params),
                               columns=["ip", "security_events", "other_events",
                                        "failed_logins", "rate_limited", "users", "last_seen"])
        since, until = pd.Timestamp(board.start), pd.Timestamp(board.end)
        return Audit(_fill_hours(by_hour, since, until), top, board.start, board.end)

    return board.memo("audit", fetch)


@safe_figure("security events")
def security_events_figure(board: Board) -> Figure:
    """§8.1's security events per hour, from the audit table."""
    data = audit(board).by_hour
    shown = data[data["series"].isin(SECURITY_EVENTS)]
    return plots.timeseries(shown, title=f"Security events per hour (audit log, last "
                                         f"{board.range_text})",
                            ylabel="events/hour")


def event_totals(board: Board) -> pd.Series:
    data = audit(board).by_hour
    return data.groupby("series")["value"].sum().sort_values(ascending=False).astype(int)


@safe_figure("audit events")
def event_totals_figure(board: Board) -> Figure:
    """Every event type's total over the range: the benign bulk beside the security events."""
    totals = event_totals(board).rename("events")
    return plots.bar(totals, title=f"Audit events by type (audit log, last {board.range_text})",
                     xlabel="event type", ylabel="events", horizontal=True)


@safe_figure("client addresses")
def top_ips_figure(board: Board) -> Figure:
    """The client addresses with the most security events, their other events stacked on."""
    top = audit(board).top_ips
    fig = plots.bar(top, x="ip", y=["security_events", "other_events"], horizontal=True,
                    title=f"Top client addresses by security events (audit log, last "
                          f"{board.range_text})",
                    xlabel="client address", ylabel="events")
    if fig.axes[0].get_legend() is not None:  # the longest bars are at the top left
        fig.axes[0].legend(fontsize="small", loc="lower right", framealpha=0.8)
    return fig


@board_check("dashboard.audit_events")
def check_audit(board: Board) -> Finding:
    """ok with the §8.1 counts; warning when the audit log recorded nothing over the range
    (on a serving system that means audit logging is off or broken)."""
    run, data = board.run, audit(board)
    totals = event_totals(board)
    counts = {t: int(totals.get(t, 0)) for t in SECURITY_EVENTS}
    evidence = {"table": AUDIT_TABLE, "since": data.since, "until": data.until,
                "events": int(totals.sum()), "by_type": {k: int(v) for k, v in totals.items()},
                "security_events": counts}
    if not int(totals.sum()):
        return run.record("dashboard.audit_events", Status.WARNING,
                          f"the audit log recorded no event in the last {board.range_text}",
                          evidence, "check that audit logging is enabled and writes to "
                                    f"{AUDIT_TABLE}")
    listed = ", ".join(f"{k} {v}" for k, v in counts.items())
    return run.record("dashboard.audit_events", Status.OK,
                      f"{int(totals.sum())} audit events in the last {board.range_text}, "
                      f"{sum(counts.values())} of them security events ({listed})", evidence,
                      table=totals.rename("events").reset_index().rename(
                          columns={"series": "event_type"}))


@board_check("dashboard.top_ips")
def check_top_ips(board: Board) -> Finding:
    """The addresses a reviewer looks at first (info: the runbook sets no limit)."""
    top = audit(board).top_ips
    rows = records(top.head(3))
    if top.empty:
        summary = f"no client address in the audit log over the last {board.range_text}"
    else:
        lead = rows[0]
        summary = (f"most security events from {lead['ip']}: {lead['security_events']} "
                   f"({lead['failed_logins']} failed logins, {lead['rate_limited']} "
                   f"rate-limited) over the last {board.range_text}")
    return board.run.record("dashboard.top_ips", Status.INFO, summary, {"top": rows},
                            table=top)
