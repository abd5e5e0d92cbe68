"""The EXPLAIN (FORMAT JSON) reader (fraiseql_rb.targets.pgplan) on plans from a real PostgreSQL
(the pg_cluster fixture, provisioned like the sandbox): the text it renders from the JSON tree
is PostgreSQL's own text format, and the numbers it reads are the plan's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from fraiseql_rb.sandbox.cluster import APP_DB
from fraiseql_rb.targets.pgplan import Plan

# Plans with the common nodes: scans of every kind, joins of every kind, sorts, aggregates,
# set operations, InitPlans and SubPlans, CTEs, limits.
QUERIES = [
    "SELECT count(*) FROM tb_post",
    "SELECT * FROM tb_user WHERE email = 'user1@example.com'",
    "SELECT data FROM v_post WHERE data->>'title' LIKE 'Post 1%' ORDER BY id LIMIT 5",
    "SELECT event_type, count(*) FROM fraiseql_audit_logs GROUP BY event_type",
    "SELECT * FROM fraiseql_audit_logs WHERE event_type = 'login_failed' "
    "AND \"timestamp\" > '2026-01-01'",
    "SELECT u.name, count(p.*) FROM tb_user u LEFT JOIN tb_post p ON p.fk_user = u.pk_user "
    "GROUP BY u.name ORDER BY 2 DESC",
    "SELECT * FROM tb_user u WHERE EXISTS (SELECT 1 FROM tb_post p "
    "WHERE p.fk_user = u.pk_user AND p.published_at IS NULL)",
    "SELECT * FROM tb_user u WHERE NOT EXISTS (SELECT 1 FROM tb_post p "
    "WHERE p.fk_user = u.pk_user)",
    "SELECT * FROM tb_post WHERE pk_post = (SELECT max(pk_post) FROM tb_post)",
    "SELECT (SELECT count(*) FROM tb_post p WHERE p.fk_user = u.pk_user) FROM tb_user u",
    "WITH c AS MATERIALIZED (SELECT * FROM tb_user) SELECT * FROM c WHERE name LIKE 'A%'",
    "SELECT id FROM tb_user UNION SELECT id FROM tb_post",
    "SELECT id FROM tb_user EXCEPT SELECT id FROM tb_post",
    "SELECT * FROM generate_series(1, 10) g",
    "SELECT * FROM (VALUES (1), (2)) v(x)",
    "SELECT * FROM tb_post ORDER BY pk_post DESC LIMIT 3",
    "SELECT * FROM tb_post WHERE (pk_post % 2) = 0",
    "SELECT DISTINCT event_type FROM fraiseql_audit_logs",
    "SELECT * FROM fraiseql_audit_logs ORDER BY \"timestamp\" LIMIT 10",
]
PARALLEL = {"parallel_setup_cost": "0", "parallel_tuple_cost": "0",
            "min_parallel_table_scan_size": "0"}
NO_PARALLEL = {"max_parallel_workers_per_gather": "0"}


@pytest.fixture(scope="module")
def conn(pg_cluster) -> Iterator[psycopg.Connection]:
    with pg_cluster.connect(APP_DB) as connection:
        yield connection


@contextmanager
def settings(conn: psycopg.Connection, values: dict[str, str]) -> Iterator[None]:
    for name, value in values.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    try:
        yield
    finally:
        for name in values:
            conn.execute("SELECT set_config(%s, NULL, false)", (name,))


def text_plan(conn: psycopg.Connection, options: str, query: str) -> list[str]:
    return [r[0] for r in conn.execute(f"EXPLAIN ({options}FORMAT TEXT) {query}")]


def json_plan(conn: psycopg.Connection, options: str, query: str) -> Plan:
    return Plan.from_json(conn.execute(f"EXPLAIN ({options}FORMAT JSON) {query}").fetchone()[0])


def both(conn: psycopg.Connection, query: str) -> tuple[list[str], Plan]:
    """PostgreSQL's text plan and our reading of its JSON plan, planned alike: retried if an
    autovacuum ANALYZE moved an estimate between the two."""
    for _ in range(3):
        text = text_plan(conn, "", query)
        plan = json_plan(conn, "", query)
        if text_plan(conn, "", query) == text:
            break
    return text, plan


@pytest.mark.parametrize("query", QUERIES)
def test_rendered_plan_is_postgresqls_text_plan(conn, query):
    text, plan = both(conn, query)
    assert plan.lines() == text


@pytest.mark.parametrize("query", [q for q in QUERIES if "audit" in q or "JOIN" in q])
def test_rendered_parallel_plan_is_postgresqls_text_plan(conn, query):
    with settings(conn, PARALLEL):
        text, plan = both(conn, query)
    assert plan.lines() == text


def _shape(lines: list[str]) -> list[str]:
    """A plan with its measured numbers blanked, and without the planning buffers (the
    catalogue cache makes them differ from one run to the next)."""
    out, planning = [], False
    for line in lines:
        if line == "Planning:":
            planning = True
            continue
        if planning and line.startswith("  "):
            continue
        planning = False
        out.append(re.sub(r"\d+(\.\d+)?", "N", line))
    return out


@pytest.mark.parametrize("query", QUERIES)
def test_rendered_analyze_is_postgresqls_text_but_for_the_timings(conn, query):
    with settings(conn, NO_PARALLEL):
        text = text_plan(conn, "ANALYZE, BUFFERS, ", query)
        plan = json_plan(conn, "ANALYZE, BUFFERS, ", query)
    assert _shape(plan.lines()) == _shape(text)
    assert any("actual time=" in line for line in plan.lines())
    assert plan.lines()[-1].startswith("Execution Time: ")


def test_plain_explain_reads_cost_rows_and_seq_scans_without_running(conn):
    text, plan = both(conn, "SELECT count(*) FROM tb_post")
    assert not plan.analyzed
    assert plan.execution_ms is None and plan.actual_rows is None
    total = re.search(r"cost=[\d.]+\.\.([\d.]+) rows=(\d+)", text[0])
    assert plan.total_cost == float(total.group(1)) and plan.estimated_rows == 1
    assert plan.node_types() == ["Aggregate", "Seq Scan"]
    [scan] = plan.seq_scans()
    assert scan == {"relation": "tb_post", "alias": "tb_post", "estimated_rows": 600,
                    "total_cost": scan["total_cost"], "filter": None}
    assert f"..{scan['total_cost']:.2f} rows=600" in text[1]
    assert plan.underestimates() == []


def test_analyze_reads_actual_rows_times_and_rows_read(conn):
    # an expression without statistics: estimated at 0.5 % of 600 rows, 300 come out
    plan = json_plan(conn, "ANALYZE, BUFFERS, ", "SELECT * FROM tb_post WHERE (pk_post % 2) = 0")
    assert plan.analyzed
    assert plan.estimated_rows == 3 and plan.actual_rows == 300
    assert plan.execution_ms > 0 and plan.planning_ms > 0
    [scan] = plan.seq_scans()
    assert scan["relation"] == "tb_post" and scan["filter"] == "((pk_post % '2'::bigint) = 0)"
    assert scan["actual_rows"] == 300 and scan["rows_read"] == 600
    [under] = plan.underestimates()
    assert under == {"node": "Seq Scan on tb_post", "estimated_rows": 3, "actual_rows": 300,
                     "off_by": 100.0}
    assert "  Rows Removed by Filter: 300" in plan.lines()
    assert any(line.startswith("  Buffers: shared hit=") for line in plan.lines())


def test_seq_scans_of_a_join_costliest_first_and_index_scans_are_none(conn):
    _, plan = both(conn, "SELECT data FROM v_post ORDER BY id")
    assert [(s["relation"], s["alias"]) for s in plan.seq_scans()] == [
        ("tb_post", "p"), ("tb_user", "u")]
    assert "Hash Join" in plan.node_types()
    _, plan = both(conn, "SELECT * FROM fraiseql_audit_logs a WHERE id = 42")
    assert plan.seq_scans() == [] and plan.node_types() == ["Index Scan"]
    assert plan.lines()[0].startswith(
        "Index Scan using fraiseql_audit_logs_pkey on fraiseql_audit_logs a  (cost=")


def test_a_node_stopped_by_limit_is_no_underestimate(conn):
    plan = json_plan(conn, "ANALYZE, ", "SELECT * FROM tb_post ORDER BY pk_post DESC LIMIT 3")
    assert plan.actual_rows == 3
    assert plan.underestimates() == []


def test_from_json_takes_text_or_parsed_and_refuses_anything_else(conn):
    value = conn.execute("EXPLAIN (FORMAT JSON) SELECT 1").fetchone()[0]
    assert isinstance(value, list)  # psycopg parses the json column
    assert Plan.from_json(json.dumps(value)) == Plan.from_json(value)
    assert Plan.from_json(json.dumps(value).encode()).lines() == ["Result  (cost=0.00..0.01 "
                                                                  "rows=1 width=4)"]
    for bad in (None, [], [1], value * 2, {"Plan": 1}, "[]", "not json"):
        with pytest.raises(ValueError):
            Plan.from_json(bad)
