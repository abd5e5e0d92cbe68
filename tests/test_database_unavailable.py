"""database-unavailable against real PostgreSQL: each failure the playbook classifies is made
for real (a stopped cluster, a wrong password, a missing database, exhausted slots, TLS
refused, a server that never answers, pg_hba refusing the role), and a real streaming replica
shows the lag and the failover recommendation, which is recorded and never executed."""

from __future__ import annotations

import contextlib
import socket
import time

import psycopg
import pytest
from pg_replica import make_replica, wait_replayed

from fraiseql_rb.checks import database
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.diagnosis import conclude
from fraiseql_rb.core.findings import Status
from fraiseql_rb.incidents import database_unavailable as dbu
from fraiseql_rb.sandbox.cluster import APP_USER, free_port
from fraiseql_rb.targets import postgres

REPLICA_BUDGET_S = 15.0  # the replica test skips itself when building one takes longer


def run_playbook(ctx: RunContext, *, timeout_s: float = 5, rpo_seconds: float = 300):
    """Every step of the notebook, in its order, then the diagnosis."""
    steps = {
        "connection": dbu.check_connection(ctx, connect_timeout_s=timeout_s),
        "version": dbu.check_version(ctx, connect_timeout_s=timeout_s),
        "exists": dbu.check_database_exists(ctx, connect_timeout_s=timeout_s),
        "replica": dbu.check_replica(ctx, connect_timeout_s=timeout_s, rpo_seconds=rpo_seconds),
        "failover": dbu.recommend_failover(ctx, rpo_seconds=rpo_seconds),
        "manual": dbu.manual_steps(ctx),
    }
    steps["diagnosis"] = conclude(ctx, dbu.VOCABULARY, dbu.candidates(ctx))
    return steps


def test_a_healthy_database_is_none(pg_cluster, ctx_for):
    ctx = ctx_for(pg_cluster)
    steps = run_playbook(ctx)
    assert steps["connection"].status is Status.OK
    assert steps["connection"].evidence["ssl"] is True
    assert steps["version"].status is Status.OK
    assert steps["version"].evidence["version"].startswith("PostgreSQL")
    assert steps["exists"].status is Status.OK
    assert steps["replica"].status is Status.INFO  # none configured
    assert steps["failover"].evidence["recommended"] is False
    assert steps["diagnosis"].evidence["root_cause"] == "none"
    assert steps["diagnosis"].status is Status.OK
    assert ctx.status is Status.OK and ctx.log.actions == []


def test_stopped_server_is_server_down(make_cluster, ctx_for):
    cluster = make_cluster(start=False)  # initialised, nothing listening on its port
    ctx = ctx_for(cluster)
    steps = run_playbook(ctx)
    conn = steps["connection"]
    assert conn.status is Status.CRITICAL
    assert conn.evidence["tcp"] == "refused" and conn.evidence["failure"] == "server_down"
    assert steps["version"].status is Status.INFO and steps["exists"].status is Status.INFO
    assert steps["failover"].evidence["recommended"] is False  # no replica
    assert [f.check for f in steps["manual"]] == ["manual.page_database_team",
                                                  "manual.status_page"]
    assert steps["diagnosis"].evidence["root_cause"] == "server_down"
    assert ctx.status is Status.CRITICAL


def test_wrong_password_is_auth_rejected(pg_cluster, ctx_for, monkeypatch):
    monkeypatch.setenv("T_BAD_PW", "not-the-password")
    ctx = ctx_for(pg_cluster, password_env="T_BAD_PW")
    steps = run_playbook(ctx)
    conn = steps["connection"]
    assert conn.evidence["failure"] == "auth_rejected"
    assert conn.evidence["sqlstate"] == "28P01"
    assert "password authentication failed" in conn.evidence["error"]
    assert "not-the-password" not in str(conn.to_dict())
    # the admin URL still gets in, and finds the database there
    assert steps["exists"].status is Status.OK
    assert steps["exists"].evidence["checked_via"] == "the admin URL"
    assert steps["diagnosis"].evidence["root_cause"] == "auth_rejected"


def test_pg_hba_refusal_is_auth_rejected_not_tls(make_cluster, ctx_for, pg_passwords):
    # only the superuser may connect over TCP; libpq's refusal mentions "SSL encryption"
    cluster = make_cluster(provision=True, audit_events=10,
                           hba_rules=["host all postgres 127.0.0.1/32 scram-sha-256"])
    finding = dbu.check_connection(ctx_for(cluster))
    assert "no pg_hba.conf entry" in finding.evidence["error"]
    assert finding.evidence["failure"] == "auth_rejected"
    assert finding.evidence["sqlstate"] == "28000"


@pytest.mark.parametrize("admin_dbname", ["fraiseql", "no_such_db"])
def test_missing_database_is_database_missing(pg_cluster, ctx_for, admin_dbname):
    ctx = ctx_for(pg_cluster, dbname="no_such_db", admin_dbname=admin_dbname)
    steps = run_playbook(ctx)
    assert steps["connection"].evidence["failure"] == "database_missing"
    assert steps["connection"].evidence["sqlstate"] == "3D000"
    exists = steps["exists"]
    assert exists.status is Status.CRITICAL
    assert exists.evidence["database"] == "no_such_db"
    if admin_dbname == "no_such_db":  # the admin URL names the missing database too
        assert "maintenance database" in exists.evidence["checked_via"]
    diagnosis = steps["diagnosis"]
    assert diagnosis.evidence["root_cause"] == "database_missing"
    assert diagnosis.evidence["candidates"][0]["score"] == 1.0  # confirmed in pg_database


def test_missing_database_without_admin_url_is_still_classified(pg_cluster, ctx_for):
    ctx = ctx_for(pg_cluster, dbname="no_such_db", admin_dbname=None)
    steps = run_playbook(ctx)
    assert steps["exists"].status is Status.UNKNOWN
    assert steps["diagnosis"].evidence["root_cause"] == "database_missing"


def test_exhausted_slots_are_too_many_connections(make_cluster, ctx_for, pg_passwords):
    cluster = make_cluster(provision=True, audit_events=10,
                           extra_conf={"max_connections": 5,
                                       "superuser_reserved_connections": 1})
    app_dsn = cluster.dsn(APP_USER, pg_passwords.app)
    held: list[psycopg.Connection] = []
    try:
        refused = None
        for _ in range(10):
            try:
                held.append(psycopg.connect(app_dsn, connect_timeout=5))
            except psycopg.OperationalError as exc:
                refused = str(exc)
                break
        assert refused is not None and "reserved" in refused, "slots never ran out"
        ctx = ctx_for(cluster)
        steps = run_playbook(ctx)
        conn = steps["connection"]
        assert conn.evidence["failure"] == "too_many_connections"
        assert conn.evidence["sqlstate"] == "53300"
        # the superuser's reserved slot lets the admin URL in to confirm the database
        assert steps["exists"].status is Status.OK
        assert steps["failover"].evidence["recommended"] is False
        assert steps["diagnosis"].evidence["root_cause"] == "too_many_connections"
    finally:
        for conn in held:
            conn.close()


def test_tls_required_against_a_server_without_tls(make_cluster, ctx_for):
    cluster = make_cluster(provision=True, audit_events=10, ssl=False)
    ctx = ctx_for(cluster, sslmode="require")
    steps = run_playbook(ctx)
    assert "does not support SSL" in steps["connection"].evidence["error"]
    assert steps["connection"].evidence["failure"] == "tls_error"
    assert steps["diagnosis"].evidence["root_cause"] == "tls_error"


def test_certificate_verify_failure_is_tls_error(pg_cluster, ctx_for, tmp_path):
    # a CA that did not sign the server's certificate: a fresh self-signed one
    from fraiseql_rb.sandbox.cluster import ensure_ca

    other_ca = ensure_ca(tmp_path / "other-ca").ca_cert
    ctx = ctx_for(pg_cluster, sslmode="verify-full", url_params={"sslrootcert": str(other_ca)})
    finding = dbu.check_connection(ctx)
    assert "certificate verify failed" in finding.evidence["error"]
    assert finding.evidence["failure"] == "tls_error"


@pytest.fixture
def silent_server():
    """A local TCP socket that accepts connections (kernel backlog) and never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_server_that_never_answers_is_network_timeout(silent_server, monkeypatch):
    monkeypatch.setenv("T_PW", "whatever-password")
    target = inventory.Target("t", {
        "fraiseql_url": "http://127.0.0.1:9",
        "database_url": f"postgresql://fraiseql_user@127.0.0.1:{silent_server}/fraiseql",
        "database_password_env": "T_PW"})
    ctx = RunContext.adhoc("database-unavailable", target=target)
    began = time.monotonic()
    steps = run_playbook(ctx, timeout_s=2)
    assert time.monotonic() - began < 15
    conn = steps["connection"]
    assert conn.evidence["tcp"] == "connected"  # the port accepts: not refused
    assert conn.evidence["failure"] == "network_timeout"
    assert "never answered" in conn.summary
    assert steps["diagnosis"].evidence["root_cause"] == "network_timeout"


@pytest.mark.parametrize(("outcome", "expected"), [
    ("refused", "server_down"), ("timeout", "network_timeout"),
    ("unreachable", "network_timeout"), ("unresolved", "network_timeout")])
def test_tcp_precheck_outcomes(outcome, expected):
    probe = postgres.TcpProbe("db.internal", 5432, outcome, f"{outcome} detail", 1.0)
    assert postgres.classify(probe, None).code == expected


def test_tcp_probe_tells_refused_from_connected(silent_server):
    assert postgres.tcp_probe("127.0.0.1", silent_server, 2).outcome == "connected"
    assert postgres.tcp_probe("127.0.0.1", free_port(), 2).outcome == "refused"


def test_lsn_arithmetic():
    assert database.lsn_bytes("0/10") == 16
    assert database.lsn_bytes("1/0") == 1 << 32
    assert database.lsn_bytes(None) is None


# -- a real streaming replica ----------------------------------------------------------------

@pytest.fixture
def primary_and_replica(make_cluster):
    began = time.monotonic()
    primary = make_cluster(provision=True, audit_events=10)
    replica = None
    try:
        replica = make_replica(primary)
        with primary.connect("fraiseql") as conn:  # a transaction for the replica to replay
            conn.execute("CREATE TABLE failover_probe (at timestamptz DEFAULT now())")
            conn.execute("INSERT INTO failover_probe DEFAULT VALUES")
        wait_replayed(primary, replica)
        elapsed = time.monotonic() - began
        if elapsed > REPLICA_BUDGET_S:
            pytest.skip(f"building a streaming replica took {elapsed:.0f} s "
                        f"(> {REPLICA_BUDGET_S:g} s) on this machine")
        yield primary, replica
    finally:
        if replica is not None:
            with contextlib.suppress(Exception):
                replica.destroy()


def test_replica_lag_and_failover_recorded_not_executed(primary_and_replica, ctx_for):
    primary, replica = primary_and_replica

    # primary up: the replica is measured and caught up; no failover
    ctx = ctx_for(primary, replica=replica)
    steps = run_playbook(ctx)
    rep = steps["replica"]
    assert rep.status is Status.OK, rep.summary
    assert rep.evidence["in_recovery"] is True
    # streaming: at most WAL in flight behind the primary, so no time lag is charged
    assert rep.evidence["behind_primary_bytes"] < dbu.CAUGHT_UP_BYTES
    assert rep.evidence["lag_s"] == 0.0
    assert steps["failover"].evidence["recommended"] is False
    assert steps["diagnosis"].evidence["root_cause"] == "none"

    # primary down: lag measured on the replica, failover recommended and NOT executed
    primary.stop("fast")
    ctx = ctx_for(primary, replica=replica)
    steps = run_playbook(ctx)
    rep = steps["replica"]
    assert rep.status is Status.OK, rep.summary
    assert rep.evidence["in_recovery"] is True and rep.evidence["within_rpo"] is True
    assert rep.evidence["replay_lag_s"] is not None and 0 <= rep.evidence["replay_lag_s"] < 300
    assert rep.evidence["replay_gap_bytes"] == 0
    failover = steps["failover"]
    assert failover.evidence["recommended"] is True
    assert "execution belongs to the failover runbook" in failover.summary
    actions = {a.action: a for a in ctx.log.actions}
    assert set(actions) == {"promote_replica", "switch_connection_string"}
    assert all(a.executed is False and a.result is None for a in actions.values())
    assert "SELECT pg_promote();" in actions["promote_replica"].command
    assert f":{replica.port}" in actions["promote_replica"].command
    assert f"127.0.0.1:{replica.port}" in actions["switch_connection_string"].command
    assert steps["diagnosis"].evidence["root_cause"] == "server_down"
    # and nothing was promoted
    with replica.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_lag_beyond_the_rpo_is_not_recommended(primary_and_replica, ctx_for):
    primary, replica = primary_and_replica
    primary.stop("fast")
    time.sleep(1.2)
    ctx = ctx_for(primary, replica=replica)
    steps = run_playbook(ctx, rpo_seconds=1)
    assert steps["replica"].status is Status.WARNING
    assert steps["failover"].status is Status.WARNING
    assert steps["failover"].evidence["recommended"] is False
    assert ctx.log.actions == []
