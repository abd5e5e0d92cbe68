"""The sandbox's Prometheus, for real: it scrapes the live stand-in over HTTPS with the metrics
token from its file, holds a backfilled week of the same series, loads the shipped alert rules,
and never writes the token anywhere. Plus the backfill's own invariants, without processes."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fraiseql_rb.sandbox import manager
from fraiseql_rb.sandbox import prometheus as prom
from fraiseql_rb.sandbox.cluster import free_port


def _require_prometheus() -> None:
    """CI installs Prometheus, so there its absence is a failure; locally, a skip."""
    if not prom.available():
        if os.environ.get("CI"):
            pytest.fail("prometheus/promtool are not installed (CI installs them)")
        pytest.skip("prometheus/promtool are not installed")


@dataclass
class LiveProm:
    directory: Path
    port: int
    started: float
    samples: int
    instance: str
    token: str

    def api(self, path: str, **params: object) -> dict:
        response = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/{path}", params=params,
                             timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]


@pytest.fixture(scope="module")
def sandbox_root() -> Iterator[Path]:
    _require_prometheus()
    base = Path(tempfile.mkdtemp(prefix="fraiseql-rb-prom-", dir="/tmp"))
    os.chmod(base, 0o755)  # PostgreSQL's own user must traverse it when we run as root
    root = base / "sandbox"
    try:
        manager.up(root, audit_events=500)
        yield root
    finally:
        manager.down(root, purge=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def live(sandbox_root: Path) -> Iterator[LiveProm]:
    sb = manager.Sandbox.open(sandbox_root)
    directory = sandbox_root.parent / "prometheus"
    port = free_port()
    prom.configure(directory, port=port, scrape_url=sb.server_url,
                   token_file=sb.secrets_dir / "metrics_token", ca_file=sb.ca_cert,
                   rules_file=prom.RULES_FILE)
    samples = prom.backfill(directory)
    started = time.monotonic()
    proc = prom.start(directory, port)
    try:
        prom.wait_ready(port, proc=proc, log=directory / prom.LOG_FILE)
        yield LiveProm(directory, port, started, samples, urlsplit(sb.server_url).netloc,
                       (sb.secrets_dir / "metrics_token").read_text().strip())
    finally:
        assert prom.stop(proc.pid)
        assert proc.wait(timeout=5) is not None


def test_fraiseql_target_is_scraped_within_15_seconds(live: LiveProm):
    health = {}
    while time.monotonic() - live.started < 15:
        targets = live.api("targets")["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
        if health.get("fraiseql", ("",))[0] == "up":
            break
        time.sleep(0.25)
    assert health.get("fraiseql") == ("up", ""), health
    result = live.api("query", query='up{job="fraiseql"}')["result"]
    assert [r["metric"]["instance"] for r in result] == [live.instance]


def test_backfilled_week_answers_six_days_ago_on_the_live_series(live: LiveProm):
    now = time.time()
    data = live.api("query_range", query='fraiseql_graphql_queries_total{job="fraiseql"}',
                    start=now - 6 * 86400 - 3600, end=now - 6 * 86400, step=300)
    (series,) = data["result"]
    assert series["metric"]["instance"] == live.instance  # the same series the scrape fills
    values = [float(v) for _, v in series["values"]]
    assert len(values) >= 12 and values == sorted(values) and values[-1] > values[0]
    # a whole week of points, one per 5 minutes
    (week,) = live.api("query", query='count_over_time(fraiseql_graphql_queries_total'
                                      '{job="fraiseql"}[7d])', time=now - 600)["result"]
    assert float(week["value"][1]) >= 7 * 288 - 2
    # the histogram is a histogram: a finite p99, well under the alert's 5 s
    (p99,) = live.api("query", time=now - 6 * 86400, query=(
        "histogram_quantile(0.99, sum by (le) "
        "(rate(fraiseql_query_duration_seconds_bucket[15m])))"))["result"]
    assert 0 < float(p99["value"][1]) < 5
    assert live.samples > 100_000
    assert prom.backfill(live.directory) == 0  # brought up again: the history is not redone
    info = (live.directory / prom.BACKFILL_INFO).read_text()
    assert f'"instance": "{live.instance}"' in info


def test_alert_rules_are_loaded_and_evaluate(live: LiveProm):
    rules: list[dict] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        groups = live.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule["health"] == "ok" for rule in rules):
            break
        time.sleep(0.5)
    names = {rule["name"] for rule in rules if rule["type"] == "alerting"}
    assert names == {"FraiseQLDown", "HighDatabaseErrorRate", "HighErrorRatio",
                     "MemoryLeakSuspected", "HighQueryLatency", "LowCacheHitRatio",
                     "ConnectionPoolNearCapacity",
                     "WALArchivingFailing", "ReplicationLagHigh"}
    assert all(rule["health"] == "ok" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules]
    firing = [a for a in live.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []  # a healthy sandbox raises no alarm


def test_the_metrics_token_is_nowhere_in_config_or_log(live: LiveProm):
    config = (live.directory / prom.CONFIG_FILE).read_text()
    assert "credentials_file" in config and live.token not in config
    log = (live.directory / prom.LOG_FILE).read_text()
    assert log and live.token not in log


# -- the backfill's invariants, without any process ------------------------------------------

def _history(seed: int = 42, days: int = 1) -> tuple[prom._History, list[int]]:
    history = prom._History("fraiseql", "127.0.0.1:8443", seed)
    end = 1_790_000_000 // 300 * 300
    times = list(range(end - days * 86400, end + 1, 300))
    prom._simulate(history, times, 300)
    return history, times


def test_backfill_is_deterministic_and_counters_only_grow():
    one, times = _history()
    two, _ = _history()
    text = prom._openmetrics(list(one.series.values()), times, 0, len(times))
    assert text == prom._openmetrics(list(two.series.values()), times, 0, len(times))
    assert text.endswith("# EOF\n")
    other, _ = _history(seed=7)
    assert prom._openmetrics(list(other.series.values()), times, 0, len(times)) != text
    for series in one.series.values():
        assert len(series.values) == len(times), series.name
        if series.kind != "gauge":
            assert series.values == sorted(series.values), series.name


def test_backfilled_histograms_are_consistent():
    history, times = _history()
    by_key = {(s.name, s.labels): s.values for s in history.series.values()}
    base = (("job", "fraiseql"), ("instance", "127.0.0.1:8443"))
    for op in prom.OPERATIONS:
        labels = (*base, ("operation", op))
        buckets = [by_key[("fraiseql_query_duration_seconds_bucket", (*labels, ("le", le)))]
                   for le in (*prom._BUCKET_LABELS, "+Inf")]
        count = by_key[("fraiseql_query_duration_seconds_count", labels)]
        for step in range(len(times)):
            column = [b[step] for b in buckets]
            assert column == sorted(column)  # cumulative in le
            assert column[-1] == count[step]  # +Inf is the count
    # the queries counted per operation are the queries the server counted
    total = by_key[("fraiseql_graphql_queries_total", base)]
    errors = by_key[("fraiseql_validation_errors_total", base)]
    per_op = sum(by_key[("fraiseql_query_duration_seconds_count",
                         (*base, ("operation", op)))][-1] for op in prom.OPERATIONS)
    assert per_op == total[-1] - errors[-1]


def test_configure_refuses_a_missing_token_file(tmp_path: Path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    with pytest.raises(prom.PrometheusError, match="metrics token file .* does not exist"):
        prom.configure(tmp_path / "p", port=9090, scrape_url="https://127.0.0.1:8443",
                       token_file=tmp_path / "nope", ca_file=ca)
    with pytest.raises(prom.PrometheusError, match="run configure first"):
        prom.backfill(tmp_path / "empty")
