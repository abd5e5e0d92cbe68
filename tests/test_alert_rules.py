"""The shipped alert rules (§3.2 on real metric names): promtool accepts them, their unit tests
pass, every alert is tested both ways, and every FraiseQL metric they name is one the server
really exports (a rule on a metric nobody exports never fires)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fraiseql_rb.sandbox.standin.metrics import Metrics, PoolSnapshot

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "fraiseql_rb" / "data" / "prometheus" / "fraiseql-alerts.yml"
UNIT_TESTS = REPO / "tests" / "promtool" / "fraiseql-alerts.test.yml"
EXPECTED_ALERTS = {
    "FraiseQLDown": ("critical", "service-down"),
    "HighDatabaseErrorRate": ("critical", "high-error-rate"),
    "HighErrorRatio": ("warning", "high-error-rate"),
    "MemoryLeakSuspected": ("critical", "memory-leak"),
    "HighQueryLatency": ("warning", "high-query-latency"),
    "LowCacheHitRatio": ("warning", "high-query-latency"),
    "ConnectionPoolNearCapacity": ("warning", "connection-pool-exhaustion"),
    "WALArchivingFailing": ("critical", "backup-verification"),
    "ReplicationLagHigh": ("critical", "database-unavailable"),
}
# the playbooks that fix something (alert-review only lists alerts)
RUNBOOKS = {"service-down", "database-unavailable", "high-error-rate", "high-query-latency",
            "memory-leak", "connection-pool-exhaustion", "config-preflight",
            "backup-verification"}


def _promtool() -> str:
    """promtool's path; CI installs it, so there a missing promtool is a failure."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (CI installs Debian's prometheus package)")
        pytest.skip("promtool is not installed")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules():
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = _run("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_shipped_with_severity_summary_description_and_runbook():
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert set(alerts) == set(EXPECTED_ALERTS)
    for name, (severity, runbook) in EXPECTED_ALERTS.items():
        rule = alerts[name]
        notes = rule["annotations"]
        assert notes["severity"] == rule["labels"]["severity"] == severity, name
        assert notes["runbook"] == runbook and runbook in RUNBOOKS, name
        assert notes["summary"].strip() and notes["description"].strip(), name
        assert "for" in rule, name


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == set(EXPECTED_ALERTS)
    assert quiet == set(EXPECTED_ALERTS)


def _exported_names() -> set[str]:
    """Metric names in the stand-in's /metrics, with every optional block present."""
    metrics = Metrics()
    metrics.query_finished("users", 1_500, False)
    metrics.db_observed(800)
    text = metrics.render(PoolSnapshot(total=2, idle=1, active=1, max_size=10), 5)
    names = {line.split("{")[0].split()[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    return names


def test_fraiseql_metrics_in_rules_are_really_exported():
    exported = _exported_names()
    used = set()
    for rule in _rules():
        used |= set(re.findall(r"\bfraiseql_[a-z0-9_]+", rule["expr"]))
    assert used, "the rules name no FraiseQL metric"
    missing = sorted(name for name in used if name not in exported)
    assert not missing, f"rules name metrics the server does not export: {missing}"
    # the runbook's names that do not exist must not have crept back in
    assert not used & {"fraiseql_db_errors_total", "fraiseql_db_connections",
                       "fraiseql_queries_total", "fraiseql_cache_hits_total"}


def test_shipped_rules_pass_our_own_lint():
    """No severity outside the routes, no runbook that fixes nothing, no metric that can
    never fire. What is left are warnings that a metric comes from another exporter."""
    from fraiseql_rb.checks import alert_rules
    from fraiseql_rb.core.findings import Status

    problems = alert_rules.lint(RULES, None, promtool=shutil.which("promtool"))
    assert not [p for p in problems if p.kind in (alert_rules.ROUTING, alert_rules.RUNBOOK)]
    assert all(p.severity is Status.WARNING and p.kind == alert_rules.NEVER_EXPORTED
               and "another exporter" in p.message for p in problems), problems
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in alert_rules.ALERT_SEVERITIES, rule["alert"]
            assert rule["annotations"]["runbook"] not in alert_rules.NOT_A_FIX, rule["alert"]


def test_replication_lag_is_tested_on_both_exporter_names():
    """Debian's 0.11 with its example queries exports pg_replication_lag; newer releases
    pg_replication_lag_seconds. The rule must fire on each, in promtool's unit tests."""
    firing: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        if any(c["alertname"] == "ReplicationLagHigh" and c.get("exp_alerts")
               for c in case.get("alert_rule_test", [])):
            for series in case["input_series"]:
                firing.add(series["series"].split("{")[0])
    assert {"pg_replication_lag", "pg_replication_lag_seconds"} <= firing
