"""disaster-recovery-drill (§5.2): a base backup plus archived WAL restored into a scratch
cluster, on real PostgreSQL: the marker rows come back, RTO and RPO are measured, a
target_time stops between two rows, a gap in the archive or a failed recovery is critical with
PostgreSQL's own words, and nothing is left behind (no server, no directory)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.dr import disaster_recovery_drill as drill_mod
from fraiseql_rb.sandbox.cluster import APP_USER, Cluster
from fraiseql_rb.targets import scratch

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Source:
    cluster: Cluster
    backup_dir: Path
    database_url: str
    first_at: datetime  # marker row 1 (committed), then a pause, then row 2
    second_at: datetime

    def target(self, **overrides: str) -> inventory.Target:
        raw = {"database_url": self.database_url, "backup_dir": str(self.backup_dir),
               "wal_archive_dir": str(self.cluster.wal_archive_dir), **overrides}
        return inventory.Target("t", raw)


def base_backup(cluster: Cluster, backup_dir: Path) -> Path:
    """The sandbox's layout: backup_dir/base/base-YYYYMMDDTHHMMSSZ/ from pg_basebackup."""
    name = datetime.now(UTC).strftime("base-%Y%m%dT%H%M%SZ")
    target = backup_dir / "base" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(cluster.bindir / "pg_basebackup"), "-D", str(target), "-Ft", "-z",
                    "-X", "fetch", "-c", "fast", "-h", str(cluster.run_dir), "-p",
                    str(cluster.port), "-U", "postgres"], check=True, capture_output=True,
                   timeout=120)
    return target


def marker(cluster: Cluster, note: str) -> datetime:
    with cluster.connect("fraiseql") as conn:
        return conn.execute("INSERT INTO public.fraiseql_rb_marker (note) VALUES (%s) "
                            "RETURNING at", (note,)).fetchone()[0]


@pytest.fixture(scope="module")
def source(pg_passwords) -> Iterator[Source]:
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="frb-dr-", dir="/tmp")))
    try:
        cluster.init(pg_passwords.superuser)
        cluster.start()
        cluster.provision(pg_passwords.app, audit_events=200)
        with cluster.connect("fraiseql") as conn:
            conn.execute("CREATE TABLE public.fraiseql_rb_marker (id serial PRIMARY KEY, "
                         "note text, at timestamptz NOT NULL DEFAULT now())")
            conn.execute(f"GRANT SELECT ON public.fraiseql_rb_marker TO {APP_USER}")
        backup_dir = cluster.base_dir / "backups"
        base_backup(cluster, backup_dir)
        first = marker(cluster, "after the base backup")
        cluster.wait_archived()  # row 1 sits in its own archived segment
        time.sleep(1.5)
        second = marker(cluster, "later")
        cluster.wait_archived()
        url = cluster.dsn(APP_USER, pg_passwords.app, connect_timeout=10)
        yield Source(cluster, backup_dir, url, first, second)
    finally:
        cluster.destroy()


@pytest.fixture
def scratch_root(monkeypatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="frb-drs-", dir="/tmp"))
    path.chmod(0o755)  # the server's account must reach it
    monkeypatch.setenv(scratch.ENV_VAR, str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def postgres_processes_under(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "postgres" in cmd and str(path) in cmd:
                found.append(cmd)
    return found


def assert_nothing_left(root: Path) -> None:
    assert list(root.iterdir()) == [], f"scratch space left behind: {list(root.iterdir())}"
    assert postgres_processes_under(root) == []


def run_drill(target: inventory.Target, *, tier: int = 2, target_time: str | None = None,
              start_server: bool = False) -> tuple[RunContext, drill_mod.Drill]:
    ctx = RunContext.adhoc("disaster-recovery-drill", target=target)
    drill = drill_mod.begin(tier, target_time)
    drill_mod.locate_backup(ctx, drill)
    drill_mod.check_archive(ctx, drill)
    drill_mod.read_source(ctx, drill)
    drill_mod.restore(ctx, drill, start_server=start_server)
    drill_mod.check_rto(ctx, drill)
    drill_mod.check_rpo(ctx, drill)
    drill_mod.timeline(ctx, drill)
    return ctx, drill


def by_check(ctx: RunContext) -> dict[str, object]:
    return {f.check: f for f in ctx.log.findings}


def test_latest_restore_has_the_schema_the_marker_rows_and_measures_rto_and_rpo(
        source, scratch_root):
    ctx, drill = run_drill(source.target(), start_server=True)
    found = by_check(ctx)
    for name in ("dr.base_backup", "dr.wal_archive", "dr.extract", "dr.configure",
                 "dr.recovery", "dr.schema", "dr.marker", "dr.rto", "dr.rpo"):
        assert found[name].status == Status.OK, (name, found[name].summary,
                                                 found[name].evidence)
    assert found["dr.marker"].evidence["rows"] == 2
    assert found["dr.schema"].evidence["missing"] == []
    assert drill.method == "marker"
    rpo = found["dr.rpo"].evidence["rpo_s"]
    assert 0 <= rpo < 1, rpo  # both rows archived: nothing committed is lost
    assert 0 < found["dr.rto"].evidence["rto_s"] < 900
    assert found["dr.server"].status == Status.OK, found["dr.server"].summary
    steps = found["dr.timeline"].evidence["steps"]
    assert [s["check"] for s in steps][:4] == ["dr.base_backup", "dr.wal_archive",
                                                "dr.source", "dr.extract"]
    assert all(s["duration_s"] >= 0 for s in steps)
    assert all("duration_s" in found[s["check"]].evidence for s in steps)
    assert_nothing_left(scratch_root)


def test_target_time_between_two_rows_restores_only_the_first(source, scratch_root):
    between = source.first_at + (source.second_at - source.first_at) / 2
    ctx, drill = run_drill(source.target(), target_time=between.isoformat())
    found = by_check(ctx)
    assert found["dr.recovery"].status == Status.OK, found["dr.recovery"].evidence
    assert found["dr.marker"].status == Status.OK, found["dr.marker"].summary
    assert found["dr.marker"].evidence["rows"] == 1
    assert found["dr.rpo"].status == Status.INFO  # a restore to a point is no RPO measure
    assert drill.recovered_newest <= drill.target_time
    assert_nothing_left(scratch_root)


def test_a_missing_wal_segment_is_critical_and_named(source, scratch_root, tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(source.cluster.wal_archive_dir, archive)
    backup = drill_mod.base_backups(source.backup_dir)[0]
    start = drill_mod.LABEL_WAL.search(drill_mod.read_label(backup)).group(1)
    segments = sorted(p.name for p in archive.iterdir()
                      if drill_mod.SEGMENT.match(p.name) and p.name > start)
    assert len(segments) >= 2, segments
    gone = segments[-2]  # not the newest: a gap, not an end
    (archive / gone).unlink()
    ctx, _ = run_drill(source.target(wal_archive_dir=str(archive)))
    found = by_check(ctx)
    assert found["dr.wal_archive"].status == Status.CRITICAL
    assert gone in found["dr.wal_archive"].summary
    assert found["dr.recovery"].status == Status.CRITICAL
    assert gone in found["dr.recovery"].summary
    assert found["dr.rpo"].status in (Status.CRITICAL, Status.UNKNOWN)
    assert ctx.status == Status.CRITICAL
    assert_nothing_left(scratch_root)


def test_a_recovery_that_fails_half_way_is_critical_with_postgresqls_words(
        source, scratch_root):
    # a target after the archive's end: PostgreSQL refuses to finish the recovery
    ctx, _ = run_drill(source.target(), target_time=datetime.now(UTC).isoformat())
    found = by_check(ctx)
    assert found["dr.recovery"].status == Status.CRITICAL, found["dr.recovery"].summary
    assert "recovery target" in found["dr.recovery"].summary
    assert found["dr.rto"].status == Status.CRITICAL
    assert_nothing_left(scratch_root)


def test_a_damaged_base_backup_is_critical_and_leaves_nothing(source, scratch_root, tmp_path):
    copy = tmp_path / "backups"
    shutil.copytree(source.backup_dir, copy)
    tar = next(copy.glob("base/base-*/base.tar.gz"))
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    ctx, _ = run_drill(source.target(backup_dir=str(copy)))
    found = by_check(ctx)
    assert found["dr.extract"].status == Status.CRITICAL, found["dr.extract"].summary
    assert "dr.recovery" not in found
    assert_nothing_left(scratch_root)


def test_an_interrupted_restore_leaves_nothing(source, scratch_root, monkeypatch):
    real = drill_mod._wait_promoted

    def interrupted(sc, deadline):
        real(sc, deadline)
        raise KeyboardInterrupt

    monkeypatch.setattr(drill_mod, "_wait_promoted", interrupted)
    ctx = RunContext.adhoc("disaster-recovery-drill", target=source.target())
    drill = drill_mod.begin(2, None)
    drill_mod.locate_backup(ctx, drill)
    with pytest.raises(KeyboardInterrupt):
        drill_mod.restore(ctx, drill)
    assert_nothing_left(scratch_root)


# -- through the CLI --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2099-01-01T00:00:00Z", "2026-01-26T14:00:00", "yesterday"])
def test_a_bad_target_time_exits_64_with_one_line(value, tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text('[targets.prod]\ndatabase_url = "postgresql://app@127.0.0.1:9/db"\n'
                   f'backup_dir = "{tmp_path}"\nwal_archive_dir = "{tmp_path}"\n')
    result = subprocess.run(["python3", "-m", "fraiseql_rb", "run", "disaster-recovery-drill",
                             "--target", "prod", "--inventory", str(inv), "--output-dir",
                             str(tmp_path / "out"), "-p", "target_time", value],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 64, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "target_time" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


def _digests(*directories: Path) -> dict[str, str]:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()
            for directory in directories for path in directory.rglob("*") if path.is_file()}


@pytest.mark.sandbox
def test_drill_on_the_live_sandbox_measures_and_changes_nothing(healthy_sandbox):
    import tomllib

    raw = tomllib.loads(healthy_sandbox.inventory.read_text())["targets"]["sandbox"]
    backup_dir = Path(raw.get("backup_dir", ""))
    archive = Path(raw.get("wal_archive_dir", ""))
    if not raw.get("backup_dir") or not list(backup_dir.glob("base/base-*/base.tar.gz")):
        pytest.skip("the sandbox has no base backup under backup_dir/base yet")
    before = _digests(backup_dir, archive)
    result = healthy_sandbox.run("disaster-recovery-drill", "--incident-id", "DR-1",
                                 "-p", "tier", "4")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    artifacts = Path(result.stdout.strip().splitlines()[-1])
    findings = {f["check"]: f for f in json.loads((artifacts / "findings.json").read_text())
                ["findings"]}
    assert findings["dr.rto"]["evidence"]["rto_s"] > 0
    assert "rpo_s" in findings["dr.rpo"]["evidence"]
    after = _digests(backup_dir, archive)  # the live archive may only have grown
    assert {path: after.get(path) for path in before} == before
