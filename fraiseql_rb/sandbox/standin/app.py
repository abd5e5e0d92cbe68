"""The application: routes, the GraphQL pipeline, the query result cache and the admin API
(routes/health.rs, routes/metrics.rs, routes/graphql/handler.rs, handler/stages.rs,
routes/api/admin.rs, routes/api/types.rs, error.rs), the sandbox's identity provider (oidc)
and the behaviour faults. Everything behind the HTTP layer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout

from .config import REDACTED, Settings, redact_database_url
from .database import Database
from .faults import FaultFlags, int_setting
from .graphql_parser import (
    EnumValue,
    Field,
    GraphQLSyntaxError,
    GraphQLValidationError,
    Operation,
    Var,
    parse_document,
)
from .guard import BearerGuard, Response
from .metrics import Metrics, PoolSnapshot
from .oidc import DISCOVERY_PATH, JWKS_PATH, IdentityProvider
from .schema import (
    RootQuery,
    SchemaModel,
    builtin_schema,
    introspection_types,
    named_type,
    schema_from_compiled,
)

VERSION = "2.15.0-standin"
DATABASE_TYPE = "PostgreSQL"
CACHE_TTL_SECS = 60  # routes/api/admin.rs: cache_stats reports the QueryCache's 60-second TTL
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # routes/metrics.rs sends exactly this
FAULT_TICK_SECS = 0.5  # how often faults that need no request (leaks, their release) are applied
MAX_SLOW_QUERY_MS = 60_000
MAX_LEAK_BYTES = 4 << 30  # the memory-leak drill must never take the host down

_log = logging.getLogger("fraiseql_standin")

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
        self._leak_bytes = 0
        self._leak_cap: int | None = None
        self._leak_lock = threading.Lock()
        self.idp = IdentityProvider(settings)
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
        self.routes[DISCOVERY_PATH] = {"GET": self.oidc_discovery}
        self.routes[JWKS_PATH] = {"GET": self.oidc_jwks}
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

    # ---- behaviour faults -------------------------------------------------------------------

    def after_request(self) -> None:
        """Apply the memory-leak fault: keep a chunk of memory per request while it is set.

        Growth stops at a cap (the setting `max_bytes`, else a quarter of the memory available
        when the leak starts, at most 4 GiB): a drill left on must not take the host down.
        """
        leak = self.faults.current().get("memory-leak")
        if not isinstance(leak, dict):
            self._release_leak()
            return
        size = int_setting(leak, "bytes_per_request", 1 << 20, 1, 64 << 20)
        with self._leak_lock:
            if self._leak_cap is None:
                self._leak_cap = int_setting(leak, "max_bytes", _default_leak_cap(), 0,
                                             MAX_LEAK_BYTES)
            if self._leak_bytes + size <= self._leak_cap:
                self._leak.append(bytearray(b"\xa5") * size)  # written, so it is resident
                self._leak_bytes += size

    def _release_leak(self) -> None:
        """Drop the leaked chunks and hand the pages back to the OS (glibc keeps them else)."""
        with self._leak_lock:
            if not self._leak and self._leak_cap is None:
                return
            self._leak.clear()
            self._leak_bytes, self._leak_cap = 0, None
        _malloc_trim()

    def apply_background_faults(self) -> None:
        """Faults that must act without a request: the connection leak, and releasing leaks."""
        flags = self.faults.current()
        leak = flags.get("leak-connections")
        count = (int_setting(leak, "count", self.settings.pool_max_size, 0,
                             self.settings.pool_max_size) if isinstance(leak, dict) else 0)
        if count != self.db.leak.count:
            self.db.leak.hold(count)
        if not isinstance(flags.get("memory-leak"), dict):
            self._release_leak()

    def watch_faults(self, stop: threading.Event) -> None:
        """Run `apply_background_faults` every FAULT_TICK_SECS until `stop` is set."""
        while not stop.wait(FAULT_TICK_SECS):
            try:
                self.apply_background_faults()
            except Exception as exc:  # noqa: BLE001 - a fault must never end the watcher
                _log.warning("applying fault flags failed: %s", first_line(exc))

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

    # ---- the sandbox's identity provider (oidc.py) -----------------------------------------

    def _oidc_refusal(self) -> Response | None:
        """The `oidc-down` drill: the provider's documents answer 503 while it is set."""
        if isinstance(self.faults.current().get("oidc-down"), dict):
            return Response.json(503, {"error": "temporarily_unavailable",
                                       "error_description": "identity provider unavailable"})
        return None

    def oidc_discovery(self, req: Request) -> Response:
        return self._oidc_refusal() or Response.json(200, self.idp.discovery())

    def oidc_jwks(self, req: Request) -> Response:
        return self._oidc_refusal() or Response.json(200, self.idp.jwks())

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
        slow = self.faults.current().get("slow-query")
        delay_ms = (int_setting(slow, "delay_ms", 1000, 0, MAX_SLOW_QUERY_MS)
                    if isinstance(slow, dict) else 0)
        cache_key = None
        if db_fields and self.settings.cache_enabled and not delay_ms:
            cache_key = json.dumps([query, raw_variables, operation_name], sort_keys=True,
                                   default=str)
            cached = self._cache_get(cache_key)
            if cached is not None:
                self.metrics.add(cache_hits=1)
                return cached
            self.metrics.add(cache_misses=1)
        if len(db_fields) > 1:
            self.metrics.add(multi_root_queries_total=1)
        rows = self._fetch(db_fields, delay_ms) if db_fields else {}
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

    def _fetch(self, fields: list[_Planned], delay_ms: int = 0) -> dict[str, list[Any]]:
        """One statement per root field. With `delay_ms` (the slow-query drill) each statement
        first sleeps inside PostgreSQL, in a one-time InitPlan, so the time is spent in the
        database and shows in pg_stat_activity and pg_stat_statements, not only here."""
        out: dict[str, list[Any]] = {}
        try:
            with self.db.pool.connection() as conn:
                for p in fields:
                    assert p.query is not None
                    view = sql.Identifier(*p.query.view.split("."))
                    where = sql.SQL("")
                    params: list[Any] = []
                    if delay_ms:
                        where = sql.SQL(" WHERE (SELECT true FROM pg_sleep(%s))")
                        params.append(delay_ms / 1000)
                    stmt = sql.SQL("SELECT data FROM {}{} LIMIT %s").format(view, where)
                    params.append(p.limit)
                    if p.offset:
                        stmt = sql.SQL("SELECT data FROM {}{} LIMIT %s OFFSET %s").format(
                            view, where)
                        params.append(p.offset)
                    t0 = time.perf_counter()
                    try:
                        rows = conn.execute(stmt, params).fetchall()
                    finally:
                        self.metrics.db_observed(int((time.perf_counter() - t0) * 1_000_000))
                    out[p.field.key] = [r[0] for r in rows]
        except PoolTimeout as exc:
            raise _ExecutionError(f"Connection pool error: {first_line(exc)}",
                                  "DATABASE_ERROR") from None
        except psycopg.Error as exc:
            raise _ExecutionError(f"Database error: {first_line(exc)}",
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


def _default_leak_cap() -> int:
    """A quarter of MemAvailable (Linux), else 1 GiB; never above MAX_LEAK_BYTES."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return min(MAX_LEAK_BYTES, int(line.split()[1]) * 1024 // 4)
    return 1 << 30


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc only; elsewhere freeing is enough)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)


def first_line(exc: BaseException) -> str:
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
        named = named_type(ftype)
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
        sub_type = named_type(fields[f.name]) if f.name in fields else None
        out[f.key] = _project(raw, f.selections, sub_type, types, variables)
    return out
