"""Interrupted runs say so (issue 9, points 4-6): Ctrl-C and SIGTERM leave a complete,
honest record, no kernel behind and no temporary files; simultaneous runs never collide;
every artifact file has the one documented mode."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fraiseql_rb.core import artifacts
from fraiseql_rb.core.findings import ARTIFACT_DIR_MODE, ARTIFACT_FILE_MODE


def _start(sandbox, out: Path) -> subprocess.Popen[str]:
    """memory-leak samples for a minute: long enough to be interrupted mid-step."""
    env = {**os.environ, "FRAISEQL_RB_INVENTORY": str(sandbox.inventory)}
    return subprocess.Popen(
        [sys.executable, "-m", "fraiseql_rb", "run", "memory-leak", "--target", "sandbox",
         "--output-dir", str(out), "--incident-id", "INT-1", "-p", "window_s", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def _kernel_of(proc: subprocess.Popen[str], timeout_s: float = 60) -> psutil.Process:
    """The run's kernel, once it is sampling (a finding recorded, the window begun)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kernels = [c for c in psutil.Process(proc.pid).children()
                   if "ipykernel" in " ".join(c.cmdline())]
        if kernels:
            spec = json.loads(kernels[0].environ()["FRAISEQL_RB_RUN"])
            findings = json.loads(Path(spec["findings_path"]).read_text())["findings"]
            if findings:
                time.sleep(1.0)
                return kernels[0]
        time.sleep(0.3)
    raise AssertionError("the run never started sampling")


@pytest.mark.parametrize(("signum", "to_group", "code"), [
    (signal.SIGINT, True, 130),   # Ctrl-C: the terminal signals the whole process group
    (signal.SIGTERM, False, 143),  # a scheduler or systemd stops the runner itself
])
def test_an_interrupted_run_leaves_a_complete_honest_record(healthy_sandbox, tmp_path,
                                                            signum, to_group, code):
    out = tmp_path / "reports"
    proc = _start(healthy_sandbox, out)
    kernel = _kernel_of(proc)
    scratch = Path(json.loads(kernel.environ()["FRAISEQL_RB_RUN"])["waits_file"]).parent
    assert scratch.is_dir()
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    artifact = Path(stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in artifact.iterdir()) == [
        "findings.json", "memory-leak.html", "memory-leak.ipynb"]
    data = json.loads((artifact / "findings.json").read_text())
    assert data["finished_at"] is None and data["interrupted_at"]
    assert data["status"] == "unknown"  # never "ok" for a run that did not finish
    last = data["findings"][-1]
    assert last["check"] == "run.interrupted" and last["status"] == "unknown"
    assert signal.Signals(signum).name in last["summary"]
    assert len(data["findings"]) >= 2  # what it found before the signal stands
    notebook = json.loads((artifact / "memory-leak.ipynb").read_text())
    assert any(o.get("ename") == "KeyboardInterrupt" for c in notebook["cells"]
               for o in c.get("outputs", [])), "the partial notebook shows where it stopped"
    assert not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE
    assert not scratch.exists(), "temporary files removed"


def _make_dir(args: tuple[str, str]) -> str:
    out, barrier_file = args
    while not Path(barrier_file).exists():  # start together
        time.sleep(0.001)
    return str(artifacts.new_artifact_dir(Path(out), "service-health", "INC-9"))


def test_simultaneous_runs_each_get_their_own_directory(tmp_path):
    barrier = tmp_path / "go"
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        pending = pool.map_async(_make_dir, [(str(tmp_path), str(barrier))] * 8)
        time.sleep(1.5)  # every worker is up and waiting
        barrier.touch()
        made = pending.get(timeout=60)
    assert len(set(made)) == 8
    for path in map(Path, made):
        assert path.name.endswith("Z_INC-9") and len(path.name) == len("123456Z_INC-9")
        assert stat.S_IMODE(path.stat().st_mode) == ARTIFACT_DIR_MODE & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_artifacts_share_one_mode(healthy_sandbox, tmp_path):
    out = tmp_path / "reports"
    result = healthy_sandbox.cli("run", "service-health", "--target", "sandbox",
                                 "--output-dir", str(out), "-p", "samples", "1")
    assert result.returncode == 0, result.stderr
    artifact = Path(result.stdout.strip().splitlines()[-1])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in artifact.iterdir()}
    assert modes == dict.fromkeys(["findings.json", "service-health.html",
                                   "service-health.ipynb"], ARTIFACT_FILE_MODE)
