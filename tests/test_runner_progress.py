"""What a run shows while it works, what a live session leaves, and who produced a verdict
(issue 9, points 15-17)."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import threading
from pathlib import Path

import nbformat
import pytest

from fraiseql_rb.core import context, paths, progress
from fraiseql_rb.core.findings import ARTIFACT_FILE_MODE, Status


def test_a_run_shows_each_step_and_finding_on_stderr_and_quiet_silences_it(
        healthy_sandbox, tmp_path):
    out = tmp_path / "reports"
    loud = healthy_sandbox.run("high-error-rate", "-p", "window_s", "3")
    lines = loud.stderr.splitlines()
    steps = [ln for ln in lines if ln.startswith("[") and "s] " in ln]
    assert len(steps) >= 3, loud.stderr
    assert any("waiting up to 3 s" in ln for ln in lines), loud.stderr  # no TTY: plain lines
    data = json.loads((Path(loud.stdout.strip().splitlines()[-1]) / "findings.json").read_text())
    for finding in data["findings"]:
        assert any(finding["check"] in ln and finding["status"].upper() in ln
                   for ln in lines), finding["check"]
    quiet = healthy_sandbox.cli("run", "service-health", "--target", "sandbox", "--quiet",
                                "--output-dir", str(out), "-p", "samples", "1")
    assert quiet.returncode == 0
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("[")], quiet.stderr
    assert Path(quiet.stdout.strip().splitlines()[-1]).is_dir()  # last line unchanged


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_wait_shows_a_bar_with_time_left_on_a_terminal(tmp_path):
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"findings": []}))
    waits = tmp_path / "waits.json"
    screen = _Terminal()
    progress.configure(waits)
    try:
        with progress.Reporter(findings, waits, stream=screen):
            done = threading.Event()

            def kernel() -> None:
                progress.pause(3.0, "sampling the server's memory")
                done.set()

            threading.Thread(target=kernel).start()
            assert done.wait(10)
    finally:
        progress.configure(None)
    text = screen.getvalue()
    assert "sampling the server's memory" in text
    assert "left" in text and "/3 s" in text  # tqdm's bar: elapsed of total, time left
    assert not waits.exists()


def test_live_stepping_leaves_no_empty_run_and_saves_the_notebook(tmp_path, monkeypatch):
    out = tmp_path / "reports"
    monkeypatch.setenv("FRAISEQL_RB_OUTPUT_DIR", str(out))
    monkeypatch.delenv(context.RUN_ENV, raising=False)
    first = context.start("service-health", "sandbox", incident_id="LIVE-1")
    again = context.start("service-health", "sandbox", incident_id="LIVE-1")  # cell re-run
    assert not out.exists(), "no directory until something is recorded"
    again.record("service.health", Status.OK, "healthy")
    [run_dir] = out.glob("*/service-health/*")
    assert run_dir.name.endswith("_LIVE-1")
    assert first.log.path is None
    notebook = paths.notebooks_dir() / "deploy" / "service_health.ipynb"
    saved = again.save(notebook)
    assert saved == run_dir
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["findings.json", "service-health.html", "service-health.ipynb"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()} == {ARTIFACT_FILE_MODE}
    data = json.loads((run_dir / "findings.json").read_text())
    assert data["finished_at"] and data["notebook_sha256"] is None  # not known from a path
    nbformat.validate(nbformat.read(run_dir / "service-health.ipynb", as_version=4))


def test_save_needs_to_know_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAISEQL_RB_OUTPUT_DIR", str(tmp_path))
    monkeypatch.delenv(context.RUN_ENV, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    run = context.start("service-health", "sandbox")
    with pytest.raises(context.RunbookError, match="which notebook"):
        run.save()


def test_findings_say_who_ran_which_revision_and_who_confirmed(healthy_sandbox, tmp_path):
    result = healthy_sandbox.run("service-health", "-p", "samples", "1")
    data = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "findings.json")
                      .read_text())
    notebook = paths.notebooks_dir() / "deploy" / "service_health.ipynb"
    assert data["notebook_sha256"] == hashlib.sha256(notebook.read_bytes()).hexdigest()
    assert data["run_by"]["user"] and data["run_by"]["host"]
    from fraiseql_rb import __version__

    assert data["fraiseql_rb_version"] == __version__
    run = context.RunContext.adhoc(confirm="sandbox", execute=True)
    action = run.action("terminate", "SELECT pg_terminate_backend(1)", executed=True)
    assert action.confirmed_by.endswith("(execute=True, confirm=sandbox)")
    assert "@" in action.confirmed_by
    assert run.action("x", "y", executed=False).confirmed_by is None


def test_progress_heading_is_the_markdown_title_above_a_code_cell():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## 3. Process state\nwhy"),
        nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell("y")])
    assert progress.heading(nb, 1) == "3. Process state"
    assert progress.heading(nb, 2) is None
