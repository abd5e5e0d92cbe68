"""Drills for the service-down and database-unavailable playbooks: inject a real fault into the
sandbox, run the playbook through the CLI with an incident id, assert the diagnosis; a healthy
sandbox raises no false alarm; and a dry run (execute=False) changes nothing. At the end,
service-down's parsing and diagnosis on states the sandbox has no fault for."""

from __future__ import annotations

import ssl
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from drill_helpers import by_check, diagnosis_of, findings_of

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.diagnosis import conclude
from fraiseql_rb.core.findings import FindingsLog, Status
from fraiseql_rb.incidents import service_down
from fraiseql_rb.sandbox import manager, server
from fraiseql_rb.sandbox import replica as pgreplica
from fraiseql_rb.sandbox.cluster import free_port
from fraiseql_rb.targets import commands

drill = pytest.mark.drill


def inventory_value(sandbox, key: str) -> Any:
    return tomllib.loads(sandbox.inventory.read_text())["targets"]["sandbox"][key]


def snapshot(sandbox) -> dict[str, Any]:
    """What a dry run must leave exactly as it was: processes and the sandbox's files."""
    sb = manager.Sandbox.open(sandbox.root)
    config = sb.server_config
    return {"server_pid_recorded": sb.state.get("server_pid"),
            "server_pid_alive": server.pid(sb),
            "postmaster_pid": sb.cluster.pid(),
            "postgres_running": sb.cluster.is_running(),
            "faults": sb.faults(),
            "config": (config.read_bytes(), config.stat().st_mtime_ns)}


def health_of(sandbox) -> httpx.Response:
    verify = ssl.create_default_context(cafile=inventory_value(sandbox, "ca_bundle"))
    return httpx.get(f"{inventory_value(sandbox, 'fraiseql_url')}/health", timeout=5,
                     verify=verify)


# -- database-unavailable -------------------------------------------------------------------

@drill
def test_database_unavailable_on_a_healthy_sandbox_is_none(healthy_sandbox):
    result = healthy_sandbox.run("database-unavailable", "--incident-id", "DRILL-dbu-ok")
    assert result.returncode == 0, result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-dbu-ok"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "none"
    assert data["actions"] == []


@drill
def test_db_down_is_server_down(healthy_sandbox):
    healthy_sandbox.fault("db-down")
    try:
        result = healthy_sandbox.run("database-unavailable", "--incident-id", "DRILL-dbu-down")
    finally:
        healthy_sandbox.heal("db-down")
    assert result.returncode == 2, result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-dbu-down"
    diagnosis = diagnosis_of(data)
    assert diagnosis["status"] == "critical"
    assert diagnosis["evidence"]["root_cause"] == "server_down"
    checks = by_check(data)
    assert checks["database.connection"]["evidence"]["tcp"] == "refused"
    assert checks["manual.page_database_team"]["status"] == "info"
    # the sandbox's replica is a caught-up standby: failover is recommended, never run here
    actions = {a["action"]: a for a in data["actions"]}
    assert set(actions) == {"promote_replica", "switch_connection_string"}, [
        (f["check"], f["status"], f["summary"]) for f in data["findings"]]
    assert not any(a["executed"] for a in data["actions"])
    replica = pgreplica.node(manager.Sandbox.open(healthy_sandbox.root))
    assert f":{replica.port}/" in actions["promote_replica"]["command"]
    assert "pg_promote()" in actions["promote_replica"]["command"]
    assert "fraiseql_user" not in actions["promote_replica"]["command"]  # needs a superuser


# -- service-down ---------------------------------------------------------------------------

@drill
def test_service_down_on_a_healthy_sandbox_is_none(healthy_sandbox):
    result = healthy_sandbox.run("service-down", "--incident-id", "DRILL-sd-ok")
    assert result.returncode == 0, result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-sd-ok"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "none"
    assert by_check(data)["service.process"]["evidence"]["state"] == "running"
    assert data["actions"] == []  # a healthy service is never restarted


@drill
def test_server_down_dry_run_is_process_down_with_the_restart_recorded(healthy_sandbox):
    healthy_sandbox.fault("server-down")
    try:
        result = healthy_sandbox.run("service-down", "--incident-id", "DRILL-sd-down")
    finally:
        healthy_sandbox.heal("server-down")
    assert result.returncode == 2, result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-sd-down"
    assert data["parameters"]["execute"] is False
    assert diagnosis_of(data)["evidence"]["root_cause"] == "process_down"
    checks = by_check(data)
    assert checks["service.process"]["evidence"]["state"] == "stopped"
    assert checks["database.reachable"]["status"] == "ok"  # still down: step 6 ran
    assert data["actions"] == [{
        "action": "restart_service", "command": inventory_value(healthy_sandbox,
                                                                "restart_command"),
        "executed": False, "at": data["actions"][0]["at"], "result": None,
        "confirmed_by": None}]


@drill
def test_a_dry_run_changes_nothing(healthy_sandbox):
    healthy_sandbox.fault("server-down")
    try:
        before = snapshot(healthy_sandbox)
        assert before["server_pid_alive"] is None  # the fault is in place
        result = healthy_sandbox.run("service-down", "--incident-id", "DRILL-sd-dry",
                                     "-p", "execute", "false")
        after = snapshot(healthy_sandbox)
    finally:
        healthy_sandbox.heal("server-down")
    assert result.returncode == 2, result.stdout + result.stderr
    assert after == before
    assert [a["executed"] for a in findings_of(result)["actions"]] == [False]


@drill
def test_server_down_with_execute_recovers_after_restart(healthy_sandbox):
    healthy_sandbox.fault("server-down")
    try:
        result = healthy_sandbox.run("service-down", "--incident-id", "DRILL-sd-exec",
                                     "-p", "execute", "true", "-p", "restart_wait_s", "20")
        data = findings_of(result)
        assert data["incident_id"] == "DRILL-sd-exec"
        assert diagnosis_of(data)["evidence"]["root_cause"] == "recovered_after_restart", \
            result.stdout + result.stderr
        [action] = data["actions"]
        assert action["executed"] is True and action["result"]["returncode"] == 0
        assert action["command"] == inventory_value(healthy_sandbox, "restart_command")
        assert by_check(data)["service.restart"]["evidence"]["healthy"] is True
        # the run's status is the state after the restart: what was wrong stays in the
        # timeline, resolved by the restart, and the run is a warning (watch it), not critical
        health = next(f for f in data["findings"] if f["check"] == "service.health")
        assert health["status"] == "critical"
        assert health["resolved_by"].startswith("service.restart at ")
        assert data["status"] == "warning" and result.returncode == 1, result.stdout
        assert action["confirmed_by"].endswith("(execute=True)")
        response = health_of(healthy_sandbox)
        assert response.status_code == 200 and response.json()["status"] == "healthy"
        running = snapshot(healthy_sandbox)["server_pid_alive"]
        assert running is not None
    finally:
        healthy_sandbox.heal("server-down")
    assert snapshot(healthy_sandbox)["server_pid_alive"] == running  # heal was a no-op


@drill
def test_db_down_is_database_unreachable_without_a_restart(healthy_sandbox):
    healthy_sandbox.fault("db-down")
    try:
        result = healthy_sandbox.run("service-down", "--incident-id", "DRILL-sd-db",
                                     "-p", "execute", "true")
    finally:
        healthy_sandbox.heal("db-down")
    assert result.returncode == 2, result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-sd-db"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "database_unreachable"
    checks = by_check(data)
    assert checks["service.health"]["evidence"]["database_connected"] is False
    assert checks["database.reachable"]["status"] == "critical"
    # the server answers: restarting it would not bring the database back, even with execute
    assert checks["service.restart"]["evidence"]["needed"] is False
    assert data["actions"] == []


# -- service-down's logic on states the sandbox cannot produce -------------------------------

@pytest.mark.parametrize(("output", "code", "state", "source"), [
    ("● fraiseql.service\n     Active: active (running) since Mon\n   Main PID: 4242 (fraiseql)",
     0, "running", "systemd"),
    ("     Active: inactive (dead)", 3, "stopped", "systemd"),
    ("     Active: failed (Result: exit-code) since Mon", 3, "failed", "systemd"),
    ("     Active: activating (auto-restart) (Result: exit-code)", 3, "restarting", "systemd"),
    ("running", 0, "running", "docker"),
    ("exited", 0, "stopped", "docker"),
    ('        "Status": "restarting",', 0, "restarting", "docker"),
    ("abc123  fraiseql:2.15  Exited (137) 2 minutes ago", 0, "stopped", "docker ps"),
    ("abc123  fraiseql:2.15  Up 3 hours  0.0.0.0:8000->8000/tcp", 0, "running", "docker ps"),
    ("fraiseql-7d9f  0/1  CrashLoopBackOff  5  3m", 0, "restarting", "kubectl"),
    ("", 3, "stopped", "exit code"),
    ("", 0, "running", "exit code"),
    ("", None, "unknown", "exit code"),
])
def test_status_output_is_parsed(output, code, state, source):
    parsed = commands.parse_status(output, code)
    assert (parsed.state, parsed.source) == (state, source)
    if state == "running" and source == "systemd":
        assert parsed.pid == 4242


def _offline_ctx(tmp_path, **raw) -> RunContext:
    """A target whose service and database ports are closed: everything real, nothing up."""
    target = inventory.Target("t", {
        "fraiseql_url": f"http://127.0.0.1:{free_port()}",
        "database_url": f"postgresql://app@127.0.0.1:{free_port()}/fraiseql", **raw})
    return RunContext.adhoc("service-down", target=target,
                            findings_path=tmp_path / "findings.json")


def test_a_config_the_server_refuses_is_config_invalid(tmp_path):
    config = tmp_path / "fraiseql-server.toml"
    config.write_text('bind_addr = "127.0.0.1:8000"\ndatabase_url = "postgresql://db/x"\n'
                      '[server]\nlisten_addr = "0.0.0.0:4000"\n')
    ctx = _offline_ctx(tmp_path, config_path=str(config))
    from fraiseql_rb.checks import service

    assert service.check_health(ctx).status is Status.CRITICAL
    restart = service_down.restart(ctx, wait_s=1)
    assert restart.status is Status.UNKNOWN  # needed, but there is no restart_command
    assert service_down.check_database(ctx).status is Status.CRITICAL
    checks = {f.check: f for f in service_down.check_configuration(ctx)}
    assert checks["config.refused_section"].status is Status.CRITICAL
    service_down.recent_changes(ctx, hours=1)
    verdict = conclude(ctx, service_down.VOCABULARY, service_down.candidates(ctx))
    assert verdict.evidence["root_cause"] == "config_invalid"
    assert {c["code"] for c in verdict.evidence["candidates"]} >= {
        "config_invalid", "process_down", "database_unreachable"}


def _record_health(ctx: RunContext, verdict: Status, **evidence) -> None:
    ctx.record("service.health", verdict, "health", {
        "url": "u", "http_status": 200, "status": "healthy", "database_connected": True,
        "version": "2.15.0", "schema_hash": "a" * 32, "error": None, **evidence})


def test_degraded_with_the_database_up_is_dependency_unhealthy():
    ctx = RunContext.adhoc("service-down")
    _record_health(ctx, Status.WARNING, status="degraded")
    ctx.record("database.reachable", Status.OK, "connected", {})
    verdict = conclude(ctx, service_down.VOCABULARY, service_down.candidates(ctx))
    assert verdict.evidence["root_cause"] == "dependency_unhealthy"
    assert verdict.status is Status.WARNING


def test_healthy_but_not_ready_is_dependency_unhealthy():
    ctx = RunContext.adhoc("service-down")
    _record_health(ctx, Status.OK)
    ctx.record("service.readiness", Status.CRITICAL, "not ready",
               {"http_status": 503, "status": "not_ready", "reason": "cache unavailable"})
    verdict = conclude(ctx, service_down.VOCABULARY, service_down.candidates(ctx))
    assert verdict.evidence["root_cause"] == "dependency_unhealthy"


def test_no_evidence_is_unknown():
    ctx = RunContext.adhoc("service-down")
    verdict = conclude(ctx, service_down.VOCABULARY, service_down.candidates(ctx))
    assert verdict.evidence["root_cause"] == "unknown" and verdict.status is Status.UNKNOWN


def _artifact(root: Path, day: str, leaf: str, target: str, version: str | None,
              schema_hash: str | None) -> Path:
    path = root / day / "service-down" / leaf / "findings.json"
    log = FindingsLog("service-down", target, path=path)
    log.record("service.health", Status.OK if version else Status.CRITICAL, "health",
               {"version": version, "schema_hash": schema_hash})
    return path


def test_recent_changes_compare_with_the_newest_earlier_artifact(tmp_path):
    out = tmp_path / "reports"
    _artifact(out, "2026-01-01", "010000Z", "t", "2.14.0", "a" * 32)
    _artifact(out, "2026-01-02", "010000Z", "t", "2.15.0", "b" * 32)  # newest with a build
    _artifact(out, "2026-01-02", "020000Z", "t", None, None)  # down: no build seen
    _artifact(out, "2026-01-03", "010000Z", "other", "9.9.9", "c" * 32)  # another target
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text("bind_addr = '127.0.0.1:8000'\n")
    current = out / "2026-01-04" / "service-down" / "030000Z_INC-1" / "findings.json"
    target = inventory.Target("t", {"fraiseql_url": "http://127.0.0.1:9",
                                    "config_path": str(config_dir / "config.toml")})
    ctx = RunContext.adhoc("service-down", target=target, findings_path=current)
    _record_health(ctx, Status.WARNING, status="degraded", version="2.16.0",
                   schema_hash="d" * 32)
    finding = service_down.recent_changes(ctx, hours=1)
    ev = finding.evidence
    assert ev["previous"]["version"] == "2.15.0"
    assert ev["previous"]["artifact"].endswith("2026-01-02/service-down/010000Z")
    assert ev["differences"] == ["version 2.15.0 -> 2.16.0",
                                 f"schema_hash {'b' * 32} -> {'d' * 32}"]
    assert [r["file"] for r in ev["changed_files"]] == ["config.toml"]
    assert finding.status is Status.WARNING
