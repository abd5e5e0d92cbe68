"""Drills for config-preflight and operational-checklist on the live sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.drill


def findings_of(result) -> dict[str, dict]:
    artifact = Path(result.stdout.strip().splitlines()[-1])
    data = json.loads((artifact / "findings.json").read_text())
    return {f["check"]: f for f in data["findings"]}


def not_ok(findings: dict[str, dict]) -> set[str]:
    return {c for c, f in findings.items() if f["status"] in ("warning", "critical", "unknown")}


@pytest.fixture(scope="module")
def baseline(sandbox):
    """What a healthy sandbox reports: the drills compare against it."""
    result = sandbox.run("config-preflight")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    found = findings_of(result)
    assert not [c for c, f in found.items() if f["status"] in ("critical", "unknown")]
    return not_ok(found)


@pytest.mark.parametrize(("fault", "expected"), [
    ("config-insecure", {"config.bind": "critical", "config.rate_limit": "warning",
                         "config.introspection": "warning"}),
    ("cert-expiring", {"tls.server.expiry": "critical", "tls.endpoint.expiry": "critical"}),
    ("scram-off", {"database.password_encryption": "critical",
                   "database.role_passwords": "critical", "database.hba": "warning"}),
])
def test_fault_is_caught_and_heal_restores_the_baseline(healthy_sandbox, baseline, fault,
                                                         expected):
    healthy_sandbox.fault(fault)
    try:
        result = healthy_sandbox.run("config-preflight", "--incident-id", f"DRILL-{fault}")
        assert result.returncode == 2, result.stdout + result.stderr
        found = findings_of(result)
        for check, status in expected.items():
            assert found[check]["status"] == status, (check, found[check]["summary"])
    finally:
        healthy_sandbox.heal(fault)
    healed = healthy_sandbox.run("config-preflight")
    assert healed.returncode in (0, 1)
    assert not_ok(findings_of(healed)) == baseline


def test_validate_config_on_the_runbook_sample(sandbox, monkeypatch):
    sample = Path(__file__).parent / "data" / "configs" / "runbook-1.2.toml"
    result = sandbox.cli("validate-config", str(sample), env={"DB_PASSWORD": "pw-for-test-1"})
    # the sample's certificate files do not exist on this machine: critical, with every key
    # mapped to its real v2 name along the way
    assert result.returncode == 2
    for v2_name in ("bind_addr", "[tls] cert_path", "pool_max_size", "pool_timeout_secs",
                    "[rate_limiting] burst_size", "[auth] jwks_cache_ttl_secs"):
        assert v2_name in result.stdout
    assert "pw-for-test-1" not in result.stdout
    missing = sandbox.cli("validate-config", "/nonexistent/config.toml")
    assert missing.returncode == 64 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("phase", ["pre-production", "post-deployment"])
def test_operational_checklist_on_a_healthy_sandbox(healthy_sandbox, phase):
    result = healthy_sandbox.run("operational-checklist", "-p", "phase", phase)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    found = findings_of(result)
    assert not [c for c, f in found.items() if f["status"] == "critical"]
    items = {c: f for c, f in found.items() if c.startswith("checklist.")
             and c != "checklist.incident_runbooks_available"}
    manual = {"pre-production": {"checklist.dr_plan", "checklist.team_trained"},
              "post-deployment": {"checklist.alerts_firing", "checklist.load_test",
                                  "checklist.documentation", "checklist.team_notified"}}[phase]
    assert manual <= set(items)
    for check in manual:
        assert items[check]["status"] == "info" and "confirm" in items[check]["summary"]
    # every item that claims ok names the checks that verified it
    for check, finding in items.items():
        if finding["status"] == "ok":
            assert finding["evidence"]["verified_by"], check


def test_checklist_refuses_an_unknown_phase(sandbox):
    """The phase is a declared choice: refused before a kernel starts (exit 64, one line)."""
    result = sandbox.run("operational-checklist", "-p", "phase", "someday")
    assert result.returncode == 64, result.stderr
    assert "must be one of pre-production, post-deployment, got 'someday'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
