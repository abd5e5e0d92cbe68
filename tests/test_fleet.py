"""Fleets (issue 14 part 3): `fraiseql-rb run RUNBOOK --targets a,b,c | --all-targets
[--jobs N] [--dask-scheduler ADDR]`. Real processes throughout: the CLI in a subprocess, each
target's `fraiseql-rb run` in its own child, a real `distributed.LocalCluster` for Dask. The
runbook is a one-cell notebook (via FRAISEQL_RB_NOTEBOOKS) whose verdict depends on the target,
so that "exit code = the worst target" can fail; the targets point at unreachable endpoints
and none is contacted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from drill_helpers import write_runbook
from test_cli import assert_one_line_error, cli

PASSWORD = "fleet-secret-Pa55word"
# a -> ok, b -> warning, c -> critical (its summary quotes the database password, which every
# artifact and the fleet's output must mask); d -> unknown (records nothing)
RECORD = """
from fraiseql_rb.core import context
run = context.start("fleet-tiny", target)
import time
time.sleep(sleep_s)
verdict = {"a": "ok", "b": "warning", "c": "critical"}.get(target)
if verdict:
    run.record("fleet.check", verdict,
               f"{target} is {verdict}; password {run.target.secret('database_password')}",
               remediation="look at it")
"""


@pytest.fixture
def books(tmp_path: Path) -> Path:
    return write_runbook(tmp_path, "preflight", "fleet-tiny",
                         "# Fleet tiny\nA verdict per target.",
                         'target = "a"\nsleep_s = 0.0  # seconds to wait', RECORD)


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text("".join(
        f'[targets.{name}]\nfraiseql_url = "http://127.0.0.1:9"\n'
        f'database_url = "postgresql://fraiseql_user@127.0.0.1:9/fraiseql"\n'
        f'database_password_env = "FLEET_TEST_DB_PASSWORD"\n\n' for name in "abcd"))
    return path


@pytest.fixture
def env(books: Path) -> dict[str, str]:
    return {"FRAISEQL_RB_NOTEBOOKS": str(books), "FLEET_TEST_DB_PASSWORD": PASSWORD,
            "DASK_SCHEDULER_ADDRESS": ""}  # local unless a test says otherwise


def fleet(inv: Path, out: Path, env: dict[str, str], *args: str
          ) -> subprocess.CompletedProcess[str]:
    return cli("run", "fleet-tiny", "--inventory", str(inv), "--output-dir", str(out), *args,
               env=env)


def start_fleet(inv: Path, out: Path, env: dict[str, str], targets: str, sleep_s: int,
                *args: str) -> subprocess.Popen[str]:
    """The fleet in the background, each run sleeping `sleep_s`, for a test to interrupt or
    to kill something under."""
    return subprocess.Popen(
        [sys.executable, "-m", "fraiseql_rb", "run", "fleet-tiny", "--inventory", str(inv),
         "--output-dir", str(out), "--targets", targets, "-p", "sleep_s", str(sleep_s), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env})


def wait_for_runs(out: Path, count: int = 1, timeout_s: float = 60) -> None:
    """Until `count` runs have recorded their first finding under `out`."""
    deadline = time.monotonic() + timeout_s
    while (len(list(out.glob("*/fleet-tiny/*/findings.json"))) < count
           and time.monotonic() < deadline):
        time.sleep(0.2)


def interrupt(proc: subprocess.Popen[str], out: Path, runs: int, signum: int
              ) -> tuple[str, str]:
    """Send the fleet `signum` once `runs` runs are under way; its stdout and stderr."""
    try:
        wait_for_runs(out, runs)
        time.sleep(2)  # the kernels are in the runbook's sleep
        proc.send_signal(signum)
        return proc.communicate(timeout=60)
    finally:
        proc.kill()


def check_summary(result: subprocess.CompletedProcess[str], out: Path, targets: str,
                  code: int) -> dict:
    """The contract: exit = worst target, last stdout line = fleet.json, one artifact
    directory per target holding that target's findings.json."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent.parent.parent == out and path.parent.name == "fleet-tiny"
    assert path.name.startswith("fleet-") and path.suffix == ".json"
    data = json.loads(path.read_text())
    expected = {"a": "ok", "b": "warning", "c": "critical", "d": "unknown"}
    assert [t["target"] for t in data["targets"]] == list(targets)
    dirs = set()
    for row in data["targets"]:
        assert row["status"] == expected[row["target"]]
        assert row["exit_code"] == {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[
            row["status"]]
        findings = json.loads((Path(row["artifact_dir"]) / "findings.json").read_text())
        assert findings["target"] == row["target"] and findings["status"] == row["status"]
        dirs.add(row["artifact_dir"])
        if row["target"] == "c":
            assert row["root_cause"] == "fleet.check: c is critical; password ***"
    assert len(dirs) == len(targets)
    assert data["runbook"] == "fleet-tiny" and data["finished_at"]
    assert data["status"] == {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}[code]
    for row in data["targets"]:  # the table on stdout
        assert any(line.split()[:2] == [row["target"], row["status"].upper()]
                   for line in result.stdout.splitlines())
    text = path.read_text() + result.stdout + result.stderr
    assert PASSWORD not in text
    return data


def test_targets_run_in_turn_and_exit_with_the_worst(tmp_path, inv, env):
    out = tmp_path / "reports"
    result = fleet(inv, out, env, "--targets", "a,b", "-p", "sleep_s", "0")
    check_summary(result, out, "ab", 1)  # a ok, b warning: warning
    assert json.loads(Path(result.stdout.splitlines()[-1]).read_text())["parameters"] == {
        "sleep_s": 0.0}


def test_all_targets_two_at_a_time_mask_the_secret(tmp_path, inv, env):
    out = tmp_path / "reports"
    result = fleet(inv, out, env, "--all-targets", "--jobs", "2")
    data = check_summary(result, out, "abcd", 2)  # critical beats unknown
    assert data["scheduler"] == "local (2 at a time)"
    for row in data["targets"]:
        assert PASSWORD not in (Path(row["artifact_dir"]) / "findings.json").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--targets", "a,nope,zz"], "unknown targets 'nope', 'zz' in "),
    (["--targets", "a", "--jobs", "0"], "--jobs must be 1 or more, got 0"),
    (["--targets", "a,b", "-p", "sleep_s", "soon"], "parameter 'sleep_s' expects"),
    (["--targets", "a", "--target", "b"], "--target and --targets/--all-targets cannot"),
    (["--all-targets", "--dask-scheduler", "tcp://127.0.0.1:9"],
     "cannot reach the Dask scheduler tcp://127.0.0.1:9: "),
], ids=["unknown-target", "jobs-0", "bad-parameter", "target-and-targets", "no-scheduler"])
def test_bad_fleet_input_exits_64_before_anything_runs(tmp_path, inv, env, args, message):
    out = tmp_path / "reports"
    started = time.monotonic()
    line = assert_one_line_error(
        fleet(inv, out, {**env, "FRAISEQL_RB_DASK_TIMEOUT": "2"}, *args), 64)
    assert message in line
    assert time.monotonic() - started < 30
    assert not list(out.rglob("*.json")), "nothing may run for refused input"


def test_a_signal_stops_the_fleet_and_lists_what_did_not_run(tmp_path, inv, env):
    """SIGTERM to the fleet: the running target's own handling closes its record
    (run.interrupted), the targets not started are reported "not run", exit 143."""
    out = tmp_path / "reports"
    proc = start_fleet(inv, out, env, "a,b,c", 60)
    stdout, stderr = interrupt(proc, out, 1, signal.SIGTERM)  # once the first run has begun
    assert proc.returncode == 143, stderr
    data = json.loads(Path(stdout.strip().splitlines()[-1]).read_text())
    assert data["interrupted_by"] == "SIGTERM"
    first, *rest = data["targets"]
    assert [r["status"] for r in rest] == ["not run", "not run"]
    assert all(r["artifact_dir"] is None for r in rest)
    assert first["exit_code"] == 143 and first["status"] == "unknown"
    findings = json.loads((Path(first["artifact_dir"]) / "findings.json").read_text())
    assert any(f["check"] == "run.interrupted" for f in findings["findings"])
    assert "not run: b, c" in stdout


def test_a_dask_cluster_gives_the_same_results(tmp_path, inv, env, monkeypatch):
    """A real LocalCluster of two worker processes, named by $DASK_SCHEDULER_ADDRESS; the
    workers inherit this environment (the notebooks folder and the password variable), as a
    real cluster's would be set up."""
    distributed = pytest.importorskip("distributed")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "reports"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        result = fleet(inv, out, {**env, "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address},
                       "--targets", "a,b,c")
        data = check_summary(result, out, "abc", 2)
        assert data["scheduler"] == cluster.scheduler_address
        # Ctrl-C reaches the runs on the workers: both running ones close their records
        # (run.interrupted), the third never starts, the fleet exits 130
        interrupted = tmp_path / "interrupted"
        proc = start_fleet(inv, interrupted, env, "a,b,c", 60,
                           "--dask-scheduler", cluster.scheduler_address)
        stdout, stderr = interrupt(proc, interrupted, 2, signal.SIGINT)
    assert proc.returncode == 130, stderr
    rows = json.loads(Path(stdout.strip().splitlines()[-1]).read_text())["targets"]
    assert sorted(r["status"] for r in rows) == ["not run", "unknown", "unknown"]
    for row in (r for r in rows if r["status"] == "unknown"):
        assert row["exit_code"] == 130
        findings = json.loads((Path(row["artifact_dir"]) / "findings.json").read_text())
        assert [f["check"] for f in findings["findings"]] == ["run.interrupted"]


@contextlib.contextmanager
def dask_fleet(inv: Path, out: Path, env: dict[str, str], targets: str, sleep_s: int
               ) -> Iterator[tuple[subprocess.Popen, subprocess.Popen, subprocess.Popen]]:
    """A real scheduler and one worker (under its nanny) in their own processes, and the
    fleet on them; yields (scheduler, nanny, fleet). Afterwards all are gone, with any run
    a dead worker left behind."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    full_env = {**os.environ, **env}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], env=full_env, **quiet)
    nanny = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                              "--nthreads", "1", "--no-dashboard"], env=full_env, **quiet)
    try:
        fleet = start_fleet(inv, out, {**env, "FRAISEQL_RB_DASK_TIMEOUT": "20"}, targets,
                            sleep_s, "--dask-scheduler", address)
        yield scheduler, nanny, fleet
    finally:
        for child in (scheduler, nanny):
            child.kill()
            child.wait()
        _end_runs_of(inv)  # a run a dead worker had started


def test_a_scheduler_that_dies_leaves_the_rest_not_run(tmp_path, inv, env):
    """The scheduler is killed once the first target has reported: the others are listed
    "not run", never dropped, exit 3."""
    out = tmp_path / "reports"
    with dask_fleet(inv, out, env, "a,b,c", 20) as (scheduler, _, proc):
        wait_for_runs(out)  # the first target runs on the only worker
        scheduler.kill()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    data = json.loads(Path(stdout.strip().splitlines()[-1]).read_text())
    assert [r["status"] for r in data["targets"]] == ["not run"] * 3
    assert data["status"] == "unknown"
    assert "not run: a, b, c" in stdout
    assert stderr.count("no result from the Dask cluster") == 3


def _runs_of(inv: Path) -> list:
    """The one-target `fraiseql-rb run ... --target T` children this test's fleet started
    (their command line names this test's own inventory; the fleet's own has --targets)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if str(inv) in cmdline and "fraiseql_rb" in cmdline and "--target" in cmdline:
            found.append(proc)
    return found


def test_a_worker_that_dies_mid_run_is_not_run_again(tmp_path, inv, env):
    """Dask gives a dead worker's task to the worker its nanny starts again. A runbook may
    change things, so the target's run must not start a second time: it is reported lost
    (unknown, exit 3), and the run the worker had started is stopped with it and closes its
    record as interrupted."""
    out = tmp_path / "reports"
    with dask_fleet(inv, out, env, "a", 30) as (_, nanny, proc):
        deadline = time.monotonic() + 60
        while not _runs_of(inv) and time.monotonic() < deadline:
            time.sleep(0.2)
        runs = _runs_of(inv)
        assert len(runs) == 1, "the target's run did not start on the worker"
        time.sleep(3)  # the kernel is in the runbook's sleep
        worker = runs[0].parent()
        assert worker.ppid() == nanny.pid, worker.cmdline()
        worker.kill()  # the worker process, not its nanny
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    data = json.loads(Path(stdout.strip().splitlines()[-1]).read_text())
    row = data["targets"][0]
    assert row["status"] == "unknown", row
    assert "worker running it died" in row["root_cause"]
    wait_for_runs(out, timeout_s=30)  # the stopped run closes its record on its own
    started = sorted(out.glob("*/fleet-tiny/*/findings.json"))
    assert len(started) == 1, started  # one run, never a second
    findings = json.loads(started[0].read_text())
    assert [f["check"] for f in findings["findings"]][-1] == "run.interrupted"


def _end_runs_of(inv: Path) -> None:
    """End the `fraiseql-rb run` children this test's fleet started (their command line names
    this test's own inventory), and their kernels, by process id."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if str(inv) in (proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                for kid in proc.children(recursive=True):
                    kid.kill()
                proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
