"""``GET /graphql`` and ``POST /graphql`` (the path is ``graphql_path``): the request pipeline
of routes/graphql/handler.rs and handler/stages.rs.

A request goes: decode (query string or JSON body, with the CSRF content-type gate) → resolve
automatic persisted queries → parse and pick the operation (``document``) → introspection
policy → count its cost → execute (``executor``) → ``{"data": ...}``. Errors are GraphQL error
bodies with the HTTP status error.rs gives their code (parse and validation errors: 200);
where releases differ (root ``__typename``, the timeout's status) ``app.release`` decides.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..document import (
    QuerySyntaxError,
    QueryValidationError,
    fields_of,
    operation_cost,
    parse_operation,
    with_variable_defaults,
)
from ..executor import ExecutionError, execute
from ..guard import Request, Response

if TYPE_CHECKING:
    from ..app import App

# error.rs ErrorCode::status_code: validation/parse errors are 200 per GraphQL-over-HTTP.
_CODE_STATUS = {
    "VALIDATION_ERROR": 200, "PARSE_ERROR": 200, "PERSISTED_QUERY_NOT_FOUND": 200,
    "REQUEST_ERROR": 400, "PERSISTED_QUERY_MISMATCH": 400, "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403, "NOT_FOUND": 404, "TIMEOUT": 408, "RATE_LIMIT_EXCEEDED": 429,
    "INTERNAL_SERVER_ERROR": 500, "DATABASE_ERROR": 500,
}
_INTROSPECTION_FIELDS = ("__schema", "__type")


def gql_error(message: str, code: str, line: int | None = None,
              column: int | None = None, path: list[str] | None = None,
              status: int | None = None) -> Response:
    """A GraphQL error response: ``{"errors":[{"message","code","locations"?,"path"?}]}``,
    with the status error.rs gives `code` unless the release says otherwise (`status`)."""
    err: dict[str, Any] = {"message": message, "code": code}
    if line is not None and column is not None:
        err["locations"] = [{"line": line, "column": column}]
    if path:
        err["path"] = path
    return Response.json(status or _CODE_STATUS.get(code, 500), {"errors": [err]})


def get(app: App, req: Request) -> Response:
    """GET /graphql?query=&variables=&operationName= with the size cap on both strings."""
    params = parse_qs(req.query, keep_blank_values=True)
    if "query" not in params:
        return Response.text(400, "Failed to deserialize query string: missing field `query`")
    query = params["query"][0]
    limit = app.settings.max_get_query_bytes
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
    return run(app, query, variables, op_name, None)


def post(app: App, req: Request) -> Response:
    """POST /graphql: the CSRF content-type gate (middleware/content_type.rs), then serde."""
    ctype = req.headers.get("Content-Type", "")
    if app.settings.require_json_content_type and not ctype.startswith("application/json"):
        return Response.json(415, {"errors": [{
            "message": "Content-Type must be application/json",
            "extensions": {"code": "UNSUPPORTED_MEDIA_TYPE"}}]})
    if not ctype.startswith("application/json"):
        return Response.text(415, "Expected request with `Content-Type: application/json`")
    try:
        payload = json.loads(req.body)
    except ValueError as exc:
        return Response.text(400, f"Failed to parse the request body as JSON: {exc}")
    problem = _request_problem(payload)
    if problem:
        return Response.text(
            422, f"Failed to deserialize the JSON body into the target type: {problem}")
    return run(app, payload.get("query"), payload.get("variables"),
               payload.get("operationName"), payload.get("extensions"))


def _request_problem(payload: Any) -> str | None:
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


def _resolve_apq(app: App, query: str | None, extensions: Any
                 ) -> tuple[str | None, Response | None]:
    """Automatic persisted queries: register on hash+body, look up on hash alone."""
    pq = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
    digest = pq.get("sha256Hash") if isinstance(pq, dict) else None
    if not isinstance(digest, str):
        if query is None:
            return None, gql_error("No query provided", "REQUEST_ERROR")
        return query, None
    if not app.settings.apq_enabled:
        if query is None:
            return None, gql_error(
                "APQ is not enabled on this server and no query body was provided",
                "REQUEST_ERROR")
        return query, None
    if query is not None:
        if hashlib.sha256(query.encode()).hexdigest() != digest.lower():
            return None, gql_error("provided sha does not match query",
                                   "PERSISTED_QUERY_MISMATCH")
        app.apq.register(digest.lower(), query)
        app.metrics.add(apq_stored=1)
        return query, None
    stored = app.apq.lookup(digest.lower())
    if stored is None:
        app.metrics.add(apq_misses=1)
        return None, gql_error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
    app.metrics.add(apq_hits=1)
    return stored, None


def run(app: App, query: str | None, variables: Any, operation_name: str | None,
        extensions: Any) -> Response:
    """The pipeline both methods share: resolve body, parse, introspection policy, execute.

    Metric accounting follows the handler: a parse error counts as a query error, a validation
    error and a parse error; a validation error as a query error and a validation error; only
    executed queries (success or execution error) reach the per-operation histograms.
    """
    query, refusal = _resolve_apq(app, query, extensions)
    if refusal is not None:
        return refusal
    assert query is not None
    if variables is not None and not isinstance(variables, dict):
        return gql_error("Variables must be a JSON object", "REQUEST_ERROR")
    start = time.perf_counter()
    app.metrics.add(queries_total=1)
    try:
        op = parse_operation(query, operation_name)
    except QuerySyntaxError as exc:
        app.metrics.add(queries_error=1, validation_errors_total=1, parse_errors_total=1)
        return gql_error(str(exc), "PARSE_ERROR", exc.line, exc.column)
    except QueryValidationError as exc:
        app.metrics.add(queries_error=1, validation_errors_total=1)
        return gql_error(str(exc), "VALIDATION_ERROR", exc.line, exc.column)
    roots = fields_of(op.selection_set) or []
    label = operation_name or (roots[0].name.value if roots else None)
    if any(f.name.value in _INTROSPECTION_FIELDS for f in roots):
        refusal = _introspection_refusal(app)
        if refusal is not None:
            app.metrics.add(queries_error=1)
            return refusal
    if roots and roots[0].name.value == "__typename" and not app.release.root_typename:
        # before v2.10.0 the query matcher looks the first root field up among the queries
        app.metrics.add(queries_error=1)
        return gql_error("Validation error: Query '__typename' not found in schema",
                         "VALIDATION_ERROR")
    vars_in = with_variable_defaults(op, variables or {})
    app.metrics.add(queries_cost_total=operation_cost(op))
    try:
        data = execute(app, op, vars_in, label, query, variables, operation_name)
    except QueryValidationError as exc:
        _finish(app, label, start, True)
        return gql_error(str(exc), "VALIDATION_ERROR", exc.line, exc.column)
    except ExecutionError as exc:
        _finish(app, label, start, True)
        return gql_error(str(exc), exc.code, status=app.release.timeout_status
                         if exc.code == "TIMEOUT" else None)
    _finish(app, label, start, False)
    return Response.json(200, {"data": data})


def _finish(app: App, label: str | None, start: float, is_error: bool) -> None:
    elapsed_us = int((time.perf_counter() - start) * 1_000_000)
    app.metrics.query_finished(label, elapsed_us, is_error)


def _introspection_refusal(app: App) -> Response | None:
    """The introspection policy (fraiseql-core IntrospectionEnforcer): 200 + errors[]."""
    s = app.settings
    if not s.introspection_enabled:
        detail = "Introspection queries are disabled in this environment"
    elif s.introspection_require_auth:
        detail = "Introspection queries require authentication"  # no OIDC principal here
    else:
        return None
    return gql_error(detail, "VALIDATION_ERROR")
