"""The planned-change framework every maintenance runbook shares (checks/change.py): the gate
lets a change run only when every pre-check passed and the switches say so; inventory
commands are run with quoted values, timeouts and their last lines, or recorded; the change
record tells a reviewer what happened; an interrupted change names the phase it reached."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psycopg
import pytest

from fraiseql_rb.checks import backup, change
from fraiseql_rb.core import inventory, runbooks
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import FindingsLog, Status
from fraiseql_rb.runner import execute, interruption


def _ctx(tmp_path: Path, *, execute_: bool = False, confirm: str | None = None,
         **raw: object) -> RunContext:
    target = inventory.Target("prod", {"fraiseql_url": "http://127.0.0.1:9", **raw},
                              base_dir=tmp_path)
    return RunContext.adhoc("change-test", target=target, execute=execute_, confirm=confirm)


def _precheck(ctx: RunContext, name: str, status: Status) -> None:
    ctx.record(name, status, f"{name} is {status}")


# -- the gate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [Status.CRITICAL, Status.UNKNOWN])
def test_a_failed_or_unmeasured_precheck_stops_the_change(tmp_path, status):
    ctx = _ctx(tmp_path, execute_=True, confirm="prod")
    _precheck(ctx, "pre.backup", Status.OK)
    _precheck(ctx, "pre.dump", status)
    found = change.gate(ctx, ["pre.backup", "pre.dump"], dangerous=True)
    assert not change.allowed(ctx)
    assert found.evidence["blocking"][0]["check"] == "pre.dump"
    assert found.evidence["outcome"] == "refused"
    assert found.status is Status.WARNING  # the change asked for did not happen


def test_a_precheck_that_never_ran_is_not_a_pass(tmp_path):
    ctx = _ctx(tmp_path, execute_=True)
    _precheck(ctx, "pre.backup", Status.OK)
    change.gate(ctx, ["pre.backup", "pre.dump"])
    assert not change.allowed(ctx)
    assert ctx.latest("change.gate").evidence["blocking"][0]["status"] == "missing"


def test_warnings_and_infos_do_not_block(tmp_path):
    ctx = _ctx(tmp_path, execute_=True)
    _precheck(ctx, "pre.sla", Status.WARNING)
    _precheck(ctx, "pre.version", Status.INFO)
    change.gate(ctx, ["pre.sla", "pre.version"])
    assert change.allowed(ctx)


@pytest.mark.parametrize(("execute_", "confirm", "dangerous", "proceed", "outcome"), [
    (False, None, False, False, "dry-run"),
    (False, "prod", True, False, "dry-run"),
    (True, None, False, True, "applied"),
    (True, None, True, False, "dry-run"),
    (True, "staging", True, False, "dry-run"),
    (True, "prod", True, True, "applied"),
])
def test_the_switches_decide_whether_a_passing_change_runs(tmp_path, execute_, confirm,
                                                           dangerous, proceed, outcome):
    ctx = _ctx(tmp_path, execute_=execute_, confirm=confirm)
    _precheck(ctx, "pre.ok", Status.OK)
    change.gate(ctx, ["pre.ok"], dangerous=dangerous)
    assert change.allowed(ctx) is proceed
    assert change.gate_outcome(ctx) == outcome


def test_nothing_to_do_is_not_a_change(tmp_path):
    ctx = _ctx(tmp_path, execute_=True)
    _precheck(ctx, "pre.ok", Status.OK)
    found = change.gate(ctx, ["pre.ok"], needed=False, nothing_to_do="already on 2.14.1")
    assert not change.allowed(ctx) and "already on 2.14.1" in found.summary


# -- commands ---------------------------------------------------------------------------------

def _allow(ctx: RunContext) -> None:
    _precheck(ctx, "pre.ok", Status.OK)
    change.gate(ctx, ["pre.ok"])


def test_a_value_cannot_inject_shell(tmp_path):
    marker = tmp_path / "pwned"
    ctx = _ctx(tmp_path, execute_=True, upgrade_command="echo installing {version}")
    _allow(ctx)
    outcome = change.run_command(ctx, "upgrade_command", "upgrade",
                                 values={"version": f"2.14.1; touch {marker}"})
    assert outcome.ok and not marker.exists()
    assert outcome.output == (f"installing 2.14.1; touch {marker}",)


def test_a_failing_command_reports_its_exit_code_and_last_lines(tmp_path):
    ctx = _ctx(tmp_path, execute_=True,
               upgrade_command="sh -c 'echo pulling; echo boom >&2; exit 3'")
    _allow(ctx)
    outcome = change.run_command(ctx, "upgrade_command", "upgrade")
    assert (outcome.executed, outcome.returncode, outcome.ok) == (True, 3, False)
    assert outcome.output[-1] == "boom" and "exited 3" in outcome.describe()
    action = ctx.log.actions[-1].to_dict()
    assert action["executed"] and action["result"]["returncode"] == 3


def test_a_hanging_command_is_stopped_at_its_timeout(tmp_path):
    # a shell with a child: the child must not hold the run for 30 s
    ctx = _ctx(tmp_path, execute_=True, upgrade_command="echo started; sleep 30; echo done")
    _allow(ctx)
    outcome = change.run_command(ctx, "upgrade_command", "upgrade", timeout_s=0.5)
    assert outcome.timed_out and outcome.elapsed_s < 10
    assert "did not finish within 0.5 s" in outcome.describe()
    assert outcome.output == ("started",)


def test_without_the_gate_the_command_is_recorded_not_run(tmp_path):
    marker = tmp_path / "ran"
    ctx = _ctx(tmp_path, execute_=False, upgrade_command=f"touch {marker}")
    _precheck(ctx, "pre.ok", Status.OK)
    change.gate(ctx, ["pre.ok"])
    outcome = change.run_command(ctx, "upgrade_command", "upgrade")
    assert not outcome.executed and not marker.exists()
    assert ctx.log.actions[-1].to_dict()["executed"] is False


def test_a_missing_command_and_an_unknown_placeholder(tmp_path):
    ctx = _ctx(tmp_path, execute_=True, scale_command="scale {direction} {zone}")
    _allow(ctx)
    assert change.run_command(ctx, "upgrade_command", "upgrade").missing
    with pytest.raises(ValueError, match=r"scale_command .* \{direction\}"):
        change.run_command(ctx, "scale_command", "scale", values={"direction": "out"})


# -- the record and the phases ------------------------------------------------------------------

def test_the_change_record_names_phases_commands_and_outcome(tmp_path):
    ctx = _ctx(tmp_path, execute_=True, upgrade_command="true", rollback_command="true")
    change.phase(ctx, "pre-checks", "is it safe")
    _allow(ctx)
    change.phase(ctx, "change", "upgrade")
    change.run_command(ctx, "upgrade_command", "upgrade")
    change.phase(ctx, "rollback", "verification failed")
    change.run_command(ctx, "rollback_command", "rollback")
    found = change.record(ctx, "upgrade 2.14.1 → 2.15.0", {"target_version": "2.15.0"},
                          "rolled-back")
    assert found.check == "change.record" and found.status is Status.INFO
    assert found.evidence["phases"] == ["pre-checks", "change", "rollback"]
    assert found.evidence["executed_commands"] == 2
    assert found.evidence["outcome"] == "rolled-back"
    assert list(found.table["action"]) == ["upgrade", "rollback"]
    with pytest.raises(ValueError):
        change.phase(ctx, "celebration", "no such phase")


def test_an_interrupted_change_says_which_phase_it_reached(tmp_path):
    path = tmp_path / "findings.json"
    log = FindingsLog("patch-upgrade", "prod", path=path)
    ctx = RunContext(runbook="patch-upgrade", target_name="prod", log=log)
    change.phase(ctx, "pre-checks", "is it safe")
    change.phase(ctx, "change", "upgrade_command")
    stop = interruption.Guard(signum=signal.SIGINT, at="2026-12-07T21:00:00Z")
    data = execute._finalise(path, None, stop)
    last = data["findings"][-1]
    assert last["check"] == "run.interrupted"
    assert "change phase" in last["summary"] and last["evidence"]["phase"] == "change"
    assert json.loads(path.read_text())["findings"][-1]["evidence"]["phase"] == "change"


# -- parameter formats --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [("2.14.1", "2.14.1"), ("v2.9", "2.9"),
                                             ("main", "main"), ("2.15.0-rc.1", "2.15.0-rc.1")])
def test_release_versions(text, value):
    assert runbooks.release_version(text) == value


@pytest.mark.parametrize("text", ["banana", "2", "latest", "2.x", ""])
def test_not_release_versions(text):
    with pytest.raises(UsageError):
        runbooks.release_version(text)


def test_new_directories(tmp_path):
    assert runbooks.new_directory(str(tmp_path / "new")) == tmp_path / "new"
    assert runbooks.new_directory(str(tmp_path)) == tmp_path  # empty: fine
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "PG_VERSION").write_text("15")
    for bad in ("relative/dir", str(tmp_path / "old"), str(tmp_path / "no" / "parent")):
        with pytest.raises(UsageError):
            runbooks.new_directory(bad)


# -- the fresh dump ---------------------------------------------------------------------------

def test_the_fresh_dump_is_real_and_keeps_the_password_out(make_cluster, ctx_for, tmp_path,
                                                            pg_passwords):
    cluster = make_cluster(provision=True, audit_events=50)
    backups = tmp_path / "backups"
    backups.mkdir()
    dry = ctx_for(cluster, runbook="patch-upgrade", backup_dir=str(backups))
    assert backup.take_fresh_dump(dry, "before the upgrade").evidence["taken"] is False
    assert not list(backups.iterdir())  # a dry run writes nothing

    ctx = ctx_for(cluster, runbook="patch-upgrade", backup_dir=str(backups))
    ctx.execute = True
    found = backup.take_fresh_dump(ctx, "before the upgrade")
    assert found.status is Status.OK, found.summary
    dump = Path(found.evidence["path"])
    assert dump.read_bytes()[:5] == b"PGDMP"
    assert found.evidence["sha256"] == backup.sha256_of(dump)
    text = json.dumps(ctx.log.to_dict())
    assert pg_passwords.superuser not in text and pg_passwords.app not in text

    cluster.stop()
    failed = backup.take_fresh_dump(ctx, "before the upgrade")
    assert failed.status is Status.CRITICAL and "the change stops here" in failed.summary
    assert sorted(p.name for p in backups.iterdir()) == [dump.name]  # no half dump left


def test_split_password_keeps_everything_else():
    url, password = backup.split_password("postgresql://u:s3cret@db:5433/app?sslmode=require")
    assert password == "s3cret" and "s3cret" not in url
    assert psycopg.conninfo.conninfo_to_dict(url) == {"user": "u", "host": "db", "port": "5433",
                                                      "dbname": "app", "sslmode": "require"}
