"""read-replica (runbook §6.2): the judgements' pure parts, the pre-checks against a real
cluster that cannot replicate, and drills on the live sandbox: a standby is created through
the CLI (with a slot, so confirm), streams, serves a read and refuses a write, and is then
stopped and removed with its slot; a dry run creates no directory and starts nothing; a
refused pg_basebackup is a finding with its exit code and stops the change; bad input exits
64 before a kernel starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from drill_helpers import by_check, findings_of

from fraiseql_rb.core import inventory, thresholds
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.maintenance import read_replica as rr
from fraiseql_rb.sandbox.cluster import free_port
from fraiseql_rb.sandbox.state import Sandbox

# -- pure judgements ----------------------------------------------------------------------------

PRIMARY = {"version_num": 150004, "wal_level": "replica", "max_wal_senders": 5,
           "wal_senders_used": 1, "max_replication_slots": 10, "slots_used": 0,
           "slot_taken": 0, "role": "postgres", "superuser": True, "replication": True}


def _failed(row: dict, slot: str | None = None) -> list[str]:
    return [c["condition"] for c in rr.judge_primary(row, slot) if not c["ok"]]


def test_what_the_primary_must_allow():
    assert _failed(PRIMARY) == []
    assert _failed(PRIMARY | {"wal_level": "minimal"}) == ["wal_level is replica or logical"]
    assert _failed(PRIMARY | {"wal_senders_used": 5}) == ["a WAL sender is free"]
    assert _failed(PRIMARY | {"superuser": False, "replication": False}) == [
        "role postgres may replicate"]
    assert _failed(PRIMARY | {"superuser": False}) == []  # REPLICATION suffices
    assert _failed(PRIMARY, "standby_1") == []
    assert _failed(PRIMARY | {"slot_taken": 1}, "standby_1") == [
        "slot name 'standby_1' is valid and unused"]
    assert _failed(PRIMARY, "Bad-Name") == ["slot name 'Bad-Name' is valid and unused"]
    assert _failed(PRIMARY | {"slots_used": 10}, "s") == ["a replication slot is free"]


def test_a_new_standby_must_stream_and_keep_up():
    streaming = {"in_recovery": True, "receiver_status": "streaming"}
    near = {"lag_bytes": 100, "replay_lag_s": 0.2}
    assert rr.judge_stream(streaming, near) == (Status.OK, [])
    assert rr.judge_stream(streaming, {"lag_bytes": None, "replay_lag_s": None})[0] is Status.OK
    status, problems = rr.judge_stream({"in_recovery": False, "receiver_status": None}, None)
    assert status is Status.CRITICAL and len(problems) == 3
    behind = {"lag_bytes": thresholds.REPLICA_CAUGHT_UP_BYTES + 1, "replay_lag_s": 1.0}
    assert rr.judge_stream(streaming, behind)[0] is Status.WARNING
    late = {"lag_bytes": 0, "replay_lag_s": thresholds.REPLICA_DELAY_S.critical + 1}
    assert rr.judge_stream(streaming, late)[0] is Status.CRITICAL


def test_the_password_never_reaches_the_command_line():
    url = "postgresql://postgres:s3cret-pw@db.example:5433/app?sslmode=verify-full"
    conninfo = rr.replication_conninfo(url, 5444)
    assert "s3cret" not in conninfo and "password" not in conninfo
    assert "application_name=fraiseql_rb_standby_5444" in conninfo
    assert "sslmode=verify-full" in conninfo
    argv = rr.basebackup_argv("/data/standby", conninfo, "spread", "s1")
    assert argv[-4:] == ["-w", "-S", "s1", "-C"]
    assert argv[argv.index("-c"):argv.index("-c") + 2] == ["-c", "spread"]
    assert "-R" in argv and "stream" in argv
    assert "host=127.0.0.1" in rr.standby_url(url, 5444) and "port=5444" in rr.standby_url(
        url, 5444)


# -- pre-checks against a real cluster that cannot replicate ------------------------------------

def test_a_primary_without_replication_is_refused(make_cluster, ctx_for):
    cluster = make_cluster(ssl=False, extra_conf={"wal_level": "minimal", "max_wal_senders": 0,
                                                  "archive_mode": False})
    hba = cluster.pgdata / "pg_hba.conf"  # pg_hba_file_rules reads the file as it is now
    hba.write_text("".join(ln for ln in hba.read_text().splitlines(keepends=True)
                           if "replication" not in ln))
    ctx = ctx_for(cluster, admin_dbname="postgres", runbook="read-replica")
    primary = rr.check_primary(ctx)
    assert primary.status is Status.CRITICAL
    failed = [c["condition"] for c in primary.evidence["conditions"] if not c["ok"]]
    assert failed == ["wal_level is replica or logical", "a WAL sender is free"]
    hba_finding = rr.check_hba(ctx)
    assert hba_finding.status is Status.CRITICAL and "no pg_hba.conf line" in \
        hba_finding.summary
    assert rr.check_tools(ctx).status is Status.OK  # same binaries, same major version
    rr.check_destination(ctx, None, None)
    gate = rr.authorize(ctx, None, None)
    assert gate.evidence["outcome"] == "refused"


# -- the sandbox ----------------------------------------------------------------------------------

def _postgres_on(data_dir: Path) -> list[int]:
    """Pids of servers started on `data_dir` (a postmaster's command line names it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(data_dir).encode() in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture
def place() -> Iterator[Path]:
    """A new standby's directory-to-be under /tmp (the postgres account must reach it), and
    whatever a test leaves there stopped and removed."""
    base = Path(tempfile.mkdtemp(prefix="frb-rr-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "standby"
    data = base / "standby"
    if (data / "postmaster.pid").exists():
        account = rr.server_account()
        subprocess.run(rr.stop_argv(str(data)), capture_output=True, timeout=60, cwd="/",
                       check=False, **rr._as_account(account))
    shutil.rmtree(base, ignore_errors=True)


def _ctx(sandbox, *, execute: bool = False, confirm: str | None = None,
         **keys: str) -> RunContext:
    target = inventory.load_target("sandbox", sandbox.inventory)
    if keys:
        target = inventory.Target(target.name, {**target.raw, **keys}, target.base_dir)
    return RunContext.adhoc("read-replica", target, execute=execute, confirm=confirm)


def _drop_slot(root: Path, slot: str) -> None:
    with Sandbox.open(root).cluster.connect() as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                      "WHERE slot_name = %s", (slot,))


def test_a_read_replica_is_created_streams_and_refuses_writes(healthy_sandbox, place):
    slot = "fraiseql_rb_test_standby"
    port = free_port()
    try:
        result = healthy_sandbox.run("read-replica", "-p", "data_dir", str(place), "-p",
                                     "port", str(port), "-p", "slot_name", slot,
                                     "-p", "execute", "true", "-p", "confirm", "sandbox",
                                     "-p", "streaming_wait_s", "30")
        assert result.returncode == 0, result.stderr[-3000:]
        data = findings_of(result)
        checks = by_check(data)
        assert checks["replica.basebackup"]["status"] == "ok"
        assert (place / "standby.signal").exists()
        assert checks["replica.streaming"]["evidence"]["standby"]["receiver_status"] == \
            "streaming"
        assert checks["replica.streaming"]["evidence"]["primary_view"]["state"] == "streaming"
        assert checks["replica.read_only"]["evidence"]["write_refused"] is True
        assert checks["replica.read_only"]["evidence"]["tables_on_standby"] >= 1
        assert f":{port}/" in checks["replica.result"]["evidence"]["inventory_line"]
        assert checks["change.record"]["evidence"]["outcome"] == "applied"
        assert all(a["executed"] for a in data["actions"])
        with Sandbox.open(healthy_sandbox.root).cluster.connect() as conn:
            active = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name "
                                  "= %s", (slot,)).fetchone()
        assert active == (True,)
        secret = (healthy_sandbox.root / "secrets" / "superuser_password").read_text().strip()
        artifact = Path(result.stdout.strip().splitlines()[-1])
        for path in artifact.iterdir():
            assert secret not in path.read_text(errors="replace"), path.name
        assert _postgres_on(place)
    finally:
        if (place / "postmaster.pid").exists():
            subprocess.run(rr.stop_argv(str(place)), capture_output=True, timeout=60,
                           cwd="/", check=False, **rr._as_account(rr.server_account()))
        _drop_slot(healthy_sandbox.root, slot)
    assert not _postgres_on(place)


def test_a_dry_run_creates_no_directory_and_starts_nothing(healthy_sandbox, place):
    port = free_port()
    ctx = _ctx(healthy_sandbox)
    rr.check_primary(ctx)
    rr.check_hba(ctx)
    rr.check_tools(ctx)
    assert rr.check_destination(ctx, str(place), port).status is Status.OK
    assert rr.authorize(ctx, str(place), port).evidence["outcome"] == "dry-run"
    rr.basebackup(ctx, str(place), port)
    rr.start(ctx, str(place), port)
    rr.check_streaming(ctx, port, wait_s=1)
    rr.check_read_only(ctx, port)
    rr.result(ctx, str(place), port)
    assert rr.change_record(ctx, str(place), port).evidence["outcome"] == "dry-run"
    assert not place.exists() and not _postgres_on(place)
    assert rr.port_free(port)
    assert [(a.action, a.executed) for a in ctx.log.actions] == [
        ("pg_basebackup", False), ("configure_port", False), ("pg_ctl_start", False)]
    assert "PGPASSWORD" not in ctx.log.actions[0].command
    assert ctx.status in (Status.OK, Status.INFO)


def test_a_slot_without_confirm_runs_nothing(healthy_sandbox, place):
    ctx = _ctx(healthy_sandbox, execute=True)
    rr.check_primary(ctx, "fraiseql_rb_unconfirmed")
    rr.check_hba(ctx)
    rr.check_tools(ctx)
    rr.check_destination(ctx, str(place), free_port())
    gate = rr.authorize(ctx, str(place), 5999, "fraiseql_rb_unconfirmed")
    assert gate.status is Status.WARNING and not gate.evidence["proceed"]
    rr.basebackup(ctx, str(place), 5999, "fraiseql_rb_unconfirmed")
    assert not place.exists()


def test_a_refused_pg_basebackup_is_a_finding_and_stops_the_change(healthy_sandbox, place):
    """The application role has no REPLICATION: PostgreSQL refuses the copy. The gate is
    passed by hand here (its pre-check would have said so) to reach pg_basebackup."""
    target = inventory.load_target("sandbox", healthy_sandbox.inventory)
    raw = {k: v for k, v in target.raw.items() if not k.startswith("admin_database")}
    ctx = RunContext.adhoc("read-replica", inventory.Target("sandbox", raw, target.base_dir),
                           execute=True)
    ctx.record("change.gate", Status.INFO, "passed by the test",
               {"proceed": True, "outcome": "applied"})
    port = free_port()
    found = rr.basebackup(ctx, str(place), port)
    assert found.status is Status.CRITICAL
    assert found.evidence["returncode"] not in (0, None)
    assert any("replication" in line for line in found.evidence["output"])
    assert "stops here" in found.summary
    assert rr.start(ctx, str(place), port).evidence.get("skipped")
    assert rr.check_streaming(ctx, port).evidence.get("skipped")
    assert rr.outcome(ctx) == "failed"
    assert not _postgres_on(place)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("port", "80", "port"),
    ("data_dir", "relative/path", "absolute"),
    ("data_dir", "NONEMPTY", "not an empty directory"),
])
def test_bad_input_exits_64_before_a_kernel_starts(sandbox, tmp_path, name, value, says):
    if value == "NONEMPTY":
        (tmp_path / "something").write_text("x")
        value = str(tmp_path)
    result = sandbox.run("read-replica", "-p", name, value)
    assert result.returncode == 64, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr

