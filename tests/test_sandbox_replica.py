"""The sandbox's streaming replica and its drills (replica-lag, replica-down, archive-broken):
each fault is what it says in PostgreSQL itself, and each heals back to a streaming,
caught-up replica and an empty archive backlog."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from fraiseql_rb.core import inventory
from fraiseql_rb.sandbox import manager
from fraiseql_rb.sandbox import replica as pgreplica

pytestmark = pytest.mark.drill


def _one(url: str, sql: str) -> object:
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def _primary_view(root: Path) -> tuple[str, float] | None:
    """(state, bytes not replayed) of the replica as the primary sees it."""
    sb = manager.Sandbox.open(root)
    with sb.cluster.connect() as conn:
        row = conn.execute(
            "SELECT state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
            "FROM pg_stat_replication WHERE application_name = %s",
            (pgreplica.APPLICATION_NAME,)).fetchone()
    return (row[0], float(row[1] or 0)) if row else None


def test_the_inventory_reaches_a_hot_standby(healthy_sandbox) -> None:
    target = inventory.load_target("sandbox", healthy_sandbox.inventory)
    assert not inventory.load(healthy_sandbox.inventory).unknown_keys()
    replica_url = target.database_url("replica_database")
    assert _one(replica_url, "SELECT pg_is_in_recovery()") is True
    assert _one(target.database_url(), "SELECT pg_is_in_recovery()") is False
    admin = target.database_url("replica_admin_database")
    assert _one(admin, "SELECT current_user") == "postgres"
    assert (Path(target.get("replica_data_dir")) / "standby.signal").exists()
    state = _primary_view(healthy_sandbox.root)
    assert state is not None and state[0] == "streaming"
    status = healthy_sandbox.cli("sandbox", "--dir", str(healthy_sandbox.root), "status")
    assert "hot standby" in status.stdout


def test_node_commands_stop_and_start_the_replica(healthy_sandbox) -> None:
    target = inventory.load_target("sandbox", healthy_sandbox.inventory)
    url = target.database_url("replica_database")
    subprocess.run(target.get("replica_stop_command"), shell=True, check=True, timeout=60,
                   capture_output=True)
    with pytest.raises(psycopg.OperationalError):
        _one(url, "SELECT 1")
    subprocess.run(target.get("replica_start_command"), shell=True, check=True, timeout=60,
                   capture_output=True)
    assert _one(url, "SELECT pg_is_in_recovery()") is True
    assert "primary" in target.get("replica_primary_stop_command")


def test_replica_lag_pauses_replay_while_the_primary_writes(healthy_sandbox) -> None:
    target = inventory.load_target("sandbox", healthy_sandbox.inventory)
    admin = target.database_url("replica_admin_database")
    healthy_sandbox.fault("replica-lag")
    assert _one(admin, "SELECT pg_is_wal_replay_paused()") is True
    time.sleep(3)  # the writer commits once a second
    state = _primary_view(healthy_sandbox.root)
    assert state is not None and state[1] > 0, state
    lag = _one(admin, "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())")
    assert lag is not None and float(lag) >= 2  # behind in time, not only in bytes
    healthy_sandbox.heal("replica-lag")
    assert _one(admin, "SELECT pg_is_wal_replay_paused()") is False
    state = _primary_view(healthy_sandbox.root)
    assert state == ("streaming", 0.0)
    sb = manager.Sandbox.open(healthy_sandbox.root)
    assert pgreplica.WRITER_PID not in sb.state
    assert _one(target.database_url("admin_database"),
                f"SELECT to_regclass('{pgreplica.WRITER_TABLE}')") is None


def test_replica_down_and_back(healthy_sandbox) -> None:
    healthy_sandbox.fault("replica-down")
    assert _primary_view(healthy_sandbox.root) is None
    assert "replica    stopped" in "\n".join(manager.status(healthy_sandbox.root).lines())
    healthy_sandbox.heal("replica-down")
    state = _primary_view(healthy_sandbox.root)
    assert state is not None and state[0] == "streaming"


def test_archive_broken_piles_up_ready_files_and_heals(healthy_sandbox) -> None:
    sb = manager.Sandbox.open(healthy_sandbox.root)
    with sb.cluster.connect() as conn:
        failed_before = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]
    healthy_sandbox.fault("archive-broken")
    assert len(sb.cluster.ready_segments()) >= 2
    with sb.cluster.connect() as conn:
        failed, command = conn.execute(
            "SELECT failed_count, current_setting('archive_command') FROM pg_stat_archiver"
        ).fetchone()
    assert failed > failed_before
    assert "cp %p" in command  # archive_command itself untouched: its destination fails
    healthy_sandbox.heal("archive-broken")
    assert sb.cluster.ready_segments() == []
    assert sb.cluster.wait_archived(timeout=10) > 0


@pytest.mark.slow
def test_no_replica_builds_a_primary_alone() -> None:
    root = Path(tempfile.mkdtemp(prefix="fraiseql-rb-noreplica-", dir="/tmp"))
    shutil.rmtree(root)
    try:
        result = manager.up(root, audit_events=0, traffic_rps=0, replica=False)
        raw = inventory.load_target("sandbox", result.inventory).raw
        assert not [k for k in raw if k.startswith("replica_")]
        assert manager.status(root).components["replica"] == "none (--no-replica)"
        assert not (root / pgreplica.DIR).exists()
    finally:
        manager.down(root, purge=True)
