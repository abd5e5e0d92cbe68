"""Database dashboard (runbook §9.2): how big the database and its tables and indexes are, how
well the buffer cache serves them, how much vacuum has to do, and how many connections are
used of what PostgreSQL and FraiseQL's pool allow.

PostgreSQL's own statistics come from `pgstats` in one read-only session as the target's
application role (what it may see is what the dashboard shows); the pool's gauges come from
the board's metric source (Prometheus over the range, else the current scrape).
Thresholds: §6.1 connections above 80 % of capacity (warning; 100 % of max_connections is
critical, new sessions are refused), §3.2 ConnectionPoolNearCapacity at 90 % of the pool, and
§3.2's 0.7 cache floor, which the runbook sets for the query cache: a buffer cache that low is
far past trouble (OLTP databases normally sit above 0.99).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.checks import database as dbchecks
from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.findings import Finding, Status, worst
from fraiseql_rb.targets import pgstats, postgres

from .board import (
    CACHE_HIT_FLOOR,
    POOL_ALERT_SHARE,
    PROMETHEUS,
    Board,
    Gauge,
    board_check,
    fmt_time,
    how_read,
    level,
    no_data,
    pool_capacity,
    pool_lines,
    records,
    safe_figure,
)

CONNECTIONS_WARNING = thresholds.POOL_OF_MAX_CONNECTIONS.warning  # §6.1 80 % of capacity
CONNECTIONS_CRITICAL = thresholds.POOL_OF_MAX_CONNECTIONS.critical
TOP = thresholds.TOP_N  # tables and indexes shown
CACHE_HIT_CRITICAL = thresholds.BUFFER_HIT_RATIO_CRITICAL  # check_postgres hitratio 50 %
BLOAT_RATIO = thresholds.BLOAT_RATIO  # pages over what the rows need (check_postgres bloat)
BLOAT_WASTED = thresholds.BLOAT_WASTED_BYTES
REPLICA_DELAY = thresholds.REPLICA_DELAY_S  # §5.2 RPO; check_postgres hot_standby_delay
POOL = {"active": Gauge("pool_active"), "idle": Gauge("pool_idle"),
        "open (total)": Gauge("pool_total"), "waiting requests": Gauge("pool_waiting")}


@dataclass(frozen=True)
class Stats:
    databases: pd.DataFrame
    tables: pd.DataFrame
    indexes: pd.DataFrame
    cache_databases: pd.DataFrame
    cache_tables: pd.DataFrame
    vacuum: pd.DataFrame
    connections: pd.DataFrame
    bloat: pd.DataFrame
    vacuum_settings: pd.DataFrame


def stats(board: Board) -> Stats:
    """Every PostgreSQL statistic the dashboard shows, read once in one session."""

    def fetch() -> Stats:
        with postgres.connect(board.run.target.database_url()) as conn:
            return Stats(pgstats.database_sizes(conn), pgstats.table_sizes(conn, TOP),
                         pgstats.index_sizes(conn, TOP), pgstats.cache_hit_by_database(conn),
                         pgstats.cache_hit_by_table(conn, TOP), pgstats.vacuum_stats(conn, TOP),
                         pgstats.connections(conn), pgstats.bloat(conn, None),
                         pgstats.vacuum_settings(conn))

    return board.memo("pgstats", fetch)


def _qualified(frame: pd.DataFrame, name: str = "table") -> list[str]:
    return [f"{s}.{t}" if s != "public" else str(t)
            for s, t in zip(frame["schema"], frame[name], strict=True)]


# -- sizes ---------------------------------------------------------------------------------

@safe_figure("database sizes")
def database_sizes_figure(board: Board) -> Figure:
    data = stats(board).databases
    sizes = pd.Series(data["size_bytes"].astype(float).to_numpy(),
                      index=data["database"].astype(str), name="size")
    return plots.bar(sizes, title="Database sizes (PostgreSQL statistics)", xlabel="database",
                     ylabel="size on disk (bytes)", horizontal=True, si_unit="B")


@safe_figure("table sizes")
def table_sizes_figure(board: Board) -> Figure:
    """The largest tables, split into heap, indexes and TOAST (what grows the disk)."""
    data = stats(board).tables
    frame = pd.DataFrame({"table": _qualified(data),
                          "heap": data["heap_bytes"].astype(float),
                          "indexes": data["index_bytes"].astype(float),
                          "TOAST and maps": data["toast_bytes"].astype(float)})
    return plots.bar(frame, x="table", title=f"Largest {TOP} tables (PostgreSQL statistics)",
                     xlabel="table", ylabel="size on disk (bytes)", horizontal=True,
                     si_unit="B")


@safe_figure("index sizes")
def index_sizes_figure(board: Board) -> Figure:
    data = stats(board).indexes
    sizes = pd.Series(data["size_bytes"].astype(float).to_numpy(),
                      index=[f"{i} ({s} scans)" for i, s in zip(data["index"], data["scans"],
                                                                 strict=True)], name="size")
    return plots.bar(sizes, title=f"Largest {TOP} indexes (PostgreSQL statistics)",
                     xlabel="index (scans since stats reset)", ylabel="size on disk (bytes)",
                     horizontal=True, si_unit="B")


@board_check("dashboard.database_size")
def check_size(board: Board) -> Finding:
    """The current database's size and what holds it (info: the disk check judges space)."""
    data = stats(board)
    current = data.databases[data.databases["current"]]
    size = None if current.empty else current["size_bytes"].iloc[0]
    tables = data.tables.head(3)
    largest = ", ".join(f"{t} {b / 2**20:.1f} MiB" for t, b in
                        zip(_qualified(tables), tables["total_bytes"], strict=True))
    evidence = {"database_bytes": None if size is None else int(size),
                "largest_tables": records(tables[["table", "total_bytes"]])}
    if size is None:
        return board.run.record("dashboard.database_size", Status.UNKNOWN,
                                "this role may not size the current database", evidence,
                                "grant CONNECT on the database or pg_read_all_stats")
    return board.run.record("dashboard.database_size", Status.INFO,
                            f"database {current['database'].iloc[0]} is {size / 2**20:.1f} MiB; "
                            f"largest tables: {largest or 'none'}", evidence)


# -- cache and vacuum ----------------------------------------------------------------------

@safe_figure("buffer cache")
def cache_figure(board: Board, floor: float = CACHE_HIT_FLOOR) -> Figure:
    """Shared-buffer hit ratio of the database and of the tables reading most from disk."""
    data = stats(board)
    current = data.cache_databases[data.cache_databases["current"]]
    ratios = pd.concat([
        pd.Series(current["hit_ratio"].astype(float).to_numpy(),
                  index=[f"database {d}" for d in current["database"]]),
        pd.Series(data.cache_tables["hit_ratio"].astype(float).to_numpy(),
                  index=_qualified(data.cache_tables)),
    ]).rename("hit ratio")
    line = plots.ThresholdLine(floor, f"§3.2 floor {floor:g}", "warning")
    return plots.bar(ratios, title="Buffer cache hit ratio (PostgreSQL statistics)",
                     xlabel="database / table", ylabel="hit ratio since stats reset (0-1)",
                     horizontal=True, thresholds=[line])


@board_check("dashboard.db_cache_hit")
def check_cache(board: Board, floor: float = CACHE_HIT_FLOOR,
                critical: float = CACHE_HIT_CRITICAL) -> Finding:
    """The database's shared-buffer hit ratio: a warning below `floor`, critical below
    `critical` (check_postgres hitratio's two levels)."""
    data = stats(board).cache_databases
    current = data[data["current"]]
    ratio = None if current.empty else current["hit_ratio"].iloc[0]
    evidence = {"hit_ratio": ratio, "floor": floor, "critical": critical,
                "blks_hit": None if current.empty else int(current["blks_hit"].iloc[0]),
                "blks_read": None if current.empty else int(current["blks_read"].iloc[0]),
                "stats_reset": None if current.empty else current["stats_reset"].iloc[0]}
    if ratio is None or pd.isna(ratio):
        return board.run.record("dashboard.db_cache_hit", Status.INFO,
                                "no block read since the statistics were reset", evidence)
    status = level(float(ratio), floor, critical, higher_is_worse=False)
    remediation = None if status is Status.OK else (
        "the working set no longer fits in shared_buffers: raise shared_buffers or memory "
        "(§6.2 vertical scaling), and look for sequential scans of large tables")
    return board.run.record("dashboard.db_cache_hit", status,
                            f"buffer cache hit ratio {ratio:.4f} since the stats reset "
                            f"(warning below {floor:g}, critical below {critical:g})",
                            evidence, remediation)


@safe_figure("dead tuples")
def dead_tuples_figure(board: Board) -> Figure:
    data = stats(board).vacuum
    frame = pd.DataFrame({"table": _qualified(data), "dead": data["dead_tuples"].astype(float),
                          "live": data["live_tuples"].astype(float)})
    return plots.bar(frame, x="table", y=["dead", "live"], horizontal=True,
                     title="Dead and live tuples (PostgreSQL statistics)", xlabel="table",
                     ylabel="tuples")


@board_check("dashboard.dead_tuples")
def check_dead_tuples(board: Board) -> Finding:
    """The table with most dead tuples and when it was last vacuumed (info: autovacuum's
    own scale factor, not the runbook, decides when it is due)."""
    data = stats(board).vacuum
    if data.empty:
        return board.run.record("dashboard.dead_tuples", Status.INFO, "no user tables", {})
    top = data.iloc[0]
    ratio = top["dead_ratio"]
    evidence = {"tables": records(data[["table", "dead_tuples", "live_tuples", "dead_ratio",
                                        "last_vacuumed"]].head(5))}
    share = "" if pd.isna(ratio) else f" ({ratio:.1%} of its rows)"
    vacuumed = "never" if pd.isna(top["last_vacuumed"]) else fmt_time(top["last_vacuumed"])
    return board.run.record("dashboard.dead_tuples", Status.INFO,
                            f"most dead tuples in {top['table']}: {int(top['dead_tuples'])}"
                            f"{share}, last vacuumed {vacuumed}", evidence)


def _wasted(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


@board_check("dashboard.bloat")
def check_bloat(board: Board) -> Finding:
    """Tables and indexes larger than their rows need (check_postgres' statistics estimate),
    tables with autovacuum switched off, and dead-tuple counters a stats reset has wiped."""
    data = stats(board)
    estimate, settings = data.bloat, data.vacuum_settings
    graded = [(dbchecks.bloat_level(float(row["ratio"]), float(row["wasted_bytes"])), row)
              for _, row in estimate.iterrows()]
    bloated = [(s, row) for s, row in graded if s is not Status.OK]
    off = settings[~settings["autovacuum_enabled"].astype(bool)]
    dead = dict(zip(_qualified(settings), settings["dead_tuples"].fillna(0).astype(int),
                    strict=True))
    reset = settings["stats_reset"].dropna()
    reset_at = reset.iloc[0] if not reset.empty else None
    # a user table the estimate finds bloated while its dead-tuple counter reads 0
    wiped = sorted({name for name, (_, row) in zip(
        _qualified(pd.DataFrame([row for _, row in bloated], columns=estimate.columns)),
        bloated, strict=True) if row["kind"] == "table" and dead.get(name) == 0})

    def name(row: Any) -> str:
        return (f"index {row['index']} on {row['table']}" if row["kind"] == "index"
                else f"table {row['schema']}.{row['table']}" if row["schema"] != "public"
                else f"table {row['table']}")

    parts = [f"{name(row)} is {float(row['ratio']):g}× its expected size "
             f"({_wasted(row['wasted_bytes'])} wasted, {s.value})" for s, row in bloated[:TOP]]
    if len(off):
        parts.append("autovacuum disabled on " + ", ".join(
            str(t) for t in _qualified(off)[:TOP]))
    if wiped:
        parts.append(f"dead-tuple counters read 0 for bloated {', '.join(wiped)}: the "
                     f"statistics were reset{f' at {fmt_time(reset_at)}' if reset_at else ''}"
                     " (pg_stat_reset), so n_dead_tup understates what vacuum has to do")
    status = worst([s for s, _ in bloated]) if bloated else Status.OK
    if status is Status.OK and (len(off) or wiped):
        status = Status.WARNING
    evidence = {"bloated": records(pd.DataFrame([row for _, row in bloated[:TOP]],
                                                columns=estimate.columns)),
                "autovacuum_disabled": _qualified(off), "counters_reset": wiped,
                "stats_reset": None if reset_at is None else fmt_time(reset_at),
                "ratio": [BLOAT_RATIO.warning, BLOAT_RATIO.critical],
                "wasted_bytes": [BLOAT_WASTED.warning, BLOAT_WASTED.critical]}
    if status is Status.OK:
        return board.run.record("dashboard.bloat", Status.OK,
                                "no table or index beyond "
                                f"{BLOAT_RATIO.warning:g}× its expected size with "
                                f"{_wasted(BLOAT_WASTED.warning)} wasted; autovacuum on for "
                                "every table (estimate from the last ANALYZE)", evidence)
    return board.run.record(
        "dashboard.bloat", status, "; ".join(parts), evidence,
        "turn autovacuum back on (ALTER TABLE ... RESET (autovacuum_enabled)), then VACUUM "
        "(ANALYZE) the tables named; a table many times its size needs VACUUM FULL or "
        "pg_repack in a maintenance window to give the space back; the estimate needs a "
        "fresh ANALYZE")


@board_check("dashboard.replication")
def check_replication(board: Board) -> Finding:
    """The replica's delay as check_postgres hot_standby_delay measures it, graded by the
    catalogue (§5.2's RPO is critical): a paused replay is at least a warning."""
    target = board.run.target
    with postgres.connect(target.admin_database_url() or target.database_url()) as conn:
        senders = postgres.rows(conn, dbchecks.SENDERS_SQL)
        if not target.get("replica_database_url"):
            if not senders:
                return board.run.record("dashboard.replication", Status.INFO,
                                        "no replica configured and none streaming",
                                        {"replicas": []})
            lags = [r["replay_lag_s"] for r in senders if r["replay_lag_s"] is not None]
            worst = max(lags) if lags else 0.0
            status = level(worst, REPLICA_DELAY.warning, REPLICA_DELAY.critical)
            return board.run.record(
                "dashboard.replication", status,
                f"{len(senders)} replica(s) connected, replay_lag at most {worst:.1f} s as "
                "the primary sees it (add replica_database_url to see a paused replay)",
                {"replicas": senders, "delay_s": worst})
        url = target.database_url("replica_database")
        with postgres.connect(url) as replica:
            standby = dbchecks.standby_state(replica)
        primary = dbchecks.primary_state(conn)
    delay = dbchecks.replication_delay(standby, primary)
    status = dbchecks.grade_delay(delay, REPLICA_DELAY.warning, REPLICA_DELAY.critical)
    host, port = postgres.endpoint(url)
    evidence = {"replica": f"{host}:{port}", "paused": delay.paused, "delay_s": delay.seconds,
                "behind_bytes": delay.behind_bytes, "basis": delay.basis,
                "warning_s": REPLICA_DELAY.warning, "critical_s": REPLICA_DELAY.critical,
                "replicas": senders}
    remediation = None if status is Status.OK else (
        "run database-unavailable's replica step; resume a paused replay with "
        "SELECT pg_wal_replay_resume() on the replica")
    return board.run.record("dashboard.replication", status,
                            f"replica {host}:{port}: {delay.describe()} ({delay.basis})",
                            evidence, remediation)


# -- connections ---------------------------------------------------------------------------

def _connection_totals(board: Board) -> tuple[pd.Series, int, int]:
    data = stats(board).connections
    by_state = data.groupby("state")["connections"].sum().astype(float)
    if data.empty:  # the activity view showed nothing: read the limit on its own
        info = postgres.server_info(board.run.target.database_url())
        return by_state, info.max_connections, info.reserved_connections
    return by_state, int(data["max_connections"].iloc[0]), int(
        data["reserved_connections"].iloc[0])


@safe_figure("connections")
def connections_figure(board: Board, warning: float = CONNECTIONS_WARNING,
                       critical: float = CONNECTIONS_CRITICAL) -> Figure:
    """Client connections in all and by state, against §6.1's 80 % and max_connections."""
    by_state, max_conn, _ = _connection_totals(board)
    bars = pd.concat([pd.Series({"all client connections": by_state.sum()}),
                      by_state.rename(lambda state: f"state: {state}")]).rename("connections")
    lines = [plots.ThresholdLine(max_conn * warning, f"§6.1 {warning:.0%}", "warning"),
             plots.ThresholdLine(max_conn * critical, f"max_connections {max_conn}",
                                 "critical")]
    fig = plots.bar(bars, horizontal=True, thresholds=lines,
                    title="Connections vs max_connections (PostgreSQL statistics)",
                    xlabel="", ylabel="connections")
    if fig.axes[0].get_legend() is not None:
        fig.axes[0].legend(fontsize="small", loc="lower right", framealpha=0.8)
    return fig


@board_check("dashboard.connections")
def check_connections(board: Board, warning: float = CONNECTIONS_WARNING,
                      critical: float = CONNECTIONS_CRITICAL) -> Finding:
    by_state, max_conn, reserved = _connection_totals(board)
    total = float(by_state.sum())
    share = total / max_conn if max_conn else None
    evidence = {"connections": int(total), "by_state": by_state.astype(int).to_dict(),
                "max_connections": max_conn, "reserved_connections": reserved,
                "share": None if share is None else round(share, 4),
                "warning": warning, "critical": critical}
    status = level(share, warning, critical)
    remediation = None if status is Status.OK else (
        "find who holds connections (the by_state table; idle in transaction first) and "
        "§6.1: add capacity or a pooler before new sessions are refused")
    return board.run.record("dashboard.connections", status,
                            f"{int(total)} client connections of max_connections {max_conn} "
                            f"({share:.0%}; warning above {warning:.0%})", evidence,
                            remediation)


@safe_figure("connection pool")
def pool_figure(board: Board, pool_max: int | None = None,
                warning: float = CONNECTIONS_WARNING,
                critical: float = POOL_ALERT_SHARE) -> Figure:
    """FraiseQL's pool gauges over the range, against 80 % (§6.1) and 90 % (§3.2)."""
    size, _ = pool_capacity(board, pool_max)
    return board.figure(board.panel(POOL), title=f"Connection pool (max {size})",
                        ylabel="connections", thresholds=pool_lines(size, warning, critical))


@board_check("dashboard.pool")
def check_pool(board: Board, pool_max: int | None = None, warning: float = CONNECTIONS_WARNING,
               critical: float = POOL_ALERT_SHARE) -> Finding:
    """The busiest the pool got (active connections over its maximum), and whether requests
    had to wait for a connection."""
    run, panel = board.run, board.panel(POOL)
    size, source = pool_capacity(board, pool_max)
    active, at = panel.peak(board.label_of(panel, "active"))
    waiting, _ = panel.peak(board.label_of(panel, "waiting requests"))
    if active is None:
        return no_data(run, "dashboard.pool", panel, "the connection pool")
    share = active / size
    evidence: dict[str, Any] = {**panel.evidence(), "active_peak": active,
                                "active_peak_at": fmt_time(at), "pool_max": size,
                                "pool_max_source": source, "share": round(share, 4),
                                "waiting_peak": waiting, "warning": warning,
                                "critical": critical}
    status = level(share, warning, critical)
    if status is Status.OK and waiting:
        status = Status.WARNING
    when = f" at {fmt_time(at)}" if board.source == PROMETHEUS else ""
    summary = (f"pool at most {active:g} of {size} connections active ({share:.0%}) "
               f"{how_read(panel)}{when}; at most {waiting or 0:g} requests waited")
    remediation = None if status is Status.OK else (
        "run the connection-pool-exhaustion playbook: look for leaked or long transactions, "
        "then raise pool_max_size within max_connections")
    return run.record("dashboard.pool", status, summary, evidence, remediation)
