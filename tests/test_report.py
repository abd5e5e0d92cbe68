"""What the responder and the reviewer see: terminal lines, the HTML header and title, the
closing findings table, and findings displayed as findings (never as Python reprs)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import nbformat
import pytest

from fraiseql_rb.core import render, report, secrets
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Action, Finding, Status

SECRET = "tok-report-test-5e1f9a"
LONG = ("the connection pool stayed full for the whole window because a batch job kept "
        "forty sessions idle in transaction; every request that needed the database waited "
        "for pool_timeout_secs and then failed with a 503, which is what users saw") * 2


def _finding(check, status, summary, at, remediation=None, evidence=None, **extra):
    return {"check": check, "status": status, "summary": summary, "at": at,
            "evidence": evidence or {}, "remediation": remediation, **extra}


def _run(**changes):
    data = {
        "runbook": "service-down", "target": "sandbox", "incident_id": "INC-42",
        "started_at": "2026-11-30T14:00:00Z", "finished_at": "2026-11-30T14:00:07Z",
        "interrupted_at": None,
        "run_by": {"user": "ana", "host": "ops-1"}, "fraiseql_rb_version": "1.2.3",
        "notebook_sha256": "ab" * 32,
        "parameters": {"target": "sandbox"}, "status": "critical",
        "findings": [
            _finding("service.health", "critical", "no answer from /health", "2026-11-30T14:00:01Z",
                     "restart it"),
            _finding("service.process", "critical", f"process stopped <b>x</b> {SECRET}",
                     "2026-11-30T14:00:02Z", "start it"),
            _finding("service.logs", "info", "read 20 log lines", "2026-11-30T14:00:03Z"),
            _finding("diagnosis", "critical",
                     "root cause: process_down — the process is stopped (Active: inactive)",
                     "2026-11-30T14:00:05Z",
                     "start the service: rerun with execute=True",
                     {"root_cause": "process_down", "candidates": []}),
        ],
        "actions": [
            {"action": "restart_service", "command": "systemctl restart fraiseql",
             "executed": False, "result": None, "at": "2026-11-30T14:00:04Z"},
        ],
    }
    data.update(changes)
    return data


@pytest.fixture(autouse=True)
def _secret():
    secrets.register(SECRET)


# --- the terminal ---------------------------------------------------------------------------

def test_terminal_lines_name_the_root_cause_the_next_step_and_each_critical_finding():
    lines = report.terminal_summary(_run())
    assert lines[0] == ("root cause: process_down — the process is stopped "
                        "(Active: inactive)")
    assert lines[1] == "next step: start the service: rerun with execute=True"
    assert lines[2] == "critical: service.health: no answer from /health"
    assert lines[3] == "critical: service.process: process stopped <b>x</b> ***"
    assert len(lines) == 4, "the diagnosis is the root cause line, not a critical line"
    assert all("\n" not in line for line in lines)


def test_terminal_lines_for_a_healthy_review_are_empty_and_a_resolved_critical_says_so():
    ok = _run(status="ok", findings=[_finding("service.health", "ok", "healthy",
                                              "2026-11-30T14:00:01Z")], actions=[])
    assert report.terminal_summary(ok) == []
    resolved = _run(findings=[
        _finding("service.health", "critical", "no answer\nat all", "2026-11-30T14:00:01Z",
                 resolved_by="service.restart at 2026-11-30T14:00:04Z"),
        _finding("config.file", "warning", "rate limiting off", "2026-11-30T14:00:02Z",
                 "turn it on")], status="warning")
    assert report.terminal_summary(resolved) == [
        "next step: turn it on",
        "critical (resolved by service.restart at 2026-11-30T14:00:04Z): service.health: "
        "no answer at all"]


def test_a_planned_change_ends_with_the_next_step_of_where_it_ended():
    """A downgrade warned about before the change and a rollback after it: the next step is
    the rollback's (the change's last state), not the pre-check's."""
    run = _run(status="warning", actions=[], findings=[
        _finding("change.phase", "info", "phase pre-checks", "2026-11-30T14:00:01Z"),
        _finding("patch.versions", "warning", "a downgrade", "2026-11-30T14:00:02Z",
                 "check target_version"),
        _finding("change.phase", "info", "phase rollback", "2026-11-30T14:00:05Z"),
        _finding("patch.rollback_verification", "warning", "rolled back",
                 "2026-11-30T14:00:06Z", "find why the new release failed")])
    assert report.terminal_summary(run) == ["next step: find why the new release failed"]


# --- the HTML header and title --------------------------------------------------------------

def test_header_shows_incident_target_times_verdict_cause_actions_and_who_ran_it():
    page = report.header_html(_run())
    for text in ("INC-42", "sandbox", "2026-11-30T14:00:00Z", "2026-11-30T14:00:07Z (7 s)",
                 "CRITICAL", "process_down", "the process is stopped",
                 "start the service: rerun with execute=True", "restart_service",
                 "not executed", "systemctl restart fraiseql", "ana@ops-1",
                 "fraiseql-rb 1.2.3", "ab" * 32, "no answer from /health"):
        assert text in page, text
    assert "background:#cf222e" in page, "the verdict badge is red for critical"
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page, "values are escaped"
    assert SECRET not in page and "***" in page, "values are masked"
    assert "interrupted" not in page


def test_header_of_an_interrupted_run_with_executed_and_confirmed_actions():
    data = _run(finished_at=None, interrupted_at="2026-11-30T14:00:30Z", actions=[
        {"action": "restart_service", "command": "systemctl restart fraiseql",
         "executed": True, "result": {"returncode": 0, "output": ["restarted"]},
         "at": "2026-11-30T14:00:04Z", "confirmed_by": "ana@ops-1 (execute=True)"},
        {"action": "terminate_sessions", "command": "SELECT pg_terminate_backend(42)",
         "executed": False, "result": None, "at": "2026-11-30T14:00:06Z"}])
    page = report.header_html(data)
    assert "interrupted at 2026-11-30T14:00:30Z" in page and "(after 30 s)" in page
    assert "<b>ran</b>" in page and "&quot;returncode&quot;: 0" in page
    assert "confirmed by ana@ops-1 (execute=True)" in page
    assert "terminate_sessions" in page and "not executed" in page


def test_header_skips_what_an_older_findings_json_does_not_have():
    data = _run(actions=[])
    for key in ("run_by", "fraiseql_rb_version", "notebook_sha256", "interrupted_at"):
        data.pop(key)
    data["findings"] = [f for f in data["findings"] if f["check"] != "diagnosis"]
    page = report.header_html(data)
    assert "Run by" not in page and "Root cause" not in page
    assert "Next step" in page and "restart it" in page, "the first critical's next step"
    assert "none: nothing was changed" in page


def test_page_title_names_runbook_target_incident_and_date():
    assert report.page_title(_run()) == "service-down · sandbox · INC-42 · 2026-11-30"
    assert report.page_title(_run(incident_id=None)) == "service-down · sandbox · 2026-11-30"


def _notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Service down\nWhy it does not answer."),
                nbformat.v4.new_code_cell("run.summary()")]
    return nb


def test_html_gets_title_and_header_and_the_notebook_stays_as_it_was(tmp_path):
    executed = tmp_path / "executed.ipynb"
    nbformat.write(_notebook(), executed)
    notebook_out, html_out = tmp_path / "service-down.ipynb", tmp_path / "service-down.html"
    render.write_artifacts(executed, notebook_out, html_out, findings=_run())
    page = html_out.read_text()
    assert "<title>service-down · sandbox · INC-42 · 2026-11-30</title>" in page
    assert page.index("fraiseql-rb-report-header") < page.index("Why it does not answer")
    assert "process_down" in page and "ana@ops-1" in page
    kept = nbformat.read(notebook_out, as_version=4)
    assert len(kept.cells) == 2 and "title" not in kept.metadata
    assert "fraiseql-rb-report-header" not in notebook_out.read_text()
    render.write_artifacts(executed, notebook_out, html_out)  # without findings: no header
    assert "fraiseql-rb-report-header" not in html_out.read_text()


# --- the closing findings table -------------------------------------------------------------

def test_findings_table_is_the_timeline_whole_with_the_actions():
    rows = [
        _finding("late", "ok", "recorded first, stamped last", "2026-11-30T14:00:09Z"),
        _finding("pool.full", "critical", LONG, "2026-11-30T14:00:01Z", "free the pool <now>"),
        _finding("tie.a", "info", "same second, recorded first", "2026-11-30T14:00:05Z"),
        _finding("tie.b", "warning", "same second, recorded second", "2026-11-30T14:00:05Z"),
    ]
    actions = [{"action": "terminate", "command": "SELECT pg_terminate_backend(7)",
                "executed": True, "result": [7], "at": "2026-11-30T14:00:06Z",
                "confirmed_by": "ana@ops-1"}]
    table = report.FindingsTable(rows, actions)
    text = repr(table)
    assert [line.split()[2] for line in text.splitlines()[:6] if line[:4] == "2026"] == [
        "pool.full", "tie.a", "tie.b", "late"]
    assert LONG in text and "…" not in text
    assert "Actions (1):" in text and "SELECT pg_terminate_backend(7) -> [7]" in text
    page = table._repr_html_()
    checks = re.findall(r"<td[^>]*><code>([^<]+)</code></td><td[^>]*>", page)
    assert checks[:4] == ["pool.full", "tie.a", "tie.b", "late"]
    assert html.escape(LONG) in page and "…" not in page
    assert "free the pool &lt;now&gt;" in page
    assert "fraiseql-rb-actions" in page and "pg_terminate_backend(7)" in page
    assert "confirmed by" in page and "ana@ops-1" in page


def test_run_summary_prints_the_overall_status_and_returns_the_timeline(capsys):
    ctx = RunContext.adhoc("service-down")
    ctx.record("service.health", Status.CRITICAL, LONG, remediation="restart it")
    ctx.record("service.logs", Status.INFO, "read the log lines")
    ctx.action("restart_service", "systemctl restart fraiseql", executed=False)
    table = ctx.summary()
    assert "Overall status: CRITICAL — 2 findings, 1 actions" in capsys.readouterr().out
    assert isinstance(table, report.FindingsTable) and len(table) == 2
    assert LONG in repr(table) and html.escape(LONG) in table._repr_html_()
    assert "restart_service" in table._repr_html_()


# --- display formatters ---------------------------------------------------------------------

@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    instance = InteractiveShell.instance()
    assert report.install_display_formatters(instance)
    assert report.install_display_formatters(instance), "installing twice is harmless"
    return instance


def test_a_list_of_findings_displays_as_findings_not_as_a_repr(shell):
    findings = [Finding("errors.isolate", Status.INFO, "nothing to isolate"),
                Finding("errors.mitigate", Status.WARNING, "scale out", remediation="add one")]
    data, _ = shell.display_formatter.format(findings)
    assert data["text/plain"].splitlines() == [
        "[INFO] errors.isolate: nothing to isolate", "[WARNING] errors.mitigate: scale out",
        "  next: add one"]
    assert "errors.mitigate" in data["text/html"] and "Next step" in data["text/html"]
    data, _ = shell.display_formatter.format((findings[0],
                                              Action("restart", "systemctl restart x", False)))
    assert "[ACTION] restart" in data["text/plain"] and "Dry run" in data["text/html"]


def test_other_values_keep_their_display_and_strings_read_as_text(shell):
    data, _ = shell.display_formatter.format([1, "a"])
    assert data["text/plain"] == "[1, 'a']" and "text/html" not in data
    data, _ = shell.display_formatter.format({"k": [1, 2]})
    assert data["text/plain"] == "{'k': [1, 2]}"
    data, _ = shell.display_formatter.format("window [a, b) <baseline>")
    assert "window [a, b) &lt;baseline&gt;" in data["text/html"]
    assert "'window" not in data["text/html"]


# --- end to end, through the CLI against the sandbox ----------------------------------------

def _artifact(result):
    return Path(result.stdout.strip().splitlines()[-1])


def test_high_error_rate_report_has_title_header_timeline_and_no_reprs(healthy_sandbox,
                                                                       tmp_path):
    result = healthy_sandbox.cli("run", "high-error-rate", "--target", "sandbox",
                                 "--output-dir", str(tmp_path), "--incident-id", "INC-12",
                                 "-p", "window_s", "2")
    # the verdict is not this test's business (a drill may have just left errors in the
    # window): any verdict makes the report, only a run that did not complete fails here
    assert result.returncode in (0, 1, 2), result.stdout + result.stderr
    artifact = _artifact(result)
    data = json.loads((artifact / "findings.json").read_text())
    page = (artifact / "high-error-rate.html").read_text()
    date = data["started_at"][:10]
    assert f"<title>high-error-rate · sandbox · INC-12 · {date}</title>" in page
    header = page[page.index("fraiseql-rb-report-header"):page.index("</section>")]
    for text in ("INC-12", "sandbox", data["started_at"], data["finished_at"],
                 data["status"].upper(), "Root cause",
                 html.escape(report.root_cause(data)[0])):
        assert text in header, text
    body = page[page.index("<main>"):]
    assert "[[" not in body and re.search(r"<pre>\s*\[", body) is None, \
        "no Python repr of a list of findings in the HTML"
    assert "Finding(" not in body and "&lt;fraiseql_rb" not in body
    table = page[page.index("fraiseql-rb-findings"):]
    stamps = re.findall(r"<tr><td[^>]*>(\d{4}-\d\d-\d\dT[\d:]+Z)</td>", table)
    assert len(stamps) == len(data["findings"]) and stamps == sorted(stamps)
    for finding in data["findings"]:
        assert html.escape(finding["summary"], quote=False) in table, "summaries are whole"
    notebook = (artifact / "high-error-rate.ipynb").read_text()
    assert "fraiseql-rb-report-header" not in notebook, "the header is for the HTML only"
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("status: ") and lines[1].startswith("root cause: ")


def test_service_down_prints_cause_next_step_and_criticals_before_the_directory(
        healthy_sandbox, tmp_path):
    healthy_sandbox.fault("server-down")
    try:
        result = healthy_sandbox.cli("run", "service-down", "--target", "sandbox",
                                     "--output-dir", str(tmp_path))
    finally:
        healthy_sandbox.heal("server-down")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    artifact = Path(lines[-1])
    assert artifact.is_dir() and (artifact / "findings.json").exists()
    data = json.loads((artifact / "findings.json").read_text())
    assert lines[0] == "status: critical"
    assert lines[1].startswith("root cause: process_down")
    assert lines[2].startswith("next step: ")
    critical = [f for f in data["findings"]
                if f["status"] == "critical" and f["check"] != "diagnosis"]
    assert critical and lines[3:-1] == [
        f"critical: {f['check']}: {' '.join(f['summary'].split())}" for f in critical]
    page = (artifact / "service-down.html").read_text()
    assert "process_down" in page[:page.index("</section>")]
