"""A stand-in FraiseQL v2 server for the drill sandbox.

The real server (Rust, ``fraiseql-server``) cannot be installed here, so the sandbox runs this
process instead. It speaks the v2 operational surface as the server's source defines it, so the
runbook library is exercised against the same paths, JSON shapes, status codes, metric names and
config keys it will meet in production:

    python -m fraiseql_rb.sandbox.standin --config server.toml [--state-dir DIR] [--release R]

``--release`` picks the FraiseQL release it emulates (``2.9``, ``2.14.1``, ``main``, the
default, or ``foreign``, a server that is not v2); what differs between them is one table in
``releases``, which the routes consult. It is a property of the process, never a config key:
the real server refuses unknown keys.

Facts were confirmed against the public repository fraiseql/fraiseql, under
``crates/fraiseql-server/src/``: ``routes/health.rs`` (health/readiness JSON), ``routes/metrics.rs``
and ``metrics_server.rs`` (exposition, names, TYPEs, buckets, /metrics/json),
``middleware/auth.rs`` (bearer auth, 401/403/429 limiter), ``middleware/metrics.rs`` (HTTP
counters), ``middleware/content_type.rs`` (415), ``error.rs`` (GraphQL error JSON and status
codes), ``routes/graphql/handler.rs`` and ``handler/stages.rs`` (pipeline, metric accounting,
introspection policy), ``routes/api/admin.rs`` and ``routes/api/types.rs`` (admin API),
``server_config/mod.rs`` and ``server_config/methods.rs`` (keys, defaults, refusals, validate);
and ``crates/fraiseql-core`` ``IntrospectionEnforcer`` (the introspection messages). Each module
names the files it mirrors. Behaviour is re-implemented, not copied; where the stand-in is
deliberately simpler than the real server the docstring says so.

``--state-dir DIR`` is where the sandbox drops fault flags: ``DIR/faults.json`` such as
``{"error-spike": {"operation": "posts"}, "memory-leak": {"bytes_per_request": 1048576}}``
(every flag the stand-in knows is listed in ``faults``).

Beyond the v2 surface, the stand-in also plays the sandbox's OIDC identity provider
(``/.well-known/openid-configuration`` and ``/.well-known/jwks.json`` on its own address, see
``oidc``), which in production is a separate service.

Modules, in dependency order (each imports only those above it):

- ``logs``: log format and throttling, ``first_line`` for one-line exception messages.
- ``releases``: the emulated releases and what differs between them (``Release``;
  ``VERSION``, main's).
- ``config``: the server config TOML, env overrides and validation (``Settings``).
- ``metrics``: counters and histograms, the Prometheus text and ``/metrics/json``.
- ``document``: reading a GraphQL document (graphql-core's parser, the stand-in's rules:
  no fragments, operation selection, argument values, query cost).
- ``schema``: the served schema (built-in v_user/v_post, or a compiled schema file).
- ``guard``: the ``Request`` and ``Response`` of a route, and the bearer-token guard with its
  429 limiter.
- ``faults``: fault flags read from ``STATE_DIR/faults.json``; the memory the leak drill holds.
- ``cache``: the query result cache and the persisted-query (APQ) registry.
- ``oidc``: the discovery document and JWKS of the sandbox's identity provider.
- ``database``: the connection pool, the database liveness probe, the connection leak.
- ``executor``: planning and running a GraphQL operation against PostgreSQL.
- ``routes``: one module per route family, ``handler(app, request) -> Response``:
  ``health`` (/health, /readiness), ``graphql`` (/graphql), ``metrics`` (/metrics,
  /metrics/json), ``admin`` (/api/v1/admin/..., /admin/v1/...), ``oidc`` (/.well-known/...).
- ``app``: ``App``, the shared state, the routing table (URL -> handler) and the bearer guards
  in front of protected routes; the faults that act outside a request.
- ``server``: the threading HTTP(S) server, TLS certificate hot-swap, the request handler.
- ``cli``: ``main()``, the command line and process lifecycle; ``__main__`` calls it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["VERSION", "App", "ConfigError", "Settings", "load_settings", "main"]

# Imported on first use: the sandbox's `service` commands read `releases` and must stay quick
# (the server, its pool and graphql-core cost about 0.3 s to import).
_LAZY = {"App": "app", "main": "cli", "VERSION": "releases", "ConfigError": "config",
         "Settings": "config", "load_settings": "config"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
