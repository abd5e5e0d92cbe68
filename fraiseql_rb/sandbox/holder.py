"""Database sessions that hold something for a drill: slow statements, a lock, idle transactions.

A fault like "heavy statements keep running" or "a table lock nobody releases" needs a client
that keeps doing it while the playbook looks, and that stops cleanly when healed. This process
is that client, one per fault:

    python -m fraiseql_rb.sandbox.holder --dir SANDBOX --mode slow|lock|idle [--count N]
        [--max-seconds S]

- ``slow``: two sessions run long statements back to back: ``pg_sleep`` and a CPU-bound cross
  join that touches no application table (so it never blocks the lock drill).
- ``lock``: one session runs ``BEGIN; LOCK TABLE tb_post IN ACCESS EXCLUSIVE MODE`` and then
  sits idle in that transaction, so every reader of ``v_post`` queues behind it.
- ``idle``: ``--count`` sessions run ``BEGIN; SELECT 1`` and sit idle in transaction.

It connects as the superuser over the cluster's unix socket (trusted, no password: nothing
secret to log or pass), tags its sessions with ``application_name`` ``fraiseql-rb-drill-MODE``
so drills and heals can find them, holds until SIGTERM, and ends by itself after
``--max-seconds`` (the server enforces the same bound through statement and idle timeouts, so
even a SIGKILLed holder's sessions do not outlive it). SIGTERM rolls back and disconnects.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from . import cluster as pgcluster
from . import processes
from .state import Sandbox, SandboxError

MODULE = "fraiseql_rb.sandbox.holder"
MODES = ("slow", "lock", "idle")
MAX_SECONDS = 3600.0  # a forgotten fault stops by itself
READY_TIMEOUT_S = 15.0
SLOW_STATEMENTS = (
    "SELECT pg_sleep(600)",
    # 1e10 rows through a nested loop: one core busy for minutes, no app table touched; both
    # sides are materialised (function scans), so the session gets enough work_mem to keep
    # them in memory instead of rereading a temporary file ten billion times
    "SELECT count(*) FROM generate_series(1, 100000) AS a "
    "CROSS JOIN generate_series(1, 100000) AS b",
)
SLOW_WORK_MEM = "64MB"
LOCK_TABLE = "tb_post"
IDLE_COUNT = 5


def application_name(mode: str) -> str:
    return f"fraiseql-rb-drill-{mode}"


def marker(root: Path, mode: str) -> str:
    """What identifies this sandbox's holder of `mode` in a command line."""
    return f"{MODULE} --dir {root} --mode {mode}"


# ---- supervision (called by the faults) ------------------------------------------------------


def start(sb: Sandbox, mode: str, state_key: str, *, count: int = IDLE_COUNT,
          max_seconds: float = MAX_SECONDS) -> int:
    """Start the holder (idempotent: a live one is kept) and wait until it holds."""
    pid = sb.state.get(state_key)
    if processes.alive(pid, marker(sb.root, mode)):
        return int(pid)
    argv = [sys.executable, "-m", MODULE, "--dir", str(sb.root), "--mode", mode,
            "--count", str(count), "--max-seconds", str(max_seconds)]
    log = sb.logs_dir / f"holder-{mode}.log"
    proc = processes.spawn(argv, log)
    sb.state[state_key] = proc.pid
    sb.save()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"the {mode} holder exited ({proc.returncode}); see {log}")
        if _holding(sb, mode, count):
            return proc.pid
        time.sleep(0.2)
    stop(sb, mode, state_key)
    raise SandboxError(f"the {mode} holder did not get going within {READY_TIMEOUT_S:.0f} s; "
                       f"see {log}")


def stop(sb: Sandbox, mode: str, state_key: str, timeout: float = 10) -> None:
    """Stop the holder, then make sure none of its sessions is left in the database."""
    processes.terminate(sb.state.get(state_key), marker(sb.root, mode))
    sb.state[state_key] = None
    sb.save()
    if not sb.cluster.is_running():
        return  # no database, no sessions
    name = application_name(mode)
    deadline = time.monotonic() + timeout
    with sb.cluster.connect() as conn:
        while time.monotonic() < deadline:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
            if not left or not left[0]:
                return
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = %s", (name,))
            time.sleep(0.2)
    raise SandboxError(f"sessions named {name} are still in the database after {timeout:.0f} s")


def _holding(sb: Sandbox, mode: str, count: int) -> bool:
    """Does the database show the holder's sessions doing what `mode` says?"""
    name = application_name(mode)
    try:
        with sb.cluster.connect(pgcluster.APP_DB) as conn:
            if mode == "lock":
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid) "
                    "WHERE a.application_name = %s AND l.granted "
                    "AND l.mode = 'AccessExclusiveLock' AND l.relation = %s::regclass",
                    (name, LOCK_TABLE)).fetchone()
                return bool(row and row[0])
            state, wanted = (("active", len(SLOW_STATEMENTS)) if mode == "slow"
                             else ("idle in transaction", count))
            row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                               "WHERE application_name = %s AND state = %s",
                               (name, state)).fetchone()
            return bool(row and row[0] >= wanted)
    except (psycopg.Error, pgcluster.ClusterError):
        return False


# ---- the holder process ----------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} holder: {message}", flush=True)


class _Holder:
    """The sessions of one holder and the event that ends them."""

    def __init__(self, conninfo: dict[str, Any], max_seconds: float) -> None:
        self.conninfo = conninfo
        self.bound_ms = int(max_seconds * 1000)
        self.stop = threading.Event()
        self.conns: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(**self.conninfo, autocommit=True)
        with self._lock:
            self.conns.append(conn)
        # the server ends these sessions by itself if this process is gone or overstays
        conn.execute(f"SET statement_timeout = {self.bound_ms}")
        conn.execute(f"SET idle_in_transaction_session_timeout = {self.bound_ms}")
        with contextlib.suppress(psycopg.Error):  # PostgreSQL 14+
            conn.execute("SET client_connection_check_interval = 1000")
        return conn

    def run_slow(self, statement: str) -> None:
        try:
            conn = self.connect()
            conn.execute(f"SET work_mem = '{SLOW_WORK_MEM}'")
            while not self.stop.is_set():
                try:
                    conn.execute(statement)
                except psycopg.errors.QueryCanceled:
                    if self.stop.is_set():
                        break
        except psycopg.Error as exc:
            if not self.stop.is_set():
                _say(f"slow statement failed: {str(exc).strip().splitlines()[0]}")
        self.stop.set()  # one failed session ends the holder: the fault is no longer whole

    def hold_transaction(self, *statements: str) -> None:
        conn = self.connect()
        conn.execute("SET lock_timeout = 10000")  # a LOCK stuck behind someone fails loudly
        conn.execute("BEGIN")
        for statement in statements:
            conn.execute(statement)

    def cancel_all(self) -> None:
        with self._lock:
            conns = list(self.conns)
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                if hasattr(conn, "cancel_safe"):  # psycopg 3.2+: bounded, no blocking
                    conn.cancel_safe(timeout=3)
                else:
                    conn.cancel()

    def close_all(self) -> None:
        with self._lock:
            conns, self.conns = list(self.conns), []
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
            conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="the sandbox directory")
    parser.add_argument("--mode", required=True, choices=MODES)
    parser.add_argument("--count", type=int, default=IDLE_COUNT,
                        help="sessions held idle in transaction (mode idle)")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    args = parser.parse_args(argv)
    sb = Sandbox.open(args.dir)
    if not sb.exists:
        print(f"holder: no sandbox in {args.dir}", file=sys.stderr)
        return 2
    conninfo = {**sb.cluster.superuser_conninfo(pgcluster.APP_DB),
                "application_name": application_name(args.mode)}
    holder = _Holder(conninfo, max(1.0, args.max_seconds))

    def on_signal(signum: int, frame: object) -> None:
        holder.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers: list[threading.Thread] = []
    try:
        if args.mode == "slow":
            for statement in SLOW_STATEMENTS:
                worker = threading.Thread(target=holder.run_slow, args=(statement,),
                                          daemon=True)
                worker.start()
                workers.append(worker)
            _say(f"running {len(SLOW_STATEMENTS)} long statements")
        elif args.mode == "lock":
            holder.hold_transaction(f"LOCK TABLE {LOCK_TABLE} IN ACCESS EXCLUSIVE MODE")
            _say(f"holding ACCESS EXCLUSIVE on {LOCK_TABLE} in an open transaction")
        else:
            for _ in range(max(1, args.count)):
                holder.hold_transaction("SELECT 1")
            _say(f"holding {max(1, args.count)} sessions idle in transaction")
        deadline = time.monotonic() + args.max_seconds
        while not holder.stop.wait(0.5) and time.monotonic() < deadline:
            pass
        _say("stopping" if holder.stop.is_set() else "max lifetime reached; stopping")
    except psycopg.Error as exc:
        _say(f"failed: {str(exc).strip().splitlines()[0]}")
        return 1
    finally:
        holder.stop.set()
        holder.cancel_all()
        for worker in workers:
            worker.join(timeout=5)
        holder.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
