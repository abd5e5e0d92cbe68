"""The admin API: ``/api/v1/admin/...`` (routes/api/admin.rs, errors as routes/api/types.rs)
and the two ``/admin/v1/...`` read-outs the admin studio polls.

Mounted only with ``admin_api_enabled`` and an ``admin_token``; the bearer checks sit in front
(see ``App``): writes need the admin token, the ``/api/v1/admin`` reads also accept
``admin_readonly_token``.

- ``POST /api/v1/admin/reload-schema`` → `reload_schema`
- ``POST /api/v1/admin/cache/clear`` → `cache_clear`
- ``GET /api/v1/admin/cache/stats`` → `cache_stats`
- ``GET /api/v1/admin/config`` → `config`
- ``GET /admin/v1/health/detailed`` → `health_detailed`
- ``GET /admin/v1/metrics/summary`` → `metrics_summary`
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import CACHE_MAX_ENTRIES, CACHE_TTL_SECS
from ..config import REDACTED, redact_database_url
from ..guard import Request, Response
from ..schema import schema_from_compiled

if TYPE_CHECKING:
    from ..app import App

_log = logging.getLogger("fraiseql_standin")

# routes/api/types.rs ApiError::into_response
_API_STATUS = {"UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "VALIDATION_ERROR": 400,
               "PARSE_ERROR": 400}


def api_error(message: str, code: str) -> Response:
    """The admin API's ``{"error","code","details"}`` body."""
    return Response.json(_API_STATUS.get(code, 500),
                         {"error": message, "code": code, "details": None})


def api_success(data: Any) -> Response:
    """The admin API's ``{"status": "success", "data": ...}`` envelope."""
    return Response.json(200, {"status": "success", "data": data})


def _json_body(req: Request, required: dict[str, type]) -> tuple[dict[str, Any] | None,
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


def reload_schema(app: App, req: Request) -> Response:
    """Read a compiled schema file and serve it (or only check it, ``validate_only``)."""
    body, refusal = _json_body(req, {"schema_path": str, "validate_only": bool})
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
        app.metrics.add(schema_reload_errors_total=1)
        _log.error("Schema reload failed: %s", exc)
        return api_error(f"Internal server error: Schema reload failed: {exc}",
                         "INTERNAL_ERROR")
    with app.schema_lock:
        app.schema = model
    app.cache.clear()
    ms = int((time.perf_counter() - t0) * 1000)
    app.metrics.add(schema_reloads_total=1)
    _log.info("Schema reloaded from %s in %sms (hash %s)", path, ms, model.content_hash)
    return api_success({"success": True, "message": f"Schema reloaded from {path} in {ms}ms"})


def cache_clear(app: App, req: Request) -> Response:
    """Clear the query cache: ``all``, one ``entity`` type's view, or keys matching a glob."""
    body, refusal = _json_body(req, {"scope": str})
    if refusal is not None:
        return refusal
    assert body is not None
    scope = body["scope"]
    if scope == "all":
        cleared = app.cache.clear()
        message = f"Cleared {cleared} cache entries"
    elif scope == "entity":
        entity = body.get("entity_type")
        if not isinstance(entity, str):
            return api_error("Validation error: entity_type is required when scope is 'entity'",
                             "VALIDATION_ERROR")
        cleared = app.cache.clear_view(f"v_{entity.lower()}")
        message = f"Cleared {cleared} cache entries for entity type '{entity}'"
    elif scope == "pattern":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            return api_error("Validation error: pattern is required when scope is 'pattern'",
                             "VALIDATION_ERROR")
        cleared = app.cache.clear_matching(pattern)
        message = f"Cleared {cleared} cache entries matching pattern '{pattern}'"
    else:
        return api_error("Validation error: scope must be 'all', 'entity', or 'pattern'",
                         "VALIDATION_ERROR")
    _log.info("Admin: cache cleared (scope %s, %s entries)", scope, cleared)
    return api_success({"success": True, "entries_cleared": cleared, "message": message})


def cache_stats(app: App, req: Request) -> Response:
    """Entry count and TTL: one entry per cache on main, a flat object up to v2.14.1."""
    if app.release.cache_stats == "list":
        return _cache_stats_list(app)
    n = app.cache.entries()
    if not app.settings.cache_enabled:
        return api_success({"entries_count": 0, "cache_enabled": False, "ttl_secs": 0,
                            "message": "Cache is not configured"})
    return api_success({"entries_count": n, "cache_enabled": True,
                        "ttl_secs": CACHE_TTL_SECS,
                        "message": f"Cache contains {n} entries with "
                                   f"{CACHE_TTL_SECS}-second TTL"})


def _cache_stats_list(app: App) -> Response:
    """main's ``{caches: [...], message}``: the query result cache (the server's Arrow Flight
    cache is feature-gated and absent here)."""
    if app.settings.cache_enabled:
        entry = {"cache": "query_result", "configured": True,
                 "entries_count": app.cache.entries(),
                 "hits": app.metrics.get("cache_hits"),
                 "misses": app.metrics.get("cache_misses"),
                 "ttl_secs": CACHE_TTL_SECS, "max_entries": CACHE_MAX_ENTRIES}
        message = "Configured cache(s): query_result"
    else:
        entry = {"cache": "query_result", "configured": False, "entries_count": 0,
                 "ttl_secs": 0}
        message = "No cache is configured on this server"
    return api_success({"caches": [entry], "message": message})


def config(app: App, req: Request) -> Response:
    """The effective config as strings, secrets shown only as set (``[REDACTED]``) or not."""
    s = app.settings

    def secret(value: str | None) -> str:
        return REDACTED if value else ""

    values = {
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
    return api_success({"version": app.release.version, "config": values})


def health_detailed(app: App, req: Request) -> Response:
    """Uptime, version, pool and cache figures (null where unmeasured)."""
    pool = app.db.snapshot()
    return Response.json(200, {
        "uptime_secs": int(time.monotonic() - app.started),
        "version": app.release.version,
        "pool_active": pool.active,
        "pool_idle": pool.idle,
        "pool_max": pool.max_size,
        "cache_hit_rate": app.metrics.cache_hit_ratio(),
        "cache_entries": app.cache.entries() if app.settings.cache_enabled else None,
    })


def metrics_summary(app: App, req: Request) -> Response:
    """Latency percentiles and error rate over five minutes, pool, cache and subscriptions."""
    pool = app.db.snapshot()
    summary = app.metrics.summary()
    summary["pool"] = {"active": pool.active, "idle": pool.idle, "max": pool.max_size,
                       "utilization": round(pool.active / pool.max_size, 4)
                       if pool.max_size else None}
    summary["cache"] = {"hit_rate": app.metrics.cache_hit_ratio(),
                        "entries": app.cache.entries()}
    summary["subscriptions"] = {"active": 0}
    return Response.json(200, summary)
