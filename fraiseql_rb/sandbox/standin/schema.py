"""The schema the stand-in serves: root fields read a view's ``data`` column (FraiseQL's
v_<type> convention). Built in to match the sandbox's schema.sql; a compiled schema file can
replace it. Also the minimal introspection ``__Schema.types`` list.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any


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


def named_type(type_ref: str) -> str:
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
