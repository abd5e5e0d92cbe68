"""Drills for the memory-leak and connection-pool-exhaustion playbooks: inject the sandbox's
real fault, run the playbook through the CLI with an incident id, assert the diagnosis; a
healthy sandbox raises no false alarm; the pool's termination runs only with execute=True and
confirm=<target>, and a dry run leaves the stand-in's sessions exactly as they were. At the end,
the decision rules on evidence the sandbox has no fault for (no PostgreSQL involved there)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from drill_helpers import by_check, diagnosis_of, findings_of

from fraiseql_rb.core import diagnosis, inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import FindingsLog, Status
from fraiseql_rb.incidents import connection_pool_exhaustion as pool
from fraiseql_rb.incidents import memory_leak
from fraiseql_rb.sandbox import cluster as pgcluster
from fraiseql_rb.sandbox import manager
from fraiseql_rb.targets import commands, service

drill = pytest.mark.drill
STANDIN = "fraiseql-standin"  # the stand-in's application_name (sandbox/faults.py)
IDLE = ("idle in transaction", "idle in transaction (aborted)")


def need_fault(name: str) -> None:
    if name not in manager.FAULTS:
        pytest.skip(f"the sandbox has no `{name}` fault yet (fraiseql_rb/sandbox/faults.py)")


def standin_sessions(sandbox) -> set[tuple[Any, ...]]:
    """The stand-in's sessions as PostgreSQL lists them (ours have another application_name)."""
    sb = manager.Sandbox.open(sandbox.root)
    with sb.cluster.connect(pgcluster.APP_DB) as conn:
        rows = conn.execute("SELECT pid, backend_start, xact_start, state FROM pg_stat_activity "
                            "WHERE application_name = %s", (STANDIN,)).fetchall()
    return set(rows)


def idle_pids(sessions: set[tuple[Any, ...]]) -> list[int]:
    return sorted(pid for pid, _, _, state in sessions if state in IDLE)


def wait_pool_returned(sandbox, timeout_s: float = 15.0) -> None:
    """After healing a pool-exhaustion whose sessions we terminated: wait until the stand-in has
    really handed its dead connections back (pool_active below pool_max). The heal itself only
    waits for the sessions to leave pg_stat_activity, which they already have, so an inject
    right after it can land before the stand-in saw the flag go and find nothing to leak."""
    ctx = RunContext.adhoc("test", inventory.load_target("sandbox", sandbox.inventory))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        detail = service.admin_detail(ctx)
        if detail["pool_active"] < detail["pool_max"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"the stand-in still holds its pool after {timeout_s:g} s: {detail}")


def present(sandbox, pids: list[int]) -> list[int]:
    sb = manager.Sandbox.open(sandbox.root)
    with sb.cluster.connect(pgcluster.APP_DB) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)",
                            (pids,)).fetchall()
    return sorted(r[0] for r in rows)


# -- memory-leak ---------------------------------------------------------------------------------

@drill
def test_memory_leak_fault_is_steady_growth(healthy_sandbox):
    need_fault("memory-leak")
    healthy_sandbox.fault("memory-leak")
    try:
        result = healthy_sandbox.run("memory-leak", "--incident-id", "DRILL-ml-leak",
                                     "-p", "window_s", "12")
    finally:
        healthy_sandbox.heal("memory-leak")
    assert result.returncode in (1, 2), result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-ml-leak"
    diagnosis = diagnosis_of(data)
    # 2 MiB kept per request, nothing in the database or the cache: growth of the process itself
    assert diagnosis["evidence"]["root_cause"] == "steady_growth", diagnosis
    assert diagnosis["status"] in ("warning", "critical")
    checks = by_check(data)
    assert checks["memory.process"]["evidence"]["source"] == "proc"
    trend = checks["memory.trend"]["evidence"]
    assert trend["growing"] is True and trend["growth_per_hour_bytes"] > 0
    assert trend["r2"] > 0.9
    assert checks["memory.connections"]["status"] == "ok"
    assert checks["memory.cache"]["evidence"]["growing"] is False
    assert checks["manual.memory_profile"]["evidence"]["instead_of"] == "pprof (Go only)"
    # §4.1 step 5: a critical trend records the restart, never runs it without execute
    assert all(a["executed"] is False for a in data["actions"])
    if checks["memory.trend"]["status"] == "critical":
        assert [a["action"] for a in data["actions"]] == ["restart_service"]


@drill
def test_memory_leak_on_a_healthy_sandbox_is_no_leak(healthy_sandbox):
    result = healthy_sandbox.run("memory-leak", "--incident-id", "DRILL-ml-ok",
                                 "-p", "window_s", "8")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-ml-ok"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "no_leak"
    assert by_check(data)["memory.trend"]["evidence"]["growing"] is False
    assert data["actions"] == []


# -- connection-pool-exhaustion ------------------------------------------------------------------

@drill
def test_pool_exhaustion_dry_run_is_connection_leak_and_changes_nothing(healthy_sandbox):
    need_fault("pool-exhaustion")
    healthy_sandbox.fault("pool-exhaustion")
    try:
        before = standin_sessions(healthy_sandbox)
        result = healthy_sandbox.run("connection-pool-exhaustion", "--incident-id",
                                     "DRILL-pool-dry", "-p", "idle_threshold_s", "1",
                                     "-p", "observe_s", "2")
        after = standin_sessions(healthy_sandbox)
    finally:
        healthy_sandbox.heal("pool-exhaustion")
    assert result.returncode == 2, result.stdout + result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-pool-dry"
    assert data["parameters"]["execute"] is False
    diagnosis = diagnosis_of(data)
    # the stand-in's own pool connections, left idle in transaction, filling the pool
    assert diagnosis["evidence"]["root_cause"] == "connection_leak", diagnosis
    assert diagnosis["status"] == "critical"
    leaked = idle_pids(before)
    assert len(leaked) == 10
    checks = by_check(data)
    assert sorted(checks["pool.idle_in_transaction"]["evidence"]["server_pids"]) == leaked
    assert checks["pool.gauges"]["evidence"]["exhausted"] is True
    [action] = data["actions"]
    assert action["action"] == "terminate_idle_in_transaction"
    assert action["executed"] is False and action["result"] is None
    assert "pg_terminate_backend" in action["command"]
    assert all(str(pid) in action["command"] for pid in leaked)
    assert checks["pool.terminate"]["evidence"]["refused_because"] == "execute=False"
    assert after == before  # a dry run leaves every session of the stand-in as it was


@drill
def test_pool_execute_without_confirm_terminates_nothing(healthy_sandbox):
    need_fault("pool-exhaustion")
    healthy_sandbox.fault("pool-exhaustion")
    try:
        before = standin_sessions(healthy_sandbox)
        result = healthy_sandbox.run("connection-pool-exhaustion", "--incident-id",
                                     "DRILL-pool-noconfirm", "-p", "execute", "true",
                                     "-p", "idle_threshold_s", "1", "-p", "observe_s", "2")
        after = standin_sessions(healthy_sandbox)
    finally:
        healthy_sandbox.heal("pool-exhaustion")
    data = findings_of(result)
    assert diagnosis_of(data)["evidence"]["root_cause"] == "connection_leak"
    assert [a["executed"] for a in data["actions"]] == [False]
    assert "confirm" in by_check(data)["pool.terminate"]["evidence"]["refused_because"]
    assert after == before


@drill
def test_pool_execute_with_confirm_terminates_the_sessions(healthy_sandbox):
    need_fault("pool-exhaustion")
    healthy_sandbox.fault("pool-exhaustion")
    try:
        leaked = idle_pids(standin_sessions(healthy_sandbox))
        result = healthy_sandbox.run("connection-pool-exhaustion", "--incident-id",
                                     "DRILL-pool-exec", "-p", "execute", "true",
                                     "-p", "confirm", "sandbox", "-p", "idle_threshold_s", "1",
                                     "-p", "observe_s", "2")
        remaining = present(healthy_sandbox, leaked)
    finally:
        healthy_sandbox.heal("pool-exhaustion")
        wait_pool_returned(healthy_sandbox)
    assert len(leaked) == 10
    data = findings_of(result)
    assert data["parameters"]["confirm"] == "sandbox"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "connection_leak"
    [action] = data["actions"]
    assert action["executed"] is True, action
    assert action["result"]["terminated"] == leaked
    assert action["result"]["still_present"] == []
    terminate = by_check(data)["pool.terminate"]
    assert remaining == []  # gone from pg_stat_activity
    # PostgreSQL's slots are free, but the stand-in (like a real leak) never returns the dead
    # connections: its pool still counts them, and the step says to restart
    assert terminate["evidence"]["pool_active_after"] == terminate["evidence"]["pool_max_after"]
    assert terminate["status"] == "warning" and "restart" in terminate["remediation"]


@drill
def test_pool_without_a_privileged_connection_cannot_terminate(healthy_sandbox):
    need_fault("pool-exhaustion")
    plain = healthy_sandbox.inventory_without("admin_database_url",
                                              "admin_database_password_file")
    healthy_sandbox.fault("pool-exhaustion")
    try:
        leaked = idle_pids(standin_sessions(healthy_sandbox))
        result = healthy_sandbox.run("connection-pool-exhaustion", "--inventory", str(plain),
                                     "--incident-id", "DRILL-pool-noadmin", "-p", "execute",
                                     "true", "-p", "confirm", "sandbox",
                                     "-p", "idle_threshold_s", "1", "-p", "observe_s", "2")
        remaining = present(healthy_sandbox, leaked)
    finally:
        healthy_sandbox.heal("pool-exhaustion")
    data = findings_of(result)
    # the application role sees its own sessions: the leak is still diagnosed
    assert diagnosis_of(data)["evidence"]["root_cause"] == "connection_leak"
    terminate = by_check(data)["pool.terminate"]
    assert terminate["status"] == "unknown" and "admin_database_url" in terminate["summary"]
    [action] = data["actions"]
    assert action["executed"] is False
    assert all(str(pid) in action["command"] for pid in leaked)
    assert remaining == leaked


@drill
def test_pool_exhaustion_with_defaults_is_a_leak_at_any_age(healthy_sandbox):
    """Run right after the leak, with the default idle threshold (60 s): the pool's 10 of 10
    connections idle in transaction are a leak already, never `pool_too_small`."""
    need_fault("pool-exhaustion")
    healthy_sandbox.fault("pool-exhaustion")
    try:
        result = healthy_sandbox.run("connection-pool-exhaustion", "--incident-id",
                                     "DRILL-pool-defaults")
    finally:
        healthy_sandbox.heal("pool-exhaustion")
    assert result.returncode == 2, result.stdout + result.stderr
    data = findings_of(result)
    diagnosis = diagnosis_of(data)
    assert diagnosis["evidence"]["root_cause"] == "connection_leak", diagnosis
    assert diagnosis["status"] == "critical"
    assert "pool_max_size" not in diagnosis["remediation"]
    evidence = by_check(data)["pool.idle_in_transaction"]["evidence"]
    assert evidence["server_idle_second"] == 10 and evidence["idle_threshold_s"] == 60


@drill
def test_pool_on_a_healthy_sandbox_is_none(healthy_sandbox):
    result = healthy_sandbox.run("connection-pool-exhaustion", "--incident-id", "DRILL-pool-ok",
                                     "-p", "observe_s", "2")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    data = findings_of(result)
    assert diagnosis_of(data)["evidence"]["root_cause"] == "none"
    assert data["actions"] == []


@drill
def test_another_clients_idle_transaction_is_idle_in_transaction(healthy_sandbox):
    """A superuser session left idle in transaction (as a forgotten psql would be): not the
    server's own, so `idle_in_transaction`, and its pid is what the dry run would terminate."""
    target = inventory.load_target("sandbox", healthy_sandbox.inventory)
    with psycopg.connect(target.database_url("admin_database"), application_name="psql",
                         autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1")
        pid = other.info.backend_pid
        result = healthy_sandbox.run("connection-pool-exhaustion", "--incident-id",
                                     "DRILL-pool-iit", "-p", "idle_threshold_s", "1",
                                     "-p", "observe_s", "1")
        still_there = present(healthy_sandbox, [pid])
    assert result.returncode == 1, result.stdout + result.stderr  # nothing waits: a warning
    data = findings_of(result)
    assert diagnosis_of(data)["evidence"]["root_cause"] == "idle_in_transaction"
    evidence = by_check(data)["pool.idle_in_transaction"]["evidence"]
    assert pid in evidence["pids"] and pid not in evidence["server_pids"]
    [action] = data["actions"]
    assert action["executed"] is False and str(pid) in action["command"]
    assert still_there == [pid]


# -- the decision rules on evidence the sandbox cannot produce -------------------------------

def _ctx(**findings: tuple[Status, dict[str, Any]]) -> RunContext:
    log = FindingsLog("test", "none")
    ctx = RunContext(runbook="test", target_name="none", log=log)
    for check_name, (status, evidence) in findings.items():
        ctx.record(check_name.replace("__", "."), status, check_name, evidence)
    return ctx


def _iit(first: int, second: int, over: int, server_over: int) -> dict[str, Any]:
    return {"over_threshold": over, "server_over_threshold": server_over,
            "server_idle_first": first, "server_idle_second": second, "observe_s": 5,
            "idle_threshold_s": 60, "server_role": "app", "pids": list(range(over)),
            "server_pids": list(range(server_over))}


def _gauges(active: int, pool_max: int, waiting: int) -> dict[str, Any]:
    return {"pool_active": active, "pool_max": pool_max, "pool_waiting": waiting,
            "exhausted": active >= pool_max and waiting > 0}


def _top(ctx: RunContext, module: Any) -> str:
    ranked = sorted(module.candidates(ctx), key=lambda c: c.score, reverse=True)
    return ranked[0].code if ranked and ranked[0].score >= 0.5 else module.VOCABULARY.fallback


@pytest.mark.parametrize(("iit", "gauges", "expected"), [
    (_iit(2, 4, 4, 4), _gauges(6, 20, 0), "connection_leak"),  # growing, counted by the pool
    (_iit(3, 3, 3, 3), _gauges(5, 20, 0), "idle_in_transaction"),  # stable below the pool size
    (_iit(4, 6, 6, 6), _gauges(2, 20, 0), "idle_in_transaction"),  # not the pool's: outside it
    (_iit(0, 0, 0, 0), _gauges(20, 20, 7), "pool_too_small"),  # busy with real work
    (_iit(0, 0, 0, 0), _gauges(3, 20, 0), "none"),
])
def test_pool_rules(iit, gauges, expected):
    ctx = _ctx(pool__idle_in_transaction=(Status.WARNING, iit),
               pool__long_running=(Status.OK, {"count": 0, "long_query_s": 30}),
               pool__gauges=(Status.OK, gauges))
    assert _top(ctx, pool) == expected


def test_pool_long_statements_beat_a_small_pool():
    ctx = _ctx(pool__idle_in_transaction=(Status.OK, _iit(0, 0, 0, 0)),
               pool__long_running=(Status.WARNING, {"count": 3, "long_query_s": 30,
                                                    "longest_s": 95.0, "pids": [1, 2, 3]}),
               pool__gauges=(Status.CRITICAL, _gauges(20, 20, 4)))
    assert _top(ctx, pool) == "long_running_queries"
    assert pool.verdict_status(ctx) is Status.CRITICAL


def test_pool_full_of_young_idle_transactions_is_a_leak():
    """10 of 10 pool connections idle in transaction, all younger than the threshold."""
    iit = _iit(10, 10, 0, 0) | {"server_idle_second": 10}
    ctx = _ctx(pool__idle_in_transaction=(Status.OK, iit),
               pool__long_running=(Status.OK, {"count": 0, "long_query_s": 30}),
               pool__gauges=(Status.CRITICAL, _gauges(10, 10, 3)))
    assert _top(ctx, pool) == "connection_leak"
    assert pool.verdict_status(ctx) is Status.CRITICAL


def test_pool_slots_held_by_other_clients():
    conns = {"connections": 96, "available": 97, "outside_pool": 92, "server_connections": 3,
             "server_role": "app", "holders": [{"user": "batch", "application": "job",
                                                "state": "idle", "connections": 92}]}
    ctx = _ctx(pool__connections=(Status.CRITICAL, conns),
               pool__idle_in_transaction=(Status.OK, _iit(0, 0, 0, 0)),
               pool__long_running=(Status.OK, {"count": 0, "long_query_s": 30}),
               pool__gauges=(Status.OK, _gauges(3, 10, 0)))
    assert _top(ctx, pool) == "connections_outside_pool"
    assert pool.verdict_status(ctx) is Status.CRITICAL


def test_a_partial_view_that_finds_nothing_is_unknown():
    hidden = {"not_visible": 18}
    ctx = _ctx(pool__idle_in_transaction=(Status.UNKNOWN, _iit(0, 0, 0, 0) | hidden),
               pool__long_running=(Status.UNKNOWN, {"count": 0, "long_query_s": 30} | hidden),
               pool__gauges=(Status.OK, _gauges(3, 10, 0)))
    assert pool.verdict_status(ctx) is Status.UNKNOWN


@pytest.mark.parametrize("vocabulary", [pool.VOCABULARY, diagnosis.Vocabulary(
    "x", {"none": "nothing", "cause": "fix it"}, fallback="none")])
def test_a_critical_finding_never_ends_in_none(vocabulary):
    """The general rule (core/diagnosis.py): a healthy verdict over a critical finding would
    contradict it; with an `unexplained` code that code, critical, else critical anyway."""
    ctx = _ctx(pool__connections=(Status.CRITICAL, {}))
    found = diagnosis.conclude(ctx, vocabulary, [])
    assert found.status is Status.CRITICAL
    assert "nothing wrong" not in found.summary and "pool.connections" in found.summary
    if vocabulary.unexplained:
        assert found.evidence["root_cause"] == vocabulary.unexplained != "none"
    else:  # nor does its next step say there is nothing to do
        assert found.remediation != vocabulary.remediation["none"], found.remediation
        assert "pool.connections" in found.remediation


def test_pool_without_pg_stat_activity_is_unknown():
    ctx = _ctx(pool__idle_in_transaction=(Status.UNKNOWN, {}),
               pool__long_running=(Status.UNKNOWN, {}))
    assert pool.verdict_status(ctx) is Status.UNKNOWN
    assert _top(ctx, pool) == "none"


def test_terminate_statement_is_the_sql_with_its_values():
    sql = pool.terminate_statement([12, 34], 60)
    assert "ARRAY[12, 34]::int[]" in sql and "secs => 60.0" in sql
    assert sql.rstrip().endswith(";") and "pg_terminate_backend(pid)" in sql


@pytest.mark.parametrize(("output", "pid"), [
    ("● fraiseql.service\n     Active: active (running)\n   Main PID: 4242 (fraiseql)", 4242),
    ("MainPID=77\n", 77),
    ("MainPID=0\n", None),  # systemd: not running
    ("4321\n", 4321),  # docker inspect -f '{{.State.Pid}}'
    ('  "State": {\n    "Status": "running",\n    "Pid": 919,', 919),
    ("12 13\n", None),  # pidof with two processes: ambiguous
    ("fraiseql-server-7d9 1/1 Running", None),  # kubectl: no host pid
])
def test_parse_pid(output, pid):
    assert commands.parse_pid(output) == pid


def _memory_ctx(growing: bool, **causes: tuple[Status, dict[str, Any]]) -> RunContext:
    trend = {"growing": growing, "growth_per_hour_mb": 900.0 if growing else 0.1, "r2": 0.99,
             "hours_to_limit": 7.0}
    return _ctx(memory__trend=(Status.WARNING if growing else Status.OK, trend), **causes)


@pytest.mark.parametrize(("growing", "causes", "expected"), [
    (True, {}, "steady_growth"),
    (True, {"memory__cache": (Status.WARNING, {"growing": True, "first": 10, "last": 900})},
     "cache_growth"),
    (True, {"memory__connections": (Status.WARNING, {"growing": ["app_connections"]})},
     "unclosed_connections"),
    (True, {"memory__long_transactions": (Status.WARNING, {"count": 2, "pids": [5, 6]})},
     "long_running_transactions"),
    (True, {"memory__large_results": (Status.WARNING, {"large": 1})}, "large_query_results"),
    (False, {"memory__cache": (Status.WARNING, {"growing": True})}, "no_leak"),
])
def test_memory_rules(growing, causes, expected):
    ctx = _memory_ctx(growing, **causes)
    assert _top(ctx, memory_leak) == expected


def test_memory_without_rss_is_unknown_not_healthy():
    ctx = _ctx(memory__trend=(Status.UNKNOWN, {"rss_samples": 0}))
    assert memory_leak.verdict_status(ctx) is Status.UNKNOWN
    [only] = memory_leak.candidates(ctx)
    assert only.code == "no_leak" and "neither confirmed nor ruled out" in only.reason


def test_trend_needs_growth_above_noise():
    import pandas as pd

    index = pd.date_range("2026-01-01", periods=11, freq="2s", tz="UTC")
    creeping = pd.Series([53_000_000 + 4_000 * i for i in range(11)], index=index)
    leaking = pd.Series([53_000_000 + 17_000_000 * i for i in range(11)], index=index)
    assert not memory_leak.rss_trend_of(creeping, 50).growing  # 7 MB/h of allocator drift
    fast = memory_leak.rss_trend_of(leaking, 50)
    assert fast.growing and fast.per_hour > 0
