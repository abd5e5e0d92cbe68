"""alert-review: drills with the sandbox's real Prometheus, and the no-Prometheus path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from fraiseql_rb.core import inventory

pytestmark = pytest.mark.drill


def findings_of(result) -> dict[str, dict]:
    artifact = Path(result.stdout.strip().splitlines()[-1])
    return {f["check"]: f for f in json.loads((artifact / "findings.json").read_text())[
        "findings"]}


def wait_for_alert(sandbox, name: str, timeout: float = 150) -> str:
    """Poll the sandbox's Prometheus until `name` is pending or firing."""
    url = inventory.load(sandbox.inventory).target("sandbox").get("prometheus_url")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        for alert in alerts:
            if alert["labels"]["alertname"] == name:
                return alert["state"]
        time.sleep(3)
    raise AssertionError(f"{name} never became pending within {timeout:g} s")


@pytest.mark.parametrize("fault", ["error-spike", "db-down"])
def test_alert_review_shows_the_matching_alert(healthy_sandbox, fault):
    if not inventory.load(healthy_sandbox.inventory).target("sandbox").get("prometheus_url"):
        pytest.skip("the sandbox has no Prometheus (prometheus binary not installed)")
    healthy_sandbox.fault(fault)
    try:
        wait_for_alert(healthy_sandbox, "HighErrorRatio")
        result = healthy_sandbox.run("alert-review", "--incident-id", f"DRILL-{fault}")
    finally:
        healthy_sandbox.heal(fault)
    assert result.returncode in (1, 2), result.stdout + result.stderr
    found = findings_of(result)
    assert found["alerts.source"]["summary"].endswith("from Prometheus")
    alert = found["alerts.HighErrorRatio"]
    assert alert["evidence"]["state"] in ("pending", "firing")
    assert alert["remediation"] == "fraiseql-rb run high-error-rate --target sandbox"


def test_without_prometheus_the_conditions_are_evaluated_on_two_scrapes(healthy_sandbox):
    inv = healthy_sandbox.inventory_without("prometheus_url")
    healthy_sandbox.fault("error-spike")
    try:
        result = healthy_sandbox.cli("run", "alert-review", "--inventory", str(inv),
                                     "--output-dir", str(healthy_sandbox.reports),
                                     "-p", "window_s", "8")
    finally:
        healthy_sandbox.heal("error-spike")
    assert result.returncode in (1, 2), result.stdout + result.stderr
    found = findings_of(result)
    assert "two scrapes" in found["alerts.source"]["summary"]
    assert found["alerts.HighErrorRatio"]["evidence"]["state"] == "pending"
    assert found["alerts.HighErrorRatio"]["evidence"]["value"] > 0.05
    # a healthy window right after: the condition is false again
    quiet = healthy_sandbox.cli("run", "alert-review", "--inventory", str(inv),
                                "--output-dir", str(healthy_sandbox.reports),
                                "-p", "window_s", "8")
    assert "alerts.HighErrorRatio" not in findings_of(quiet)


def test_lint_reports_rules_that_cannot_fire_here(sandbox):
    inv = sandbox.inventory_without("prometheus_url")
    result = sandbox.cli("run", "alert-review", "--inventory", str(inv), "--output-dir",
                         str(sandbox.reports), "-p", "window_s", "2")
    lint = findings_of(result)["alerts.lint"]
    # no postgres_exporter or process-exporter runs in the sandbox
    assert set(lint["evidence"]["cannot_fire"]) == {"MemoryLeakSuspected",
                                                     "WALArchivingFailing",
                                                     "ReplicationLagHigh"}
    assert lint["status"] == "warning"
