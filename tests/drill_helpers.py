"""Reading a CLI run's findings in drill tests: one copy for every drill file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def findings_of(result: subprocess.CompletedProcess[str]) -> dict:
    """findings.json of a `fraiseql-rb run`, whose last stdout line is the artifact dir."""
    artifact = Path(result.stdout.strip().splitlines()[-1])
    return json.loads((artifact / "findings.json").read_text())


def by_check(data: dict) -> dict[str, dict]:
    return {f["check"]: f for f in data["findings"]}


def diagnosis_of(data: dict) -> dict:
    """The one `diagnosis` finding an incident playbook must end with."""
    found = [f for f in data["findings"] if f["check"] == "diagnosis"]
    assert len(found) == 1, [f["check"] for f in data["findings"]]
    return found[0]


def write_runbook(root: Path, section: str, name: str, heading: str, parameters: str,
                  *cells: str) -> Path:
    """A one-off runbook for the CLI (`FRAISEQL_RB_NOTEBOOKS` = the returned folder):
    `notebooks/SECTION/NAME.ipynb` with a markdown `heading` (title, then purpose), a cell
    tagged `parameters` and the given code cells, on the python3 kernel."""
    import nbformat

    folder = root / "notebooks" / section
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(heading), params,
                *(nbformat.v4.new_code_cell(source) for source in cells)]
    nbformat.write(nb, folder / f"{name}.ipynb")
    return root / "notebooks"
