"""database-maintenance (§7.2): the plan's decisions as pure functions, the pre-checks, the
gated change and its verification against a real cluster (a table bloated in SQL with
autovacuum off on it, so nothing else cleans it), and drills through the CLI against the
sandbox."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from drill_helpers import by_check, findings_of
from psycopg import sql

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.findings import Status
from fraiseql_rb.maintenance import database_maintenance as dm
from fraiseql_rb.sandbox import manager
from fraiseql_rb.sandbox.cluster import SUPERUSER, Cluster

MB = 1024 * 1024
BASE = thresholds.MAINTENANCE_DEAD_TUPLES_BASE
SCALE = thresholds.MAINTENANCE_DEAD_TUPLES_SCALE


# -- the decisions, pure ----------------------------------------------------------------------

def test_autovacuums_own_rule_decides_what_needs_vacuum_and_analyze():
    assert dm.dead_tuples_limit(400, 50, 0.2) == 130
    assert dm.dead_tuples_limit(None, 50, 0.2) == 50  # never analyzed: no row estimate
    assert dm.analyze_limit(1000, 50, 0.1) == 150


@pytest.mark.parametrize(("held", "requested", "conflict"), [
    ("AccessShareLock", "ACCESS EXCLUSIVE", True),  # a reader blocks VACUUM FULL
    ("AccessShareLock", "SHARE UPDATE EXCLUSIVE", False),  # ... but not VACUUM
    ("RowExclusiveLock", "SHARE UPDATE EXCLUSIVE", False),  # writers do not block VACUUM
    ("ShareUpdateExclusiveLock", "SHARE UPDATE EXCLUSIVE", True),  # autovacuum blocks VACUUM
    ("ShareLock", "SHARE UPDATE EXCLUSIVE", True),  # CREATE INDEX blocks VACUUM
    ("AccessExclusiveLock", "SHARE UPDATE EXCLUSIVE", True),
])
def test_lock_conflicts_are_postgresqls_table(held, requested, conflict):
    assert dm.conflicts(held, requested) is conflict


def test_table_selection_is_schema_dot_table():
    assert dm.parse_tables(None) is None
    assert dm.parse_tables(["public.a", "b", "app.x"]) == {("public", "a"), ("public", "b"),
                                                           ("app", "x")}
    for bad in (["a.b.c"], [""], "public.a", [3]):
        with pytest.raises(ValueError, match="schema.table"):
            dm.parse_tables(bad)


def _survey(**tables: dict) -> pd.DataFrame:
    rows = []
    for name, values in tables.items():
        row = {"schema": "public", "table": name, "live_tuples": 1000, "dead_tuples": 0,
               "rows_estimate": 1000, "modified_since_analyze": 0,
               "last_analyzed": pd.Timestamp("2026-01-01", tz="UTC"),
               "autovacuum_enabled": True, "total_bytes": 10 * MB, "heap_bytes": 8 * MB,
               "index_bytes": 2 * MB, "may_maintain": True, "xid_age": 100,
               "freeze_max_age": 200_000_000}
        row.update(values)
        rows.append(row)
    return pd.DataFrame(rows)


def _bloat(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame([{"kind": kind, "schema": "public", "table": table, "index": index,
                          "ratio": ratio, "wasted_bytes": wasted, "size_bytes": size}
                         for kind, table, index, ratio, wasted, size in rows],
                        columns=["kind", "schema", "table", "index", "ratio", "wasted_bytes",
                                 "size_bytes"])


def test_the_plan_vacuums_analyzes_and_rewrites_only_what_needs_it():
    survey = _survey(
        clean={},
        dead={"dead_tuples": 500},  # > 50 + 20 % of 1000
        stale={"modified_since_analyze": 400},  # > 50 + 10 % of 1000
        never={"last_analyzed": pd.NaT, "rows_estimate": None},
        huge={"dead_tuples": 900, "total_bytes": 5 * 1024**3},
        foreign={"dead_tuples": 900, "may_maintain": False},
        **{'we"ird t': {"dead_tuples": 600}})
    bloat = _bloat(("table", "dead", None, 3.0, 6 * MB, 8 * MB),
                   ("table", "huge", None, 3.0, 600 * MB, 4 * 1024**3),
                   ("index", "clean", "clean_pkey", 4.0, 3 * MB, 4 * MB),
                   ("index", "dead", "dead_pkey", 4.0, 3 * MB, 4 * MB),  # VACUUM FULL rebuilds
                   ("table", "stale", None, 1.2, 2 * MB, 8 * MB))  # below the warning ratio
    options = {"dead_tuples_base": 50, "dead_tuples_scale": 0.2,
               "vacuum_full_max_bytes": 1024**3}
    weekly, excluded = dm.build_plan(survey, bloat, "weekly", **options)
    text = {s["statement"] for s in weekly}
    assert text == {'VACUUM (ANALYZE) "public"."dead"', 'ANALYZE "public"."stale"',
                    'ANALYZE "public"."never"', 'VACUUM (ANALYZE) "public"."huge"',
                    'VACUUM (ANALYZE) "public"."we""ird t"'}
    assert all(not s["needs_confirm"] and s["lock"] == "SHARE UPDATE EXCLUSIVE"
               for s in weekly)
    assert [e["table"] for e in excluded] == ["public.foreign"]
    assert "may not" in excluded[0]["reason"]

    monthly, excluded = dm.build_plan(survey, bloat, "monthly", **options)
    rewrites = [s for s in monthly if s["needs_confirm"]]
    assert [s["statement"] for s in rewrites] == [
        'VACUUM (FULL, ANALYZE) "public"."dead"',
        'REINDEX INDEX CONCURRENTLY "public"."clean_pkey"']
    assert rewrites[0]["lock"] == "ACCESS EXCLUSIVE"
    assert rewrites[0]["est_bytes"] == 10 * MB  # the table with its indexes
    assert rewrites[1]["lock"] == "SHARE UPDATE EXCLUSIVE"
    # the weekly part comes first: it needs execute only, and runs without confirm
    assert [s["statement"] for s in monthly[:len(weekly)]] == [s["statement"] for s in weekly]
    too_big = [e for e in excluded if e["table"] == "public.huge"]
    assert too_big and "pg_repack" in too_big[0]["reason"]


def test_a_rewrite_needs_room_for_its_copy_and_its_wal():
    assert dm.rewrite_fits(free_bytes=100 * MB, est_bytes=40 * MB, factor=2.0)
    assert not dm.rewrite_fits(free_bytes=100 * MB, est_bytes=60 * MB, factor=2.0)


# -- against a real cluster ---------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(pg_passwords) -> Iterator[Cluster]:
    """One cluster for the module's tests; each makes (and names) its own bloated table."""
    from fraiseql_rb.targets.pgbin import PgBinariesNotFound, pg_bindir

    try:
        pg_bindir()
    except PgBinariesNotFound as exc:
        pytest.skip(str(exc))
    made = Cluster(Path(tempfile.mkdtemp(prefix="frb-pg-", dir="/tmp")))
    try:
        made.init(pg_passwords.superuser)
        made.start()
        made.provision(pg_passwords.app, audit_events=10)
        yield made
    finally:
        made.destroy()


def make_bloated(conn_source, name: str, rows: int = 100_000) -> None:
    """A table with ~91 % dead rows and autovacuum off on it (nothing else cleans it), with
    fresh statistics (the bloat estimate needs them), its dead tuples in pg_stat."""
    table = sql.Identifier(name)
    with conn_source() as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text) "
                             "WITH (autovacuum_enabled = false)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} SELECT g, repeat('x', 80) "
                             "FROM generate_series(1, %s) g").format(table), (rows,))
        conn.execute(sql.SQL("DELETE FROM {} WHERE id % 11 <> 0").format(table))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
    with conn_source() as conn:  # the session above flushed its counts when it closed
        deadline = time.monotonic() + 10
        while state(conn, name)["dead"] == 0:
            assert time.monotonic() < deadline, "the DELETE never reached the statistics"
            time.sleep(0.2)


def state(conn: psycopg.Connection, name: str) -> dict:
    row = conn.execute("SELECT s.n_dead_tup, pg_relation_filenode(c.oid), "
                       "pg_total_relation_size(c.oid) FROM pg_stat_user_tables s "
                       "JOIN pg_class c ON c.oid = s.relid WHERE s.relname = %s",
                       (name,)).fetchone()
    return {"dead": row[0], "filenode": row[1], "size": row[2]}


def run_all(ctx, **parameters) -> dict[str, object]:
    """The notebook's steps in order, in-process; the findings by check."""
    dm.maintain(ctx, **parameters)
    return {f.check: f for f in ctx.log.findings}


CHECK_POSTGRES = shutil.which("check_postgres")


def test_a_bloated_table_is_found_and_a_dry_run_changes_nothing(cluster, ctx_for):
    make_bloated(lambda: cluster.connect("fraiseql"), "dry_bloated")
    with cluster.connect("fraiseql") as conn:
        before = state(conn, "dry_bloated")
    name = "public.dry_bloated"

    weekly = ctx_for(cluster, runbook="database-maintenance")
    found = run_all(weekly, schedule="weekly")
    dead = found["maintenance.dead_tuples"]
    assert dead.status is Status.WARNING, dead.summary  # autovacuum is off on it
    assert name in dead.evidence["over_limit"]
    assert dead.evidence["dead_tuples"][name] == before["dead"]
    assert found["maintenance.bloat"].status is Status.CRITICAL
    assert name in found["maintenance.bloat"].summary
    assert "-p schedule monthly" in found["maintenance.bloat"].remediation  # weekly: not yet
    assert found["maintenance.autovacuum_off"].status is Status.WARNING
    assert name in found["maintenance.autovacuum_off"].evidence["tables"]
    statements = found["maintenance.plan"].evidence["statements"]
    assert 'VACUUM (ANALYZE) "public"."dry_bloated"' in [s["statement"] for s in statements]
    assert found["change.gate"].evidence["outcome"] == "dry-run"
    assert found["maintenance.verify"].status is Status.INFO
    assert found["change.record"].evidence["outcome"] == "dry-run"

    monthly = ctx_for(cluster, runbook="database-maintenance")
    found = run_all(monthly, schedule="monthly")
    full = [s for s in found["maintenance.plan"].evidence["statements"]
            if s["statement"] == 'VACUUM (FULL, ANALYZE) "public"."dry_bloated"']
    assert full and full[0]["needs_confirm"] and full[0]["lock"] == "ACCESS EXCLUSIVE"
    # a monthly run's next step is its own plan, not "run monthly"
    assert "-p execute true -p confirm" in found["maintenance.bloat"].remediation
    assert "-p schedule monthly" not in found["maintenance.bloat"].remediation
    assert found["maintenance.disk_headroom"].status is Status.OK  # local: measured

    for ctx in (weekly, monthly):
        assert ctx.log.actions and not any(a.executed for a in ctx.log.actions)
    with cluster.connect("fraiseql") as conn:
        after = state(conn, "dry_bloated")
    assert (after["dead"], after["filenode"]) == (before["dead"], before["filenode"])

    if CHECK_POSTGRES:  # the peer agrees that the table is bloated
        ratio, wasted = thresholds.BLOAT_RATIO, thresholds.BLOAT_WASTED_BYTES
        proc = subprocess.run(
            [CHECK_POSTGRES, "--action=bloat", f"--dbhost={cluster.run_dir}",
             f"--dbport={cluster.port}", f"--dbuser={SUPERUSER}", "--dbname=fraiseql",
             f"--warning={ratio.warning * 100:g}% and {wasted.warning / MB:g} MB",
             f"--critical={ratio.critical * 100:g}% and {wasted.critical / MB:g} MB",
             "--include=dry_bloated"], capture_output=True, text=True, timeout=60, check=False)
        assert re.search(r"POSTGRES_BLOAT CRITICAL", proc.stdout), proc.stdout + proc.stderr


def test_weekly_with_execute_vacuums_and_the_dead_tuples_drop(cluster, ctx_for):
    make_bloated(lambda: cluster.connect("fraiseql"), "weekly_bloated")
    with cluster.connect("fraiseql") as conn:
        before = state(conn, "weekly_bloated")
    ctx = ctx_for(cluster, runbook="database-maintenance")
    ctx.execute = True
    found = run_all(ctx, schedule="weekly", tables=["public.weekly_bloated"])
    with cluster.connect("fraiseql") as conn:
        after = state(conn, "weekly_bloated")
    assert after["dead"] < before["dead"] / 10, (before, after)
    assert after["filenode"] == before["filenode"]  # plain VACUUM does not rewrite
    verify = found["maintenance.verify"]
    assert verify.status is Status.OK, verify.summary
    row = verify.evidence["tables"]["public.weekly_bloated"]
    assert row["dead_before"] == before["dead"] and row["dead_after"] < row["dead_before"]
    assert verify.evidence["dropped"] is True
    ran = [a for a in ctx.log.actions if a.executed]
    assert [a.command for a in ran] == ['VACUUM (ANALYZE) "public"."weekly_bloated"']
    assert ran[0].result["outcome"] == "done" and ran[0].result["elapsed_s"] >= 0
    assert found["change.record"].evidence["outcome"] == "applied"
    assert found["maintenance.dead_tuples"].resolved_by  # the condition cleared


def test_monthly_refuses_vacuum_full_without_confirm_and_runs_it_with(cluster, ctx_for):
    make_bloated(lambda: cluster.connect("fraiseql"), "monthly_bloated")
    with cluster.connect("fraiseql") as conn:
        before = state(conn, "monthly_bloated")
    full = 'VACUUM (FULL, ANALYZE) "public"."monthly_bloated"'

    unconfirmed = ctx_for(cluster, runbook="database-maintenance")
    unconfirmed.execute = True
    found = run_all(unconfirmed, schedule="monthly", tables=["public.monthly_bloated"])
    recorded = [a for a in unconfirmed.log.actions if a.command == full]
    assert len(recorded) == 1 and not recorded[0].executed
    assert "confirm" in recorded[0].result["not_run"]
    assert found["maintenance.apply"].status is Status.WARNING
    assert "confirm" in found["maintenance.apply"].summary
    with cluster.connect("fraiseql") as conn:
        middle = state(conn, "monthly_bloated")
    assert middle["filenode"] == before["filenode"]  # not rewritten
    assert middle["dead"] < before["dead"]  # the plain VACUUM needs execute only

    confirmed = ctx_for(cluster, runbook="database-maintenance")
    confirmed.execute, confirmed.confirm = True, "t"
    found = run_all(confirmed, schedule="monthly", tables=["public.monthly_bloated"])
    ran = [a for a in confirmed.log.actions if a.command == full]
    assert ran and ran[0].executed and ran[0].result["outcome"] == "done"
    with cluster.connect("fraiseql") as conn:
        after = state(conn, "monthly_bloated")
    assert after["filenode"] != before["filenode"]
    assert after["size"] < before["size"] / 3, (before, after)
    verify = found["maintenance.verify"]
    assert verify.status is Status.OK, verify.summary
    assert found["maintenance.bloat"].resolved_by, found["maintenance.bloat"].summary


def test_a_locked_table_is_skipped_without_waiting_and_the_rest_goes_on(cluster, ctx_for):
    for name in ("locked_bloated", "free_bloated"):
        make_bloated(lambda: cluster.connect("fraiseql"), name, rows=40_000)
    holder = cluster.connect("fraiseql", autocommit=False)
    try:
        holder.execute("LOCK TABLE locked_bloated IN ACCESS SHARE MODE")  # stays open
        holder_pid = holder.info.backend_pid
        with cluster.connect("fraiseql") as conn:
            before = {n: state(conn, n) for n in ("locked_bloated", "free_bloated")}
        lock_timeout_ms = 150
        ctx = ctx_for(cluster, runbook="database-maintenance")
        ctx.execute, ctx.confirm = True, "t"
        found = run_all(ctx, schedule="monthly", lock_timeout_ms=lock_timeout_ms,
                        tables=["public.locked_bloated", "public.free_bloated"])
        sessions = found["maintenance.sessions"]
        assert sessions.status is Status.WARNING, sessions.summary
        assert str(holder_pid) in sessions.summary and "locked_bloated" in sessions.summary
        skipped = found["maintenance.lock_skipped"]
        assert skipped.status is Status.WARNING and "locked_bloated" in skipped.summary
        full = {a.command: a for a in ctx.log.actions
                if a.command.startswith("VACUUM (FULL")}
        locked = full['VACUUM (FULL, ANALYZE) "public"."locked_bloated"']
        assert locked.executed and locked.result["outcome"] == "skipped"
        assert locked.result["elapsed_s"] < 10 * lock_timeout_ms / 1000, locked.result
        assert holder_pid in skipped.evidence["holders"]
        assert full['VACUUM (FULL, ANALYZE) "public"."free_bloated"'].result["outcome"] == "done"
        with cluster.connect("fraiseql") as conn:
            after = {n: state(conn, n) for n in ("locked_bloated", "free_bloated")}
        assert after["locked_bloated"]["filenode"] == before["locked_bloated"]["filenode"]
        assert after["free_bloated"]["filenode"] != before["free_bloated"]["filenode"]
        # the plain VACUUM takes SHARE UPDATE EXCLUSIVE, which a reader does not block
        assert after["locked_bloated"]["dead"] < before["locked_bloated"]["dead"]
    finally:
        holder.rollback()
        holder.close()


def test_a_reindex_cancelled_half_way_leaves_no_invalid_index(cluster, ctx_for):
    """REINDEX INDEX CONCURRENTLY builds its copy, then waits for every older snapshot: a
    REPEATABLE READ transaction makes lock_timeout cancel it there, leaving `<index>_ccnew`
    invalid (it costs every write): the runbook drops it."""
    with cluster.connect("fraiseql") as conn:
        conn.execute("CREATE TABLE idx_bloated (id int PRIMARY KEY, k text) "
                     "WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO idx_bloated SELECT g, md5(g::text) "
                     "FROM generate_series(1, 100000) g")
        conn.execute("CREATE INDEX idx_bloated_k ON idx_bloated (k)")
        conn.execute("DELETE FROM idx_bloated WHERE id > 10000")  # the heap's tail: truncated
        conn.execute("VACUUM (ANALYZE) idx_bloated")  # ... the indexes keep their pages
    holder = cluster.connect("fraiseql", autocommit=False)
    try:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")  # a snapshot, no lock on the table
        ctx = ctx_for(cluster, runbook="database-maintenance")
        ctx.execute, ctx.confirm = True, "t"
        found = run_all(ctx, schedule="monthly", lock_timeout_ms=200,
                        tables=["public.idx_bloated"])
        reindex = 'REINDEX INDEX CONCURRENTLY "public"."idx_bloated_k"'
        planned = [s["statement"] for s in found["maintenance.plan"].evidence["statements"]]
        assert reindex in planned and not any("FULL" in s for s in planned), planned
        assert str(holder.info.backend_pid) in found["maintenance.sessions"].summary
        ran = {a.command: a for a in ctx.log.actions if a.executed}
        assert ran[reindex].result["outcome"] == "skipped"
        drop = ran['DROP INDEX CONCURRENTLY "public"."idx_bloated_k_ccnew"']
        assert drop.result["outcome"] == "done"
        skipped = [f.summary for f in ctx.log.findings if f.check == "maintenance.lock_skipped"]
        assert any("public.idx_bloated_k_ccnew was dropped" in s for s in skipped), skipped
    finally:
        holder.rollback()
        holder.close()
    with cluster.connect("fraiseql") as conn:
        assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone() \
            == (0,)


def test_the_application_role_may_not_vacuum_what_it_does_not_own(cluster, ctx_for):
    ctx = ctx_for(cluster, runbook="database-maintenance", admin_dbname=None)
    found = run_all(ctx, schedule="weekly", tables=["public.tb_post"])
    role = found["maintenance.role"]
    assert role.status is Status.WARNING, role.summary
    assert "public.tb_post" in role.evidence["not_permitted"]
    assert "admin_database_url" in role.remediation
    assert found["maintenance.plan"].evidence["statements"] == []
    # the data directory is hidden from this role: never `ok` for what was not measured
    assert found["maintenance.disk_headroom"].status is Status.INFO
    assert found["maintenance.disk_headroom"].evidence["measured"] is False


# -- drills through the CLI -----------------------------------------------------------------

def _wait_for_the_replicas_horizon(conn: psycopg.Connection, timeout_s: float = 30) -> None:
    """The sandbox's replica runs with hot_standby_feedback: its slot's xmin trails by up to
    wal_receiver_status_interval, and VACUUM keeps what it may still read. Wait until the
    horizon has passed the DELETE, as a weekly run a day later would find it."""
    xid = conn.execute("SELECT txid_current() % 4294967296").fetchone()[0]
    deadline = time.monotonic() + timeout_s
    while conn.execute("SELECT count(*) FROM pg_replication_slots WHERE xmin IS NOT NULL "
                       "AND xmin::text::bigint <= %s", (xid,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the replica's feedback never moved on"
        time.sleep(0.5)


def test_cli_weekly_execute_drops_the_dead_tuples_of_a_bloated_table(healthy_sandbox):
    db = manager.Sandbox.open(healthy_sandbox.root).cluster
    try:
        make_bloated(lambda: db.connect("fraiseql"), "h1_bloated", rows=40_000)
        with db.connect("fraiseql") as conn:
            before = state(conn, "h1_bloated")
            _wait_for_the_replicas_horizon(conn)
        result = healthy_sandbox.run("database-maintenance", "--incident-id", "DM-1",
                                     "-p", "execute", "true",
                                     "-p", "tables", '["public.h1_bloated"]')
        assert result.returncode in (1, 2), result.stderr  # the bloat remains: weekly
        found = by_check(findings_of(result))
        verify = found["maintenance.verify"]
        row = verify["evidence"]["tables"]["public.h1_bloated"]
        assert row["dead_before"] == before["dead"], row
        assert row["dead_after"] < row["dead_before"] / 10, row
        assert verify["status"] == "ok", verify["summary"]
        assert found["change.record"]["evidence"]["outcome"] == "applied"
    finally:
        with contextlib.suppress(Exception), db.connect("fraiseql") as conn:
            conn.execute("DROP TABLE IF EXISTS h1_bloated")


def test_cli_healthy_sandbox_with_defaults_exits_0_and_changes_nothing(healthy_sandbox):
    result = healthy_sandbox.run("database-maintenance")
    assert result.returncode == 0, result.stdout + result.stderr
    data = findings_of(result)
    assert not [a for a in data["actions"] if a["executed"]]
    assert by_check(data)["change.record"]["evidence"]["outcome"] in ("dry-run",
                                                                       "nothing-to-do")


def test_cli_a_bad_schedule_exits_64_before_a_kernel(sandbox):
    result = sandbox.run("database-maintenance", "-p", "schedule", "daily")
    assert result.returncode == 64, result.stderr
    assert "schedule" in result.stderr and "weekly" in result.stderr
