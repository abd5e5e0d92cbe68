"""schema-migration (§2.2 step 2) with FraiseQL's real tool, fraiseql-confiture.

Unit tests of the decisions (the plan, what can be undone, which locks matter, the exit-code
table), then the runbook's steps in-process against real clusters provisioned like the
sandbox with the sandbox's own migrations (a dry run changes nothing; up, down-to; a lock
held by a long transaction, confiture's lock contention; a failed verification rolled back;
a failed dump stops the change; confiture's exit 8), and one CLI drill on the live sandbox
(up, rollback with confirm, an irreversible rollback refused), which leaves it as found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from drill_helpers import by_check, findings_of

from fraiseql_rb.checks import change
from fraiseql_rb.maintenance import schema_migration as sm
from fraiseql_rb.sandbox.state import Sandbox
from fraiseql_rb.targets import confiture, pgbin

MIGRATIONS = Path(sm.__file__).resolve().parent.parent / "sandbox" / "migrations"
V1, V2 = "20260301000001", "20260301000002"  # irreversible (emails), reversible (column)
CONFITURE_TABLES = ("tb_confiture", "tb_confiture_steps", "confiture_lock_holder")


# -- unit: the decisions ------------------------------------------------------------------------

def _m(version: str, status: str, reversible: bool = True) -> sm.Migration:
    return sm.Migration(version, "x", f"{version}_x.up.sql", "sql", reversible, status=status)


def test_plan_up_down_and_to_version():
    ms = [_m("1", "applied"), _m("2", "pending"), _m("3", "pending")]
    assert sm.make_plan(ms, "up").versions == ("2", "3")
    assert sm.make_plan(ms, "up", "2").versions == ("2",)
    assert sm.make_plan(ms, "up", "1").nothing == "1 is already applied"
    assert sm.make_plan(ms, "down").versions == ("1",)
    assert "not applied" in sm.make_plan(ms, "down", "2").problem
    assert "not a migration" in sm.make_plan(ms, "up", "9").problem
    done = [_m("1", "applied"), _m("2", "applied"), _m("3", "applied")]
    assert sm.make_plan(done, "down", "1").versions == ("3", "2")  # newest first
    assert sm.make_plan(done, "down", "3").nothing
    assert sm.make_plan(done, "up").nothing == "no migration is pending"
    assert sm.make_plan([_m("1", "pending")], "down").nothing == "no migration is applied"


def test_reversibility_from_the_files(tmp_path):
    def pair(name: str, up: str, down: str | None) -> Path:
        (tmp_path / f"{name}.up.sql").write_text(up)
        if down is not None:
            (tmp_path / f"{name}.down.sql").write_text(down)
        return tmp_path / f"{name}.up.sql"

    assert sm.reversibility(pair("1_a", "ALTER TABLE t ADD c int;", "ALTER TABLE t DROP c;")) \
        == (True, None, ())
    ok, why, _ = sm.reversibility(pair("2_b", "SELECT 1;", None))
    assert not ok and "does not exist" in why
    ok, why, _ = sm.reversibility(pair("3_c", "SELECT 1;", "-- confiture:irreversible gone\n"))
    assert not ok and "declares it irreversible: gone" in why
    ok, why, _ = sm.reversibility(pair("4_d", "SELECT 1;", "-- nothing\n/* here */\n;\n"))
    assert not ok and "holds no statement" in why
    ok, _, loses = sm.reversibility(pair("5_e", "-- confiture:irreversible data\nDROP x;",
                                         "CREATE x;"))
    assert ok and loses == ("data",)
    # the sandbox's own: 1 irreversible (declared, and its down refuses), 2 reversible
    found = {m.version: m for m in sm.read_migrations(MIGRATIONS)}
    assert list(found) == [V1, V2]
    assert not found[V1].reversible and "declares it irreversible" in found[V1].why_not
    assert found[V1].loses_data and found[V2].reversible


def test_judge_locks_only_long_transactions_on_altered_tables_block():
    locks = pd.DataFrame([
        {"pid": 1, "schema": "public", "table": "tb_post", "mode": "AccessShareLock",
         "granted": True, "state": "idle in transaction", "user": "u",
         "transaction_age_s": 120.0},
        {"pid": 2, "schema": "public", "table": "tb_user", "mode": "AccessShareLock",
         "granted": True, "state": "active", "user": "u", "transaction_age_s": 0.1},
        {"pid": 3, "schema": "public", "table": "other", "mode": "RowExclusiveLock",
         "granted": True, "state": "idle in transaction", "user": "u",
         "transaction_age_s": 300.0},
        {"pid": 4, "schema": "public", "table": "tb_user", "mode": "AccessShareLock",
         "granted": True, "state": "not visible", "user": None, "transaction_age_s": None},
    ])
    judged = sm.judge_locks(locks, [("public", "tb_post"), (None, "tb_user")], 60)
    assert [e["pid"] for e in judged["blocking"]] == [1]
    assert [e["pid"] for e in judged["long_elsewhere"]] == [3]
    assert [e["pid"] for e in judged["unseen"]] == [4] and judged["brief"] == 1
    assert sm.judge_locks(locks, [("public", "tb_post")], 600)["blocking"] == []


def test_affected_tables_and_arguments():
    changes = [{"migration": V1, "object": "public.tb_user.ck"},
               {"migration": V1, "object": "public.tb_user"},
               {"migration": V2, "object": "tb_post"}]
    assert sm.affected_tables(changes, [V1]) == [("public", "tb_user")]
    assert sm.affected_tables(changes, [V2]) == [(None, "tb_post")]
    up = {"direction": "up", "to_version": None, "versions": [V1, V2]}
    assert sm._arguments(up, 5000) == ("up", ["--lock-timeout", "2500"])
    assert sm._arguments(up | {"to_version": V1}, 5000)[1][:2] == ["--target", V1]
    down = {"direction": "down", "to_version": None, "versions": [V2]}
    assert sm._arguments(down, 5000) == ("down", ["--steps", "1", "--lock-timeout", "2500"])
    assert sm._arguments(down | {"to_version": V1}, 5000) == ("down-to", [V1])


def test_exit_codes_are_data_with_their_meaning():
    assert confiture.meaning("up", 6)[0] == "lock_contention"
    assert confiture.meaning("down-to", 8)[0] == "irreversible_rollback"
    assert confiture.meaning("status", 1)[0] == "pending"
    assert confiture.meaning("status", 2)[0] == "precondition_failed"
    assert confiture.meaning("status", 3)[0] == "db_unreachable"
    assert confiture.meaning("up", 3)[0] == "migration_failed"
    assert confiture.meaning("up", None)[0] == "timeout"
    assert confiture.meaning("up", 42)[0] == "unknown"
    assert confiture.advisory_wait_ms(5000) < 5000  # contention reported as such (exit 6)


def test_split_url_never_keeps_the_password():
    url, password = confiture.split_url("postgresql://me:s%40cret@db.example:6432/app"
                                        "?sslmode=require")
    assert password == "s@cret" and "cret" not in url
    assert url == "postgresql://me@db.example:6432/app?sslmode=require"
    url, password = confiture.split_url("host=/run/pg port=5433 user=me password=pw dbname=x")
    assert password == "pw" and url.startswith("postgresql://me@/x?") and "host=%2Frun" in url


def test_json_after_prose_and_a_missing_or_hanging_tool(monkeypatch, tmp_path):
    assert confiture.parse_json("Analyzing...\n\n{\"ok\": true}\n") == {"ok": True}
    assert confiture.parse_json("no json") is None
    ran = confiture.run("preflight", migrations_dir=MIGRATIONS, timeout_s=0.05)
    assert ran.returncode is None and ran.meaning[0] == "timeout"
    assert "did not finish within 0.05 s" in ran.describe()
    monkeypatch.setattr(confiture, "executable", lambda: None)
    ran = confiture.run("preflight", migrations_dir=MIGRATIONS, timeout_s=5)
    assert ran.missing and ran.meaning[0] == "missing" and ran.returncode is None


# -- against real clusters ------------------------------------------------------------------

def _schema(cluster) -> str:
    """SHA-256 of `pg_dump --schema-only` of the fraiseql database (its random \\restrict
    key left out): what a dry run must leave as it was."""
    info = cluster.superuser_conninfo("fraiseql")
    env = {**os.environ, "PGHOST": info["host"], "PGPORT": str(info["port"]),
           "PGUSER": info["user"], "PGDATABASE": "fraiseql"}
    out = subprocess.run([str(pgbin.pg_bin("pg_dump")), "--schema-only"], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    kept = [line for line in out.splitlines() if not line.startswith(("\\restrict",
                                                                       "\\unrestrict"))]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()


def _sql(cluster, query: str, params=None) -> list[tuple]:
    with cluster.connect("fraiseql") as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _has_column(cluster) -> bool:
    return bool(_sql(cluster, "SELECT 1 FROM information_schema.columns WHERE table_name = "
                     "'tb_post' AND column_name = 'updated_at'"))


def _applied(cluster) -> list[str]:
    if not _sql(cluster, "SELECT to_regclass('tb_confiture')")[0][0]:
        return []
    return [r[0] for r in _sql(cluster, "SELECT version FROM tb_confiture ORDER BY version")]


@pytest.fixture
def setup(make_cluster, ctx_for, tmp_path):
    """A cluster provisioned like the sandbox, a copy of the sandbox's migrations and a
    backup directory; `make(...)` gives a RunContext on it (admin URL: the superuser)."""
    cluster = make_cluster(provision=True, audit_events=100)
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    backups = tmp_path / "backups"
    backups.mkdir()

    def make(*, execute: bool = False, confirm: str | None = None, **extra):
        raw = {"migrations_dir": str(migrations), "backup_dir": str(backups)} | extra
        ctx = ctx_for(cluster, runbook="schema-migration", **raw)
        ctx.execute, ctx.confirm = execute, confirm
        return ctx

    return cluster, migrations, backups, make


def _run(ctx, direction="up", to_version=None, *, lock_timeout_ms=5000,
         long_transaction_s=60.0) -> dict:
    """Every step of the notebook, in order; the findings by check."""
    sm.check_status(ctx, direction=direction, to_version=to_version)
    sm.check_reversibility(ctx)
    sm.check_preflight(ctx)
    sm.check_lock_risk(ctx, long_transaction_s=long_transaction_s)
    sm.snapshot_instances(ctx)
    sm.take_dump(ctx)
    sm.authorize(ctx)
    sm.migrate(ctx, lock_timeout_ms=lock_timeout_ms, timeout_s=120)
    sm.verify_status(ctx)
    sm.verify_instances(ctx)
    sm.verify_data_path(ctx)
    sm.rollback_if_failed(ctx, lock_timeout_ms=lock_timeout_ms, timeout_s=120)
    change.record(ctx, sm.what(ctx), {"direction": direction}, sm.outcome(ctx))
    return {f.check: f for f in ctx.log.findings}


def test_a_dry_run_and_a_failed_dump_change_nothing(setup):
    cluster, _, backups, make = setup
    before = _schema(cluster)
    ctx = make()
    found = _run(ctx)
    status = found["schema_migration.status"]
    assert status.status == "info" and status.evidence["pending"] == [V1, V2]
    assert status.evidence["irreversible"] == [V1] and status.evidence["tracking_table"] is None
    assert found["schema_migration.reversibility"].status == "info"  # up: information
    assert found["schema_migration.change"].evidence["executed"] is False
    assert found["change.record"].evidence["outcome"] == "dry-run"
    assert [(a.action, a.executed) for a in ctx.log.actions] == [("fresh_dump", False),
                                                                 ("migrate_up", False)]
    # nothing changed: the catalog (no tb_confiture: `confiture migrate status` would have
    # made it), the backup directory
    assert _schema(cluster) == before and _applied(cluster) == []
    assert list(backups.iterdir()) == []

    # execute=True, but the dump cannot be written: the change stops before it begins
    found = _run(make(execute=True, backup_dir=str(backups / "missing")))
    assert found["backup.fresh_dump"].status == "critical"
    assert found["change.gate"].evidence["proceed"] is False
    assert found["change.record"].evidence["outcome"] == "refused"
    assert _schema(cluster) == before and _applied(cluster) == []


def test_up_to_a_version_then_the_rest_then_down_to_it(setup):
    cluster, migrations, backups, make = setup
    found = _run(make(execute=True), to_version=V1)
    assert found["schema_migration.change"].evidence["done"] == [V1]
    assert found["schema_migration.verify_status"].status == "ok"
    assert found["change.record"].evidence["outcome"] == "failed"  # no instance answers here
    assert _applied(cluster) == [V1] and not _has_column(cluster)
    assert len(list(backups.glob("pre-schema-migration-*.dump"))) == 1  # V1 loses data

    found = _run(make(execute=True))
    assert found["schema_migration.change"].evidence["done"] == [V2]
    assert found["schema_migration.verify_status"].summary.startswith("status clean")
    assert _applied(cluster) == [V1, V2] and _has_column(cluster)

    found = _run(make(execute=True), "down", V1)  # dangerous: without confirm nothing runs
    assert found["change.gate"].status == "warning" and _has_column(cluster)

    # a .down.sql gone: our pre-check refuses to cross it, and so does confiture (exit 8)
    down = migrations / f"{V2}_add_post_updated_at.down.sql"
    kept = down.read_text()
    down.unlink()
    found = _run(make(execute=True, confirm="t"), "down", V1)
    assert found["schema_migration.reversibility"].status == "critical"
    assert "does not exist" in found["schema_migration.reversibility"].summary
    ran = confiture.run("down-to", V1, migrations_dir=migrations,
                        database_url=sm._url(make()), timeout_s=60)
    assert ran.returncode == 8 and ran.meaning[0] == "irreversible_rollback"
    assert ran.error_code in confiture.IRREVERSIBLE_CODES
    assert _applied(cluster) == [V1, V2] and _has_column(cluster)

    down.write_text(kept)
    found = _run(make(execute=True, confirm="t"), "down", V1)
    assert " confiture migrate down-to " in found["schema_migration.change"].evidence["command"]
    assert found["schema_migration.change"].evidence["done"] == [V2]
    assert _applied(cluster) == [V1] and not _has_column(cluster)


def _holder(cluster, table: str) -> psycopg.Connection:
    """Another session in a transaction holding ACCESS SHARE on `table` (as a report that
    reads it and never commits would)."""
    conn = psycopg.connect(**cluster.superuser_conninfo("fraiseql"))
    conn.execute(f"SELECT 1 FROM {table} LIMIT 1")  # noqa: S608 - a fixed test table
    return conn


def test_a_long_transaction_stops_the_change_and_lock_timeout_ends_the_wait(setup):
    cluster, _, _, make = setup
    holder = _holder(cluster, "tb_post")
    try:
        time.sleep(1.2)
        found = _run(make(execute=True), long_transaction_s=1.0)
        risk = found["schema_migration.lock_risk"]
        assert risk.status == "critical" and "tb_post" in risk.summary
        assert risk.evidence["blocking"][0]["pid"] == holder.info.backend_pid
        assert found["change.gate"].evidence["proceed"] is False and _applied(cluster) == []

        # the pre-check passes (a threshold above the transaction's age): confiture runs, V1
        # (tb_user) applies, V2's ALTER on tb_post gives up after lock_timeout instead of
        # queueing; V1 cannot be rolled back, so the rollback is refused and recorded
        began = time.monotonic()
        found = _run(make(execute=True, confirm="t"), lock_timeout_ms=1000)
        assert time.monotonic() - began < 60
        failed = found["schema_migration.change"]
        assert failed.status == "critical" and failed.evidence["lock_timeout"] is True
        assert failed.evidence["returncode"] == 3 and failed.evidence["done"] == [V1]
        back = found["schema_migration.rollback"]
        assert back.status == "critical" and back.evidence["blocked"] == [V1]
        assert found["change.record"].evidence["outcome"] == "failed"
        assert _applied(cluster) == [V1] and not _has_column(cluster)
    finally:
        holder.close()

    # confiture's own lock: another migration run holds it -> exit 6, nothing changes
    from confiture.core.locking import MigrationLock

    with psycopg.connect(**cluster.superuser_conninfo("fraiseql"), autocommit=True) as other:
        lock = MigrationLock(other)
        other.execute("SELECT pg_advisory_lock(%s, %s)",
                      (MigrationLock.DEFAULT_LOCK_NAMESPACE, lock._generate_lock_id()))
        found = _run(make(execute=True), lock_timeout_ms=1000)
    contended = found["schema_migration.change"]
    assert contended.status == "critical" and contended.evidence["returncode"] == 6
    assert contended.evidence["class"] == "lock_contention"
    assert contended.evidence["error_code"] == confiture.LOCK_CODE
    assert _applied(cluster) == [V1] and not _has_column(cluster)


def test_a_failed_verification_is_rolled_back_only_with_confirm(setup):
    cluster, migrations, _, make = setup
    for path in migrations.glob(f"{V1}_*"):
        path.unlink()  # only the reversible migration
    # no FraiseQL answers at fraiseql_url: the verification fails (instances unknown)
    ctx = make(execute=True, confirm="t")
    found = _run(ctx)
    assert "deploy.consistency" in sm.verification_failed(ctx)
    back = found["schema_migration.rollback"]
    assert back.status == "warning" and back.evidence["rolled_back"] == [V2]
    assert found["change.record"].evidence["outcome"] == "rolled-back"
    assert "rollback" in found["change.record"].evidence["phases"]
    assert not _has_column(cluster) and _applied(cluster) == []

    found = _run(make(execute=True))  # without confirm: recorded, not run
    back = found["schema_migration.rollback"]
    assert back.status == "critical" and back.evidence["executed"] is False
    assert "confirm=t" in back.summary and _has_column(cluster)
    assert found["change.record"].evidence["outcome"] == "failed"


# -- the CLI drill on the live sandbox ----------------------------------------------------------

def _restore(sb: Sandbox, dumps_before: set[str]) -> None:
    """Put the sandbox back as `sandbox up` left it: what V1 did (emails were lower case
    already: only its constraint), V2's column, confiture's tables, the dumps taken."""
    with sb.cluster.connect("fraiseql") as conn:
        conn.execute("ALTER TABLE tb_user DROP CONSTRAINT IF EXISTS ck_tb_user_email_lower")
        conn.execute("ALTER TABLE tb_post DROP COLUMN IF EXISTS updated_at")
        conn.execute("DROP TABLE IF EXISTS " + ", ".join(CONFITURE_TABLES))
    for path in sb.cluster.backup_dir.glob("pre-schema-migration-*"):
        if path.name not in dumps_before:
            path.unlink()


def test_drill_apply_roll_back_and_refuse_through_the_cli(healthy_sandbox):
    sb = Sandbox.open(healthy_sandbox.root)
    dumps = {p.name for p in sb.cluster.backup_dir.iterdir()}
    before = _schema(sb.cluster)
    try:
        result = healthy_sandbox.run("schema-migration")  # defaults: a dry run, exit 0
        assert result.returncode == 0, result.stderr[-2000:]
        assert by_check(findings_of(result))["change.record"]["evidence"]["outcome"] == \
            "dry-run"
        assert _schema(sb.cluster) == before

        result = healthy_sandbox.run("schema-migration", "-p", "execute", "true")
        data = findings_of(result)
        assert result.returncode == 0, [(f["check"], f["summary"]) for f in data["findings"]]
        found = by_check(data)
        assert found["change.record"]["evidence"]["outcome"] == "applied"
        assert found["graphql.data_path"]["status"] == "ok"
        assert found["deploy.consistency"]["status"] == "ok"
        assert _has_column(sb.cluster)
        artifact = Path(result.stdout.strip().splitlines()[-1])
        written = "".join(f.read_text(errors="replace") for f in artifact.iterdir()
                          if f.is_file())
        for name in ("superuser_password", "database_password"):
            assert sb.secret(name) not in written, f"{name} in the artifacts"

        result = healthy_sandbox.run("schema-migration", "-p", "direction", "down",
                                     "-p", "execute", "true", "-p", "confirm", "sandbox")
        found = by_check(findings_of(result))
        assert result.returncode == 0, found["change.record"]
        assert found["schema_migration.change"]["evidence"]["done"] == [V2]
        assert not _has_column(sb.cluster)

        result = healthy_sandbox.run("schema-migration", "-p", "direction", "down",
                                     "-p", "execute", "true", "-p", "confirm", "sandbox")
        found = by_check(findings_of(result))
        assert result.returncode == 2
        assert found["schema_migration.reversibility"]["evidence"]["refused"] is True
        assert found["change.record"]["evidence"]["outcome"] == "refused"
        assert _applied(sb.cluster) == [V1]
    finally:
        _restore(sb, dumps)
    assert _schema(sb.cluster) == before
    assert {p.name for p in sb.cluster.backup_dir.iterdir()} == dumps
