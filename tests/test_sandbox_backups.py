"""The sandbox's backup directory as runbook §5.1 fills it, and the backup-stale and
backup-corrupt faults, on the live sandbox (and one small sandbox of its own for --scale)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fraiseql_rb.core import thresholds
from fraiseql_rb.sandbox import audit_data, backups, manager
from fraiseql_rb.sandbox import cluster as pgcluster
from fraiseql_rb.targets.pgbin import pg_bindir

DAY_S = 86_400


def backup_dir(sb) -> Path:
    return manager.Sandbox.open(sb.root).cluster.backup_dir


def made_at(sb) -> datetime:
    """When `up` made the backups: their names carry that day, not the day a test reads them
    (a suite that crosses midnight)."""
    return datetime.fromisoformat(manager.Sandbox.open(sb.root).state["backups_made_at"])


def age_days(path: Path) -> float:
    return (time.time() - path.stat().st_mtime) / DAY_S


def find(directory: Path, name: str, *tests: str) -> list[str]:
    """The runbook's own `find` (§5.1 retention) over `directory`."""
    out = subprocess.run(["find", str(directory), "-maxdepth", "1", "-name", name, *tests],
                         capture_output=True, text=True, check=True).stdout
    return sorted(Path(line).name for line in out.splitlines())


def snapshot(sb) -> dict[str, tuple[str, int, int]]:
    """Every file of backup_dir (recursively): sha256, size, mtime in ns."""
    root = backup_dir(sb)
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def pg_restore_list(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(pg_bindir() / "pg_restore"), "--list", str(path)],
                          capture_output=True, text=True, timeout=60)


def pg_restore_all(path: Path) -> subprocess.CompletedProcess[str]:
    """Read every entry of a custom dump, as a restore would (the SQL goes to /dev/null)."""
    return subprocess.run([str(pg_bindir() / "pg_restore"), "-f", os.devnull, str(path)],
                          capture_output=True, text=True, timeout=60)


def newest(directory: Path, pattern: str) -> Path:
    return max(directory.glob(pattern), key=lambda p: p.stat().st_mtime)


# ---- what `up` made ------------------------------------------------------------------------


def test_daily_dumps_spread_over_the_retention_window(sandbox):
    directory = backup_dir(sandbox)
    today = made_at(sandbox).strftime("%Y%m%d")
    for suffix in ("sql", "dump"):
        assert (directory / f"fraiseql-{today}.{suffix}").is_file()
    dumps = [p for p in directory.iterdir() if re.fullmatch(r"fraiseql-\d{8}\.(sql|dump)", p.name)]
    assert len(dumps) == 2 * (backups.DUMP_DAYS + 1)
    assert age_days(newest(directory, "fraiseql-*")) * 24 < thresholds.BACKUP_MAX_AGE_HOURS
    # the custom dump is the newest file: the recent-dump check reads it with pg_restore
    assert newest(directory, "fraiseql-*").suffix == ".dump"
    for path in dumps:  # older days: their day at 02:00 UTC
        day = path.name[len("fraiseql-"):len("fraiseql-") + 8]
        if day != today:
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            assert when.strftime("%Y%m%d") == day and when.hour == backups.DUMP_HOUR
            assert path.stat().st_size > 0
    expired = find(directory, "fraiseql-*.sql", "-mtime", f"+{thresholds.DUMP_RETENTION_DAYS}")
    assert 1 <= len(expired) < backups.DUMP_DAYS
    assert f"fraiseql-{today}.sql" not in expired
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in dumps)


def test_plain_dump_is_sql_text_and_custom_dump_lists(sandbox):
    directory = backup_dir(sandbox)
    today = made_at(sandbox).strftime("%Y%m%d")
    plain = (directory / f"fraiseql-{today}.sql").read_text()
    assert plain.startswith("--\n-- PostgreSQL database dump")
    assert "CREATE TABLE public.tb_user" in plain
    assert f"COPY public.{audit_data.AUDIT_TABLE} " in plain
    listing = pg_restore_list(directory / f"fraiseql-{today}.dump")
    assert listing.returncode == 0, listing.stderr
    assert f"TABLE DATA public {audit_data.AUDIT_TABLE}" in listing.stdout
    assert pg_restore_list(directory / f"fraiseql-{today}.sql").returncode != 0
    # an older day's dump is real too: the schema and every table but the audit rows
    older = directory / f"fraiseql-{(made_at(sandbox) - timedelta(days=3)):%Y%m%d}.dump"
    assert "TABLE DATA public tb_post" in pg_restore_list(older).stdout


def test_config_tarballs_hourly_then_daily(sandbox):
    directory = backup_dir(sandbox)
    tarballs = sorted(directory.glob("config-*.tar.gz"))
    assert 100 < len(tarballs) < 200
    for path in tarballs:
        stamp = datetime.strptime(path.name, "config-%Y%m%d-%H%M%S.tar.gz").replace(tzinfo=UTC)
        assert path.stat().st_mtime == stamp.timestamp()
    recent = [p for p in tarballs if age_days(p) < 2]
    assert len(recent) >= backups.CONFIG_HOURLY_HOURS - 1
    assert find(directory, "config-*.tar.gz", "-mtime", f"+{thresholds.CONFIG_RETENTION_DAYS}")
    assert not find(directory, "config-*.tar.gz", "-mtime", "+200")
    with tarfile.open(tarballs[-1]) as tar:
        names = tar.getnames()
    assert "server/fraiseql-server.toml" in names


def test_audit_archives_hold_each_days_rows(sandbox):
    directory = backup_dir(sandbox)
    archives = sorted(directory.glob("audit-*.gz"))
    assert len(archives) == backups.AUDIT_DAYS
    yesterday = made_at(sandbox).date() - timedelta(days=1)
    assert archives[-1].name == f"audit-{yesterday:%Y%m%d}.gz"
    cl = manager.Sandbox.open(sandbox.root).cluster
    with cl.connect(pgcluster.APP_DB) as conn:
        expected = conn.execute(
            f'SELECT count(*) FROM {audit_data.AUDIT_TABLE} WHERE "timestamp" >= %s '
            'AND "timestamp" < %s', (backups._at(yesterday, 0),  # noqa: SLF001
                                     backups._at(yesterday + timedelta(days=1), 0))
        ).fetchone()[0]
    assert subprocess.run(["gunzip", "-t", str(archives[-1])]).returncode == 0
    rows = list(csv.reader(io.StringIO(gzip.decompress(archives[-1].read_bytes()).decode())))
    assert rows[0] == ["id", "timestamp", "event_type", "user_id", "ip_address", "details"]
    assert len(rows) - 1 == expected > 0
    assert all(r[1].startswith(f"{yesterday:%Y-%m-%d}") for r in rows[1:])
    written = datetime.fromtimestamp(archives[0].stat().st_mtime, UTC)
    assert written.hour == backups.AUDIT_HOUR


def test_base_backup_then_marker_then_archived_wal(sandbox):
    directory = backup_dir(sandbox) / "base"
    bases = [p for p in directory.iterdir() if re.fullmatch(r"base-\d{8}T\d{6}Z", p.name)]
    assert len(bases) == 1
    base = bases[0]
    assert {p.name for p in base.iterdir()} == {"base.tar.gz", "pg_wal.tar.gz",
                                                 "backup_manifest"}
    # pg_verifybackup reads tar-format backups only from PostgreSQL 18: compare by hand
    manifest = json.loads((base / "backup_manifest").read_text())
    with tarfile.open(base / "base.tar.gz") as tar:
        names = set(tar.getnames())
    assert "PG_VERSION" in names and "backup_label" in names
    assert {f["Path"] for f in manifest["Files"]} <= names
    with tarfile.open(base / "pg_wal.tar.gz") as tar:
        assert any(re.fullmatch(r"[0-9A-F]{24}", name) for name in tar.getnames())
    sb = manager.Sandbox.open(sandbox.root)
    with sb.cluster.connect(pgcluster.APP_DB) as conn:
        rows = conn.execute(f"SELECT note FROM public.{backups.MARKER_TABLE}").fetchall()
    assert rows == [(f"after {base.name}",)]
    # the archive holds WAL after the backup's end (the marker's commit and its switch)
    end = manifest["WAL-Ranges"][-1]
    high, low = (int(part, 16) for part in end["End-LSN"].split("/"))
    end_segment = f"{end['Timeline']:08X}{high:08X}{low >> 24:08X}"
    archived = [p.name for p in sb.cluster.wal_archive_dir.iterdir()
                if re.fullmatch(r"[0-9A-F]{24}", p.name)]
    assert any(name > end_segment for name in archived), (end_segment, sorted(archived)[-3:])


# ---- faults --------------------------------------------------------------------------------


def test_backup_stale_injects_and_heals_byte_for_byte(healthy_sandbox):
    sb = healthy_sandbox
    directory = backup_dir(sb)
    before = snapshot(sb)
    today = made_at(sb).strftime("%Y%m%d")
    sb.fault("backup-stale")
    sb.fault("backup-stale")  # twice: moves nothing more
    try:
        assert not (directory / f"fraiseql-{today}.dump").exists()
        remaining = newest(directory, "fraiseql-*")
        assert age_days(remaining) * 24 > thresholds.BACKUP_MAX_AGE_HOURS
        assert len(list(directory.glob("fraiseql-*"))) == 2 * (backups.DUMP_DAYS - 1)
        held = manager.Sandbox.open(sb.root).root / ".backup-stale"
        assert len(list(held.iterdir())) == 4
        assert "backup-stale" in manager.Sandbox.open(sb.root).faults()
    finally:
        sb.heal("backup-stale")
    assert snapshot(sb) == before
    assert not (sb.root / ".backup-stale").exists()


def test_backup_corrupt_injects_and_heals_byte_for_byte(healthy_sandbox):
    sb = healthy_sandbox
    directory = backup_dir(sb)
    before = snapshot(sb)
    dump, archive = newest(directory, "fraiseql-*.dump"), newest(directory, "audit-*.gz")
    sizes = dump.stat().st_size, archive.stat().st_size
    sb.fault("backup-corrupt")
    sb.fault("backup-corrupt")  # twice: truncates nothing more, keeps the pristine copies
    try:
        assert (dump.stat().st_size, archive.stat().st_size) == (sizes[0] // 2, sizes[1] // 2)
        assert newest(directory, "fraiseql-*.dump") == dump  # times kept
        # the table of contents sits at the start: --list still reads it, a restore cannot
        assert pg_restore_list(dump).returncode == 0
        assert pg_restore_all(dump).returncode != 0
        assert subprocess.run(["gunzip", "-t", str(archive)],
                              capture_output=True).returncode != 0
    finally:
        sb.heal("backup-corrupt")
    assert snapshot(sb) == before
    assert pg_restore_all(dump).returncode == 0


def test_backup_faults_together_heal_in_either_order(healthy_sandbox):
    sb = healthy_sandbox
    before = snapshot(sb)
    for heal_order in (("backup-corrupt", "backup-stale"), ("backup-stale", "backup-corrupt")):
        sb.fault("backup-corrupt")
        sb.fault("backup-stale")
        for name in heal_order:
            sb.heal(name)
        assert snapshot(sb) == before, heal_order


# ---- --scale -----------------------------------------------------------------------------------


def test_scale_must_be_positive(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir",
                           str(tmp_path / "sb"), "up", "--scale", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 64 and "--scale" in done.stderr
    assert not (tmp_path / "sb").exists()


@pytest.mark.slow
def test_scale_multiplies_the_generated_rows():
    root = Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-scale-", dir="/tmp"))
    shutil.rmtree(root)
    try:
        manager.up(root, audit_events=500, scale=2, replica=False, traffic_rps=0)
        cl = manager.Sandbox.open(root).cluster
        with cl.connect(pgcluster.APP_DB) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM tb_user), (SELECT count(*) FROM tb_post), "
                f"(SELECT count(*) FROM {audit_data.AUDIT_TABLE}), "
                "(SELECT count(*) FROM tb_post p JOIN tb_user u ON u.pk_user = p.fk_user "
                " WHERE u.email LIKE 'copy1.%')").fetchone()
        assert counts == (400, 1200, 1000, 600)
        made = datetime.fromisoformat(manager.Sandbox.open(root).state["backups_made_at"])
        assert os.path.getsize(cl.backup_dir / f"fraiseql-{made:%Y%m%d}.dump")
    finally:
        manager.down(root, purge=True)
