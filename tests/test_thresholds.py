"""Thresholds live once, in fraiseql_rb.core.thresholds.CATALOGUE: the names code imports are
derived from it, every notebook default that carries one equals it, README's figures and its table
agree with it, and no function of the package takes such a limit from a literal."""

from __future__ import annotations

import ast
import importlib.util
import math
import re
from pathlib import Path

import pytest

from fraiseql_rb.core import runbooks, thresholds
from fraiseql_rb.core.thresholds import CATALOGUE

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Notebook parameters that carry no catalogue entry, with why: everything else a notebook
# declares must be listed in some entry's `parameters`.
NOT_THRESHOLDS = {
    "target": "which inventory target",
    "incident_id": "a reference",
    "execute": "a switch", "confirm": "a switch", "introspection": "a switch",
    "target_time": "which moment to restore to", "start_server": "a switch",
    "range": "how much history to draw", "lookback": "how much history to draw",
    "month": "which month", "phase": "which checklist",
    "job": "a Prometheus job name",
    "explain_query": "a query", "rules_path": "a file", "config_path": "a file",
    "probe_query": "a query",
    "schedule": "which §7.2 schedule", "tables": "which tables to maintain",
    "pool_max": "the deployment's pool size (None: read it)",
    "samples": "sampling effort, judges nothing",
    "probes": "sampling effort, judges nothing",
    "sample_interval_s": "sampling effort, judges nothing",
    "target_version": "which release to install", "severity": "which SLA applies",
    "released_at": "when the patch was published",
    "direction": "which way to scale", "instance": "which instance to remove",
    "data_dir": "where a new standby goes", "port": "where a new standby listens",
    "slot_name": "a replication slot's name", "checkpoint": "pg_basebackup's checkpoint mode",
    "to_version": "which migration to stop at",
}

# Where README states a threshold: (phrase with {} where the number stands, catalogue key,
# README's number per catalogue unit). A phrase must occur, and every occurrence must agree.
README_FIGURES = [
    ("with the {} s / 5 s lines", "response_time_ms.warning", 1e-3),
    ("with the 2 s / {} s lines", "response_time_ms.critical", 1e-3),
    ("lines at §6.1's {} s", "response_time_ms.warning", 1e-3),
    ("and §3.2's {} s)", "response_time_ms.critical", 1e-3),
    ("cache hit ratio ({})", "cache_hit_ratio_min", 1),
    ("time to {} GB with a plot", "memory_leak_rss_bytes", 1e-9),
    ("its memory rule (`{}`)", "memory_leak_rss_bytes", 1),
    # auth-failures: the last hour (auth_window_hours) against 24 windows of it
    ("in the last hour against the {} h before", "auth_baseline_windows",
     thresholds.AUTH_WINDOW_HOURS),
    ("CSRF failures of the last {} h", "review_window_hours", 1),
    ("the same hours on the previous {} days", "review_baseline_days", 1),
    ("critical above mean + {}σ", "review_sigma", 1),
    ("mean + 3σ and at least {},", "review_min_count", 1),
    ("more than doubles from at least {})", "rate_limit_min_count", 1),
    ("(warning at {} days, critical at 7)", "cert_expiry_days.warning", 1),
    ("(warning at 21 days, critical at {})", "cert_expiry_days.critical", 1),
]

NUMBER = r"([0-9][0-9_]*(?:\.[0-9]+)?)"


def _close(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


# -- the catalogue itself -------------------------------------------------------------------------

def test_every_entry_says_what_where_from_and_in_what_unit():
    for key, limit in CATALOGUE.items():
        assert re.fullmatch(r"[a-z0-9_]+(\.(warning|critical))?", key), key
        assert isinstance(limit, thresholds.Limit), key
        assert limit.unit.strip() and limit.source.strip() and limit.doc.strip(), key
        assert isinstance(limit.value, (int, float, str, tuple)), key
        assert not isinstance(limit.value, bool), key
    pairs = {k.rsplit(".", 1)[0] for k in CATALOGUE if "." in k}
    for name in pairs:
        assert {f"{name}.warning", f"{name}.critical"} <= CATALOGUE.keys(), name


def test_module_names_are_derived_from_the_catalogue():
    """Each entry is importable by its upper-case name (a pair as a Threshold), and every
    upper-case value the module exposes is one of them: thresholds.py holds no stray number."""
    exposed = set()
    for key, limit in CATALOGUE.items():
        name, _, level = key.partition(".")
        attr = getattr(thresholds, name.upper())
        if level:
            assert isinstance(attr, thresholds.Threshold), key
            assert getattr(attr, level) == limit.value, key
        else:
            assert attr == limit.value, key
        exposed.add(name.upper())
    derived = {"CATALOGUE", "SCALE_UP", "DR_TIERS"}
    for attr, value in vars(thresholds).items():
        if attr.isupper() and attr not in derived and not attr.startswith("_"):
            assert isinstance(value, (int, float, str, tuple, thresholds.Threshold))
            assert attr in exposed, f"thresholds.{attr} is not an entry of CATALOGUE"
    for signal in thresholds.SCALE_UP.values():
        assert isinstance(signal, thresholds.Threshold)


def test_the_runbook_numbers_themselves():
    """The catalogue quotes the runbook; these are the numbers it quotes (§3.2, §5.2, §6.1)."""
    assert thresholds.RESPONSE_TIME_MS.warning == 2000  # §6.1 P95 > 2s
    assert thresholds.RESPONSE_TIME_MS.critical == 5000  # §3.2 P99 > 5
    assert thresholds.POOL_OF_MAX_CONNECTIONS.warning == 0.80  # §6.1 > 80% pool capacity
    assert (thresholds.CPU_USED.warning, thresholds.MEMORY_USED.warning,
            thresholds.DISK_USED.warning) == (0.70, 0.75, 0.80)  # §6.1
    assert thresholds.CPU_SUSTAINED_MIN == 10  # §6.1 sustained for 10min
    assert thresholds.MEMORY_LEAK_RSS_BYTES == 7_000_000_000  # §3.2 MemoryLeakSuspected
    assert thresholds.CACHE_HIT_RATIO_MIN == 0.7  # §3.2 LowCacheHitRatio
    assert thresholds.POOL_ACTIVE_SHARE_MAX == 45 / 50  # §3.2 ConnectionPoolNearCapacity
    assert thresholds.DB_ERRORS_PER_S_MAX == 10  # §3.2 HighDatabaseErrorRate
    assert thresholds.FAILOVER_RPO_S == 5 * 60  # §5.2 RPO 5 minutes
    assert thresholds.RESTART_WAIT_S == 30  # §4.2 Wait 30s for health checks


# -- notebooks ---------------------------------------------------------------------------------

def _runbooks() -> dict[str, runbooks.Runbook]:
    found = runbooks.discover()
    assert found, "no notebooks found"
    return found


def test_notebook_parameter_defaults_equal_the_catalogue():
    wrong, unmapped = [], []
    for name, book in sorted(_runbooks().items()):
        for param in book.parameters.values():
            carried = thresholds.carried_by(name, param.name)
            if carried is None:
                if param.name not in NOT_THRESHOLDS:
                    unmapped.append(f"{name}: {param.name} = {param.default!r}")
                continue
            key, how = carried
            expected = thresholds.notebook_default(key, how)
            if not _close(param.default, expected):
                wrong.append(f"{book.path.relative_to(REPO)}: {param.name} = "
                             f"{param.default!r}, but thresholds.CATALOGUE[{key!r}] gives "
                             f"{expected!r}")
            if param.constraint is not None:
                param.check(expected)  # the catalogue's value is one the notebook accepts
    assert not wrong, "\n".join(wrong)
    assert not unmapped, ("parameters that carry no catalogue entry (add them to an entry's "
                          "parameters, or to NOT_THRESHOLDS with why):\n" + "\n".join(unmapped))


def test_every_declared_parameter_exists_in_a_notebook():
    books = _runbooks()
    for key, limit in CATALOGUE.items():
        for p in limit.parameters:
            where = [books[p.runbook]] if p.runbook else list(books.values())
            assert p.runbook is None or p.runbook in books, f"{key}: no runbook {p.runbook}"
            assert any(p.name in b.parameters for b in where), (
                f"{key} names parameter {p.describe()}, which no notebook declares")


def test_a_parameter_name_carries_one_entry():
    seen: dict[tuple[str, str | None], str] = {}
    for key, limit in CATALOGUE.items():
        for p in limit.parameters:
            assert (p.name, p.runbook) not in seen, (
                f"{p.describe()} carries both {seen[(p.name, p.runbook)]} and {key}")
            seen[(p.name, p.runbook)] = key
    for name, runbook in seen:
        if runbook is not None:
            assert (name, None) not in seen, f"{name} is both scoped and unscoped"


# -- code: no literal where a catalogue entry belongs ------------------------------------------

def _package_files() -> list[Path]:
    root = REPO / "fraiseql_rb"
    return [p for p in sorted(root.rglob("*.py")) if "sandbox" not in p.relative_to(root).parts]


def _number(node: ast.expr | None) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool))


def test_no_function_takes_a_catalogued_limit_from_a_literal():
    """A default for a parameter named like a notebook parameter that carries an entry
    (`connect_timeout_s`, `idle_threshold_s`, `warning_days`, ...) must come from thresholds."""
    names = {p.name for limit in CATALOGUE.values() for p in limit.parameters}
    found = []
    for path in _package_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = [*zip(positional[len(positional) - len(a.defaults):], a.defaults,
                          strict=True),
                     *zip(a.kwonlyargs, a.kw_defaults, strict=True)]
            found += [f"{path.relative_to(REPO)}:{d.lineno} {node.name}({arg.arg}="
                      f"{ast.unparse(d)})" for arg, d in pairs
                      if d is not None and arg.arg in names and _number(d)]
    assert not found, "literal limits (use thresholds.NAME):\n" + "\n".join(found)


MODULES = sorted(str(path.relative_to(REPO / "fraiseql_rb"))
                 for layer in ("core", "runner", "targets", "checks", "preflight", "monitoring",
                               "incidents", "security", "dashboards")
                 for path in (REPO / "fraiseql_rb" / layer).glob("*.py"))
# Module constants with a literal number that are not limits an operator would argue with:
# facts of a protocol or a format, and sizes of what is drawn or shown.
NOT_LIMITS = {
    "EXIT_OK", "EXIT_WARNING", "EXIT_CRITICAL", "EXIT_UNKNOWN", "EXIT_USAGE",  # DESIGN's codes
    "ARTIFACT_FILE_MODE", "ARTIFACT_DIR_MODE",  # DESIGN's artifact modes
    "SSL_REQUEST_CODE",  # PostgreSQL's wire protocol
    "_PR_SET_PDEATHSIG",  # Linux's prctl(2) option number
    "MAX_POINTS",  # Prometheus refuses range queries of more points
    "_DAY_S",  # seconds in a day
    "_MIN_SECRET_LEN",  # shorter values are not masked: they would mask common words
    "POINTS", "DPI", "QUERY_CHARS",  # how much is drawn or shown
    "POLL_S",  # how often the progress line reads findings.json
}


@pytest.mark.parametrize("module", MODULES)
def test_module_limits_are_catalogue_references(module):
    """Modules name their limits (MIN_ERRORS, SLOW_STATEMENT_MS, COMMAND_TIMEOUT_S, ...) as
    references to the catalogue, never as literals of their own."""
    path = REPO / "fraiseql_rb" / module
    literal = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        value = getattr(node, "value", None)
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if any(n.lstrip("_").isupper() and n not in NOT_LIMITS for n in names) and (
                _number(value) or isinstance(value, ast.BinOp) and all(
                    _number(n) for n in (value.left, value.right))):
            literal.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert not literal, "module constants with literal values:\n" + "\n".join(literal)


def test_the_module_rule_sees_the_layers():
    assert {"incidents/memory_leak.py", "targets/commands.py", "dashboards/board.py",
            "security/daily_security_review.py", "runner/interruption.py"} <= set(MODULES)


# -- README ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("phrase", "key", "per"), README_FIGURES,
                         ids=[f"{k}:{p}" for p, k, _ in README_FIGURES])
def test_readme_figures_match_the_catalogue(phrase, key, per):
    text = README.read_text(encoding="utf-8")
    pattern = re.escape(phrase).replace(re.escape("{}"), NUMBER)
    numbers = [float(n) for n in re.findall(pattern, text)]
    assert numbers, f"README no longer says {phrase!r}: update README_FIGURES"
    expected = CATALOGUE[key].value * per
    assert all(math.isclose(n, expected, rel_tol=1e-9) for n in numbers), (
        f"README says {phrase.format(numbers[0])!r}; thresholds.CATALOGUE[{key!r}] is "
        f"{CATALOGUE[key].value} {CATALOGUE[key].unit}")


def test_readme_thresholds_table_is_the_catalogue():
    spec = importlib.util.spec_from_file_location("thresholds_table",
                                                  REPO / "tools" / "thresholds_table.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, table, _ = tool.split(README.read_text(encoding="utf-8"))
    assert table == thresholds.render_table(), (
        "README's thresholds table is stale: run python3 tools/thresholds_table.py")


def test_the_table_lists_every_entry_once():
    rows = thresholds.render_table().splitlines()[2:]
    assert len(rows) == len(CATALOGUE)
    for row, key in zip(rows, CATALOGUE, strict=True):
        assert row.startswith(f"| `{key}` |")
