"""backup-verification (§5.1): dumps, a real test restore, archives, retention, the WAL
archive; on files made here, on fixture clusters, and as drills on the sandbox."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from fraiseql_rb.checks import backup
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.dr import backup_verification as bv
from fraiseql_rb.sandbox.cluster import APP_DB, SUPERUSER

DAY = 86400
CLOSED_URL = "postgresql://nobody@127.0.0.1:1/fraiseql?connect_timeout=1"


def ctx_for(raw: dict, execute: bool = False) -> RunContext:
    return RunContext.adhoc("backup-verification", target=inventory.Target("t", raw),
                            execute=execute)


def age(path: Path, seconds: float) -> Path:
    when = time.time() - seconds
    os.utime(path, (when, when))
    return path


def plain_dump(path: Path, complete: bool = True) -> Path:
    text = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"
    if complete:
        text += "\n--\n-- PostgreSQL database dump complete\n--\n\n"
    path.write_text(text)
    return path


# -- the newest dump --------------------------------------------------------------------------


def test_format_is_read_from_content_not_name(tmp_path):
    (tmp_path / "a.sql").write_bytes(b"PGDMP\x01\x0e\x00")
    plain_dump(tmp_path / "b.dump")
    (tmp_path / "c.sql").write_bytes(b"\x00\xff\x13 garbage")
    assert backup.dump_format(tmp_path / "a.sql") == "custom"
    assert backup.dump_format(tmp_path / "b.dump") == "plain"
    assert backup.dump_format(tmp_path / "c.sql") == "unknown"


def test_plain_dump_is_checked_by_its_closing_line_and_says_why_not_pg_restore(tmp_path):
    plain_dump(tmp_path / "fraiseql-20260101.sql")
    found = backup.check_recent_dump(ctx_for({"backup_dir": str(tmp_path)}))
    assert found.status is Status.OK, found.summary
    assert "pg_restore --list cannot read plain SQL" in found.summary
    assert "archive formats" in found.evidence["why_not_pg_restore"]


def test_truncated_plain_dump_is_critical(tmp_path):
    plain_dump(tmp_path / "fraiseql-20260101.sql", complete=False)
    found = backup.check_recent_dump(ctx_for({"backup_dir": str(tmp_path)}))
    assert found.status is Status.CRITICAL
    assert "fraiseql-20260101.sql" in found.summary and "truncated" in found.summary


def test_stale_dump_is_critical_naming_its_age(tmp_path):
    age(plain_dump(tmp_path / "fraiseql-20260101.sql"), 50 * 3600)
    found = backup.check_recent_dump(ctx_for({"backup_dir": str(tmp_path)}))
    assert found.status is Status.CRITICAL
    assert "50 h old" in found.summary and "26 h" in found.summary


def test_dump_age_is_set_against_the_tier_rpo(tmp_path):
    age(plain_dump(tmp_path / "fraiseql-20260101.sql"), 2 * 3600)
    ctx = ctx_for({"backup_dir": str(tmp_path)})
    tier4 = backup.check_recent_dump(ctx, tier=4)
    tier2 = backup.check_recent_dump(ctx, tier=2)
    assert tier4.evidence["dump_alone_meets_rpo"] is True
    assert tier2.evidence["dump_alone_meets_rpo"] is False
    assert "WAL archive must cover the rest" in tier2.summary


# -- the test restore on a real cluster ---------------------------------------------------------


def dump_of(cluster, path: Path, fmt: str = "c") -> Path:
    subprocess.run([str(cluster.bindir / "pg_dump"), f"-F{fmt}", "-h", str(cluster.run_dir),
                    "-p", str(cluster.port), "-U", SUPERUSER, "-d", APP_DB, "-f", str(path)],
                   check=True, capture_output=True, timeout=120)
    return path


def target_of(cluster, passwords, backup_dir: Path) -> dict:
    return {"database_url": cluster.dsn(SUPERUSER, passwords.superuser, connect_timeout=10),
            "backup_dir": str(backup_dir)}


@pytest.mark.parametrize("fmt,name", [("c", "fraiseql-20260101.dump"),
                                      ("p", "fraiseql-20260101.sql")])
def test_restore_of_a_fresh_dump_matches_the_source(pg_cluster, pg_passwords, tmp_path,
                                                     scratch_root, fmt, name):
    dump_of(pg_cluster, tmp_path / name, fmt)
    ctx = ctx_for(target_of(pg_cluster, pg_passwords, tmp_path))
    restore, counts, sums = bv.check_test_restore(ctx)
    assert restore.status is Status.OK, restore.summary
    assert restore.evidence["throughput_mb_s"] > 0
    assert restore.evidence["format"] == {"c": "custom", "p": "plain"}[fmt]
    assert counts.status is Status.OK, counts.summary
    assert counts.evidence["matching"] == counts.evidence["tables"] >= 3
    assert sums.status is Status.OK, sums.summary
    assert sums.evidence["key_tables"] >= 2  # tb_user, tb_post


def test_a_truncated_dump_is_critical_with_pg_restores_message(pg_cluster, pg_passwords,
                                                               tmp_path, scratch_root):
    dump = dump_of(pg_cluster, tmp_path / "fraiseql-20260101.dump")
    os.truncate(dump, dump.stat().st_size // 2)
    ctx = ctx_for(target_of(pg_cluster, pg_passwords, tmp_path))
    (found,) = bv.check_test_restore(ctx)
    assert found.status is Status.CRITICAL
    assert "fraiseql-20260101.dump" in found.summary and "pg_restore" in found.summary
    assert "pg_restore: error" in found.evidence["tool_message"]
    # scratch_root asserts that no scratch directory is left


def test_changes_since_the_dump_are_info_and_a_missing_table_critical(
        make_cluster, pg_passwords, tmp_path, scratch_root):
    cluster = make_cluster(provision=True, audit_events=200)
    dump_of(cluster, tmp_path / "fraiseql-20260101.dump")
    with cluster.connect(APP_DB) as conn:
        conn.execute("INSERT INTO fraiseql_audit_logs (event_type, timestamp) "
                     "SELECT event_type, timestamp FROM fraiseql_audit_logs LIMIT 5")
    ctx = ctx_for(target_of(cluster, pg_passwords, tmp_path))
    _, counts, _ = bv.check_test_restore(ctx)
    assert counts.status is Status.INFO, counts.summary
    assert counts.evidence["differences"] == {"public.fraiseql_audit_logs": -5}
    with cluster.connect(APP_DB) as conn:
        conn.execute("CREATE TABLE side_table (n int)")
    _, counts, _ = bv.check_test_restore(ctx_for(target_of(cluster, pg_passwords, tmp_path)))
    assert counts.status is Status.WARNING and "public.side_table" in counts.summary
    with cluster.connect(APP_DB) as conn:
        conn.execute("CREATE TABLE tb_new_since_dump (pk_new_since_dump int PRIMARY KEY)")
    _, counts, _ = bv.check_test_restore(ctx_for(target_of(cluster, pg_passwords, tmp_path)))
    assert counts.status is Status.CRITICAL
    assert "public.tb_new_since_dump" in counts.summary


def test_an_emptied_key_table_is_critical(make_cluster, pg_passwords, tmp_path, scratch_root):
    cluster = make_cluster(provision=True, audit_events=50)
    with cluster.connect(APP_DB) as conn:
        conn.execute("CREATE TABLE tb_thing (pk_thing int PRIMARY KEY)")
    dump_of(cluster, tmp_path / "fraiseql-20260101.dump")
    with cluster.connect(APP_DB) as conn:
        conn.execute("INSERT INTO tb_thing SELECT generate_series(1, 3)")
    _, counts, sums = bv.check_test_restore(ctx_for(target_of(cluster, pg_passwords,
                                                              tmp_path)))
    assert counts.status is Status.CRITICAL and "public.tb_thing" in counts.summary
    assert "public.tb_thing" in sums.evidence["changed_since_dump"]


# -- config tarballs, audit archives -------------------------------------------------------------


def make_tarball(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = os.urandom(200_000)  # incompressible, so half the file is half the stream
        info = tarfile.TarInfo("etc/fraiseql/config.toml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_config_tarballs_listed_and_a_truncated_one_named(tmp_path):
    make_tarball(tmp_path / "config-20260101-010000.tar.gz")
    bad = make_tarball(tmp_path / "config-20260101-020000.tar.gz")
    ctx = ctx_for({"backup_dir": str(tmp_path)})
    assert bv.check_config_tarballs(ctx).status is Status.OK
    os.truncate(bad, bad.stat().st_size // 2)
    found = bv.check_config_tarballs(ctx)
    assert found.status is Status.CRITICAL
    assert "config-20260101-020000.tar.gz" in found.summary
    assert "config-20260101-010000.tar.gz" not in found.summary


def test_stale_config_tarball_is_a_warning(tmp_path):
    age(make_tarball(tmp_path / "config-20260101-010000.tar.gz"), 3 * 3600)
    found = bv.check_config_tarballs(ctx_for({"backup_dir": str(tmp_path)}))
    assert found.status is Status.WARNING and "3.0 h old" in found.summary


def test_audit_archives_tested_as_gunzip_t(tmp_path):
    good = tmp_path / "audit-20260101.gz"
    good.write_bytes(gzip.compress(os.urandom(100_000)))
    bad = tmp_path / "audit-20260102.gz"
    bad.write_bytes(gzip.compress(os.urandom(100_000)))
    ctx = ctx_for({"backup_dir": str(tmp_path)})
    assert bv.check_audit_archives(ctx).status is Status.OK
    assert bv.gzip_test(good) is None
    os.truncate(bad, bad.stat().st_size - 10)  # the CRC and length trailer cut off
    gunzip = subprocess.run(["gunzip", "-t", str(bad)], capture_output=True)
    assert gunzip.returncode != 0  # the peer agrees it is broken
    found = bv.check_audit_archives(ctx)
    assert found.status is Status.CRITICAL
    assert "audit-20260102.gz" in found.summary and "audit-20260101.gz" not in found.summary


# -- retention ----------------------------------------------------------------------------------


def retention_dir(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "fraiseql-20260120.dump").write_bytes(b"PGDMP")
    (tmp_path / "audit-20251101.gz").write_bytes(gzip.compress(b"x"))
    files = {
        "newest": age(plain_dump(tmp_path / "fraiseql-20260301.sql"), 3600),
        "30.5d": age(plain_dump(tmp_path / "fraiseql-20260130.sql"), 30.5 * DAY),  # -mtime 30
        "31.2d": age(plain_dump(tmp_path / "fraiseql-20260129.sql"), 31.2 * DAY),  # -mtime 31
        "40d dump": age(tmp_path / "fraiseql-20260120.dump", 40 * DAY),
        "cfg 91d": age(make_tarball(tmp_path / "config-20251201-000000.tar.gz"), 91.5 * DAY),
        "cfg 89d": age(make_tarball(tmp_path / "config-20251203-000000.tar.gz"), 89.5 * DAY),
        "cfg new": age(make_tarball(tmp_path / "config-20260301-000000.tar.gz"), 60),
        "audit": age(tmp_path / "audit-20251101.gz", 120 * DAY),
    }
    return files


def test_retention_lists_exactly_what_find_mtime_would_delete_and_deletes_nothing(tmp_path):
    files = retention_dir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    ctx = ctx_for({"backup_dir": str(tmp_path)})
    found = bv.check_retention(ctx)
    expected = sorted(str(files[k]) for k in ("31.2d", "40d dump", "cfg 91d"))
    assert sorted(found.evidence["would_delete"]) == expected
    assert found.status is Status.INFO
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    actions = ctx.log.actions
    assert len(actions) == 3 and not any(a.executed for a in actions)
    assert all(a.command.startswith("rm -- ") for a in actions)


def test_retention_deletes_only_with_execute(tmp_path):
    files = retention_dir(tmp_path)
    ctx = ctx_for({"backup_dir": str(tmp_path)}, execute=True)
    found = bv.check_retention(ctx)
    assert found.status is Status.OK, found.summary
    gone = {k for k, p in files.items() if not p.exists()}
    assert gone == {"31.2d", "40d dump", "cfg 91d"}
    assert len(ctx.log.actions) == 3 and all(a.executed for a in ctx.log.actions)


def test_retention_never_deletes_the_last_dump(tmp_path):
    only = age(plain_dump(tmp_path / "fraiseql-20250101.sql"), 60 * DAY)
    found = bv.check_retention(ctx_for({"backup_dir": str(tmp_path)}, execute=True))
    assert only.exists()
    assert found.evidence["kept_newest"] == [str(only)]


# -- WAL archive continuity -----------------------------------------------------------------------


def wal_archive(tmp_path: Path, positions: list[int], start_lsn: str = "0/1000028") -> dict:
    archive = tmp_path / "wal"
    archive.mkdir()
    for pos in positions:
        (archive / backup.segment_name(1, pos, backup.DEFAULT_WAL_SEGMENT_SIZE)).write_bytes(b"")
    base = tmp_path / "backups" / "base" / "base-20260101T020000Z"
    base.mkdir(parents=True)
    (base / "backup_manifest").write_text(json.dumps({"WAL-Ranges": [
        {"Timeline": 1, "Start-LSN": start_lsn, "End-LSN": "0/1000100"}]}))
    return {"database_url": CLOSED_URL, "wal_archive_dir": str(archive),
            "backup_dir": str(tmp_path / "backups")}


def test_segment_names_and_positions_round_trip():
    size = backup.DEFAULT_WAL_SEGMENT_SIZE
    assert backup.segment_name(1, 255, size) == "0000000100000000000000FF"
    assert backup.segment_name(1, 256, size) == "000000010000000100000000"
    assert backup.segment_position("000000020000000100000003", size) == (2, 259)
    assert backup.lsn_position("1/3000028", size) == 259


def test_whole_archive_since_the_base_backup_is_ok(tmp_path):
    found = backup.check_wal_continuity(ctx_for(wal_archive(tmp_path, [0, 1, 2, 3, 4, 5])))
    assert found.status is Status.OK, found.summary
    assert found.evidence["start_wal"] == "000000010000000000000001"
    assert "5 WAL segments" in found.summary


def test_a_missing_segment_is_critical_naming_the_gap(tmp_path):
    found = backup.check_wal_continuity(ctx_for(wal_archive(tmp_path, [1, 2, 4, 5, 9])))
    assert found.status is Status.CRITICAL
    assert "000000010000000000000003" in found.summary
    assert "000000010000000000000006..000000010000000000000008 (3)" in found.summary


def test_the_gap_counts_across_a_log_file_boundary(tmp_path):
    found = backup.check_wal_continuity(ctx_for(wal_archive(tmp_path, [254, 256],
                                                            start_lsn="0/FE000028")))
    assert found.status is Status.CRITICAL
    assert "0000000100000000000000FF" in found.summary


def test_missing_start_segment_is_critical(tmp_path):
    found = backup.check_wal_continuity(ctx_for(wal_archive(tmp_path, [2, 3])))
    assert found.status is Status.CRITICAL
    assert "000000010000000000000001" in found.summary


# -- WAL waiting and the current RPO on a real cluster --------------------------------------------


def test_ready_files_and_current_rpo_on_a_healthy_then_broken_archive(make_cluster,
                                                                        pg_passwords):
    cluster = make_cluster()
    cluster.wait_archived()
    raw = {"database_url": cluster.dsn(SUPERUSER, pg_passwords.superuser, dbname="postgres"),
           "wal_archive_dir": str(cluster.wal_archive_dir)}
    ctx = ctx_for(raw)
    ready = backup.check_wal_ready(ctx)
    assert ready.status is Status.OK and ready.evidence["ready"] == 0
    rpo = backup.check_current_rpo(ctx)
    assert rpo.status is Status.OK, rpo.summary
    assert rpo.evidence["current_rpo_s"] < 60
    cluster.break_archiving()
    ready = backup.check_wal_ready(ctx)
    assert ready.evidence["ready"] >= 1
    assert ready.status is Status.WARNING, ready.summary
    assert "failing" in ready.summary


def test_ready_files_without_privilege_are_unknown_with_the_grant(pg_cluster, pg_app_dsn):
    found = backup.check_wal_ready(ctx_for({"database_url": pg_app_dsn}))
    assert found.status is Status.UNKNOWN
    assert "GRANT pg_monitor TO fraiseql_user" in found.remediation


# -- drills on the sandbox, through the CLI ------------------------------------------------


def findings_of(result) -> dict:
    directory = Path(result.stdout.strip().splitlines()[-1])
    return json.loads((directory / "findings.json").read_text())


def by_check(report: dict, name: str) -> list[dict]:
    return [f for f in report["findings"] if f["check"] == name]


def need_fault(name: str) -> None:
    from fraiseql_rb.sandbox.faults import FAULTS
    if name not in FAULTS:
        pytest.skip(f"the sandbox has no {name} fault yet")


def tree_digest(root: Path) -> dict[str, tuple[str, float]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}


def backup_dir_of(sandbox) -> Path:
    import tomllib
    return Path(tomllib.loads(sandbox.inventory.read_text())["targets"]["sandbox"]["backup_dir"])


def test_drill_healthy_run_raises_nothing_and_changes_nothing(healthy_sandbox):
    backups = backup_dir_of(healthy_sandbox)
    before = tree_digest(backups)
    result = healthy_sandbox.run("backup-verification", "--incident-id", "DRILL-BV-OK")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = findings_of(result)
    assert not [f for f in report["findings"] if f["status"] in ("critical", "unknown")], \
        [(f["check"], f["summary"]) for f in report["findings"]]
    restores = by_check(report, "backup.test_restore")
    assert restores and all(f["status"] == "ok" for f in restores)
    assert tree_digest(backups) == before  # execute=False: byte for byte, times too


def test_drill_backup_stale(healthy_sandbox):
    need_fault("backup-stale")
    healthy_sandbox.fault("backup-stale")
    result = healthy_sandbox.run("backup-verification", "--incident-id", "DRILL-BV-STALE")
    assert result.returncode == 2, result.stdout + result.stderr
    (dump,) = by_check(findings_of(result), "backup.recent_dump")
    assert dump["status"] == "critical" and " h old" in dump["summary"]


def test_drill_backup_corrupt(healthy_sandbox):
    need_fault("backup-corrupt")
    healthy_sandbox.fault("backup-corrupt")
    result = healthy_sandbox.run("backup-verification", "--incident-id", "DRILL-BV-CORRUPT")
    assert result.returncode == 2, result.stdout + result.stderr
    report = findings_of(result)
    critical = [f for f in report["findings"] if f["status"] == "critical"]
    named = " ".join(f["summary"] for f in critical)
    assert ".dump" in named and "audit-" in named, named
    assert any(f["check"] == "backup.audit_archives" for f in critical)


def test_drill_archive_broken(healthy_sandbox):
    need_fault("archive-broken")
    healthy_sandbox.fault("archive-broken")
    result = healthy_sandbox.run("backup-verification", "--incident-id", "DRILL-BV-ARCHIVE")
    assert result.returncode == 2, result.stdout + result.stderr
    report = findings_of(result)
    (archiving,) = by_check(report, "database.wal_archiving")
    assert archiving["status"] == "critical" and "failing" in archiving["summary"]
    (ready,) = by_check(report, "backup.wal_ready")
    assert ready["status"] in ("warning", "critical") and ready["evidence"]["ready"] >= 1
