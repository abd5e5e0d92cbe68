"""Capacity planning dashboard (runbook §9.2 with §6.1's "When to Scale Up"): connections,
database size, disk and memory, each with its history, a straight-line trend
(`capacity.linear_projection`) and the date the trend reaches §6.1's line
(`capacity.crossing_time`), drawn by `plots.projection`.

Where each history comes from:

* **connections**: the pool's busiest moment per step (`pool_active`, Prometheus) against
  the pool's maximum, §6.1 80 % (warning) and §3.2 90 % (critical); without Prometheus,
  PostgreSQL's client connections (`pgstats.connections`) against max_connections.
* **database size**: a size series in Prometheus when one exists (postgres_exporter's
  `pg_database_size_bytes`); otherwise an *estimate* from the audit log, the table that
  grows with traffic: the rows it gained per hour over the range, times its average row size
  on disk (`pg_total_relation_size` / rows, so indexes and TOAST count), subtracted back from
  today's `pg_database_size`. The estimate assumes the other tables stay the same size and no
  retention job deleted audit rows in the range; either makes the real growth smaller.
* **disk**: the fullest filesystem `host.check_disk` finds for the target, today's usage
  walked back with the database's growth, against §6.1 80 % and 90 %.
* **memory**: the server's resident memory from a metric when it exports one
  (`resident_memory`), else from /proc on this machine by the pid in the target's
  `status_command` output ("Main PID:"), against §6.1 75 % (and 90 %) of this machine's memory.

A trend needs history: one shorter than `MIN_TREND_SPAN` (a few samples taken during the
run) is drawn but not projected, and only the current value is judged. Findings per resource
(`capacity.<resource>`): critical when the value is already past the critical line, warning
when the trend reaches a line within the horizon (or is past the warning line now), info
otherwise, with the dates in the evidence.
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.checks import host
from fraiseql_rb.core import capacity, plots, thresholds, timespec
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import commands, metrics, pgstats, postgres, prometheus

from .board import (
    POOL_ALERT_SHARE,
    PROMETHEUS,
    Board,
    Gauge,
    board_check,
    fmt_time,
    pool_capacity,
    pool_lines,
)

HORIZON = thresholds.CAPACITY_HORIZON  # a line reached within it is a warning
MIN_TREND_SPAN = timedelta(hours=6)  # less history than this is not a trend worth a date
SAMPLES = thresholds.CAPACITY_SAMPLES  # direct samples, spread over sample_interval_s
# postgres_exporter's size gauge (not in metrics.CATALOG, which covers FraiseQL's own series)
DATABASE_SIZE_SERIES = "pg_database_size_bytes"

# Rows the audit log gained per UTC hour since the range began (aggregated in PostgreSQL).
AUDIT_GROWTH_SQL = """
SELECT date_trunc('hour', "timestamp", 'UTC') AS hour, count(*) AS rows
FROM fraiseql_audit_logs
WHERE "timestamp" >= %(since)s
GROUP BY 1
ORDER BY 1
"""
# What one audit row costs on disk (heap, indexes, TOAST) and the database's size now.
AUDIT_ROW_SIZE_SQL = """
SELECT pg_total_relation_size(c.oid) AS table_bytes,
       NULLIF(c.reltuples, -1)::bigint AS rows_estimate,
       pg_database_size(current_database()) AS database_bytes,
       current_database() AS database
FROM pg_class c
WHERE c.oid = to_regclass('fraiseql_audit_logs')
"""
AUDIT_ROWS_SQL = "SELECT count(*) AS rows FROM fraiseql_audit_logs"


@dataclass
class History:
    """A resource over time, with its limit lines and where the numbers came from."""

    resource: str
    values: pd.Series  # UTC DatetimeIndex -> value in `unit`
    unit: str
    ylabel: str
    source: str
    lines: list[plots.ThresholdLine] = field(default_factory=list)
    si_unit: str | None = None
    notes: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    # the value read live during this run, when the history's last point is not it (a peak
    # per step is not "now"), and what it was read from
    now: float | None = None
    now_source: str = ""
    # further verdicts on the same resource (status, sentence), e.g. PostgreSQL's slots beside
    # the pool: the finding is the worst of them and the history's own
    also: list[tuple[Status, str]] = field(default_factory=list)

    @property
    def span(self) -> timedelta:
        if len(self.values) < 2:
            return timedelta(0)
        return (self.values.index.max() - self.values.index.min()).to_pytimedelta()


def horizon_of(text: str) -> timedelta:
    return timespec.parse_range(text)


def _series(times: list[datetime], values: list[float], name: str) -> pd.Series:
    return pd.Series(values, index=pd.DatetimeIndex(pd.to_datetime(times, utc=True)),
                     name=name, dtype=float)


# -- direct samples: connections and memory during the run --------------------------------

def server_pid(board: Board) -> tuple[int | None, str]:
    """The server's pid from the target's status_command ("Main PID: N"), when it runs
    here; (None, why) otherwise."""
    target = board.run.target
    if not target.get("status_command"):
        return None, "the target has no status_command"
    if not host.is_local(target.fraiseql_url):
        return None, "the server does not run on this machine"
    result = commands.run(board.run, "status_command", timeout_s=15)
    pid = commands.parse_pid(result.stdout)
    if pid is None:
        return None, "status_command printed no pid (Main PID: N, MainPID=N, \"Pid\": N)"
    if not Path(f"/proc/{pid}/status").is_file():
        return None, f"pid {pid} from status_command is not running here"
    return pid, f"pid {pid} from status_command"


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process from /proc (None once it is gone)."""
    try:
        return host.process_memory(pid)["VmRSS"]
    except (OSError, RuntimeError):
        return None


@dataclass
class Samples:
    times: list[datetime] = field(default_factory=list)
    connections: list[float] = field(default_factory=list)
    max_connections: int | None = None
    reserved_connections: int | None = None
    rss: list[float] = field(default_factory=list)
    pid: int | None = None
    pid_source: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def samples(board: Board, count: int = SAMPLES) -> Samples:
    """`count` readings of PostgreSQL's client connections and the server's RSS, spread over
    the board's sample interval, taken once per run."""

    def take() -> Samples:
        out = Samples()
        out.pid, out.pid_source = server_pid(board)
        try:
            conn = postgres.connect(board.run.target.database_url())
        except postgres.ConnectionFailed as exc:
            conn, out.errors["connections"] = None, str(exc)
        try:
            for i in range(count):
                if i:
                    time.sleep(board.sample_interval_s / max(count - 1, 1))
                out.times.append(datetime.now(UTC))
                if conn is not None:
                    frame = pgstats.connections(conn)
                    out.connections.append(float(frame["connections"].sum()))
                    if not frame.empty:
                        out.max_connections = int(frame["max_connections"].iloc[0])
                        out.reserved_connections = int(
                            frame["reserved_connections"].iloc[0])
                if out.pid is not None:
                    rss = rss_bytes(out.pid)
                    if rss is not None:
                        out.rss.append(float(rss))
        finally:
            if conn is not None:
                conn.close()
        return out

    return board.memo(f"samples-{count}", take)


# -- histories -----------------------------------------------------------------------------

def slots(board: Board) -> tuple[dict[str, Any], list[tuple[Status, str]]]:
    """PostgreSQL's connection slots now (client connections against max_connections less
    the reserved ones), beside the pool: other clients use them too (§4.1 "SHOW
    max_connections"). Evidence and a verdict when past a line."""
    data = samples(board, 1)
    if not data.connections or data.max_connections is None:
        return {"slots_error": data.errors.get("connections", "no reading")}, [
            (Status.UNKNOWN, "PostgreSQL's connection slots could not be read")]
    used = int(data.connections[-1])
    available = data.max_connections - (data.reserved_connections or 0)
    share = used / available if available > 0 else 1.0
    evidence = {"slots_used": used, "max_connections": data.max_connections,
                "reserved_connections": data.reserved_connections,
                "slots_available": available, "slots_share": round(share, 3)}
    limit = thresholds.POOL_OF_MAX_CONNECTIONS
    text = (f"PostgreSQL slots: {used} of {available} used now (max_connections "
            f"{data.max_connections} less {data.reserved_connections} reserved)")
    if share >= limit.critical:
        return evidence, [(Status.CRITICAL, text + " — no slot left")]
    if share >= limit.warning:
        return evidence, [(Status.WARNING, text + f" — above {limit.warning:.0%}")]
    return evidence, [(Status.OK, text)]


def pool_now(board: Board) -> float | None:
    """The pool's active connections now, from one live /metrics scrape (None if absent)."""
    try:
        return metrics.value(metrics.scrape(board.run), "pool_active")
    except metrics.ScrapeError:
        return None


def connections_history(board: Board, pool_max: int | None = None) -> History:
    """The pool's busiest moment per step from Prometheus, else PostgreSQL's connections;
    with PostgreSQL's slots now beside it either way."""
    slot_evidence, slot_verdicts = slots(board)
    if board.source == PROMETHEUS and board.series("pool_active") is not None:
        panel = board.panel({"pool active (peak per step)": Gauge("pool_active", peak=True)})
        size, size_source = pool_capacity(board, pool_max)
        now = pool_now(board)
        return History("connections", panel.values("pool active (peak per step)"),
                       "connections", "active pool connections", f"Prometheus, last "
                       f"{board.range_text}", pool_lines(size, thresholds.SCALE_UP[
                           "connections"].warning, POOL_ALERT_SHARE),
                       evidence={**panel.evidence(), "pool_max": size,
                                 "pool_max_source": size_source, **slot_evidence},
                       now=now, now_source="/metrics now" if now is not None else "",
                       also=slot_verdicts)
    data = samples(board)
    limit = data.max_connections
    lines = [] if not limit else [
        plots.ThresholdLine(limit * thresholds.POOL_OF_MAX_CONNECTIONS.warning,
                            f"§6.1 80 % of max_connections ({limit})", "warning"),
        plots.ThresholdLine(float(limit), f"max_connections {limit}", "critical")]
    return History("connections", _series(data.times[:len(data.connections)], data.connections,
                                          "connections"),
                   "connections", "client connections", "PostgreSQL statistics, "
                   f"{len(data.connections)} samples", lines,
                   notes=[f"{k}: {v}" for k, v in data.errors.items()],
                   evidence={"max_connections": limit, **slot_evidence},
                   now=slot_evidence.get("slots_used"), now_source="pg_stat_activity now",
                   also=slot_verdicts)


@dataclass(frozen=True)
class Growth:
    """The database's size over the range (measured or estimated) and its source."""

    sizes: pd.Series
    source: str
    evidence: dict[str, Any]


def _audit_growth(board: Board) -> Growth:
    with postgres.connect(board.run.target.database_url()) as conn:
        size = postgres.one(conn, AUDIT_ROW_SIZE_SQL)
        if not size:
            raise LookupError("no fraiseql_audit_logs table to estimate growth from")
        rows_total = size["rows_estimate"]
        if not rows_total:
            rows_total = postgres.one(conn, AUDIT_ROWS_SQL)["rows"]
        hourly = pd.DataFrame(postgres.rows(conn, AUDIT_GROWTH_SQL, {"since": board.start}),
                              columns=["hour", "rows"])
    per_row = size["table_bytes"] / rows_total if rows_total else 0.0
    now_size = float(size["database_bytes"])
    hours = pd.date_range(pd.Timestamp(board.start).floor("h"), pd.Timestamp(board.end),
                          freq="h", tz="UTC")
    counts = (pd.Series(hourly["rows"].astype(float).to_numpy(),
                        index=pd.to_datetime(hourly["hour"], utc=True))
              .reindex(hours, fill_value=0.0) if len(hours) else pd.Series(dtype=float))
    # size at the end of each hour = size now - bytes of the rows written after that hour
    after = counts[::-1].cumsum()[::-1].shift(-1, fill_value=0.0)
    sizes = pd.Series(now_size - after.to_numpy() * per_row,
                      index=counts.index + pd.Timedelta(hours=1), name="database size")
    sizes = sizes[sizes.index <= pd.Timestamp(board.end)]
    sizes.loc[pd.Timestamp(board.end)] = now_size
    rows_per_day = float(counts.sum()) / max(board.span.total_seconds() / 86400, 1e-9)
    evidence = {"method": "audit rows per day x average audit row size",
                "audit_rows_in_range": int(counts.sum()),
                "audit_rows_per_day": round(rows_per_day, 1),
                "audit_row_bytes": round(per_row, 1),
                "estimated_growth_bytes_per_day": round(rows_per_day * per_row),
                "database": size["database"], "database_bytes": int(now_size)}
    return Growth(sizes.sort_index(), "estimate from the audit log", evidence)


def _prometheus_growth(board: Board, database: str) -> Growth | None:
    if board.client is None:
        return None
    expr = f'max({DATABASE_SIZE_SERIES}{{datname="{database}"}})'
    frame = board.client.query_range(expr, board.start, board.end, board.step_s)
    if frame.empty:
        return None
    sizes = pd.Series(frame["value"].to_numpy(dtype=float),
                      index=pd.DatetimeIndex(frame["time"]), name="database size").dropna()
    covered = (sizes.index.max() - sizes.index.min()) / board.span if len(sizes) else 0.0
    if covered < thresholds.HISTORY_COVERAGE_MIN:
        # an exporter added minutes ago says nothing about a week's growth: estimate instead
        raise ShortHistory(f"{DATABASE_SIZE_SERIES} covers {covered:.1%} of the range")
    return Growth(sizes, f"Prometheus {DATABASE_SIZE_SERIES}", {"query": expr})


class ShortHistory(LookupError):
    """The measured series exists but covers too little of the range to project from."""


def growth(board: Board) -> Growth:
    """Measured size history when Prometheus has one, else the audit-log estimate."""

    def find() -> Growth:
        database = postgres.url_database(board.run.target.database_url()) or ""
        short = None
        try:
            measured = _prometheus_growth(board, database)
        except prometheus.PrometheusError:
            measured = None
        except ShortHistory as why:
            measured, short = None, str(why)
        if measured is not None:
            return measured
        estimate = _audit_growth(board)
        if short:
            estimate.evidence["measured_history"] = short
        return estimate

    return board.memo("growth", find)


def _filesystem(board: Board) -> dict[str, Any]:
    """The fullest filesystem of `host.check_disk` (recorded as `host.disk`), exactly."""

    def find() -> dict[str, Any]:
        finding = host.check_disk(board.run)
        rows = finding.evidence.get("filesystems") or []
        if not rows:
            raise LookupError(f"host.check_disk could not run: {finding.summary}")
        worst = max(rows, key=lambda r: r["used_fraction"])
        path = Path(worst["path"])
        while not path.exists() and path != path.parent:
            path = path.parent
        usage = shutil.disk_usage(path)
        return {"path": worst["path"], "used_bytes": usage.used, "total_bytes": usage.total,
                "free_bytes": usage.free}

    return board.memo("filesystem", find)


def _disk_lines(total: float, scale: float = 1.0, offset: float = 0.0
                ) -> list[plots.ThresholdLine]:
    disk = thresholds.DISK_USED
    return [plots.ThresholdLine((total * disk.warning - offset) * scale,
                                f"§6.1 disk {disk.warning:.0%} used", "warning"),
            plots.ThresholdLine((total * disk.critical - offset) * scale,
                                f"disk {disk.critical:.0%} used", "critical")]


def database_history(board: Board) -> History:
    """The database's size, against the size at which its disk would reach 80 % / 90 %
    (everything else on the disk staying as it is), when the database is on this machine."""
    grown = growth(board)
    lines, notes = [], []
    try:
        fs = _filesystem(board)
    except LookupError as exc:
        fs, notes = None, [str(exc)]
    local = host.is_local(board.run.target.database_url())
    if fs is not None and local:
        now_size = float(grown.sizes.iloc[-1])
        others = fs["used_bytes"] - now_size  # what the rest of the disk holds
        lines = _disk_lines(fs["total_bytes"], offset=others)
    elif not local:
        notes.append("the database is on another machine: its disk is not visible from here")
    return History("database_size", grown.sizes, "bytes", "database size (bytes)",
                   grown.source, lines, si_unit="B", notes=notes, evidence=grown.evidence)


def disk_history(board: Board) -> History:
    """The filesystem's used share, walked back with the database's growth."""
    fs = _filesystem(board)
    sizes = growth(board).sizes
    used = (fs["used_bytes"] - (float(sizes.iloc[-1]) - sizes)) / fs["total_bytes"]
    disk = thresholds.DISK_USED
    lines = [plots.ThresholdLine(disk.warning, f"§6.1 {disk.warning:.0%} used", "warning"),
             plots.ThresholdLine(disk.critical, f"{disk.critical:.0%} used", "critical")]
    return History("disk", used.rename("used share"), "fraction", "used share of the disk (0-1)",
                   f"{fs['path']} now, grown with the {growth(board).source}", lines,
                   evidence={**fs, "growth_source": growth(board).source})


def memory_history(board: Board) -> History:
    """The server's resident memory: a metric's history, else /proc samples."""
    total, total_source = host.memory_total()
    local = host.is_local(board.run.target.fraiseql_url)
    memory = thresholds.MEMORY_USED
    lines = [plots.ThresholdLine(total * memory.warning, f"§6.1 {memory.warning:.0%} of memory",
                                 "warning"),
             plots.ThresholdLine(total * memory.critical, f"{memory.critical:.0%} of memory",
                                 "critical")] if local else []
    notes = [] if local else ["the server is on another machine: its memory size is unknown "
                              "here, so no limit is drawn"]
    evidence: dict[str, Any] = {"memory_total_bytes": total if local else None,
                                "memory_total_source": total_source if local else None}
    if board.source == PROMETHEUS and board.series("resident_memory") is not None:
        panel = board.panel({"resident memory": Gauge("resident_memory", peak=True)})
        return History("memory", panel.values("resident memory"), "bytes",
                       "server resident memory (bytes)", f"Prometheus, last "
                       f"{board.range_text}", lines, si_unit="B", notes=notes,
                       evidence={**evidence, **panel.evidence()})
    data = samples(board)
    if data.pid is None:
        raise LookupError(f"no memory metric and no local process to read: {data.pid_source}")
    evidence.update({"pid": data.pid, "pid_source": data.pid_source})
    return History("memory", _series(data.times[:len(data.rss)], data.rss, "resident memory"),
                   "bytes", "server resident memory (bytes)",
                   f"/proc/{data.pid}/status VmRSS, {len(data.rss)} samples", lines,
                   si_unit="B", notes=notes, evidence=evidence)


# -- projection ----------------------------------------------------------------------------

@dataclass
class Outlook:
    history: History
    fitted: capacity.Projection | None
    crossings: list[datetime | None]
    trusted: bool  # enough history for the trend to mean something


def outlook(history: History) -> Outlook:
    values = history.values.dropna()
    fitted = None
    if len(values) >= 2 and values.index.nunique() >= 2:
        fitted = capacity.linear_projection(values.index, values.to_numpy())
    crossings = [None if fitted is None else _crossing(fitted, line.value)
                 for line in history.lines]
    return Outlook(history, fitted, crossings, history.span >= MIN_TREND_SPAN)


def _crossing(fitted: capacity.Projection, value: float) -> datetime | None:
    """`capacity.crossing_time`, with a date past year 9999 (a nearly flat trend) read as
    never."""
    try:
        return capacity.crossing_time(fitted, value)
    except OverflowError:
        return None


def figure(board: Board, history: History, horizon: str = HORIZON) -> Figure:
    """The history and its trend to the horizon, with §6.1's lines; a history too short
    for a trend is drawn as it is. Lines far above the data stay in the legend (with their
    dates) while the axis keeps to the data, so the growth itself stays visible."""
    seen = outlook(history)
    title = f"{history.resource.replace('_', ' ').capitalize()} ({history.source})"
    visible = history.values.dropna()
    if seen.fitted is None or not seen.trusted:
        fig = plots.timeseries(history.values, title=f"{title}: too short to project",
                               ylabel=history.ylabel, thresholds=history.lines,
                               si_unit=history.si_unit)
    else:
        span = horizon_of(horizon)
        fig = plots.projection(history.values, seen.fitted, seen.crossings, title=title,
                               ylabel=history.ylabel, threshold=history.lines, horizon=span,
                               si_unit=history.si_unit)
        end = visible.index.max().to_pydatetime() + span
        visible = pd.concat([visible, capacity.trend_points(seen.fitted,
                                                             visible.index.min(), end)])
    _zoom_to_data(fig, visible, history.lines)
    return fig


def _zoom_to_data(fig: Figure, values: pd.Series, lines: list[plots.ThresholdLine]) -> None:
    if values.empty or not lines:
        return
    low, high = float(values.min()), float(values.max())
    if min(line.value for line in lines) <= high * 5 or high <= 0:
        return
    ax = fig.axes[0]
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    ax.set_ylim(low - pad, high + pad)
    for text in ax.texts:  # labels of lines off the scale would be drawn far outside
        if not low - pad <= text.get_position()[1] <= high + pad:
            text.set_visible(False)
    ax.set_title(f"{ax.get_title(loc='left')} (limits above the scale: see legend)",
                 loc="left", fontsize="medium", fontweight="bold")


def _value_text(value: float, history: History) -> str:
    if history.unit == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    if history.unit == "fraction":
        return f"{value:.1%} used"
    return f"{value:g} {history.unit}"


def judge(board: Board, history: History, horizon: str = HORIZON) -> Finding:
    """critical: already past the critical line; warning: past the warning line now, or the
    trend reaches a line within the horizon; info otherwise."""
    check = f"capacity.{history.resource}"
    span = horizon_of(horizon)
    seen = outlook(history)
    values = history.values.dropna()
    if values.empty:
        return board.run.record(check, Status.UNKNOWN, f"no {history.resource} history",
                                {"source": history.source, "notes": history.notes})
    last_point, last = float(values.iloc[-1]), values.index.max().to_pydatetime()
    now_value = float(history.now) if history.now is not None else last_point
    evidence: dict[str, Any] = {
        **history.evidence, "source": history.source, "current": now_value,
        "current_source": history.now_source or "the history's last point",
        "last_point": last_point,
        "history_days": round(history.span.total_seconds() / 86400, 3),
        "samples": len(values), "horizon_days": round(span.total_seconds() / 86400, 1),
        "trend_trusted": seen.trusted, "notes": history.notes or None}
    if seen.fitted is not None:
        evidence.update({"slope_per_day": seen.fitted.slope_per_day,
                         "r2": round(seen.fitted.r2, 3)})
    crossings = {}
    for line, moment in zip(history.lines, seen.crossings, strict=True):
        crossings[line.label] = {"value": line.value, "level": line.level,
                                 "crossing": fmt_time(moment) if seen.trusted else None}
    evidence["lines"] = crossings
    name, current = history.resource.replace("_", " "), _value_text(now_value, history)
    if history.now is not None:
        current += f" now ({history.now_source}; last step's value {last_point:g})"
    else:
        current += f" at {fmt_time(last)}" if seen.trusted else " now"
    judged = _judged(board, history, evidence)
    record = functools.partial(judged, check)
    fix = _REMEDIATION[history.resource]
    if not history.lines:
        return record(Status.INFO, f"{name}: {current}; no limit known "
                                   f"({'; '.join(history.notes)})")
    past = [ln for ln in history.lines if now_value > ln.value]
    critical = [ln for ln in past if ln.level == "critical"]
    if critical or past:
        line = (critical or past)[0]
        return record(Status.CRITICAL if critical else Status.WARNING,
                      f"{name}: {current}, past {line.label}", remediation=fix)
    if not seen.trusted or seen.fitted is None:
        return record(Status.INFO, f"{name}: {current}, below {history.lines[0].label}; "
                                   f"{len(values)} samples over "
                                   f"{history.span.total_seconds():.0f} s are too short to "
                                   "project (a trend needs history, e.g. from Prometheus)")
    trend = f"trend {_slope_text(seen.fitted.slope_per_day, history)}"
    soon = [(ln, m) for ln, m in zip(history.lines, seen.crossings, strict=True)
            if m is not None and m <= last + span]
    if soon:
        line, moment = soon[0]
        return record(Status.WARNING, f"{name}: {current}; at the {trend} it reaches "
                                      f"{line.label} on {fmt_time(moment)}, within {horizon}",
                      remediation=fix)
    first, moment = history.lines[0], seen.crossings[0]
    when = ("the trend is not heading there" if moment is None
            else f"not within {horizon} (the trend reaches it {moment:%Y-%m-%d})")
    return record(Status.INFO, f"{name}: {current}, {trend}; {first.label}: {when}")


def _judged(board: Board, history: History, evidence: dict[str, Any]) -> Any:
    """`board.run.record`, made the worst of the history's verdict and `history.also`."""
    def record(check: str, status: Status, summary: str, **kwargs: Any) -> Finding:
        extra = [(st, text) for st, text in history.also]
        if extra:
            evidence["also"] = [{"status": st.value, "summary": text} for st, text in extra]
            summary = "; ".join([summary, *(text for _, text in extra)])
            status = worst_of([status, *(st for st, _ in extra if st is not Status.OK)])
            if status is not Status.INFO and "remediation" not in kwargs:
                kwargs["remediation"] = _REMEDIATION[history.resource]
        return board.run.record(check, status, summary, evidence=evidence, **kwargs)
    return record


def worst_of(statuses: list[Status]) -> Status:
    """The worst status, info below ok (it only informs), for one finding's verdicts."""
    order = [Status.INFO, Status.OK, Status.WARNING, Status.UNKNOWN, Status.CRITICAL]
    return max(statuses, key=order.index)


def _slope_text(slope: float, history: History) -> str:
    if history.unit == "bytes":
        return f"{slope / 2**20:+.3g} MiB/day"
    if history.unit == "fraction":
        return f"{slope * 100:+.3g} points/day"
    return f"{slope:+.3g} {history.unit}/day"


_REMEDIATION = {
    "connections": "§6.1: add an instance or a pooler before the pool runs out; look for "
                   "leaked or long transactions first",
    "database_size": "plan disk: archive or purge old audit rows (§5.1 archives them daily), "
                     "or grow the volume",
    "disk": "§6.1: grow the volume or free space (old backups, WAL archive, logs)",
    "memory": "§6.1: add memory or an instance; a steady climb is §3.2's memory-leak case",
}


def _resource(name: str, build: Any) -> Any:
    """A figure maker and a check for one resource; failures become unknown findings."""

    def make_figure(board: Board, horizon: str = HORIZON, **kwargs: Any) -> Figure:
        try:
            history = board.memo(f"history-{name}", lambda: build(board, **kwargs))
        except Exception as exc:  # noqa: BLE001 - the check reports it; draw an empty panel
            empty = pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"))
            return plots.timeseries(empty, title=f"{name.replace('_', ' ').capitalize()}: "
                                                 f"no history ({str(exc)[:60]})",
                                    ylabel=name.replace("_", " "))
        return figure(board, history, horizon)

    @board_check(f"capacity.{name}")
    def check(board: Board, horizon: str = HORIZON, **kwargs: Any) -> Finding:
        history = board.memo(f"history-{name}", lambda: build(board, **kwargs))
        return judge(board, history, horizon)

    make_figure.__name__ = make_figure.__qualname__ = f"{name}_figure"
    make_figure.__doc__ = f"{name.replace('_', ' ').capitalize()}: history, trend, limits."
    check.__name__ = check.__qualname__ = f"check_{name}"
    check.__doc__ = judge.__doc__
    return make_figure, check


connections_figure, check_connections = _resource("connections", connections_history)
database_size_figure, check_database_size = _resource("database_size", database_history)
disk_figure, check_disk = _resource("disk", disk_history)
memory_figure, check_memory = _resource("memory", memory_history)
