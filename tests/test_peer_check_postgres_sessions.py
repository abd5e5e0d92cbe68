"""check_postgres as a peer for the session side of connection-pool-exhaustion (issue 11 §2, §3).

Each test makes a real state in the sandbox's PostgreSQL directly (sessions held here with
psycopg, as a batch job or a forgotten psql would hold them; no sandbox fault), grades it with
check_postgres (`backends`, `txn_idle`) at the runbook's own thresholds, converted to
check_postgres' forms, runs the runbook through the CLI on the same state, and asserts that our
verdict is at least as severe as the peer's and that the diagnosis names the cause.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from drill_helpers import by_check, diagnosis_of, findings_of

from fraiseql_rb.core import thresholds
from fraiseql_rb.sandbox import cluster as pgcluster
from fraiseql_rb.sandbox import manager

CHECK_POSTGRES = shutil.which("check_postgres") or shutil.which("check_postgres.pl")
pytestmark = pytest.mark.skipif(CHECK_POSTGRES is None,
                                reason="check_postgres is not installed (Debian package "
                                       "check-postgres; .ci/run installs it)")

BATCH_ROLE = "rb_peer_batch"  # another application's role: not FraiseQL's, not a superuser
BATCH_APP = "nightly-batch"
RANK = {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}  # DESIGN.md: unknown > warning
SHORT_IDLE_S = 2.0  # the idle threshold given to both tools, so the test need not wait 60 s


@pytest.fixture(scope="module")
def batch_role(sandbox) -> Iterator[pgcluster.Cluster]:
    """A login role of another application in the sandbox's cluster (dropped afterwards)."""
    cluster = manager.Sandbox.open(sandbox.root).cluster
    with cluster.connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {BATCH_ROLE}")
        conn.execute(f"CREATE ROLE {BATCH_ROLE} LOGIN")
    yield cluster
    with cluster.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = %s", (BATCH_ROLE,))
        time.sleep(0.5)
        conn.execute(f"DROP ROLE IF EXISTS {BATCH_ROLE}")


def hold(cluster: pgcluster.Cluster, stack: ExitStack, count: int, *,
         idle_in_transaction: bool = False) -> list[int]:
    """`count` sessions of the batch role over the socket, plain idle or idle in transaction;
    closed when `stack` closes. Returns their pids."""
    info = {**cluster.superuser_conninfo(pgcluster.APP_DB), "user": BATCH_ROLE}
    pids = []
    for _ in range(count):
        conn = stack.enter_context(psycopg.connect(**info, application_name=BATCH_APP,
                                                   autocommit=True))
        if idle_in_transaction:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
        pids.append(conn.info.backend_pid)
    return pids


def client_backends(cluster: pgcluster.Cluster) -> int:
    with cluster.connect(pgcluster.APP_DB) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE backend_type = 'client backend'").fetchone()
    return int(row[0]) - 1  # not this one


def check_postgres(cluster: pgcluster.Cluster, action: str, *args: str) -> tuple[str, str]:
    """Run the peer as a superuser over the socket (it sees every session): (status, line)."""
    argv = [str(CHECK_POSTGRES), f"--action={action}", f"--host={cluster.run_dir}",
            f"--port={cluster.port}", f"--dbuser={pgcluster.SUPERUSER}",
            f"--dbname={pgcluster.APP_DB}", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    line = (done.stdout or done.stderr).strip().splitlines()[0]
    status = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}[done.returncode]
    return status, line


def backends_thresholds(available: int) -> list[str]:
    """The runbook's share of max_connections (less reserved) as check_postgres counts."""
    limit = thresholds.POOL_OF_MAX_CONNECTIONS
    return [f"--warning={math.ceil(limit.warning * available)}",
            f"--critical={math.ceil(limit.critical * available)}"]


def at_least_as_severe(data: dict[str, Any], peer: str, line: str) -> None:
    assert RANK[data["status"]] >= RANK[peer], (
        f"ours {data['status']} is milder than check_postgres' {peer}: {line}")


@pytest.mark.parametrize("total", [93, 97])
def test_slots_held_outside_the_pool(sandbox, batch_role, total):
    """93-98 of 100 slots held by another application's idle sessions: the peer's `backends`
    grades it, and our diagnosis names the holders instead of saying nothing is wrong."""
    cluster = batch_role
    with cluster.connect() as conn:
        max_conn = int(conn.execute("SHOW max_connections").fetchone()[0])
        reserved = int(conn.execute("SHOW superuser_reserved_connections").fetchone()[0])
    available = max_conn - reserved
    with ExitStack() as stack:
        held = hold(cluster, stack, max(0, total - client_backends(cluster)))
        peer, line = check_postgres(cluster, "backends", *backends_thresholds(available))
        assert peer in ("warning", "critical"), line
        result = sandbox.run("connection-pool-exhaustion", "--incident-id",
                             f"PEER-backends-{total}", "-p", "observe_s", "1")
    assert held, "nothing was held"
    data = findings_of(result)
    at_least_as_severe(data, peer, line)
    diagnosis = diagnosis_of(data)
    assert diagnosis["evidence"]["root_cause"] == "connections_outside_pool", diagnosis
    assert RANK[diagnosis["status"]] >= RANK[by_check(data)["pool.connections"]["status"]]
    evidence = by_check(data)["pool.connections"]["evidence"]
    assert evidence["outside_pool"] >= len(held)
    assert any(h["user"] == BATCH_ROLE for h in evidence["holders"])


def test_idle_transactions_of_another_client(sandbox, batch_role):
    """Sessions idle in transaction past the threshold: `txn_idle` warns, so must we."""
    cluster = batch_role
    with ExitStack() as stack:
        pids = hold(cluster, stack, 4, idle_in_transaction=True)
        time.sleep(SHORT_IDLE_S + 1)
        peer, line = check_postgres(cluster, "txn_idle",
                                    f"--warning={SHORT_IDLE_S:g} seconds")
        assert peer == "warning", line
        result = sandbox.run("connection-pool-exhaustion", "--incident-id", "PEER-txn-idle",
                             "-p", "idle_threshold_s", f"{SHORT_IDLE_S:g}",
                             "-p", "observe_s", "1")
    data = findings_of(result)
    at_least_as_severe(data, peer, line)
    assert diagnosis_of(data)["evidence"]["root_cause"] == "idle_in_transaction"
    assert set(pids) <= set(by_check(data)["pool.idle_in_transaction"]["evidence"]["pids"])


def test_a_partial_view_is_unknown_not_ok(sandbox, batch_role):
    """Without admin_database_url the application role cannot see the batch role's sessions
    (no state): the peer, as a superuser, warns about 18 idle transactions; we may not say
    "no session idle in transaction", only that 18 are hidden and how to see them."""
    cluster = batch_role
    plain = sandbox.inventory_without("admin_database_url", "admin_database_password_file")
    with ExitStack() as stack:
        hold(cluster, stack, 18, idle_in_transaction=True)
        time.sleep(SHORT_IDLE_S + 1)
        peer, line = check_postgres(cluster, "txn_idle",
                                    f"--warning={SHORT_IDLE_S:g} seconds")
        assert peer == "warning", line
        result = sandbox.run("connection-pool-exhaustion", "--inventory", str(plain),
                             "--incident-id", "PEER-partial", "-p", "idle_threshold_s",
                             f"{SHORT_IDLE_S:g}", "-p", "observe_s", "1")
    data = findings_of(result)
    at_least_as_severe(data, peer, line)
    checks = by_check(data)
    for name in ("pool.idle_in_transaction", "pool.long_running"):
        finding = checks[name]
        assert finding["status"] == "unknown", finding
        assert finding["evidence"]["not_visible"] >= 18
        assert "pg_read_all_stats" in finding["remediation"]
        assert "admin_database_url" in finding["remediation"]
    diagnosis = diagnosis_of(data)
    assert diagnosis["status"] != "ok" and "not visible" in diagnosis["summary"]
