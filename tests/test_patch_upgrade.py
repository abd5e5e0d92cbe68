"""patch-upgrade (§7.1): the SLA and version decisions, the config backup and its restore, and
the runbook drilled through the CLI on a sandbox of its own (an upgrade switches the stand-in's
release, which the session sandbox's other tests must not see): a dry run changes nothing, an
upgrade to main is verified and applied, `bad-release` is rolled back automatically, a failing
upgrade_command stops (or rolls back when it left the server changed), bad input exits 64.
Every drill starts from 2.14.1 with no fault and leaves the sandbox so.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from drill_helpers import by_check, findings_of

from fraiseql_rb.core import inventory, thresholds
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.maintenance import patch_upgrade as pu
from fraiseql_rb.sandbox import manager, server
from fraiseql_rb.sandbox.state import Sandbox

START = "2.14.1"  # every drill starts (and ends) on this release
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- the decisions ---------------------------------------------------------------------------

@pytest.mark.parametrize(("severity", "window"), [
    ("critical", timedelta(hours=24)), ("security", timedelta(days=7)),
    ("regular", timedelta(days=31))])
def test_sla_windows_are_section_7_1s(severity, window):
    assert pu.sla_window(severity) == window
    released = NOW - window + timedelta(hours=1)
    sla = pu.patch_sla(severity, released.isoformat(), NOW)
    assert sla.due_at == released + window
    assert sla.remaining == timedelta(hours=1) and not sla.overdue
    late = pu.patch_sla(severity, released - timedelta(hours=3), NOW)
    assert late.overdue and late.remaining == -timedelta(hours=2)


def test_sla_refuses_what_it_cannot_time():
    with pytest.raises(ValueError, match="severity"):
        pu.sla_window("urgent")
    with pytest.raises(ValueError, match="no UTC offset"):
        pu.patch_sla("critical", "2026-03-01T00:00:00", NOW)
    # another offset is the same moment
    sla = pu.patch_sla("critical", "2026-03-01T02:00:00+02:00", NOW)
    assert sla.released_at == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("reported", "target", "expected"), [
    ("2.15.0-standin", "2.15.0", True),  # a build of the release
    ("2.15.0", "2.15.0", True), ("v2.14.1", "2.14.1", True), ("2.15.0", "2.15", True),
    ("2.15.0-rc1", "2.15.0-rc1", True),
    ("2.15.0-rc1", "2.15.0-rc2", False),  # the target names its build: it must be that one
    ("2.14.1", "2.15.0", False), ("2.15.1", "2.15.0", False), ("banana", "2.15.0", False),
    (None, "2.15.0", None), ("", "2.15.0", None),  # no version: cannot tell
    ("2.15.0-standin", "main", None),  # main names no number
])
def test_version_rule(reported, target, expected):
    assert pu.version_matches(reported, target) is expected


@pytest.mark.parametrize(("current", "target", "kind"), [
    ("2.14.1", "2.14.2", "patch"), ("2.14.1", "2.15.0", "minor"), ("2.14.1", "3.0.0", "major"),
    ("2.15.0-standin", "2.14.1", "downgrade"), ("2.15.0-standin", "2.15.0", "same"),
    ("2.14.1", "v2.14.1", "same"), ("2.15.0-rc1", "2.15.0-rc2", "build"),
    (None, "2.14.1", "unknown"), ("2.14.1", "main", "main")])
def test_change_kind(current, target, kind):
    assert pu.change_kind(current, target) == kind


def _ctx(tmp_path: Path, *, execute: bool = False, **raw: object) -> RunContext:
    target = inventory.Target("prod", {"fraiseql_url": "http://127.0.0.1:9", **raw},
                              base_dir=tmp_path)
    return RunContext.adhoc("patch-upgrade", target=target, execute=execute)


def _planned(ctx: RunContext, current: str = "2.14.1", target: str = "2.14.2") -> None:
    ctx.record("patch.versions", Status.OK, "planned",
               {"current": current, "target": target, "kind": pu.change_kind(current, target),
                "needed": pu.change_kind(current, target) != "same"})


@pytest.mark.parametrize(("released_at", "status", "fragment"), [
    (NOW - timedelta(days=8), Status.WARNING, "OVERDUE by"),
    (NOW - timedelta(days=2), Status.OK, "5.0 days left"),
    (None, Status.INFO, "released_at not given")])
def test_sla_check(tmp_path, released_at, status, fragment):
    ctx = _ctx(tmp_path)
    _planned(ctx)
    found = pu.check_sla(ctx, "security", released_at, now=NOW)
    assert found.status is status and fragment in found.summary, found.summary


def test_an_installed_patch_is_never_overdue(tmp_path):
    ctx = _ctx(tmp_path)
    _planned(ctx, "2.14.2", "2.14.2")
    found = pu.check_sla(ctx, "critical", NOW - timedelta(days=90), now=NOW)
    assert found.status is Status.INFO and found.evidence["installed"] is True


@pytest.mark.parametrize("health", [Status.WARNING, Status.CRITICAL])
def test_a_service_not_healthy_now_is_not_upgraded(tmp_path, health):
    ctx = _ctx(tmp_path)
    ctx.record("service.health", health, "degraded")
    ctx.record("graphql.data_path", Status.OK, "reads work")
    _planned(ctx)
    assert pu.check_baseline(ctx).status is Status.CRITICAL
    ctx.record("service.health", Status.OK, "healthy")
    assert pu.check_baseline(ctx).status is Status.OK


def test_commands_missing_or_with_an_unknown_placeholder(tmp_path):
    ctx = _ctx(tmp_path, upgrade_command="deploy {version}")
    _planned(ctx)
    found = pu.check_commands(ctx, "2.14.2")
    assert found.status is Status.WARNING and "no rollback_command" in found.summary
    ctx = _ctx(tmp_path, rollback_command="deploy {version}")
    _planned(ctx)
    assert pu.check_commands(ctx, "2.14.2").status is Status.CRITICAL
    ctx = _ctx(tmp_path, upgrade_command="deploy {release}", rollback_command="deploy {version}")
    _planned(ctx)
    assert pu.check_commands(ctx, "2.14.2").status is Status.CRITICAL


def test_config_backup_restores_only_what_its_checksum_vouches_for(tmp_path):
    config = tmp_path / "fraiseql.toml"
    config.write_text('bind_addr = "127.0.0.1:8000"\n')
    backups = tmp_path / "backups"
    backups.mkdir()
    ctx = _ctx(tmp_path, execute=True, config_path=str(config), backup_dir=str(backups))
    _planned(ctx)
    found = pu.backup_config(ctx)
    assert found.status is Status.OK, found.summary
    tarball, sums = Path(found.evidence["tarball"]), Path(found.evidence["sha256_file"])
    assert oct(tarball.stat().st_mode & 0o777) == "0o600"
    assert sums.read_text() == f"{hashlib.sha256(tarball.read_bytes()).hexdigest()}  " \
                               f"{tarball.name}\n"
    assert subprocess.run(["sha256sum", "-c", sums.name], cwd=backups,
                          capture_output=True).returncode == 0
    original = config.read_bytes()
    config.write_text('bind_addr = "0.0.0.0:8000"\n')  # what an upgrade might rewrite
    restored = pu.restore_config(ctx)
    assert restored == {"ok": True, "changed": True,
                        "sha256": hashlib.sha256(original).hexdigest()}
    assert config.read_bytes() == original
    assert pu.restore_config(ctx)["changed"] is False  # nothing to write the second time
    # a damaged tarball is refused and the config left as it is
    config.write_text("changed again\n")
    tarball.write_bytes(tarball.read_bytes()[:-5])
    refused = pu.restore_config(ctx)
    assert refused["ok"] is False and "is not the recorded" in refused["error"]
    assert config.read_text() == "changed again\n"


def test_a_dry_run_backup_writes_nothing(tmp_path):
    config = tmp_path / "fraiseql.toml"
    config.write_text("x = 1\n")
    ctx = _ctx(tmp_path, config_path=str(config), backup_dir=str(tmp_path))
    _planned(ctx)
    found = pu.backup_config(ctx)
    assert found.status is Status.INFO and found.evidence["taken"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fraiseql.toml"]
    assert [a.executed for a in ctx.log.actions] == [False]
    assert pu.backup_config(_ctx(tmp_path, execute=True)).evidence.get("skipped")  # no plan


def test_no_config_path_stops_the_upgrade(tmp_path):
    ctx = _ctx(tmp_path, execute=True)
    _planned(ctx)
    assert pu.backup_config(ctx).status is Status.CRITICAL


# -- drills on a sandbox of its own ----------------------------------------------------------

class PatchSandbox:
    def __init__(self, root: Path, inventory_path: Path, reports: Path) -> None:
        self.root, self.inventory, self.reports = root, inventory_path, reports

    @property
    def sb(self) -> Sandbox:
        return Sandbox.open(self.root)

    @property
    def raw(self) -> dict:
        return tomllib.loads(self.inventory.read_text())["targets"]["sandbox"]

    def run(self, *args: str, inventory_path: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fraiseql_rb", "run", "patch-upgrade", "--inventory",
             str(inventory_path or self.inventory), "--target", "sandbox", "--output-dir",
             str(self.reports), *args], capture_output=True, text=True, timeout=300)

    def inventory_with(self, **changes: object) -> Path:
        """A copy of the inventory with `changes` (None removes a key), secrets by absolute
        path so it works from anywhere."""
        lines = ["[targets.sandbox]"]
        for key, value in {**self.raw, **changes}.items():
            if value is None:
                continue
            if key.endswith("_file") and not str(value).startswith("/"):
                value = str(self.root / str(value))
            lines.append(f"{key} = {json.dumps(value)}")
        path = Path(tempfile.mkdtemp(prefix="inv-", dir=self.reports)) / "inventory.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def health(self) -> dict:
        verify = ssl.create_default_context(cafile=str(self.sb.ca_cert))
        return httpx.get(f"{self.sb.server_url}/health", verify=verify, timeout=5).json()

    def state(self) -> dict:
        """What a dry run must leave as it was."""
        sb = self.sb
        return {"release": sb.server_release, "server_pid": server.pid(sb),
                "version": self.health().get("version"),
                "config": hashlib.sha256(sb.server_config.read_bytes()).hexdigest(),
                "backups": sorted(p.name for p in sb.cluster.backup_dir.iterdir()),
                "faults": sb.faults(), "flags": server.read_behaviour_faults(sb)}

    def reset(self) -> None:
        """Back to START with no fault, whatever a drill left."""
        for name in self.sb.faults():
            manager.heal(self.root, name)
        if self.sb.server_release != START:
            server.restart(self.sb, release=START)


@pytest.fixture(scope="module")
def patch_sandbox() -> Iterator[PatchSandbox]:
    root = Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-patch-", dir="/tmp"))
    shutil.rmtree(root)
    reports = Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-patch-reports-"))
    result = manager.up(root, audit_events=1_000, replica=False, server_version=START,
                        traffic_rps=0)
    try:
        yield PatchSandbox(root, result.inventory, reports)
    finally:
        manager.down(root, purge=True)
        shutil.rmtree(reports, ignore_errors=True)


@pytest.fixture
def drill(patch_sandbox: PatchSandbox) -> Iterator[PatchSandbox]:
    patch_sandbox.reset()
    assert patch_sandbox.health()["version"] == START
    yield patch_sandbox
    patch_sandbox.reset()


def _record(data: dict) -> dict:
    return by_check(data)["change.record"]["evidence"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "value", "message"), [
    ("target_version", "banana", "is not a release version"),
    ("severity", "urgent", "must be one of critical, security, regular"),
    ("released_at", "2026-01-26T14:00:00", "has no UTC offset")])
def test_bad_input_exits_64_before_a_kernel_starts(patch_sandbox, name, value, message):
    result = patch_sandbox.run("-p", name, value)
    assert result.returncode == 64, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_default_run_reports_and_changes_nothing(drill):
    before = drill.state()
    result = drill.run()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = findings_of(result)
    checks = by_check(data)
    assert checks["patch.versions"]["evidence"]["current"] == START
    assert checks["change.gate"]["evidence"]["outcome"] == "nothing-to-do"
    assert _record(data)["outcome"] == "nothing-to-do" and data["actions"] == []
    assert drill.state() == before


@pytest.mark.slow
def test_a_dry_run_records_every_command_and_changes_nothing(drill):
    before = drill.state()
    result = drill.run("-p", "target_version", "2.15.0", "-p", "severity", "critical",
                       "-p", "released_at", (datetime.now(UTC) - timedelta(hours=2))
                       .isoformat(timespec="seconds"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = findings_of(result)
    checks = by_check(data)
    assert checks["patch.sla"]["status"] == "ok"  # 22 hours left of 24
    assert 21.9 < checks["patch.sla"]["evidence"]["remaining_hours"] < 22.1
    assert _record(data)["outcome"] == "dry-run"
    assert [(a["action"], a["executed"]) for a in data["actions"]] == [
        ("config_backup", False), ("fresh_dump", False), ("upgrade", False)]
    assert data["actions"][-1]["command"].endswith("service upgrade 2.15.0")
    assert drill.state() == before


@pytest.mark.slow
def test_an_upgrade_to_main_is_verified_and_applied(drill):
    config = drill.sb.server_config.read_bytes()
    result = drill.run("-p", "target_version", "2.15.0", "-p", "execute", "true")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = findings_of(result)
    checks = by_check(data)
    assert _record(data)["outcome"] == "applied"
    assert _record(data)["phases"] == ["pre-checks", "change", "verification"]
    assert checks["patch.new_version"]["evidence"]["reported"] == "2.15.0-standin"
    assert checks["patch.verification"]["evidence"]["passed"] is True
    assert drill.health()["version"] == "2.15.0-standin" and drill.sb.server_release == "main"
    backup = checks["patch.config_backup"]["evidence"]
    assert pu.read_config_backup(Path(backup["tarball"]))[0] == config
    dump = Path(checks["backup.fresh_dump"]["evidence"]["path"])
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == \
        checks["backup.fresh_dump"]["evidence"]["sha256"]
    assert [a["action"] for a in data["actions"] if a["executed"]] == [
        "config_backup", "fresh_dump", "upgrade"]


@pytest.mark.slow
def test_bad_release_is_rolled_back_automatically(drill):
    sb = drill.sb
    config = sb.server_config.read_bytes()
    # an upgrade that also rewrites the config, as a package upgrade may: the rollback must
    # put the old file back
    upgrade = (f"sh -c 'echo \"# upgraded to $0\" >> {shlex.quote(str(sb.server_config))} && "
               f"{drill.raw['upgrade_command'].replace(' {version}', '')} \"$0\"' {{version}}")
    manager.inject(drill.root, "bad-release")
    result = drill.run("-p", "target_version", "2.15.0", "-p", "execute", "true",
                       inventory_path=drill.inventory_with(upgrade_command=upgrade))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    data = findings_of(result)
    checks = by_check(data)
    record = _record(data)
    assert record["outcome"] == "rolled-back"
    assert record["phases"] == ["pre-checks", "change", "verification", "rollback"]
    failed = [f for f in data["findings"] if f["check"] == "graphql.data_path"
              and f["status"] == "critical"]
    assert len(failed) == 1 and "column v_post.summary does not exist" in failed[0]["summary"]
    assert failed[0]["resolved_by"].startswith("patch.rollback_verification")
    assert checks["patch.new_version"]["status"] == "ok"  # /health says 2.15.0 and healthy
    assert checks["patch.verification"]["evidence"]["failed"] == ["graphql.data_path"]
    rolled = checks["patch.rollback"]["evidence"]
    assert rolled["config"]["changed"] is True and rolled["previous"] == START
    assert checks["patch.rollback_verification"]["status"] == "warning"
    assert checks["patch.rollback_verification"]["evidence"]["restored"] is True
    assert data["status"] == "warning"
    assert [a["action"] for a in data["actions"] if a["executed"]] == [
        "config_backup", "fresh_dump", "upgrade", "restore_config", "rollback"]
    assert drill.health()["version"] == START and drill.sb.server_release == START
    assert drill.sb.server_config.read_bytes() == config
    manager.heal(drill.root, "bad-release")
    assert server.read_behaviour_faults(drill.sb) == {}


@pytest.mark.slow
def test_without_rollback_command_a_failed_verification_is_critical(drill):
    manager.inject(drill.root, "bad-release")
    result = drill.run("-p", "target_version", "2.15.0", "-p", "execute", "true",
                       inventory_path=drill.inventory_with(rollback_command=None))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    data = findings_of(result)
    checks = by_check(data)
    assert checks["patch.commands"]["status"] == "warning"
    assert checks["patch.rollback"]["status"] == "critical"
    assert "roll back by hand to 2.14.1" in checks["patch.rollback"]["summary"]
    assert "tar -xzf" in checks["patch.rollback"]["remediation"]
    assert _record(data)["outcome"] == "failed"
    assert drill.sb.server_release == "main"  # nothing rolled it back ...
    manager.heal(drill.root, "bad-release")  # ... but the heal puts the sandbox back
    assert drill.sb.server_release == START and drill.health()["version"] == START


@pytest.mark.slow
@pytest.mark.parametrize("changes_server", [False, True], ids=["unchanged", "changed"])
def test_a_failing_upgrade_command(drill, changes_server):
    """exit 3 with "boom": a critical finding with both. The server still on its version
    and healthy: no rollback, the run stops before the verification. The command upgraded
    before failing: the server changed, so the rollback runs."""
    real = drill.raw["upgrade_command"].replace(" {version}", "")
    work = f'{real} "$0" >/dev/null; ' if changes_server else ""
    upgrade = f"sh -c '{work}echo boom; exit 3' {{version}}"
    result = drill.run("-p", "target_version", "2.15.0", "-p", "execute", "true",
                       inventory_path=drill.inventory_with(upgrade_command=upgrade))
    data = findings_of(result)
    checks = by_check(data)
    failed = checks["patch.upgrade"]
    assert failed["evidence"]["returncode"] == 3 and failed["evidence"]["output"][-1] == "boom"
    assert "exited 3" in failed["summary"] and "boom" in failed["summary"]
    assert failed["evidence"]["server_changed"] is changes_server
    phases = _record(data)["phases"]
    assert "verification" not in phases
    if changes_server:
        assert result.returncode == 1, result.stdout[-3000:]
        assert _record(data)["outcome"] == "rolled-back" and phases[-1] == "rollback"
        assert failed["resolved_by"].startswith("patch.rollback_verification")
    else:
        assert result.returncode == 2, result.stdout[-3000:]
        assert _record(data)["outcome"] == "failed" and phases[-1] == "change"
        assert not [a for a in data["actions"] if a["action"] == "rollback"]
        assert checks["patch.rollback"]["evidence"]["skipped"] is True
    assert drill.health()["version"] == START


def test_catalogue_numbers_are_the_runbooks():
    assert thresholds.PATCH_SLA_CRITICAL_HOURS == 24  # §7.1 Critical Patches: Within 24 hours
    assert thresholds.PATCH_SLA_SECURITY_DAYS == 7  # §7.1 Security Patches: Within 7 days
