"""runner/external.py: a run a scheduler executed with papermill itself (Airflow's
PapermillOperator) is finished into the documented artifacts: the masked notebook and its HTML
beside findings.json, and a verdict the scheduler can fail the task on. Real papermill, real
kernel; the inventory's secret must not survive into either copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import papermill
import pytest
from drill_helpers import write_runbook

from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.runner import external

PASSWORD = "external-secret-Pa55word"
RECORD = """
from fraiseql_rb.core import context
run = context.start("external-tiny", target)
run.record("external.check", verdict,
           f"{target} is {verdict}; password {run.target.secret('database_password')}")
print("the secret, printed:", run.target.secret("database_password"))
"""


@pytest.fixture
def scheduled(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """What a scheduler's worker has: the inventory and output directory in its environment,
    the notebook, and a place of its own for the executed copy."""
    books = write_runbook(tmp_path, "preflight", "external-tiny", "# External tiny\nA verdict.",
                          'target = "a"\nverdict = "ok"  # the status to record', RECORD)
    inv = tmp_path / "inventory.toml"
    inv.write_text('[targets.a]\nfraiseql_url = "http://127.0.0.1:9"\n'
                   'database_url = "postgresql://fraiseql_user@127.0.0.1:9/fraiseql"\n'
                   'database_password_env = "EXTERNAL_TEST_DB_PASSWORD"\n')
    out = tmp_path / "reports"
    monkeypatch.setenv("FRAISEQL_RB_INVENTORY", str(inv))
    monkeypatch.setenv("FRAISEQL_RB_OUTPUT_DIR", str(out))
    monkeypatch.setenv("EXTERNAL_TEST_DB_PASSWORD", PASSWORD)
    return {"notebook": books / "preflight" / "external-tiny.ipynb", "out": out,
            "executed": tmp_path / "executed" / "external-tiny.a.ipynb"}


def execute(paths: dict[str, Path], **parameters) -> None:
    paths["executed"].parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(paths["notebook"]), str(paths["executed"]),
                               parameters={"target": "a", **parameters}, kernel_name="python3",
                               progress_bar=False, cwd=str(paths["executed"].parent))


@pytest.mark.parametrize("verdict", ["ok", "critical"])
def test_a_papermill_run_is_finished_into_the_documented_artifacts(scheduled, verdict):
    execute(scheduled, verdict=verdict)
    directory, findings = external.finish(scheduled["executed"])
    assert directory.parent.parent.parent == scheduled["out"]  # OUT/DATE/RUNBOOK/HHMMSSZ
    assert sorted(p.name for p in directory.iterdir()) == [
        "external-tiny.html", "external-tiny.ipynb", "findings.json"]
    assert findings["status"] == verdict and findings["finished_at"]
    assert json.loads((directory / "findings.json").read_text())["finished_at"]
    for name in ("external-tiny.html", "external-tiny.ipynb", "findings.json"):
        text = (directory / name).read_text()
        assert PASSWORD not in text, name
        assert oct((directory / name).stat().st_mode & 0o777) == "0o640"
    html = (directory / "external-tiny.html").read_text()
    assert "the secret, printed: ***" in html  # the outputs, masked
    assert "run.record(" not in html  # and no code
    assert PASSWORD in scheduled["executed"].read_text()  # the scheduler's own copy, as it was


def test_a_notebook_that_recorded_nothing_is_one_clear_error(scheduled, tmp_path):
    bare = write_runbook(tmp_path / "bare", "preflight", "external-tiny", "# Bare\nNothing.",
                         'target = "a"', "x = 1")
    scheduled["notebook"] = bare / "preflight" / "external-tiny.ipynb"
    execute(scheduled)
    with pytest.raises(RunbookError, match="never recorded a finding"):
        external.finish(scheduled["executed"])
    with pytest.raises(RunbookError, match="cannot read the executed notebook"):
        external.finish(tmp_path / "missing.ipynb")
    assert not os.path.exists(scheduled["out"])
