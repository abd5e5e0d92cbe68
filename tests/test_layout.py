"""Where shared machinery lives: a playbook holds its own steps and diagnosis, never another
playbook's code. What two playbooks share sits in a domain module (`sampling`, `postgres`,
`service`, `target_commands`, `report`, `context`), so no playbook imports a sibling, and the
latest finding of a check is `RunContext.latest`, not a private `_latest` per playbook."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

from fraiseql_rb import incidents

PACKAGE = "fraiseql_rb.incidents"
DIRECTORY = Path(incidents.__file__).resolve().parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(DIRECTORY)]))


def _tree(name: str) -> ast.Module:
    path = DIRECTORY / f"{name}.py"
    return ast.parse(path.read_text(), filename=str(path))


def _absolute(node: ast.ImportFrom, package: str = PACKAGE) -> str:
    """The module a `from ... import` reads, relative levels resolved against `package`."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[:len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def sibling_imports(name: str, tree: ast.Module) -> list[str]:
    """The playbook modules that module `name` imports, by any import statement anywhere in
    it (functions included); `playbooks` when it takes the package itself by name."""
    found: set[str] = set()

    def note(module: str) -> None:
        if module == PACKAGE:
            found.add("playbooks")
        elif module.startswith(f"{PACKAGE}."):
            found.add(module[len(PACKAGE) + 1:].split(".")[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                note(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node)
            if module != PACKAGE:  # `from . import x` reads the package only to reach x
                note(module)
            for alias in node.names:
                note(f"{module}.{alias.name}")
    found.discard(name)
    return sorted(found)


def test_there_are_playbooks_to_check():
    assert {"service_down", "database_unavailable", "high_error_rate"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_no_playbook_imports_a_sibling_playbook(name):
    found = sibling_imports(name, _tree(name))
    assert not found, (f"playbooks/{name}.py imports {found}: move what they share into a "
                       "domain module (sampling, postgres, service, target_commands, report)")


@pytest.mark.parametrize("name", MODULES)
def test_no_playbook_defines_its_own_latest(name):
    defined = [node.lineno for node in ast.walk(_tree(name))
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and node.name == "_latest"]
    assert not defined, (f"playbooks/{name}.py defines _latest (line {defined[0]}): use "
                         "ctx.latest(check)")


@pytest.mark.parametrize("source", [
    "from . import service_down",
    "from .high_error_rate import Window",
    "from fraiseql_rb.incidents import memory_leak as m",
    "import fraiseql_rb.incidents.database_unavailable",
    "from .. import playbooks",
    "from ..playbooks.service_down import restart",
    "def f():\n    from . import connection_pool_exhaustion as pool\n",
])
def test_the_rule_sees_every_way_of_importing_a_sibling(source):
    assert sibling_imports("auth_failures", ast.parse(source))


@pytest.mark.parametrize("source", [
    "from .. import postgres, sampling",
    "from ..context import RunContext",
    "from ..dashboards import board",
    "import fraiseql_rb.targets.postgres",
])
def test_the_rule_lets_domain_modules_through(source):
    assert not sibling_imports("auth_failures", ast.parse(source))
