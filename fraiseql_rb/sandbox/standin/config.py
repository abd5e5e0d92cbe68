"""Configuration: the flat server config (server_config/mod.rs, ServerConfig) plus env
overrides (the server's main: DATABASE_URL, FRAISEQL_BIND_ADDR, FRAISEQL_*), then
ServerConfig::validate (server_config/methods.rs), and URL redaction for logs and admin.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

REDACTED = "[REDACTED]"

_log = logging.getLogger("fraiseql_standin")


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


@dataclass(frozen=True)
class AuthSettings:
    """The ``[auth]`` table: OIDC for GraphQL (fraiseql-core security/oidc/providers.rs,
    OidcConfig). Unknown keys are ignored there (no deny_unknown_fields), so here too.

    The stand-in validates the table as the server does at start but authenticates no request:
    a sandbox config says ``required = false`` so the file says what the stand-in does.
    """

    issuer: str
    audience: str | None = None
    additional_audiences: tuple[str, ...] = ()
    jwks_uri: str | None = None
    jwks_cache_ttl_secs: int = 300
    allowed_algorithms: tuple[str, ...] = ("RS256",)
    clock_skew_secs: int = 60
    required: bool = True


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
    auth: AuthSettings | None = None

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
    s.auth = _auth_settings(raw["auth"]) if "auth" in raw else None

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


_AUTH_KINDS = {
    "issuer": "str", "audience": "str", "additional_audiences": "str_list", "jwks_uri": "str",
    "jwks_cache_ttl_secs": "int", "allowed_algorithms": "str_list", "clock_skew_secs": "int",
    "required": "bool", "scope_claim": "str", "require_jti": "bool",
}


def _auth_settings(auth: Mapping[str, Any]) -> AuthSettings:
    """``[auth]`` as serde reads OidcConfig: `issuer` required, the rest defaulted."""
    if "issuer" not in auth:
        raise ConfigError("Invalid TOML config: missing field `issuer` in [auth]")
    for key, kind in _AUTH_KINDS.items():
        if key in auth:
            _check_kind(f"auth.{key}", auth[key], kind)
    return AuthSettings(
        issuer=auth["issuer"],
        audience=auth.get("audience"),
        additional_audiences=tuple(auth.get("additional_audiences", ())),
        jwks_uri=auth.get("jwks_uri"),
        jwks_cache_ttl_secs=auth.get("jwks_cache_ttl_secs", 300),
        allowed_algorithms=tuple(auth.get("allowed_algorithms", ("RS256",))),
        clock_skew_secs=auth.get("clock_skew_secs", 60),
        required=auth.get("required", True),
    )


def _validate_auth(auth: AuthSettings) -> None:
    """OidcConfig::validate (providers.rs): the same four refusals, in the same order."""
    if not auth.issuer:
        raise ConfigError("OIDC issuer URL is required")
    if not auth.issuer.startswith(("https://", "http://localhost", "http://127.0.0.1")):
        raise ConfigError(
            "OIDC issuer must use HTTPS (except localhost/127.0.0.1 for development)")
    if auth.audience is None and not auth.additional_audiences:
        raise ConfigError(
            "OIDC audience is REQUIRED for security. Set 'audience' in auth config to your API "
            "identifier.")
    if not auth.allowed_algorithms:
        raise ConfigError("At least one algorithm must be allowed")


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
    if s.auth is not None:
        _validate_auth(s.auth)
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
