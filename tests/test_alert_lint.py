"""The alert lint on the runbook's own §3.2 rules (copied verbatim) against a live stand-in's
metric names, and on rules written to exercise each check."""

from __future__ import annotations

import io
import shutil
import textwrap
from pathlib import Path

import pytest

from fraiseql_rb.checks import alert_rules
from fraiseql_rb.core.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING, UsageError
from fraiseql_rb.core.findings import Status
from fraiseql_rb.targets import metrics

DATA = Path(__file__).parent / "data"
RUNBOOK_RULES = DATA / "alerts" / "runbook-3.2.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
GOOD_LATENCY = ("histogram_quantile(0.99, sum by (le) "
                "(rate(fraiseql_query_duration_seconds_bucket[5m]))) > 5")


def rules_file(tmp_path: Path, *exprs: str) -> Path:
    """A Prometheus rules file with one well-routed alert per expression."""
    rules = "".join(f"""
  - alert: Rule{n}
    expr: '{expr}'
    for: 5m
    labels:
      severity: warning
""" for n, expr in enumerate(exprs, 1))
    path = tmp_path / "rules.yml"
    path.write_text(f"groups:\n- name: fraiseql\n  rules:{rules}")
    return path


def by_rule(problems: list[alert_rules.Problem]) -> dict[str, list[alert_rules.Problem]]:
    out: dict[str, list[alert_rules.Problem]] = {}
    for p in problems:
        out.setdefault(p.rule, []).append(p)
    return out


def kinds(problems: list[alert_rules.Problem]) -> set[str]:
    return {p.kind for p in problems}


@pytest.fixture
def live_names(healthy_sandbox) -> set[str]:
    """A labelled histogram has no series before its first observation: query first."""
    import ssl

    import httpx

    from fraiseql_rb.core.inventory import load_target

    target = load_target("sandbox", healthy_sandbox.inventory)
    verify = ssl.create_default_context(cafile=target.get("ca_bundle"))
    httpx.post(f"{target.fraiseql_url}/graphql", json={"query": "{ users(limit: 1) { id } }"},
               verify=verify, timeout=10).raise_for_status()
    return alert_rules.exported_from_target("sandbox", healthy_sandbox.inventory)


@pytest.mark.sandbox
@needs_promtool
def test_runbook_rules_against_a_live_standin(live_names: set[str]) -> None:
    # the sandbox has a Prometheus, so its scrape targets were asked too (`up` may be among
    # their series: Prometheus makes it, and the lint knows it with or without one)
    assert live_names.prometheus and live_names.unchecked is None
    problems = alert_rules.lint(RUNBOOK_RULES, live_names, promtool=PROMTOOL)
    rules = by_rule(problems)
    never = {p.message.split()[1]: p for p in problems if p.kind == alert_rules.NEVER_EXPORTED}
    assert set(never) == {"fraiseql_db_errors_total", "process_resident_memory_bytes",
                          "fraiseql_db_connections"}
    assert all(p.severity is Status.CRITICAL and "can never fire" in p.message
               for p in never.values())
    assert "rate(fraiseql_execution_errors_total[5m]) > 10" in never[
        "fraiseql_db_errors_total"].suggestion
    assert "fraiseql_db_pool_connections_active > 45" in never[
        "fraiseql_db_connections"].suggestion
    assert "process" in never["process_resident_memory_bytes"].suggestion

    unparseable = [p for p in rules["MemoryLeakSuspected"] if p.kind == alert_rules.UNPARSEABLE]
    assert len(unparseable) == 1
    assert 'bad number or duration syntax: "7"' in unparseable[0].message  # promtool's words
    assert "7000000000" in unparseable[0].suggestion

    misuse = [p for p in rules["HighQueryLatency"] if p.kind == alert_rules.HISTOGRAM_MISUSE]
    assert len(misuse) == 1 and misuse[0].severity is Status.CRITICAL
    assert misuse[0].suggestion.endswith(f"corrected: {GOOD_LATENCY}")

    assert kinds(rules["FraiseQLDown"]) == {alert_rules.ROUTING}  # `up` is not flagged
    assert kinds(rules["LowCacheHitRatio"]) == {alert_rules.ROUTING}
    assert all(p.severity is Status.WARNING for p in problems if p.kind == alert_rules.ROUTING)

    out = io.StringIO()
    assert alert_rules.main_lint(RUNBOOK_RULES, live_names, out,
                                promtool=PROMTOOL) == EXIT_CRITICAL
    text = out.getvalue()
    assert "fraiseql_db_errors_total never exported" in text
    assert text.splitlines()[-1].startswith("CRITICAL: ")


@pytest.mark.sandbox
@needs_promtool
def test_a_correct_rule_is_clean(tmp_path: Path, live_names: set[str]) -> None:
    path = rules_file(tmp_path, GOOD_LATENCY)
    assert alert_rules.lint(path, live_names, promtool=PROMTOOL) == []
    assert alert_rules.lint(path, None, promtool=PROMTOOL) == []
    assert alert_rules.lint(path, None, promtool=None) == []
    out = io.StringIO()
    assert alert_rules.main_lint(path, live_names, out, promtool=PROMTOOL) == EXIT_OK
    assert out.getvalue().startswith("OK: 0 problem(s) in 1 rule(s)")


def test_without_promtool_the_lexer_still_catches_the_bad_number() -> None:
    problems = alert_rules.lint(RUNBOOK_RULES, None, promtool=None)
    memory = by_rule(problems)["MemoryLeakSuspected"]
    bad = [p for p in memory if p.kind == alert_rules.UNPARSEABLE]
    assert len(bad) == 1 and "7_000_000_000" in bad[0].message
    assert "promtool not found" in bad[0].message
    # the catalog's v2 names stand in for a live scrape: the same three never-exported names
    assert {p.message.split()[1] for p in problems if p.kind == alert_rules.NEVER_EXPORTED} == {
        "fraiseql_db_errors_total", "process_resident_memory_bytes", "fraiseql_db_connections"}


def test_corrected_expressions_are_clean(tmp_path: Path) -> None:
    """Every `corrected:` suggestion for the runbook's rules parses and passes the lint
    (apart from the memory rule, which still needs an exporter FraiseQL does not ship)."""
    problems = alert_rules.lint(RUNBOOK_RULES, None, promtool=PROMTOOL)
    fixed = sorted({p.suggestion.split("corrected: ")[1] for p in problems
                    if p.suggestion and "corrected: " in p.suggestion})
    assert len(fixed) == 4
    again = alert_rules.lint(rules_file(tmp_path, *fixed), None, promtool=PROMTOOL)
    assert all(p.severity is Status.WARNING for p in again), again
    assert [p.message.split()[1] for p in again] == ["namedprocess_namegroup_memory_bytes"]


def test_against_a_runbook_vocabulary_page() -> None:
    """Against an exporter that speaks the runbook's names, those names are fine; the
    latency rule still misuses a summary and gets the summary's own quantile instead."""
    names = metrics.parse((DATA / "metrics" / "runbook-names.prom").read_text()).names()
    problems = alert_rules.lint(RUNBOOK_RULES, names, promtool=PROMTOOL)
    assert alert_rules.NEVER_EXPORTED not in kinds(problems)
    misuse = [p for p in problems if p.kind == alert_rules.HISTOGRAM_MISUSE]
    assert len(misuse) == 1
    assert misuse[0].suggestion.endswith(
        'corrected: max(fraiseql_query_duration_seconds{quantile="0.99"}) > 5')


def test_malformed_yaml_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("- alert: A\n  expr: up == 0\n   for: 5m\n  labels: [x\n")
    problems = alert_rules.lint(path, None, promtool=PROMTOOL)
    assert len(problems) == 1
    assert problems[0].kind == alert_rules.YAML and problems[0].severity is Status.CRITICAL
    assert "line 3" in problems[0].message
    assert alert_rules.main_lint(path, None, io.StringIO(), promtool=PROMTOOL) == EXIT_CRITICAL


def test_not_a_rules_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "map.yml"
    path.write_text("just: a mapping\n")
    [problem] = alert_rules.lint(path, None, promtool=None)
    assert "not a rules file" in problem.message
    with pytest.raises(UsageError, match="not found"):
        alert_rules.lint(tmp_path / "absent.yml")


@pytest.mark.parametrize(("expr", "corrected"), [
    ("histogram_quantile(0.9, fraiseql_query_duration_seconds_bucket) > 1",
     "histogram_quantile(0.9, sum by (le) (rate(fraiseql_query_duration_seconds_bucket[5m]))) > 1"),
    ("histogram_quantile(0.9, sum(rate(fraiseql_query_duration_seconds_bucket[5m]))) > 1",
     "histogram_quantile(0.9, sum by (le) (rate(fraiseql_query_duration_seconds_bucket[5m]))) > 1"),
    ("histogram_quantile(0.9, sum by (operation) "
     "(rate(fraiseql_query_duration_seconds_bucket[10m]))) > 1",
     "histogram_quantile(0.9, sum by (operation, le) "
     "(rate(fraiseql_query_duration_seconds_bucket[10m]))) > 1"),
    ("histogram_quantile(0.9, sum without (le) "
     "(rate(fraiseql_query_duration_seconds_bucket[5m]))) > 1",
     "histogram_quantile(0.9, sum by (le) (rate(fraiseql_query_duration_seconds_bucket[5m]))) > 1"),
    ('histogram_quantile(0.5, fraiseql_query_duration_seconds{operation="users"}) > 1',
     'histogram_quantile(0.5, sum by (le) '
     '(rate(fraiseql_query_duration_seconds_bucket{operation="users"}[5m]))) > 1'),
])
def test_histogram_misuse(tmp_path: Path, expr: str, corrected: str) -> None:
    problems = alert_rules.lint(rules_file(tmp_path, expr), None, promtool=PROMTOOL)
    assert kinds(problems) == {alert_rules.HISTOGRAM_MISUSE}, problems
    assert problems[0].suggestion.endswith(f"corrected: {corrected}")
    assert alert_rules.lint(rules_file(tmp_path, corrected), None, promtool=PROMTOOL) == []


@pytest.mark.parametrize("expr", [
    "histogram_quantile(0.9, rate(fraiseql_query_duration_seconds_bucket[5m])) > 1",
    "histogram_quantile(0.9, sum(rate(fraiseql_query_duration_seconds_bucket[5m])) "
    "by (le, operation)) > 1",
    "histogram_quantile(0.9, sum without (instance) "
    "(increase(fraiseql_http_request_duration_seconds_bucket[1h]))) > 1",
    'sum by (job) (rate(fraiseql_graphql_queries_error[5m])) / on(job) '
    'sum by (job) (rate(fraiseql_graphql_queries_total[5m])) > 0.05',
    'max_over_time(rate(fraiseql_parse_errors_total[5m])[1h:1m]) > 1',
    'label_replace(up{job="fraiseql"}, "x", "$1", "instance", "(.*)") == 0',
    '{__name__="fraiseql_cache_hit_ratio"} < 0.7',
])
def test_clean_rules(tmp_path: Path, expr: str) -> None:
    assert alert_rules.lint(rules_file(tmp_path, expr), None, promtool=PROMTOOL) == []


def test_bare_histogram_name_outside_histogram_quantile(tmp_path: Path) -> None:
    [problem] = alert_rules.lint(rules_file(tmp_path, "fraiseql_query_duration_seconds > 1"),
                                None, promtool=PROMTOOL)
    assert problem.kind == alert_rules.HISTOGRAM_MISUSE
    assert "fraiseql_query_duration_seconds_sum" in problem.suggestion


def test_runbook_histogram_name_is_mapped_to_the_real_one(tmp_path: Path) -> None:
    expr = "histogram_quantile(0.99, rate(fraiseql_db_query_duration_seconds_bucket[5m])) > 1"
    [problem] = alert_rules.lint(rules_file(tmp_path, expr), None, promtool=PROMTOOL)
    assert problem.kind == alert_rules.NEVER_EXPORTED
    assert problem.suggestion.endswith(
        "corrected: histogram_quantile(0.99, "
        "rate(fraiseql_database_query_duration_seconds_bucket[5m])) > 1")


def test_rate_over_a_gauge_is_a_warning(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "rate(fraiseql_db_pool_connections_active[5m]) > 1")
    [problem] = alert_rules.lint(path, None, promtool=PROMTOOL)
    assert (problem.kind, problem.severity) == (alert_rules.RATE_OF_GAUGE, Status.WARNING)
    assert "deriv(fraiseql_db_pool_connections_active[5m]) > 1" in problem.suggestion
    assert alert_rules.main_lint(path, None, io.StringIO(), promtool=PROMTOOL) == EXIT_WARNING


def test_host_metrics_are_a_warning_not_never_fire(tmp_path: Path) -> None:
    path = rules_file(tmp_path, 'rate(node_cpu_seconds_total{mode="idle"}[5m]) < 0.1',
                      "node_memory_bytes < 1e9")
    problems = alert_rules.lint(path, None, promtool=PROMTOOL)
    severities = {p.message.split()[1]: p.severity for p in problems}
    assert severities == {"node_cpu_seconds_total": Status.WARNING,
                          "node_memory_bytes": Status.CRITICAL}
    assert "node_memory_MemAvailable_bytes" in by_rule(problems)["Rule2"][0].suggestion


def test_each_rule_is_checked_even_after_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent("""\
        groups:
        - name: recording
          rules:
          - record: job:fraiseql_errors:rate5m
            expr: sum(rate(fraiseql_graphql_queries_error[5m]))
        - name: alerts
          rules:
          - alert: NoExpression
            for: 5m
          - alert: Unbalanced
            expr: rate(fraiseql_graphql_queries_error[5m] > 1
            labels: {severity: critical}
          - alert: UsesTheRecording
            expr: job:fraiseql_errors:rate5m > 1
            labels: {severity: critical}
          - alert: Typo
            expr: fraiseql_cache_hit_ratoi < 0.7
            labels: {severity: warning}
        """))
    for promtool in (PROMTOOL, None):
        rules = by_rule(alert_rules.lint(path, None, promtool=promtool))
        assert set(rules) == {"NoExpression", "Unbalanced", "Typo"}, rules
        assert kinds(rules["NoExpression"]) == {alert_rules.INVALID_RULE}
        assert kinds(rules["Unbalanced"]) == {alert_rules.UNPARSEABLE}
        assert "did you mean fraiseql_cache_hit_ratio" in rules["Typo"][0].suggestion


def test_format_problems() -> None:
    problem = alert_rules.Problem("R", alert_rules.NEVER_EXPORTED, Status.CRITICAL, "gone", "use x")
    assert alert_rules.format_problems([problem]) == [
        "CRITICAL R: [never-exported] gone", "         suggestion: use x"]


# ---- metrics of other scrape targets (issue 11 §4) -------------------------------------------

WAL_RULE = ("increase(pg_stat_archiver_failed_count[5m]) > 0 and on (job, instance) "
            "increase(pg_stat_archiver_archived_count[5m]) == 0")


def test_exporter_metrics_without_a_prometheus_are_unchecked_not_never_firing(
        tmp_path: Path) -> None:
    """FraiseQL's /metrics alone cannot say what postgres_exporter exports: unknown, with
    what is missing, never "can never fire"."""
    fraiseql_only = alert_rules.LiveNames({"fraiseql_execution_errors_total", "up"},
                                          unchecked="the inventory names no prometheus_url")
    problems = alert_rules.lint(rules_file(tmp_path, WAL_RULE), fraiseql_only,
                                promtool=PROMTOOL)
    assert problems and all(p.severity is Status.UNKNOWN for p in problems), problems
    assert not [p for p in problems if "can never fire" in p.message]
    assert all("no prometheus_url" in p.message and "prometheus_url" in p.suggestion
               for p in problems)
    # a FraiseQL name missing from FraiseQL's own /metrics is still certain
    typo = alert_rules.lint(rules_file(tmp_path, "rate(fraiseql_db_errors_total[5m]) > 1"),
                            fraiseql_only, promtool=PROMTOOL)
    assert [p.severity for p in typo] == [Status.CRITICAL]


def test_exporter_metrics_in_the_catalog_mode_are_warnings(tmp_path: Path) -> None:
    problems = alert_rules.lint(rules_file(tmp_path, WAL_RULE), None, promtool=PROMTOOL)
    assert {p.severity for p in problems} == {Status.WARNING}
    assert all("postgres_exporter" in p.message and "can never fire" not in p.message
               for p in problems)


def test_every_scrape_target_of_the_prometheus_counts(tmp_path: Path) -> None:
    """Names from the postgres job are exported; a FraiseQL-vocabulary name that only other
    jobs export (process_* from Prometheus itself) still never fires for FraiseQL."""
    names = {"pg_stat_archiver_failed_count", "pg_stat_archiver_archived_count",
             "fraiseql_execution_errors_total", "process_resident_memory_bytes"}
    view = alert_rules.LiveNames(
        names, jobs={"pg_stat_archiver_failed_count": {"postgres"},
                     "pg_stat_archiver_archived_count": {"postgres"},
                     "fraiseql_execution_errors_total": {"fraiseql"},
                     "process_resident_memory_bytes": {"prometheus", "postgres"}},
        fraiseql_jobs={"fraiseql"}, prometheus="http://prom:9090", targets=3)
    assert alert_rules.lint(rules_file(tmp_path, WAL_RULE), view, promtool=PROMTOOL) == []
    memory = alert_rules.lint(rules_file(tmp_path, "process_resident_memory_bytes > 7e9"),
                              view, promtool=PROMTOOL)
    assert [p.severity for p in memory] == [Status.CRITICAL]
    assert "job(s) postgres, prometheus" in memory[0].message
    wrong_job = alert_rules.lint(
        rules_file(tmp_path, 'pg_stat_archiver_failed_count{job="fraiseql"} > 0'), view,
        promtool=PROMTOOL)
    assert [p.kind for p in wrong_job] == [alert_rules.NEVER_EXPORTED]


def test_runbook_annotation_must_name_a_fixing_playbook(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("""groups:
- name: g
  rules:
  - alert: A
    expr: up == 0
    labels: {severity: critical}
    annotations: {runbook: alert-review}
  - alert: B
    expr: up == 0
    labels: {severity: critical}
    annotations: {runbook: databse-unavailable}
  - alert: C
    expr: up == 0
    labels: {severity: critical}
    annotations: {runbook: database-unavailable}
""")
    problems = by_rule(alert_rules.lint(path, None, promtool=PROMTOOL))
    assert [p.kind for p in problems["A"]] == [alert_rules.RUNBOOK]
    assert "database-unavailable" in problems["B"][0].suggestion
    assert "C" not in problems


def test_renamed_metric_alternatives_and_absent_are_not_flagged(tmp_path: Path) -> None:
    """`new_name or old_name` fires where either exists; absent() expects a missing series."""
    expr = ("max by (job, instance) (pg_replication_lag_seconds or (pg_replication_lag and "
            "on () absent(pg_stat_replication_pg_wal_lsn_diff))) > 150")
    view = alert_rules.LiveNames({"pg_replication_lag"}, jobs={"pg_replication_lag": {"pg"}},
                                 prometheus="http://prom:9090", targets=2)
    assert alert_rules.lint(rules_file(tmp_path, expr), view, promtool=PROMTOOL) == []
