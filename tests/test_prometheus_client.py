"""The Prometheus client against a real Prometheus: known backfilled history, a rule that
always fires, a recording rule, and Prometheus scraping itself."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fraiseql_rb.core import inventory, timespec
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.sandbox.cluster import free_port
from fraiseql_rb.targets import prometheus
from fraiseql_rb.targets.prometheus import PrometheusClient, PrometheusError

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("promtool")),
    reason="needs the prometheus and promtool binaries")

RULES = """
groups:
  - name: frb-test
    interval: 1s
    rules:
      - alert: FrbAlwaysFiring
        expr: vector(1) > 0
        for: 0s
        labels: {severity: warning}
        annotations: {summary: "always firing, for the client test"}
      - record: frb:up:sum
        expr: sum(up)
"""

CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""

STEP_S = 60
POINTS = 61  # one hour, both ends included


def value_a(i: int) -> float:
    return float(i)


def value_b(i: int) -> float:
    return 100.0 + 0.5 * i


@dataclass
class LiveProm:
    url: str
    history_start: datetime  # a whole hour, three days ago, where the backfill lies


def _backfill(data_dir: Path, start: datetime) -> None:
    """Write a known series into TSDB blocks with promtool, before Prometheus starts."""
    epoch = int(start.timestamp())
    lines = ["# HELP frb_backfill A series with known values.", "# TYPE frb_backfill gauge"]
    for instance, value in (("a", value_a), ("b", value_b)):
        lines += [f'frb_backfill{{instance="{instance}"}} {value(i)} {epoch + i * STEP_S}'
                  for i in range(POINTS)]
    source = data_dir.parent / "backfill.om"
    source.write_text("\n".join(lines) + "\n# EOF\n")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q",
                    str(source), str(data_dir)], check=True, capture_output=True, timeout=120)


def _wait(what: str, fetch: Callable[[], Any], ok: Callable[[Any], bool],
          timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s: {value!r}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def live_prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProm]:
    base = tmp_path_factory.mktemp("prom")
    data = base / "data"
    data.mkdir()
    start = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    _backfill(data, start)
    port = free_port()
    (base / "rules.yml").write_text(RULES)
    (base / "prometheus.yml").write_text(
        CONFIG.format(rules=base / "rules.yml", port=port))
    log = (base / "prometheus.log").open("w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={base / 'prometheus.yml'}",
         f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with PrometheusClient(url) as client:
            deadline = time.monotonic() + 30
            while not client.ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not start: "
                                       + (base / "prometheus.log").read_text()[-2000:])
                time.sleep(0.2)
        yield LiveProm(url, start)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def client(live_prom: LiveProm) -> Iterator[PrometheusClient]:
    with PrometheusClient(live_prom.url, timeout_s=5) as c:
        yield c


def test_query_range_returns_the_backfilled_values(live_prom, client):
    start = live_prom.history_start
    frame = client.query_range("frb_backfill", start, start + timedelta(hours=1), STEP_S)
    assert list(frame.columns[:3]) == ["time", "series", "value"]
    assert {"instance", "__name__"} <= set(frame.columns)
    assert str(frame["time"].dt.tz) == "UTC"
    assert sorted(frame["series"].unique()) == ["instance=a", "instance=b"]
    expected_times = [start + timedelta(seconds=i * STEP_S) for i in range(POINTS)]
    for instance, value in (("a", value_a), ("b", value_b)):
        rows = frame[frame["instance"] == instance]
        assert list(rows["time"]) == [pd.Timestamp(t) for t in expected_times]
        assert list(rows["value"]) == [value(i) for i in range(POINTS)]


def test_query_range_of_one_series_is_named_by_its_query(live_prom, client):
    start = live_prom.history_start
    frame = client.query_range('sum(frb_backfill)', start, start + timedelta(minutes=10), 300)
    assert list(frame["series"].unique()) == ["sum(frb_backfill)"]
    assert list(frame["value"]) == [100.0, 107.5, 115.0]  # i + 100 + i/2 at i = 0, 5, 10


def test_query_range_with_nothing_is_an_empty_frame(live_prom, client):
    start = live_prom.history_start
    frame = client.query_range("frb_no_such_metric", start, start + timedelta(hours=1), 60)
    assert frame.empty and list(frame.columns) == ["time", "series", "value"]


def test_query_window_covers_the_recent_past(client):
    frame = _wait("a self-scrape in the last minutes",
                  lambda: client.query_window('up{job="prometheus"}', "5m"),
                  lambda f: not f.empty)
    assert set(frame["value"]) == {1.0}
    assert frame["time"].max() <= pd.Timestamp.now(tz="UTC")


def test_instant_query_at_a_moment_and_scalar(live_prom, client):
    at = live_prom.history_start + timedelta(minutes=30)
    samples = client.query("frb_backfill", at=at)
    assert {s.labels["instance"]: s.value for s in samples} == {"a": 30.0, "b": 115.0}
    assert all(s.time == at and s.metric == "frb_backfill" for s in samples)
    assert samples[0].name.startswith('frb_backfill{instance="')
    (scalar,) = client.query("scalar(vector(42))")
    assert scalar.value == 42.0 and scalar.labels == {}


def test_the_always_firing_alert_is_reported(client):
    alerts = _wait("FrbAlwaysFiring firing", client.alerts,
                   lambda found: any(a["name"] == "FrbAlwaysFiring" and a["state"] == "firing"
                                     for a in found))
    alert = next(a for a in alerts if a["name"] == "FrbAlwaysFiring")
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "always firing, for the client test"
    assert isinstance(alert["active_at"], datetime) and alert["active_at"].tzinfo is not None
    assert alert["value"] == 1.0


def test_rules_list_both_kinds(client):
    rules = _wait("both rules evaluated", client.rules,
                  lambda found: len(found) == 2 and all(r["health"] == "ok" for r in found))
    by_name = {r["name"]: r for r in rules}
    recording = by_name["frb:up:sum"]
    assert recording["type"] == "recording" and recording["query"] == "sum(up)"
    assert recording["group"] == "frb-test" and recording["last_error"] is None
    alerting = by_name["FrbAlwaysFiring"]
    assert alerting["type"] == "alerting" and alerting["for_s"] == 0
    assert alerting["state"] in ("pending", "firing")
    # the recording rule writes a series we can read back
    _wait("frb:up:sum recorded", lambda: client.query("frb:up:sum"),
          lambda found: [s.value for s in found] == [1.0])


def test_targets_show_the_self_scrape(live_prom, client):
    targets = _wait("self scrape up", client.targets,
                    lambda found: [t["health"] for t in found] == ["up"])
    (target,) = targets
    assert target["job"] == "prometheus"
    assert target["instance"] == live_prom.url.removeprefix("http://")
    assert target["last_error"] is None and isinstance(target["last_scrape"], datetime)


def test_a_bad_query_is_one_line(client):
    with pytest.raises(PrometheusError) as caught:
        client.query("sum(")
    message = str(caught.value)
    assert "bad_data" in message and "\n" not in message


def test_unreachable_and_silent_servers_are_one_line():
    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as down:
        assert down.ready() is False
        with pytest.raises(PrometheusError, match="unreachable"):
            down.query("1")
    # a socket that accepts connections but never answers: the timeout must end the call
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with PrometheusClient(f"http://127.0.0.1:{port}", timeout_s=0.5) as hung, \
                pytest.raises(PrometheusError, match="did not answer within 0.5 s"):
            hung.alerts()
        assert time.monotonic() - started < 5


def test_too_many_points_is_refused_before_asking(client):
    end = datetime.now(UTC)
    with pytest.raises(UsageError, match="larger step"):
        client.query_range("up", end - timedelta(days=30), end, 60)
    with pytest.raises(UsageError, match="before it starts"):
        client.query_range("up", end, end - timedelta(hours=1), 60)


def test_from_target(live_prom, monkeypatch):
    monkeypatch.setenv("FRB_TEST_PROM_TOKEN", "prom-token-123456")
    target = inventory.Target("t", {"fraiseql_url": "http://127.0.0.1:9",
                                    "prometheus_url": live_prom.url + "/",
                                    "prometheus_token_env": "FRB_TEST_PROM_TOKEN"})
    client = prometheus.from_target(RunContext.adhoc(target=target))
    assert client is not None
    with client:
        assert client.base_url == live_prom.url and client.ready()
        assert client._http.headers["Authorization"] == "Bearer prom-token-123456"
        assert client.query("vector(1)")[0].value == 1.0
    bare = inventory.Target("u", {"fraiseql_url": "http://127.0.0.1:9"})
    assert prometheus.from_target(RunContext.adhoc(target=bare)) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("90m", timedelta(minutes=90)),
    ("1h30m", timedelta(minutes=90)), ("30s", timedelta(seconds=30)), ("2w", timedelta(weeks=2)),
    (" 15m ", timedelta(minutes=15)), ("1.5h", timedelta(minutes=90)),
    (timedelta(hours=3), timedelta(hours=3)),
])
def test_parse_range_accepts(text, expected):
    assert timespec.parse_range(text) == expected


@pytest.mark.parametrize("text", ["", "24", "1M", "24 hours", "h", "-5m", "0m", "7days", "abc"])
def test_parse_range_refuses(text):
    with pytest.raises(UsageError, match="time range"):
        timespec.parse_range(text)


def test_step_for_picks_round_steps():
    assert prometheus.step_for("24h") == 300       # 288 s wanted
    assert prometheus.step_for("7d") == 3600       # 2016 s wanted
    assert prometheus.step_for("90m") == 30        # 18 s wanted
    assert prometheus.step_for("1h", points=60) == 60
    assert prometheus.step_for("365d") == 2 * 86400
    assert prometheus.step_for("10y", points=10) == 365 * 86400
    with pytest.raises(UsageError):
        prometheus.step_for("1h", points=0)
