"""The runbook catalogue, read from the notebooks themselves.

A runbook is `notebooks/<section>/<snake_name>.ipynb`; its CLI name is the kebab-case form.
Its purpose is the first line after the title in the first markdown cell, and its parameters
are the assignments in the cell tagged `parameters`. We parse that cell with `ast` rather
than papermill's inspector, which drops optional annotations such as `str | None` and leaves
unannotated values untyped; we need types to refuse a bad `-p` before a kernel starts.

A parameter's constraint is declared once, as a bracketed suffix of its trailing comment
(`samples = 5  # requests per endpoint [1..1000]`): `[LOW..HIGH]`, `[>0]`, `[>=0]`, `[<N]`,
`[<=N]`, `[one of: a, b]` or a named format (`[duration]`, `[month]`, `[weekdays]`,
`[timestamp]`, `[version]`, `[directory]`) checked by
the very parser the run uses. `fraiseql-rb list`, the README and `-p` all read it from there.
Floats are always finite. Papermill skips a parameters line holding a second `=`, so in a
notebook write `[0..100]` rather than `[>=0]`.
The inventory keys a runbook cannot do without are the notebook's metadata
`fraiseql_rb.requires`, checked by `runner.prepare` against the chosen target.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from fraiseql_rb.core import paths, timespec
from fraiseql_rb.core.errors import UsageError

SECTIONS = ("preflight", "deploy", "incidents", "security", "monitoring", "dr", "maintenance",
            "dashboards")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null", ""}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^({_NUMBER})\s*\.\.\s*({_NUMBER})$")
_BOUND = re.compile(rf"^(>=|>|<=|<)\s*({_NUMBER})$")
_CHOICES = re.compile(r"^one of:\s*(.+)$")
_SUFFIX = re.compile(r"\s*\[([^\[\]]*)\]\s*$")

# Renamed parameters: the old `-p` name still binds to the new one, with a DeprecatedParameter
# warning that `fraiseql-rb run` prints as one line on stderr. (`range` shadowed the builtin.)
DEPRECATED_PARAMETERS = {"range": "lookback"}


class DeprecatedParameter(UserWarning):
    """A `-p` name from DEPRECATED_PARAMETERS was given; its message is the line to show."""


# The named formats' validators are the parsers the runbooks use at run time.
def _duration(text: str) -> object:
    return timespec.parse_range(text)


def _month(text: str) -> object:
    return timespec.month_window(text)


def _weekdays(text: str) -> object:
    return timespec.parse_work_days(text)


def utc_timestamp(text: str) -> datetime:
    """`[timestamp]`: an ISO 8601 moment with its offset (`2026-01-26T14:00:00Z`, `+00:00`),
    not in the future, as an aware UTC datetime. A time without an offset is refused rather
    than guessed: a recovery target an hour off restores the wrong data."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 time such as "
                         "2026-01-26T14:00:00Z") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(f"{text!r} has no UTC offset: write it as {text.strip()}Z")
    moment = moment.astimezone(UTC)
    if moment > datetime.now(UTC):
        raise UsageError(f"{text!r} is in the future")
    return moment


_VERSION = re.compile(r"^v?\d+\.\d+(?:\.\d+)?(?:[-+][0-9A-Za-z.-]+)?$")


def release_version(text: str) -> str:
    """`[version]`: a release as X.Y or X.Y.Z (a leading v and a -suffix allowed) or `main`;
    what an upgrade or a rollback is told to install, so a typo stops before anything."""
    value = text.strip()
    if value != "main" and not _VERSION.match(value):
        raise UsageError(f"{text!r} is not a release version such as 2.14.1 (or main)")
    return value.removeprefix("v")


def new_directory(text: str) -> Path:
    """`[directory]`: an absolute path that does not exist yet or is an empty directory,
    under a parent that exists; where a change creates files, it never lands on old ones."""
    path = Path(text.strip())
    if not text.strip() or not path.is_absolute():
        raise UsageError(f"{text!r} is not an absolute path")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{text!r} exists and is not an empty directory")
    if not path.parent.is_dir():
        raise UsageError(f"the parent of {text!r} does not exist")
    return path


@dataclass(frozen=True)
class Format:
    """A named string format: what to call it in an error, and the run-time parser that
    decides (it raises UsageError), so that a value `-p` accepts is one the run accepts."""

    description: str
    parse: Callable[[str], object]


FORMATS: dict[str, Format] = {
    "duration": Format("a Prometheus duration", _duration),
    "month": Format("a month as YYYY-MM", _month),
    "weekdays": Format("a set of weekdays", _weekdays),
    "timestamp": Format("an ISO 8601 UTC time, not in the future", utc_timestamp),
    "version": Format("a release version such as 2.14.1, or main", release_version),
    "directory": Format("an absolute path to a new or empty directory", new_directory),
}


def _number(value: float) -> str:
    """A bound as a person wrote it: 1000000 rather than 1e+06, 0.1 rather than 0.100000."""
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class Constraint:
    """A parameter's declared limit, the text between the brackets of its comment."""

    text: str  # as declared: "1..1000", ">0", "one of: a, b", "duration"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ">" rather than ">="
    high_open: bool = False  # "<" rather than "<="
    choices: tuple[str, ...] = ()
    format: str | None = None

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Read a declaration; ValueError says what is wrong with it."""
        body = text.strip()
        if match := _RANGE.match(body):
            low, high = float(match.group(1)), float(match.group(2))
            if low > high:
                raise ValueError(f"range [{body}] is empty")
            return cls(body, low=low, high=high)
        if match := _BOUND.match(body):
            op, bound = match.group(1), float(match.group(2))
            if op.startswith(">"):
                return cls(body, low=bound, low_open=op == ">")
            return cls(body, high=bound, high_open=op == "<")
        if match := _CHOICES.match(body):
            choices = tuple(c.strip() for c in match.group(1).split(",") if c.strip())
            return cls(body, choices=choices)
        if body in FORMATS:
            return cls(body, format=body)
        raise ValueError(f"[{body}] is not a constraint: write [1..1000], [>0], [>=0], "
                         f"[one of: a, b] or one of [{'], ['.join(FORMATS)}]")

    @property
    def numeric(self) -> bool:
        return self.low is not None or self.high is not None

    def describe(self) -> str:
        """The constraint as the end of "must be ...", e.g. "in 1..1000" or "> 0"."""
        if self.low is not None and self.high is not None:
            return f"in {_number(self.low)}..{_number(self.high)}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        assert self.format is not None
        return FORMATS[self.format].description

    def check(self, value: Any) -> None:
        """Raise ValueError (with the parser's reason for a format, else empty) when `value`
        is outside the constraint."""
        if self.numeric:
            low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
            high_ok = self.high is None or (
                value < self.high if self.high_open else value <= self.high)
            if not (low_ok and high_ok):
                raise ValueError("")
        elif self.choices:
            if value not in self.choices:
                raise ValueError("")
        elif self.format is not None:
            try:
                FORMATS[self.format].parse(value)
            except UsageError as exc:
                raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # one of: str, int, float, bool, list, dict, each optionally "| None"
    default: Any
    help: str  # the comment without its constraint
    constraint: Constraint | None = None

    @property
    def optional(self) -> bool:
        return self.type.endswith("| None")

    @property
    def base_type(self) -> str:
        return self.type.removesuffix("| None").strip()

    def coerce(self, raw: str) -> Any:
        """Turn a command-line string into this parameter's type, or refuse it clearly."""
        text = raw.strip()
        if self.optional and text.lower() in _NONE:
            return None
        kind = self.base_type
        try:
            if kind == "str":
                return self.check(raw)
            if kind == "int":
                return self.check(int(text), text)
            if kind == "float":
                number = float(text)
                if not math.isfinite(number):
                    raise UsageError(f"parameter {self.name!r} expects a finite number, "
                                     f"got {raw!r}")
                return self.check(number, text)
            if kind == "bool":
                lowered = text.lower()
                if lowered in _TRUE:
                    return True
                if lowered in _FALSE:
                    return False
                raise ValueError
            if kind in ("list", "dict"):
                value = json.loads(text)
                if type(value).__name__ != kind:
                    raise ValueError
                return value
        except (ValueError, json.JSONDecodeError):
            pass
        else:
            return raw
        expected = {"bool": "true or false", "list": "a JSON list", "dict": "a JSON object"}
        raise UsageError(
            f"parameter {self.name!r} expects {expected.get(kind, kind)}"
            f"{' or none' if self.optional else ''}, got {raw!r}"
        )

    def check(self, value: Any, shown: str | None = None) -> Any:
        """Return `value` if its declared constraint allows it (None always passes for an
        optional parameter), else refuse it naming the constraint and the value."""
        if self.constraint is None or (value is None and self.optional):
            return value
        try:
            self.constraint.check(value)
        except ValueError as exc:
            got = shown if shown is not None else (
                repr(value) if isinstance(value, str) else str(value))
            reason = f": {exc}" if str(exc) else ""
            raise UsageError(f"parameter {self.name!r} must be {self.constraint.describe()}, "
                             f"got {got}{reason}") from None
        return value


@dataclass(frozen=True)
class Runbook:
    name: str
    section: str
    path: Path
    title: str
    purpose: str
    parameters: dict[str, Parameter]
    requires: tuple[str, ...] = ()  # inventory keys the target must have

    def bind(self, overrides: dict[str, str]) -> dict[str, Any]:
        """Check and convert `-p NAME VALUE` pairs against the declared parameters. A
        deprecated name (DEPRECATED_PARAMETERS) binds to its new one, with a warning."""
        bound = {}
        for given, raw in overrides.items():
            name = self._current_name(given, overrides)
            if name not in self.parameters:
                declared = ", ".join(self.parameters) or "none"
                raise UsageError(f"runbook {self.name!r} has no parameter {name!r} "
                                 f"(declared: {declared})")
            try:
                bound[name] = self.parameters[name].coerce(raw)
            except UsageError as exc:
                alias = f" (-p {given} is deprecated, use -p {name})" if given != name else ""
                raise UsageError(f"runbook {self.name!r}: {exc}{alias}") from None
        return bound

    def _current_name(self, given: str, overrides: dict[str, str]) -> str:
        new = DEPRECATED_PARAMETERS.get(given)
        if new is None or given in self.parameters or new not in self.parameters:
            return given
        if new in overrides:
            raise UsageError(f"runbook {self.name!r}: -p {given} is the deprecated name of "
                             f"-p {new}: give only -p {new}")
        warnings.warn(DeprecatedParameter(f"-p {given} is deprecated, use -p {new}"),
                      stacklevel=3)
        return new

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.parameters.items()}


def kebab(snake: str) -> str:
    return snake.replace("_", "-")


def _annotation_type(node: ast.expr | None, default: Any) -> str:
    """Declared type: the annotation when there is one, else the default's literal type.

    A None default makes it optional: papermill's parameter pattern refuses `int | None`, so
    the notebooks write `pool_max: int = None`. A string annotation (`"Optional[int]"`, which
    papermill accepts too) is read as the type it names.
    """
    if node is None:
        return "str | None" if default is None else type(default).__name__
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        node = ast.parse(node.value.strip(), mode="eval").body
    optional = default is None
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Optional",
                                                                       "typing.Optional"):
        node, optional = node.slice, True
    parts: list[ast.expr] = []
    pending = [node]
    while pending:  # flatten `A | B | None`
        part = pending.pop()
        if isinstance(part, ast.BinOp) and isinstance(part.op, ast.BitOr):
            pending += [part.right, part.left]
        else:
            parts.append(part)
    kept = [p for p in parts if not (isinstance(p, ast.Constant) and p.value is None)]
    optional = optional or len(kept) < len(parts)
    first = kept[0] if kept else node
    base = ast.unparse(first.value if isinstance(first, ast.Subscript) else first)
    return f"{base} | None" if optional else base


def _split_comment(trailer: str, name: str, where: str) -> tuple[str, Constraint | None]:
    """(help, constraint) from the comment after an assignment."""
    text = trailer.split("#", 1)[1].strip() if "#" in trailer else ""
    match = _SUFFIX.search(text)
    if match is None:
        return text, None
    try:
        constraint = Constraint.parse(match.group(1))
    except ValueError as exc:
        raise UsageError(f"{where}: parameter {name!r}: {exc}") from None
    return text[:match.start()].rstrip(), constraint


def _check_declaration(param: Parameter, where: str) -> None:
    """A numeric range on a number, choices and formats on a string: anything else is a
    mistake in the notebook, refused when it is read."""
    if param.constraint is None:
        return
    fits = ("int", "float") if param.constraint.numeric else ("str",)
    if param.base_type not in fits:
        raise UsageError(f"{where}: parameter {param.name!r} is {param.type}: "
                         f"[{param.constraint.text}] applies to {' or '.join(fits)} only")


def parse_parameters(source: str, where: str) -> dict[str, Parameter]:
    """Read top-level assignments of literals (with trailing `# help`) from a parameters cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UsageError(f"{where}: parameters cell does not parse: {exc.msg}") from None
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value_node, annotation = node.target.id, node.value, node.annotation
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)):
            name, value_node, annotation = node.targets[0].id, node.value, None
        else:
            continue
        try:
            default = ast.literal_eval(value_node) if value_node is not None else None
        except ValueError:
            raise UsageError(f"{where}: parameter {name!r} must default to a literal") from None
        trailer = lines[node.end_lineno - 1][node.end_col_offset:]
        help_text, constraint = _split_comment(trailer, name, where)
        try:
            kind = _annotation_type(annotation, default)
        except SyntaxError:
            raise UsageError(f"{where}: parameter {name!r} has an unreadable annotation") from None
        params[name] = Parameter(name, kind, default, help_text, constraint)
        _check_declaration(params[name], where)
    return params


def _requires(metadata: dict[str, Any], where: str) -> tuple[str, ...]:
    """The notebook's `fraiseql_rb.requires`: inventory keys without which it is useless."""
    section = metadata.get("fraiseql_rb", {})
    declared = section.get("requires", []) if isinstance(section, dict) else None
    if not isinstance(declared, list) or not all(isinstance(k, str) for k in declared):
        raise UsageError(f"{where}: metadata fraiseql_rb.requires must be a list of "
                         "inventory keys")
    return tuple(declared)


def load_runbook(path: Path) -> Runbook:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for a damaged file
        raise UsageError(f"cannot read notebook {path}: {exc}") from None
    title, purpose = path.stem.replace("_", " "), ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            text_lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()]
            if text_lines:
                title = text_lines[0].lstrip("#").strip()
                purpose = next((ln for ln in text_lines[1:] if not ln.startswith("#")), "")
            break
    params: dict[str, Parameter] = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            params = parse_parameters(cell.source, str(path))
            break
    return Runbook(name=kebab(path.stem), section=path.parent.name, path=path, title=title,
                   purpose=purpose, parameters=params, requires=_requires(nb.metadata, str(path)))


def discover(root: Path | None = None) -> dict[str, Runbook]:
    """Every runbook under the notebooks directory, keyed by CLI name."""
    base = root or paths.notebooks_dir()
    found: dict[str, Runbook] = {}
    for section in SECTIONS:
        for path in sorted((base / section).glob("*.ipynb")):
            runbook = load_runbook(path)
            found[runbook.name] = runbook
    return found


def get(name: str, root: Path | None = None) -> Runbook:
    available = discover(root)
    key = name.replace("_", "-")
    if key in available:
        return available[key]
    close = difflib.get_close_matches(key, list(available), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; `fraiseql-rb list` shows them all"
    raise UsageError(f"unknown runbook {name!r}{hint}")
