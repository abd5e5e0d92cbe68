"""The CLI contract: exit codes, one-line errors, artifacts, masking — through a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from drill_helpers import write_runbook

REPO = Path(__file__).resolve().parent.parent
FINDINGS_KEYS = {"runbook", "target", "incident_id", "started_at", "finished_at",
                 "interrupted_at", "run_by", "fraiseql_rb_version", "notebook_sha256",
                 "parameters", "status", "findings", "actions"}


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "fraiseql_rb", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unknown_runbook_is_usage_error(tmp_path):
    line = assert_one_line_error(cli("run", "no-such-runbook", cwd=tmp_path), 64)
    assert "unknown runbook 'no-such-runbook'" in line


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "samples", "many"], "parameter 'samples' expects int"),
    (["-p", "introspection", "perhaps"], "parameter 'introspection' expects true or false"),
    (["-p", "bogus", "1"], "has no parameter 'bogus'"),
    (["--incident-id", "INC 42/../x"], "incident id"),
])
def test_bad_parameters_exit_64_before_any_kernel(sandbox, tmp_path, args, message):
    out = tmp_path / "reports"
    result = sandbox.cli("run", "service-health", "--output-dir", str(out), *args)
    assert message in assert_one_line_error(result, 64)
    assert not out.exists(), "nothing may be written for refused input"


def test_missing_inventory_and_unknown_target(sandbox, tmp_path):
    line = assert_one_line_error(
        cli("run", "service-health", "--inventory", str(tmp_path / "nope.toml")), 64)
    assert "inventory file not found" in line
    line = assert_one_line_error(sandbox.cli("run", "service-health", "--target", "prod"), 64)
    assert "unknown target 'prod'" in line


def test_bad_usage_exits_64():
    assert_one_line_error(cli("frobnicate"), 64)
    assert_one_line_error(cli("run"), 64)


def test_list_reads_the_notebooks():
    result = cli("list")
    assert result.returncode == 0
    assert "service-health  [deploy]" in result.stdout
    assert "samples: int = 5" in result.stdout
    assert "deployment-verification  [deploy]" in result.stdout


def test_healthy_run_writes_three_artifacts_in_the_dated_layout(healthy_sandbox, tmp_path):
    out = tmp_path / "reports"
    result = healthy_sandbox.cli("run", "service-health", "--target", "sandbox",
                                 "--output-dir", str(out), "--incident-id", "INC-7",
                                 "-p", "samples", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    artifact = Path(result.stdout.strip().splitlines()[-1])
    assert artifact.parent.name == "service-health"
    assert artifact.parent.parent.parent == out
    assert artifact.name.endswith("Z_INC-7") and len(artifact.name) == len("HHMMSSZ_INC-7")
    assert sorted(p.name for p in artifact.iterdir()) == [
        "findings.json", "service-health.html", "service-health.ipynb"]
    data = json.loads((artifact / "findings.json").read_text())
    assert set(data) == FINDINGS_KEYS
    assert data["status"] == "ok" and data["incident_id"] == "INC-7"
    assert data["parameters"]["samples"] == 2
    checks = {f["check"]: f["status"] for f in data["findings"]}
    assert checks["service.health"] == "ok" and checks["database.reachable"] == "ok"
    html = (artifact / "service-health.html").read_text()
    assert "run = context.start" not in html, "input code must be hidden in the HTML"
    assert "Service health" in html and "healthy" in html


def test_no_secret_reaches_any_artifact(healthy_sandbox, tmp_path):
    out = tmp_path / "reports"
    result = healthy_sandbox.run("deployment-verification")
    result = healthy_sandbox.cli("run", "service-health", "--output-dir", str(out),
                                 "-p", "introspection", "true")
    assert result.returncode in (0, 1)
    artifact = Path(result.stdout.strip().splitlines()[-1])
    secrets_dir = healthy_sandbox.root / "secrets"
    values = [p.read_text().strip() for p in secrets_dir.iterdir()]
    assert len(values) >= 4
    for path in artifact.iterdir():
        text = path.read_text()
        for value in values:
            assert value not in text, f"a secret leaked into {path.name}"
    for value in values:
        assert value not in result.stdout + result.stderr


def test_two_runs_in_one_second_never_share_a_directory(healthy_sandbox, tmp_path):
    from fraiseql_rb.core import artifacts

    first = artifacts.new_artifact_dir(tmp_path, "x", "INC-1")
    second = artifacts.new_artifact_dir(tmp_path, "x", "INC-1")
    assert first != second and first.is_dir() and second.is_dir()


def test_a_notebook_failing_half_way_keeps_its_findings_and_the_error(sandbox, tmp_path):
    """A runbook that raises after one finding: exit 3 unless worse, findings kept."""
    books = write_runbook(tmp_path, "deploy", "broken",
                          "# Broken\nA runbook that fails half-way.",
                          'target = "sandbox"\nincident_id = None',
                          "from fraiseql_rb.checks import service\n"
                          "from fraiseql_rb.core import context\n"
                          "run = context.start('broken', target)",
                          "service.check_health(run)",
                          "raise RuntimeError('disk on fire')",
                          "run.summary()")
    result = sandbox.cli("run", "broken", "--output-dir", str(tmp_path / "r"),
                         env={"FRAISEQL_RB_NOTEBOOKS": str(books)})
    assert result.returncode == 3, result.stderr
    artifact = Path(result.stdout.strip().splitlines()[-1])
    data = json.loads((artifact / "findings.json").read_text())
    checks = [f["check"] for f in data["findings"]]
    assert checks[0] == "service.health"
    assert checks.count("notebook.error") == 1
    error = next(f for f in data["findings"] if f["check"] == "notebook.error")
    assert "disk on fire" in error["summary"] and error["status"] == "unknown"
    assert (artifact / "broken.html").exists() and (artifact / "broken.ipynb").exists()


@pytest.mark.parametrize("command", [["up"], ["down"], ["status"], ["fault", "db-down"],
                                     ["heal", "db-down"], ["service", "status"]])
def test_sandbox_dir_is_accepted_before_and_after_the_subcommand(command):
    from fraiseql_rb.cli import build_parser

    after = build_parser().parse_args(["sandbox", *command, "--dir", "/srv/sb"])
    before = build_parser().parse_args(["sandbox", "--dir", "/srv/sb", *command])
    assert after.dir == before.dir == "/srv/sb"


def test_sandbox_up_dir_as_design_writes_it(tmp_path):
    """`sandbox status --dir DIR` (and `up --dir DIR`) used to exit 64."""
    nowhere = str(tmp_path / "none")
    after = cli("sandbox", "status", "--dir", nowhere)
    before = cli("sandbox", "--dir", nowhere, "status")
    assert after.returncode == before.returncode != 64
    assert after.stdout == before.stdout and nowhere in after.stdout
