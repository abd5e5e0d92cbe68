"""Issues #5 and #13: a dry run changes nothing. After each incident playbook, and each
planned-change runbook with the parameters of a real change, with execute=False the sandbox's
processes, its files, the database's non-diagnostic sessions and its catalogue (tables, their
files, columns, manual vacuums and analyzes, migrations applied) are as before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from drill_helpers import findings_of

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
# The planned changes, each asked for a change it would make (all but one of them real on the
# healthy sandbox), with execute=False.
CHANGES = {"database-maintenance": ["-p", "schedule", "monthly"],
           "schema-migration": ["-p", "direction", "up"],
           "patch-upgrade": ["-p", "target_version", "2.14.1"],
           "scale-out": ["-p", "direction", "out"],
           "read-replica": ["-p", "data_dir", "/tmp/fraiseql-rb-dry-run-replica",
                            "-p", "port", "54999"]}
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
        catalogue = conn.execute(CATALOGUE_SQL).fetchall()
    return {"server_pid": server.pid(sb), "postgres_pid": sb.cluster.pid(),
            "faults": sb.faults(), "files": files, "other_sessions": sessions,
            "catalogue": catalogue, "server_release": sb.state.get("server_release"),
            "state": {k: v for k, v in sb.state.items() if k.endswith("_pid")
                      or k in ("instances", "server_release")}}


# What a migration, a VACUUM FULL or REINDEX (new files), a plain VACUUM or ANALYZE (their
# counters) would change; autovacuum's own counters are left out, it runs when it likes.
CATALOGUE_SQL = """
SELECT c.oid::regclass::text, c.relkind::text, c.relfilenode,
       coalesce(s.vacuum_count, 0), coalesce(s.analyze_count, 0),
       (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                          ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
           AND NOT a.attisdropped)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND n.nspname NOT LIKE 'pg_temp%'
 ORDER BY 1
"""


@pytest.mark.parametrize("playbook", INCIDENTS)
def test_a_dry_run_changes_nothing(healthy_sandbox, playbook):
    before = snapshot(healthy_sandbox.root)
    result = healthy_sandbox.run(playbook, *FAST.get(playbook, []))
    assert result.returncode in (0, 1, 2), result.stdout + result.stderr
    after = snapshot(healthy_sandbox.root)
    assert after == before


@pytest.mark.parametrize("runbook", sorted(CHANGES))
def test_a_planned_change_without_execute_changes_nothing(healthy_sandbox, runbook):
    before = snapshot(healthy_sandbox.root)
    result = healthy_sandbox.run(runbook, *CHANGES[runbook])
    assert result.returncode in (0, 1, 2), result.stdout + result.stderr
    assert not Path("/tmp/fraiseql-rb-dry-run-replica").exists()
    after = snapshot(healthy_sandbox.root)
    assert after == before
    data = findings_of(result)
    assert data["actions"] and not any(a["executed"] for a in data["actions"])
    record = [f for f in data["findings"] if f["check"] == "change.record"]
    assert record and record[-1]["evidence"]["outcome"] in ("dry-run", "nothing-to-do")
