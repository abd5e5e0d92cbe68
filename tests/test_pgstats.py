"""pgstats against the real session cluster: every frame from a real query, as the app role."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from fraiseql_rb.sandbox.cluster import APP_USER
from fraiseql_rb.targets import pgstats, postgres


def _poll(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 15) -> Any:
    """Statistics reach the views asynchronously: ask until they show, or give up."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _row(frame: pd.DataFrame, **match: Any) -> pd.Series:
    found = frame
    for key, value in match.items():
        found = found[found[key] == value]
    assert len(found) == 1, f"no single row {match} in\n{frame}"
    return found.iloc[0]


def test_database_sizes(pg_app_dsn):
    frame = pgstats.database_sizes(pg_app_dsn)
    assert list(frame.columns) == ["database", "size_bytes", "current"]
    row = _row(frame, database="fraiseql")
    assert row["size_bytes"] > 1_000_000 and bool(row["current"])
    assert "template0" not in set(frame["database"])


def test_table_and_index_sizes(pg_app_dsn):
    tables = pgstats.table_sizes(pg_app_dsn, limit=None)
    user = _row(tables, table="tb_user")
    assert user["schema"] == "public"
    assert user["total_bytes"] > 0 and user["heap_bytes"] > 0 and user["index_bytes"] > 0
    assert user["total_bytes"] == user["heap_bytes"] + user["index_bytes"] + user["toast_bytes"]
    assert list(tables["total_bytes"]) == sorted(tables["total_bytes"], reverse=True)
    # the 20k generated audit events make the audit table the largest
    assert tables.iloc[0]["table"] == "fraiseql_audit_logs"
    assert len(pgstats.table_sizes(pg_app_dsn, limit=2)) == 2

    indexes = pgstats.index_sizes(pg_app_dsn, limit=None)
    pkey = _row(indexes, index="tb_user_pkey")
    assert pkey["table"] == "tb_user" and pkey["size_bytes"] > 0
    assert bool(pkey["primary"]) and bool(pkey["unique"])


def test_limit_is_validated(pg_app_dsn):
    with pytest.raises(ValueError, match="positive integer"):
        pgstats.table_sizes(pg_app_dsn, limit=0)


def test_cache_hit_ratios(pg_cluster, pg_app_dsn):
    with pg_cluster.connect("fraiseql") as su:
        su.execute("SELECT count(*) FROM tb_user").fetchone()
        su.execute("SELECT pg_stat_force_next_flush()")
    by_db = pgstats.cache_hit_by_database(pg_app_dsn)
    row = _row(by_db, database="fraiseql")
    assert bool(row["current"]) and row["blks_hit"] > 0
    assert 0 < row["hit_ratio"] <= 1

    by_table = _poll(lambda: pgstats.cache_hit_by_table(pg_app_dsn, limit=None),
                     lambda f: (f["table"] == "tb_user").any()
                     and _row(f, table="tb_user")["heap_blks_hit"] > 0)
    user = _row(by_table, table="tb_user")
    assert 0 < user["hit_ratio"] <= 1 and 0 < user["heap_hit_ratio"] <= 1


def test_dead_tuples_appear_after_updates(pg_cluster, pg_app_dsn):
    """A scratch table with autovacuum off, so nothing cleans up before we look."""
    with pg_cluster.connect("fraiseql") as su:
        su.execute("CREATE TABLE frb_pgstats_dead (id int PRIMARY KEY, n int) "
                   "WITH (autovacuum_enabled = false)")
        try:
            su.execute("INSERT INTO frb_pgstats_dead SELECT g, 0 FROM generate_series(1, 100) g")
            su.execute("UPDATE frb_pgstats_dead SET n = n + 1")
            su.execute("SELECT pg_stat_force_next_flush()")

            def dead() -> int:
                frame = pgstats.vacuum_stats(pg_app_dsn, limit=None)
                found = frame[frame["table"] == "frb_pgstats_dead"]
                return int(found.iloc[0]["dead_tuples"]) if len(found) else 0

            assert _poll(dead, lambda n: n >= 100) == 100
            frame = pgstats.vacuum_stats(pg_app_dsn, limit=None)
            row = _row(frame, table="frb_pgstats_dead")
            assert row["live_tuples"] == 100
            assert row["dead_ratio"] == pytest.approx(0.5)
            assert pd.isna(row["last_vacuumed"])  # never vacuumed: autovacuum is off
            # most dead tuples first
            assert list(frame["dead_tuples"]) == sorted(frame["dead_tuples"], reverse=True)
        finally:
            su.execute("DROP TABLE frb_pgstats_dead")


def test_connections_include_our_own_session(pg_cluster, pg_app_dsn):
    with postgres.connect(pg_app_dsn) as conn, pg_cluster.connect("fraiseql"):
        frame = pgstats.connections(conn)  # the shared-session form of `source`
    ours = frame[(frame["user"] == APP_USER) & (frame["state"] == "active")
                 & (frame["application"] == "fraiseql-rb")]
    assert len(ours) == 1, frame
    row = ours.iloc[0]
    assert row["client_addr"] == "127.0.0.1" and row["database"] == "fraiseql"
    assert row["connections"] >= 1
    assert (frame["max_connections"] > 0).all()
    # the superuser session counts too, though the app role may not see its state or address
    hidden = _row(frame, user="postgres", database="fraiseql")
    assert hidden["state"] == "not visible" and hidden["client_addr"] == "not visible"
    assert hidden["connections"] >= 1
    # background processes are not client connections
    assert frame["database"].notna().all()


def test_a_privileged_role_sees_state_and_local_clients(pg_cluster):
    with pg_cluster.connect("fraiseql") as su:
        frame = pgstats.connections(su)
    row = _row(frame, user="postgres", state="active")
    assert row["client_addr"] == "local"  # the unix socket
