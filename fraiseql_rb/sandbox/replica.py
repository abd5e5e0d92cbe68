"""A real streaming replica beside the sandbox's primary (hot standby, its own port).

Why: database-unavailable, config-preflight's replication checks, the dashboards and the
replication alert need a replica to read; a drill that pauses replay or stops the standby
is only real on a real one. Built with `pg_basebackup -R` over the primary's unix socket
(trusted, so no password is ever written or passed), streaming through a physical
replication slot so the primary keeps the WAL the replica has not received while it is
stopped or paused (the replica-down and replica-lag drills catch up on heal).

Layout under `<sandbox>/replica/` (a `Cluster` of its own): pgdata/, run/, logs/.

The primary-down drill stops the primary; its heal puts back what `sandbox up` left even
after the failover runbook promoted the replica (see `primary_up`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from . import backups, processes, server
from . import cluster as pgcluster
from .state import Sandbox, SandboxError

DIR = "replica"
SLOT = "fraiseql_rb_replica"
APPLICATION_NAME = "fraiseql_rb_replica"
STATE_PORT = "replica_pg_port"  # sandbox.json: the replica's port; absent with --no-replica
_READY_TIMEOUT_S = 30.0
NODES = ("primary", "replica")
MODULE = "fraiseql_rb.sandbox.replica"
WRITER_PID = "replica_lag_writer_pid"  # sandbox.json: the replica-lag drill's writer
WRITER_TABLE = "fraiseql_rb_drill_writes"  # in database `postgres`: no runbook reads it
WRITER_APPLICATION = "fraiseql-rb-drill-writer"
WRITER_INTERVAL_S = 1.0  # one small commit a second: a primary that "keeps writing slowly"
WRITER_MAX_S = 3600  # a writer nobody healed stops by itself
_HEAL_TIMEOUT_S = 30.0
# The failover runbook's copy of the server config before it pointed the config at the
# promoted replica (fraiseql_rb/dr/failover.py CONFIG_BACKUP_SUFFIX: the same convention).
CONFIG_BACKUP_SUFFIX = ".pre-failover-"
# The primary's own configuration, kept across the rebuild from the promoted node.
_PRIMARY_CONF_FILES = ("postgresql.conf", "postgresql.auto.conf", "pg_hba.conf",
                       "pg_ident.conf", pgcluster.CONF_FILE)


def configured(sb: Sandbox) -> bool:
    """Was this sandbox built with a replica (not `--no-replica`)?"""
    return bool(sb.state.get(STATE_PORT))


def node(sb: Sandbox) -> pgcluster.Cluster:
    """The replica's cluster object (its port from sandbox.json)."""
    return pgcluster.Cluster(sb.root / DIR, port=sb.state.get(STATE_PORT))


def _rewrite_conf(replica: pgcluster.Cluster) -> None:
    """The include file came from the primary: give the replica its own port and socket."""
    conf = replica.pgdata / pgcluster.CONF_FILE
    text = conf.read_text()
    text = re.sub(r"^port = .*$", f"port = {replica.port}", text, flags=re.MULTILINE)
    text = re.sub(r"^unix_socket_directories = .*$",
                  "unix_socket_directories = "
                  + pgcluster._conf_value(str(replica.run_dir)),  # noqa: SLF001
                  text, flags=re.MULTILINE)
    text += "hot_standby = on\nhot_standby_feedback = on\n"
    conf.write_text(text)
    replica._give_to_server(conf)  # noqa: SLF001


def build(sb: Sandbox) -> pgcluster.Cluster:
    """Clone the running primary with pg_basebackup -R and start it as a hot standby."""
    primary = sb.cluster
    replica = node(sb)
    base = replica.base_dir
    base.mkdir(mode=0o755, exist_ok=True)
    for path in (replica.pgdata, replica.run_dir, replica.log_dir):
        path.mkdir(mode=0o700, exist_ok=True)  # pg_basebackup fills an empty pgdata
    replica._give_to_server(replica.pgdata, replica.run_dir, replica.log_dir)  # noqa: SLF001
    with primary.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                              (SLOT,)).fetchone()
    replica._run("pg_basebackup", [  # noqa: SLF001
        replica._bin("pg_basebackup"),  # noqa: SLF001
        "-h", str(primary.run_dir), "-p", str(primary.port), "-U", pgcluster.SUPERUSER,
        "-D", str(replica.pgdata), "-R", "-X", "stream", "-c", "fast", "--no-sync",
        "-d", f"application_name={APPLICATION_NAME}",
        "-S", SLOT, *([] if exists else ["-C"]),
    ])
    _rewrite_conf(replica)
    replica.start()
    wait_streaming(sb)
    replay_a_commit(sb)
    return replica


def replay_a_commit(sb: Sandbox) -> None:
    """Commit one transaction on the primary and wait until the replica replayed it.

    A standby that has replayed no commit since it started has no
    pg_last_xact_replay_timestamp(), so its delay in time cannot be measured (and Debian's
    pg_replication_lag reads 0): a long-running replica always has one, so ours does too."""
    with sb.cluster.connect() as conn:
        conn.execute("SELECT txid_current()")  # an xid, so its commit is WAL-logged
    wait_caught_up(sb)


def wait_streaming(sb: Sandbox, timeout: float = _READY_TIMEOUT_S) -> None:
    """Until the primary shows the replica streaming (pg_stat_replication)."""
    deadline = time.monotonic() + timeout
    with sb.cluster.connect() as conn:
        while True:
            row = conn.execute("SELECT state FROM pg_stat_replication "
                               "WHERE application_name = %s", (APPLICATION_NAME,)).fetchone()
            if row and row[0] == "streaming":
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"the replica is not streaming after {timeout:g} s "
                                   f"(state {row[0] if row else 'absent'}); see "
                                   f"{node(sb).logfile}")
            time.sleep(0.1)


def start(sb: Sandbox) -> None:
    """Start the replica when the sandbox has one and it is stopped."""
    if configured(sb):
        node(sb).start()
        if sb.cluster.is_running():
            wait_streaming(sb)
            replay_a_commit(sb)


def stop(sb: Sandbox, mode: str = "fast") -> None:
    """Stop the replica (no-op without one, or when it is already stopped)."""
    if not configured(sb):
        return
    replica = node(sb)
    if replica.pgdata.exists() and replica.is_running():
        try:
            replica.stop(mode, timeout=20)
        except pgcluster.ClusterError:
            replica.stop("immediate", timeout=20)


def status_line(sb: Sandbox) -> str:
    """`sandbox status`: the replica's port and pid, or why there is none."""
    if not configured(sb):
        return "none (--no-replica)"
    replica = node(sb)
    if not replica.is_running():
        return "stopped"
    return f"running, port {replica.port}, pid {replica.pid()}, hot standby"


def control(root: Path, which: str, action: str) -> str:
    """`sandbox node primary|replica start|stop`: the commands a failover runbook records."""
    sb = Sandbox.open(root)
    sb.require()
    if which not in NODES or action not in ("start", "stop"):
        raise SandboxError(f"unknown node command {which} {action}")
    if which == "replica" and not configured(sb):
        raise SandboxError("this sandbox has no replica (built with --no-replica)")
    target = sb.cluster if which == "primary" else node(sb)
    if action == "start":
        target.start()
    else:
        target.stop("fast", timeout=20)
    return f"{which} {'started' if action == 'start' else 'stopped'} (port {target.port})"


# ---- drills: replica-lag (replay paused, the primary keeps writing), replica-down ----------


def _require(sb: Sandbox) -> pgcluster.Cluster:
    if not configured(sb):
        raise SandboxError("this sandbox has no replica (built with --no-replica)")
    replica = node(sb)
    if not replica.is_running():
        raise SandboxError("the replica is not running (heal replica-down first)")
    return replica


def _writer_alive(sb: Sandbox) -> int | None:
    pid = sb.state.get(WRITER_PID)
    return int(pid) if processes.alive(pid, f"--dir={sb.root}") else None


def pause_replay(sb: Sandbox) -> None:
    """replica-lag: pause WAL replay on the replica and start a slow writer on the primary,
    so the replica falls behind in bytes and in time, as a stuck standby does."""
    replica = _require(sb)
    with sb.cluster.connect() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {WRITER_TABLE} "
                     "(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        conn.execute(f"INSERT INTO {WRITER_TABLE} DEFAULT VALUES")
    # A replica that has replayed no commit since it started has no replay timestamp, and
    # lag measured in time (postgres_exporter's pg_replication_lag) reads 0: let it replay
    # this one first, so the time lag starts counting from a real commit.
    wait_caught_up(sb)
    with replica.connect() as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    if _writer_alive(sb) is None:
        proc = processes.spawn([sys.executable, "-m", MODULE, "writer", f"--dir={sb.root}"],
                               sb.logs_dir / "drill-writer.log")
        sb.state[WRITER_PID] = proc.pid
        sb.save()


def resume_replay(sb: Sandbox) -> None:
    """Heal replica-lag: stop the writer, resume replay, wait until the replica has replayed
    everything the primary wrote, and drop the drill's table."""
    processes.terminate(sb.state.get(WRITER_PID), f"--dir={sb.root}")
    sb.state.pop(WRITER_PID, None)
    sb.save()
    if not configured(sb) or not node(sb).is_running():
        return
    with node(sb).connect() as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    if sb.cluster.is_running():
        with sb.cluster.connect() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {WRITER_TABLE}")
        wait_caught_up(sb)


def wait_caught_up(sb: Sandbox, timeout: float = _HEAL_TIMEOUT_S) -> None:
    """Until the primary sees the replica streaming with nothing left to replay."""
    deadline = time.monotonic() + timeout
    with sb.cluster.connect() as conn:
        while True:
            row = conn.execute(
                "SELECT state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
                "FROM pg_stat_replication WHERE application_name = %s",
                (APPLICATION_NAME,)).fetchone()
            if row and row[0] == "streaming" and row[1] is not None and row[1] <= 0:
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"the replica has not caught up after {timeout:g} s "
                                   f"(state, bytes behind = {row})")
            time.sleep(0.1)


def take_down(sb: Sandbox) -> None:
    """replica-down: stop the replica (pg_ctl stop -m fast)."""
    _require(sb).stop("fast", timeout=20)


def bring_up(sb: Sandbox) -> None:
    """Heal replica-down: start the replica and wait until it streams again."""
    if not configured(sb):
        return
    node(sb).start()
    if sb.cluster.is_running():
        wait_streaming(sb)


# ---- primary-down: the primary stopped; healed, the original layout even after a failover ----


def primary_down(sb: Sandbox) -> None:
    """primary-down: stop the primary (pg_ctl stop -m fast). The stand-in stays up and
    answers /health unhealthy; the replica keeps what it received and waits for a primary."""
    if not sb.cluster.is_running():
        return
    sb.cluster.stop("fast", timeout=20)


def promoted(sb: Sandbox) -> bool:
    """Has the replica left recovery (a failover promoted it)? A stopped replica without
    standby.signal was promoted too."""
    if not configured(sb):
        return False
    replica = node(sb)
    if not replica.pgdata.exists():
        return False
    if replica.is_running():
        with replica.connect() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return not (row and row[0])
    return not (replica.pgdata / "standby.signal").exists()


def config_backups(sb: Sandbox) -> list[Path]:
    """The failover's backup copies of the server config, oldest first."""
    config = sb.server_config
    return sorted(config.parent.glob(config.name + CONFIG_BACKUP_SUFFIX + "*"))


def restore_config(sb: Sandbox) -> bool:
    """Put back the server config as it was before the first failover (its oldest backup
    copy, moved over the config atomically); later copies are removed. True if it changed."""
    copies = config_backups(sb)
    if not copies:
        return False
    os.replace(copies[0], sb.server_config)
    for extra in copies[1:]:
        extra.unlink(missing_ok=True)
    return True


def primary_up(sb: Sandbox) -> None:
    """Heal primary-down: the sandbox as `sandbox up` left it, whether or not a failover ran.

    Not promoted: start the primary; the replica streams again. Promoted (the replica is a
    primary now, on a new timeline, with the writes made since): the stand-in is stopped, a
    base backup of the promoted node replaces the old primary's data directory (the primary's
    own configuration files kept), the promoted node stops, the primary starts on its port,
    and the replica is rebuilt from it (pg_basebackup -R, streaming through its slot), and a
    new base backup is taken, as after any failover. Then the server config comes back from
    the failover's backup copy, and the stand-in is (re)started on it."""
    if promoted(sb):
        _rebuild_after_failover(sb)
    else:
        _db_start(sb)
        if configured(sb) and node(sb).is_running() and not _replay_paused(sb):
            wait_streaming(sb)  # paused (replica-lag), it reconnects when replay resumes
    if restore_config(sb) or server.pid(sb) is None:
        server.stop(sb)
        server.start(sb)


def _replay_paused(sb: Sandbox) -> bool:
    with node(sb).connect() as conn:
        row = conn.execute("SELECT pg_is_in_recovery() AND pg_is_wal_replay_paused()"
                           ).fetchone()
    return bool(row and row[0])


def _db_start(sb: Sandbox) -> None:
    if not sb.cluster.is_running():
        sb.cluster.start()


def _rebuild_after_failover(sb: Sandbox) -> None:
    primary, replica = sb.cluster, node(sb)
    server.stop(sb)  # no write may reach the promoted node after its backup
    replica.start()
    if primary.is_running():  # a primary someone started again beside the promoted node
        primary.stop("fast", timeout=20)
    kept = {name: (primary.pgdata / name).read_bytes() for name in _PRIMARY_CONF_FILES
            if (primary.pgdata / name).exists()}
    old = primary.pgdata.with_name(primary.pgdata.name + ".before-failover-heal")
    if old.exists():
        shutil.rmtree(old)
    os.replace(primary.pgdata, old)
    try:
        primary.pgdata.mkdir(mode=0o700)
        primary._give_to_server(primary.pgdata)  # noqa: SLF001
        primary._run("pg_basebackup", [  # noqa: SLF001
            primary._bin("pg_basebackup"),  # noqa: SLF001
            "-h", str(replica.run_dir), "-p", str(replica.port), "-U", pgcluster.SUPERUSER,
            "-D", str(primary.pgdata), "-X", "stream", "-c", "fast", "--no-sync",
        ])
        for name in ("standby.signal", "recovery.signal", "postgresql.auto.conf"):
            (primary.pgdata / name).unlink(missing_ok=True)
        for name, data in kept.items():
            (primary.pgdata / name).write_bytes(data)
        primary._give_to_server(primary.pgdata)  # noqa: SLF001
        replica.stop("fast", timeout=20)
        primary.start()
    except BaseException:
        with contextlib.suppress(pgcluster.ClusterError):
            primary.stop("immediate", timeout=20)
        shutil.rmtree(primary.pgdata, ignore_errors=True)
        os.replace(old, primary.pgdata)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if replica.is_running():
        replica.stop("fast", timeout=20)
    shutil.rmtree(replica.pgdata)
    build(sb)
    # the old base backup ends on the old timeline, and the segment of the switch may never
    # reach the archive: after a failover a new base backup starts the recovery chain again
    base = backups.make_base_backup(primary, datetime.now(UTC))
    backups.write_marker(primary, f"after {base.name}")
    primary.wait_archived(timeout=30)


def _write_slowly(root: Path) -> int:
    """The replica-lag drill's writer: one tiny commit a second until SIGTERM (or
    WRITER_MAX_S), over the primary's socket as the superuser (no password)."""
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sb = Sandbox.open(root)
    began = time.monotonic()
    conn = None
    while not stop and time.monotonic() - began < WRITER_MAX_S:
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(**sb.cluster.superuser_conninfo(),
                                       application_name=WRITER_APPLICATION, autocommit=True)
            conn.execute(f"INSERT INTO {WRITER_TABLE} DEFAULT VALUES")
        except psycopg.Error as exc:
            print(f"writer: {type(exc).__name__}", file=sys.stderr, flush=True)
            conn = None
        time.sleep(WRITER_INTERVAL_S)
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description="the replica-lag drill's writer")
    parser.add_argument("command", choices=["writer"])
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    return _write_slowly(Path(args.dir))


if __name__ == "__main__":
    sys.exit(main())
