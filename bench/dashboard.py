"""Benchmark of the §9.2 dashboards against the papermill floor, measured and printed.

  papermill-floor        `papermill` CLI on a trivial notebook: kernel start + one cell
  performance-dashboard  `fraiseql-rb run performance-dashboard -p lookback 7d` (Prometheus
                         range queries over the sandbox's week of history, four figures,
                         artifacts and HTML included)
  ratio                  performance-dashboard / floor (target <= 2.0)

Usage: python3 bench/dashboard.py [--repeat N] [--inventory FILE]. Without --inventory a
fresh sandbox is brought up (and purged at the end); with one, that sandbox is used as is.
Targets are reported, never asserted by tests.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import timed, trivial_notebook  # bench/run.py: the same floor, measured the same way

TARGETS = {"performance_dashboard_ratio": 2.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inventory", help="an existing sandbox's inventory.toml")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fraiseql-rb-bench-dash-", dir="/tmp"))
    work.chmod(0o755)  # the PostgreSQL server account must traverse it
    sandbox = work / "sandbox"
    cli = [sys.executable, "-m", "fraiseql_rb"]
    results: dict[str, float] = {}
    try:
        if args.inventory:
            inventory = Path(args.inventory).resolve()
        else:
            began = time.perf_counter()
            subprocess.run(cli + ["sandbox", "--dir", str(sandbox), "up"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results["sandbox_up_s"] = time.perf_counter() - began
            inventory = sandbox / "inventory.toml"
        trivial_notebook(work / "trivial.ipynb")
        run = cli + ["run", "performance-dashboard", "--target", "sandbox", "--inventory",
                     str(inventory), "--output-dir", str(work / "reports"), "-p", "lookback", "7d"]
        # warm the page cache and Prometheus' block index once, unmeasured
        timed(run, allowed=(0, 1))
        floor, dashboard = [], []
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            floor.append(timed([sys.executable, "-m", "papermill", "--no-progress-bar",
                                str(work / "trivial.ipynb"), str(work / "out.ipynb")]))
            dashboard.append(timed(run, allowed=(0, 1)))
        results["papermill_floor_s"] = statistics.median(floor)
        results["performance_dashboard_s"] = statistics.median(dashboard)
        results["performance_dashboard_ratio"] = (results["performance_dashboard_s"]
                                                  / results["papermill_floor_s"])
    finally:
        if not args.inventory:
            subprocess.run(cli + ["sandbox", "--dir", str(sandbox), "down", "--purge"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'measure':<30}{'value':>10}  target")
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else (
            f"<= {target:g}  {'MET' if value <= target else 'MISSED'}")
        print(f"{name:<30}{value:>10.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
