"""The sandbox's PostgreSQL cluster, tested against real clusters (initdb/pg_ctl, no mocks)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import errors

from fraiseql_rb.sandbox import audit_data
from fraiseql_rb.sandbox.cluster import APP_DB, APP_USER, Cluster, ClusterError
from fraiseql_rb.targets import pgbin

if TYPE_CHECKING:
    from pg_fixtures import AuditSpec, PgPasswords

# Fixtures (pg_cluster, make_cluster, ...) come from tests/pg_fixtures.py via the root conftest.py.

PUBLIC_TABLES = ("tb_user", "tb_post", "fraiseql_audit_logs")


def _counts_by_type(conn: psycopg.Connection, table: str) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT event_type, count(*) FROM {table} GROUP BY 1"  # fixed table names
    ).fetchall()
    return {str(k): int(v) for k, v in rows}


def _postgres_pids(root_pid: int) -> set[int]:
    """The postmaster and its direct children (the backends and auxiliary processes)."""
    pids = {root_pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root_pid:
            pids.add(int(entry.name))
    return pids


def _alive_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- authentication and TLS ---------------------------------------------------------------------


def test_app_user_connects_with_scram_over_tls(pg_cluster: Cluster, pg_app_dsn: str) -> None:
    with psycopg.connect(pg_app_dsn) as conn:
        user, ssl = conn.execute(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert (user, ssl) == (APP_USER, True)
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
    with pg_cluster.connect() as su:
        stored = su.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                            (APP_USER,)).fetchone()
        assert stored and stored[0].startswith("SCRAM-SHA-256$")


def test_wrong_password_is_rejected(pg_cluster: Cluster, pg_passwords: PgPasswords) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as info:
        psycopg.connect(pg_cluster.dsn(APP_USER, "not-the-password", connect_timeout=10))
    assert pg_passwords.app not in str(info.value)


def test_certificate_verifies_for_127_0_0_1(
    pg_cluster: Cluster, pg_passwords: PgPasswords
) -> None:
    dsn = pg_cluster.dsn(APP_USER, pg_passwords.app, sslmode="verify-full",
                         sslrootcert=str(pg_cluster.tls.ca_cert), connect_timeout=10)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert stat.S_IMODE(pg_cluster.tls.server_key.stat().st_mode) == 0o600
    with pg_cluster.connect() as su:
        assert su.execute("SHOW ssl_min_protocol_version").fetchone() == ("TLSv1.2",)


def test_passwords_stay_out_of_log_and_statistics(
    pg_cluster: Cluster, pg_passwords: PgPasswords
) -> None:
    log_text = pg_cluster.logfile.read_text(errors="replace")
    for secret in (pg_passwords.app, pg_passwords.superuser):
        assert secret not in log_text
    with pg_cluster.connect(APP_DB) as su:
        if su.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
                      ).fetchone():
            texts = " ".join(r[0] for r in su.execute("SELECT query FROM pg_stat_statements"))
            assert pg_passwords.app not in texts and pg_passwords.superuser not in texts
            assert "SCRAM-SHA-256$" not in texts and "CREATE ROLE" not in texts.upper()


# -- role and grants (runbook 2.1 step 1) -------------------------------------------------------


def test_app_role_has_runbook_grants_only(pg_cluster: Cluster, pg_app_dsn: str) -> None:
    with pg_cluster.connect(APP_DB) as su:
        assert su.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')",
                          (APP_USER, APP_DB)).fetchone() == (True,)
        assert su.execute("SELECT has_schema_privilege(%s, 'public', 'USAGE')",
                          (APP_USER,)).fetchone() == (True,)
        for table in PUBLIC_TABLES:
            row = su.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE')",
                (APP_USER, f"public.{table}")).fetchone()
            assert row == (True,), table
        flags = su.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin "
                           "FROM pg_roles WHERE rolname = %s", (APP_USER,)).fetchone()
        assert flags == (False, False, False, True)
    with psycopg.connect(pg_app_dsn, autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE should_not_exist")
        # identity columns: INSERT works with the three runbook grants, no sequence grant
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO fraiseql_audit_logs (timestamp, event_type) "
                         "VALUES (now(), 'query_executed')")


def test_schema_views_return_jsonb_objects(pg_app_dsn: str) -> None:
    with psycopg.connect(pg_app_dsn) as conn:
        users = conn.execute("SELECT count(*) FROM v_user").fetchone()
        posts = conn.execute("SELECT count(*) FROM v_post").fetchone()
        assert users == (audit_data.USER_COUNT,) and posts and posts[0] >= 300
        data = conn.execute("SELECT data FROM v_post ORDER BY id LIMIT 1").fetchone()[0]
        assert {"id", "title", "author"} <= set(data) and "email" in data["author"]
        ids = [r[0] for r in conn.execute("SELECT id::text FROM tb_user ORDER BY pk_user")]
        assert ids == audit_data.user_ids()


# -- audit history -------------------------------------------------------------------------------


def test_audit_events_exact_count_window_and_shape(
    pg_cluster: Cluster, pg_audit_spec: AuditSpec
) -> None:
    with pg_cluster.connect(APP_DB) as su:
        total, oldest, newest = su.execute(
            'SELECT count(*), min("timestamp"), max("timestamp") FROM fraiseql_audit_logs'
        ).fetchone()
        assert total == pg_audit_spec.events
        now = pg_audit_spec.now
        assert now - timedelta(days=pg_audit_spec.days, minutes=5) <= oldest <= newest <= now
        counts = _counts_by_type(su, "fraiseql_audit_logs")
        assert set(counts) == set(audit_data.EVENT_TYPES)
        benign = sum(counts[t] for t in audit_data.BENIGN_EVENT_TYPES)
        assert benign > 0.9 * total
        nets = [ipaddress.ip_network(n) for n in audit_data.DOC_NETWORKS]
        ips = [r[0] for r in su.execute("SELECT DISTINCT ip_address FROM fraiseql_audit_logs")]
        assert ips and all(any(ip in net for net in nets) for ip in ips)
        # diurnal rhythm: the afternoon peak is several times the night trough
        by_hour = dict(su.execute(
            "SELECT extract(hour FROM \"timestamp\" AT TIME ZONE 'UTC')::int, count(*) "
            "FROM fraiseql_audit_logs GROUP BY 1").fetchall())
        assert by_hour[14] > 4 * by_hour[3]
        plan = su.execute(
            "EXPLAIN SELECT count(*) FROM fraiseql_audit_logs WHERE event_type = "
            "'csrf_failure' AND \"timestamp\" > now() - interval '24 hours'").fetchall()
        assert "ix_fraiseql_audit_logs_event_type_timestamp" in " ".join(r[0] for r in plan)


def test_same_seed_same_counts_other_seed_differs(
    pg_cluster: Cluster, pg_audit_spec: AuditSpec
) -> None:
    events, seed = pg_audit_spec.events, pg_audit_spec.seed
    with pg_cluster.connect(APP_DB) as su:
        for name in ("same_seed", "other_seed"):
            su.execute(f"CREATE TEMP TABLE {name} (LIKE fraiseql_audit_logs INCLUDING ALL)")
        audit_data.populate_audit_logs(su, events, seed=seed, table="same_seed")
        audit_data.populate_audit_logs(su, events, seed=seed + 1, table="other_seed")
        sandbox = _counts_by_type(su, "fraiseql_audit_logs")
        assert _counts_by_type(su, "same_seed") == sandbox
        assert _counts_by_type(su, "other_seed") != sandbox
        assert sum(_counts_by_type(su, "other_seed").values()) == events


def test_python_generator_is_deterministic_and_copy_loads_it(pg_cluster: Cluster) -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    first = list(audit_data.iter_events(500, seed=3, days=7, now=now))
    assert first == list(audit_data.iter_events(500, seed=3, days=7, now=now))
    assert [e[0] for e in first] == sorted(e[0] for e in first)
    assert all(now - timedelta(days=7) <= e[0] < now for e in first)
    with pg_cluster.connect(APP_DB) as su:
        su.execute("CREATE TEMP TABLE copied (LIKE fraiseql_audit_logs INCLUDING ALL)")
        audit_data.populate_audit_logs(su, 500, seed=3, days=7, now=now, table="copied",
                                       method="copy")
        assert _counts_by_type(su, "copied") == dict(Counter(e[1] for e in first))


def test_insert_burst_adds_recent_events_from_given_ips(pg_cluster: Cluster) -> None:
    attackers = ["203.0.113.66", "198.51.100.23"]
    with pg_cluster.connect(APP_DB) as su:
        su.execute("CREATE TEMP TABLE burst (LIKE fraiseql_audit_logs INCLUDING ALL)")
        added = audit_data.insert_burst(su, "authentication_failed", attackers, 300, hours=1.0,
                                        table="burst")
        assert added == 300
        rows = su.execute(
            "SELECT host(ip_address), count(*) FROM burst WHERE event_type = "
            "'authentication_failed' AND \"timestamp\" > now() - interval '61 minutes' "
            "GROUP BY 1").fetchall()
        assert dict(rows).keys() == set(attackers) and sum(n for _, n in rows) == 300
        with pytest.raises(ValueError, match="unknown event_type"):
            audit_data.insert_burst(su, "auth_failed", attackers, 1, table="burst")


# -- archiving and backups (runbook 5.1) --------------------------------------------------------


def test_wal_archiving_fills_archive_dir(pg_cluster: Cluster) -> None:
    assert pg_cluster.wait_archived(timeout=30) >= 1
    names = [p.name for p in pg_cluster.wal_archive_dir.iterdir()]
    assert any(re.fullmatch(r"[0-9A-F]{24}", n) for n in names)
    with pg_cluster.connect() as su:
        archived, failed = su.execute(
            "SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
        assert archived > 0 and failed == 0


def test_dump_is_custom_format_and_lists_tables(pg_cluster: Cluster) -> None:
    path = pg_cluster.dump()
    assert path.parent == pg_cluster.backup_dir
    assert re.fullmatch(r"fraiseql-\d{8}\.dump", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listing = subprocess.run([str(pgbin.pg_bin("pg_restore")), "--list", str(path)],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert "TABLE public tb_user" in listing
    assert "TABLE public fraiseql_audit_logs" in listing


# -- lifecycle ----------------------------------------------------------------------------------


def test_reopening_base_dir_finds_the_running_cluster(pg_cluster: Cluster) -> None:
    again = Cluster(pg_cluster.base_dir)
    assert again.port == pg_cluster.port
    assert again.is_running() and again.pid() == pg_cluster.pid()
    with pytest.raises(ClusterError, match="already initialised"):
        again.init("irrelevant")


def test_restart_then_stop_leaves_no_postgres_process(make_cluster) -> None:
    cluster = make_cluster()
    first = cluster.pid()
    assert first and cluster.is_running()
    cluster.restart()
    pid = cluster.pid()
    assert pid and pid != first
    with psycopg.connect(**cluster.superuser_conninfo()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    processes = _postgres_pids(pid)
    assert len(processes) > 1  # postmaster plus checkpointer, walwriter, ...
    cluster.stop()
    assert not cluster.is_running() and cluster.pid() is None
    assert not [p for p in processes if _alive_postgres(p)]
    assert not (cluster.pgdata / "postmaster.pid").exists()
    cluster.stop()  # stopping a stopped cluster is a no-op


def test_hba_variant_with_trust_line(make_cluster) -> None:
    cluster = make_cluster(hba_rules=["host all all 127.0.0.1/32 trust"])
    with cluster.connect() as su:
        rules = su.execute("SELECT type, address, auth_method FROM pg_hba_file_rules "
                           "WHERE error IS NULL").fetchall()
    assert ("host", "127.0.0.1", "trust") in rules
    assert not [r for r in rules if r[2] == "scram-sha-256"]
    # trust means no password at all over TCP
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres",
                         dbname="postgres", sslmode="require", connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


def test_md5_without_tls_variant(make_cluster, pg_passwords: PgPasswords) -> None:
    cluster = make_cluster(ssl=False, password_encryption="md5", provision=True, audit_events=50,
                           hba_rules=["host all all 127.0.0.1/32 md5"])
    with cluster.connect() as su:
        stored = su.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                            (APP_USER,)).fetchone()
    assert stored and stored[0].startswith("md5")
    assert not cluster.ssl_enabled and "sslmode=disable" in cluster.dsn(APP_USER, "x")
    with psycopg.connect(cluster.dsn(APP_USER, pg_passwords.app, connect_timeout=10)) as conn:
        assert conn.execute("SELECT count(*) FROM fraiseql_audit_logs").fetchone() == (50,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.dsn(APP_USER, pg_passwords.app, sslmode="require",
                                    connect_timeout=10))


def test_start_failure_is_one_clear_line(make_cluster, pg_cluster: Cluster) -> None:
    clash = make_cluster(start=False, port=pg_cluster.port)
    with pytest.raises(ClusterError) as info:
        clash.start(timeout=10)
    message = str(info.value)
    assert "\n" not in message and message.startswith("pg_ctl start failed")
    assert "could not" in message or "Address already in use" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_root_refuses_base_dir_the_server_user_cannot_reach() -> None:
    locked = Path(tempfile.mkdtemp(prefix="frb-locked-", dir="/tmp"))  # mode 0700, root's
    try:
        with pytest.raises(ClusterError, match="not reachable by user"):
            Cluster(locked / "sandbox").init("irrelevant")
        assert not (locked / "sandbox").exists()
    finally:
        for path in sorted(locked.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        locked.rmdir()


def test_binaries_lookup_and_explicit_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pgbin.pg_bin("initdb").name == "initdb"
    assert all(pgbin.pg_bin(tool).exists() for tool in pgbin.TOOLS)
    monkeypatch.setenv(pgbin.ENV_VAR, "/nonexistent/bin")
    pgbin.clear_cache()
    try:
        with pytest.raises(pgbin.PgBinariesNotFound, match="lacks executable initdb"):
            pgbin.pg_bindir()
    finally:
        monkeypatch.delenv(pgbin.ENV_VAR)
        pgbin.clear_cache()


@pytest.fixture
def pgserver_binaries(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the lookup at the pgserver wheel, as on a machine without PostgreSQL installed."""
    wheel = pgbin.pgserver_bindir()
    if wheel is None or not (wheel / "initdb").exists():
        pytest.skip("pgserver wheel not installed")
    monkeypatch.setenv(pgbin.ENV_VAR, str(wheel))
    pgbin.clear_cache()
    yield wheel
    pgbin.clear_cache()  # before monkeypatch restores the environment


def test_pgserver_wheel_fallback_runs_a_cluster(
    pgserver_binaries: Path, make_cluster, pg_passwords: PgPasswords
) -> None:
    cluster = make_cluster(provision=True, audit_events=100)
    if os.geteuid() == 0 and cluster.bindir != pgserver_binaries:
        # the wheel sits under a directory the server user cannot enter: a private copy
        assert cluster.bindir.is_relative_to(cluster.base_dir)
    with psycopg.connect(cluster.dsn(APP_USER, pg_passwords.app, connect_timeout=10)) as conn:
        assert conn.execute("SELECT count(*) FROM fraiseql_audit_logs").fetchone() == (100,)
    assert cluster.ssl_enabled == pgbin.has_ssl()
