"""Issue #9 point 11 target: every runbook against a hung target ends within 30 s, with an
unknown or critical verdict (exit 2 or 3), never ok.

A hung target accepts TCP and never answers (a "black hole": a listening socket that accepts
every connection and never writes). This script starts one for `fraiseql_url` and one for
`database_url` (with `--all`, also for prometheus_url and redis_url), writes an inventory
naming only them, and runs every runbook (`fraiseql-rb list`) through `fraiseql-rb run`,
printing each one's wall time and exit code against the goal.

Usage: python3 bench/hung_target.py [--all] [--only NAME,...]. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GOAL_S = 30.0
GOOD_EXITS = (2, 3)  # critical or unknown; ok (0) or warning (1) would be a false verdict
RUN_LIMIT_S = 600  # a runbook still running after this is killed and reported as such


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never writes; closes them all on stop()."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)  # never read, never written: the peer waits

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.held:
            conn.close()
        self.sock.close()


def runbook_names() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from fraiseql_rb.core import runbooks

    return list(runbooks.discover())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true",
                        help="black-hole prometheus_url and redis_url too")
    parser.add_argument("--only", default="", help="comma-separated runbook names")
    parser.add_argument("--keep", metavar="DIR", help="write the reports here and keep them")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or runbook_names()
    work = Path(tempfile.mkdtemp(prefix="fraiseql-rb-bench-hung-", dir="/tmp"))
    reports = Path(args.keep) if args.keep else work / "reports"
    holes = {key: BlackHole() for key in (
        ["fraiseql", "database"] + (["prometheus", "redis"] if args.all else []))}
    lines = ["[targets.hung]",
             f'fraiseql_url = "http://127.0.0.1:{holes["fraiseql"].port}"',
             f'database_url = "postgresql://fraiseql_user@127.0.0.1:{holes["database"].port}'
             '/fraiseql"']
    if args.all:
        lines += [f'prometheus_url = "http://127.0.0.1:{holes["prometheus"].port}"',
                  f'redis_url = "redis://127.0.0.1:{holes["redis"].port}/0"']
    inventory = work / "inventory.toml"
    inventory.write_text("\n".join(lines) + "\n")
    cli = [sys.executable, "-m", "fraiseql_rb"]
    results: list[tuple[str, float, str]] = []
    try:
        for name in names:
            began = time.perf_counter()
            try:
                done = subprocess.run(
                    cli + ["run", name, "--target", "hung", "--inventory", str(inventory),
                           "--output-dir", str(reports)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                    timeout=RUN_LIMIT_S)
                code = str(done.returncode)
            except subprocess.TimeoutExpired:
                code = "killed"
            wall = time.perf_counter() - began
            results.append((name, wall, code))
            print(f"  {name}: {wall:.1f} s, exit {code}", file=sys.stderr, flush=True)
    finally:
        for hole in holes.values():
            hole.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'runbook':<34}{'wall s':>8}{'exit':>7}  goal <= {GOAL_S:g} s, exit 2 or 3")
    for name, wall, code in results:
        met = wall <= GOAL_S and code in {str(c) for c in GOOD_EXITS}
        print(f"{name:<34}{wall:>8.1f}{code:>7}  {'MET' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
