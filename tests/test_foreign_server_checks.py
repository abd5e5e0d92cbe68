"""Checks against servers nobody here wrote (issue 11 §1, check side).

An older release (v2.9: no root `{ __typename }`, no /readiness), a server reporting no
version, a /metrics page with other metric names: the verdicts must name what this server
lacks as `info`, never as a failure, and must not crash. The servers are `server`
(tests/foreign_server.py); the database is a real PostgreSQL cluster (pg_fixtures).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from foreign_server import HEALTHY, ForeignServer, serving

from fraiseql_rb.checks import instances
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.monitoring import alert_review
from fraiseql_rb.sandbox.cluster import APP_USER, free_port

pytestmark = pytest.mark.postgres

TYPENAME_REJECTED = (200, {"errors": [{"message": "Query '__typename' not found in schema"}]})
# an exporter or proxy in front: Prometheus text, none of FraiseQL's names
OTHER_METRICS = ("# TYPE http_requests_total counter\nhttp_requests_total 42\n"
                 "# TYPE nginx_connections_active gauge\nnginx_connections_active 3\n")


def _v29(server: ForeignServer) -> ForeignServer:
    """A v2.9 server: healthy, no /readiness, root __typename rejected, other metrics."""
    return (server.route("GET", "/health", 200, HEALTHY)
            .route("GET", "/metrics", 200, OTHER_METRICS)
            .graphql(lambda query: TYPENAME_REJECTED))


def _ctx(server: ForeignServer, database_url: str = "postgresql://u@127.0.0.1:9/db",
         **extra: object) -> RunContext:
    target = inventory.Target("foreign", {"fraiseql_url": server.url,
                                          "database_url": database_url, **extra})
    return RunContext.adhoc("test", target)


@pytest.fixture
def server() -> Iterator[ForeignServer]:
    with serving() as started:
        yield started


@pytest.fixture
def db_url(pg_cluster, pg_passwords) -> str:
    return pg_cluster.dsn(APP_USER, pg_passwords.app, connect_timeout=10)


# -- service-health's checks, called directly --------------------------------------------------

def test_readiness_not_served_is_info(server):
    _v29(server)
    found = service_checks.check_readiness(_ctx(server))
    assert found.status is Status.INFO, found.summary
    assert "not served by this server" in found.summary


def test_root_typename_before_2_10_is_info_not_a_failure(server):
    _v29(server)
    ctx = _ctx(server)
    health = service_checks.check_health(ctx)
    assert health.status is Status.OK and health.evidence["version"] == "2.9.0"
    found = service_checks.check_graphql(ctx)
    assert found.status is Status.INFO, found.summary
    assert "not available before v2.10.0 (this server reports v2.9.0)" in found.summary
    assert "/health" in found.summary  # liveness rests on /health


def test_the_version_is_read_once_per_run(server):
    _v29(server)
    ctx = _ctx(server)
    service_checks.check_graphql(ctx)
    service_checks.check_readiness(ctx)
    service_checks.check_graphql(ctx)
    assert server.requests.count(("GET", "/health")) == 1


def test_an_unknown_version_tries_and_judges(server):
    """No version reported: not known to lack the root __typename, so a rejection fails."""
    server.route("GET", "/health", 200, {"status": "healthy",
                                                 "database": {"connected": True}})
    server.graphql(lambda query: TYPENAME_REJECTED)
    found = service_checks.check_graphql(_ctx(server))
    assert found.status is Status.CRITICAL, found.summary


def test_endpoints_answering_404_are_not_served(server):
    server.route("GET", "/health", 200, HEALTHY)  # no /graphql, no /metrics
    ctx = _ctx(server)
    for check in (service_checks.check_graphql, service_checks.check_introspection,
                  service_checks.check_metrics_endpoint):
        found = check(ctx)
        assert found.status is Status.INFO, (check.check_name, found.summary)
        assert "not served by this server" in found.summary, found.summary


def test_health_404_is_not_served(server):
    found = service_checks.check_health(_ctx(server))
    assert found.status is Status.INFO, found.summary
    assert "not served by this server" in found.summary


def test_metrics_with_other_names_answered(server):
    _v29(server)
    found = service_checks.check_metrics_endpoint(_ctx(server))
    assert found.status is not Status.CRITICAL
    assert found.evidence["http_status"] == 200
    assert found.evidence["fraiseql_families"] == 0
    assert "fraiseql_" in found.summary


# -- the data-path probe ----------------------------------------------------------------------

def test_data_path_without_probe_is_info_saying_how(server):
    _v29(server)
    found = service_checks.check_data_path(_ctx(server))
    assert found.status is Status.INFO
    assert "probe_query" in found.summary + (found.remediation or "")


def test_data_path_answer_with_data_is_ok(server):
    server.route("GET", "/health", 200, HEALTHY)
    server.graphql(lambda q: (200, {"data": {"users": [{"id": 1}]}}))
    found = service_checks.check_data_path(_ctx(server,
                                                probe_query="{ users { id } }"))
    assert found.status is Status.OK, found.summary


@pytest.mark.parametrize("answer", [
    (200, {"data": None, "errors": [{"message": "database error: connection refused"}]}),
    (500, {"errors": [{"message": "database error: connection refused"}]}),
])
def test_data_path_database_error_is_critical_with_the_error(server, answer):
    server.route("GET", "/health", 200, HEALTHY)
    server.graphql(lambda q: answer)
    found = service_checks.check_data_path(_ctx(server),
                                           probe_query="{ users { id } }")
    assert found.status is Status.CRITICAL, found.summary
    assert "connection refused" in found.summary


def test_data_path_empty_data_is_not_ok(server):
    server.graphql(lambda q: (200, {"data": {}}))
    found = service_checks.check_data_path(_ctx(server),
                                           probe_query="{ users { id } }")
    assert found.status is not Status.OK


# -- deployment-verification ----------------------------------------------------------------

def test_instances_answering_without_version(server):
    server.route("GET", "/health", 200, {"status": "healthy",
                                                 "database": {"connected": True}})
    ctx = _ctx(server, instances=[server.url, server.url])
    table = instances.instance_table(ctx)
    found = instances.check_consistency(ctx, table)
    assert "no instance answered" not in found.summary
    assert "do not report a version" in found.summary
    assert found.status in (Status.INFO, Status.UNKNOWN)


def test_instances_compare_schema_hash_where_reported(server):
    with serving() as other:
        server.route("GET", "/health", 200, {"status": "healthy", "schema_hash": "a" * 32})
        other.route("GET", "/health", 200, {"status": "healthy", "schema_hash": "b" * 32})
        ctx = _ctx(server, instances=[server.url, other.url])
        found = instances.check_consistency(ctx, instances.instance_table(ctx))
        assert found.status is Status.CRITICAL, found.summary


# -- alert-review ---------------------------------------------------------------------------

def test_alert_review_metrics_404_is_not_fraiseql_down(server, db_url):
    server.route("GET", "/health", 200, HEALTHY)  # /metrics: 404
    active, table = alert_review.evaluate_here(_ctx(server, db_url), 0.2)
    assert "FraiseQLDown" not in [a.name for a in active]
    row = table[table["alert"] == "FraiseQLDown"].iloc[0]
    assert "404" in row["detail"]


def test_alert_review_server_gone_is_fraiseql_down(db_url):
    target = inventory.Target("foreign", {"fraiseql_url": f"http://127.0.0.1:{free_port()}",
                                          "database_url": db_url})
    active, _ = alert_review.evaluate_here(RunContext.adhoc("test", target), 0.2)
    assert "FraiseQLDown" in [a.name for a in active]


# -- whole runbooks through the CLI -----------------------------------------------------------

def _run(runbook: str, inv: Path, out: Path, *params: str
         ) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "FRAISEQL_RB_INVENTORY"}
    result = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb", "run", runbook, "--inventory", str(inv),
         "--target", "foreign", "--output-dir", str(out), "--quiet", *params],
        capture_output=True, text=True, timeout=300, env=env)
    artifact = Path(result.stdout.strip().splitlines()[-1])
    return result, json.loads((artifact / "findings.json").read_text())


def _inventory(server: ForeignServer, tmp_path: Path, pg_cluster, pg_passwords,
               **extra: object) -> Path:
    url = pg_cluster.dsn(APP_USER, pg_passwords.app, connect_timeout=10)
    return server.inventory(tmp_path, url.replace(f":{pg_passwords.app}@", "@"),
                            pg_passwords.app, **extra)


def test_service_health_on_a_v29_server(server, tmp_path, pg_cluster, pg_passwords):
    _v29(server)
    inv = _inventory(server, tmp_path, pg_cluster, pg_passwords)
    result, data = _run("service-health", inv, tmp_path / "reports", "-p", "samples", "2")
    by = {f["check"]: f for f in data["findings"]}
    assert not [f for f in data["findings"] if f["status"] == "critical"], by
    assert by["service.readiness"]["status"] == "info"
    assert by["graphql.probe"]["status"] == "info"
    assert "not available before v2.10.0" in by["graphql.probe"]["summary"]
    assert by["graphql.data_path"]["status"] == "info"
    assert result.returncode == 0, result.stderr[-2000:]


def _http_only() -> Callable[[], str]:
    """HTTP counters growing by 10 a scrape but no GraphQL query counters: a release or a
    proxy with other names (high-error-rate died formatting the absent query count)."""
    scrapes = itertools.count(1)

    def page() -> str:
        n = next(scrapes) * 10
        return ("# TYPE fraiseql_http_requests_total counter\n"
                f"fraiseql_http_requests_total {n}\n"
                "# TYPE fraiseql_http_responses_5xx counter\nfraiseql_http_responses_5xx 0\n"
                "# TYPE fraiseql_http_responses_4xx counter\nfraiseql_http_responses_4xx 1\n")

    return page


@pytest.mark.parametrize(("page", "status"), [("http-only", "ok"), ("other", "unknown")])
def test_high_error_rate_on_other_metric_names(server, tmp_path, pg_cluster,
                                               pg_passwords, page, status):
    _v29(server).route("GET", "/metrics", 200,
                               _http_only() if page == "http-only" else OTHER_METRICS)
    inv = _inventory(server, tmp_path, pg_cluster, pg_passwords)
    result, data = _run("high-error-rate", inv, tmp_path / "reports", "-p", "window_s", "1")
    assert "Traceback" not in result.stderr and "TypeError" not in json.dumps(data)
    assert not [f for f in data["findings"] if f["check"] == "notebook.error"], data
    rate = next(f for f in data["findings"] if f["check"] == "errors.rate")
    assert rate["status"] == status, rate
    assert "fraiseql_graphql_queries_total" in rate["summary"], rate
    text = json.dumps(data)
    assert "no /metrics page" not in text and "neither /metrics" not in text


def test_service_down_with_readiness_404(server, tmp_path, pg_cluster, pg_passwords):
    server.route("GET", "/health", 200, {"status": "healthy", "version": "2.9.0"})
    inv = _inventory(server, tmp_path, pg_cluster, pg_passwords)
    result, data = _run("service-down", inv, tmp_path / "reports")
    by = {f["check"]: f for f in data["findings"]}
    assert by["diagnosis"]["evidence"]["root_cause"] != "dependency_unhealthy", by["diagnosis"]
    assert "fails: None" not in json.dumps(data)
    reach = by["database.reachable"]
    assert not reach["evidence"].get("skipped"), reach
    assert reach["status"] == "ok"


@pytest.mark.parametrize(("runbook", "check", "params"), [
    ("connection-pool-exhaustion", "pool.gauges", ("-p", "observe_s", "1")),
    ("high-query-latency", "latency.pool", ("-p", "window_s", "1")),
])
def test_pool_steps_on_other_metric_names(server, tmp_path, pg_cluster, pg_passwords,
                                          runbook, check, params):
    """/metrics answered, without the pool gauges: the step names the series it looked for,
    never "no /metrics page" or "neither /metrics nor the admin API answered"."""
    _v29(server)
    inv = _inventory(server, tmp_path, pg_cluster, pg_passwords)
    result, data = _run(runbook, inv, tmp_path / "reports", *params)
    assert "Traceback" not in result.stderr
    step = next(f for f in data["findings"] if f["check"] == check)
    assert "fraiseql_db_pool_requests_waiting" in step["summary"], step
    text = json.dumps(data)
    assert "no /metrics page" not in text and "neither /metrics" not in text
