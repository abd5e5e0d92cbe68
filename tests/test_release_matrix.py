"""Every release the stand-in emulates, under the runbooks a deployment runs first.

A deployment may run any FraiseQL release, or something that is not FraiseQL v2 at all behind
the same URL. On each, a runbook must raise no alarm the server does not deserve, and must
name what this release does not have instead of failing on it (issue 11, §1). One sandbox of
its own (the release switch restarts the stand-in, which the session sandbox's other tests
must not see), healthy throughout; the release is switched as a patch upgrade would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraiseql_rb.sandbox import manager, server
from fraiseql_rb.sandbox.state import Sandbox

pytestmark = pytest.mark.sandbox

RELEASES = ("2.9", "2.14.1", "main", "foreign")
# (runbook, parameters): the short windows the nbval runs use
RUNBOOKS = (
    ("service-health", ("-p", "samples", "2")),
    ("deployment-verification", ()),
    ("high-error-rate", ("-p", "window_s", "3")),
    ("high-query-latency", ("-p", "window_s", "3")),
    ("alert-review", ("-p", "window_s", "3")),
)


class ReleaseSandbox:
    def __init__(self, root: Path, inventory: Path, reports: Path) -> None:
        self.root, self.inventory, self.reports = root, inventory, reports

    def switch(self, release: str) -> None:
        sb = Sandbox.open(self.root)
        if sb.server_release != release:
            server.restart(sb, release=release)

    def run(self, runbook: str, *args: str) -> tuple[int, dict]:
        proc = subprocess.run(
            [sys.executable, "-m", "fraiseql_rb", "run", runbook, "--inventory",
             str(self.inventory), "--target", "sandbox", "--output-dir", str(self.reports),
             *args], capture_output=True, text=True, timeout=300)
        assert proc.stdout.strip(), proc.stderr
        artifact = Path(proc.stdout.strip().splitlines()[-1])
        return proc.returncode, json.loads((artifact / "findings.json").read_text())


@pytest.fixture(scope="module")
def release_sandbox() -> Iterator[ReleaseSandbox]:
    root = Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-releases-", dir="/tmp"))
    shutil.rmtree(root)
    reports = Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-release-reports-"))
    result = manager.up(root, audit_events=1_000, replica=False)
    try:
        yield ReleaseSandbox(root, result.inventory, reports)
    finally:
        manager.down(root, purge=True)
        shutil.rmtree(reports, ignore_errors=True)


def _by_check(findings: dict) -> dict[str, dict]:
    return {f["check"]: f for f in findings["findings"]}


@pytest.mark.parametrize("release", RELEASES)
def test_no_false_critical_on_any_release(release_sandbox: ReleaseSandbox,
                                          release: str) -> None:
    release_sandbox.switch(release)
    for runbook, args in RUNBOOKS:
        code, findings = release_sandbox.run(runbook, *args)
        critical = [(f["check"], f["summary"]) for f in findings["findings"]
                    if f["status"] == "critical"]
        assert not critical, f"{runbook} on {release}: {critical}"
        assert code != 2, f"{runbook} on {release} exited 2"
        assert code in (0, 1, 3), f"{runbook} on {release} exited {code}"


def test_a_release_before_2_10_names_the_root_typename_it_lacks(
        release_sandbox: ReleaseSandbox) -> None:
    release_sandbox.switch("2.9")
    _, findings = release_sandbox.run("service-health", "-p", "samples", "2")
    probe = _by_check(findings)["graphql.probe"]
    assert probe["status"] == "info", probe
    assert "before v2.10.0" in probe["summary"]


def test_a_foreign_server_says_what_it_does_not_serve(release_sandbox: ReleaseSandbox) -> None:
    release_sandbox.switch("foreign")
    _, findings = release_sandbox.run("service-health", "-p", "samples", "2")
    checks = _by_check(findings)
    assert checks["service.readiness"]["status"] == "info"
    assert "not served" in checks["service.readiness"]["summary"]
    # the data-path probe still proves a read through PostgreSQL
    assert checks["graphql.data_path"]["status"] == "ok", checks["graphql.data_path"]
    _, versions = release_sandbox.run("deployment-verification")
    text = json.dumps(versions["findings"])
    assert "no instance answered" not in text
    assert "do not report a version" in text or "does not report a version" in text
