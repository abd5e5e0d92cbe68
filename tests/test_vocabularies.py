"""Root-cause vocabularies are declared once, in each playbook's VOCABULARY; the notebook's
Diagnosis step, README's runbook table and the module's docstring are held to it, and the
hook that sets a diagnosis' status has one name everywhere (`verdict_status`)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

from fraiseql_rb import dr, incidents
from fraiseql_rb.core import paths
from fraiseql_rb.core.diagnosis import Vocabulary

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
CODE = re.compile(r"`([a-z_]+)`")

# every playbook with a diagnosis: the incident playbooks, and §5.2's failover
SECTIONS = {m.name: "incidents" for m in pkgutil.iter_modules(incidents.__path__)}
SECTIONS |= {m.name: "dr" for m in pkgutil.iter_modules(dr.__path__)
             if hasattr(importlib.import_module(f"fraiseql_rb.dr.{m.name}"), "VOCABULARY")}
MODULES = sorted(SECTIONS)


def _module(name: str):
    return importlib.import_module(f"fraiseql_rb.{SECTIONS[name]}.{name}")


def _notebook(name: str) -> dict:
    return json.loads((paths.notebooks_dir() / SECTIONS[name] / f"{name}.ipynb").read_text())


def _diagnosis_markdown(nb: dict) -> str:
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and text.lstrip("# ").startswith("Diagnosis"):
            return text
    raise AssertionError("no '## Diagnosis' step")


def _readme_root_causes(runbook: str) -> set[str]:
    [row] = [ln for ln in README.splitlines()
             if ln.startswith(f"| `{runbook}` |") and "Root causes:" in ln]
    return set(CODE.findall(row.split("Root causes:", 1)[1]))


@pytest.mark.parametrize("name", MODULES)
def test_every_copy_of_a_vocabulary_matches_the_declaration(name):
    module = _module(name)
    vocabulary: Vocabulary = module.VOCABULARY
    codes = set(vocabulary.remediation)
    assert vocabulary.playbook == name.replace("_", "-")
    in_notebook = set(CODE.findall(_diagnosis_markdown(_notebook(name))))
    assert codes <= in_notebook, f"the notebook's Diagnosis step omits {codes - in_notebook}"
    assert _readme_root_causes(vocabulary.playbook) == codes
    # a docstring that describes the codes describes all of them (a new code is not forgotten)
    described = [c for c in codes if f"`{c}`" in (module.__doc__ or "")]
    assert len(described) in (0, len(codes)), f"{name}'s docstring omits {codes - set(described)}"

@pytest.mark.parametrize("name", MODULES)
def test_one_name_for_the_diagnosis_status_hook(name):
    module = _module(name)
    assert not hasattr(module, "severity"), "the hook is called verdict_status"
    source = "".join("".join(c["source"]) for c in _notebook(name)["cells"])
    calls_hook = "playbook.verdict_status(run)" in source
    assert calls_hook == hasattr(module, "verdict_status")
