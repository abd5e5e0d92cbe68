"""The six §9.2 dashboards, run through the CLI against the live sandbox: with its Prometheus
(a week of history) and with an inventory that names none (direct samples of /metrics).

Every run is a real `fraiseql-rb run`; they are started together in a module fixture (each
is mostly a kernel waiting on I/O) so the file stays well under a minute and a half.
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fraiseql_rb.dashboards import board

pytestmark = pytest.mark.sandbox

# Figures each dashboard renders, so at least this many PNGs in its HTML artifact.
FIGURES = {
    "service-health-dashboard": 3,
    "performance-dashboard": 4,
    "security-dashboard": 4,
    "database-dashboard": 7,
    "network-dashboard": 3,
    "capacity-planning-dashboard": 4,
}
FAST = ("-p", "sample_interval_s", "1")  # direct samples one second apart


def _artifact(result: subprocess.CompletedProcess[str]) -> Path:
    return Path(result.stdout.strip().splitlines()[-1])


def _findings(result: subprocess.CompletedProcess[str]) -> dict:
    return json.loads((_artifact(result) / "findings.json").read_text())


def _finding(result: subprocess.CompletedProcess[str], check: str) -> dict:
    found = [f for f in _findings(result)["findings"] if f["check"] == check]
    assert found, f"no {check} finding in {_artifact(result)}"
    return found[0]


def _pngs(result: subprocess.CompletedProcess[str], name: str) -> int:
    html = (_artifact(result) / f"{name}.html").read_text()
    return len(re.findall(r'<img[^>]*\bsrc="data:image/png;base64,', html))


@pytest.fixture(scope="module")
def runs(sandbox) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """Every dashboard with Prometheus and without it, the 7-day performance run, and a
    run with a lookback that is not a duration."""
    direct = sandbox.inventory_without("prometheus_url")
    jobs: dict[tuple[str, str], tuple[str, ...]] = {}
    for name in FIGURES:
        extra = ("-p", "lookback", "7d") if name == "performance-dashboard" else ()
        jobs[(name, "prometheus")] = (*extra, *FAST)
        jobs[(name, "direct")] = ("--inventory", str(direct), *FAST)
    jobs[("performance-dashboard", "bad lookback")] = ("-p", "lookback", "7days")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(sandbox.run, key[0], *args) for key, args in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.parametrize("source", ["prometheus", "direct"])
def test_dashboard_runs_and_renders_its_figures(runs, name, source):
    result = runs[(name, source)]
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert _pngs(result, name) >= FIGURES[name]
    findings = _findings(result)
    assert findings["status"] in ("ok", "warning")
    assert not [f for f in findings["findings"] if f["check"] == "notebook.error"]
    origin = _finding(result, "dashboard.source")
    assert origin["status"] == "info"
    if source == "prometheus":
        assert origin["evidence"]["source"] == board.PROMETHEUS
        assert "Prometheus" in origin["summary"]
    else:
        assert origin["evidence"]["source"] == board.DIRECT
        assert origin["summary"].startswith("direct samples")
        assert "no prometheus_url" in origin["evidence"]["reason"]


def test_prometheus_history_spans_the_range(runs):
    """`-p lookback 7d`: the backfilled week is there, in the source and in the latency panel."""
    result = runs[("performance-dashboard", "prometheus")]
    origin = _finding(result, "dashboard.source")["evidence"]
    assert origin["range"] == "7d" and origin["range_days"] == 7
    assert origin["covered_days"] >= 6
    assert origin["step_s"] == 3600 and origin["rate_window"] == "1h"
    latency = _finding(result, "dashboard.latency_p99")
    assert latency["status"] == "ok"
    assert latency["evidence"]["covered_days"] >= 6
    assert "histogram_quantile(0.99, sum by (le)" in latency["evidence"]["queries"]["p99"]


def test_direct_samples_judge_latency_between_two_scrapes(runs):
    result = runs[("performance-dashboard", "direct")]
    latency = _finding(result, "dashboard.latency_p95")
    assert latency["status"] in ("ok", "unknown")
    assert latency["evidence"]["source"] == board.DIRECT
    assert "between the two scrapes" in latency["summary"] or latency["status"] == "unknown"


def test_security_counts_the_audit_log(runs):
    audit = _finding(runs[("security-dashboard", "prometheus")], "dashboard.audit_events")
    assert audit["status"] == "ok"
    assert audit["evidence"]["events"] > 0
    assert set(audit["evidence"]["security_events"]) == {
        "authentication_failed", "sql_injection_attempt", "csrf_failure",
        "rate_limit_exceeded"}


def test_capacity_has_a_finding_per_resource(runs):
    for source in ("prometheus", "direct"):
        result = runs[("capacity-planning-dashboard", source)]
        checks = {f["check"]: f for f in _findings(result)["findings"]}
        for resource in ("connections", "database_size", "disk", "memory"):
            assert f"capacity.{resource}" in checks, (source, resource)
        size = checks["capacity.database_size"]["evidence"]
        assert size["method"].startswith("audit rows per day")
        assert size["estimated_growth_bytes_per_day"] > 0
    prom = {f["check"]: f for f in _findings(runs[("capacity-planning-dashboard",
                                                      "prometheus")])["findings"]}
    assert prom["capacity.connections"]["evidence"]["trend_trusted"] is True
    assert prom["capacity.connections"]["status"] in ("info", "warning")


def test_a_bad_lookback_stops_the_run_with_one_clear_line(runs):
    """`lookback` is a declared duration, checked by the Prometheus parser before a kernel
    starts: exit 64, one line."""
    result = runs[("performance-dashboard", "bad lookback")]
    assert result.returncode == 64, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "cannot read '7days' as a time range" in line
    assert result.stdout == ""
