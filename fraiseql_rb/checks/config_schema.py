"""Every key of the three config shapes, as data: what the validator knows about a file.

Kept apart from the rules (`config.py`) so that a reviewer can read, and argue with, what
FraiseQL accepts without reading code. Each key says its type, its default, what it means and
the serde struct of the real server that reads it (repository fraiseql/fraiseql, crates
`fraiseql-server` and `fraiseql-cli`, read at 2.15.0-dev); each table (`SECTIONS`) says
whether its struct refuses unknown keys (`deny_unknown_fields`) and whether it is optional
(an `Option<...>`: its defaults apply only when the table is written).

The shapes:
1. the runbook's own file (`[server] listen_addr`, ...), which the real server refuses: each
   key names its real equivalent, in the server config and in fraiseql.toml;
2. the server config (`fraiseql-server --config`, struct `ServerConfig`): top-level keys,
   unknown top-level keys are a hard error, nested tables ignore unknown keys;
3. the project file `fraiseql.toml`, read by the CLI as `TomlProjectConfig` (workflow B:
   `[project]`, `[fraiseql]`, for `fraiseql compile` with a schema.json) or as `TomlSchema`
   (workflow A, schema authoring: `[schema]`, `[types]`, `[security]`, ...; also what
   `fraiseql doctor` parses). Both share `[server]` and `[database]`; every struct refuses
   unknown keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from fraiseql_rb.core import thresholds


class Format(StrEnum):
    RUNBOOK = "runbook"
    SERVER = "v2-server"
    PROJECT = "fraiseql.toml"


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A `Key.default` for a key its struct requires (no serde default) once its table is written.
REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One configuration key: what it must hold and, for the runbook format, where it went.

    `role` names what the cross-format rules read (the bind address, the pool size, ...), so a
    rule is written once for all formats. `v2` is the dotted v2 key, in the server config
    unless `v2_project`; None means there is no v2 equivalent, and `note` says why.
    `project` is the runbook key's fraiseql.toml equivalent. `source` is the real struct.
    """

    path: str
    kind: str
    default: Any = None
    meaning: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    strict: bool = True  # an unlisted choice is an error; False: only a warning
    role: str | None = None
    secret: bool = False
    env: str | None = None  # v2 server: the environment variable that overrides the key
    check_exists: bool = False
    v2: str | None = None
    v2_project: bool = False
    v2_alt: str = ""
    project: str = ""
    note: str = ""
    source: str = ""

    @property
    def display(self) -> str:
        return display(self.path)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def default_value(self) -> Any:
        """The value the reader assumes when the key is absent (None when it is required)."""
        return None if self.required else self.default

    @property
    def v2_equivalent(self) -> str:
        """The real v2 key, said the way a person writes it in the file."""
        if self.v2 is None:
            return "no v2 equivalent"
        text = ("fraiseql.toml " if self.v2_project else "") + display(self.v2)
        return f"{text} ({self.v2_alt})" if self.v2_alt else text


@dataclass(frozen=True)
class Section:
    """A table of a shape: its struct, whether it refuses unknown keys, whether optional."""

    source: str
    strict: bool
    optional: bool = False
    meaning: str = ""


def display(path: str) -> str:
    """`server.listen_addr` -> `[server] listen_addr`; top-level keys stay bare."""
    section, _, leaf = path.rpartition(".")
    return f"[{section}] {leaf}" if section else leaf


def _table(*keys: Key) -> dict[str, Key]:
    return {k.path: k for k in keys}


def _struct(source: str, prefix: str, *keys: Key) -> list[Key]:
    """Keys of one struct: their paths under `prefix`, and the struct named as their source."""
    return [replace(k, path=f"{prefix}.{k.path}" if prefix else k.path, source=source)
            for k in keys]


# --------------------------------------------------------------------------------------------
# 1. The runbook's own file (§1.2)
# --------------------------------------------------------------------------------------------
RUNBOOK_KEYS = _table(*_struct(
    "operations-runbook.md §1.2", "",
    Key("server.listen_addr", "addr", role="bind", v2="bind_addr",
        v2_alt="or env FRAISEQL_BIND_ADDR", project="[server] host and port"),
    Key("server.tls_enabled", "bool", role="tls_enabled", v2="tls.enabled",
        project="[server.tls] enabled"),
    Key("server.tls_cert_path", "path", role="tls_cert", v2="tls.cert_path",
        project="[server.tls] cert_file"),
    Key("server.tls_key_path", "path", role="tls_key", v2="tls.key_path",
        project="[server.tls] key_file"),
    Key("server.min_tls_version", "tls_version", role="tls_min_version", v2="tls.min_version",
        project="[server.tls] min_version"),
    Key("database.url", "url", role="database_url", v2="database_url",
        v2_alt="or env DATABASE_URL", project="[database] url",
        note="the v2 server does not expand ${VAR}: put the URL in env DATABASE_URL"),
    Key("database.pool_size", "int", minimum=1, maximum=10_000, role="pool_max",
        v2="pool_max_size", project="[database] pool_max"),
    Key("database.connection_timeout", "duration", minimum=1, maximum=3600,
        role="pool_timeout", v2="pool_timeout_secs", project="[database] connect_timeout_ms",
        note='whole seconds: "30s" becomes 30'),
    Key("security.security_profile", "choice", choices=("STANDARD", "REGULATED", "RESTRICTED"),
        strict=False, role="profile",
        note="v2 has no security profiles: configure each control the profile implied"),
    Key("security.field_masking_enabled", "bool", role="field_masking",
        note="no config switch in v2: field masking is declared per field in the schema"),
    Key("security.error_redaction_enabled", "bool", role="error_redaction",
        v2="fraiseql.security.error_sanitization.enabled", v2_project=True,
        project="[fraiseql.security.error_sanitization] enabled, or "
                "[security.error_sanitization] enabled"),
    Key("rate_limit.enabled", "bool", role="rate_enabled", v2="rate_limiting.enabled",
        project="[fraiseql.security.rate_limiting] enabled"),
    Key("rate_limit.rps_per_ip", "int", minimum=1, role="rate_rps_ip",
        v2="rate_limiting.rps_per_ip",
        project="[fraiseql.security.rate_limiting] requests_per_second"),
    Key("rate_limit.rps_per_user", "int", minimum=1, v2="rate_limiting.rps_per_user",
        project="[security.rate_limiting] requests_per_second_per_user"),
    Key("rate_limit.burst_size", "int", minimum=1, role="rate_burst",
        v2="rate_limiting.burst_size", project="[fraiseql.security.rate_limiting] burst_size"),
    Key("oidc.cache_ttl_secs", "int", minimum=1, v2="auth.jwks_cache_ttl_secs",
        project="[auth] jwks_cache_ttl_secs"),
    Key("oidc.key_rotation_check", "bool", note="v2 has no such switch"),
    Key("audit.enabled", "bool", role="audit_enabled",
        v2="fraiseql.security.audit_logging.enabled", v2_project=True,
        project="[fraiseql.security.audit_logging] enabled, or "
                "[security.enterprise] audit_logging_enabled"),
    Key("audit.log_level", "choice", choices=("DEBUG", "INFO", "WARN", "WARNING", "ERROR"),
        strict=False, note="v2's [fraiseql.security.audit_logging] has no level"),
    Key("audit.destination", "choice", choices=("postgres", "stdout", "file", "syslog"),
        strict=False, project="[security.enterprise] audit_log_backend",
        note="v2 writes audit events as JSON log lines and to its audit_log table"),
))
# Why the v2 server refuses each runbook section (one warning per section present).
RUNBOOK_SECTIONS = {
    "server": "is refused by name by the v2 server",
    "database": "is refused by name by the v2 server",
    "rate_limit": "is refused by name by the v2 server, which calls it [rate_limiting]",
    "security": "is not a v2 server section (unknown keys are a hard error)",
    "oidc": "is not a v2 server section (OIDC lives in [auth])",
    "audit": "is not a v2 server section (audit is set in fraiseql.toml)",
}

# --------------------------------------------------------------------------------------------
# 2. The server config: fraiseql-server --config FILE (crate fraiseql-server)
# --------------------------------------------------------------------------------------------
_FEATURE = "only in a binary built with the {} feature (otherwise refused as unknown)"
_PATHS = ("graphql", "health", "readiness", "introspection", "metrics", "playground")
SERVER_KEYS = _table(
    *_struct(
        "ServerConfig", "",
        Key("schema_path", "path", "schema.compiled.json", "the compiled schema to serve",
            check_exists=True),
        Key("validate_sql_sources", "bool", False,
            "check at start-up that every view/function the schema names exists"),
        Key("database_url", "url", "postgresql://localhost/fraiseql", "the PostgreSQL URL",
            role="database_url", env="DATABASE_URL"),
        Key("bind_addr", "addr", "127.0.0.1:8000", "the HTTP listen address",
            role="bind", env="FRAISEQL_BIND_ADDR"),
        Key("flight_bind_addr", "addr", "127.0.0.1:50051",
            "Arrow Flight listen address; " + _FEATURE.format("arrow")),
        Key("flight_upload_tables", "list", [],
            "tables Arrow Flight may upload into; " + _FEATURE.format("arrow")),
        Key("cors_enabled", "bool", True, "answer CORS requests"),
        Key("cors_origins", "list", [], "allowed CORS origins (empty: any)"),
        Key("compression_enabled", "bool", False, "compress responses"),
        Key("enable_http_query", "bool", False, "accept the HTTP QUERY method"),
        Key("tracing_enabled", "bool", True, "emit tracing spans"),
        Key("otlp_endpoint", "str", None, "OpenTelemetry collector endpoint"),
        Key("otlp_export_timeout_secs", "int", 10, "OTLP export timeout", minimum=1),
        Key("tracing_service_name", "str", "fraiseql", "service name in traces"),
        Key("apq_enabled", "bool", True, "automatic persisted queries"),
        Key("cache_enabled", "bool", True, "the query result cache"),
        *(Key(f"{name}_path", "str", f"/{name}", f"HTTP path of the {name} endpoint")
          for name in _PATHS),
        Key("metrics_json_path", "str", "/metrics/json", "HTTP path of the JSON metrics"),
        Key("playground_enabled", "bool", False, "serve the GraphQL playground"),
        Key("playground_tool", "choice", "apollo-sandbox", "which playground to serve",
            choices=("graphi-q-l", "apollo-sandbox")),
        Key("subscription_path", "str", "/ws", "HTTP path of GraphQL subscriptions"),
        Key("subscriptions_enabled", "bool", True, "serve GraphQL subscriptions"),
        Key("metrics_enabled", "bool", False, "mount /metrics (needs metrics_token too)",
            env="FRAISEQL_METRICS_ENABLED"),
        Key("metrics_token", "str", None, "bearer token of /metrics", secret=True,
            env="FRAISEQL_METRICS_TOKEN"),
        Key("admin_api_enabled", "bool", False, "mount the admin API (needs admin_token)",
            env="FRAISEQL_ADMIN_API_ENABLED"),
        Key("admin_token", "str", None, "bearer token of the admin API", secret=True,
            env="FRAISEQL_ADMIN_TOKEN"),
        Key("admin_readonly_token", "str", None, "read-only admin API token", secret=True),
        Key("introspection_enabled", "bool", False, "answer introspection queries",
            role="introspection"),
        Key("introspection_require_auth", "bool", True, "introspection needs a token",
            role="introspection_auth"),
        *(Key(f"{name}_require_auth", "bool", None,
              f"{name} needs a token (unset: as introspection_require_auth)")
          for name in ("metadata", "schema_export", "playground", "subscription")),
        Key("subscription_auth_recheck_secs", "int", 30,
            "how often a subscription's token is checked again", minimum=1),
        Key("design_api_require_auth", "bool", True, "the design API needs a token"),
        Key("pool_min_size", "int", 5, "connections kept open", minimum=0, role="pool_min"),
        Key("pool_max_size", "int", thresholds.V2_DEFAULT_POOL_MAX, "pool maximum",
            minimum=1, maximum=10_000, role="pool_max"),
        Key("pool_timeout_secs", "int", 30, "wait for a pool connection", minimum=1,
            role="pool_timeout"),
        Key("pool_max_streaming_reads", "int", None,
            "connections streaming reads may hold (unset: a quarter of pool_max_size)",
            minimum=1),
        Key("enable_graphql_incremental", "bool", False, "@defer/@stream delivery"),
        Key("graphql_incremental_batch_size", "int", None,
            "items per incremental batch (unset: 100)", minimum=1),
        Key("read_replica_urls", "urls", [], "read replicas queries may use"),
        Key("read_replica_pin_after_write_ms", "int", None,
            "reads go to the primary this long after a write (unset: 5000)", minimum=0),
        Key("read_replica_max_lag_ms", "int", None,
            "skip a replica lagging more than this (unset: no lag routing)", minimum=0),
        Key("read_replica_health_probe_interval_ms", "int", None,
            "replica health probe interval (unset: 1000)", minimum=1),
        Key("saml", "table", None, "SAML identity providers; " + _FEATURE.format("auth-saml")),
        Key("scim", "table", None, "SCIM provisioning"),
        Key("admin_sql", "table", None, "the admin SQL console"),
        Key("hmac_secret_env", "str", None, "env variable holding the idempotency HMAC key"),
        Key("require_json_content_type", "bool", True,
            "refuse POSTs that are not application/json (CSRF protection)"),
        Key("max_request_body_bytes", "int", 1_048_576, "largest request body", minimum=1),
        Key("max_header_count", "int", 100, "most request headers", minimum=1),
        Key("max_header_bytes", "int", 32_768, "largest request headers", minimum=1),
        Key("request_timeout_secs", "int", None, "per-request timeout (unset: none)",
            minimum=1),
        Key("max_get_query_bytes", "int", 100_000, "longest GET query string", minimum=1),
        Key("observers", "table", None, "event observers; " + _FEATURE.format("observers")),
        Key("sources", "table", None, "the source scheduler; " + _FEATURE.format("sources")),
        Key("security_contact", "str", None, "contact served in /.well-known/security.txt"),
        Key("validation", "table", None, "query depth/complexity limits (unset: the "
            "compiled schema's)"),
        Key("admin_auth_max_failures", "int", 10,
            "failed admin/metrics token attempts per IP before 429", minimum=1),
        Key("storage_token", "str", None, "bearer token of the storage API", secret=True),
        Key("shutdown_timeout_secs", "int", 30, "graceful shutdown wait", minimum=0),
        Key("usage", "table", None, "usage persistence"),
        Key("storage", "table", None, "storage backends, by name"),
        Key("files", "table", None, "file-upload routes, by name"),
        Key("webhooks", "table", None, "inbound webhooks; " + _FEATURE.format("inbound")),
        Key("mailbox", "table", None, "mailboxes; " + _FEATURE.format("inbound-email")),
        Key("send", "table", None, "outbound mail; " + _FEATURE.format("inbound-email")),
        Key("tenancy.runtime.enabled", "bool", False, "multi-tenant runtime"),
        Key("export", "table", None, "REST export; " + _FEATURE.format("rest")),
        Key("identity", "table", None, "enriched identity; " + _FEATURE.format("auth")),
        Key("session_state", "table", None, "session state; " + _FEATURE.format("auth")),
        Key("async_operations", "table", None, "the async-operations surface"),
        Key("cdc_outbound", "table", None, "outbound CDC; " + _FEATURE.format("cdc-outbound")),
    ),
    *_struct(
        "TlsServerConfig", "tls",
        Key("enabled", "bool", REQUIRED, "serve HTTPS", role="tls_enabled"),
        Key("cert_path", "path", REQUIRED, "certificate (PEM)", role="tls_cert"),
        Key("key_path", "path", REQUIRED, "private key (PEM)", role="tls_key"),
        Key("require_client_cert", "bool", False, "mutual TLS", role="tls_client_cert"),
        Key("client_ca_path", "path", None, "CA of client certificates",
            role="tls_client_ca"),
        Key("min_version", "tls_version", "1.2", "lowest TLS version",
            role="tls_min_version"),
    ),
    *_struct(
        "DatabaseTlsConfig", "database_tls",
        Key("postgres_ssl_mode", "choice", None, "libpq sslmode (absent: prefer)",
            choices=SSL_MODES),
        Key("verify_certificates", "bool", True, "verify the database's certificate"),
        Key("ca_bundle_path", "path", None, "CA bundle for the database",
            check_exists=True),
        *(Key(name, "removed", None, f"removed: put {scheme} in the URL instead")
          for name, scheme in (("redis_ssl", "rediss://"), ("clickhouse_https", "https://"),
                               ("elasticsearch_https", "https://"))),
    ),
    *_struct(
        "RateLimitConfig", "rate_limiting",
        Key("enabled", "bool", True, "rate limiting on", role="rate_enabled"),
        Key("rps_per_ip", "int", 100, "requests per second per IP", minimum=1,
            role="rate_rps_ip"),
        Key("rps_per_user", "int", 1000, "requests per second per user", minimum=1),
        Key("burst_size", "int", 500, "bucket size", minimum=1, role="rate_burst"),
        Key("cleanup_interval_secs", "int", 300, "idle bucket cleanup", minimum=1),
        Key("trust_proxy_headers", "bool", False, "take the client IP from X-Forwarded-For",
            role="trust_proxy"),
        Key("trusted_proxy_cidrs", "cidrs", [], "proxies whose headers are trusted",
            role="trusted_cidrs"),
        Key("max_buckets", "int", 100_000, "most tracked clients", minimum=1),
    ),
    *_struct(
        "OidcConfig", "auth",
        Key("issuer", "str", None, "token issuer"),
        Key("audience", "str", None, "expected audience"),
        Key("additional_audiences", "list", [], "other accepted audiences"),
        Key("jwks_cache_ttl_secs", "int", 300, "JWKS cache lifetime", minimum=1),
        Key("allowed_algorithms", "list", ["RS256"], "accepted JWT algorithms"),
        Key("clock_skew_secs", "int", 60, "tolerated clock skew", minimum=0),
        Key("jwks_uri", "str", None, "JWKS URL (unset: from discovery)"),
        Key("required", "bool", True, "every request needs a token"),
        Key("scope_claim", "str", "scope", "claim holding the scopes"),
        Key("require_jti", "bool", False, "tokens need a jti (replay protection)"),
        Key("me", "table", None, "the /auth/me endpoint"),
    ),
    *_struct(
        "Hs256Config", "auth_hs256",
        Key("secret_env", "str", REQUIRED, "env variable holding the HS256 secret"),
        Key("issuer", "str", None, "token issuer"),
        Key("audience", "str", None, "expected audience"),
    ),
    *_struct(
        "PoolPressureMonitorConfig", "pool_tuning",
        Key("enabled", "bool", False, "recommend pool sizes from pressure"),
        Key("min_pool_size", "int", 5, "lowest recommendation", minimum=1),
        Key("max_pool_size", "int", 50, "highest recommendation", minimum=1),
        Key("target_queue_depth", "int", 3, "waiting requests that mean pressure", minimum=0),
        Key("scale_up_step", "int", 5, "connections added per step", minimum=1),
        Key("scale_down_step", "int", 2, "connections removed per step", minimum=1),
        Key("scale_down_idle_ratio", "number", 0.5, "idle share that allows shrinking",
            minimum=0, maximum=1),
        Key("tuning_interval_ms", "int", 30_000, "sampling interval", minimum=1),
        Key("samples_before_action", "int", 3, "samples before a recommendation", minimum=1),
    ),
    *_struct(
        "AdmissionConfig", "admission_control",
        Key("max_concurrent", "int", 500, "requests served at once", minimum=1),
        Key("max_queue_depth", "int", 1000, "requests waiting before 503", minimum=0),
    ),
)
# Tables of the server config. Only ServerConfig refuses unknown keys; every nested table is
# an Option<...>: its defaults apply only when the table is written.
SERVER_SECTIONS: dict[str, Section] = {
    "": Section("ServerConfig", strict=True),
    "tls": Section("TlsServerConfig", False, True, "HTTPS (absent: plain HTTP)"),
    "database_tls": Section("DatabaseTlsConfig", False, True,
                            "TLS to PostgreSQL (absent: libpq prefer)"),
    "rate_limiting": Section("RateLimitConfig", False, True, "per-IP/user rate limits "
                             "(absent: off, unless the compiled schema sets them)"),
    "auth": Section("OidcConfig", False, True, "OIDC/JWT validation"),
    "auth_hs256": Section("Hs256Config", False, True, "HS256 shared-secret JWTs"),
    "pool_tuning": Section("PoolPressureMonitorConfig", False, True, "pool pressure monitor"),
    "admission_control": Section("AdmissionConfig", False, True, "backpressure limits"),
    "tenancy": Section("TenancyServerConfig", strict=False),
    "tenancy.runtime": Section("TenancyRuntimeConfig", strict=False),
}
# Sections the v2 server refuses by name, and what to write instead (methods.rs
# REMOVED_SECTIONS).
SERVER_REFUSED_SECTIONS = {
    "server": "use top-level bind_addr and a [tls] table",
    "database": "use top-level database_url (or env DATABASE_URL) and pool_* keys",
    "cors": "use top-level cors_enabled and cors_origins",
    "rate_limit": "the v2 name is [rate_limiting]",
    "cache": "use top-level cache_enabled and apq_enabled",
    "collation": "nothing: locale-aware collation was never wired to a config key",
}

# --------------------------------------------------------------------------------------------
# 3. The project file fraiseql.toml (crate fraiseql-cli)
# --------------------------------------------------------------------------------------------
_B_RATE = "fraiseql.security.rate_limiting"  # workflow B's rate limiting table
_A_RATE = "security.rate_limiting"  # workflow A's
_B_AUTH_LIMITS = (("auth_start", 100, 60), ("auth_callback", 50, 60), ("auth_refresh", 10, 60),
                  ("auth_logout", 20, 60), ("failed_login", 10, 900))
_A_AUTH_LIMITS = (("auth_start", 5, 60), ("auth_callback", 10, 60), ("auth_refresh", 20, 300),
                  ("auth_logout", 30, 60))
_SHARED = (  # [server] and [database]: ServerRuntimeConfig, DatabaseRuntimeConfig
    *_struct(
        "ServerRuntimeConfig", "server",
        Key("host", "host", "0.0.0.0", "listen host of `fraiseql run`", role="bind_host"),
        Key("port", "int", 8080, "listen port", minimum=1, maximum=65_535, role="bind_port"),
        Key("request_timeout_ms", "int", 30_000, "per-request timeout", minimum=1),
        Key("keep_alive_secs", "int", 75, "HTTP keep-alive", minimum=0),
    ),
    *_struct(
        "CorsRuntimeConfig", "server.cors",
        Key("origins", "list", [], "allowed CORS origins"),
        Key("credentials", "bool", False, "allow credentials"),
    ),
    *_struct(
        "TlsRuntimeConfig", "server.tls",
        Key("enabled", "bool", False, "serve HTTPS", role="tls_enabled"),
        Key("cert_file", "path", "", "certificate (PEM), required when enabled",
            role="tls_cert"),
        Key("key_file", "path", "", "private key (PEM), required when enabled",
            role="tls_key"),
        Key("min_version", "tls_version", "1.2", 'lowest TLS version: "1.2" or "1.3"',
            role="tls_min_version"),
    ),
    *_struct(
        "DatabaseRuntimeConfig", "database",
        Key("url", "url", None, "the PostgreSQL URL (${VAR} expands)", role="database_url"),
        Key("pool_min", "int", 2, "connections kept open", minimum=0, role="pool_min"),
        Key("pool_max", "int", 20, "pool maximum", minimum=1, maximum=10_000,
            role="pool_max"),
        Key("connect_timeout_ms", "int", 5_000, "connect timeout", minimum=1),
        Key("idle_timeout_ms", "int", 600_000, "idle connection lifetime", minimum=0),
        Key("ssl_mode", "choice", None, "libpq sslmode", choices=SSL_MODES),
    ),
)
_WORKFLOW_B = (  # TomlProjectConfig: fraiseql compile with a schema.json
    *_struct(
        "ProjectConfig", "project",
        Key("name", "str", "my-fraiseql-app", "project name"),
        Key("version", "str", "1.0.0", "project version"),
        Key("description", "str", None, "description"),
        Key("database_target", "str", None, "database the schema targets"),
    ),
    *_struct(
        "FraiseQLSettings", "fraiseql",
        Key("schema_file", "path", "schema.json", "authored schema"),
        Key("output_file", "path", "schema.compiled.json", "compiled schema"),
        Key("cost_weights", "table", None, "per-operation @cost weights"),
        Key("session_variables", "table", None, "PostgreSQL session variables to set"),
        Key("mutations.auto_error_union", "bool", False, "mutations return an error union"),
        Key("naming.convention", "choice", "camelCase", "GraphQL naming",
            choices=("camelCase", "preserve")),
        Key("naming.acronyms", "list", [], "extra acronyms for casing"),
        Key("tenancy.mode", "choice", "none", "multi-tenancy",
            choices=("none", "row", "schema")),
        Key("tenancy.tenant_claim", "str", "tenant_id", "claim naming the tenant"),
    ),
    *_struct(
        "SecurityConfig (fraiseql-cli)", "fraiseql.security",
        Key("audit_logging.enabled", "bool", True, "audit logging", role="audit_enabled"),
        Key("error_sanitization.enabled", "bool", True, "hide internals in errors",
            role="error_redaction"),
        Key("state_encryption.enabled", "bool", False, "encrypt OAuth state"),
        Key("state_encryption.algorithm", "choice", "chacha20-poly1305", "cipher",
            choices=("chacha20-poly1305", "aes-256-gcm")),
        *(Key(f"constant_time.{name}", "bool", True, "constant-time comparison "
              "(accepted, not consumed: always on)")
          for name in ("enabled", "apply_to_jwt", "apply_to_session_tokens",
                       "apply_to_csrf_tokens", "apply_to_refresh_tokens")),
        Key("role_definitions", "tables", None, "roles and their scopes"),
        Key("default_role", "str", None, "role of a token without one"),
        Key("multi_tenant", "bool", False, "multi-tenant schema"),
        Key("rls.enabled", "bool", False, "row-level security"),
        Key("service_accounts", "table", None, "service accounts, by name"),
    ),
    *_struct(
        "RateLimitConfig (fraiseql-cli)", _B_RATE,
        Key("enabled", "bool", True, "rate limiting on", role="rate_enabled"),
        Key("requests_per_second", "int", 100, "requests per second per IP", minimum=1,
            role="rate_rps_ip"),
        Key("burst_size", "int", 500, "bucket size", minimum=1, role="rate_burst"),
        *(key for name, count, window in _B_AUTH_LIMITS for key in (
            Key(f"{name}_max_requests", "int", count, f"{name} requests per window",
                minimum=1),
            Key(f"{name}_window_secs", "int", window, f"{name} window", minimum=1))),
        Key("trust_proxy_headers", "bool", False, "take the client IP from "
            "X-Forwarded-For", role="trust_proxy"),
        Key("trusted_proxy_cidrs", "cidrs", [], "proxies whose headers are trusted",
            role="trusted_cidrs"),
    ),
)
_WORKFLOW_A = (  # TomlSchema: schema authoring in TOML; also what `fraiseql doctor` parses
    *_struct(
        "SchemaMetadata", "schema",
        Key("name", "str", "myapp", "schema name"),
        Key("version", "str", "1.0.0", "schema version"),
        Key("description", "str", None, "description"),
        Key("database_target", "str", "postgresql", "database the schema targets"),
    ),
    *_struct(
        "TomlSchema", "",
        *(Key(name, "table", None, meaning) for name, meaning in (
            ("types", "GraphQL types, by name"), ("queries", "queries, by name"),
            ("mutations", "mutations, by name"), ("federation", "federation"),
            ("observers", "observers ([[observers.handlers]] is refused)"),
            ("caching", "result cache rules"), ("analytics", "analytics queries"),
            ("observability", "refused unless empty: configure the server instead"),
            ("rest", "the REST surface"), ("grpc", "the gRPC surface"),
            ("changelog", "the changelog"), ("crud", "CRUD naming"),
            ("hierarchies", "ltree hierarchies, by name"),
            ("session_variables", "PostgreSQL session variables to set"))),
        Key("naming_convention", "choice", "camelCase", "GraphQL naming",
            choices=("camelCase", "preserve")),
        Key("tenancy.mode", "choice", "none", "multi-tenancy",
            choices=("none", "row", "schema")),
        Key("tenancy.tenant_claim", "str", "tenant_id", "claim naming the tenant"),
        Key("includes.types", "list", [], "type files to include"),
        Key("includes.queries", "list", [], "query files to include"),
        Key("includes.mutations", "list", [], "mutation files to include"),
        Key("domain_discovery.enabled", "bool", False, "discover domains under root_dir"),
        Key("domain_discovery.root_dir", "path", "", "where domains live"),
        Key("query_defaults.where", "bool", True, "queries get a where argument"),
        Key("query_defaults.order_by", "bool", True, "queries get order_by"),
        Key("query_defaults.limit", "bool", True, "queries get limit"),
        Key("query_defaults.offset", "bool", True, "queries get offset"),
        Key("subscriptions.max_subscriptions_per_connection", "int", None,
            "subscriptions per WebSocket", minimum=1),
        *(Key(f"subscriptions.hooks.{name}", "str", None, f"{name} hook URL")
          for name in ("on_connect", "on_disconnect", "on_subscribe")),
        Key("subscriptions.hooks.timeout_ms", "int", None, "hook timeout", minimum=1),
        Key("validation.max_query_depth", "int", None, "deepest query", minimum=1),
        Key("validation.max_query_complexity", "int", None, "costliest query", minimum=1),
        Key("validation.max_page_size", "int", None, "largest page", minimum=1),
        Key("debug.enabled", "bool", False, "debug extensions in responses"),
        Key("debug.database_explain", "bool", False, "EXPLAIN in debug output"),
        Key("debug.expose_sql", "bool", True, "SQL in debug output"),
        Key("mcp.enabled", "bool", False, "serve MCP"),
        Key("mcp.transport", "str", "http", "MCP transport"),
        Key("mcp.path", "str", "/mcp", "MCP path"),
        Key("mcp.require_auth", "bool", True, "MCP needs a token"),
        Key("mcp.include", "list", [], "operations MCP exposes"),
        Key("mcp.exclude", "list", [], "operations MCP hides"),
        Key("mcp.read_only", "bool", False, "MCP queries only"),
        Key("mcp.session_state", "bool", False, "MCP session state"),
    ),
    *_struct(
        "OidcClientConfig", "auth",
        *(Key(name, "str", None, meaning) for name, meaning in (
            ("issuer", "token issuer"), ("audience", "expected audience"),
            ("jwks_uri", "JWKS URL"), ("scope_claim", "claim holding the scopes"),
            ("discovery_url", "OIDC discovery URL (PKCE client)"),
            ("client_id", "OAuth client id"),
            ("client_secret_env", "env variable holding the client secret"),
            ("server_redirect_uri", "OAuth redirect URI"))),
        Key("additional_audiences", "list", [], "other accepted audiences"),
        Key("allowed_algorithms", "list", [], "accepted JWT algorithms"),
        Key("jwks_cache_ttl_secs", "int", None, "JWKS cache lifetime", minimum=1),
        Key("clock_skew_secs", "int", None, "tolerated clock skew", minimum=0),
        Key("required", "bool", None, "every request needs a token"),
        Key("require_jti", "bool", None, "tokens need a jti"),
        *(Key(name, "table", None, meaning) for name, meaning in (
            ("me", "the /auth/me endpoint"), ("social", "social login"),
            ("local", "local login"))),
    ),
    *_struct(
        "SecuritySettings", "security",
        Key("multi_tenant", "bool", False, "multi-tenant schema"),
        Key("rls.enabled", "bool", False, "row-level security"),
        Key("role_definitions", "tables", None, "roles and their scopes"),
        Key("default_role", "str", None, "role of a token without one"),
        *(Key(name, "tables", None, "refused: the runtime does not enforce it (use RLS)")
          for name in ("rules", "policies", "field_auth")),
        Key("persisted_queries_only", "bool", False, "only persisted queries are served"),
        Key("cost_budget.per_request_max", "int", None, "cost ceiling per request",
            minimum=1),
        Key("cost_budget.per_tenant_per_minute_default", "int", None,
            "cost budget per tenant per minute", minimum=1),
    ),
    *_struct(
        "EnterpriseSecurityConfig", "security.enterprise",
        Key("rate_limiting_enabled", "bool", True, "rate limiting of auth endpoints"),
        Key("auth_endpoint_max_requests", "int", 100, "auth requests per window", minimum=1),
        Key("auth_endpoint_window_seconds", "int", 60, "auth window", minimum=1),
        Key("audit_logging_enabled", "bool", True, "audit logging", role="audit_enabled"),
        Key("audit_log_backend", "str", "postgresql", "where audit events go"),
        Key("audit_retention_days", "int", 365, "audit retention", minimum=1),
        Key("error_sanitization", "bool", True, "sanitise errors (enterprise switch)"),
        Key("hide_implementation_details", "bool", True, "hide internals in errors"),
        Key("constant_time_comparison", "bool", True, "constant-time token comparison"),
        Key("pkce_enabled", "bool", True, "PKCE for OAuth"),
    ),
    *_struct(
        "ErrorSanitizationConfig", "security.error_sanitization",
        Key("enabled", "bool", False, "hide internals in errors", role="error_redaction"),
        Key("hide_implementation_details", "bool", True, "hide implementation details"),
        Key("sanitize_database_errors", "bool", True, "hide database error text"),
        Key("custom_error_message", "str", None, "message shown instead"),
    ),
    *_struct(
        "RateLimitingSecurityConfig", _A_RATE,
        Key("enabled", "bool", False, "rate limiting on", role="rate_enabled"),
        Key("requests_per_second", "int", 100, "requests per second per IP", minimum=1,
            role="rate_rps_ip"),
        Key("burst_size", "int", 200, "bucket size", minimum=1, role="rate_burst"),
        *(key for name, count, window in _A_AUTH_LIMITS for key in (
            Key(f"{name}_max_requests", "int", count, f"{name} requests per window",
                minimum=1),
            Key(f"{name}_window_secs", "int", window, f"{name} window", minimum=1))),
        Key("failed_login_max_attempts", "int", 10, "failed logins before lockout",
            minimum=1),
        Key("failed_login_lockout_secs", "int", 900, "lockout", minimum=1),
        Key("requests_per_second_per_user", "int", None, "requests per second per user",
            minimum=1),
        Key("redis_url", "str", None, "Redis for shared limits (fails open when down)"),
        Key("trust_proxy_headers", "bool", False, "take the client IP from "
            "X-Forwarded-For", role="trust_proxy"),
        Key("trusted_proxy_cidrs", "cidrs", None, "proxies whose headers are trusted",
            role="trusted_cidrs"),
    ),
    *_struct(
        "StateEncryptionConfig", "security.state_encryption",
        Key("enabled", "bool", False, "encrypt OAuth state"),
        Key("algorithm", "choice", "chacha20-poly1305", "cipher",
            choices=("chacha20-poly1305", "aes-256-gcm")),
        Key("key_source", "choice", "env", "where the key comes from", choices=("env",)),
        Key("key_env", "str", "STATE_ENCRYPTION_KEY", "env variable holding the key"),
    ),
    *_struct(
        "PkceSecurityConfig", "security.pkce",
        Key("enabled", "bool", False, "PKCE"),
        Key("code_challenge_method", "choice", "S256", "challenge method",
            choices=("S256", "plain")),
        Key("state_ttl_secs", "int", 600, "state lifetime", minimum=1),
        Key("redis_url", "str", None, "Redis for PKCE state"),
    ),
    *_struct(
        "ApiKeySecurityConfig", "security.api_keys",
        Key("enabled", "bool", False, "API keys"),
        Key("header", "str", "X-API-Key", "header carrying the key"),
        Key("hash_algorithm", "str", "sha256", "hash of stored keys"),
        Key("storage", "choice", "env", "key store", choices=("env", "postgres")),
        Key("static", "tables", None, "static hashed keys"),
    ),
    *_struct(
        "TokenRevocationSecurityConfig", "security.token_revocation",
        Key("enabled", "bool", False, "token revocation"),
        Key("backend", "str", "memory", "revocation store"),
        Key("require_jti", "bool", True, "tokens need a jti"),
        Key("fail_open", "bool", False, "accept tokens when the store is down"),
        Key("redis_url", "str", None, "Redis for revocations"),
        Key("revoke_all_ttl_secs", "int", 86_400, "revoke-all lifetime", minimum=1),
    ),
    *_struct(
        "TrustedDocumentsConfig", "security.trusted_documents",
        Key("enabled", "bool", False, "trusted documents"),
        Key("mode", "choice", "permissive", "refuse or allow unknown documents",
            choices=("strict", "permissive")),
        Key("manifest_path", "path", None, "manifest file"),
        Key("manifest_url", "str", None, "manifest URL"),
        Key("reload_interval_secs", "int", 0, "manifest reload (0: never)", minimum=0),
    ),
)
PROJECT_KEYS = _table(*_WORKFLOW_B, *_SHARED, *_WORKFLOW_A)
# fraiseql.toml's tables: every struct refuses unknown keys. Which top-level sections each of
# the two readers accepts; a section the other reader lacks makes that reader refuse the file.
PROJECT_SECTIONS: dict[str, Section] = {"": Section("TomlProjectConfig / TomlSchema", True)}
WORKFLOW_B_ONLY = ("project", "fraiseql")
WORKFLOW_SHARED = ("server", "database")
WORKFLOW_NAMES = {
    "B": "TomlProjectConfig ([project]/[fraiseql], for fraiseql compile with a schema.json)",
    "A": "TomlSchema (schema authoring in TOML; also what fraiseql doctor parses)",
}

TABLES: dict[Format, dict[str, Key]] = {
    Format.RUNBOOK: RUNBOOK_KEYS, Format.SERVER: SERVER_KEYS, Format.PROJECT: PROJECT_KEYS,
}
SECTIONS: dict[Format, dict[str, Section]] = {
    Format.RUNBOOK: {"": Section("operations-runbook.md §1.2", strict=False)},
    Format.SERVER: SERVER_SECTIONS,
    Format.PROJECT: PROJECT_SECTIONS,
}


def section_of(fmt: Format, path: str) -> Section:
    """The innermost described table holding `path` (the file's root when none is)."""
    parts = path.split(".")[:-1]
    table = SECTIONS[fmt]
    while parts:
        found = table.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return table[""]


def workflow_of(path: str) -> str | None:
    """'B' or 'A' for a fraiseql.toml key only one reader accepts; None when both do."""
    top = path.split(".", 1)[0]
    if top in WORKFLOW_SHARED:
        return None
    return "B" if top in WORKFLOW_B_ONLY else "A"
