"""The runbook catalogue, read from the notebooks themselves.

A runbook is `notebooks/<section>/<snake_name>.ipynb`; its CLI name is the kebab-case form.
Its purpose is the first line after the title in the first markdown cell, and its parameters
are the assignments in the cell tagged `parameters`. We parse that cell with `ast` rather
than papermill's inspector, which drops optional annotations such as `str | None` and leaves
unannotated values untyped; we need types to refuse a bad `-p` before a kernel starts.
"""

from __future__ import annotations

import ast
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from . import paths
from .errors import UsageError

SECTIONS = ("preflight", "deploy", "incidents", "security", "monitoring", "dr", "maintenance",
            "dashboards")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null", ""}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # one of: str, int, float, bool, list, dict, each optionally "| None"
    default: Any
    help: str

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
                return raw
            if kind == "int":
                return int(text)
            if kind == "float":
                return float(text)
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


@dataclass(frozen=True)
class Runbook:
    name: str
    section: str
    path: Path
    title: str
    purpose: str
    parameters: dict[str, Parameter]

    def bind(self, overrides: dict[str, str]) -> dict[str, Any]:
        """Check and convert `-p NAME VALUE` pairs against the declared parameters."""
        bound = {}
        for name, raw in overrides.items():
            if name not in self.parameters:
                declared = ", ".join(self.parameters) or "none"
                raise UsageError(f"runbook {self.name!r} has no parameter {name!r} "
                                 f"(declared: {declared})")
            bound[name] = self.parameters[name].coerce(raw)
        return bound

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.parameters.items()}


def kebab(snake: str) -> str:
    return snake.replace("_", "-")


def _annotation_type(node: ast.expr | None, default: Any) -> str:
    """Declared type: the annotation when there is one, else the default's literal type."""
    if node is None:
        return "str | None" if default is None else type(default).__name__
    text = ast.unparse(node)
    optional = default is None or "None" in text or text.startswith("Optional")
    base = text.removeprefix("Optional[").split("|")[0].strip().split("[")[0]
    return f"{base} | None" if optional else base


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
        help_text = trailer.split("#", 1)[1].strip() if "#" in trailer else ""
        params[name] = Parameter(name, _annotation_type(annotation, default), default, help_text)
    return params


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
                   purpose=purpose, parameters=params)


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
