"""The failover playbook (§5.2) on the live sandbox: a healthy primary is never failed over,
the gates and the switches hold, a confirmed failover really promotes and serves, and the
primary-down heal puts the sandbox back as `sandbox up` left it.

The tests share the session sandbox and run in this order (one xdist group): each leaves it
healthy, healing in `finally`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from drill_helpers import by_check, diagnosis_of, findings_of

from fraiseql_rb.dr import failover
from fraiseql_rb.sandbox import replica as pgreplica
from fraiseql_rb.sandbox.state import Sandbox


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _layout(root) -> dict:
    """What must not change: the config's bytes, which node is a primary, who streams."""
    sb = Sandbox.open(root)
    state: dict = {"config": _sha(sb.server_config),
                   "backups": [p.name for p in pgreplica.config_backups(sb)],
                   "primary_running": sb.cluster.is_running()}
    with pgreplica.node(sb).connect() as conn:
        state["replica_in_recovery"] = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    if state["primary_running"]:
        with sb.cluster.connect() as conn:
            state["primary_in_recovery"] = conn.execute(
                "SELECT pg_is_in_recovery()").fetchone()[0]
            row = conn.execute("SELECT state FROM pg_stat_replication WHERE application_name "
                               "= %s", (pgreplica.APPLICATION_NAME,)).fetchone()
            state["replica_streams"] = bool(row) and row[0] == "streaming"
    return state


def _streaming(root) -> None:
    """A test's baseline is taken once the replica streams: a fault healed just before (an
    earlier module's replica-lag) may still be reconnecting."""
    pgreplica.wait_streaming(Sandbox.open(root))


def _executed(data: dict) -> list[dict]:
    return [a for a in data["actions"] if a["executed"]]


def test_a_healthy_primary_is_never_failed_over_even_when_confirmed(healthy_sandbox):
    _streaming(healthy_sandbox.root)
    before = _layout(healthy_sandbox.root)
    result = healthy_sandbox.run("failover", "--incident-id", "FO-1",
                                 "-p", "execute", "true", "-p", "confirm", "sandbox")
    assert result.returncode in (0, 1), result.stderr[-2000:]
    data = findings_of(result)
    assert diagnosis_of(data)["evidence"]["root_cause"] == "none"
    checks = by_check(data)
    assert checks["failover.primary"]["status"] == "ok"
    assert checks["failover.authorization"]["evidence"]["applies"] is False
    assert data["actions"] == []
    assert _layout(healthy_sandbox.root) == before


def test_a_down_service_over_a_live_primary_is_refused_not_failed_over(healthy_sandbox):
    """/health gives no answer (the server is down), the script of §5.2 would promote; the
    primary still answers, so promoting would make two primaries: refused."""
    _streaming(healthy_sandbox.root)
    healthy_sandbox.fault("server-down")
    try:
        before = _layout(healthy_sandbox.root)
        result = healthy_sandbox.run("failover", "--incident-id", "FO-1b",
                                     "-p", "execute", "true", "-p", "confirm", "sandbox")
        data = findings_of(result)
        assert diagnosis_of(data)["evidence"]["root_cause"] == "primary_reachable_refused"
        assert by_check(data)["service.health"]["status"] == "critical"
        assert data["actions"] == []
        assert _layout(healthy_sandbox.root) == before
    finally:
        healthy_sandbox.heal("server-down")


def test_primary_down_dry_run_passes_the_gates_and_changes_nothing(healthy_sandbox):
    _streaming(healthy_sandbox.root)
    healthy_sandbox.fault("primary-down")
    try:
        before = _layout(healthy_sandbox.root)
        assert before["primary_running"] is False and before["replica_in_recovery"] is True
        result = healthy_sandbox.run("failover", "--incident-id", "FO-2")
        assert result.returncode == 2, result.stderr[-2000:]
        data = findings_of(result)
        diagnosis = diagnosis_of(data)
        assert diagnosis["evidence"]["root_cause"] == "primary_down_replica_fit"
        checks = by_check(data)
        assert checks["service.health"]["status"] == "critical"
        primary = checks["failover.primary"]
        assert primary["status"] == "critical" and primary["evidence"]["answers"] is False
        assert primary["evidence"]["last_known"]["clean_shutdown"] is True
        replica = checks["failover.replica"]
        assert replica["status"] == "ok" and replica["evidence"]["fit"] is True
        assert replica["evidence"]["lag_bytes"] == 0
        assert replica["evidence"]["timeline"] == replica["evidence"]["primary_timeline"]
        actions = {a["action"]: a for a in data["actions"]}
        assert set(actions) == {"promote_replica", "switch_connection_string",
                                "restart_service", "write_check"}
        assert _executed(data) == []
        assert "pg_promote(wait => true" in actions["promote_replica"]["command"]
        assert _layout(healthy_sandbox.root) == before
    finally:
        healthy_sandbox.heal("primary-down")
    after = _layout(healthy_sandbox.root)
    assert after["primary_running"] and after["replica_streams"]


def test_a_confirm_that_is_not_the_target_name_runs_nothing(healthy_sandbox):
    _streaming(healthy_sandbox.root)
    healthy_sandbox.fault("primary-down")
    try:
        before = _layout(healthy_sandbox.root)
        result = healthy_sandbox.run("failover", "--incident-id", "FO-3",
                                     "-p", "execute", "true", "-p", "confirm", "prod")
        data = findings_of(result)
        gate = by_check(data)["failover.authorization"]
        assert gate["status"] == "warning"
        assert "not the target's name 'sandbox'" in gate["summary"], gate["summary"]
        assert _executed(data) == []
        assert {a["action"] for a in data["actions"]} >= {"promote_replica", "restart_service"}
        assert _layout(healthy_sandbox.root) == before
    finally:
        healthy_sandbox.heal("primary-down")


def test_a_confirmed_failover_promotes_serves_and_heals_back(healthy_sandbox):
    root = healthy_sandbox.root
    _streaming(root)
    before = _layout(root)
    _streaming(healthy_sandbox.root)
    healthy_sandbox.fault("primary-down")
    try:
        result = healthy_sandbox.run("failover", "--incident-id", "FO-4",
                                     "-p", "execute", "true", "-p", "confirm", "sandbox")
        data = findings_of(result)
        assert diagnosis_of(data)["evidence"]["root_cause"] == "primary_down_promoted", \
            [(f["check"], f["status"], f["summary"]) for f in data["findings"]]
        assert result.returncode == 1, result.stderr[-2000:]
        checks = by_check(data)
        assert checks["failover.promote"]["evidence"]["promoted"] is True
        assert checks["service.restart"]["evidence"]["healthy"] is True
        assert checks["graphql.data_path"]["status"] == "ok"
        write = checks["failover.write_check"]
        assert write["status"] == "ok" and write["evidence"]["read_back"] is True
        assert write["evidence"]["role"] == "fraiseql_user"
        switched = checks["failover.switch_config"]["evidence"]
        assert [c["key"] for c in switched["changes"]] == ["database_url"]
        executed = {a["action"] for a in _executed(data)}
        assert executed == {"promote_replica", "switch_connection_string", "restart_service",
                            "write_check"}
        assert all("confirmed_by" in a for a in _executed(data))
        during = _layout(root)
        assert during["replica_in_recovery"] is False
        assert during["config"] != before["config"] and len(during["backups"]) == 1
        sb = Sandbox.open(root)
        replica_port = str(pgreplica.node(sb).port)
        assert f"127.0.0.1:{replica_port}/" in sb.server_config.read_text()
        artifact = Path(result.stdout.strip().splitlines()[-1])
        shown = result.stdout + result.stderr + "".join(
            f.read_text(errors="replace") for f in artifact.iterdir() if f.is_file())
        for name in ("database_password", "superuser_password"):
            assert (root / "secrets" / name).read_text().strip() not in shown, name
    finally:
        healthy_sandbox.heal("primary-down")
    after = _layout(root)
    assert after == before | {"replica_streams": True}, (before, after)
    again = healthy_sandbox.run("failover", "--incident-id", "FO-4b")
    assert diagnosis_of(findings_of(again))["evidence"]["root_cause"] == "none"


def test_a_replica_behind_is_never_promoted(healthy_sandbox):
    _streaming(healthy_sandbox.root)
    healthy_sandbox.fault("replica-lag")
    try:
        time.sleep(3)  # the drill's writer commits a row a second the replica does not replay
        healthy_sandbox.fault("primary-down")
        result = healthy_sandbox.run("failover", "--incident-id", "FO-5",
                                     "-p", "execute", "true", "-p", "confirm", "sandbox",
                                     "-p", "maximum_lag_bytes", "1")
        data = findings_of(result)
        assert diagnosis_of(data)["evidence"]["root_cause"] == "primary_down_replica_unfit", \
            [(f["check"], f["status"], f["summary"]) for f in data["findings"]]
        assert result.returncode == 2
        replica = by_check(data)["failover.replica"]
        assert replica["evidence"]["fit"] is False
        assert replica["evidence"]["lag_bytes"] > 1
        assert any("more than maximum_lag_bytes" in r for r in replica["evidence"]["reasons"])
        assert _executed(data) == []
        assert _layout(healthy_sandbox.root)["replica_in_recovery"] is True
    finally:
        for name in ("primary-down", "replica-lag"):
            healthy_sandbox.heal(name)


def test_a_bad_maximum_lag_exits_64_before_a_kernel(sandbox):
    result = sandbox.run("failover", "-p", "maximum_lag_bytes", "0")
    assert result.returncode == 64
    assert "maximum_lag_bytes" in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ('database_url = "postgresql://app@10.0.0.1:5432/fraiseql?sslmode=require"\n',
     'database_url = "postgresql://app@10.0.0.2:6432/fraiseql?sslmode=require"\n'),
    ('[database]\nurl = "postgres://app@10.0.0.1/fraiseql"  # primary\n',
     '[database]\nurl = "postgres://app@10.0.0.2:6432/fraiseql"  # primary\n'),
    ('database_url = "postgresql://app@10.0.0.9:5432/fraiseql"\n', None),
    ('database_url = "${DATABASE_URL}"\n', None),
])
def test_the_rewrite_touches_only_connection_strings_to_the_primary(text, expected):
    new, changes = failover.rewrite_config(text, ("10.0.0.1", 5432), ("10.0.0.2", 6432))
    assert new == (expected or text)
    assert bool(changes) == (expected is not None)


def test_the_sandbox_restores_the_backup_the_failover_leaves():
    assert failover.CONFIG_BACKUP_SUFFIX == pgreplica.CONFIG_BACKUP_SUFFIX
