"""The metric catalog: concepts resolved from a real stand-in scrape (v2 names) and from a
page in the runbook's vocabulary; quantile and rate math checked against hand computation."""

from __future__ import annotations

import math
import ssl
from pathlib import Path

import httpx
import pytest

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.sandbox.cluster import free_port
from fraiseql_rb.targets import metrics

RUNBOOK_PAGE = Path(__file__).parent / "data" / "metrics" / "runbook-names.prom"

# What the interface page says the server exports, by concept: a live scrape must find each.
FROM_STANDIN = (
    "queries_total", "queries_success", "queries_error", "query_errors_by_operation",
    "parse_errors", "validation_errors", "execution_errors", "query_duration",
    "query_duration_avg", "query_cost", "pool_active", "pool_idle", "pool_total",
    "pool_waiting", "db_queries_total", "db_query_duration", "db_query_duration_avg",
    "db_errors", "cache_hits", "cache_misses", "cache_hit_ratio", "auth_failures",
    "rate_limited", "rate_limit_fail_open", "sql_injection_attempts", "csrf_failures",
    "jwt_replays_rejected", "http_requests", "http_2xx", "http_4xx", "http_5xx",
    "http_request_duration", "schema_reloads", "schema_reload_errors", "apq_hits",
    "apq_misses", "apq_stored", "ws_connections",
)
# Concepts the runbook-names page carries under the runbook's own names.
FROM_RUNBOOK_PAGE = (
    "queries_total", "queries_success", "queries_error", "query_errors_by_operation",
    "query_duration", "query_cost", "pool_active", "pool_idle", "pool_total",
    "db_query_duration", "db_errors", "cache_hits", "cache_misses", "auth_failures",
    "rate_limited", "sql_injection_attempts", "csrf_failures", "resident_memory",
    "virtual_memory",
)
# Every name runbook §3.1 lists.
RUNBOOK_3_1 = (
    "fraiseql_queries_total", "fraiseql_query_duration_seconds", "fraiseql_query_complexity",
    "fraiseql_db_connections", "fraiseql_db_query_duration_seconds", "fraiseql_db_errors_total",
    "fraiseql_cache_hits_total", "fraiseql_cache_misses_total", "fraiseql_cache_hit_ratio",
    "fraiseql_auth_failures_total", "fraiseql_rate_limit_exceeded_total",
    "fraiseql_sql_injection_attempts_total", "fraiseql_csrf_failures_total",
    "node_cpu_seconds_total", "node_memory_bytes", "node_network_bytes_total",
    "node_disk_io_bytes_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
)


# ---- the table -----------------------------------------------------------------------------


def test_catalog_is_consistent() -> None:
    names = [c.name for c in metrics.CATALOG]
    assert len(names) == len(set(names))
    for c in metrics.CATALOG:
        assert c.v2 or c.exporter or c.runbook, c.name
        if c.approximate or not (c.v2 or c.exporter):
            assert c.note, f"{c.name} needs a note saying what it approximates or lacks"
    table = metrics.catalog_table()
    assert list(table["concept"]) == names
    assert {"kind", "unit", "v2 names", "runbook names", "approximate", "note"} <= set(table)


def test_every_runbook_3_1_name_has_a_concept() -> None:
    for name in RUNBOOK_3_1:
        assert metrics.lookup(name) is not None, name


@pytest.mark.parametrize(("name", "real"), [
    ('fraiseql_db_connections{state="active"}', "fraiseql_db_pool_connections_active"),
    ('fraiseql_db_connections{state="idle"}', "fraiseql_db_pool_connections_idle"),
    ("fraiseql_db_connections", "fraiseql_db_pool_connections_total"),
    ("fraiseql_cache_hits_total", "fraiseql_cache_hits"),
    ("fraiseql_db_errors_total", "fraiseql_execution_errors_total"),
    ('fraiseql_queries_total{status="error"}', "fraiseql_graphql_queries_error"),
    ("fraiseql_queries_total", "fraiseql_graphql_queries_total"),
    ("fraiseql_db_query_duration_seconds_bucket",
     "fraiseql_database_query_duration_seconds_bucket"),
    ("fraiseql_query_duration_seconds_bucket", "fraiseql_query_duration_seconds_bucket"),
    ("fraiseql_cache_hit_ratio", "fraiseql_cache_hit_ratio"),
    ("node_memory_bytes", "node_memory_MemAvailable_bytes"),
    ("process_resident_memory_bytes", 'namedprocess_namegroup_memory_bytes{memtype="resident"}'),
    ("no_such_metric", None),
])
def test_real_name_for(name: str, real: str | None) -> None:
    assert metrics.real_name_for(name) == real


# ---- parsing and resolution ----------------------------------------------------------------


def test_counters_keep_their_exposed_names() -> None:
    """prometheus_client reports `fraiseql_cache_hits` as `fraiseql_cache_hits_total`;
    Prometheus stores what was exposed, so that is what the scrape must keep."""
    page = metrics.parse("# TYPE fraiseql_cache_hits counter\nfraiseql_cache_hits 7\n"
                         "# TYPE fraiseql_apq_hits_total counter\nfraiseql_apq_hits_total 2\n")
    assert page.names() == {"fraiseql_cache_hits", "fraiseql_apq_hits_total"}
    res = metrics.resolve(page, "cache_hits")
    assert (res.name, res.vocabulary) == ("fraiseql_cache_hits", "v2")
    assert metrics.value(page, "cache_hits") == 7


def test_counter_lookup_survives_the_other_total_spelling() -> None:
    page = metrics.parse("# TYPE fraiseql_apq_hits counter\nfraiseql_apq_hits 3\n")
    res = metrics.resolve(page, "apq_hits")
    assert (res.name, res.vocabulary) == ("fraiseql_apq_hits", "v2")
    assert metrics.value(page, "apq_hits") == 3


def test_runbook_page_resolves_in_the_runbook_vocabulary() -> None:
    page = metrics.parse(RUNBOOK_PAGE.read_text())
    for name in FROM_RUNBOOK_PAGE:
        res = metrics.resolve(page, name)
        assert res is not None, name
        assert res.vocabulary == "runbook", (name, res)
        assert res.approximate is False
    assert metrics.resolve(page, "cache_hit_ratio").vocabulary == "v2"  # same name in both
    assert metrics.resolve(page, "query_duration").kind == "summary"
    assert metrics.value(page, "queries_total") == 164
    assert metrics.value(page, "queries_error") == 4
    assert metrics.value(page, "queries_success") == 160
    assert metrics.by_label(page, "query_errors_by_operation", "operation") == {
        "users": 3, "posts": 1}
    assert (metrics.value(page, "pool_active"), metrics.value(page, "pool_idle"),
            metrics.value(page, "pool_total")) == (7, 13, 20)
    assert metrics.value(page, "cache_hits") == 300
    assert metrics.value(page, "resident_memory") == 2.5e8
    assert metrics.resolve(page, "pool_waiting") is None
    # summary quantiles: as exposed; several series give the worst; absent q gives None
    assert metrics.quantile(page, "query_duration", 0.99, operation="users") == 0.2
    assert metrics.quantile(page, "query_duration", 0.99) == 0.9
    assert metrics.quantile(page, "query_duration", 0.75) is None
    assert metrics.value(page, "query_duration") == 164  # observations


# ---- quantiles -----------------------------------------------------------------------------

# Cumulative buckets: operation a 10/30/38/40, operation b 0/0/10/10 (bounds .1, .5, 1, +Inf).
HISTOGRAM = """# TYPE fraiseql_query_duration_seconds histogram
fraiseql_query_duration_seconds_bucket{operation="a",le="0.1"} 10
fraiseql_query_duration_seconds_bucket{operation="a",le="0.5"} 30
fraiseql_query_duration_seconds_bucket{operation="a",le="1"} 38
fraiseql_query_duration_seconds_bucket{operation="a",le="+Inf"} 40
fraiseql_query_duration_seconds_sum{operation="a"} 12
fraiseql_query_duration_seconds_count{operation="a"} 40
fraiseql_query_duration_seconds_bucket{operation="b",le="0.1"} 0
fraiseql_query_duration_seconds_bucket{operation="b",le="0.5"} 0
fraiseql_query_duration_seconds_bucket{operation="b",le="1"} 10
fraiseql_query_duration_seconds_bucket{operation="b",le="+Inf"} 10
fraiseql_query_duration_seconds_sum{operation="b"} 7
fraiseql_query_duration_seconds_count{operation="b"} 10
"""


@pytest.mark.parametrize(("q", "expected"), [
    (0.0, 0.0),      # rank 0 falls in the first bucket, at its start
    (0.1, 0.04),     # rank 4 of 10 in (0, 0.1]
    (0.25, 0.1),     # rank 10 = the first bucket's full count
    (0.5, 0.3),      # rank 20: 10 into (0.1, 0.5] which holds 20 → 0.1 + 0.4 * 0.5
    (0.9, 0.875),    # rank 36: 6 into (0.5, 1] which holds 8 → 0.5 + 0.5 * 0.75
    (0.99, 1.0),     # rank 39.6 lands in +Inf: the highest finite bound
    (1.0, 1.0),
])
def test_histogram_quantile_matches_prometheus(q: float, expected: float) -> None:
    page = metrics.parse(HISTOGRAM)
    assert metrics.quantile(page, "query_duration", q, operation="a") == pytest.approx(expected)


def test_histogram_quantile_sums_series_by_le() -> None:
    page = metrics.parse(HISTOGRAM)
    # buckets 10/30/48/50: rank 25 is 15 into (0.1, 0.5] holding 20 → 0.1 + 0.4 * 0.75
    assert metrics.quantile(page, "query_duration", 0.5) == pytest.approx(0.4)
    # b alone: rank 5 is 5 into (0.5, 1] holding 10
    assert metrics.quantile(page, "query_duration", 0.5, operation="b") == pytest.approx(0.75)
    assert metrics.value(page, "query_duration") == 50
    assert metrics.by_label(page, "query_duration", "operation") == {"a": 40, "b": 10}


def test_histogram_quantile_edge_cases() -> None:
    empty = metrics.parse(HISTOGRAM.replace(" 10\n", " 0\n").replace(" 30\n", " 0\n")
                          .replace(" 38\n", " 0\n").replace(" 40\n", " 0\n"))
    assert metrics.quantile(empty, "query_duration", 0.5) is None
    assert metrics.histogram_quantile(0.5, []) is None
    assert metrics.histogram_quantile(0.5, [(0.1, 1), (1, 2)]) is None  # no +Inf bucket
    assert metrics.histogram_quantile(0.5, [(math.inf, 5)]) is None     # one bucket
    # a scrape racing an observation can break monotonicity; Prometheus repairs it
    assert metrics.histogram_quantile(0.5, [(1, 4), (2, 3), (math.inf, 8)]) == pytest.approx(1)
    with pytest.raises(ValueError):
        metrics.histogram_quantile(1.5, [(1, 1), (math.inf, 1)])
    with pytest.raises(ValueError):
        metrics.quantile(metrics.parse("fraiseql_db_pool_connections_active 3\n"), "pool_active",
                         0.5)


def test_quantile_between_uses_bucket_increases() -> None:
    earlier = metrics.parse(HISTOGRAM, taken_at=0)
    # ten more observations of a, all in (0.5, 1]
    later = metrics.parse(HISTOGRAM.replace('le="1"} 38', 'le="1"} 48')
                          .replace('a",le="+Inf"} 40', 'a",le="+Inf"} 50'), taken_at=60)
    assert metrics.quantile_between(earlier, later, "query_duration", 0.5,
                                    operation="a") == pytest.approx(0.75)
    # over the lifetime the same page says 0.4: the window is what shows a fresh slowdown
    assert metrics.quantile(later, "query_duration", 0.5, operation="a") == pytest.approx(0.4)
    idle = metrics.parse(HISTOGRAM, taken_at=60)
    assert metrics.quantile_between(earlier, idle, "query_duration", 0.5) is None  # no traffic
    restarted = metrics.parse(HISTOGRAM.replace(" 10\n", " 1\n").replace(" 30\n", " 2\n")
                              .replace(" 38\n", " 2\n").replace(" 40\n", " 2\n"), taken_at=60)
    # counts fell: the server restarted, so the later buckets are the increase (1, 2, 2, 2)
    assert metrics.quantile_between(earlier, restarted, "query_duration", 0.5,
                                    operation="a") == pytest.approx(0.1)


# ---- rates ---------------------------------------------------------------------------------


def test_rate_handles_counter_resets() -> None:
    before = metrics.parse("fraiseql_graphql_queries_total 100\n", taken_at=0)
    grew = metrics.parse("fraiseql_graphql_queries_total 160\n", taken_at=10)
    restarted = metrics.parse("fraiseql_graphql_queries_total 30\n", taken_at=10)
    assert metrics.rate(before, grew, "queries_total") == pytest.approx(6.0)
    assert metrics.rate(before, restarted, "queries_total") == pytest.approx(3.0)


def test_rate_per_series_with_a_reset_and_a_new_series() -> None:
    before = metrics.parse('fraiseql_query_errors_total{operation="a"} 5\n'
                           'fraiseql_query_errors_total{operation="b"} 7\n', taken_at=0)
    after = metrics.parse('fraiseql_query_errors_total{operation="a"} 8\n'
                          'fraiseql_query_errors_total{operation="b"} 2\n'
                          'fraiseql_query_errors_total{operation="c"} 4\n', taken_at=10)
    assert metrics.rate(before, after, "query_errors_by_operation") == pytest.approx(0.9)
    assert metrics.rate(before, after, "query_errors_by_operation",
                        operation="b") == pytest.approx(0.2)


def test_rate_refuses_gauges_and_reversed_scrapes() -> None:
    gauge = metrics.parse("fraiseql_db_pool_connections_active 3\n", taken_at=0)
    with pytest.raises(ValueError, match="gauge"):
        metrics.rate(gauge, gauge, "pool_active")
    a = metrics.parse("fraiseql_cache_hits 1\n", taken_at=5)
    b = metrics.parse("fraiseql_cache_hits 2\n", taken_at=1)
    with pytest.raises(ValueError):
        metrics.rate(a, b, "cache_hits")
    assert metrics.rate(b, a, "apq_hits") is None  # absent concept


def test_scrape_failure_is_a_clear_error() -> None:
    gone = inventory.Target("gone", {"fraiseql_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(metrics.ScrapeError, match="unreachable"):
        metrics.scrape(RunContext.adhoc(target=gone))
    with pytest.raises(metrics.ScrapeError, match="not Prometheus text"):
        metrics.parse("fraiseql_x{ 1\n")


# ---- a live stand-in -----------------------------------------------------------------------


def _traffic(target: inventory.Target) -> None:
    """GraphQL traffic that moves counters: successes, a cache hit, parse and validation
    errors."""
    verify = ssl.create_default_context(cafile=target.get("ca_bundle"))
    with httpx.Client(base_url=target.fraiseql_url, verify=verify, timeout=10) as http:
        for _ in range(3):
            http.post("/graphql", json={"query": "{ users(limit: 2) { id name } }"})
        http.post("/graphql", json={"query": "query Posts { posts(limit: 1) { title } }",
                                    "operationName": "Posts"})
        http.post("/graphql", json={"query": "{ users { id "})
        http.post("/graphql", json={"query": "{ nope { id } }"})


@pytest.mark.sandbox
def test_catalog_resolves_a_live_standin_scrape(healthy_sandbox) -> None:
    target = inventory.load(healthy_sandbox.inventory).target("sandbox")
    ctx = RunContext.adhoc(target=target)
    before = metrics.scrape(ctx)
    _traffic(target)
    after = metrics.scrape(ctx)
    names = after.names()

    def exposed(ref: metrics.Ref, kind: str) -> bool:
        return (f"{ref.name}_bucket" if kind == "histogram" else ref.name) in names

    for c in metrics.CATALOG:  # whatever v2 name the stand-in exports resolves, as v2
        present = [r for r in c.v2 if exposed(r, r.kind or c.kind)]
        res = metrics.resolve(after, c)
        if present:
            assert res is not None and res.vocabulary == "v2", c.name
            assert res.ref == present[0]
            assert res.approximate is c.approximate
    for name in FROM_STANDIN:
        assert metrics.resolve(after, name) is not None, f"stand-in should export {name}"
    assert metrics.resolve(after, "resident_memory") is None  # v2 exports no process_*
    assert "fraiseql_cache_hits" in names and "fraiseql_cache_hits_total" not in names

    def moved(name: str) -> float:
        return (metrics.value(after, name) or 0) - (metrics.value(before, name) or 0)

    assert moved("queries_total") >= 6
    assert moved("queries_error") >= 2
    assert moved("parse_errors") >= 1
    assert moved("validation_errors") >= 1
    assert moved("cache_hits") >= 1
    assert metrics.rate(before, after, "queries_total") > 0
    assert metrics.rate(before, after, "http_requests") > 0
    assert metrics.value(after, "pool_total") >= metrics.value(after, "pool_active")
    ops = metrics.by_label(after, "query_duration", "operation")
    assert ops and sum(ops.values()) == metrics.value(after, "query_duration")
    p99 = metrics.quantile_between(before, after, "query_duration", 0.99)
    assert p99 is not None and 0 < p99 <= 5  # buckets stop at 5 s
    assert 0 < metrics.quantile(after, "query_duration", 0.5) <= 5
    assert 0 <= metrics.value(after, "cache_hit_ratio") <= 1
    table = metrics.overview(after)
    assert table.set_index("concept").loc["db_errors", "approximate"]


@pytest.mark.sandbox
def test_scrape_with_a_wrong_token_names_the_fix(healthy_sandbox) -> None:
    target = inventory.load(healthy_sandbox.inventory).target("sandbox")
    raw = {k: v for k, v in target.raw.items() if not k.startswith("metrics_token")}
    wrong = inventory.Target("sandbox", {**raw, "metrics_token": "not-the-token"},
                             target.base_dir)
    with pytest.raises(metrics.ScrapeError, match="HTTP 403.*rejected"):
        metrics.scrape(RunContext.adhoc(target=wrong))
