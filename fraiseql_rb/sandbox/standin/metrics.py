"""Metrics (metrics_server.rs: MetricsCollector, Histogram, OperationMetricsRegistry,
PrometheusMetrics::to_prometheus_format; routes/metrics.rs: the extra blocks it appends,
/metrics/json).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_OPERATIONS = 500  # metrics_server.rs: OperationMetricsRegistry::default() cardinality guard

_BUCKET_BOUNDS_US = (
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
)
_BUCKET_LABELS = ("0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
                  "5")


def _rust_f64(value: float) -> str:
    """Format a float as Rust's ``{}`` does (``0`` not ``0.0``, never an exponent)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return str(int(value))
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.17f}".rstrip("0").rstrip(".")
    return text


class _Histogram:
    """The server's 11-bucket histogram: per-bucket counts, cumulated when rendered."""

    def __init__(self) -> None:
        self.count = 0
        self.sum_us = 0
        self.buckets = [0] * len(_BUCKET_BOUNDS_US)
        self.errors = 0

    def observe(self, duration_us: int, is_error: bool = False) -> None:
        self.count += 1
        self.sum_us += duration_us
        if is_error:
            self.errors += 1
        for i, bound in enumerate(_BUCKET_BOUNDS_US):
            if duration_us <= bound:
                self.buckets[i] += 1
                return

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for label, n in zip(_BUCKET_LABELS, self.buckets, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{label}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        brace = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{brace} {self.sum_us / 1_000_000:.6f}")
        out.append(f"{name}_count{brace} {self.count}")
        return out


@dataclass
class PoolSnapshot:
    """Pool figures sampled live for /health, /metrics and admin (psycopg_pool stats)."""

    total: int = 0
    idle: int = 0
    active: int = 0
    waiting: int = 0
    max_size: int = 0


class Metrics:
    """Every counter the stand-in exports, behind one lock (requests are served by threads)."""

    COUNTERS = (
        "queries_total", "queries_success", "queries_error", "queries_duration_us",
        "db_queries_total", "db_queries_duration_us", "validation_errors_total",
        "parse_errors_total", "execution_errors_total", "http_requests_total",
        "http_responses_2xx", "http_responses_4xx", "http_responses_5xx", "cache_hits",
        "cache_misses", "apq_hits", "apq_misses", "apq_stored", "schema_reloads_total",
        "schema_reload_errors_total", "multi_root_queries_total", "queries_cost_total",
        "jwt_replay_rejected_total", "jwt_replay_cache_errors_total",
        "rate_limit_redis_errors_total",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: dict[str, int] = dict.fromkeys(self.COUNTERS, 0)
        self._http = _Histogram()
        self._db = _Histogram()
        self._ops: dict[str, _Histogram] = {}
        self._overflow = _Histogram()
        # (monotonic time, duration ms, is_error) of recent GraphQL queries, for admin summaries.
        self._recent: deque[tuple[float, float, bool]] = deque(maxlen=20_000)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._c[key] += delta

    def get(self, key: str) -> int:
        with self._lock:
            return self._c[key]

    def http_finished(self, status: int, duration_us: int) -> None:
        with self._lock:
            self._c["http_requests_total"] += 1
            bucket = {2: "http_responses_2xx", 4: "http_responses_4xx", 5: "http_responses_5xx"}
            key = bucket.get(status // 100)
            if key:
                self._c[key] += 1
            self._http.observe(duration_us)

    def db_observed(self, duration_us: int) -> None:
        with self._lock:
            self._db.observe(duration_us)

    def query_finished(self, operation: str | None, duration_us: int, is_error: bool) -> None:
        """Record one executed GraphQL query (success or execution error), as the handler does."""
        with self._lock:
            self._c["queries_duration_us"] += duration_us
            if is_error:
                self._c["queries_error"] += 1
                self._c["execution_errors_total"] += 1
            else:
                self._c["queries_success"] += 1
                self._c["db_queries_total"] += 1
                self._c["db_queries_duration_us"] += duration_us
            if operation is not None:
                name = operation or "__anonymous__"
                hist = self._ops.get(name)
                if hist is None:
                    if len(self._ops) >= MAX_OPERATIONS:
                        hist = self._overflow
                    else:
                        hist = self._ops[name] = _Histogram()
                hist.observe(duration_us, is_error)
            self._recent.append((time.monotonic(), duration_us / 1000.0, is_error))

    def cache_hit_ratio(self) -> float | None:
        with self._lock:
            total = self._c["cache_hits"] + self._c["cache_misses"]
            return self._c["cache_hits"] / total if total else None

    def summary(self) -> dict[str, Any]:
        """Latency percentiles and error rate over the last five minutes (admin summary)."""
        cutoff = time.monotonic() - 300.0
        with self._lock:
            recent = [(ms, err) for t, ms, err in self._recent if t >= cutoff]
            lifetime_errors = self._c["queries_error"]
        durations = sorted(ms for ms, _ in recent)

        def pct(p: float) -> float | None:
            if not durations:
                return None
            idx = min(len(durations) - 1, max(0, math.ceil(p * len(durations)) - 1))
            return round(durations[idx], 3)

        errors_5m = sum(1 for _, err in recent if err)
        return {
            "latency": {"p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)},
            "errors": {"lifetime": lifetime_errors, "rate_5m": round(errors_5m / 300.0, 6)},
        }

    def json_summary(self, pool: PoolSnapshot) -> dict[str, Any]:
        """``/metrics/json`` (routes/metrics.rs, MetricsResponse), fields in the same order."""
        with self._lock:
            c = dict(self._c)
        return {
            "queries_total": c["queries_total"],
            "queries_success": c["queries_success"],
            "queries_error": c["queries_error"],
            "avg_query_duration_ms": _avg_ms(c["queries_duration_us"], c["queries_total"]),
            "cache_hit_ratio": _ratio(c["cache_hits"], c["cache_misses"]),
            "pool_connections_total": pool.total,
            "pool_connections_idle": pool.idle,
            "pool_connections_active": pool.active,
            "pool_requests_waiting": pool.waiting,
        }

    def render(self, pool: PoolSnapshot, recommended_pool_size: int | None,
               cost_metric: bool = True) -> str:
        """The Prometheus text the real ``/metrics`` handler assembles, block by block;
        without `cost_metric` as releases up to v2.14.1, which lack the cost counter."""
        with self._lock:
            c = dict(self._c)
            http_lines = self._http.lines("fraiseql_http_request_duration_seconds")
            db_lines = self._db.lines("fraiseql_database_query_duration_seconds")
            ops = sorted(self._ops.items())
            if self._overflow.count:
                ops.append(("__overflow__", self._overflow))
            op_lines: list[str] = []
            if ops:
                op_lines += [
                    "",
                    "# HELP fraiseql_query_duration_seconds Per-operation query duration "
                    "histogram",
                    "# TYPE fraiseql_query_duration_seconds histogram",
                ]
                for name, hist in ops:
                    op_lines += hist.lines(
                        "fraiseql_query_duration_seconds", f'operation="{_label(name)}"'
                    )
                op_lines += [
                    "",
                    "# HELP fraiseql_query_errors_total Per-operation query error count",
                    "# TYPE fraiseql_query_errors_total counter",
                ]
                op_lines += [
                    f'fraiseql_query_errors_total{{operation="{_label(name)}"}} {hist.errors}'
                    for name, hist in ops
                ]
        out: list[str] = []

        def block(name: str, kind: str, help_text: str, value: str) -> None:
            out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}",
                        ""])

        # PrometheusMetrics::to_prometheus_format (metrics_server.rs)
        block("fraiseql_graphql_queries_total", "counter", "Total GraphQL queries executed",
              str(c["queries_total"]))
        block("fraiseql_graphql_queries_success", "counter", "Total successful GraphQL queries",
              str(c["queries_success"]))
        block("fraiseql_graphql_queries_error", "counter", "Total failed GraphQL queries",
              str(c["queries_error"]))
        block("fraiseql_graphql_query_duration_ms", "gauge",
              "Average query execution time in milliseconds",
              _rust_f64(_avg_ms(c["queries_duration_us"], c["queries_total"])))
        block("fraiseql_database_queries_total", "counter", "Total database queries executed",
              str(c["db_queries_total"]))
        block("fraiseql_database_query_duration_ms", "gauge",
              "Average database query time in milliseconds",
              _rust_f64(_avg_ms(c["db_queries_duration_us"], c["db_queries_total"])))
        block("fraiseql_validation_errors_total", "counter", "Total validation errors",
              str(c["validation_errors_total"]))
        block("fraiseql_parse_errors_total", "counter", "Total parse errors",
              str(c["parse_errors_total"]))
        block("fraiseql_execution_errors_total", "counter", "Total execution errors",
              str(c["execution_errors_total"]))
        block("fraiseql_http_requests_total", "counter", "Total HTTP requests",
              str(c["http_requests_total"]))
        block("fraiseql_http_responses_2xx", "counter", "Total 2xx HTTP responses",
              str(c["http_responses_2xx"]))
        block("fraiseql_http_responses_4xx", "counter", "Total 4xx HTTP responses",
              str(c["http_responses_4xx"]))
        block("fraiseql_http_responses_5xx", "counter", "Total 5xx HTTP responses",
              str(c["http_responses_5xx"]))
        block("fraiseql_cache_hits", "counter", "Total cache hits", str(c["cache_hits"]))
        block("fraiseql_cache_misses", "counter", "Total cache misses", str(c["cache_misses"]))
        block("fraiseql_cache_hit_ratio", "gauge", "Cache hit ratio (0-1)",
              f"{_ratio(c['cache_hits'], c['cache_misses']):.3f}")
        # Blocks routes/metrics.rs appends (feature-gated ones as a default build has them).
        block("fraiseql_rate_limit_redis_errors_total", "counter",
              "Total Redis rate limiter fail-open events (Redis unreachable)",
              str(c["rate_limit_redis_errors_total"]))
        block("fraiseql_apq_hits_total", "counter", "Total APQ cache hits", str(c["apq_hits"]))
        block("fraiseql_apq_misses_total", "counter", "Total APQ cache misses",
              str(c["apq_misses"]))
        block("fraiseql_apq_stored_total", "counter", "Total APQ queries stored",
              str(c["apq_stored"]))
        block("fraiseql_db_pool_connections_total", "gauge", "Total connections in pool",
              str(pool.total))
        block("fraiseql_db_pool_connections_idle", "gauge", "Idle (available) connections",
              str(pool.idle))
        block("fraiseql_db_pool_connections_active", "gauge", "Active (in-use) connections",
              str(pool.active))
        block("fraiseql_db_pool_requests_waiting", "gauge", "Requests waiting for a connection",
              str(pool.waiting))
        if recommended_pool_size is not None:  # only with [pool_tuning] enabled, as the server
            block("fraiseql_pool_tuning_adjustments_total", "counter",
                  "Total pool resize operations applied or recommended", "0")
            block("fraiseql_pool_recommended_size", "gauge",
                  "Current recommended connection pool size", str(recommended_pool_size))
        out.extend(op_lines[1:] + [""] if op_lines else [])
        block("fraiseql_multi_root_queries_total", "counter",
              "Total multi-root GraphQL queries dispatched via parallel execution",
              str(c["multi_root_queries_total"]))
        out += [
            "# HELP fraiseql_ws_connections_total Total WebSocket subscription connections",
            "# TYPE fraiseql_ws_connections_total counter",
            'fraiseql_ws_connections_total{result="accepted"} 0',
            'fraiseql_ws_connections_total{result="rejected"} 0',
            "",
            "# HELP fraiseql_ws_subscriptions_total Total subscription registrations",
            "# TYPE fraiseql_ws_subscriptions_total counter",
            'fraiseql_ws_subscriptions_total{result="accepted"} 0',
            'fraiseql_ws_subscriptions_total{result="rejected"} 0',
            "",
            "# HELP fraiseql_http_request_duration_seconds HTTP request duration",
            "# TYPE fraiseql_http_request_duration_seconds histogram",
            *http_lines,
            "",
            "# HELP fraiseql_database_query_duration_seconds Database query duration",
            "# TYPE fraiseql_database_query_duration_seconds histogram",
            *db_lines,
            "",
        ]
        block("fraiseql_schema_reloads_total", "counter", "Total successful schema reloads",
              str(c["schema_reloads_total"]))
        block("fraiseql_schema_reload_errors_total", "counter",
              "Total failed schema reload attempts", str(c["schema_reload_errors_total"]))
        block("fraiseql_jwt_replay_rejected_total", "counter",
              "Total JWTs rejected as replays", str(c["jwt_replay_rejected_total"]))
        block("fraiseql_jwt_replay_cache_errors_total", "counter",
              "Total JWT replay cache errors", str(c["jwt_replay_cache_errors_total"]))
        if cost_metric:
            block("fraiseql_graphql_queries_cost_total", "counter",
                  "Running sum of estimated GraphQL query cost", str(c["queries_cost_total"]))
        return "\n".join(out)

    def render_generic(self) -> str:
        """What a server that is not v2 (or a proxy in front of one) might export: generic
        HTTP names only, no ``fraiseql_*`` family (the ``foreign`` release)."""
        with self._lock:
            c = dict(self._c)
            http_lines = self._http.lines("http_request_duration_seconds")
        out = ["# HELP http_requests_total Total HTTP requests by status class",
               "# TYPE http_requests_total counter"]
        out += [f'http_requests_total{{status="{klass}"}} {c[f"http_responses_{klass}"]}'
                for klass in ("2xx", "4xx", "5xx")]
        out += ["", "# HELP http_request_duration_seconds HTTP request duration",
                "# TYPE http_request_duration_seconds histogram", *http_lines, ""]
        return "\n".join(out)


def _avg_ms(total_us: int, count: int) -> float:
    return (total_us / count) / 1000.0 if count else 0.0


def _ratio(hits: int, misses: int) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
