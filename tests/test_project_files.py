"""The project files agree with each other: conda env with pyproject, README with CI."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# PyPI name -> conda-forge name(s), where they differ; None = not needed under conda.
CONDA_NAMES = {
    "psycopg": ["psycopg", "psycopg-pool"],
    "prometheus-client": ["prometheus_client"],
    "redis": ["redis-py"],
    "pgserver": None,  # conda supplies the postgresql server itself
    "fraiseql-confiture": None,  # PyPI only: the pip step (-e .[dev]) installs it
}


def _pypi_names() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [re.split(r"[\[<>=!;~ ]", spec, maxsplit=1)[0].lower() for spec in specs]


def _conda_names() -> set[str]:
    names = set()
    for line in (REPO / "environment.yml").read_text().splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.-]+)", line)
        if match:
            names.add(match.group(1).lower())
    return names


def test_environment_yml_has_every_pyproject_dependency():
    conda = _conda_names()
    for name in _pypi_names():
        wanted = CONDA_NAMES.get(name, [name])
        if wanted is None:
            continue
        for conda_name in wanted:
            assert conda_name in conda, f"{name} from pyproject missing in environment.yml"
    assert {"postgresql", "redis-server", "python"} <= conda


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start\n.*?```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README has no quick start block"
    commands = [ln for ln in block.group(1).splitlines() if ln and not ln.startswith("#")]
    assert len(commands) == 2, commands
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == commands[1].strip()
    assert "fraiseql-rb demo" in commands[0]


def test_readme_lists_every_sandbox_fault():
    from fraiseql_rb.sandbox.faults import FAULTS

    readme = (REPO / "README.md").read_text()
    for name, fault in FAULTS.items():
        assert f"| `{name}` | {fault.description} |" in readme, name


def test_readme_lists_every_runbook():
    from fraiseql_rb.core import runbooks

    readme = (REPO / "README.md").read_text()
    for name in runbooks.discover():
        assert f"| `{name}` |" in readme, f"runbook {name} missing from README's table"
