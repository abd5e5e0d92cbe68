"""FraiseQL configuration files: recognise, validate, and explain them.

The runbook (§1.2) tells operators to run `fraiseql-server validate-config`, which does not
exist. This module is that validator, and it knows that three different files are in use:

1. the runbook's own file (`[server] listen_addr`, `[database] pool_size`, `[security]`, ...),
   which the real v2 server refuses outright;
2. the real v2 server config (`fraiseql-server --config`): top-level keys, unknown keys and
   the sections `[server] [database] [cors] [rate_limit] [cache]` are hard errors, and a
   `${VAR}` stays literal text;
3. the project file `fraiseql.toml` (`fraiseql compile|run|doctor`), where `${VAR}` expands,
   read as TomlProjectConfig (`[project]`, `[fraiseql]`) or TomlSchema (schema authoring:
   `[schema]`, `[types]`, `[security]`, ...); both share `[server]` and `[database]`.

The format is recognised by structure. Every key of every format is declared once, as data, in
`config_schema` (type, range or allowed values, default, meaning, the real struct that reads
it, and for the runbook format the real equivalent), so that a reviewer can read and argue with
the rules without reading the code. Values are the file's own; a default is reported only for
a key the file does not set, and only where the real reader applies it.
Validation is pure: apart from checking that files the config names exist and are readable, it
reads nothing, and no secret value (a password, a token, a resolved `${VAR}`) reaches a summary
or evidence.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from fraiseql_rb.checks.config_schema import (
    PROJECT_KEYS,
    RUNBOOK_KEYS,
    RUNBOOK_SECTIONS,
    SECTIONS,
    SERVER_KEYS,
    SERVER_REFUSED_SECTIONS,
    SSL_MODES,
    TABLES,
    WORKFLOW_B_ONLY,
    WORKFLOW_NAMES,
    WORKFLOW_SHARED,
    Format,
    Key,
    display,
    section_of,
    workflow_of,
)
from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.errors import (
    RunbookError,
    UsageError,
)
from fraiseql_rb.core.findings import EXIT_CODE, Status, worst

if TYPE_CHECKING:
    from fraiseql_rb.core.findings import Finding


FORMAT_NAMES = {
    Format.RUNBOOK: "the runbook's own config file (§1.2), which the v2 server refuses",
    Format.SERVER: "the FraiseQL v2 server config (fraiseql-server --config / FRAISEQL_CONFIG)",
    Format.PROJECT: "the project file fraiseql.toml (fraiseql compile|run|doctor)",
}
# When two formats score the same, the one a production host most likely runs wins.
_PREFERENCE = (Format.SERVER, Format.PROJECT, Format.RUNBOOK)


# --------------------------------------------------------------------------------------------
# Policy: every threshold the rules use, with where it comes from.
# --------------------------------------------------------------------------------------------
# §1.2 sample sets min_tls_version = "1.2"; TLS 1.0 and 1.1 are deprecated (RFC 8996).
MIN_TLS_VERSION = (1, 2)
KNOWN_TLS_VERSIONS = ((1, 0), (1, 1), (1, 2), (1, 3))
# §1.2 "Never expose to public directly": a bind address must be loopback or one of these.
SAFE_BIND_NETWORKS = {
    "10.0.0.0/8": "private (RFC 1918)",
    "172.16.0.0/12": "private (RFC 1918)",
    "192.168.0.0/16": "private (RFC 1918)",
    "169.254.0.0/16": "link-local",
    "fc00::/7": "unique local (ULA)",
    "fe80::/10": "link-local",
}
# Controls a security profile requires (runbook §1.2 pairs REGULATED with both switched on).
# RESTRICTED is stricter than REGULATED in FraiseQL v1, so it is held to at least as much.
PROFILE_REQUIRES: dict[str, tuple[str, ...]] = {
    "REGULATED": ("field_masking", "error_redaction"),
    "RESTRICTED": ("field_masking", "error_redaction"),
}
ROLE_NAMES = {"field_masking": "field masking", "error_redaction": "error redaction"}
# Pools above this share of max_connections leave no headroom (§6.1), as deployment.py uses.
POOL_WARNING_FRACTION = thresholds.POOL_OF_MAX_CONNECTIONS.warning
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SAFE_SCHEMES = ("postgres", "postgresql")


# --------------------------------------------------------------------------------------------
# Key tables: every key of every shape is data, in config_schema.
# --------------------------------------------------------------------------------------------
_SECTION = Key("", "section")  # marker: a path that is a table of known keys


def _lookup(table: dict[str, Key], path: str) -> Key | None:
    """The key at `path`, `_SECTION` for a known table, or None when the format lacks it."""
    if path in table:
        return table[path]
    parts = path.split(".")
    for i in range(1, len(parts)):
        key = table.get(".".join(parts[:i]))
        if key is not None and key.kind in ("table", "tables"):
            return key
    if any(known.startswith(path + ".") for known in table):
        return _SECTION
    return None


def _leaves(data: Mapping[str, Any], table: Mapping[str, Key] | None = None,
            prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) of a TOML document; opaque tables are one leaf."""
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else str(name)
        key = (table or {}).get(path)
        if isinstance(value, dict) and value and not (key and key.kind in ("table", "tables")):
            yield from _leaves(value, table, path)
        else:
            yield path, value


def _get(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _project_workflow(data: Mapping[str, Any]) -> str:
    """Which reader a fraiseql.toml is written for: 'A' (TomlSchema) when it has a section
    only TomlSchema knows, else 'B' (TomlProjectConfig, the compile-with-schema.json file)."""
    tops = [name for name in data if name not in WORKFLOW_SHARED]
    return "A" if any(name not in WORKFLOW_B_ONLY for name in tops) and not any(
        name in WORKFLOW_B_ONLY for name in tops) else "B"


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntaxProblem:
    message: str
    line: int
    column: int
    excerpt: str = ""


@dataclass(frozen=True)
class ConfigDocument:
    """A parsed config file; a TOML syntax error is kept, to become a finding."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    error: SyntaxProblem | None = None


@dataclass(frozen=True)
class ConfigResult:
    check: str
    status: Status
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str | None = None


@dataclass(frozen=True)
class Detection:
    format: Format
    reason: str
    ambiguous: bool
    scores: dict[str, int]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
_LOCATION = re.compile(r"\(at line (\d+), column (\d+)\)")
_SECRET_LINE = re.compile(r"^\s*([\w.\"'-]*(token|password|passwd|secret|credential|key)"
                          r"[\w\"'-]*)\s*=", re.IGNORECASE)


def load(path: str | Path) -> ConfigDocument:
    """Read and parse a config file. Missing or unreadable is a usage error; bad TOML is not
    (it becomes the `config.syntax` finding, with its line and column)."""
    where = Path(path)
    if not where.exists():
        raise UsageError(f"config file not found: {where}")
    if not where.is_file():
        raise UsageError(f"config path is not a file: {where}")
    try:
        raw = where.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read config file {where}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        return ConfigDocument(where, {}, SyntaxProblem("not UTF-8 text", line, column))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return ConfigDocument(where, {}, _syntax_problem(exc, text))
    return ConfigDocument(where, data)


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str) -> SyntaxProblem:
    """Line and column from the exception (Python 3.14+) or its message (3.11-3.13)."""
    message = str(exc)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    match = _LOCATION.search(message)
    if line is None and match:
        line, column = int(match.group(1)), int(match.group(2))
    if line is None:  # "(at end of document)"
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    message = re.sub(r"\s*\(at [^)]*\)\s*$", "", getattr(exc, "msg", None) or message)
    lines = text.split("\n")
    excerpt = lines[line - 1] if 0 < line <= len(lines) else ""
    if _SECRET_LINE.match(excerpt):
        excerpt = excerpt.split("=", 1)[0] + f"= {secrets.MASK}"
    return SyntaxProblem(message, int(line), int(column or 1), secrets.mask(excerpt.strip()))


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
def detect(data: Mapping[str, Any]) -> Detection:
    """Recognise the format by the keys only it has; keys two formats share (`[database] url`)
    only break ties, and the real server's file wins a tie that remains."""
    leaves = [path for path, _ in _leaves(data)]
    owners = {path: [f for f in Format if _lookup(TABLES[f], path) is not None]
              for path in leaves}
    known = {f: [p for p in leaves if f in owners[p]] for f in Format}
    own = {f: [p for p in known[f] if len(owners[p]) == 1] for f in Format}
    scores = {str(f): len(own[f]) for f in Format}
    ranked = sorted(Format, key=lambda f: (-len(own[f]), -len(known[f]), _PREFERENCE.index(f)))
    best, runner_up = ranked[0], ranked[1]
    if not known[best]:
        reason = (f"no key belongs to any known format ({len(leaves)} keys); "
                  f"treated as {FORMAT_NAMES[Format.SERVER]}")
        return Detection(Format.SERVER, reason, True, scores)
    if not own[best]:
        examples = ", ".join(display(p) for p in known[best][:3])
        reason = (f"ambiguous: its keys ({examples}) are shared by {best} and {runner_up}, "
                  f"so the most likely format was picked")
        return Detection(best, reason, True, scores)
    examples = ", ".join(display(p) for p in own[best][:3])
    reason = (f"{len(own[best])} of {len(leaves)} keys belong only to this format "
              f"(e.g. {examples})")
    ambiguous = bool(own[runner_up])
    if ambiguous:
        reason += (f"; ambiguous: {len(own[runner_up])} keys belong only to {runner_up} "
                   f"(e.g. {', '.join(display(p) for p in own[runner_up][:3])}), "
                   f"so the most likely format was picked")
    return Detection(best, reason, ambiguous, scores)


# --------------------------------------------------------------------------------------------
# Value checks
# --------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def seconds(value: Any) -> float | None:
    """A duration as seconds: an integer, or "30s", "500ms", "5m", "1h"."""
    if _is_int(value) or isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if match:
            return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    return None


def tls_version(value: Any) -> tuple[int, int] | None:
    """"1.2", "TLSv1.2", "TLS1_2", "tls12" or 1.2 -> (1, 2); anything else None."""
    text = str(value).strip().lower().replace(" ", "")
    match = re.fullmatch(r"(?:tls)?v?_?1(?:[._]?([0-3]))?", text)
    if not match or isinstance(value, bool):
        return None
    version = (1, int(match.group(1) or 0))
    return version if version in KNOWN_TLS_VERSIONS else None


def _show(value: Any) -> str:
    """A value as TOML would write it (callers mask the result)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _range_problem(key: Key, number: float) -> str | None:
    low, high = key.minimum, key.maximum
    if low is not None and high is not None and not low <= number <= high:
        return f"must be between {low:g} and {high:g}"
    if low is not None and number < low:
        return f"must be at least {low:g}"
    if high is not None and number > high:
        return f"must be at most {high:g}"
    return None


def _value_problem(key: Key, value: Any) -> tuple[Status, str] | None:
    """What is wrong with `value` for `key`, or None. Types are hard errors in every tool."""
    bad = Status.CRITICAL
    kind = key.kind
    if kind == "bool":
        return None if isinstance(value, bool) else (bad, "must be true or false")
    if kind == "int":
        if not _is_int(value):
            return bad, "must be a whole number"
        problem = _range_problem(key, value)
        return (bad, problem) if problem else None
    if kind == "number":
        if not (_is_int(value) or isinstance(value, float)):
            return bad, "must be a number"
        problem = _range_problem(key, value)
        return (bad, problem) if problem else None
    if kind == "removed":
        return bad, f"is no longer accepted: the server refuses to start ({key.meaning})"
    if kind == "duration":
        secs = seconds(value)
        if secs is None:
            return bad, 'must be a duration such as 30 or "30s"'
        problem = _range_problem(key, secs)
        return (bad, f"{problem} seconds") if problem else None
    if kind == "tls_version":
        if tls_version(value) is None:
            return bad, 'must be a TLS version: "1.2" or "1.3"'
        return None
    if kind in ("str", "path", "host", "addr"):
        if not isinstance(value, str) or (kind != "str" and not value.strip()):
            return bad, "must be a non-empty string"
        return None
    if kind == "choice":
        if not isinstance(value, str):
            return bad, "must be a string"
        if value.lower() not in {c.lower() for c in key.choices}:
            status = bad if key.strict else Status.WARNING
            return status, f"must be one of {', '.join(key.choices)}"
        return None
    if kind == "url":
        if not isinstance(value, str):
            return bad, "must be a string"
        return _url_problem(value)
    if kind in ("list", "strs", "urls", "cidrs"):
        if kind == "strs" and isinstance(value, str):
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return bad, "must be a list of strings"
        if kind == "urls":
            problems = [p for p in map(_url_problem, value) if p]
            return problems[0] if problems else None
        if kind == "cidrs":
            for item in value:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    return bad, f"{_show(item)} is not a CIDR range such as 10.0.0.0/8"
        return None
    if kind == "table":
        return None if isinstance(value, dict) else (bad, "must be a table")
    if kind == "tables":
        ok = isinstance(value, list) and all(isinstance(v, dict) for v in value)
        return None if ok else (bad, "must be an array of tables")
    return None


def _url_problem(value: str) -> tuple[Status, str] | None:
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in SAFE_SCHEMES:
        return Status.CRITICAL, "must be a postgresql:// URL"
    return None


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class _Ref:
    path: str
    name: str


@dataclass(frozen=True)
class _Setting:
    """The value a rule reads for a role: from the file, or the format's default."""

    key: Key
    value: Any
    source: str  # "file", "default" or "absent"
    unresolved: bool
    valid: bool

    @property
    def where(self) -> str:
        return self.key.display + (" (default)" if self.source == "default" else "")


class _Validator:
    """One validation run: the document, its format, and the secrets to keep out of output."""

    def __init__(self, doc: ConfigDocument, detection: Detection, environ: Mapping[str, str],
                 base_dir: Path) -> None:
        self.doc = doc
        self.detection = detection
        self.fmt = detection.format
        self.table = TABLES[self.fmt]
        self.environ = environ
        self.base_dir = base_dir
        self.refs: list[_Ref] = []
        self.unresolved: set[str] = set()
        self.hidden: list[str] = []  # secret values to mask wherever they might appear
        self.resolved = self._resolve(doc.data, "")
        self.sections = SECTIONS[self.fmt]
        self.workflow = _project_workflow(doc.data) if self.fmt is Format.PROJECT else None
        self.roles: dict[str, list[Key]] = {}
        for key in self.table.values():
            if not key.role or (self.fmt is Format.PROJECT
                                and workflow_of(key.path) not in (None, self.workflow)):
                continue  # the other fraiseql.toml reader's key
            self.roles.setdefault(key.role, []).append(key)
        self._collect_literal_secrets()

    # -- interpolation ----------------------------------------------------------------------
    def _resolve(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: self._resolve(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, path) for v in value]
        if isinstance(value, str):
            return _VAR.sub(lambda m: self._expand(m, value, path), value)
        return value

    def _expand(self, match: re.Match[str], text: str, path: str) -> str:
        """Expand one `${VAR}` where the format does; record it either way."""
        name = match.group(1)
        self.refs.append(_Ref(path, name))
        expands = self.fmt is not Format.SERVER and _VAR_NAME.fullmatch(name)
        if not expands or name not in self.environ:
            self.unresolved.add(path)
            return match.group(0)
        value = self.environ[name]
        key = _lookup(self.table, path)
        if (secrets.SECRET_ENV_PATTERN.search(name) or (key and (key.secret or key.kind == "url"))
                or f":{match.group(0)}@" in text):
            self.hidden.append(value)
        return value

    def _collect_literal_secrets(self) -> None:
        for key in self.table.values():
            found, raw = _get(self.doc.data, key.path)
            if not found or not isinstance(raw, str):
                continue
            if key.secret:
                self.hidden.append(raw)
            if key.kind == "url" or key.path.endswith("redis_url"):
                password = _url_password(raw)
                if password and not _VAR.fullmatch(password):
                    self.hidden.append(password)

    # -- settings ---------------------------------------------------------------------------
    def setting(self, role: str) -> _Setting | None:
        """The file's own value for a role; else the default its reader applies (none when
        the key's table is optional and absent, as the real structs do)."""
        keys = self.roles.get(role)
        if not keys:
            return None
        key = next((k for k in keys if _get(self.resolved, k.path)[0]), keys[0])
        found, value = _get(self.resolved, key.path)
        if not found:
            default = key.default_value
            parent = key.path.rpartition(".")[0]
            if parent and section_of(self.fmt, key.path).optional \
                    and not _get(self.resolved, parent)[0]:
                default = None  # an Option<table> not written: the reader has no table
            source = "absent" if default is None else "default"
            return _Setting(key, default, source, False, default is not None)
        problem = _value_problem(key, value)
        valid = problem is None or problem[0] is not Status.CRITICAL
        return _Setting(key, value, "file", key.path in self.unresolved, valid)

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def result(self, check: str, status: Status, summary: str,
               evidence: dict[str, Any] | None = None,
               remediation: str | None = None) -> ConfigResult:
        return ConfigResult(check, status, summary, evidence or {}, remediation)

    # -- rules ------------------------------------------------------------------------------
    def run(self, *, max_connections: int | None, reserved_connections: int,
            instances: int) -> list[ConfigResult]:
        out = [self.format_result()]
        out += self.keys()
        if self.fmt is Format.RUNBOOK:
            out += self.runbook_sections()
            out.append(self.v2_mapping())
        out += self.interpolation()
        out += self.bind()
        out += self.tls()
        out += self.tls_min_version()
        out += self.database_url()
        out += self.literal_secrets()
        out += self.pool(max_connections, reserved_connections, instances)
        out += self.rate_limit()
        out += self.audit()
        out += self.introspection()
        out += self.security_profile()
        out += self.files()
        return [self._masked(r) for r in out]

    def _masked(self, r: ConfigResult) -> ConfigResult:
        hidden = sorted(set(self.hidden), key=len, reverse=True)
        return ConfigResult(
            r.check, r.status, secrets.mask(r.summary, hidden),
            secrets.mask_data(r.evidence, hidden),
            secrets.mask(r.remediation, hidden) if r.remediation else None,
        )

    def format_result(self) -> ConfigResult:
        d = self.detection
        status = Status.WARNING if "no key belongs" in d.reason else Status.INFO
        return self.result(
            "config.format", status,
            f"recognised as {FORMAT_NAMES[self.fmt]}: {d.reason}",
            {"format": str(self.fmt), "path": str(self.doc.path), "ambiguous": d.ambiguous,
             "keys_only_in_format": d.scores},
            "check the file is the one the server reads" if status is Status.WARNING else None,
        )

    def keys(self) -> list[ConfigResult]:
        """Every key known to the format, of the right type and in range."""
        out: list[ConfigResult] = []
        unknown: list[str] = []
        refused: dict[str, list[str]] = {}
        leaves = list(_leaves(self.resolved, self.table))
        for path, value in leaves:
            top = path.split(".", 1)[0]
            if self.fmt is Format.SERVER and top in SERVER_REFUSED_SECTIONS:
                refused.setdefault(top, []).append(path)
                continue
            key = _lookup(self.table, path)
            if key is None:
                unknown.append(path)
                continue
            if key is _SECTION:
                if not isinstance(value, dict):
                    out.append(self.result(
                        "config.value", Status.CRITICAL,
                        f"{path} = {_show(value)} must be a table ([{path}])",
                        {"key": path}, f"write [{path}] as a section in {self.doc.path.name}"))
                continue
            if key.path != path or path in self.unresolved:
                continue  # inside an opaque table; or config.env/interpolation reports it
            problem = _value_problem(key, value)
            if problem:
                # quote the value as written: a resolved ${VAR} may be a secret
                shown = secrets.MASK if key.secret else _show(_get(self.doc.data, path)[1])
                out.append(self.result(
                    "config.value", problem[0], f"{key.display} = {shown} {problem[1]}",
                    {"key": key.display, "kind": key.kind, "minimum": key.minimum,
                     "maximum": key.maximum, "choices": list(key.choices)},
                    f"fix {key.display} in {self.doc.path.name}"))
        for section, paths in refused.items():
            moves = [f"{display(p)} -> {RUNBOOK_KEYS[p].v2_equivalent}"
                     for p in paths if p in RUNBOOK_KEYS]
            out.append(self.result(
                "config.refused_section", Status.CRITICAL,
                f"[{section}] is refused by name by the v2 server, which will not start: "
                f"{SERVER_REFUSED_SECTIONS[section]}"
                + (f" ({'; '.join(moves)})" if moves else ""),
                {"section": section, "keys": [display(p) for p in paths]},
                f"remove [{section}]: {SERVER_REFUSED_SECTIONS[section]}"))
        out += self._missing_required(leaves)
        if unknown:
            fatal = [p for p in unknown if section_of(self.fmt, p).strict]
            status = Status.CRITICAL if fatal else Status.WARNING
            described = [self._describe_unknown(p) for p in unknown]
            structs = sorted({section_of(self.fmt, p).source for p in unknown})
            reader = ("the v2 server will not start" if self.fmt is Format.SERVER
                      else "the fraiseql CLI refuses the file")
            if self.fmt is Format.RUNBOOK:
                consequence = "ignored or refused by the tool that reads it"
            elif fatal:
                consequence = f"a hard error: {reader} ({', '.join(structs)} refuse unknown keys)"
            else:
                consequence = f"ignored silently by {', '.join(structs)}"
            out.append(self.result(
                "config.unknown_keys", status,
                f"{len(unknown)} unknown key(s) for {self.fmt} ({consequence}): "
                + "; ".join(described),
                {"unknown": [display(p) for p in unknown], "structs": structs},
                "remove them, or rename them as suggested"))
        out += self._project_shape()
        if not out:
            out.append(self.result(
                "config.keys", Status.OK,
                f"all {len(leaves)} keys are known to the {self.fmt} format and hold valid "
                "values", {"keys": len(leaves)}))
        return out

    def _missing_required(self, leaves: list[tuple[str, Any]]) -> list[ConfigResult]:
        """Keys a struct requires once its table is written (no serde default)."""
        out = []
        for key in self.table.values():
            parent = key.path.rpartition(".")[0]
            if not key.required or not parent or not _get(self.resolved, parent)[0] \
                    or _get(self.resolved, key.path)[0]:
                continue
            out.append(self.result(
                "config.value", Status.CRITICAL,
                f"{key.display} is required whenever [{parent}] is written: "
                f"{key.source} has no default for it, so the server refuses the file "
                "(missing field)",
                {"key": key.display, "struct": key.source},
                f"set {key.display}, or remove the [{parent}] table"))
        return out

    def _project_shape(self) -> list[ConfigResult]:
        """fraiseql.toml is read by two structs that each refuse the other's sections."""
        if self.fmt is not Format.PROJECT:
            return []
        tops = [name for name in self.doc.data if name not in WORKFLOW_SHARED]
        only_b = [f"[{n}]" for n in tops if n in WORKFLOW_B_ONLY]
        only_a = [f"[{n}]" for n in tops if n not in WORKFLOW_B_ONLY]
        if not (only_a and only_b):
            return []
        return [self.result(
            "config.project_shape", Status.CRITICAL,
            f"the file mixes {', '.join(only_b)} (read only by {WORKFLOW_NAMES['B']}) with "
            f"{', '.join(only_a)} (read only by {WORKFLOW_NAMES['A']}): each reader refuses "
            "the other's sections as unknown keys",
            {"workflow_b": only_b, "workflow_a": only_a},
            "keep one shape: [project]/[fraiseql] with a schema.json, or TOML schema "
            "authoring ([schema], [types], [security], ...)")]

    def _describe_unknown(self, path: str) -> str:
        text = display(path)
        if self.fmt is Format.PROJECT and path in RUNBOOK_KEYS and RUNBOOK_KEYS[path].project:
            return (f"{text} (the runbook's name; fraiseql.toml: "
                    f"{RUNBOOK_KEYS[path].project})")
        if self.fmt is not Format.RUNBOOK and path in RUNBOOK_KEYS:
            return f"{text} (the runbook's name; v2: {RUNBOOK_KEYS[path].v2_equivalent})"
        close = difflib.get_close_matches(path, list(self.table), n=1, cutoff=0.75)
        return f"{text} (did you mean {display(close[0])}?)" if close else text

    def runbook_sections(self) -> list[ConfigResult]:
        """One warning per runbook section: the real server refuses each of them."""
        out = []
        for section, reason in RUNBOOK_SECTIONS.items():
            node = self.doc.data.get(section)
            if not isinstance(node, dict):
                continue
            moves = [f"{name} -> {RUNBOOK_KEYS[f'{section}.{name}'].v2_equivalent}"
                     for name in node if f"{section}.{name}" in RUNBOOK_KEYS]
            out.append(self.result(
                f"config.v2.{section}", Status.WARNING,
                f"[{section}] {reason}; its keys map to: " + ("; ".join(moves) or "nothing"),
                {"section": section, "v2": {m.split(" -> ")[0]: m.split(" -> ")[1]
                                            for m in moves}},
                "write a v2 server config (see config.v2_mapping) for the server; keep this "
                "file only for tools that read the runbook's format"))
        return out

    def v2_mapping(self) -> ConfigResult:
        """Every key of the runbook file with its real v2 equivalent, and the v2 files."""
        rows: list[dict[str, Any]] = []
        server: dict[str, list[str]] = {}
        project: dict[str, list[str]] = {}
        for path, raw in _leaves(self.doc.data, RUNBOOK_KEYS):
            key = RUNBOOK_KEYS.get(path)
            if key is None:
                rows.append({"key": display(path), "value": _show(raw),
                             "v2": "unknown key (not in the runbook's format)",
                             "v2_value": None, "v2_setting": None, "note": ""})
                continue
            value = None
            if key.v2 is not None:
                section, _, leaf = key.v2.rpartition(".")
                line, value = _v2_line(key, leaf, raw)
                (project if key.v2_project else server).setdefault(section, []).append(line)
            setting = None
            if value is not None:
                where = "fraiseql.toml " if key.v2_project else ""
                setting = f"{where}{display(str(key.v2))} = {value}"
            rows.append({"key": key.display, "value": _show(raw), "v2": key.v2_equivalent,
                         "v2_value": value, "v2_setting": setting,
                         "note": "; ".join(filter(None, (setting and key.v2_alt, key.note)))})
        mapped = [r for r in rows if r["v2"] != "no v2 equivalent"]
        none = [r["key"] for r in rows if r["v2"] == "no v2 equivalent"]
        return self.result(
            "config.v2_mapping", Status.INFO,
            f"v2 equivalents of the {len(rows)} keys: {len(mapped)} have one, "
            f"{len(none)} have no v2 equivalent ({', '.join(none) or 'none'})",
            {"rows": rows, "v2_server_config": _render_toml(server),
             "fraiseql_toml": _render_toml(project)})

    def interpolation(self) -> list[ConfigResult]:
        """`${VAR}`: literal text in the v2 server config; elsewhere it must be set."""
        out = []
        if not self.refs:
            return out
        if self.fmt is Format.SERVER:
            for path in dict.fromkeys(r.path for r in self.refs):
                key = _lookup(self.table, path)
                names = sorted({r.name for r in self.refs if r.path == path})
                env = key.env if key and key is not _SECTION else None
                fix = (f"remove {display(path)} from the file and set {env} in the server's "
                       "environment" if env else f"write the value of {display(path)} itself")
                out.append(self.result(
                    "config.interpolation", Status.CRITICAL,
                    f"{display(path)} holds the literal text "
                    + ", ".join(f"${{{n}}}" for n in names)
                    + ": the v2 server does not expand ${VAR}",
                    {"key": display(path), "variables": names, "env_override": env}, fix))
            return out
        by_name: dict[str, list[str]] = {}
        for ref in self.refs:
            by_name.setdefault(ref.name, []).append(display(ref.path))
        missing = []
        for name, used_by in by_name.items():
            users = ", ".join(dict.fromkeys(used_by))
            if not _VAR_NAME.fullmatch(name):
                missing.append(name)
                out.append(self.result(
                    "config.env", Status.CRITICAL,
                    f"${{{name}}} (used by {users}) is not a valid variable name, so it stays "
                    "literal text", {"variable": name, "used_by": used_by},
                    "use ${NAME} with letters, digits and underscores"))
            elif name not in self.environ:
                missing.append(name)
                out.append(self.result(
                    "config.env", Status.CRITICAL,
                    f"${{{name}}} (used by {users}) is not set in this environment: the value "
                    "stays literal text", {"variable": name, "used_by": used_by},
                    f"set {name} in the environment of the service (and of this check)"))
        if not missing:
            out.append(self.result(
                "config.env", Status.OK,
                f"every ${{VAR}} the file uses is set: {', '.join(by_name)}",
                {"variables": list(by_name)}))
        return out

    def bind(self) -> list[ConfigResult]:
        """§1.2: "Never expose to public directly": loopback or private addresses only."""
        if self.fmt is Format.PROJECT:
            host_s, port_s = self.setting("bind_host"), self.setting("bind_port")
            if host_s is None or host_s.source == "absent":
                return [self.result("config.bind", Status.INFO,
                                    "no [server] host in the file: bind address not checked")]
            if host_s.unresolved or not host_s.valid:
                return []
            host = str(host_s.value)
            port = port_s.value if port_s and port_s.source == "file" else None
            shown = host if port is None else f"{host}:{port}"
            where = "[server] host" if port is None else "[server] host:port"
        else:
            s = self.setting("bind")
            if s is None or s.source == "absent":
                return [self.result("config.bind", Status.INFO,
                                    "no listen address in the file: not checked")]
            if s.unresolved or not s.valid:
                return []
            shown, where = str(s.value), s.where
            parsed = split_host_port(shown)
            if parsed is None:
                return [self.result(
                    "config.bind", Status.CRITICAL,
                    f"{where} = {_show(shown)} is not an address the server can bind "
                    "(expected IP:PORT, [IPv6]:PORT)", {"address": shown},
                    "write an explicit loopback or private IP and a port, e.g. 127.0.0.1:8000")]
            host = parsed[0]
        status, what = classify_host(host)
        evidence = {"address": shown, "key": where, "class": what}
        if status is Status.OK:
            return [self.result("config.bind", Status.OK,
                                f"{where} = {_show(shown)} is {what}: not exposed directly",
                                evidence)]
        return [self.result(
            "config.bind", Status.CRITICAL,
            f"{where} = {_show(shown)} is {what}: never expose FraiseQL to the public directly",
            evidence,
            "bind to 127.0.0.1 (or a private address) and put a load balancer or reverse "
            "proxy in front; in a container, publish the port on a private interface only")]

    def tls(self) -> list[ConfigResult]:
        """TLS on, with its certificate and key present and readable by this user."""
        s = self.setting("tls_enabled")
        enabled = s.value if s else None
        where = "not set" if s is None or s.source == "absent" else (
            f"{s.where.replace(' (default)', '')} = {_show(s.value)}"
            + (" (default)" if s.source == "default" else ""))
        if enabled is not True:
            cert = self.setting("tls_cert")
            table = cert.key.path.rpartition(".")[0] if cert else ""
            named = (f"; [{table}] names a certificate, but TLS stays off until enabled = "
                     "true" if cert and cert.source == "file" and table
                     and s is not None and s.source == "default" else "")
            return [self.result(
                "config.tls", Status.WARNING,
                f"TLS is not enabled ({where}){named}: acceptable only if TLS terminates at "
                "the load balancer and the hop to FraiseQL stays on a private network",
                {"tls_enabled": enabled},
                "enable TLS on the server, or confirm the load balancer terminates TLS and the "
                "backend network is private")]
        checks = [("certificate", "tls_cert"), ("private key", "tls_key")]
        client = self.setting("tls_client_cert")
        if client and client.value is True:
            checks.append(("client CA", "tls_client_ca"))
        problems, files = [], {}
        for label, role in checks:
            s = self.setting(role)
            if s is None or s.source == "absent" or not s.valid:
                problems.append(f"no {label} path is set")
                continue
            if s.unresolved:
                continue  # config.env already names the unset variable
            path = self.resolve_path(str(s.value))
            files[label] = str(path)
            problem = _file_problem(path)
            if problem:
                problems.append(f"{label} {path} {problem}")
        evidence = {"files": files, "base_dir": str(self.base_dir)}
        if problems:
            return [self.result(
                "config.tls", Status.CRITICAL,
                "TLS is enabled but " + "; ".join(problems) + ": the server cannot start TLS",
                evidence,
                "install the certificate and key where the config says (readable by the "
                "service user) and run this check on the server host as that user")]
        return [self.result("config.tls", Status.OK,
                            "TLS is enabled; " + ", ".join(f"{k} {v}" for k, v in files.items())
                            + " present and readable", evidence)]

    def tls_min_version(self) -> list[ConfigResult]:
        s = self.setting("tls_min_version")
        if s is None or s.unresolved:
            return []
        if s.source != "file" and not self._tls_enabled():
            return []  # TLS off: its reader's default minimum says nothing
        if s.source == "absent":
            tls_on = self._tls_enabled()
            if not tls_on:
                return []
            return [self.result(
                "config.tls_version", Status.INFO,
                "no minimum TLS version set: the server's default applies (not confirmed)",
                {}, None)]
        version = tls_version(s.value)
        if version is None:
            return []  # config.value reported it
        shown, need = f"{version[0]}.{version[1]}", ".".join(map(str, MIN_TLS_VERSION))
        evidence = {"min_version": shown, "required": need}
        if version < MIN_TLS_VERSION:
            return [self.result(
                "config.tls_version", Status.CRITICAL,
                f"{s.where} allows TLS {shown}, which is deprecated and broken (RFC 8996)",
                evidence, f"set the minimum TLS version to {need} or 1.3")]
        return [self.result("config.tls_version", Status.OK,
                            f"{s.where} = TLS {shown} (>= {need})", evidence)]

    def _tls_enabled(self) -> bool:
        s = self.setting("tls_enabled")
        return bool(s and s.value is True)

    def database_url(self) -> list[ConfigResult]:
        keys = self.roles.get("database_url")
        if not keys:
            return []
        key = keys[0]
        found, raw = _get(self.doc.data, key.path)
        if not found:
            if self.fmt is Format.SERVER and "DATABASE_URL" in self.environ:
                return [self.result(
                    "config.database_url", Status.OK,
                    "no database_url in the file; DATABASE_URL is set in this environment",
                    {"source": "env DATABASE_URL"})]
            extra = " and DATABASE_URL is not set here" if self.fmt is Format.SERVER else ""
            return [self.result(
                "config.database_url", Status.WARNING,
                f"no database URL in the file ({key.display}){extra}",
                {"key": key.display},
                "give the server its database URL through env DATABASE_URL")]
        if not isinstance(raw, str):
            return []
        password = _url_password(raw)
        masked = secrets.mask(raw)
        evidence = {"url": masked, "key": key.display}
        if password and not _VAR.fullmatch(password):
            return [self.result(
                "config.database_url", Status.WARNING,
                f"{key.display} carries a literal password ({masked}): anyone who can read "
                "the file or a copy of it has the database",
                evidence,
                "remove the password from the file: use env DATABASE_URL (v2 server) or "
                "${VAR} (fraiseql.toml), and rotate the password if the file was shared")]
        if self.fmt is Format.SERVER and password:
            return []  # config.interpolation: the ${VAR} would be sent as the password
        source = (f"its password from {password}" if password
                  else "no password (from .pgpass, PGPASSWORD or certificate auth)")
        return [self.result("config.database_url", Status.OK,
                            f"{key.display} = {masked} takes {source}", evidence)]

    def literal_secrets(self) -> list[ConfigResult]:
        out = []
        for key in self.table.values():
            found, raw = _get(self.doc.data, key.path)
            if not key.secret or not found or not isinstance(raw, str) or not raw:
                continue
            if _VAR.search(raw):
                continue  # interpolation covers it
            instead = f"env {key.env}" if key.env else "an environment variable"
            out.append(self.result(
                "config.literal_secret", Status.WARNING,
                f"{key.display} is written in the file: anyone who can read it has the token",
                {"key": key.display, "env_override": key.env},
                f"remove {key.display} from the file and set {instead}; rotate the token"))
        return out

    def pool(self, max_connections: int | None, reserved: int,
             instances: int) -> list[ConfigResult]:
        """§2.2/§6.1: the pools of every instance must fit under max_connections."""
        s = self.setting("pool_max")
        if s is not None and s.source != "absent" and not s.valid:
            return []
        if s is None or s.source == "absent":
            size, source = thresholds.V2_DEFAULT_POOL_MAX, "v2 default pool_max_size (assumed)"
        else:
            size, source = int(s.value), s.where
        out = []
        lo = self.setting("pool_min")
        if lo is not None and lo.valid and _is_int(lo.value) and lo.value > size:
            out.append(self.result(
                "config.pool_bounds", Status.CRITICAL,
                f"{lo.where} = {lo.value} is larger than the pool maximum {size}",
                {"pool_min": lo.value, "pool_max": size}, "make the minimum <= the maximum"))
        instances = max(1, instances)
        total = size * instances
        evidence: dict[str, Any] = {"pool_size": size, "source": source, "instances": instances,
                                    "total": total, "max_connections": max_connections,
                                    "reserved_connections": reserved}
        summary = f"pool {size} ({source}) × {instances} instance(s) = {total} connections"
        if max_connections is None:
            out.append(self.result(
                "config.pool", Status.INFO,
                f"{summary}; not checked against PostgreSQL max_connections (not given)",
                evidence, "pass max_connections (SHOW max_connections) to check the pool fits"))
            return out
        available = max_connections - reserved
        evidence["available"] = available
        summary += (f" against {available} available (max_connections {max_connections} "
                    f"less {reserved} reserved)")
        if total > available:
            out.append(self.result(
                "config.pool", Status.CRITICAL, summary, evidence,
                "lower the pool size or raise max_connections: at full load PostgreSQL "
                "refuses connections"))
        elif total > POOL_WARNING_FRACTION * available:
            out.append(self.result(
                "config.pool", Status.WARNING, summary, evidence,
                f"pools exceed {POOL_WARNING_FRACTION:.0%} of capacity (§6.1): leave headroom "
                "for maintenance and other clients"))
        else:
            out.append(self.result("config.pool", Status.OK, summary, evidence))
        return out

    def rate_limit(self) -> list[ConfigResult]:
        enabled = self.setting("rate_enabled")
        if enabled is None or enabled.unresolved:
            return []
        if enabled.value is not True:
            said = "not set" if enabled.source == "absent" else f"{enabled.where} = false"
            return [self.result(
                "config.rate_limit", Status.WARNING,
                f"rate limiting is not enabled ({said}): one client can exhaust the service",
                {"enabled": enabled.value, "key": enabled.key.display},
                f"set {enabled.key.display} = true")]
        rps, burst = self.setting("rate_rps_ip"), self.setting("rate_burst")
        out = []
        evidence: dict[str, Any] = {}
        if rps and burst and rps.valid and burst.valid and _is_int(rps.value) \
                and _is_int(burst.value):
            evidence = {"rps_per_ip": rps.value, "burst_size": burst.value}
            if burst.value < rps.value:
                out.append(self.result(
                    "config.rate_limit", Status.WARNING,
                    f"{burst.where} = {burst.value} is below {rps.where} = {rps.value}: "
                    "clients are throttled before they reach their per-second rate",
                    evidence, f"raise {burst.key.display} to at least {rps.value}"))
        trust, cidrs = self.setting("trust_proxy"), self.setting("trusted_cidrs")
        if trust and trust.value is True and not (cidrs and cidrs.value):
            out.append(self.result(
                "config.rate_limit", Status.WARNING,
                f"{trust.key.display} = true with no trusted_proxy_cidrs: any client can "
                "forge X-Forwarded-For and escape per-IP limits",
                {"trust_proxy_headers": True},
                "list the load balancers' networks in trusted_proxy_cidrs"))
        if not out:
            out.append(self.result(
                "config.rate_limit", Status.OK,
                f"rate limiting enabled ({enabled.where})"
                + (f", burst {evidence['burst_size']} >= {evidence['rps_per_ip']} rps per IP"
                   if evidence else ""), evidence))
        return out

    def introspection(self) -> list[ConfigResult]:
        """v2 refuses introspection by default; opening it to anyone publishes the schema."""
        enabled, needs_auth = self.setting("introspection"), self.setting("introspection_auth")
        if enabled is None or enabled.value is not True:
            return []
        if needs_auth is not None and needs_auth.value is False:
            return [self.result("config.introspection", Status.WARNING,
                                "introspection is enabled without authentication: anyone can "
                                "read the whole schema",
                                {"introspection_enabled": True,
                                 "introspection_require_auth": False},
                                "set introspection_enabled = false (the v2 default), or at "
                                "least introspection_require_auth = true")]
        return [self.result("config.introspection", Status.INFO,
                            "introspection is enabled for authenticated clients only",
                            {"introspection_enabled": True, "introspection_require_auth": True})]

    def audit(self) -> list[ConfigResult]:
        s = self.setting("audit_enabled")
        if s is None:
            return [self.result(
                "config.audit", Status.INFO,
                "audit logging is not set in the v2 server config: it comes from fraiseql.toml "
                "[fraiseql.security.audit_logging] enabled, compiled into the schema")]
        if s.unresolved:
            return []
        if s.value is True:
            return [self.result("config.audit", Status.OK,
                                f"audit logging enabled ({s.where})", {"key": s.key.display})]
        said = "not set" if s.source == "absent" else f"{s.where} = false"
        return [self.result(
            "config.audit", Status.WARNING,
            f"audit logging is not enabled ({said}): security events leave no trail",
            {"key": s.key.display}, f"set {s.key.display} = true")]

    def security_profile(self) -> list[ConfigResult]:
        s = self.setting("profile")
        if s is None or s.source == "absent" or not isinstance(s.value, str):
            return []
        profile = s.value.upper()
        needs = PROFILE_REQUIRES.get(profile)
        if not needs:
            return [self.result("config.security_profile", Status.INFO,
                                f"security profile {profile} sets no extra requirement",
                                {"profile": profile})]
        off = []
        for role in needs:
            req = self.setting(role)
            if req is None or req.value is not True:
                off.append((ROLE_NAMES[role], req.key.display if req else role))
        evidence = {"profile": profile, "requires": [ROLE_NAMES[r] for r in needs],
                    "not_enabled": [name for name, _ in off]}
        if off:
            return [self.result(
                "config.security_profile", Status.CRITICAL,
                f"security profile {profile} requires "
                + " and ".join(name for name, _ in off) + ", which "
                + ("is" if len(off) == 1 else "are") + " not enabled",
                evidence, "set " + ", ".join(f"{k} = true" for _, k in off))]
        return [self.result(
            "config.security_profile", Status.OK,
            f"security profile {profile}: " + " and ".join(ROLE_NAMES[r] for r in needs)
            + " enabled", evidence)]

    def files(self) -> list[ConfigResult]:
        """Other files the config names (schema, CA bundle) exist and are readable here."""
        out = []
        for key in self.table.values():
            if not key.check_exists:
                continue
            found, value = _get(self.resolved, key.path)
            if not found or not isinstance(value, str) or key.path in self.unresolved:
                continue
            path = self.resolve_path(value)
            problem = _file_problem(path)
            if problem:
                out.append(self.result(
                    "config.files", Status.WARNING,
                    f"{key.display}: {path} {problem} on this host",
                    {"key": key.display, "path": str(path)},
                    "run this check on the server host; relative paths resolve from the "
                    "server's working directory, taken here as the config's directory"))
        return out


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    if not os.access(path, os.R_OK):
        return "is not readable by this user"
    return None


def _url_password(url: str) -> str | None:
    """The password of a URL as written (a `${VAR}` stays as is)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def split_host_port(text: str) -> tuple[str, int] | None:
    """`127.0.0.1:4000` / `[::1]:4000` -> (host, port); None if a socket address it is not."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text.strip())
    if match:
        host, port = match.group(1), match.group(2)
    elif text.count(":") == 1:
        host, _, port = text.strip().partition(":")
    else:
        return None
    if not host or not port.isdigit() or not 1 <= int(port) <= 65_535:
        return None
    return host, int(port)


def classify_host(host: str) -> tuple[Status, str]:
    """OK for loopback and private networks; critical for anything reachable from outside."""
    if host.lower() == "localhost":
        return Status.OK, "loopback"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return Status.CRITICAL, ("not an IP address, so whether it is public cannot be told "
                                 "(the v2 server binds an IP)")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return Status.CRITICAL, "every interface (public ones included)"
    if ip.is_loopback:
        return Status.OK, "loopback"
    for network, name in SAFE_BIND_NETWORKS.items():
        net = ipaddress.ip_network(network)
        if ip.version == net.version and ip in net:
            return Status.OK, name
    return Status.CRITICAL, "a public address"


def _v2_line(key: Key, leaf: str, raw: Any) -> tuple[str, str | None]:
    """The v2 TOML line for a runbook key's value and the value as v2 writes it (None, and a
    comment for the line, when it cannot be carried over)."""
    if key.role == "database_url":
        return (f"# {leaf}: set env DATABASE_URL instead (the v2 server does not expand "
                "${VAR})", None)
    if isinstance(raw, str) and _VAR.search(raw):
        return f"# {leaf}: the v2 server does not expand ${{VAR}}; write the value itself", None
    if _value_problem(key, raw) is not None and key.kind != "choice":
        return f"# {leaf}: fix the value first ({_show(raw)})", None
    value: Any = raw
    if key.kind == "duration":
        value = math.ceil(seconds(raw) or 0)
    elif key.kind == "tls_version":
        version = tls_version(raw)
        value = f"{version[0]}.{version[1]}" if version else raw
    return f"{leaf} = {_show(value)}", _show(value)


def _render_toml(tables: dict[str, list[str]]) -> str:
    blocks = []
    if "" in tables:
        blocks.append("\n".join(tables[""]))
    for section, lines in tables.items():
        if section:
            blocks.append(f"[{section}]\n" + "\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def validate(doc: ConfigDocument, *, environ: Mapping[str, str] | None = None,
             max_connections: int | None = None, reserved_connections: int = 3,
             instances: int = 1, base_dir: str | Path | None = None) -> list[ConfigResult]:
    """Every finding about one config file. Pure: reads only the files the config names.

    `environ` is where `${VAR}` references resolve (default: this process's environment);
    relative paths resolve from `base_dir` (default: the config file's directory).
    """
    if doc.error is not None:
        e = doc.error
        return [ConfigResult(
            "config.syntax", Status.CRITICAL,
            f"{doc.path} is not valid TOML: {e.message} at line {e.line}, column {e.column}",
            {"line": e.line, "column": e.column, "message": e.message, "excerpt": e.excerpt},
            f"fix line {e.line} of {doc.path.name}; no tool can read the file as it is")]
    detection = detect(doc.data)
    base = Path(base_dir) if base_dir is not None else doc.path.resolve().parent
    validator = _Validator(doc, detection, os.environ if environ is None else environ, base)
    return validator.run(max_connections=max_connections,
                         reserved_connections=reserved_connections, instances=instances)


def settings_by_role(path: str | Path) -> dict[str, Any]:
    """The values a file sets, by role (`bind`, `tls_cert`, `tls_key`, `tls_min_version`,
    `pool_max`, ...), whatever its format: so other checks (TLS files, say) need not know
    the three layouts. Relative paths are resolved from the file's directory."""
    doc = load(path)
    if doc.error is not None:
        return {}
    table = TABLES[detect(doc.data).format]
    found: dict[str, Any] = {}
    for key in table.values():
        if key.role:
            present, value = _get(doc.data, key.path)
            if present:
                if key.kind == "path" and isinstance(value, str) and not Path(value).is_absolute():
                    value = str(doc.path.parent / value)
                found[key.role] = value
    return found


def pool_max(path: str | Path | None) -> tuple[int | None, str]:
    """The configured pool maximum and where it came from, in any of the three formats.

    Replaces `deployment.configured_pool_max` (same results): None when the file is absent,
    unreadable or names no pool size, so the caller falls back to the admin API or default.
    """
    if not path or not Path(path).is_file():
        return None, "no config file"
    try:
        doc = load(path)
    except UsageError:
        return None, "config file unreadable"
    if doc.error is not None:
        return None, "config file unreadable"
    data = doc.data
    if _is_int(data.get("pool_max_size")):
        return data["pool_max_size"], "pool_max_size in the v2 server config"
    database = data.get("database") if isinstance(data.get("database"), dict) else {}
    for key in ("pool_max", "pool_size"):
        if _is_int(database.get(key)):
            return database[key], f"[database] {key} in {Path(path).name}"
    return None, "config file names no pool size"


@check("config.file")
def check_config(ctx: RunContext, path: str | Path | None = None, *,
                 max_connections: int | None = None,
                 instances: int | None = None) -> list[Finding]:
    """Validate a config file inside a runbook: every result becomes a recorded finding.

    `path` defaults to the target's `config_path`; `instances` to the number of instances
    the inventory lists for the target (1 when there is no target).
    """
    if instances is None:
        instances = _target_instances(ctx)
    if path is None:
        try:
            path = ctx.target.get("config_path")
        except RunbookError:
            path = None
    if not path:
        return [ctx.result(Status.UNKNOWN,
                           "no config file to check: pass config_path or set it in the "
                           "inventory", {}, "set config_path for the target in the inventory")]
    try:
        doc = load(path)
    except UsageError as exc:
        return [ctx.result(Status.UNKNOWN, str(exc), {"path": str(path)},
                           "fix config_path in the inventory, or run where the file is")]
    findings = []
    for r in validate(doc, max_connections=max_connections, instances=instances):
        table = None
        if r.evidence.get("rows"):
            import pandas as pd  # only notebooks need the table; keep the CLI import light

            table = pd.DataFrame(r.evidence["rows"])
        findings.append(ctx.record(r.check, r.status, r.summary, r.evidence, r.remediation,
                                   table=table))
    return findings


def config_path(ctx: RunContext, explicit: str | None = None) -> str | None:
    """The config file to check: the parameter, else the target's `config_path`."""
    return explicit or ctx.target.get("config_path")


def max_connections(ctx: RunContext) -> int | None:
    """PostgreSQL's usable connections, when the database answers; None otherwise."""
    from fraiseql_rb.targets import postgres  # psycopg: a run needs it, validate-config not

    try:
        info = postgres.server_info(ctx.target.database_url())
    except Exception:  # noqa: BLE001 - the pool rule then says it was not checked
        return None
    return info.max_connections


def check_config_file(ctx: RunContext, path: str | None = None) -> list[Finding]:
    """§1.2 "Verify configuration": the validator, with the pool checked against the live
    database's max_connections when it answers."""
    return check_config(ctx, config_path(ctx, path), max_connections=max_connections(ctx))


def _target_instances(ctx: RunContext) -> int:
    try:
        return max(1, len(ctx.target.instances))
    except RunbookError:
        return 1




def format_result(r: ConfigResult) -> list[str]:
    """The lines `validate-config` prints for one finding."""
    lines = [f"{r.status.upper():<8}  {r.check}  {r.summary}"]
    for row in r.evidence.get("rows", []):
        target = row.get("v2_setting") or row["v2"]
        note = f"  ({row['note']})" if row.get("note") else ""
        lines.append(f"          {row['key']:<34} -> {target}{note}")
    if r.remediation:
        lines.append(f"          -> {r.remediation}")
    return lines


def main_validate(path: str | Path, *, out: TextIO | None = None,
                  max_connections: int | None = None, instances: int = 1) -> int:
    """`fraiseql-rb validate-config FILE`: print the findings, return the exit code.

    A missing file raises UsageError, which the CLI reports in one line (exit 64).
    """
    out = out if out is not None else sys.stdout
    doc = load(path)
    results = validate(doc, max_connections=max_connections, instances=instances)
    for r in results:
        out.write("\n".join(format_result(r)) + "\n")
    overall = worst([r.status for r in results])
    counts = {s: sum(1 for r in results if r.status is s) for s in Status}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.write(f"Overall status: {overall.upper()} — {doc.path}: {tally}\n")
    return EXIT_CODE[overall]


__all__ = [
    "ConfigDocument", "ConfigResult", "Detection", "Format", "Key", "PROJECT_KEYS",
    "RUNBOOK_KEYS", "RUNBOOK_SECTIONS", "SERVER_KEYS", "SERVER_REFUSED_SECTIONS", "SSL_MODES",
    "TABLES", "check_config", "classify_host", "detect", "load",
    "main_validate", "pool_max", "split_host_port", "validate", "check_config_file",
    "config_path",
]
