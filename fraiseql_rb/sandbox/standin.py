"""A stand-in FraiseQL v2 server for the drill sandbox.

The real server (Rust, ``fraiseql-server``) cannot be installed here, so the sandbox runs this
process instead. It speaks the v2 operational surface as the server's source defines it, so the
runbook library is exercised against the same paths, JSON shapes, status codes, metric names and
config keys it will meet in production:

    python -m fraiseql_rb.sandbox.standin --config server.toml [--state-dir DIR]

Facts were confirmed against the public repository fraiseql/fraiseql, under
``crates/fraiseql-server/src/``: ``routes/health.rs`` (health/readiness JSON), ``routes/metrics.rs``
and ``metrics_server.rs`` (exposition, names, TYPEs, buckets, /metrics/json),
``middleware/auth.rs`` (bearer auth, 401/403/429 limiter), ``middleware/metrics.rs`` (HTTP
counters), ``middleware/content_type.rs`` (415), ``error.rs`` (GraphQL error JSON and status
codes), ``routes/graphql/handler.rs`` and ``handler/stages.rs`` (pipeline, metric accounting,
introspection policy), ``routes/api/admin.rs`` and ``routes/api/types.rs`` (admin API),
``server_config/mod.rs`` and ``server_config/methods.rs`` (keys, defaults, refusals, validate);
and ``crates/fraiseql-core`` ``IntrospectionEnforcer`` (the introspection messages). Each block
names the file it mirrors. Behaviour is re-implemented, not copied; where the stand-in is
deliberately simpler than the real server the docstring says so.

``--state-dir DIR`` is where the sandbox drops fault flags: ``DIR/faults.json`` such as
``{"error-spike": {"operation": "posts"}, "memory-leak": {"bytes_per_request": 1048576}}``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import tomllib
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

VERSION = "2.15.0-standin"
DATABASE_TYPE = "PostgreSQL"
HEALTH_DB_TIMEOUT_SECS = 2.0
CACHE_TTL_SECS = 60  # routes/api/admin.rs: cache_stats reports the QueryCache's 60-second TTL
AUTH_WINDOW_SECS = 60  # middleware/auth.rs: ADMIN_AUTH_WINDOW_SECS
MAX_OPERATIONS = 500  # metrics_server.rs: OperationMetricsRegistry::default() cardinality guard
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # routes/metrics.rs sends exactly this
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
REDACTED = "[REDACTED]"

_log = logging.getLogger("fraiseql_standin")


# --------------------------------------------------------------------------------------------
# Configuration: the flat server config (server_config/mod.rs, ServerConfig) plus env overrides
# (the server's main: DATABASE_URL, FRAISEQL_BIND_ADDR, FRAISEQL_*), then ServerConfig::validate.
# --------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The config cannot be used; the message is one line and never contains a secret value."""


# Grouping tables a server config has never had, refused by name with the keys that do the job
# (server_config/methods.rs: REMOVED_SECTIONS, appended to serde's deny_unknown_fields error).
_REFUSED_SECTIONS = {
    "server": "`bind_addr`, `max_request_body_bytes`",
    "database": "`database_url`, `pool_max_size`, `pool_min_size`, `pool_timeout_secs`, "
                "`[database_tls]`",
    "cors": "`cors_enabled`, `cors_origins`",
    "rate_limit": "`[rate_limiting]`, and the compiled schema's `security.rate_limiting`",
    "cache": "`cache_enabled` (query result cache), `apq_enabled` (persisted queries)",
    "collation": "nothing — locale-aware collation was never wired to a config key",
}

# Top-level keys of ServerConfig and the value kind each accepts.
_TOP_LEVEL: dict[str, str] = {
    "schema_path": "str", "database_url": "str", "bind_addr": "addr", "flight_bind_addr": "addr",
    "cors_enabled": "bool", "cors_origins": "str_list", "compression_enabled": "bool",
    "tracing_enabled": "bool", "otlp_endpoint": "str", "otlp_export_timeout_secs": "int",
    "tracing_service_name": "str", "apq_enabled": "bool", "cache_enabled": "bool",
    "graphql_path": "path", "health_path": "path", "readiness_path": "path",
    "introspection_path": "path", "metrics_path": "path", "metrics_json_path": "path",
    "playground_path": "path", "playground_enabled": "bool", "playground_tool": "str",
    "subscription_path": "path", "subscriptions_enabled": "bool", "metrics_enabled": "bool",
    "metrics_token": "str", "admin_api_enabled": "bool", "admin_token": "str",
    "admin_readonly_token": "str", "admin_auth_max_failures": "int",
    "introspection_enabled": "bool", "introspection_require_auth": "bool",
    "metadata_require_auth": "bool", "design_api_require_auth": "bool", "pool_min_size": "int",
    "pool_max_size": "int", "pool_timeout_secs": "int", "require_json_content_type": "bool",
    "max_request_body_bytes": "int", "max_header_count": "int", "max_header_bytes": "int",
    "request_timeout_secs": "int", "max_get_query_bytes": "int", "security_contact": "str",
    "shutdown_timeout_secs": "int", "read_replica_urls": "str_list",
    "read_replica_pin_after_write_ms": "int", "read_replica_max_lag_ms": "int",
    "read_replica_health_probe_interval_ms": "int", "enable_graphql_incremental": "bool",
    "graphql_incremental_batch_size": "int",
}
# Tables: None = accepted as-is (the stand-in does not act on them).
_TABLES: dict[str, frozenset[str] | None] = {
    "tls": frozenset(
        {"enabled", "cert_path", "key_path", "require_client_cert", "client_ca_path",
         "min_version"}
    ),
    "database_tls": None, "rate_limiting": None, "auth": None, "auth_hs256": None,
    "observers": None, "pool_tuning": None, "admission_control": None, "validation": None,
    "storage": None, "session_state": None, "async_operations": None,
}
_KIND_NAMES = {
    "str": "a string", "int": "a non-negative integer", "bool": "a boolean",
    "str_list": "an array of strings", "addr": "a socket address like \"127.0.0.1:8000\"",
    "path": "a path starting with /",
}


@dataclass(frozen=True)
class TlsSettings:
    """The ``[tls]`` table (server_config/tls.rs, TlsServerConfig)."""

    enabled: bool = False
    cert_path: Path | None = None
    key_path: Path | None = None
    require_client_cert: bool = False
    client_ca_path: Path | None = None
    min_version: str = "1.2"


@dataclass
class Settings:
    """The effective server config after the file, the env overrides and validation."""

    bind_host: str = "127.0.0.1"
    bind_port: int = 8000
    database_url: str = "postgresql://localhost/fraiseql"
    schema_path: Path = Path("schema.compiled.json")
    schema_path_explicit: bool = False
    pool_min_size: int = 5
    pool_max_size: int = 20
    pool_timeout_secs: int = 30
    metrics_enabled: bool = False
    metrics_token: str | None = None
    admin_api_enabled: bool = False
    admin_token: str | None = None
    admin_readonly_token: str | None = None
    admin_auth_max_failures: int = 10
    introspection_enabled: bool = False
    introspection_require_auth: bool = True
    cors_enabled: bool = True
    cors_origins: list[str] = field(default_factory=list)
    playground_enabled: bool = False
    require_json_content_type: bool = True
    request_timeout_secs: int | None = None
    max_request_body_bytes: int = 1024 * 1024
    max_get_query_bytes: int = 100_000
    apq_enabled: bool = True
    cache_enabled: bool = True
    graphql_path: str = "/graphql"
    health_path: str = "/health"
    readiness_path: str = "/readiness"
    metrics_path: str = "/metrics"
    metrics_json_path: str = "/metrics/json"
    tls: TlsSettings = field(default_factory=TlsSettings)
    pool_tuning: dict[str, Any] = field(default_factory=dict)

    def routes_metrics(self) -> bool:
        """Whether /metrics is mounted: enabled *and* a token set (else 404)."""
        return self.metrics_enabled and bool(self.metrics_token)

    def routes_admin(self) -> bool:
        """Whether the admin API is mounted: enabled *and* a token set (else 404)."""
        return self.admin_api_enabled and bool(self.admin_token)

    @property
    def bind_addr(self) -> str:
        """``host:port`` as the real server prints a SocketAddr."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.bind_port}"


def _parse_socket_addr(text: str) -> tuple[str, int] | None:
    """Parse a Rust ``SocketAddr`` (an IP literal and a port; host names are not accepted)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", text.strip())
    if not m:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    port_num = int(port)
    return (host, port_num) if port_num <= 65535 else None


def _check_kind(name: str, value: Any, kind: str) -> None:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "bool": isinstance(value, bool),
        "str_list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "addr": isinstance(value, str) and _parse_socket_addr(value) is not None,
        "path": isinstance(value, str) and value.startswith("/"),
    }[kind]
    if not ok:
        raise ConfigError(
            f"Invalid TOML config: invalid value for `{name}`: expected {_KIND_NAMES[kind]}"
        )


def _parse_bool_env(name: str, value: str) -> bool:
    """Boolish env values as the server's CLI accepts them; anything else is false (warned)."""
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on", "y"):
        return True
    if low not in ("0", "false", "no", "off", "n", ""):
        _log.warning("unrecognised boolean in %s; treating it as false", name)
    return False


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read the config file, apply the env overrides and validate, as the real server does.

    Raises ConfigError (one line) for anything the real server refuses at start.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Cannot read config file: {exc.strerror or exc}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Invalid TOML config: {exc}") from None
    for key, value in raw.items():
        if key in _REFUSED_SECTIONS:
            raise ConfigError(
                f"Invalid TOML config: unknown field `{key}`; note: there is no `[{key}]` table "
                f"in a server config file; the keys are top-level. Use {_REFUSED_SECTIONS[key]}."
            )
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"Invalid TOML config: `{key}` must be a table")
            allowed = _TABLES[key]
            if allowed is not None:
                for sub in value:
                    if sub not in allowed:
                        raise ConfigError(
                            f"Invalid TOML config: unknown field `{sub}` in [{key}], expected "
                            f"one of {', '.join(sorted(allowed))}"
                        )
            continue
        if key not in _TOP_LEVEL:
            raise ConfigError(f"Invalid TOML config: unknown field `{key}`")
        _check_kind(key, value, _TOP_LEVEL[key])

    s = Settings()
    if "bind_addr" in raw:
        s.bind_host, s.bind_port = _parse_socket_addr(raw["bind_addr"])  # type: ignore[misc]
    for key in ("database_url", "metrics_token", "admin_token", "admin_readonly_token"):
        if key in raw:
            setattr(s, key, raw[key])
    if "schema_path" in raw:
        s.schema_path, s.schema_path_explicit = Path(raw["schema_path"]), True
    for key in (
        "pool_min_size", "pool_max_size", "pool_timeout_secs", "metrics_enabled",
        "admin_api_enabled", "admin_auth_max_failures", "introspection_enabled",
        "introspection_require_auth", "cors_enabled", "cors_origins", "playground_enabled",
        "require_json_content_type", "request_timeout_secs", "max_request_body_bytes",
        "max_get_query_bytes", "apq_enabled", "cache_enabled", "graphql_path", "health_path",
        "readiness_path", "metrics_path", "metrics_json_path",
    ):
        if key in raw:
            setattr(s, key, raw[key])
    tls = raw.get("tls") or {}
    s.tls = _tls_settings(tls)
    s.pool_tuning = dict(raw.get("pool_tuning") or {})

    # Env overrides, in the order the server's main applies them.
    if "DATABASE_URL" in environ:
        s.database_url = environ["DATABASE_URL"]
    if "FRAISEQL_BIND_ADDR" in environ:
        parsed = _parse_socket_addr(environ["FRAISEQL_BIND_ADDR"])
        if parsed:
            s.bind_host, s.bind_port = parsed
        else:
            _log.warning("Invalid FRAISEQL_BIND_ADDR, using %s", s.bind_addr)
    if "FRAISEQL_SCHEMA_PATH" in environ:
        s.schema_path, s.schema_path_explicit = Path(environ["FRAISEQL_SCHEMA_PATH"]), True
    if "FRAISEQL_METRICS_ENABLED" in environ:
        s.metrics_enabled = _parse_bool_env(
            "FRAISEQL_METRICS_ENABLED", environ["FRAISEQL_METRICS_ENABLED"]
        )
    if "FRAISEQL_METRICS_TOKEN" in environ:
        s.metrics_token = environ["FRAISEQL_METRICS_TOKEN"]
    if "FRAISEQL_ADMIN_API_ENABLED" in environ:
        s.admin_api_enabled = _parse_bool_env(
            "FRAISEQL_ADMIN_API_ENABLED", environ["FRAISEQL_ADMIN_API_ENABLED"]
        )
    if "FRAISEQL_ADMIN_TOKEN" in environ:
        s.admin_token = environ["FRAISEQL_ADMIN_TOKEN"]
    if "FRAISEQL_ADMIN_READONLY_TOKEN" in environ:
        s.admin_readonly_token = environ["FRAISEQL_ADMIN_READONLY_TOKEN"]
    if "FRAISEQL_INTROSPECTION_ENABLED" in environ:
        s.introspection_enabled = _parse_bool_env(
            "FRAISEQL_INTROSPECTION_ENABLED", environ["FRAISEQL_INTROSPECTION_ENABLED"]
        )
    if "FRAISEQL_INTROSPECTION_REQUIRE_AUTH" in environ:
        s.introspection_require_auth = _parse_bool_env(
            "FRAISEQL_INTROSPECTION_REQUIRE_AUTH", environ["FRAISEQL_INTROSPECTION_REQUIRE_AUTH"]
        )
    _validate(s, raw, environ)
    return s


def _tls_settings(tls: Mapping[str, Any]) -> TlsSettings:
    for key, kind in (("enabled", "bool"), ("require_client_cert", "bool"),
                      ("cert_path", "str"), ("key_path", "str"), ("client_ca_path", "str"),
                      ("min_version", "str")):
        if key in tls:
            _check_kind(f"tls.{key}", tls[key], kind)

    def _path(key: str) -> Path | None:
        return Path(tls[key]) if key in tls else None

    return TlsSettings(
        enabled=bool(tls.get("enabled", False)),
        cert_path=_path("cert_path"),
        key_path=_path("key_path"),
        require_client_cert=bool(tls.get("require_client_cert", False)),
        client_ca_path=_path("client_ca_path"),
        min_version=str(tls.get("min_version", "1.2")),
    )


def _validate(s: Settings, raw: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Mirror ServerConfig::validate (server_config/methods.rs): the same refusals, same order."""
    if s.metrics_enabled:
        if s.metrics_token is None:
            raise ConfigError(
                "metrics_enabled is true but metrics_token is not set. "
                "Set FRAISEQL_METRICS_TOKEN or metrics_token in config."
            )
        if len(s.metrics_token) < 16:
            raise ConfigError("metrics_token must be at least 16 characters for security.")
    if s.admin_api_enabled:
        if s.admin_token is None:
            raise ConfigError(
                "admin_api_enabled is true but admin_token is not set. "
                "Set FRAISEQL_ADMIN_TOKEN or admin_token in config."
            )
        if len(s.admin_token) < 32:
            raise ConfigError("admin_token must be at least 32 characters for security.")
        if s.admin_readonly_token is not None:
            if len(s.admin_readonly_token) < 32:
                raise ConfigError(
                    "admin_readonly_token must be at least 32 characters for security."
                )
            if s.admin_readonly_token == s.admin_token:
                raise ConfigError("admin_readonly_token must differ from admin_token.")
    tls = s.tls
    if tls.enabled:
        if tls.cert_path is None or not tls.cert_path.exists():
            raise ConfigError(f"TLS enabled but certificate file not found: {tls.cert_path}")
        if tls.key_path is None or not tls.key_path.exists():
            raise ConfigError(f"TLS enabled but key file not found: {tls.key_path}")
        if tls.min_version not in ("1.2", "1.3"):
            raise ConfigError("TLS min_version must be '1.2' or '1.3'")
        if tls.require_client_cert:
            if tls.client_ca_path is None:
                raise ConfigError("require_client_cert is true but client_ca_path is not set")
            if not tls.client_ca_path.exists():
                raise ConfigError(f"Client CA file not found: {tls.client_ca_path}")
    replicas = raw.get("read_replica_urls", [])
    for key, what in (("read_replica_pin_after_write_ms", "the pin window"),
                      ("read_replica_max_lag_ms", "a staleness budget"),
                      ("read_replica_health_probe_interval_ms", "a probe interval")):
        if key in raw and not replicas:
            raise ConfigError(f"{key} is set but read_replica_urls is empty — {what} only "
                              "applies to replica routing.")
    if any(not u.strip() for u in replicas):
        raise ConfigError("read_replica_urls contains an empty URL.")
    if s.pool_max_size == 0:
        raise ConfigError("pool_max_size must be at least 1")
    if s.pool_min_size > s.pool_max_size:
        raise ConfigError(
            f"pool_min_size ({s.pool_min_size}) must not exceed pool_max_size "
            f"({s.pool_max_size})"
        )
    db_tls = raw.get("database_tls") or {}
    mode = db_tls.get("postgres_ssl_mode", "prefer")
    if mode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise ConfigError(
            "Invalid postgres_ssl_mode. Must be one of: disable, allow, prefer, require, "
            "verify-ca, verify-full"
        )
    env_mode = environ.get("FRAISEQL_ENV", "production").strip().lower()
    if env_mode not in ("development", "dev"):
        if s.playground_enabled:
            raise ConfigError(
                "playground_enabled is true in production mode. Disable the playground or set "
                "FRAISEQL_ENV=development."
            )
        if s.cors_enabled and not s.cors_origins:
            raise ConfigError(
                "cors_enabled is true but cors_origins is empty in production mode. Configure "
                "cors_origins, or disable CORS, or set FRAISEQL_ENV=development."
            )


def redact_database_url(url: str) -> str:
    """``postgresql://user:***@host:port/db``: enough to say where, never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return REDACTED
    user = parts.get("user") or ""
    secret = ":***" if parts.get("password") else ""
    auth = f"{user}{secret}@" if user or secret else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{auth}{host}{port}/{parts.get('dbname') or ''}"


# --------------------------------------------------------------------------------------------
# Metrics (metrics_server.rs: MetricsCollector, Histogram, OperationMetricsRegistry,
# PrometheusMetrics::to_prometheus_format; routes/metrics.rs: the extra blocks it appends).
# --------------------------------------------------------------------------------------------

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

    def render(self, pool: PoolSnapshot, recommended_pool_size: int | None) -> str:
        """The Prometheus text the real ``/metrics`` handler assembles, block by block."""
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
        block("fraiseql_graphql_queries_cost_total", "counter",
              "Running sum of estimated GraphQL query cost", str(c["queries_cost_total"]))
        return "\n".join(out)


def _avg_ms(total_us: int, count: int) -> float:
    return (total_us / count) / 1000.0 if count else 0.0


def _ratio(hits: int, misses: int) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------------------------
# A small GraphQL front end: enough of the language for the probes and queries runbooks send.
# --------------------------------------------------------------------------------------------


class GraphQLSyntaxError(Exception):
    """A document that does not parse; carries the 1-based location of the offending token."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line, self.column = line, column


class GraphQLValidationError(Exception):
    """A well-formed document the schema cannot answer (unknown field, bad argument, ...)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line, self.column = line, column


@dataclass(frozen=True)
class Var:
    """A ``$variable`` reference inside an argument value."""

    name: str


@dataclass(frozen=True)
class EnumValue:
    """A bare enum literal (kept distinct from strings, as GraphQL does)."""

    value: str


@dataclass
class Field:
    """One selected field, its arguments, directives and sub-selection."""

    name: str
    alias: str | None
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Field] | None
    line: int
    column: int

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class Operation:
    """An executable operation of a document."""

    kind: str
    name: str | None
    variables: dict[str, tuple[str, Any]]
    selections: list[Field]


_TOKEN_RE = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&():=@\[\]{}|])
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<block>\"\"\"(?:\\\"\"\"|[^"]|"(?!""))*\"\"\")
  | (?P<string>"(?:[^"\\\n\r]|\\.)*")
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    value: str
    pos: int


class _Parser:
    """Recursive-descent parser for executable GraphQL documents (no fragments)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", source)]
        self.tokens = list(self._tokenize())
        self.i = 0

    def _where(self, pos: int) -> tuple[int, int]:
        line = bisect_right(self._line_starts, pos)
        return line, pos - self._line_starts[line - 1] + 1

    def _error(self, message: str, pos: int) -> GraphQLSyntaxError:
        line, col = self._where(pos)
        return GraphQLSyntaxError(f"Syntax Error: {message}", line, col)

    def _tokenize(self) -> Iterator[_Token]:
        pos, n = 0, len(self.source)
        while pos < n:
            m = _TOKEN_RE.match(self.source, pos)
            if not m:
                raise self._error(f"Unexpected character {self.source[pos]!r}.", pos)
            kind = m.lastgroup or ""
            if kind != "skip":
                yield _Token(kind, m.group(), pos)
            pos = m.end()
        yield _Token("eof", "", n)

    def _peek(self) -> _Token:
        return self.tokens[self.i]

    def _next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    @staticmethod
    def _describe(tok: _Token) -> str:
        return "<EOF>" if tok.kind == "eof" else f'"{tok.value}"'

    def _is(self, value: str) -> bool:
        tok = self._peek()
        return tok.kind in ("punct", "spread") and tok.value == value

    def _expect(self, value: str) -> _Token:
        tok = self._next()
        if tok.kind not in ("punct", "spread") or tok.value != value:
            raise self._error(f'Expected "{value}", found {self._describe(tok)}.', tok.pos)
        return tok

    def _name(self) -> _Token:
        tok = self._next()
        if tok.kind != "name":
            raise self._error(f"Expected Name, found {self._describe(tok)}.", tok.pos)
        return tok

    def parse(self) -> list[Operation]:
        ops: list[Operation] = []
        while self._peek().kind != "eof":
            tok = self._peek()
            if self._is("{"):
                ops.append(Operation("query", None, {}, self._selection_set()))
            elif tok.kind == "name" and tok.value in ("query", "mutation", "subscription"):
                ops.append(self._operation())
            elif tok.kind == "name" and tok.value == "fragment":
                line, col = self._where(tok.pos)
                raise GraphQLValidationError("Fragments are not supported by this server.",
                                             line, col)
            else:
                raise self._error(f"Unexpected {self._describe(tok)}.", tok.pos)
        if not ops:
            raise self._error("Unexpected <EOF>.", len(self.source))
        return ops

    def _operation(self) -> Operation:
        kind = self._next().value
        name = self._name().value if self._peek().kind == "name" else None
        variables: dict[str, tuple[str, Any]] = {}
        if self._is("("):
            self._next()
            while not self._is(")"):
                self._expect("$")
                var = self._name().value
                self._expect(":")
                type_ref = self._type_ref()
                default = None
                if self._is("="):
                    self._next()
                    default = self._value(const=True)
                self._directives()
                variables[var] = (type_ref, default)
            self._next()
        self._directives()
        return Operation(kind, name, variables, self._selection_set())

    def _type_ref(self) -> str:
        if self._is("["):
            self._next()
            inner = self._type_ref()
            self._expect("]")
            text = f"[{inner}]"
        else:
            text = self._name().value
        if self._is("!"):
            self._next()
            text += "!"
        return text

    def _selection_set(self) -> list[Field]:
        self._expect("{")
        fields: list[Field] = []
        while not self._is("}"):
            tok = self._peek()
            if tok.kind == "spread":
                line, col = self._where(tok.pos)
                raise GraphQLValidationError("Fragments are not supported by this server.",
                                             line, col)
            if tok.kind == "eof":
                raise self._error("Expected Name, found <EOF>.", tok.pos)
            fields.append(self._field())
        if not fields:
            raise self._error('Expected Name, found "}".', self._peek().pos)
        self._next()
        return fields

    def _field(self) -> Field:
        first = self._name()
        alias, name = None, first
        if self._is(":"):
            self._next()
            alias, name = first.value, self._name()
        args = self._arguments(const=False)
        directives = self._directives()
        selections = self._selection_set() if self._is("{") else None
        line, col = self._where(name.pos)
        return Field(name.value, alias, args, directives, selections, line, col)

    def _arguments(self, const: bool) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self._is("("):
            self._next()
            while not self._is(")"):
                key = self._name().value
                self._expect(":")
                args[key] = self._value(const)
            self._next()
        return args

    def _directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self._is("@"):
            self._next()
            out.append((self._name().value, self._arguments(const=False)))
        return out

    def _value(self, const: bool) -> Any:
        tok = self._next()
        if tok.kind == "punct" and tok.value == "$" and not const:
            return Var(self._name().value)
        if tok.kind == "punct" and tok.value == "[":
            items = []
            while not self._is("]"):
                items.append(self._value(const))
            self._next()
            return items
        if tok.kind == "punct" and tok.value == "{":
            obj = {}
            while not self._is("}"):
                key = self._name().value
                self._expect(":")
                obj[key] = self._value(const)
            self._next()
            return obj
        if tok.kind == "number":
            return float(tok.value) if any(c in tok.value for c in ".eE") else int(tok.value)
        if tok.kind == "string":
            try:
                return json.loads(tok.value)
            except ValueError:
                raise self._error("Invalid string literal.", tok.pos) from None
        if tok.kind == "block":
            return tok.value[3:-3].replace('\\"""', '"""').strip("\n")
        if tok.kind == "name":
            return {"true": True, "false": False, "null": None}.get(tok.value,
                                                                     EnumValue(tok.value))
        raise self._error(f"Unexpected {self._describe(tok)}.", tok.pos)


def parse_document(source: str) -> list[Operation]:
    """Parse a GraphQL document; raises GraphQLSyntaxError or GraphQLValidationError."""
    return _Parser(source).parse()


# --------------------------------------------------------------------------------------------
# The schema the stand-in serves: root fields read a view's ``data`` column (FraiseQL's v_<type>
# convention). Built in to match the sandbox's schema.sql; a compiled schema file can replace it.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootQuery:
    """A root query field backed by a view."""

    name: str
    view: str
    type_name: str
    returns_list: bool = True


@dataclass
class SchemaModel:
    """Root queries, object types (field -> GraphQL type) and the content hash /health shows."""

    queries: dict[str, RootQuery]
    types: dict[str, dict[str, str] | None]
    content_hash: str
    source: str


_BUILTIN_TYPES: dict[str, dict[str, str] | None] = {
    "User": {"id": "ID!", "email": "String!", "name": "String!", "createdAt": "String!"},
    "Post": {"id": "ID!", "title": "String!", "body": "String!", "publishedAt": "String",
             "author": "User!"},
}
_BUILTIN_QUERIES = {
    "users": RootQuery("users", "v_user", "User"),
    "posts": RootQuery("posts", "v_post", "Post"),
}
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def _hash32(data: bytes) -> str:
    """32 hex chars of SHA-256, the compiled schema's content-hash format (routes/health.rs)."""
    return hashlib.sha256(data).hexdigest()[:32]


def builtin_schema() -> SchemaModel:
    """The schema matching the sandbox database (v_user, v_post)."""
    desc = json.dumps(
        {"queries": {k: [q.view, q.type_name] for k, q in _BUILTIN_QUERIES.items()},
         "types": _BUILTIN_TYPES},
        sort_keys=True,
    ).encode()
    return SchemaModel(dict(_BUILTIN_QUERIES), dict(_BUILTIN_TYPES), _hash32(desc), "built-in")


def schema_from_compiled(data: Any, raw: bytes, source: str) -> SchemaModel:
    """Read the parts of a compiled schema the stand-in can serve: queries with a sql_source.

    Raises ValueError when the document has no usable query (a failed reload, not a parse error).
    """
    if not isinstance(data, dict) or not isinstance(data.get("queries", []), list):
        raise ValueError("compiled schema has no `queries` list")
    types: dict[str, dict[str, str] | None] = {}
    for t in data.get("types") or []:
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            fields: dict[str, str] | None = {}
            for f in t.get("fields") or []:
                ftype = f.get("field_type", f.get("type")) if isinstance(f, dict) else None
                if isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(ftype,
                                                                                         str):
                    fields[f["name"]] = ftype  # type: ignore[index]
                else:
                    fields = None  # a shape we cannot read: serve the type without validation
                    break
            types[t["name"]] = fields or None
    queries: dict[str, RootQuery] = {}
    for q in data.get("queries") or []:
        if not isinstance(q, dict):
            continue
        name, view = q.get("name"), q.get("sql_source")
        if isinstance(name, str) and isinstance(view, str) and _IDENT_RE.fullmatch(view):
            type_name = str(q.get("return_type") or "").strip("[]!") or name
            types.setdefault(type_name, None)
            queries[name] = RootQuery(name, view, type_name, bool(q.get("returns_list", True)))
    if not queries:
        raise ValueError("compiled schema declares no query with a usable sql_source")
    return SchemaModel(queries, types, _hash32(raw), source)


def _named_type(type_ref: str) -> str:
    return type_ref.replace("[", "").replace("]", "").replace("!", "")


def _type_ref_json(type_ref: str) -> dict[str, Any]:
    """Introspection ``__Type`` reference for a type string like ``[User!]!``."""
    if type_ref.endswith("!"):
        return {"kind": "NON_NULL", "name": None, "ofType": _type_ref_json(type_ref[:-1])}
    if type_ref.startswith("["):
        return {"kind": "LIST", "name": None, "ofType": _type_ref_json(type_ref[1:-1])}
    kind = "SCALAR" if type_ref in ("ID", "String", "Int", "Float", "Boolean") else "OBJECT"
    return {"kind": kind, "name": type_ref, "ofType": None}


def introspection_types(schema: SchemaModel) -> list[dict[str, Any]]:
    """A minimal ``__Schema.types`` list for servers configured to allow introspection."""

    def field_json(name: str, type_ref: str, args: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "description": None, "args": args, "type": _type_ref_json(type_ref),
                "isDeprecated": False, "deprecationReason": None}

    def obj(name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": "OBJECT", "name": name, "description": None, "fields": fields,
                "interfaces": [], "possibleTypes": None, "enumValues": None,
                "inputFields": None, "ofType": None}

    int_arg = [{"name": a, "description": None, "type": _type_ref_json("Int"),
                "defaultValue": None} for a in ("limit", "offset")]
    root = [field_json(q.name, f"[{q.type_name}!]!" if q.returns_list else q.type_name, int_arg)
            for q in schema.queries.values()]
    types = [obj("Query", root)]
    for name, fields in sorted(schema.types.items()):
        types.append(obj(name, [field_json(f, t, []) for f, t in (fields or {}).items()]))
    for scalar in ("Boolean", "Float", "ID", "Int", "String"):
        types.append({"kind": "SCALAR", "name": scalar, "description": None, "fields": None,
                      "interfaces": None, "possibleTypes": None, "enumValues": None,
                      "inputFields": None, "ofType": None})
    return types


# --------------------------------------------------------------------------------------------
# Bearer auth with the per-peer brute-force guard (middleware/auth.rs: bearer_auth_middleware,
# FailureLimiter). Missing/malformed header: 401; wrong token: 403 "Invalid token"; the
# max_failures-th wrong token from one peer within 60 s and everything after it: 429.
# --------------------------------------------------------------------------------------------


@dataclass
class Response:
    """What a route returns; the HTTP layer writes it."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(status: int, payload: Any) -> Response:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        return Response(status, body, JSON_TYPE)

    @staticmethod
    def text(status: int, message: str, **headers: str) -> Response:
        return Response(status, message.encode(), TEXT_TYPE, dict(headers))


class BearerGuard:
    """One protected route group: its token and its own failure limiter, like BearerAuthState."""

    def __init__(self, token: str, max_failures: int) -> None:
        self._token = token.encode("utf-8")
        self._max = max(1, max_failures)
        self._lock = threading.Lock()
        self._records: dict[str, tuple[int, float]] = {}

    def _blocked(self, peer: str, now: float) -> bool:
        rec = self._records.get(peer)
        return rec is not None and now < rec[1] + AUTH_WINDOW_SECS and rec[0] >= self._max

    def _record_failure(self, peer: str, now: float) -> bool:
        if len(self._records) >= 1024:  # sweep dead windows so rotating peers cannot grow it
            for key in [k for k, (_, t0) in self._records.items()
                        if now - t0 >= 2 * AUTH_WINDOW_SECS]:
                del self._records[key]
        count, start = self._records.get(peer, (0, now))
        if now >= start + AUTH_WINDOW_SECS:
            self._records[peer] = (1, now)
            return False
        self._records[peer] = (count + 1, start)
        return count + 1 >= self._max

    def check(self, authorization: str | None, peer: str) -> Response | None:
        """None when the request may proceed, else the refusal to send."""
        now = time.time()
        with self._lock:
            if self._blocked(peer, now):
                return Response.text(429, "Too many failed auth attempts")
            if authorization is None:
                return Response.text(401, "Missing Authorization header",
                                     **{"WWW-Authenticate": "Bearer"})
            if not authorization.startswith("Bearer "):
                return Response.text(
                    401, "Invalid Authorization header format. Expected: Bearer <token>",
                    **{"WWW-Authenticate": "Bearer"},
                )
            presented = authorization[7:].encode("latin-1", "replace")
            if not hmac.compare_digest(presented, self._token):
                if self._record_failure(peer, now):
                    return Response.text(429, "Too many failed auth attempts")
                return Response.text(403, "Invalid token")
            self._records.pop(peer, None)
        return None


# --------------------------------------------------------------------------------------------
# Fault flags the sandbox drops into --state-dir, read cheaply (stat per request, parse on change).
# --------------------------------------------------------------------------------------------


class FaultFlags:
    """``STATE_DIR/faults.json``: which injected faults are active right now."""

    def __init__(self, state_dir: Path | None) -> None:
        self._path = state_dir / "faults.json" if state_dir else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._faults: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        try:
            st = self._path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._faults = self._load() if stamp else {}
            return self._faults

    def _load(self) -> dict[str, Any]:
        assert self._path is not None
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _log.warning("ignoring unreadable fault file %s", self._path)
            return {}
        if not isinstance(data, dict):
            return {}
        active = sorted(data)
        _log.info("fault flags now: %s", ", ".join(active) if active else "none")
        return data


# --------------------------------------------------------------------------------------------
# The database side: a psycopg pool that recovers quickly after PostgreSQL comes back.
# --------------------------------------------------------------------------------------------


def _make_pool_class() -> type[ConnectionPool]:
    """ConnectionPool retrying a lost server every ~1 s instead of backing off exponentially.

    psycopg_pool doubles the delay between reconnection attempts (1, 2, 4, 8 s, ...), so after a
    drill stops PostgreSQL for a minute the stand-in would stay broken long after the database is
    back. The real server's deadpool creates connections on demand, so it recovers at once; a
    steady one-second retry gets the stand-in close to that. Falls back to the stock pool if
    psycopg_pool's internals change.
    """
    try:
        from psycopg_pool.base import AttemptWithBackoff
    except ImportError:  # pragma: no cover - depends on the installed psycopg_pool
        return ConnectionPool

    class _SteadyRetry(AttemptWithBackoff):
        DELAY_BACKOFF = 1.0

    class _StandinPool(ConnectionPool):
        def _add_connection(self, attempt: Any, growing: bool = False) -> None:
            if attempt is None:
                attempt = _SteadyRetry(timeout=self.reconnect_timeout)
            super()._add_connection(attempt, growing)

    return _StandinPool


class Database:
    """The connection pool plus a single-flight liveness probe that answers within ~2 s."""

    def __init__(self, settings: Settings) -> None:
        statement_timeout_ms = 1000 * (settings.request_timeout_secs or 30)
        self.pool: ConnectionPool = _make_pool_class()(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=float(settings.pool_timeout_secs),
            open=False,
            name="fraiseql",
            check=ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": 5,
                "application_name": "fraiseql-standin",
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
        )
        self.max_size = settings.pool_max_size
        self._probe_lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._probe_result = False

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close(timeout=5.0)

    def snapshot(self) -> PoolSnapshot:
        stats = self.pool.get_stats()
        total = int(stats.get("pool_size", 0))
        idle = int(stats.get("pool_available", 0))
        return PoolSnapshot(total=total, idle=idle, active=max(0, total - idle),
                            waiting=int(stats.get("requests_waiting", 0)),
                            max_size=self.max_size)

    def _ping(self, timeout: float) -> None:
        ok = False
        try:
            with self.pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
            ok = True
        except (psycopg.Error, PoolTimeout, OSError):
            ok = False
        finally:
            with self._probe_lock:
                self._probe_result = ok

    def reachable(self, timeout: float = HEALTH_DB_TIMEOUT_SECS) -> bool:
        """Whether ``SELECT 1`` succeeds within ``timeout``.

        The ping runs in a helper thread so a hung server (SIGSTOPped, black-holed) still gives
        a fast answer; while one ping is stuck no second one is started.
        """
        with self._probe_lock:
            if self._probe is not None and self._probe.is_alive():
                return False
            self._probe_result = False
            self._probe = threading.Thread(target=self._ping, args=(timeout,), daemon=True,
                                           name="db-probe")
            self._probe.start()
            probe = self._probe
        probe.join(timeout + 0.5)
        with self._probe_lock:
            return (not probe.is_alive()) and self._probe_result


# --------------------------------------------------------------------------------------------
# The application: routes, the GraphQL pipeline and the admin API.
# --------------------------------------------------------------------------------------------

# error.rs ErrorCode::status_code: validation/parse errors are 200 per GraphQL-over-HTTP.
_CODE_STATUS = {
    "VALIDATION_ERROR": 200, "PARSE_ERROR": 200, "PERSISTED_QUERY_NOT_FOUND": 200,
    "REQUEST_ERROR": 400, "PERSISTED_QUERY_MISMATCH": 400, "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403, "NOT_FOUND": 404, "TIMEOUT": 408, "RATE_LIMIT_EXCEEDED": 429,
    "INTERNAL_SERVER_ERROR": 500, "DATABASE_ERROR": 500,
}
# routes/api/types.rs ApiError::into_response
_API_STATUS = {"UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "VALIDATION_ERROR": 400,
               "PARSE_ERROR": 400}


def gql_error(message: str, code: str, line: int | None = None,
              column: int | None = None, path: list[str] | None = None) -> Response:
    """A GraphQL error response: ``{"errors":[{"message","code","locations"?,"path"?}]}``."""
    err: dict[str, Any] = {"message": message, "code": code}
    if line is not None and column is not None:
        err["locations"] = [{"line": line, "column": column}]
    if path:
        err["path"] = path
    return Response.json(_CODE_STATUS.get(code, 500), {"errors": [err]})


def api_error(message: str, code: str) -> Response:
    """The admin API's ``{"error","code","details"}`` body."""
    return Response.json(_API_STATUS.get(code, 500),
                         {"error": message, "code": code, "details": None})


def api_success(data: Any) -> Response:
    return Response.json(200, {"status": "success", "data": data})


@dataclass
class Request:
    """The parts of an HTTP request the routes look at."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    peer: str


@dataclass
class _Planned:
    """A root field ready to run: where it reads and how its value is shaped."""

    field: Field
    query: RootQuery | None
    limit: int | None = None
    offset: int | None = None


class _ExecutionError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _skipped(f: Field, variables: Mapping[str, Any]) -> bool:
    for name, args in f.directives:
        cond = _resolve(args.get("if"), variables)
        if (name == "skip" and cond is True) or (name == "include" and cond is False):
            return True
    return False


def _resolve(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, Var):
        return variables.get(value.name)
    if isinstance(value, EnumValue):
        return value.value
    if isinstance(value, list):
        return [_resolve(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, variables) for k, v in value.items()}
    return value


class App:
    """Everything behind the HTTP layer: config, pool, metrics, cache, faults, routes."""

    def __init__(self, settings: Settings, state_dir: Path | None) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.db = Database(settings)
        self.faults = FaultFlags(state_dir)
        self.schema = self._initial_schema()
        self._schema_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, dict[str, Any], frozenset[str]]] = (
            OrderedDict()
        )
        self._cache_lock = threading.Lock()
        self._apq: OrderedDict[str, str] = OrderedDict()
        self._apq_lock = threading.Lock()
        self._leak: list[bytearray] = []
        self._leak_lock = threading.Lock()
        self.routes: dict[str, dict[str, Callable[[Request], Response]]] = {}
        self._build_routes()

    # ---- schema ----------------------------------------------------------------------------

    def _initial_schema(self) -> SchemaModel:
        path = self.settings.schema_path
        if path.is_file():
            try:
                raw = path.read_bytes()
                return schema_from_compiled(json.loads(raw), raw, str(path))
            except (OSError, ValueError) as exc:
                _log.warning("schema %s not usable (%s); serving the built-in schema", path, exc)
        elif self.settings.schema_path_explicit:
            _log.warning("schema file %s not found; serving the built-in schema", path)
        return builtin_schema()

    # ---- routing ---------------------------------------------------------------------------

    def _build_routes(self) -> None:
        s = self.settings
        self.routes[s.health_path] = {"GET": self.health}
        self.routes[s.readiness_path] = {"GET": self.readiness}
        self.routes[s.graphql_path] = {"GET": self.graphql_get, "POST": self.graphql_post}
        if s.routes_metrics():
            assert s.metrics_token is not None
            guard = BearerGuard(s.metrics_token, s.admin_auth_max_failures)
            self.routes[s.metrics_path] = {"GET": self._guarded(guard, self.metrics_text)}
            self.routes[s.metrics_json_path] = {"GET": self._guarded(guard, self.metrics_json)}
        if s.routes_admin():
            assert s.admin_token is not None
            write = BearerGuard(s.admin_token, s.admin_auth_max_failures)
            read = (BearerGuard(s.admin_readonly_token, s.admin_auth_max_failures)
                    if s.admin_readonly_token else write)
            studio = BearerGuard(s.admin_token, s.admin_auth_max_failures)
            self.routes["/api/v1/admin/reload-schema"] = {
                "POST": self._guarded(write, self.admin_reload_schema)}
            self.routes["/api/v1/admin/cache/clear"] = {
                "POST": self._guarded(write, self.admin_cache_clear)}
            self.routes["/api/v1/admin/cache/stats"] = {
                "GET": self._guarded(read, self.admin_cache_stats)}
            self.routes["/api/v1/admin/config"] = {"GET": self._guarded(read, self.admin_config)}
            self.routes["/admin/v1/health/detailed"] = {
                "GET": self._guarded(studio, self.admin_health_detailed)}
            self.routes["/admin/v1/metrics/summary"] = {
                "GET": self._guarded(studio, self.admin_metrics_summary)}

    @staticmethod
    def _guarded(guard: BearerGuard, handler: Callable[[Request], Response]
                 ) -> Callable[[Request], Response]:
        def run(req: Request) -> Response:
            refusal = guard.check(req.headers.get("Authorization"), req.peer)
            return refusal if refusal is not None else handler(req)

        return run

    def dispatch(self, req: Request) -> Response:
        methods = self.routes.get(req.path)
        if methods is None:
            return Response(404)
        method = "GET" if req.method == "HEAD" and "GET" in methods else req.method
        handler = methods.get(method)
        if handler is None:
            return Response(405, headers={"Allow": ", ".join(sorted(methods))})
        return handler(req)

    def after_request(self) -> None:
        """Apply the memory-leak fault: keep a chunk of memory per request while it is set."""
        leak = self.faults.current().get("memory-leak")
        with self._leak_lock:
            if isinstance(leak, dict):
                size = leak.get("bytes_per_request", 1024 * 1024)
                size = size if isinstance(size, int) and 0 < size <= 64 * 1024 * 1024 else 1 << 20
                self._leak.append(bytearray(b"\xa5") * size)  # written, so it is resident
            elif self._leak:
                self._leak.clear()

    # ---- health (routes/health.rs) ---------------------------------------------------------

    def health(self, req: Request) -> Response:
        connected = self.db.reachable()
        pool = self.db.snapshot()
        body = {
            "status": "healthy" if connected else "unhealthy",
            "database": {
                "connected": connected,
                "database_type": DATABASE_TYPE,
                "active_connections": pool.active,
                "idle_connections": pool.idle,
            },
            "version": VERSION,
            "schema_hash": self.schema.content_hash,
        }
        return Response.json(200 if connected else 503, body)

    def readiness(self, req: Request) -> Response:
        if self.db.reachable():
            return Response.json(200, {"status": "ready"})
        return Response.json(503, {"status": "not_ready",
                                   "reason": "Database connection unavailable"})

    # ---- metrics (routes/metrics.rs) -------------------------------------------------------

    def _recommended_pool_size(self, pool: PoolSnapshot) -> int | None:
        tuning = self.settings.pool_tuning
        if not tuning.get("enabled"):
            return None
        low = int(tuning.get("min_pool_size", self.settings.pool_min_size))
        high = int(tuning.get("max_pool_size", self.settings.pool_max_size))
        return max(low, min(high, pool.active + pool.waiting + 1))

    def metrics_text(self, req: Request) -> Response:
        pool = self.db.snapshot()
        text = self.metrics.render(pool, self._recommended_pool_size(pool))
        return Response(200, text.encode(), PROMETHEUS_CONTENT_TYPE)

    def metrics_json(self, req: Request) -> Response:
        return Response.json(200, self.metrics.json_summary(self.db.snapshot()))

    # ---- GraphQL (routes/graphql/handler.rs, handler/stages.rs) ---------------------------

    def graphql_get(self, req: Request) -> Response:
        """GET /graphql?query=&variables=&operationName= with the size cap on both strings."""
        params = parse_qs(req.query, keep_blank_values=True)
        if "query" not in params:
            return Response.text(400, "Failed to deserialize query string: missing field `query`")
        query = params["query"][0]
        limit = self.settings.max_get_query_bytes
        if len(query.encode()) > limit:
            return gql_error(f"GET query string exceeds maximum allowed length ({limit} bytes)",
                             "REQUEST_ERROR")
        variables = None
        if "variables" in params and params["variables"][0]:
            raw_vars = params["variables"][0]
            if len(raw_vars.encode()) > limit:
                return gql_error(
                    f"GET variables string exceeds maximum allowed length ({limit} bytes)",
                    "REQUEST_ERROR")
            try:
                variables = json.loads(raw_vars)
            except ValueError as exc:
                return gql_error(f"Invalid variables JSON: {exc}", "REQUEST_ERROR")
        op_name = params.get("operationName", [None])[0] or None
        return self.execute_graphql(query, variables, op_name, None)

    def graphql_post(self, req: Request) -> Response:
        """POST /graphql: the CSRF content-type gate (middleware/content_type.rs), then serde."""
        ctype = req.headers.get("Content-Type", "")
        if self.settings.require_json_content_type and not ctype.startswith("application/json"):
            return Response.json(415, {"errors": [{
                "message": "Content-Type must be application/json",
                "extensions": {"code": "UNSUPPORTED_MEDIA_TYPE"}}]})
        if not ctype.startswith("application/json"):
            return Response.text(415, "Expected request with `Content-Type: application/json`")
        try:
            payload = json.loads(req.body)
        except ValueError as exc:
            return Response.text(400, f"Failed to parse the request body as JSON: {exc}")
        problem = _graphql_request_problem(payload)
        if problem:
            return Response.text(
                422, f"Failed to deserialize the JSON body into the target type: {problem}")
        return self.execute_graphql(payload.get("query"), payload.get("variables"),
                                    payload.get("operationName"), payload.get("extensions"))

    def _resolve_apq(self, query: str | None, extensions: Any
                     ) -> tuple[str | None, Response | None]:
        """Automatic persisted queries: register on hash+body, look up on hash alone."""
        pq = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        digest = pq.get("sha256Hash") if isinstance(pq, dict) else None
        if not isinstance(digest, str):
            if query is None:
                return None, gql_error("No query provided", "REQUEST_ERROR")
            return query, None
        if not self.settings.apq_enabled:
            if query is None:
                return None, gql_error(
                    "APQ is not enabled on this server and no query body was provided",
                    "REQUEST_ERROR")
            return query, None
        if query is not None:
            if hashlib.sha256(query.encode()).hexdigest() != digest.lower():
                return None, gql_error("provided sha does not match query",
                                       "PERSISTED_QUERY_MISMATCH")
            with self._apq_lock:
                self._apq[digest.lower()] = query
                while len(self._apq) > 10_000:
                    self._apq.popitem(last=False)
            self.metrics.add(apq_stored=1)
            return query, None
        with self._apq_lock:
            stored = self._apq.get(digest.lower())
        if stored is None:
            self.metrics.add(apq_misses=1)
            return None, gql_error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        self.metrics.add(apq_hits=1)
        return stored, None

    def execute_graphql(self, query: str | None, variables: Any, operation_name: str | None,
                        extensions: Any) -> Response:
        """The request pipeline: resolve body, parse, introspection policy, plan, execute."""
        query, refusal = self._resolve_apq(query, extensions)
        if refusal is not None:
            return refusal
        assert query is not None
        if variables is not None and not isinstance(variables, dict):
            return gql_error("Variables must be a JSON object", "REQUEST_ERROR")
        start = time.perf_counter()
        self.metrics.add(queries_total=1)
        try:
            ops = parse_document(query)
        except GraphQLSyntaxError as exc:
            self.metrics.add(queries_error=1, validation_errors_total=1, parse_errors_total=1)
            return gql_error(str(exc), "PARSE_ERROR", exc.line, exc.column)
        except GraphQLValidationError as exc:
            self.metrics.add(queries_error=1, validation_errors_total=1)
            return gql_error(str(exc), "VALIDATION_ERROR", exc.line, exc.column)
        try:
            op = _select_operation(ops, operation_name)
        except GraphQLValidationError as exc:
            self.metrics.add(queries_error=1, validation_errors_total=1)
            return gql_error(str(exc), "VALIDATION_ERROR", exc.line, exc.column)
        label = operation_name or (op.selections[0].name if op.selections else None)
        if any(f.name in ("__schema", "__type") for f in op.selections):
            refusal = self._introspection_refusal()
            if refusal is not None:
                self.metrics.add(queries_error=1)
                return refusal
        vars_in = _coerce_variables(op, variables or {})
        self.metrics.add(queries_cost_total=_estimate_cost(op.selections))
        try:
            data = self._execute(op, vars_in, label, query, variables, operation_name)
        except GraphQLValidationError as exc:
            self._finish(label, start, True)
            return gql_error(str(exc), "VALIDATION_ERROR", exc.line, exc.column)
        except _ExecutionError as exc:
            self._finish(label, start, True)
            return gql_error(str(exc), exc.code)
        self._finish(label, start, False)
        return Response.json(200, {"data": data})

    def _finish(self, label: str | None, start: float, is_error: bool) -> None:
        elapsed_us = int((time.perf_counter() - start) * 1_000_000)
        self.metrics.query_finished(label, elapsed_us, is_error)

    def _introspection_refusal(self) -> Response | None:
        """The introspection policy (fraiseql-core IntrospectionEnforcer): 200 + errors[]."""
        s = self.settings
        if not s.introspection_enabled:
            detail = "Introspection queries are disabled in this environment"
        elif s.introspection_require_auth:
            detail = "Introspection queries require authentication"  # no OIDC principal here
        else:
            return None
        return gql_error(detail, "VALIDATION_ERROR")

    def _plan(self, op: Operation, variables: Mapping[str, Any]) -> list[_Planned]:
        if op.kind != "query":
            raise GraphQLValidationError(f"Schema is not configured for {op.kind}s.")
        planned: list[_Planned] = []
        schema = self.schema
        for f in op.selections:
            if _skipped(f, variables):
                continue
            if f.name in ("__typename", "__schema", "__type"):
                planned.append(_Planned(f, None))
                continue
            root = schema.queries.get(f.name)
            if root is None:
                raise GraphQLValidationError(f'Cannot query field "{f.name}" on type "Query".',
                                             f.line, f.column)
            args = {k: _resolve(v, variables) for k, v in f.args.items()}
            for key, value in args.items():
                if key not in ("limit", "offset"):
                    raise GraphQLValidationError(
                        f'Unknown argument "{key}" on field "Query.{f.name}".', f.line, f.column)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                          or value < 0):
                    raise GraphQLValidationError(
                        f'Argument "{key}" on field "Query.{f.name}" expects a non-negative Int.',
                        f.line, f.column)
            if f.selections is None:
                type_ref = f"[{root.type_name}!]!" if root.returns_list else root.type_name
                raise GraphQLValidationError(
                    f'Field "{f.name}" of type "{type_ref}" must have a selection of subfields.',
                    f.line, f.column)
            _validate_selections(f.selections, root.type_name, schema.types, variables)
            planned.append(_Planned(f, root, args.get("limit"), args.get("offset")))
        return planned

    def _execute(self, op: Operation, variables: Mapping[str, Any], label: str | None,
                 query: str, raw_variables: Any, operation_name: str | None) -> dict[str, Any]:
        planned = self._plan(op, variables)
        db_fields = [p for p in planned if p.query is not None]
        spike = self.faults.current().get("error-spike")
        if isinstance(spike, dict):
            target = spike.get("operation")
            names = {label, *(p.field.name for p in db_fields)}
            if target in names:
                raise _ExecutionError(f"Database error: injected fault error-spike on {target}",
                                      "DATABASE_ERROR")
        cache_key = None
        if db_fields and self.settings.cache_enabled:
            cache_key = json.dumps([query, raw_variables, operation_name], sort_keys=True,
                                   default=str)
            cached = self._cache_get(cache_key)
            if cached is not None:
                self.metrics.add(cache_hits=1)
                return cached
            self.metrics.add(cache_misses=1)
        if len(db_fields) > 1:
            self.metrics.add(multi_root_queries_total=1)
        rows = self._fetch(db_fields) if db_fields else {}
        data: dict[str, Any] = {}
        for p in planned:
            f = p.field
            if f.name == "__typename":
                data[f.key] = "Query"
            elif f.name == "__schema":
                data[f.key] = _project(self._introspection_schema(), f.selections, None,
                                       {}, variables)
            elif f.name == "__type":
                wanted = _resolve(f.args.get("name"), variables)
                found = next((t for t in introspection_types(self.schema)
                              if t["name"] == wanted), None)
                data[f.key] = _project(found, f.selections, None, {}, variables)
            else:
                assert p.query is not None
                values = rows[f.key]
                value: Any = values if p.query.returns_list else (values[0] if values else None)
                data[f.key] = _project(value, f.selections, p.query.type_name,
                                       self.schema.types, variables)
        if cache_key is not None:
            self._cache_put(cache_key, data, frozenset(p.query.view for p in db_fields
                                                       if p.query))
        return data

    def _introspection_schema(self) -> dict[str, Any]:
        return {"queryType": {"name": "Query"}, "mutationType": None, "subscriptionType": None,
                "types": introspection_types(self.schema), "directives": []}

    def _fetch(self, fields: list[_Planned]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        try:
            with self.db.pool.connection() as conn:
                for p in fields:
                    assert p.query is not None
                    view = sql.Identifier(*p.query.view.split("."))
                    stmt = sql.SQL("SELECT data FROM {} LIMIT %s").format(view)
                    params: list[Any] = [p.limit]
                    if p.offset:
                        stmt = sql.SQL("SELECT data FROM {} LIMIT %s OFFSET %s").format(view)
                        params.append(p.offset)
                    t0 = time.perf_counter()
                    try:
                        rows = conn.execute(stmt, params).fetchall()
                    finally:
                        self.metrics.db_observed(int((time.perf_counter() - t0) * 1_000_000))
                    out[p.field.key] = [r[0] for r in rows]
        except PoolTimeout as exc:
            raise _ExecutionError(f"Connection pool error: {_first_line(exc)}",
                                  "DATABASE_ERROR") from None
        except psycopg.Error as exc:
            raise _ExecutionError(f"Database error: {_first_line(exc)}",
                                  "DATABASE_ERROR") from None
        return out

    # ---- the query result cache ------------------------------------------------------------

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return hit[1]

    def _cache_put(self, key: str, data: dict[str, Any], views: frozenset[str]) -> None:
        with self._cache_lock:
            self._cache[key] = (time.monotonic() + CACHE_TTL_SECS, data, views)
            while len(self._cache) > 1000:
                self._cache.popitem(last=False)

    def cache_entries(self) -> int:
        now = time.monotonic()
        with self._cache_lock:
            for key in [k for k, v in self._cache.items() if v[0] <= now]:
                del self._cache[key]
            return len(self._cache)

    # ---- admin API (routes/api/admin.rs) ---------------------------------------------------

    def _json_body(self, req: Request, required: dict[str, type]) -> tuple[dict[str, Any] | None,
                                                                           Response | None]:
        """axum's Json extractor: 415 without JSON content type, 400 bad JSON, 422 bad shape."""
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            return None, Response.text(
                415, "Expected request with `Content-Type: application/json`")
        try:
            body = json.loads(req.body)
        except ValueError as exc:
            return None, Response.text(400, f"Failed to parse the request body as JSON: {exc}")
        if not isinstance(body, dict):
            return None, Response.text(
                422, "Failed to deserialize the JSON body into the target type: expected a map")
        for key, kind in required.items():
            if key not in body:
                return None, Response.text(
                    422, "Failed to deserialize the JSON body into the target type: "
                         f"missing field `{key}`")
            if not isinstance(body[key], kind):
                return None, Response.text(
                    422, "Failed to deserialize the JSON body into the target type: "
                         f"invalid type for `{key}`")
        return body, None

    def admin_reload_schema(self, req: Request) -> Response:
        body, refusal = self._json_body(req, {"schema_path": str, "validate_only": bool})
        if refusal is not None:
            return refusal
        assert body is not None
        path = body["schema_path"]
        if not path:
            return api_error("Validation error: schema_path cannot be empty", "VALIDATION_ERROR")
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            return api_error(f"Parse error: Failed to read schema file: {exc.strerror or exc}",
                             "PARSE_ERROR")
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            return api_error(f"Parse error: Invalid schema JSON: {exc}", "PARSE_ERROR")
        if body["validate_only"]:
            return api_success({"success": True,
                                "message": "Schema validated successfully (not applied)"})
        t0 = time.perf_counter()
        try:
            model = schema_from_compiled(parsed, raw, path)
        except ValueError as exc:
            self.metrics.add(schema_reload_errors_total=1)
            _log.error("Schema reload failed: %s", exc)
            return api_error(f"Internal server error: Schema reload failed: {exc}",
                             "INTERNAL_ERROR")
        with self._schema_lock:
            self.schema = model
        with self._cache_lock:
            self._cache.clear()
        ms = int((time.perf_counter() - t0) * 1000)
        self.metrics.add(schema_reloads_total=1)
        _log.info("Schema reloaded from %s in %sms (hash %s)", path, ms, model.content_hash)
        return api_success({"success": True, "message": f"Schema reloaded from {path} in {ms}ms"})

    def admin_cache_clear(self, req: Request) -> Response:
        body, refusal = self._json_body(req, {"scope": str})
        if refusal is not None:
            return refusal
        assert body is not None
        scope = body["scope"]
        with self._cache_lock:
            if scope == "all":
                cleared = len(self._cache)
                self._cache.clear()
                message = f"Cleared {cleared} cache entries"
            elif scope == "entity":
                entity = body.get("entity_type")
                if not isinstance(entity, str):
                    return api_error(
                        "Validation error: entity_type is required when scope is 'entity'",
                        "VALIDATION_ERROR")
                view = f"v_{entity.lower()}"
                keys = [k for k, v in self._cache.items()
                        if any(x.split(".")[-1] == view for x in v[2])]
                for k in keys:
                    del self._cache[k]
                cleared = len(keys)
                message = f"Cleared {cleared} cache entries for entity type '{entity}'"
            elif scope == "pattern":
                pattern = body.get("pattern")
                if not isinstance(pattern, str):
                    return api_error(
                        "Validation error: pattern is required when scope is 'pattern'",
                        "VALIDATION_ERROR")
                keys = [k for k in self._cache if fnmatchcase(k, pattern)]
                for k in keys:
                    del self._cache[k]
                cleared = len(keys)
                message = f"Cleared {cleared} cache entries matching pattern '{pattern}'"
            else:
                return api_error("Validation error: scope must be 'all', 'entity', or 'pattern'",
                                 "VALIDATION_ERROR")
        _log.info("Admin: cache cleared (scope %s, %s entries)", scope, cleared)
        return api_success({"success": True, "entries_cleared": cleared, "message": message})

    def admin_cache_stats(self, req: Request) -> Response:
        n = self.cache_entries()
        if not self.settings.cache_enabled:
            return api_success({"entries_count": 0, "cache_enabled": False, "ttl_secs": 0,
                                "message": "Cache is not configured"})
        return api_success({"entries_count": n, "cache_enabled": True,
                            "ttl_secs": CACHE_TTL_SECS,
                            "message": f"Cache contains {n} entries with "
                                       f"{CACHE_TTL_SECS}-second TTL"})

    def admin_config(self, req: Request) -> Response:
        s = self.settings

        def secret(value: str | None) -> str:
            return REDACTED if value else ""

        config = {
            "bind_addr": s.bind_addr,
            "database_url": redact_database_url(s.database_url),
            "schema_path": str(s.schema_path),
            "pool_min_size": str(s.pool_min_size),
            "pool_max_size": str(s.pool_max_size),
            "pool_timeout_secs": str(s.pool_timeout_secs),
            "metrics_enabled": str(s.metrics_enabled).lower(),
            "metrics_token": secret(s.metrics_token),
            "admin_api_enabled": str(s.admin_api_enabled).lower(),
            "admin_token": secret(s.admin_token),
            "admin_readonly_token": secret(s.admin_readonly_token),
            "introspection_enabled": str(s.introspection_enabled).lower(),
            "introspection_require_auth": str(s.introspection_require_auth).lower(),
            "cors_enabled": str(s.cors_enabled).lower(),
            "require_json_content_type": str(s.require_json_content_type).lower(),
            "request_timeout_secs": "" if s.request_timeout_secs is None
            else str(s.request_timeout_secs),
            "tls_enabled": str(s.tls.enabled).lower(),
            "cache_enabled": str(s.cache_enabled).lower(),
            "apq_enabled": str(s.apq_enabled).lower(),
        }
        return api_success({"version": VERSION, "config": config})

    def admin_health_detailed(self, req: Request) -> Response:
        pool = self.db.snapshot()
        return Response.json(200, {
            "uptime_secs": int(time.monotonic() - self.started),
            "version": VERSION,
            "pool_active": pool.active,
            "pool_idle": pool.idle,
            "pool_max": pool.max_size,
            "cache_hit_rate": self.metrics.cache_hit_ratio(),
            "cache_entries": self.cache_entries() if self.settings.cache_enabled else None,
        })

    def admin_metrics_summary(self, req: Request) -> Response:
        pool = self.db.snapshot()
        summary = self.metrics.summary()
        summary["pool"] = {"active": pool.active, "idle": pool.idle, "max": pool.max_size,
                           "utilization": round(pool.active / pool.max_size, 4)
                           if pool.max_size else None}
        summary["cache"] = {"hit_rate": self.metrics.cache_hit_ratio(),
                            "entries": self.cache_entries()}
        summary["subscriptions"] = {"active": 0}
        return Response.json(200, summary)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _graphql_request_problem(payload: Any) -> str | None:
    """Why a POST body is not a GraphQLRequest (serde would reject it with 422), else None."""
    if not isinstance(payload, dict):
        return "expected a map"
    for key in ("query", "operationName", "documentId"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"invalid type for `{key}`: expected a string"
    ext = payload.get("extensions")
    if ext is not None and not isinstance(ext, dict):
        return "invalid type for `extensions`: expected a map"
    return None


def _select_operation(ops: list[Operation], name: str | None) -> Operation:
    if name:
        for op in ops:
            if op.name == name:
                return op
        raise GraphQLValidationError(f'Unknown operation named "{name}".')
    if len(ops) > 1:
        raise GraphQLValidationError(
            "Must provide operation name if query contains multiple operations.")
    return ops[0]


def _coerce_variables(op: Operation, provided: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(provided)
    for name, (_type_ref, default) in op.variables.items():
        if name not in out and default is not None:
            out[name] = default
    return out


def _estimate_cost(fields: list[Field] | None) -> int:
    """A stand-in cost estimate: one per selected field (the server weighs pagination too)."""
    return sum(1 + _estimate_cost(f.selections) for f in fields or [])


def _validate_selections(fields: list[Field], type_name: str,
                         types: Mapping[str, dict[str, str] | None],
                         variables: Mapping[str, Any]) -> None:
    known = types.get(type_name)
    if known is None:
        return  # a type the stand-in cannot describe: served without validation
    for f in fields:
        if f.name == "__typename" or _skipped(f, variables):
            continue
        ftype = known.get(f.name)
        if ftype is None:
            raise GraphQLValidationError(
                f'Cannot query field "{f.name}" on type "{type_name}".', f.line, f.column)
        named = _named_type(ftype)
        if named in types:
            if f.selections is None:
                raise GraphQLValidationError(
                    f'Field "{f.name}" of type "{ftype}" must have a selection of subfields.',
                    f.line, f.column)
            _validate_selections(f.selections, named, types, variables)
        elif f.selections is not None:
            raise GraphQLValidationError(
                f'Field "{f.name}" must not have a selection since type "{ftype}" has no '
                "subfields.", f.line, f.column)


def _project(value: Any, selections: list[Field] | None, type_name: str | None,
             types: Mapping[str, dict[str, str] | None], variables: Mapping[str, Any]) -> Any:
    """Keep only the requested keys of a JSON value (``data`` is camelCase, as FraiseQL's)."""
    if selections is None or value is None:
        return value
    if isinstance(value, list):
        return [_project(v, selections, type_name, types, variables) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    fields = types.get(type_name or "") or {}
    for f in selections:
        if _skipped(f, variables):
            continue
        if f.name == "__typename":
            out[f.key] = type_name or value.get("name") or "Object"
            continue
        raw = value.get(f.name, value.get(_snake(f.name)))
        sub_type = _named_type(fields[f.name]) if f.name in fields else None
        out[f.key] = _project(raw, f.selections, sub_type, types, variables)
    return out


# --------------------------------------------------------------------------------------------
# HTTP: a threading server, optional TLS with certificate hot-swap, one log line per request.
# --------------------------------------------------------------------------------------------


class TlsContexts:
    """The server's SSL context, rebuilt when the certificate or key file changes on disk.

    Drills swap the certificate (expired, wrong host) under a running server; new connections
    get the new certificate without a restart. A file that fails to load keeps the old context.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp = self._files_stamp()
        self._ctx = self._build()

    def _files_stamp(self) -> tuple[int, ...]:
        stamps: list[int] = []
        for path in (self._tls.cert_path, self._tls.key_path):
            try:
                stamps.append(path.stat().st_mtime_ns if path else 0)
            except OSError:
                stamps.append(0)
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        tls = self._tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
        ctx.load_cert_chain(str(tls.cert_path), str(tls.key_path))
        if tls.require_client_cert and tls.client_ca_path:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(tls.client_ca_path))
        return ctx

    def get(self) -> ssl.SSLContext:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= 1.0:
                self._checked = now
                stamp = self._files_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._ctx = self._build()
                        _log.info("TLS certificate reloaded from %s", self._tls.cert_path)
                    except (OSError, ssl.SSLError) as exc:
                        _log.warning("TLS certificate reload failed (%s); keeping the old one",
                                     _first_line(exc))
            return self._ctx


class StandinHTTPServer(ThreadingHTTPServer):
    """Threading HTTP(S) server whose handler threads never keep the process alive."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: App, tls: TlsContexts | None) -> None:
        self.app = app
        self.tls = tls
        host = app.settings.bind_host
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, app.settings.bind_port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.get().wrap_socket(sock, server_side=True,
                                              do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:  # the handshake runs in the handler thread, never in the accept loop
                request.settimeout(10)
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                _log.info("TLS handshake failed from %s: %s", client_address[0],
                          _first_line(exc))
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        _log.warning("connection error from %s: %s", client_address[0],
                     type(exc).__name__ if exc else "unknown")


class _Handler(BaseHTTPRequestHandler):
    """Adapts http.server to App.dispatch, counting and logging every request."""

    server: StandinHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "fraiseql-server"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY the client's delayed ACK
        # adds ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence http.server's own access log: it would print the raw request line."""

    def _serve(self) -> None:
        t0 = time.perf_counter()
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path or "/"
        status = 500
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > app.settings.max_request_body_bytes > 0:
                resp = Response.text(413, "length limit exceeded")
                self.close_connection = True
            else:
                body = self.rfile.read(length) if length > 0 else b""
                req = Request(self.command, path, split.query, self.headers, body,
                              self.client_address[0])
                resp = app.dispatch(req)
        except ValueError:
            resp = Response.text(400, "invalid Content-Length")
            self.close_connection = True
        except Exception as exc:  # a bug in a route must not kill the connection thread
            _log.error("unhandled %s on %s %s", type(exc).__name__, self.command, path)
            resp = Response(500)
        status = resp.status
        try:
            self.send_response(resp.status)
            if resp.content_type:
                self.send_header("Content-Type", resp.content_type)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD" and resp.body:
                self.wfile.write(resp.body)
        finally:
            elapsed = time.perf_counter() - t0
            app.metrics.http_finished(status, int(elapsed * 1_000_000))
            _log.info("request method=%s path=%s status=%s duration_ms=%.1f peer=%s",
                      self.command, path, status, elapsed * 1000, self.client_address[0])
            app.after_request()

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


class _Throttle(logging.Filter):
    """Let one pool reconnection warning through per 10 s: an outage must not flood the log."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING or "error connecting" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self._last < 10.0:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.msg = f"{record.getMessage()} ({self._suppressed} similar suppressed)"
            record.args = None
        self._last, self._suppressed = now, 0
        return True


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").addFilter(_Throttle())
    _log.setLevel(logging.INFO)


def _describe_database(url: str) -> str:
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "unparseable url"
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/" \
           f"{parts.get('dbname') or ''}"


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGTERM/SIGINT; 0 after a clean shutdown, 1 on a bad config."""
    parser = argparse.ArgumentParser(
        prog="python -m fraiseql_rb.sandbox.standin",
        description="Stand-in FraiseQL v2 server for the drill sandbox.")
    parser.add_argument("--config", type=Path, default=None,
                        help="fraiseql-server config TOML (default: $FRAISEQL_CONFIG)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="directory where the sandbox drops faults.json")
    args = parser.parse_args(argv)
    _setup_logging()
    config_path = args.config or (Path(os.environ["FRAISEQL_CONFIG"])
                                  if os.environ.get("FRAISEQL_CONFIG") else None)
    try:
        settings = load_settings(config_path, os.environ)
        tls = TlsContexts(settings.tls) if settings.tls.enabled else None
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (OSError, ssl.SSLError) as exc:
        print(f"Error: cannot load TLS certificate: {_first_line(exc)}", file=sys.stderr,
              flush=True)
        return 1

    app = App(settings, args.state_dir)
    try:
        server = StandinHTTPServer(app, tls)
    except OSError as exc:
        print(f"Error: cannot bind {settings.bind_addr}: {exc.strerror or exc}", file=sys.stderr,
              flush=True)
        return 1
    app.db.open()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheme = "https" if tls else "http"
    policy = ("disabled" if not settings.introspection_enabled
              else "auth required" if settings.introspection_require_auth else "allowed")
    _log.info(
        "fraiseql-server %s listening on %s://%s (database %s, pool %s-%s, metrics %s, "
        "admin api %s, introspection %s, schema %s)", VERSION, scheme, settings.bind_addr,
        _describe_database(settings.database_url), settings.pool_min_size,
        settings.pool_max_size, "on" if settings.routes_metrics() else "off",
        "on" if settings.routes_admin() else "off", policy, app.schema.source)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="http", daemon=True)
    thread.start()
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    app.db.close()
    _log.info("database pool closed; shutdown complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
