"""Running a parsed GraphQL operation against PostgreSQL (the stages after parsing in
handler/stages.rs, and fraiseql-core's executor): plan and validate the root fields against
the served schema, apply the behaviour faults, answer from the query cache or read each root
field's view (one statement each), and shape the JSON to the selection.

The execution timeout (the real server's ``query_timeout_ms``, 30 s) is PostgreSQL's
``statement_timeout``, set from ``request_timeout_secs``: a statement it cancels is the
``TIMEOUT`` error "Query timeout after {ms}ms".

Deliberately simpler than the real server: root fields take only ``limit`` and ``offset``, and
each row's ``data`` column is projected to the selected keys (camelCase, as FraiseQL's views
store them; snake_case columns are found too).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout

from .document import (
    FieldNode,
    OperationDefinitionNode,
    QueryValidationError,
    arguments,
    fields_of,
    response_key,
    skipped,
)
from .faults import int_setting
from .logs import first_line
from .schema import RootQuery, introspection_types, named_type

if TYPE_CHECKING:
    from .app import App

MAX_SLOW_QUERY_MS = 60_000  # the slow-query drill's delay never exceeds a minute
BAD_RELEASE_COLUMN = "summary"  # what the bad-release drill's release expects in each view
_META_FIELDS = ("__typename", "__schema", "__type")


class ExecutionError(Exception):
    """A failure while executing (database down, injected fault): an error with a code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Planned:
    """A root field ready to run: where it reads and how its value is shaped."""

    field: FieldNode
    query: RootQuery | None
    limit: int | None = None
    offset: int | None = None


def execute(app: App, op: OperationDefinitionNode, variables: Mapping[str, Any],
            label: str | None, query: str, raw_variables: Any,
            operation_name: str | None) -> dict[str, Any]:
    """The operation's ``data``; raises QueryValidationError or ExecutionError.

    `query`, `raw_variables` and `operation_name` are the request as received: together they
    are the query cache's key.
    """
    planned = _plan(app, op, variables)
    db_fields = [p for p in planned if p.query is not None]
    spike = app.faults.current().get("error-spike")
    if isinstance(spike, dict):
        target = spike.get("operation")
        names = {label, *(p.field.name.value for p in db_fields)}
        if target in names:
            raise ExecutionError(f"Database error: injected fault error-spike on {target}",
                                 "DATABASE_ERROR")
    slow = app.faults.current().get("slow-query")
    delay_ms = (int_setting(slow, "delay_ms", 1000, 0, MAX_SLOW_QUERY_MS)
                if isinstance(slow, dict) else 0)
    missing = missing_column(app)
    cache_key = None
    if db_fields and app.settings.cache_enabled and not delay_ms and not missing:
        cache_key = json.dumps([query, raw_variables, operation_name], sort_keys=True,
                               default=str)
        cached = app.cache.get(cache_key)
        if cached is not None:
            app.metrics.add(cache_hits=1)
            return cached
        app.metrics.add(cache_misses=1)
    if len(db_fields) > 1:
        app.metrics.add(multi_root_queries_total=1)
    rows = _fetch(app, db_fields, delay_ms, missing) if db_fields else {}
    data: dict[str, Any] = {}
    for p in planned:
        f, key = p.field, response_key(p.field)
        name = f.name.value
        selections = fields_of(f.selection_set)
        if name == "__typename":
            data[key] = "Query"
        elif name == "__schema":
            data[key] = _project(_introspection_schema(app), selections, None, {}, variables)
        elif name == "__type":
            wanted = arguments(f, variables).get("name")
            found = next((t for t in introspection_types(app.schema) if t["name"] == wanted),
                         None)
            data[key] = _project(found, selections, None, {}, variables)
        else:
            assert p.query is not None
            values = rows[key]
            result: Any = values if p.query.returns_list else (values[0] if values else None)
            data[key] = _project(result, selections, p.query.type_name, app.schema.types,
                                 variables)
    if cache_key is not None:
        app.cache.put(cache_key, data, frozenset(p.query.view for p in db_fields if p.query))
    return data


def _plan(app: App, op: OperationDefinitionNode,
          variables: Mapping[str, Any]) -> list[_Planned]:
    """Check each root field against the schema and read its ``limit``/``offset``."""
    kind = op.operation.value
    if kind != "query":
        raise QueryValidationError(f"Schema is not configured for {kind}s.")
    planned: list[_Planned] = []
    schema = app.schema
    for f in fields_of(op.selection_set) or []:
        if skipped(f, variables):
            continue
        name = f.name.value
        if name in _META_FIELDS:
            planned.append(_Planned(f, None))
            continue
        root = schema.queries.get(name)
        if root is None:
            raise QueryValidationError.at(f'Cannot query field "{name}" on type "Query".',
                                          f.name)
        args = arguments(f, variables)
        for key, arg in args.items():
            if key not in ("limit", "offset"):
                raise QueryValidationError.at(
                    f'Unknown argument "{key}" on field "Query.{name}".', f.name)
            if arg is not None and (not isinstance(arg, int) or isinstance(arg, bool)
                                    or arg < 0):
                raise QueryValidationError.at(
                    f'Argument "{key}" on field "Query.{name}" expects a non-negative Int.',
                    f.name)
        selections = fields_of(f.selection_set)
        if selections is None:
            type_ref = f"[{root.type_name}!]!" if root.returns_list else root.type_name
            raise QueryValidationError.at(
                f'Field "{name}" of type "{type_ref}" must have a selection of subfields.',
                f.name)
        _validate_selections(selections, root.type_name, schema.types, variables)
        planned.append(_Planned(f, root, args.get("limit"), args.get("offset")))
    return planned


def _validate_selections(fields: list[FieldNode], type_name: str,
                         types: Mapping[str, dict[str, str] | None],
                         variables: Mapping[str, Any]) -> None:
    """Every selected field exists on its type; objects have sub-selections, leaves none."""
    known = types.get(type_name)
    if known is None:
        return  # a type the stand-in cannot describe: served without validation
    for f in fields:
        name = f.name.value
        if name == "__typename" or skipped(f, variables):
            continue
        ftype = known.get(name)
        if ftype is None:
            raise QueryValidationError.at(
                f'Cannot query field "{name}" on type "{type_name}".', f.name)
        named = named_type(ftype)
        selections = fields_of(f.selection_set)
        if named in types:
            if selections is None:
                raise QueryValidationError.at(
                    f'Field "{name}" of type "{ftype}" must have a selection of subfields.',
                    f.name)
            _validate_selections(selections, named, types, variables)
        elif selections is not None:
            raise QueryValidationError.at(
                f'Field "{name}" must not have a selection since type "{ftype}" has no '
                "subfields.", f.name)


def _introspection_schema(app: App) -> dict[str, Any]:
    return {"queryType": {"name": "Query"}, "mutationType": None, "subscriptionType": None,
            "types": introspection_types(app.schema), "directives": []}


def missing_column(app: App) -> str | None:
    """The ``bad-release`` drill: a release other than the one running when the fault was
    injected reads a column its migration would have added, which this database lacks."""
    flag = app.faults.current().get("bad-release")
    if isinstance(flag, dict) and flag.get("release") not in (None, app.release.name):
        return BAD_RELEASE_COLUMN
    return None


def _fetch(app: App, fields: list[_Planned], delay_ms: int = 0,
           missing: str | None = None) -> dict[str, list[Any]]:
    """One statement per root field. With `delay_ms` (the slow-query drill) each statement
    first sleeps inside PostgreSQL, in a one-time InitPlan, so the time is spent in the
    database and shows in pg_stat_activity and pg_stat_statements, not only here. With
    `missing` (the bad-release drill) each also selects that column of its view, and
    PostgreSQL refuses it: `column v_post.summary does not exist`."""
    out: dict[str, list[Any]] = {}
    try:
        with app.db.pool.connection() as conn:
            for p in fields:
                assert p.query is not None
                view = sql.Identifier(*p.query.view.split("."))
                where = sql.SQL("")
                params: list[Any] = []
                if delay_ms:
                    where = sql.SQL(" WHERE (SELECT true FROM pg_sleep(%s))")
                    params.append(delay_ms / 1000)
                columns = sql.SQL("data")
                if missing:
                    columns = sql.SQL("data, {}").format(
                        sql.Identifier(*p.query.view.split("."), missing))
                stmt = sql.SQL("SELECT {} FROM {}{} LIMIT %s").format(columns, view, where)
                params.append(p.limit)
                if p.offset:
                    stmt = sql.SQL("SELECT {} FROM {}{} LIMIT %s OFFSET %s").format(
                        columns, view, where)
                    params.append(p.offset)
                t0 = time.perf_counter()
                try:
                    rows = conn.execute(stmt, params).fetchall()
                finally:
                    app.metrics.db_observed(int((time.perf_counter() - t0) * 1_000_000))
                out[response_key(p.field)] = [r[0] for r in rows]
    except PoolTimeout as exc:
        raise ExecutionError(f"Connection pool error: {first_line(exc)}",
                             "DATABASE_ERROR") from None
    except psycopg.errors.QueryCanceled as exc:
        if "statement timeout" not in str(exc):
            raise ExecutionError(f"Database error: {first_line(exc)}", "DATABASE_ERROR") from None
        # FraiseQLError::Timeout; its HTTP status depends on the release (releases.py)
        raise ExecutionError(f"Query timeout after {app.db.statement_timeout_ms}ms",
                             "TIMEOUT") from None
    except psycopg.Error as exc:
        raise ExecutionError(f"Database error: {first_line(exc)}", "DATABASE_ERROR") from None
    return out


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _project(obj: Any, selections: list[FieldNode] | None, type_name: str | None,
             types: Mapping[str, dict[str, str] | None], variables: Mapping[str, Any]) -> Any:
    """Keep only the requested keys of a JSON value (``data`` is camelCase, as FraiseQL's)."""
    if selections is None or obj is None:
        return obj
    if isinstance(obj, list):
        return [_project(v, selections, type_name, types, variables) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    fields = types.get(type_name or "") or {}
    for f in selections:
        if skipped(f, variables):
            continue
        name, key = f.name.value, response_key(f)
        if name == "__typename":
            out[key] = type_name or obj.get("name") or "Object"
            continue
        raw = obj.get(name, obj.get(_snake(name)))
        sub_type = named_type(fields[name]) if name in fields else None
        out[key] = _project(raw, fields_of(f.selection_set), sub_type, types, variables)
    return out
