"""Benchmark of the daily security review at 100 thousand and 10 million audit events.

  daily_100k_s     `fraiseql-rb run daily-security-review` on a sandbox whose
                   fraiseql_audit_logs holds 100 000 events (30 days), median wall time
  daily_10m_s      the same with 10 000 000 events (about 2.4 GB of table, 50 s to generate)
  ratio            daily_10m_s / daily_100k_s (target <= 1.5: every count runs in
                   PostgreSQL on the (event_type, "timestamp") index, so the review's time
                   follows the window's events, not the table's size)
  kernel_peak_mb   the notebook kernel's peak resident memory at 10 million events
                   (target < 400 MB: no raw event row reaches pandas beyond a bounded top-N)

The kernel is a child of papermill, itself a child of `fraiseql-rb run`: while the run goes,
the process tree is polled every 0.2 s and, for each ipykernel process, the peak resident set
(`VmHWM` in /proc/PID/status, the kernel's own high-water mark, so a peak between two polls is
not missed) is kept, with the RSS psutil reports as a floor where /proc is unavailable.

Both sandboxes are built (`fraiseql_rb.sandbox.manager.up(root, audit_events=N)`) and kept
up together; each gets one unmeasured warm-up run (page cache, catalog caches), then
`--repeat` measured runs alternate between them, so load from elsewhere on a shared machine
hits both alike; both are purged at the end. Usage:

    python3 bench/security_review.py [--repeat N] [--sizes 100000,10000000] [--keep]

Targets are reported, never asserted by tests (timings on a shared machine are noise there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fraiseql_rb.sandbox import manager  # noqa: E402 - after the path for a plain checkout

RUNBOOK = "daily-security-review"
SMALL, LARGE = 100_000, 10_000_000
RATIO_TARGET = 1.5
MEMORY_TARGET_MB = 400.0
POLL_S = 0.2


@dataclass
class Run:
    wall_s: float
    exit_code: int
    kernel_peak_mb: float | None


def _is_kernel(proc: psutil.Process) -> bool:
    try:
        return any("ipykernel" in part for part in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _peak_rss_mb(proc: psutil.Process) -> float | None:
    """The process's peak resident set so far: VmHWM from /proc, else its current RSS."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        return proc.memory_info().rss / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def measured_run(cmd: list[str], env: dict[str, str]) -> Run:
    """Run `cmd`, polling its process tree for the ipykernel's peak resident memory."""
    began = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    parent = psutil.Process(child.pid)
    peaks: dict[int, float] = {}
    while child.poll() is None:
        try:
            for proc in parent.children(recursive=True):
                if proc.pid in peaks or _is_kernel(proc):
                    peak = _peak_rss_mb(proc)
                    if peak is not None:
                        peaks[proc.pid] = max(peaks.get(proc.pid, 0.0), peak)
        except psutil.NoSuchProcess:
            pass
        time.sleep(POLL_S)
    wall = time.perf_counter() - began
    return Run(wall, child.returncode, max(peaks.values()) if peaks else None)


@dataclass
class Size:
    events: int
    root: Path
    inventory: Path
    build_s: float
    runs: list[Run]


def build(work: Path, events: int) -> Size:
    root = work / f"sandbox-{events}"
    print(f"== {events:,} audit events: building the sandbox in {root}", flush=True)
    began = time.perf_counter()
    result = manager.up(root, audit_events=events)
    build_s = time.perf_counter() - began
    print(f"   built in {build_s:.0f} s", flush=True)
    return Size(events, root, result.inventory, build_s, [])


def command(work: Path, size: Size) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "FRAISEQL_RB_INVENTORY": str(size.inventory)}
    return [sys.executable, "-m", "fraiseql_rb", "run", RUNBOOK, "--target", "sandbox",
            "--inventory", str(size.inventory), "--output-dir", str(work / "reports")], env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default=f"{SMALL},{LARGE}",
                        help="two audit volumes, small then large (default 100000,10000000)")
    parser.add_argument("--keep", action="store_true", help="leave the sandboxes up")
    args = parser.parse_args()
    small, large = (int(s) for s in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="fraiseql-rb-bench-sec-", dir="/tmp"))
    work.chmod(0o755)  # the PostgreSQL server account must traverse it
    sizes: list[Size] = []
    try:
        for events in (small, large):
            sizes.append(build(work, events))
        for size in sizes:  # page cache and catalog caches, unmeasured
            warm = measured_run(*command(work, size))
            print(f"   warm-up at {size.events:,}: {warm.wall_s:.2f} s, exit {warm.exit_code}",
                  flush=True)
        for i in range(args.repeat):  # interleaved, so load from elsewhere hits both alike
            for size in sizes:
                run = measured_run(*command(work, size))
                size.runs.append(run)
                print(f"   run {i + 1} at {size.events:,}: {run.wall_s:.2f} s, exit "
                      f"{run.exit_code}, kernel peak {run.kernel_peak_mb or float('nan'):.0f} "
                      "MB", flush=True)
    finally:
        if not args.keep:
            for size in sizes:
                manager.down(size.root, purge=True)
            shutil.rmtree(work, ignore_errors=True)
    small_runs, large_runs = sizes[0].runs, sizes[1].runs
    small_info, large_info = {"build_s": sizes[0].build_s}, {"build_s": sizes[1].build_s}
    small_s = statistics.median(r.wall_s for r in small_runs)
    large_s = statistics.median(r.wall_s for r in large_runs)
    peaks = [r.kernel_peak_mb for r in large_runs if r.kernel_peak_mb is not None]
    peak = max(peaks) if peaks else float("nan")
    small_peaks = [r.kernel_peak_mb for r in small_runs if r.kernel_peak_mb is not None]
    small_peak = max(small_peaks) if small_peaks else float("nan")
    ratio = large_s / small_s
    codes = sorted({r.exit_code for r in small_runs + large_runs})
    print()
    print(f"{'measure':<28}{'value':>12}  target")
    print(f"{'sandbox build ' + f'{small:,}':<28}{small_info['build_s']:>10.1f} s")
    print(f"{'sandbox build ' + f'{large:,}':<28}{large_info['build_s']:>10.1f} s")
    print(f"{'daily review at ' + f'{small:,}':<28}{small_s:>10.2f} s  (median of "
          f"{len(small_runs)})")
    print(f"{'daily review at ' + f'{large:,}':<28}{large_s:>10.2f} s  (median of "
          f"{len(large_runs)})")
    print(f"{'ratio':<28}{ratio:>12.2f}  <= {RATIO_TARGET:g}  "
          f"{'MET' if ratio <= RATIO_TARGET else 'MISSED'}")
    print(f"{'kernel peak RSS at ' + f'{small:,}':<28}{small_peak:>9.0f} MB")
    print(f"{'kernel peak RSS at ' + f'{large:,}':<28}{peak:>9.0f} MB  < {MEMORY_TARGET_MB:g} MB"
          f"  {'MET' if peak < MEMORY_TARGET_MB else 'MISSED'}")
    print(f"{'exit codes seen':<28}{str(codes):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
