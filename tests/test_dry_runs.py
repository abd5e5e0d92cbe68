"""Issue #5: a dry run changes nothing. After each incident playbook with execute=False the
sandbox's processes, its files and the database's non-diagnostic sessions are as before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fraiseql_rb.core.runbooks import discover
from fraiseql_rb.sandbox import server
from fraiseql_rb.sandbox.state import Sandbox

pytestmark = pytest.mark.drill
# Short sampling windows: the point is what the run leaves behind, not what it measures.
FAST = {"high-error-rate": ["-p", "window_s", "2"], "high-query-latency": ["-p", "window_s", "2"],
        "memory-leak": ["-p", "window_s", "2", "-p", "interval_s", "1"],
        "auth-failures": ["-p", "rate_sample_s", "1"],
        "connection-pool-exhaustion": ["-p", "observe_s", "1"]}
INCIDENTS = sorted(name for name, rb in discover().items() if rb.section == "incidents")
# Files that change on their own while the sandbox runs.
VOLATILE = ("logs", "pgdata", "replica", "exporter", "prometheus", "wal_archive", "run", "redis",
            "sandbox.json")


def snapshot(root: Path) -> dict[str, object]:
    sb = Sandbox.open(root)
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in VOLATILE:
            files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    with sb.cluster.connect("fraiseql") as conn:
        sessions = {row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = 'fraiseql' "
            "AND application_name NOT IN ('fraiseql-rb', '') AND pid <> pg_backend_pid() "
            "AND application_name NOT LIKE 'fraiseql-standin%'")}
    return {"server_pid": server.pid(sb), "postgres_pid": sb.cluster.pid(),
            "faults": sb.faults(), "files": files, "other_sessions": sessions,
            "state": {k: v for k, v in sb.state.items() if k.endswith("_pid")}}


@pytest.mark.parametrize("playbook", INCIDENTS)
def test_a_dry_run_changes_nothing(healthy_sandbox, playbook):
    before = snapshot(healthy_sandbox.root)
    result = healthy_sandbox.run(playbook, *FAST.get(playbook, []))
    assert result.returncode in (0, 1, 2), result.stdout + result.stderr
    after = snapshot(healthy_sandbox.root)
    assert after == before
