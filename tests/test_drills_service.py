"""Drills for service-health: inject a real fault into the sandbox, run the runbook through
the CLI, assert the verdict; and a healthy sandbox raises no alarm."""

from __future__ import annotations

import pytest
from drill_helpers import by_check, findings_of

pytestmark = pytest.mark.drill


def test_healthy_sandbox_exits_0(healthy_sandbox):
    result = healthy_sandbox.run("service-health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {f["status"] for f in findings_of(result)["findings"]} <= {"ok", "info"}


def test_db_down_is_critical_with_a_database_finding(healthy_sandbox):
    healthy_sandbox.fault("db-down")
    try:
        result = healthy_sandbox.run("service-health", "--incident-id", "DRILL-db",
                                     "-p", "samples", "1")
    finally:
        healthy_sandbox.heal("db-down")
    assert result.returncode == 2, result.stdout + result.stderr
    checks = by_check(findings_of(result))
    assert checks["database.reachable"]["status"] == "critical"
    assert checks["service.health"]["status"] == "critical"
    assert checks["service.health"]["evidence"]["database_connected"] is False
    assert checks["service.health"]["evidence"]["http_status"] == 503
    # the process still answers GraphQL: the diagnosis is the database, not the server
    assert checks["graphql.probe"]["status"] == "ok"


def test_server_down_is_critical(healthy_sandbox):
    healthy_sandbox.fault("server-down")
    try:
        result = healthy_sandbox.run("service-health", "-p", "samples", "1")
    finally:
        healthy_sandbox.heal("server-down")
    assert result.returncode == 2, result.stdout + result.stderr
    checks = by_check(findings_of(result))
    assert checks["service.health"]["status"] == "critical"
    assert "no answer" in checks["service.health"]["summary"]
    assert checks["database.reachable"]["status"] == "ok"


def test_heal_restores_a_healthy_run(healthy_sandbox):
    healthy_sandbox.fault("server-down")
    healthy_sandbox.heal("server-down")
    assert healthy_sandbox.run("service-health", "-p", "samples", "1").returncode == 0


def test_deployment_verification_on_the_sandbox(healthy_sandbox):
    result = healthy_sandbox.run("deployment-verification")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = by_check(findings_of(result))
    assert checks["database.role_grants"]["status"] == "ok"
    pool = checks["database.pool_capacity"]["evidence"]
    assert pool["sources"] == ["admin API"] and pool["pool_sizes"] == [10]
