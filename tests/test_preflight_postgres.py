"""PostgreSQL pre-flight checks against real clusters in the states they must catch."""

from __future__ import annotations

import pytest

from fraiseql_rb.checks import database
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.sandbox.cluster import APP_USER, SUPERUSER


@pytest.fixture
def ctx_for(monkeypatch, pg_passwords):
    """A RunContext whose target points at a given cluster, passwords from the env."""
    monkeypatch.setenv("T_APP_PW", pg_passwords.app)
    monkeypatch.setenv("T_SU_PW", pg_passwords.superuser)

    def build(cluster, *, admin: bool = True, **extra) -> RunContext:
        raw = {"fraiseql_url": "http://127.0.0.1:9",
               "database_url": cluster.dsn(APP_USER, "x").replace(":x@", "@", 1),
               "database_password_env": "T_APP_PW", **extra}
        if admin:
            raw["admin_database_url"] = cluster.dsn(SUPERUSER, "x", dbname="fraiseql"
                                                    ).replace(":x@", "@", 1)
            raw["admin_database_password_env"] = "T_SU_PW"
        return RunContext.adhoc(target=inventory.Target("t", raw))

    return build


def test_healthy_cluster_passes_every_check(pg_cluster, ctx_for):
    ctx = ctx_for(pg_cluster)
    assert database.check_version(ctx).status is Status.OK
    assert database.check_password_encryption(ctx).status is Status.OK
    assert database.check_role_passwords(ctx).status is Status.OK
    assert database.check_hba(ctx).status is Status.OK
    assert database.check_database_exists(ctx).status is Status.OK
    assert database.check_role_grants(ctx).status is Status.OK
    archiving = database.check_wal_archiving(ctx)
    assert archiving.status is Status.OK, archiving.summary
    assert database.check_replication(ctx).status is Status.INFO


def test_a_migration_tools_ledger_needs_no_grant_but_a_new_table_does(make_cluster, ctx_for):
    """confiture run as the admin role leaves its ledger without grants to the application:
    no warning for that (the application never reads it); a table a migration made without
    grants is one (the application cannot use it)."""
    cluster = make_cluster(provision=True, audit_events=10)
    with cluster.connect("fraiseql") as conn:
        conn.execute("CREATE TABLE tb_confiture (id int); CREATE TABLE tb_confiture_steps (id int)")
    finding = database.check_role_grants(ctx_for(cluster))
    assert finding.status is Status.OK, finding.summary
    assert finding.evidence["tool_tables_not_granted"] == ["tb_confiture", "tb_confiture_steps"]
    with cluster.connect("fraiseql") as conn:
        conn.execute("CREATE TABLE tb_comment (id int)")
    finding = database.check_role_grants(ctx_for(cluster))
    assert finding.status is Status.WARNING and finding.evidence["tables_affected"] == [
        "tb_comment"]


def test_privileged_checks_are_unknown_without_an_admin_url(pg_cluster, ctx_for):
    ctx = ctx_for(pg_cluster, admin=False)
    assert database.check_role_passwords(ctx).status is Status.UNKNOWN
    assert database.check_hba(ctx).status is Status.UNKNOWN
    # the app role can still read what is public
    assert database.check_wal_archiving(ctx).status is Status.OK


@pytest.mark.parametrize(("method", "expected"), [
    ("trust", Status.CRITICAL), ("password", Status.CRITICAL), ("md5", Status.WARNING)])
def test_hba_methods_on_host_lines(make_cluster, ctx_for, method, expected):
    rules = ["host all all 127.0.0.1/32 scram-sha-256",
             f"host all all 10.0.0.0/8 {method}"]
    cluster = make_cluster(provision=True, audit_events=10, hba_rules=rules)
    finding = database.check_hba(ctx_for(cluster))
    assert finding.status is expected
    assert method in finding.summary and "10.0.0.0" in finding.summary


def test_md5_setting_and_md5_role_password(make_cluster, ctx_for, pg_passwords):
    cluster = make_cluster(provision=True, audit_events=10, password_encryption="md5",
                           hba_rules=["host all all 127.0.0.1/32 md5"])
    with cluster.connect() as conn:
        conn.execute("CREATE ROLE legacy LOGIN PASSWORD 'legacy-password-1'")
    ctx = ctx_for(cluster)
    assert database.check_password_encryption(ctx).status is Status.CRITICAL
    roles = database.check_role_passwords(ctx)
    assert roles.status is Status.CRITICAL
    assert "legacy (md5)" in roles.summary
    assert "legacy-password-1" not in repr(roles.evidence)


def test_archiving_off_and_failing(make_cluster, ctx_for):
    off = make_cluster(provision=True, audit_events=10, extra_conf={"archive_mode": "off"})
    finding = database.check_wal_archiving(ctx_for(off))
    assert finding.status is Status.CRITICAL and "archive_mode is off" in finding.summary

    failing = make_cluster(provision=True, audit_events=10,
                           extra_conf={"archive_command": "false"})
    with failing.connect() as conn:
        conn.execute("SELECT pg_logical_emit_message(false, 'x', 'y')")
        conn.execute("SELECT pg_switch_wal()")
    import time

    deadline = time.monotonic() + 20
    finding = database.check_wal_archiving(ctx_for(failing))
    while "failing" not in finding.summary and time.monotonic() < deadline:
        time.sleep(0.5)
        finding = database.check_wal_archiving(ctx_for(failing))
    assert finding.status is Status.CRITICAL and "archiving is failing" in finding.summary


def test_ha_target_without_a_replica_is_critical(pg_cluster, ctx_for):
    finding = database.check_replication(ctx_for(pg_cluster, ha=True))
    assert finding.status is Status.CRITICAL


def test_missing_database_is_reported(pg_cluster, ctx_for, monkeypatch):
    ctx = ctx_for(pg_cluster)
    raw = dict(ctx.target.raw)
    raw["database_url"] = raw["database_url"].replace("/fraiseql", "/nosuchdb")
    ctx = RunContext.adhoc(target=inventory.Target("t", raw))
    finding = database.check_database_exists(ctx)
    assert finding.status is Status.CRITICAL and "nosuchdb does not exist" in finding.summary
