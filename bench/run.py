"""Benchmarks for issue targets, measured in one run on this machine and printed.

  sandbox-up        wall time of `fraiseql-rb sandbox up` on a fresh directory (target < 15 s)
  sandbox-backups   its step writing §5.1's backups (dumps, base backup, archives)
  papermill-floor   `papermill` CLI on a trivial notebook: kernel start + one cell
  service-health    `fraiseql-rb run service-health` against the sandbox
  ratio             service-health / floor (target <= 2.0)

Usage: python3 bench/run.py [--repeat N] [--scale N]. `--scale` builds the sandbox with N times
the data (`sandbox up --scale N`). Targets are reported, never asserted by tests.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

TARGETS = {"sandbox_up_s": 15.0, "service_health_ratio": 2.0}


def timed(cmd: list[str], allowed: tuple[int, ...] = (0,), **kwargs) -> float:
    """Wall time of a command; an exit code outside `allowed` is a failed benchmark."""
    began = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    if done.returncode not in allowed:
        raise SystemExit(f"bench: {' '.join(cmd[:6])} ... exited {done.returncode}")
    return time.perf_counter() - began


def sandbox_up(cmd: list[str], results: dict[str, float]) -> None:
    """`sandbox up`: its wall time, and the backups step's time from its progress lines."""
    began = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results["sandbox_up_s"] = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"bench: sandbox up exited {done.returncode}: "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    step = re.search(r"^sandbox: backups .*\(([\d.]+) s\)$", done.stderr, re.MULTILINE)
    if step:
        results["sandbox_backups_s"] = float(step.group(1))


def trivial_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell('target = "sandbox"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(target)")]
    nbformat.write(nb, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1, help="sandbox up --scale N")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fraiseql-rb-bench-", dir="/tmp"))
    work.chmod(0o755)  # the PostgreSQL server account must traverse it
    sandbox = work / "sandbox"
    cli = [sys.executable, "-m", "fraiseql_rb"]
    results: dict[str, float] = {}
    try:
        sandbox_up(cli + ["sandbox", "--dir", str(sandbox), "up", "--scale", str(args.scale)],
                   results)
        inventory = sandbox / "inventory.toml"
        trivial_notebook(work / "trivial.ipynb")
        floor, health = [], []
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            floor.append(timed([sys.executable, "-m", "papermill", "--no-progress-bar",
                                str(work / "trivial.ipynb"), str(work / "out.ipynb")]))
            health.append(timed(cli + ["run", "service-health", "--target", "sandbox",
                                       "--inventory", str(inventory), "--output-dir",
                                       str(work / "reports")]))
        results["papermill_floor_s"] = statistics.median(floor)
        results["service_health_s"] = statistics.median(health)
        results["service_health_ratio"] = results["service_health_s"] / results[
            "papermill_floor_s"]
    finally:
        subprocess.run(cli + ["sandbox", "--dir", str(sandbox), "down", "--purge"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'measure':<24}{'value':>10}  target")
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else (
            f"<= {target:g}  {'MET' if value <= target else 'MISSED'}")
        print(f"{name:<24}{value:>10.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
