import re

import nbformat
import pytest

from fraiseql_rb.core import paths, runbooks
from fraiseql_rb.core.errors import UsageError


def test_parameters_cell_types_and_help():
    params = runbooks.parse_parameters(
        'target = "sandbox"  # the target\nincident_id = None\nexecute: bool = False\n'
        "window: int = 24  # hours [1..720]\nratio = 0.5\nnames: list[str] | None = None\n"
        'limit: "Optional[int]" = None  # cap\n', "t")
    assert {n: p.type for n, p in params.items()} == {
        "target": "str", "incident_id": "str | None", "execute": "bool", "window": "int",
        "ratio": "float", "names": "list | None", "limit": "int | None"}
    assert params["target"].help == "the target"
    assert params["window"].help == "hours"
    assert params["window"].constraint.describe() == "in 1..720"


@pytest.mark.parametrize(("kind", "raw", "expected"), [
    ("int", "42", 42), ("float", "2.5", 2.5), ("float", "3", 3.0), ("bool", "true", True),
    ("bool", "No", False), ("list", '["a", 1]', ["a", 1]), ("str | None", "none", None),
    ("str", "none", "none"), ("int | None", "7", 7),
])
def test_coerce_accepts(kind, raw, expected):
    assert runbooks.Parameter("p", kind, None, "").coerce(raw) == expected


@pytest.mark.parametrize(("kind", "raw"), [
    ("int", "4.2"), ("int", "many"), ("float", "fast"), ("bool", "maybe"), ("list", "{}"),
    ("dict", "[1]"),
])
def test_coerce_refuses_with_one_clear_line(kind, raw):
    with pytest.raises(UsageError, match=f"parameter 'p' expects .*got {re.escape(repr(raw))}"):
        runbooks.Parameter("p", kind, None, "").coerce(raw)


def test_unknown_runbook_suggests_a_close_name():
    with pytest.raises(UsageError, match="did you mean 'service-health'"):
        runbooks.get("service-helth")


def test_undeclared_parameter_is_refused():
    with pytest.raises(UsageError, match="has no parameter 'bogus'"):
        runbooks.get("service-health").bind({"bogus": "1"})


def test_every_notebook_follows_the_conventions():
    """One `parameters` cell with a target, no stored outputs, a title, kernel python3."""
    notebooks = sorted(paths.notebooks_dir().glob("*/*.ipynb"))
    assert notebooks, "no notebooks found"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path}: {len(tagged)} parameters cells"
        assert "target" in runbooks.parse_parameters(tagged[0].source, str(path))
        assert isinstance(nb.metadata["fraiseql_rb"]["requires"], list), f"{path}: no requires"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        assert path.parent.name in runbooks.SECTIONS
        assert nb.metadata["kernelspec"]["name"] == "python3"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path}: stored outputs"
                assert cell.execution_count is None, f"{path}: stored execution count"
                for banned in ("SELECT ", "httpx.", "psycopg.", "requests."):
                    assert banned not in cell.source, f"{path}: logic in a notebook"
        assert nb.cells[-1].source.strip() == "run.summary()", f"{path}: no findings table"
