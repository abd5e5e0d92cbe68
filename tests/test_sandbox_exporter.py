"""Debian's postgres_exporter in the sandbox: both nodes scraped by the sandbox's Prometheus,
and the shipped PostgreSQL alerts firing on the drills made for them (archive-broken,
replica-lag), then `lint-alerts --target` seeing those metrics in the target's Prometheus."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from fraiseql_rb.checks import alert_rules
from fraiseql_rb.core.findings import Status
from fraiseql_rb.sandbox import exporter, manager

pytestmark = [pytest.mark.drill, pytest.mark.long,
              pytest.mark.skipif(not exporter.available(),
                                 reason="prometheus-postgres-exporter is not installed")]
# WALArchivingFailing: nothing archived for 5 min + `for: 1m`; ReplicationLagHigh: 150 s of
# lag + `for: 2m`. A sandbox archived at `up`, so the first can take up to 6 min.
ALERT_DEADLINE_S = 9 * 60


def _prometheus(sb: manager.Sandbox) -> str:
    port = sb.state.get("prometheus_port")
    if not port:
        pytest.skip("Prometheus is not installed")
    return f"http://127.0.0.1:{port}"


def test_both_nodes_are_scraped_and_no_password_is_written(healthy_sandbox) -> None:
    sb = manager.Sandbox.open(healthy_sandbox.root)
    assert len(exporter.urls(sb)) == 2
    deadline = time.monotonic() + 30
    while True:  # a Prometheus started a moment ago may not have its targets yet
        targets = httpx.get(f"{_prometheus(sb)}/api/v1/targets", timeout=5).json()["data"]
        pg = [t for t in targets["activeTargets"] if t["labels"]["job"] == "postgres"]
        if len(pg) == 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(pg) == 2, targets["activeTargets"]
    while time.monotonic() < deadline:
        query = httpx.get(f"{_prometheus(sb)}/api/v1/query",
                          params={"query": 'pg_up{job="postgres"}'}, timeout=5).json()
        if [s["value"][1] for s in query["data"]["result"]] == ["1", "1"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"pg_up of both exporters: {query['data']['result']}")
    for which in ("primary", "replica"):
        pid = exporter.pid(sb, which)
        assert pid is not None
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert "password" not in cmdline.lower()
        assert "queries.yaml" in cmdline
    for name in os.listdir(sb.root / exporter.DIR):
        assert "password" not in (sb.root / exporter.DIR / name).read_text().lower()
    assert stat.S_IMODE(sb.secrets_dir.stat().st_mode) == 0o700


def _firing(prometheus: str) -> set[str]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def test_postgres_alerts_fire_in_drills_and_lint_sees_their_metrics(healthy_sandbox) -> None:
    sb = manager.Sandbox.open(healthy_sandbox.root)
    prometheus = _prometheus(sb)
    healthy_sandbox.fault("archive-broken")
    healthy_sandbox.fault("replica-lag")
    wanted = {"WALArchivingFailing", "ReplicationLagHigh"}
    deadline = time.monotonic() + ALERT_DEADLINE_S
    firing: set[str] = set()
    while time.monotonic() < deadline and not wanted <= firing:
        firing = _firing(prometheus)
        time.sleep(5)
    assert wanted <= firing, f"firing after {ALERT_DEADLINE_S} s: {sorted(firing)}"

    # the linter, pointed at the target whose Prometheus fires these, must not call them
    # alerts that can never fire
    live = alert_rules.exported_from_target("sandbox", healthy_sandbox.inventory)
    assert live.prometheus and "postgres" in live.where
    assert {"pg_stat_archiver_failed_count", "pg_replication_lag"} <= live
    problems = alert_rules.lint(alert_rules_file(), live)
    assert not [p for p in problems if p.rule in wanted and p.severity is Status.CRITICAL]
    assert not [p for p in problems if "can never fire" in p.message and p.rule in wanted]
    result = healthy_sandbox.cli("lint-alerts", str(alert_rules_file()), "--target", "sandbox")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "WALArchivingFailing: [never-exported]" not in result.stdout

    healthy_sandbox.heal("replica-lag")
    healthy_sandbox.heal("archive-broken")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _firing(prometheus) & wanted:
        time.sleep(5)
    assert not _firing(prometheus) & wanted


def alert_rules_file():
    from fraiseql_rb.sandbox import prometheus

    return prometheus.RULES_FILE
