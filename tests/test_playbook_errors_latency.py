"""Drills for the high-error-rate and high-query-latency playbooks: inject a real fault into the
sandbox, run the playbook through the CLI with an incident id, assert the diagnosis; a healthy
sandbox raises no false alarm; EXPLAIN without execute=True never runs the query.

Order matters for time and for truth: the healthy runs come first (a fault injected a moment
ago is still, rightly, in Prometheus' last minute), and db-down, which disturbs the most, last.
"""

from __future__ import annotations

import json
import time
import tomllib
import uuid
from pathlib import Path

import psycopg
import pytest
from drill_helpers import by_check, diagnosis_of

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.incidents import high_query_latency
from fraiseql_rb.sandbox import cluster as pgcluster
from fraiseql_rb.sandbox import faults, holder, manager
from fraiseql_rb.targets import metrics
from fraiseql_rb.targets.prometheus import PrometheusClient

drill = pytest.mark.drill
WINDOW = ("-p", "window_s", "10")


def findings_of(result) -> dict:
    """The run's findings.json, which must be strict JSON (no NaN or Infinity)."""
    assert result.stdout.strip(), result.stderr
    artifact = Path(result.stdout.strip().splitlines()[-1])
    return json.loads((artifact / "findings.json").read_text(), parse_constant=_not_json)


def _not_json(token: str) -> None:
    raise AssertionError(f"findings.json holds {token}, which is not JSON")


def explain(result) -> str:
    data = findings_of(result)
    checks = {f["check"]: f"{f['status']}: {f['summary']}" for f in data["findings"]}
    return json.dumps({"rc": result.returncode, "status": data["status"], "checks": checks,
                       "stderr": result.stderr[-2000:]}, indent=1, ensure_ascii=False)


def has_fault(name: str) -> bool:
    return name in faults.FAULTS


def app_db_superuser(sandbox) -> psycopg.Connection:
    """A superuser session on the fraiseql database (sees every session and statement)."""
    return manager.Sandbox.open(sandbox.root).cluster.connect(pgcluster.APP_DB)


def wait_until_quiet(sandbox, timeout_s: float = 60) -> None:
    """The playbook reads Prometheus over the last window_s (at least four scrapes): errors
    left by an earlier drill in this session would be reported, rightly. Wait until the last
    half minute holds none."""
    url = tomllib.loads(sandbox.inventory.read_text())["targets"]["sandbox"].get(
        "prometheus_url")
    if url is None:
        return
    deadline = time.monotonic() + timeout_s
    with PrometheusClient(url) as client:
        while time.monotonic() < deadline:
            found = client.query('sum(increase(fraiseql_graphql_queries_error{job="fraiseql"}'
                                 '[30s]))')
            if not found or found[0].value == 0:
                return
            time.sleep(3)


def context_for(sandbox, inventory_path: Path | None = None, *,
                execute: bool = False) -> RunContext:
    target = inventory.load_target("sandbox", inventory_path or sandbox.inventory)
    return RunContext.adhoc("high-query-latency", target, execute=execute)


# -- healthy: no false alarm -----------------------------------------------------------------

@drill
def test_high_error_rate_on_a_healthy_sandbox_is_none(healthy_sandbox):
    wait_until_quiet(healthy_sandbox)
    result = healthy_sandbox.run("high-error-rate", "--incident-id", "DRILL-her-ok", *WINDOW)
    assert result.returncode in (0, 1), explain(result)
    data = findings_of(result)
    assert data["incident_id"] == "DRILL-her-ok"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "none", explain(result)
    checks = by_check(data)
    for step in ("errors.isolate", "errors.mitigate", "errors.root_cause", "errors.prevention"):
        assert checks[step]["status"] == "info"
    assert data["actions"] == []


@drill
def test_high_query_latency_on_a_healthy_sandbox_is_none_and_explain_only_plans(
        healthy_sandbox):
    marker = f"drill-explain-{uuid.uuid4().hex[:12]}"
    query = f"SELECT * FROM tb_user WHERE email = '{marker}'"
    result = healthy_sandbox.run("high-query-latency", "--incident-id", "DRILL-hql-ok",
                                 *WINDOW, "-p", "explain_query", query)
    assert result.returncode in (0, 1), explain(result)
    data = findings_of(result)
    assert diagnosis_of(data)["evidence"]["root_cause"] == "none", explain(result)
    plan = by_check(data)["latency.explain"]
    assert plan["evidence"]["analyzed"] is False
    assert plan["evidence"]["plan"] and "tb_user" in plan["evidence"]["plan"][0]
    assert not any("actual time" in line for line in plan["evidence"]["plan"])
    assert [(a["action"], a["executed"]) for a in data["actions"]] == [
        ("explain_analyze", False)]
    assert data["actions"][0]["command"] == f"EXPLAIN (ANALYZE, BUFFERS) {query}"
    # PostgreSQL saw the plain EXPLAIN and never an EXPLAIN ANALYZE of this query
    with app_db_superuser(healthy_sandbox) as conn:
        seen = [r[0] for r in conn.execute(
            "SELECT query FROM pg_stat_statements WHERE query LIKE %s", (f"%{marker}%",))]
    assert seen and all(not q.upper().startswith("EXPLAIN (ANALYZE") for q in seen), seen


def test_explain_refuses_bad_input_and_runs_analyze_only_with_execute(sandbox):
    """The brief's example (`id = 'x'` on a uuid column) is refused by PostgreSQL: an unknown
    finding with the reason, the action recorded as not executed. Two statements are refused
    too. With execute=True the query really runs (actual times in the plan)."""
    ctx = context_for(sandbox)
    found = high_query_latency.explain(ctx, "SELECT * FROM tb_user WHERE id = 'x'")
    assert found.status is Status.UNKNOWN and "uuid" in found.summary
    found = high_query_latency.explain(ctx, "SELECT 1; SELECT 2")
    assert found.status is Status.UNKNOWN and "multiple commands" in found.summary
    found = high_query_latency.explain(ctx, "SELECT data FROM v_user LIMIT $1")
    assert found.status is Status.UNKNOWN and "placeholders" in found.summary
    assert [a.executed for a in ctx.log.actions] == [False, False, False]
    # planned only, read from the JSON plan; an expensive plan names its sequential scans
    found = high_query_latency.explain(ctx, "SELECT count(*) FROM tb_post", cost_high=1)
    assert found.status is Status.WARNING
    assert found.evidence["statement"] == "EXPLAIN (FORMAT JSON) SELECT count(*) FROM tb_post"
    assert found.evidence["plan"][0].startswith("Aggregate  (cost=")
    assert found.evidence["node_types"] == ["Aggregate", "Seq Scan"]
    assert found.evidence["seq_scans"][0]["relation"] == "tb_post"
    assert found.evidence["execution_ms"] is None and found.evidence["actual_rows"] is None
    assert "sequential scans here: tb_post" in found.remediation

    ctx = context_for(sandbox, execute=True)
    found = high_query_latency.explain(ctx, "SELECT count(*) FROM tb_post;")
    assert found.evidence["analyzed"] is True
    assert found.evidence["statement"] == ("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                                           "SELECT count(*) FROM tb_post")
    assert any("actual time" in line for line in found.evidence["plan"])
    assert found.evidence["plan"][-1].startswith("Execution Time: ")
    assert found.evidence["execution_ms"] is not None and found.evidence["actual_rows"] == 1
    assert found.evidence["seq_scans"][0]["rows_read"] >= 600
    assert [(a.action, a.executed) for a in ctx.log.actions] == [("explain_analyze", True)]
    # ANALYZE of a write runs in the read-only session, which refuses it
    found = high_query_latency.explain(ctx, "DELETE FROM tb_post")
    assert found.status is Status.UNKNOWN and "read-only transaction" in found.summary
    assert ctx.log.actions[-1].executed is False


@drill
def test_another_applications_slow_statement_is_not_an_incident(healthy_sandbox):
    """One pg_sleep of another client while FraiseQL answers in milliseconds: at most a
    warning, the diagnosis no more severe than the findings behind it (issue 11 §2)."""
    import threading

    sleeper = app_db_superuser(healthy_sandbox)
    sleeper.execute("SET application_name = 'psql'")
    pid = sleeper.info.backend_pid
    thread = threading.Thread(target=lambda: _quietly(sleeper, "SELECT pg_sleep(60)"))
    thread.start()
    try:
        result = healthy_sandbox.run("high-query-latency", "--incident-id", "DRILL-hql-other",
                                     *WINDOW)
    finally:
        with app_db_superuser(healthy_sandbox) as conn:
            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(10)
        sleeper.close()
    data = findings_of(result)
    assert by_check(data)["latency.percentiles"]["status"] == "ok", explain(result)
    diag = diagnosis_of(data)
    assert diag["status"] in ("ok", "warning"), explain(result)
    assert data["status"] != "critical" and result.returncode in (0, 1), explain(result)


def _quietly(conn: psycopg.Connection, statement: str) -> None:
    import contextlib

    with contextlib.suppress(psycopg.Error):  # cancelled at the end of the test
        conn.execute(statement)


# -- latency drills --------------------------------------------------------------------------

@drill
def test_slow_query_is_database_slow_query(healthy_sandbox):
    if not has_fault("slow-query"):
        pytest.skip("the slow-query fault does not exist yet (fraiseql_rb/sandbox/faults.py)")
    healthy_sandbox.fault("slow-query")
    try:
        result = healthy_sandbox.run("high-query-latency", "--incident-id", "DRILL-hql-slow",
                                     *WINDOW)
    finally:
        healthy_sandbox.heal("slow-query")
    assert result.returncode in (1, 2), explain(result)
    data = findings_of(result)
    diag = diagnosis_of(data)
    assert diag["evidence"]["root_cause"] == "database_slow_query", explain(result)
    slow = by_check(data)["latency.slow_statements"]["evidence"]
    assert slow["source"] == "pg_stat_statements"
    assert any("pg_sleep" in s["query"] for s in slow["slow"]), slow


@drill
def test_lock_contention_names_the_blocking_session(healthy_sandbox):
    if not has_fault("lock-contention"):
        pytest.skip("the lock-contention fault does not exist yet (fraiseql_rb/sandbox/faults.py)")
    healthy_sandbox.fault("lock-contention")
    try:
        with app_db_superuser(healthy_sandbox) as conn:
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                               (holder.application_name("lock"),)).fetchone()
        assert row, "the lock holder's session is not in pg_stat_activity"
        blocker = row[0]
        result = healthy_sandbox.run("high-query-latency", "--incident-id", "DRILL-hql-lock",
                                     *WINDOW)
    finally:
        healthy_sandbox.heal("lock-contention")
    assert result.returncode == 2, explain(result)
    data = findings_of(result)
    diag = diagnosis_of(data)
    assert diag["evidence"]["root_cause"] == "lock_contention", explain(result)
    top = diag["evidence"]["candidates"][0]
    assert blocker in top["evidence"]["root_blocking_pids"], top
    locks = by_check(data)["latency.lock_waits"]
    assert blocker in locks["evidence"]["blocking_pids"]
    pair = next(p for p in locks["evidence"]["pairs"] if p["blocking_pid"] == blocker)
    assert "LOCK TABLE tb_post" in pair["blocking_query"]
    assert "v_post" in pair["blocked_query"] and pair["waiting_s"] > 0
    assert f"pg_terminate_backend({blocker})" in locks["remediation"]
    # requests stuck behind the lock are not in the histogram yet: they count in the verdict
    percentiles = by_check(data)["latency.percentiles"]
    assert percentiles["status"] in ("warning", "critical"), percentiles
    assert percentiles["evidence"]["in_flight"]["sessions"] >= 1


# -- error drills ----------------------------------------------------------------------------

@drill
def test_error_spike_is_operation_errors_in_posts(healthy_sandbox):
    healthy_sandbox.fault("error-spike")
    try:
        result = healthy_sandbox.run("high-error-rate", "--incident-id", "DRILL-her-spike",
                                     *WINDOW)
    finally:
        healthy_sandbox.heal("error-spike")
    assert result.returncode == 2, explain(result)
    data = findings_of(result)
    diag = diagnosis_of(data)
    assert diag["status"] == "critical"
    assert diag["evidence"]["root_cause"] == "operation_errors", explain(result)
    assert by_check(data)["errors.source"]["evidence"]["source"] == "prometheus"
    ops = by_check(data)["errors.by_operation"]["evidence"]
    assert ops["by_operation"][0]["operation"] == faults.ERROR_SPIKE_OPERATION
    assert ops["most_affected"] == faults.ERROR_SPIKE_OPERATION
    isolate = by_check(data)["errors.isolate"]
    assert faults.ERROR_SPIKE_OPERATION in isolate["summary"]


def _execution_errors(ctx: RunContext) -> float:
    return metrics.value(metrics.scrape(ctx), "execution_errors") or 0.0


@drill
def test_db_down_is_database_errors_without_prometheus(healthy_sandbox):
    """Also the path without Prometheus: two scrapes a window apart."""
    no_prometheus = healthy_sandbox.inventory_without("prometheus_url")
    ctx = context_for(healthy_sandbox, no_prometheus)
    before = _execution_errors(ctx)
    healthy_sandbox.fault("db-down")
    try:
        # traffic needs a few seconds to meet the outage (the pool waits 5 s per request)
        deadline = time.monotonic() + 30
        while _execution_errors(ctx) <= before and time.monotonic() < deadline:
            time.sleep(1)
        result = healthy_sandbox.run("high-error-rate", "--inventory", str(no_prometheus),
                                     "--incident-id", "DRILL-her-dbdown",
                                     "-p", "window_s", "20")
    finally:
        healthy_sandbox.heal("db-down")
    assert result.returncode == 2, explain(result)
    data = findings_of(result)
    checks = by_check(data)
    assert checks["errors.source"]["evidence"]["source"] == "scrapes"
    assert checks["database.errors"]["status"] == "critical"
    assert checks["database.errors"]["evidence"]["failure"] == "server_down"
    assert diagnosis_of(data)["evidence"]["root_cause"] == "database_errors", explain(result)
