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
