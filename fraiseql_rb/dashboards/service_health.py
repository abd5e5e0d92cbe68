"""Service health dashboard (runbook §9.2): is FraiseQL up, how much does it serve, and how
do its answers split between 2xx, 4xx and 5xx.

Thresholds: §3.2 FraiseQLDown (`up{job="fraiseql"} == 0`, critical) and §3.2
HighDatabaseErrorRate (more than 10 database errors a second, critical). The runbook sets no
limit on 4xx or 5xx shares, so those are shown and reported, not judged. The health of the
server right now is `service.check_health`, called by the notebook.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from fraiseql_rb.core import plots
from fraiseql_rb.core.findings import Finding, Status

from .board import (
    DB_ERRORS_PER_S,
    PROMETHEUS,
    Board,
    Rate,
    Ratio,
    Up,
    board_check,
    fmt_time,
    how_read,
    level,
    no_data,
    safe_figure,
)

AVAILABILITY = {
    "up (1 = scraped)": Up(),
    "requests without 5xx": Ratio(Rate("http_5xx"), (Rate("http_requests"),), complement=True),
}
TRAFFIC = {"HTTP requests": Rate("http_requests"), "GraphQL queries": Rate("queries_total")}
RESPONSES = {"2xx": Rate("http_2xx"), "4xx": Rate("http_4xx"), "5xx": Rate("http_5xx"),
             "database errors": Rate("db_errors")}


@safe_figure("availability")
def availability_figure(board: Board) -> Figure:
    """`up` and the share of requests answered without a 5xx, with §3.2's down line."""
    panel = board.panel(AVAILABILITY)
    down = plots.ThresholdLine(0.0, "§3.2 FraiseQLDown: up == 0", "critical")
    return board.figure(panel, title="Availability", ylabel="fraction (1 = all well)",
                        thresholds=[down])


@board_check("dashboard.availability")
def check_availability(board: Board) -> Finding:
    """Critical when the last scrape failed, warning when the job was down at some point in
    the range (the FraiseQLDown condition held for a whole step), ok otherwise."""
    run, panel = board.run, board.panel(AVAILABILITY)
    up_label = board.label_of(panel, "up (1 = scraped)")
    share_label = board.label_of(panel, "requests without 5xx")
    up_now, (up_low, low_at) = panel.latest(up_label), panel.low(up_label)
    share = panel.values(share_label)
    evidence = {**panel.evidence(), "up_now": up_now, "up_lowest": up_low,
                "down_at": fmt_time(low_at) if up_low == 0 else None,
                "share_without_5xx_mean": round(float(share.mean()), 5) if len(share) else None,
                "share_without_5xx_lowest": round(float(share.min()), 5) if len(share) else None}
    if panel.source == PROMETHEUS and len(panel.values(up_label)):
        evidence["up_recorded_since"] = fmt_time(panel.values(up_label).index.min())
    if up_now is None and not len(share):
        return no_data(run, "dashboard.availability", panel, "availability")
    mean = f"{share.mean():.3%} of requests answered without 5xx" if len(share) else (
        "no requests to judge")
    if up_now == 0:
        return run.record("dashboard.availability", Status.CRITICAL,
                          f"the last scrape of job {board.job!r} failed (up == 0): FraiseQL is "
                          f"down or unreachable; {mean}", evidence,
                          "run the service-down playbook (fraiseql-rb run service-down)")
    if up_low == 0:
        return run.record("dashboard.availability", Status.WARNING,
                          f"up now, but job {board.job!r} was down in the range (first low "
                          f"{fmt_time(low_at)}); {mean}", evidence,
                          "read the server log around that time (logs_command)")
    where = "over the range" if panel.source == PROMETHEUS else "between the two scrapes"
    return run.record("dashboard.availability", Status.OK, f"up {where}; {mean}", evidence)


@safe_figure("request rate")
def traffic_figure(board: Board) -> Figure:
    """HTTP requests and GraphQL queries per second."""
    return board.figure(board.panel(TRAFFIC), title="Request rate", ylabel="requests/s")


@safe_figure("responses")
def responses_figure(board: Board, db_errors_per_s: float = DB_ERRORS_PER_S) -> Figure:
    """Answers per second by class, and database errors against §3.2's 10/s."""
    line = plots.ThresholdLine(db_errors_per_s,
                               f"§3.2 database errors > {db_errors_per_s:g}/s", "critical")
    return board.figure(board.panel(RESPONSES), title="Responses by class and database errors",
                        ylabel="responses/s", thresholds=[line])


@board_check("dashboard.db_errors")
def check_errors(board: Board, db_errors_per_s: float = DB_ERRORS_PER_S) -> Finding:
    """§3.2 HighDatabaseErrorRate: critical above 10 database errors a second. The 4xx and
    5xx rates are reported alongside (the runbook sets no limit on them)."""
    run, panel = board.run, board.panel(RESPONSES)
    label = board.label_of(panel, "database errors")
    peak, at = panel.peak(label)
    evidence = {**panel.evidence(), "db_errors_per_s_peak": peak, "peak_at": fmt_time(at),
                "limit_per_s": db_errors_per_s}
    for cls in ("2xx", "4xx", "5xx"):
        values = panel.values(board.label_of(panel, cls))
        evidence[f"{cls}_per_s_mean"] = round(float(values.mean()), 4) if len(values) else None
    if peak is None:
        return no_data(run, "dashboard.db_errors", panel, "database errors")
    status = level(peak, db_errors_per_s, db_errors_per_s)
    note = " (approximated by execution errors)" if "database errors" in panel.approximate else ""
    summary = (f"database errors{note}: at most {peak:.3g}/s {how_read(panel)}"
               f"{' at ' + fmt_time(at) if panel.source == PROMETHEUS else ''}, limit "
               f"{db_errors_per_s:g}/s; 5xx {evidence['5xx_per_s_mean']}/s on average")
    remediation = None if status is Status.OK else (
        "run the database-unavailable playbook; the server log says which queries fail")
    return run.record("dashboard.db_errors", status, summary, evidence, remediation)
