"""The layout shows the architecture, and the imports keep to it.

- `core/` (run context, findings, catalogues) imports only `core/`; `targets/` (adapters to
  outside systems) adds `targets/`; `checks/` (reusable checks by domain) adds `checks/`.
- A runbook's code is found from its notebook: notebooks/SECTION/NAME.ipynb is
  fraiseql_rb/SECTION/NAME.py (dashboards drop `_dashboard`), or the notebook composes
  reusable checks only. No runbook module imports another runbook's module: what two
  runbooks share sits in `core/`, `targets/` or `checks/`.
- The latest finding of a check is `RunContext.latest`, not a private `_latest`.
- README's tree lists every module.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "fraiseql_rb"
NOTEBOOKS = REPO / "notebooks"
SECTIONS = ("preflight", "monitoring", "incidents", "security", "dashboards", "dr",
            "maintenance")
# what each layer may import from the package, besides itself
LAYERS = {
    "core": set(),
    "targets": {"core"},
    "checks": {"core", "targets"},
    # sandbox: only to refuse a stale sandbox inventory; targets: notify sends through apprise
    "runner": {"core", "sandbox", "targets"},
    "site": {"core"},  # the report site reads artifacts, it never runs checks
    **{section: {"core", "targets", "checks"} for section in SECTIONS},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_of(source: str, own: str, is_package: bool = False) -> set[str]:
    """Every fraiseql_rb module (or name in one) that module `own` imports, relative levels
    resolved, at any depth (function-level imports included)."""
    package = own if is_package else own.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(source)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("fraiseql_rb.")}


def layer_of(name: str) -> str:
    return name.split(".")[1]


def runbook_modules() -> dict[str, Path]:
    """notebook path -> the module of the same name, for notebooks that have one."""
    found = {}
    for notebook in sorted(NOTEBOOKS.glob("*/*.ipynb")):
        section, stem = notebook.parent.name, notebook.stem
        if section == "dashboards":
            stem = stem.removesuffix("_dashboard")
        module = PACKAGE / section / f"{stem}.py"
        if module.exists():
            found[str(notebook.relative_to(REPO))] = module
    return found


RUNBOOK_MODULES = {module_name(p) for p in runbook_modules().values()}
FILES = sorted(p for p in PACKAGE.rglob("*.py") if layer_of(module_name(p) + ".x") in LAYERS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_layer_imports_only_what_is_below_it(path):
    layer = layer_of(module_name(path))
    allowed = LAYERS[layer] | {layer}
    wrong = sorted(n for n in imported(path)
                   if n != "fraiseql_rb.__version__" and layer_of(n) not in allowed)
    assert not wrong, f"{layer}/ may import {sorted(allowed)} only: {wrong}"


@pytest.mark.parametrize("path", sorted(p for p in FILES if layer_of(module_name(p)) in SECTIONS),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_runbook_module_imports_another_runbooks(path):
    own = module_name(path)
    others = sorted(n for n in imported(path)
                    if any(n == m or n.startswith(f"{m}.") for m in RUNBOOK_MODULES - {own}))
    assert not others, (f"{own} imports {others}: move what they share into core/, targets/ "
                        "or checks/")


def test_every_runbook_notebook_finds_its_code():
    """A notebook with a module of its name imports it; one without composes checks only."""
    modules = runbook_modules()
    assert len(modules) >= 15
    for notebook in sorted(NOTEBOOKS.glob("*/*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        imports = set(re.findall(r"^from (fraiseql_rb[\w.]*) import", code, re.M))
        rel = str(notebook.relative_to(REPO))
        if rel in modules:
            section = notebook.parent.name
            assert f"fraiseql_rb.{section}" in imports, f"{rel} does not import its module"
        else:
            layers = {layer_of(m + ".x") for m in imports}
            assert layers <= {"core", "targets", "checks"}, (
                f"{rel} has no module of its name, so it should compose checks only: {imports}")


def test_section_modules_are_runbooks_or_named_helpers():
    """Every module in a section is a runbook's, or a helper its docstring says is one."""
    for section in SECTIONS:
        for path in sorted((PACKAGE / section).glob("*.py")):
            if path.name == "__init__.py" or module_name(path) in RUNBOOK_MODULES:
                continue
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert re.search(r"\bused by\b|\bshared by\b|\bevery\b", doc), (
                f"{path.relative_to(REPO)} is no runbook's module: its docstring should say "
                "which runbooks use it")


@pytest.mark.parametrize("path", sorted((PACKAGE / "incidents").glob("*.py")),
                         ids=lambda p: p.name)
def test_no_playbook_defines_its_own_latest(path):
    defined = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and node.name == "_latest"]
    assert not defined, f"{path.name} defines _latest (line {defined}): use ctx.latest(check)"


def test_readme_tree_lists_every_module():
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- module tree -->\n```\n(.*?)```", text, re.S)
    assert block, "README has no module tree (```...``` after <!-- module tree -->)"
    listed: set[str] = set()
    directory = ""
    for line in block.group(1).splitlines():
        entry = line.strip().split()[0] if line.strip() else ""
        if entry.endswith("/"):
            directory = entry.rstrip("/") if line.startswith("  ") else ""
            if line.startswith("    "):  # a package inside a layer: named, not itemised
                continue
        for name in re.findall(r"\b(\w+)\.py\b", line):
            listed.add(f"{directory}/{name}" if directory else name)
    modules = {str(p.relative_to(PACKAGE).with_suffix(""))
               for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    modules |= {str(p.relative_to(PACKAGE).with_suffix(""))
                for layer in [*LAYERS, "sandbox"] for p in (PACKAGE / layer).glob("*.py")
                if p.name != "__init__.py"}
    assert modules - listed == set(), f"README's tree misses {sorted(modules - listed)}"
    gone = sorted(listed - modules)
    assert not gone, f"README's tree lists what is gone: {gone}"


@pytest.mark.parametrize(("source", "expected"), [
    ("from fraiseql_rb.incidents import memory_leak as m", {"fraiseql_rb.incidents.memory_leak"}),
    ("import fraiseql_rb.incidents.database_unavailable",
     {"fraiseql_rb.incidents.database_unavailable"}),
    ("from . import service_down", {"fraiseql_rb.incidents.service_down"}),
    ("from ..security.daily_security_review import judge",
     {"fraiseql_rb.security.daily_security_review.judge"}),
    ("def f():\n    from .high_error_rate import Window\n",
     {"fraiseql_rb.incidents.high_error_rate.Window"}),
    ("import json\nfrom pandas import DataFrame", set()),
])
def test_the_rules_see_every_way_of_importing(source, expected):
    assert imports_of(source, "fraiseql_rb.incidents.auth_failures") == expected
