"""A real streaming replica of a fixture cluster, for tests that judge replication.

`make_replica(primary)` takes a `pg_basebackup -R` of a started cluster (its superuser over
the unix socket) into a new directory and starts it as a hot standby on its own port; the
caller destroys it. `wait_replayed` waits until the replica has replayed the primary's
current WAL position and a transaction. Kept apart from the sandbox's replica so that tests
of the checks do not depend on the drill environment.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from fraiseql_rb.sandbox.cluster import CONF_FILE, SUPERUSER, Cluster, free_port
from fraiseql_rb.targets.pgbin import pg_bin

__all__ = ["make_replica", "wait_replayed"]


def make_replica(primary: Cluster) -> Cluster:
    """pg_basebackup -R from `primary` into a new directory, started as a hot standby."""
    base = Path(tempfile.mkdtemp(prefix="frb-rep-", dir="/tmp"))
    base.chmod(0o755)
    replica = Cluster(base, port=free_port())
    for path in (replica.run_dir, replica.log_dir):
        path.mkdir(mode=0o700)
    replica._give_to_server(base)
    replica._run("pg_basebackup", [
        str(pg_bin("pg_basebackup")), "-D", str(replica.pgdata), "-h", str(primary.run_dir),
        "-p", str(primary.port), "-U", SUPERUSER, "-R", "-X", "stream", "-c", "fast",
        "--no-sync"], timeout=60)
    conf = replica.pgdata / CONF_FILE
    text = conf.read_text()
    for key, value in (("port", str(replica.port)),
                       ("unix_socket_directories", f"'{replica.run_dir}'"),
                       ("archive_mode", "off")):
        text = re.sub(rf"^{key}\s*=.*$", f"{key} = {value}", text, flags=re.MULTILINE)
    conf.write_text(text + "hot_standby = on\n")
    replica._give_to_server(conf)
    replica.start()
    return replica


def wait_replayed(primary: Cluster, replica: Cluster, timeout: float = 10) -> None:
    """Until the replica has replayed up to the primary's WAL position now (and a commit)."""
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    target = row[0] if row else "0/0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with replica.connect() as conn:
            done = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn "
                "AND pg_last_xact_replay_timestamp() IS NOT NULL", (target,)).fetchone()
        if done and done[0]:
            return
        time.sleep(0.1)
    raise AssertionError("the replica did not replay the primary's WAL in time")
