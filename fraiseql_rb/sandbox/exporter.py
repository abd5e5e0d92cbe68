"""Debian's prometheus-postgres-exporter beside the sandbox's PostgreSQL, when installed.

Why: the shipped PostgreSQL alerts (WALArchivingFailing, ReplicationLagHigh) read the
exporter's metric names, so only a real exporter proves they can fire. The sandbox runs it
as Debian ships it (0.11) with Debian's example queries file, which is what gives
`pg_replication_lag` (seconds, computed as `now() - pg_last_xact_replay_timestamp()` on a
server in recovery, 0 on a primary).

One exporter per node, both in Prometheus job `postgres`:
- the primary's, because archiving (`pg_stat_archiver_*`), sessions and locks are the
  primary's state; a replica's archiver never archives (archive_mode on, not always);
- the replica's, because replication lag can only be measured where replay happens: on the
  primary the example query answers 0 whatever the replica does.
Scraping only one of them would leave one of the two alerts unable to fire.

Connection: the superuser over the node's unix socket, which the cluster trusts (a 0700
directory only the server account and root can enter), so no password exists for the
exporter at all: nothing on a command line, in a file or in its environment. Its command
line names the queries file copied into the sandbox directory, so `state.running_pids`
sees the process as the sandbox's.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import httpx

from . import cluster as pgcluster
from . import processes
from . import replica as pgreplica
from .state import Sandbox, SandboxError

BINARY = "prometheus-postgres-exporter"
EXAMPLE_QUERIES = Path("/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml")
DIR = "exporter"
QUERIES_FILE = "queries.yaml"
_READY_TIMEOUT_S = 10.0


def available() -> bool:
    """Is Debian's exporter installed (binary on PATH and its example queries present)?"""
    return shutil.which(BINARY) is not None and _example_queries() is not None


def _example_queries() -> Path | None:
    for path in (EXAMPLE_QUERIES, EXAMPLE_QUERIES.with_name(EXAMPLE_QUERIES.name + ".gz")):
        if path.is_file():
            return path
    return None


def _state_keys(which: str) -> tuple[str, str]:
    """sandbox.json keys (port, pid) of one node's exporter."""
    prefix = "postgres_exporter" if which == "primary" else "replica_exporter"
    return f"{prefix}_port", f"{prefix}_pid"


def url(sb: Sandbox, which: str) -> str | None:
    """The exporter's scrape URL for `which` node, None when the sandbox has none."""
    port = sb.state.get(_state_keys(which)[0])
    return f"http://127.0.0.1:{port}/metrics" if port else None


def urls(sb: Sandbox) -> list[str]:
    """Every exporter scrape URL of this sandbox (what its Prometheus scrapes)."""
    return [u for which in pgreplica.NODES if (u := url(sb, which))]


def plan(sb: Sandbox) -> None:
    """Pick the exporters' ports at build time (one per node), when the exporter exists."""
    if not available():
        return
    for which in pgreplica.NODES:
        if which == "replica" and not pgreplica.configured(sb):
            continue
        sb.state[_state_keys(which)[0]] = pgcluster.free_port()
    sb.save()


def _queries_file(sb: Sandbox) -> Path:
    """Debian's example queries, copied (and unpacked) into the sandbox directory."""
    target = sb.root / DIR / QUERIES_FILE
    if not target.is_file():
        source = _example_queries()
        if source is None:
            raise SandboxError(f"{EXAMPLE_QUERIES} is missing: reinstall {BINARY}")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" \
            else source.read_bytes()
        target.write_bytes(data)
    return target


def _marker(port: int) -> str:
    return f"--web.listen-address=127.0.0.1:{port}"


def pid(sb: Sandbox, which: str) -> int | None:
    port_key, pid_key = _state_keys(which)
    value, port = sb.state.get(pid_key), sb.state.get(port_key)
    return int(value) if port and processes.alive(value, _marker(port)) else None


def start(sb: Sandbox, which: str) -> None:
    """Start one node's exporter (no-op when not planned or already running)."""
    port_key, pid_key = _state_keys(which)
    port = sb.state.get(port_key)
    if not port or pid(sb, which) is not None:
        return
    node = sb.cluster if which == "primary" else pgreplica.node(sb)
    dsn = (f"host={node.run_dir} port={node.port} user={pgcluster.SUPERUSER} "
           f"dbname={pgcluster.APP_DB} sslmode=disable connect_timeout=5")
    env = {"PATH": "/usr/bin:/bin", "DATA_SOURCE_NAME": dsn}
    proc = processes.spawn([shutil.which(BINARY) or BINARY, _marker(port),
                            f"--extend.query-path={_queries_file(sb)}", "--log.level=warn"],
                           sb.logs_dir / f"postgres_exporter-{which}.log", env=env)
    sb.state[pid_key] = proc.pid
    sb.save()
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SandboxError(f"postgres_exporter for the {which} did not answer on port {port}; "
                       f"see {sb.logs_dir / f'postgres_exporter-{which}.log'}")


def start_all(sb: Sandbox) -> None:
    for which in pgreplica.NODES:
        start(sb, which)


def stop_all(sb: Sandbox) -> None:
    for which in pgreplica.NODES:
        port_key, pid_key = _state_keys(which)
        port = sb.state.get(port_key)
        if port:
            processes.terminate(sb.state.get(pid_key), _marker(port))
        sb.state[pid_key] = None
    sb.save()


def status_line(sb: Sandbox) -> str:
    """`sandbox status`: where each node's exporter answers."""
    if not urls(sb):
        return "not installed"
    parts = [f"{which} {'running' if pid(sb, which) else 'stopped'} {url(sb, which)}"
             for which in pgreplica.NODES if url(sb, which)]
    return "; ".join(parts)
