"""scale-out (runbook §6.1): the decision's pure parts, the inventory copy, and drills on the
live sandbox: a dry run starts nothing; a confirmed scale out adds an instance that passes
deployment-verification's checks, registered in an inventory copy, and `direction in`
removes it again (by pid); pools that would not fit max_connections are refused with nothing
started; an instance that never gets healthy is removed again (rollback); bad input exits 64.

The sandbox tests share the session sandbox and leave it as they found it (no extra
instance, no inventory copy, no held connection).
"""

from __future__ import annotations

import os
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from drill_helpers import by_check, findings_of

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.maintenance import scale_out as so
from fraiseql_rb.sandbox import instances, manager, processes
from fraiseql_rb.sandbox.state import Sandbox

# -- the decision ---------------------------------------------------------------------------


def _reading(signal: str, value: float | None, limit: float = 0.7) -> so.Reading:
    return so.Reading(signal, value, limit, "test" if value is not None else "", "why")


def test_a_trigger_fires_above_its_line_and_an_unmeasured_one_is_never_fine():
    assert so.judge_trigger(_reading("cpu", 0.71))[0] is Status.WARNING
    assert so.judge_trigger(_reading("cpu", 0.70))[0] is Status.OK
    status, summary = so.judge_trigger(_reading("memory", None))
    assert status is Status.INFO and "not measured" in summary
    assert "2 s" in so.judge_trigger(_reading("latency_p95", 2.5, 2.0))[1]


@pytest.mark.parametrize(("direction", "fired", "confirm"), [
    ("out", True, False),  # a trigger fires: execute suffices
    ("out", False, True),  # none fires: the operator's call, with confirm
    ("in", False, False),  # quiet: execute suffices
    ("in", True, True),  # removing capacity the triggers ask for: confirm
])
def test_when_execute_needs_confirm(direction, fired, confirm):
    found = [_reading("cpu", 0.9 if fired else 0.1), _reading("disk", None)]
    decision = so.decide(found, direction)
    assert decision["needs_confirm"] is confirm
    assert decision["recommended"] is fired
    assert decision["unmeasured"] == ["disk"]


def test_the_connection_budget_counts_reserved_slots_and_other_clients():
    fits = so.connection_budget(100, 3, 2, [10], added=[10])
    assert fits["fits"] and fits["available"] == 95 and fits["status"] == "ok"
    full = so.connection_budget(100, 3, 80, [10], added=[10])
    assert not full["fits"] and full["status"] == "critical"
    tight = so.connection_budget(100, 3, 10, [35, 35], added=[5])
    assert tight["fits"] and tight["status"] == "warning"  # 75 of 87: above 80 %
    assert so.connection_budget(100, 3, 0, [10, 10], removed=[10])["pools_after"] == 10
    assert so.connection_budget(10, 3, 20, [1])["share_after"] is None


def test_which_instance_scale_in_removes():
    listed = ["https://a:1", "https://b:2", "https://c:3"]
    assert so.removal_candidate(listed, "https://a:1/", None) == ("https://c:3", None)
    assert so.removal_candidate(["https://a:1"], "https://a:1", None) == (None, None)
    assert so.removal_candidate(listed, "https://a:1", "https://b:2/") == ("https://b:2", None)
    url, why = so.removal_candidate(listed, "https://a:1", "https://a:1")
    assert url is None and "never removes" in why
    url, why = so.removal_candidate(listed, "https://a:1", "https://z:9")
    assert url is None and "not one of" in why


def test_the_new_instance_url_is_the_last_url_line_of_the_output():
    assert so.instance_url(["starting", "https://10.0.0.7:8000/", "done"]) == \
        "https://10.0.0.7:8000"
    assert so.instance_url(["http://a:1", "see http://b:2 for more", "http://c:3"]) == \
        "http://c:3"
    assert so.instance_url(["started, pid 42"]) is None
    assert so.backend_name("https://10.0.0.7:8000") == "fraiseql-10-0-0-7-8000"


# -- the inventory copy -----------------------------------------------------------------------

INVENTORY = """# production
[targets.prod]
fraiseql_url = "https://a:1"  # the primary
instances = [
    "https://a:1",  # first
    "https://b:2",
]
database_url = "postgresql://app@db/app"

[targets.other]
fraiseql_url = "https://x:1"
instances = ["https://x:1"]
"""


def test_instances_are_replaced_in_place_and_nothing_else_changes():
    text = so.with_instances(INVENTORY, "prod", ["https://a:1", "https://b:2", "https://c:3"])
    data = tomllib.loads(text)
    assert data["targets"]["prod"]["instances"] == ["https://a:1", "https://b:2",
                                                    "https://c:3"]
    assert data["targets"]["other"]["instances"] == ["https://x:1"]
    assert "# production" in text and "# the primary" in text
    assert text.count("instances =") == 2


def test_instances_are_added_under_the_table_when_absent():
    source = '[targets."prod"]\nfraiseql_url = "https://a:1"\n[targets.next]\nx = 1\n'
    data = tomllib.loads(so.with_instances(source, "prod", ["https://a:1", "https://n:2"]))
    assert data["targets"]["prod"]["instances"] == ["https://a:1", "https://n:2"]
    assert "instances" not in data["targets"]["next"]


def test_a_layout_that_cannot_be_edited_is_refused():
    with pytest.raises(ValueError):
        so.with_instances("targets.prod.fraiseql_url = 'https://a:1'\n", "prod", ["x"])
    with pytest.raises(ValueError):  # dotted keys inside the table: not a plain edit
        so.with_instances('[targets]\nprod.fraiseql_url = "https://a:1"\n', "prod", ["x"])


def test_the_copy_goes_beside_the_inventory_and_never_over_a_copy(tmp_path):
    original = tmp_path / "inventory.toml"
    moment = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    first = so.copy_path(original, moment)
    assert first.name == "inventory.toml.scaled-20261201T100000Z.toml"
    first.write_text("x")
    assert so.copy_path(original, moment).name == "inventory.toml.scaled-20261201T100000Z-2.toml"
    # a copy of a copy is named after the original
    assert so.copy_path(first, moment).name.startswith("inventory.toml.scaled-")


# -- drills on the live sandbox ---------------------------------------------------------------


def _stand_ins(root: Path) -> set[int]:
    """Pids of every stand-in server of this sandbox (the primary and extra instances)."""
    found = set()
    marker = str(Sandbox.open(root).server_dir)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and processes.alive(int(entry), marker):
            found.add(int(entry))
    return found


def _copies(root: Path) -> list[Path]:
    return sorted(root.glob("inventory.toml.scaled-*"))


@pytest.fixture
def sandbox_as_found(healthy_sandbox):
    """The sandbox with no extra instance and no inventory copy, before and after."""
    sb = Sandbox.open(healthy_sandbox.root)
    assert instances.listed(sb) == []
    yield healthy_sandbox
    sb = Sandbox.open(healthy_sandbox.root)
    instances.stop_all(sb)
    for path in _copies(healthy_sandbox.root):
        path.unlink()


def _steps(ctx: RunContext, direction: str = "out", *, instance: str | None = None,
           health_wait_s: float = 5, triggers: bool = True) -> str:
    """The notebook's calls in order, in this process; the change record's outcome."""
    table = so.instance_table(ctx)
    so.check_fleet(ctx, table)
    if triggers:
        so.check_triggers(ctx, table, sample_interval_s=0.5)
        so.check_decision(ctx, direction)
    so.check_removal(ctx, direction, instance)
    so.check_capacity(ctx, table, direction)
    so.authorize(ctx, direction)
    so.make_change(ctx, direction, health_wait_s=health_wait_s)
    so.verify(ctx, direction)
    so.rollback(ctx, direction)
    so.register(ctx, direction)
    return so.change_record(ctx, direction).evidence["outcome"]


def _ctx(sandbox, *, execute: bool = False, confirm: str | None = None,
         **keys: str) -> RunContext:
    target = inventory.load_target("sandbox", sandbox.inventory)
    if keys:
        target = inventory.Target(target.name, {**target.raw, **keys}, target.base_dir)
    ctx = RunContext.adhoc("scale-out", target, execute=execute, confirm=confirm)
    ctx.inventory_path = str(sandbox.inventory)
    return ctx


def test_a_dry_run_starts_nothing_and_records_every_step(sandbox_as_found):
    root = sandbox_as_found.root
    before = (_stand_ins(root), (root / "sandbox.json").read_bytes())
    ctx = _ctx(sandbox_as_found)
    assert _steps(ctx) == "dry-run"
    assert (_stand_ins(root), (root / "sandbox.json").read_bytes()) == before
    assert _copies(root) == []
    assert ctx.log.actions and not any(a.executed for a in ctx.log.actions)
    assert {a.action for a in ctx.log.actions} == {"scale_out", "register_inventory",
                                                   "load_balancer"}
    triggers = [ctx.latest(f"scale.{s}") for s in so.SIGNALS]
    assert all(f is not None and f.status in (Status.OK, Status.INFO) for f in triggers)
    assert ctx.latest("scale.capacity").status is Status.OK
    assert ctx.status in (Status.OK, Status.INFO)


def test_scale_out_adds_a_verified_instance_and_scale_in_removes_it(sandbox_as_found):
    root = sandbox_as_found.root
    before = _stand_ins(root)
    result = sandbox_as_found.run("scale-out", "-p", "execute", "true", "-p", "confirm",
                                  "sandbox", "-p", "sample_interval_s", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    checks = by_check(findings_of(result))
    url = checks["scale.change"]["evidence"]["instance"]
    assert checks["scale.change"]["status"] == "ok"
    # deployment-verification's checks over the new fleet
    assert checks["deploy.instances"]["evidence"]["instances"] == 2
    assert checks["deploy.consistency"]["status"] == "ok"
    assert len(checks["deploy.consistency"]["evidence"]["schema_hashes"]) == 1
    assert checks["database.pool_capacity"]["status"] == "ok"
    assert checks["change.record"]["evidence"]["outcome"] == "applied"
    copy = Path(checks["scale.register"]["evidence"]["inventory_copy"])
    assert copy.parent == root and copy.is_file()
    sb = Sandbox.open(root)
    assert tomllib.loads(copy.read_text())["targets"]["sandbox"]["instances"] == [
        sb.server_url, url]
    assert "instances" not in tomllib.loads(sandbox_as_found.inventory.read_text())[
        "targets"]["sandbox"]  # the original is never written
    lb = [a for a in findings_of(result)["actions"] if a["action"] == "load_balancer"]
    assert lb and not lb[0]["executed"] and url in lb[0]["command"]
    [entry] = instances.listed(sb)
    assert entry["url"] == url and instances.alive(entry)
    assert _stand_ins(root) == before | {entry["pid"]}

    result = sandbox_as_found.run("scale-out", "--inventory", str(copy), "-p", "direction",
                                  "in", "-p", "execute", "true", "-p", "sample_interval_s", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    checks = by_check(findings_of(result))
    assert checks["scale.removal"]["evidence"]["remove"] == url
    assert checks["scale.removed"]["status"] == "ok"
    assert checks["change.record"]["evidence"]["outcome"] == "applied"
    assert not processes.alive(entry["pid"], entry["config"])
    assert instances.listed(Sandbox.open(root)) == []
    assert _stand_ins(root) == before
    actions = [a["action"] for a in findings_of(result)["actions"]]
    assert actions.index("load_balancer") < actions.index("scale_in")  # out of rotation first


def test_pools_that_would_not_fit_max_connections_are_refused(sandbox_as_found):
    """Other clients hold all but a few of PostgreSQL's slots: the new instance's pool would
    not fit, so nothing starts (exit 2)."""
    root = sandbox_as_found.root
    sb = Sandbox.open(root)
    before = _stand_ins(root)
    with sb.cluster.connect() as conn:
        limit, reserved, used = conn.execute(
            "SELECT current_setting('max_connections')::int, "
            "current_setting('superuser_reserved_connections')::int, "
            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    held = []
    try:
        for _ in range(limit - reserved - used - 5):  # 5 slots stay free for the pool
            held.append(psycopg.connect(**sb.cluster.superuser_conninfo("postgres"),
                                        application_name="scale-out-test-hold"))
        result = sandbox_as_found.run("scale-out", "-p", "execute", "true", "-p", "confirm",
                                      "sandbox", "-p", "sample_interval_s", "1")
    finally:
        for conn in held:
            conn.close()
    assert result.returncode == 2, result.stderr[-3000:]
    data = findings_of(result)
    checks = by_check(data)
    assert checks["scale.capacity"]["status"] == "critical"
    assert not checks["scale.capacity"]["evidence"]["fits"]
    assert checks["change.gate"]["evidence"]["outcome"] == "refused"
    assert checks["change.record"]["evidence"]["outcome"] == "refused"
    assert not any(a["executed"] for a in data["actions"])
    assert _stand_ins(root) == before and instances.listed(Sandbox.open(root)) == []


def _fake_scale_command(tmp_path: Path, out_lines: str, exit_code: int = 0) -> tuple[str, Path]:
    """A scale_command that prints `out_lines` for `out` and logs `in URL` calls."""
    log = tmp_path / "calls.log"
    script = tmp_path / "scale.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                      f"if [ \"$1\" = out ]; then printf '{out_lines}'; exit {exit_code}; fi\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{script} {{direction}} {{instance}}", log


def test_a_new_instance_that_never_gets_healthy_is_removed_again(sandbox_as_found, tmp_path):
    command, log = _fake_scale_command(tmp_path, "starting\\nhttps://127.0.0.1:9\\n")
    ctx = _ctx(sandbox_as_found, execute=True, confirm="sandbox", scale_command=command)
    assert _steps(ctx, health_wait_s=1, triggers=False) == "rolled-back"
    assert ctx.latest("scale.change").status is Status.CRITICAL
    assert ctx.latest("scale.rollback").evidence["rolled_back"] is True
    assert [ln.strip() for ln in log.read_text().splitlines()] == ["out", "in https://127.0.0.1:9"]
    phases = [f.evidence["phase"] for f in ctx.log.findings if f.check == "change.phase"]
    assert phases == ["pre-checks", "change", "rollback"]
    assert _copies(sandbox_as_found.root) == []


@pytest.mark.parametrize(("lines", "code", "meant"), [
    ("started, but where?\\n", 0, "printed no instance URL"),
    ("no capacity in the zone\\n", 3, "exited 3"),
])
def test_a_failing_scale_command_stops_the_change(sandbox_as_found, tmp_path, lines, code,
                                                  meant):
    command, log = _fake_scale_command(tmp_path, lines, code)
    ctx = _ctx(sandbox_as_found, execute=True, confirm="sandbox", scale_command=command)
    assert _steps(ctx, triggers=False) == "failed"
    found = ctx.latest("scale.change")
    assert found.status is Status.CRITICAL and meant in found.summary
    assert ctx.latest("scale.verify").evidence.get("skipped")
    assert ctx.latest("scale.register").evidence.get("skipped")
    assert [ln.strip() for ln in log.read_text().splitlines()] == ["out"]  # nothing to undo


def test_scale_in_never_removes_fraiseql_url(sandbox_as_found):
    ctx = _ctx(sandbox_as_found, execute=True)
    target = ctx.target
    assert _steps(ctx, "in", instance=target.fraiseql_url, triggers=False) == "refused"
    assert ctx.latest("scale.removal").status is Status.CRITICAL
    assert not any(a.executed for a in ctx.log.actions)
    with pytest.raises(Exception, match="never removes"):
        instances.remove(Sandbox.open(sandbox_as_found.root), target.fraiseql_url)


def test_sandbox_down_stops_and_status_lists_the_extra_instances(sandbox_as_found):
    sb = Sandbox.open(sandbox_as_found.root)
    url = instances.add(sb)
    [entry] = instances.listed(Sandbox.open(sb.root))
    assert url in manager.status(sb.root).components["instances"]
    instances.stop_all(Sandbox.open(sb.root))  # what `sandbox down` calls first
    assert not processes.alive(entry["pid"], entry["config"])
    assert not Path(entry["config"]).exists()
    assert "none" in manager.status(sb.root).components["instances"]


def test_bad_direction_exits_64_before_a_kernel_starts(sandbox):
    result = sandbox.run("scale-out", "-p", "direction", "sideways")
    assert result.returncode == 64
    assert "direction" in result.stderr and "Traceback" not in result.stderr

