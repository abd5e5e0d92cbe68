"""Fleet benchmark (issue 14 part 3): one runbook over N targets, in turn, with `--jobs 2`, and
on a `distributed.LocalCluster` of 2 single-thread workers, in one run; target >= 1.7x.

Every target is a copy of ONE live sandbox's target (a sandbox of its own, started here and
removed afterwards), so each run does real work against a real server and database:
`fraiseql-rb run service-health --targets t01,...,tNN -p samples 2`. The inventory copy lies
outside the sandbox directory (a fleet inventory, not the sandbox's own).

Usage: python3 bench/fleet.py [--targets 20] [--runbook service-health] [--keep DIR]
Targets are reported, never asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

TARGET_SPEEDUP = 1.7


def fleet_inventory(sandbox_inventory: Path, count: int, path: Path) -> list[str]:
    """N copies of the sandbox's target, every relative path made absolute (the copy lies
    elsewhere)."""
    data = tomllib.loads(sandbox_inventory.read_text())
    (name, target), = data["targets"].items()
    base = sandbox_inventory.resolve().parent
    names = [f"t{i:02d}" for i in range(1, count + 1)]
    lines = []
    for copy in names:
        lines.append(f"[targets.{copy}]")
        for key, value in target.items():
            if isinstance(value, str) and key.endswith(("_path", "_dir", "_file", "bundle")) \
                    and not Path(value).is_absolute():
                value = str(base / value)
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return names


def run_fleet(cli: list[str], inventory: Path, out: Path, runbook: str, names: list[str],
              extra: list[str]) -> tuple[float, dict]:
    began = time.perf_counter()
    done = subprocess.run(cli + ["run", runbook, "--inventory", str(inventory), "--output-dir",
                                 str(out), "--targets", ",".join(names), "-p", "samples", "2",
                                 "--quiet", *extra],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode not in (0, 1, 2, 3):
        raise SystemExit(f"bench: fleet exited {done.returncode}: {done.stderr.strip()[-400:]}")
    summary = json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text())
    return elapsed, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--runbook", default="service-health")
    parser.add_argument("--keep", help="keep the reports in this directory")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "fraiseql_rb"]
    work = Path(tempfile.mkdtemp(prefix="fraiseql-rb-bench-fleet-"))
    work.chmod(0o755)  # the sandbox's PostgreSQL runs as another user and must traverse it
    sandbox = work / "sandbox"
    try:
        up = subprocess.run(cli + ["sandbox", "--dir", str(sandbox), "up", "--no-replica"],
                            capture_output=True, text=True)
        if up.returncode != 0:
            raise SystemExit(f"bench: sandbox up failed: {up.stderr.strip()[-400:]}")
        inventory = work / "fleet.toml"
        names = fleet_inventory(Path(up.stdout.strip().splitlines()[-1]), args.targets,
                                inventory)
        out = Path(args.keep) if args.keep else work / "reports"
        results: dict[str, float] = {}
        statuses: dict[str, object] = {}
        results["sequential_s"], s = run_fleet(cli, inventory, out, args.runbook, names, [])
        statuses["sequential"] = s["status"]
        results["jobs2_s"], s = run_fleet(cli, inventory, out, args.runbook, names,
                                          ["--jobs", "2"])
        statuses["jobs2"] = s["status"]
        import distributed

        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
            results["dask2_s"], s = run_fleet(cli, inventory, out, args.runbook, names,
                                              ["--dask-scheduler", cluster.scheduler_address])
        statuses["dask2"] = s["status"]
        not_run = sum(t["status"] == "not run" for t in s["targets"])
        print(f"{args.targets} targets x {args.runbook} -p samples 2 on one sandbox "
              f"({os.cpu_count()} cores)")
        for key, value in results.items():
            print(f"  {key:14s} {value:7.1f} s")
        for mode in ("jobs2", "dask2"):
            speedup = results["sequential_s"] / results[f"{mode}_s"]
            verdict = "ok" if speedup >= TARGET_SPEEDUP else "MISSED"
            print(f"  speed-up {mode:6s} {speedup:5.2f}x  (target >= {TARGET_SPEEDUP}x: "
                  f"{verdict})")
        print(f"  fleet statuses: {statuses}; dask targets not run: {not_run}")
        return 0
    finally:
        subprocess.run(cli + ["sandbox", "--dir", str(sandbox), "down", "--purge"],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
