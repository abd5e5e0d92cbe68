"""Declared parameter constraints and required inventory keys (issue 9 point 8).

A constraint is written once, `[...]` at the end of a parameter's comment in the notebook;
`-p` must refuse a value outside it before any kernel starts, with one line and no artifact.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from fraiseql_rb.core import inventory, runbooks, timespec
from fraiseql_rb.core.errors import InventoryError, UsageError
from fraiseql_rb.preflight import operational_checklist
from fraiseql_rb.runner import execute

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = runbooks.discover()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraiseql_rb", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 64, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def write_inventory(path: Path, **keys: str) -> Path:
    """A one-target inventory (`prod`) nobody answers at: nothing may get as far as using it."""
    lines = ["[targets.prod]"] + [f'{key} = "{value}"' for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


BOTH = {"fraiseql_url": "http://127.0.0.1:9", "database_url": "postgresql://app@127.0.0.1:9/db"}


# ---- the declaration -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "fields", "described"), [
    ("1..1000", {"low": 1, "high": 1000}, "in 1..1000"),
    ("0.1 .. 720", {"low": 0.1, "high": 720}, "in 0.1..720"),
    ("-5..5", {"low": -5, "high": 5}, "in -5..5"),
    (">0", {"low": 0, "low_open": True, "high": None}, "> 0"),
    (">=0", {"low": 0, "low_open": False}, ">= 0"),
    ("<60", {"high": 60, "high_open": True, "low": None}, "< 60"),
    ("one of: pre-production, post-deployment",
     {"choices": ("pre-production", "post-deployment")}, "one of pre-production, post-deployment"),
    ("duration", {"format": "duration"}, "a Prometheus duration"),
    ("month", {"format": "month"}, "a month as YYYY-MM"),
    ("weekdays", {"format": "weekdays"}, "a set of weekdays"),
])
def test_constraint_declarations(text, fields, described):
    constraint = runbooks.Constraint.parse(text)
    for name, value in fields.items():
        assert getattr(constraint, name) == value, name
    assert constraint.describe() == described
    assert constraint.text == text.strip()


@pytest.mark.parametrize("text", ["5..1", "1..x", "between 1 and 5", "durations", "=>0", "", "1.."])
def test_a_bad_declaration_is_refused(text):
    with pytest.raises(ValueError, match="is not a constraint|is empty"):
        runbooks.Constraint.parse(text)


def test_the_bracket_is_the_constraint_and_not_help():
    params = runbooks.parse_parameters(
        "samples = 5  # requests per endpoint [1..1000]\n"
        "lookback = '24h'  # how far back [duration]\n"
        "note = 'x'  # a [bracket] inside the help stays help\n"
        "ratio = 0.5  # share\n", "t")
    assert params["samples"].help == "requests per endpoint"
    assert params["samples"].constraint == runbooks.Constraint.parse("1..1000")
    assert params["lookback"].constraint.format == "duration"
    assert params["note"].help == "a [bracket] inside the help stays help"
    assert params["note"].constraint is None
    assert params["ratio"].constraint is None


@pytest.mark.parametrize(("source", "message"), [
    ("name = 'a'  # who [1..10]", "applies to int or float only"),
    ("count = 3  # how many [duration]", "applies to str only"),
    ("flag = False  # on or off [0..1]", "applies to int or float only"),
    ("count = 3  # how many [lots]", "is not a constraint"),
])
def test_a_constraint_that_does_not_fit_the_type_is_a_notebook_error(source, message):
    with pytest.raises(UsageError, match=message):
        runbooks.parse_parameters(source, "nb.ipynb")


@pytest.mark.parametrize(("annotation", "expected"), [
    ('"Optional[int]"', "int | None"), ("'int | None'", "int | None"), ("int", "int | None"),
    ("Optional[int]", "int | None"), ("int | None", "int | None"), ("None | float", "float | None"),
])
def test_optional_annotations_papermill_can_read(annotation, expected):
    """`int = None` and string annotations are what papermill's pattern accepts (ruff refuses
    the string one in a notebook: F821/UP045); each reads as the optional type it means."""
    params = runbooks.parse_parameters(f"pool_max: {annotation} = None  # pool [1..30]", "t")
    assert params["pool_max"].type == expected
    assert params["pool_max"].coerce("none") is None
    assert params["pool_max"].coerce("20") == 20
    with pytest.raises(UsageError, match="must be in 1..30, got 31"):
        params["pool_max"].coerce("31")


# ---- checking values -------------------------------------------------------------------------

def param(kind: str, constraint: str | None, default: object = None) -> runbooks.Parameter:
    parsed = runbooks.Constraint.parse(constraint) if constraint else None
    return runbooks.Parameter("p", kind, default, "", parsed)


@pytest.mark.parametrize(("kind", "constraint", "raw", "expected"), [
    ("int", "1..1000", "1", 1), ("int", "1..1000", "1000", 1000), ("float", "0..1", "0", 0.0),
    ("float", "0..1", "1.0", 1.0), ("float", ">0", "1e-9", 1e-9),
    ("str", "one of: a, b", "b", "b"), ("int | None", "1..10", "none", None),
    ("str", "duration", "1h30m", "1h30m"), ("str | None", "month", "2025-01", "2025-01"),
    ("str | None", "month", "none", None), ("str", "weekdays", "Sun-Thu", "Sun-Thu"),
])
def test_values_inside_the_constraint_pass(kind, constraint, raw, expected):
    assert param(kind, constraint).coerce(raw) == expected


@pytest.mark.parametrize(("kind", "constraint", "raw", "message"), [
    ("int", "1..1000", "0", "parameter 'p' must be in 1..1000, got 0"),
    ("int", "1..1000", "-3", "parameter 'p' must be in 1..1000, got -3"),
    ("int", "1..1000", "99999999999999999999999999",
     "parameter 'p' must be in 1..1000, got 99999999999999999999999999"),
    ("float", ">0", "0", "parameter 'p' must be > 0, got 0"),
    ("float", "<60", "60", "parameter 'p' must be < 60, got 60"),
    ("float", "0.1..720", "1e8", "parameter 'p' must be in 0.1..720, got 1e8"),
    ("str", "one of: a, b", "c", "parameter 'p' must be one of a, b, got 'c'"),
    ("str", "duration", "90x", "parameter 'p' must be a Prometheus duration, got '90x': "
                               "cannot read '90x' as a time range"),
    ("str", "duration", "0h", "must be longer than zero"),
    ("str", "month", "2026-13", "parameter 'p' must be a month as YYYY-MM, got '2026-13': "
                                "month '2026-13' is not a calendar month"),
    ("str", "month", "2999-01", "has not begun"),
    ("str", "weekdays", "Mon-Fry", "'Fry' is not a weekday"),
])
def test_values_outside_the_constraint_are_refused_in_one_line(kind, constraint, raw, message):
    with pytest.raises(UsageError) as caught:
        param(kind, constraint).coerce(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_floats_are_always_finite(raw):
    """Even without a declared range: nan compares false with every threshold."""
    with pytest.raises(UsageError, match=r"parameter 'p' expects a finite number"):
        param("float", None).coerce(raw)


def test_formats_are_the_parsers_the_run_uses():
    """A second regex would drift; the format must answer exactly as the run-time parser."""
    assert runbooks.FORMATS["duration"].parse("1h30m") == timespec.parse_range("1h30m")
    assert runbooks.FORMATS["month"].parse("2025-02") == (
        timespec.month_window("2025-02"))
    assert runbooks.FORMATS["weekdays"].parse("Sun-Thu") == (
        timespec.parse_work_days("Sun-Thu"))


def test_bind_names_the_runbook():
    with pytest.raises(UsageError, match=r"^runbook 'service-health': parameter 'samples' "
                                         r"must be in 1\.\.1000, got 0$"):
        RUNBOOKS["service-health"].bind({"samples": "0"})


# ---- the notebooks' declarations -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RUNBOOKS))
def test_papermill_sees_every_parameter_we_see(name, caplog):
    """papermill warns "Passed unknown parameter" for a name its pattern missed (it refuses
    `int | None` annotations and lines holding a second `=`); we pass every parameter."""
    runbook = RUNBOOKS[name]
    with caplog.at_level(logging.WARNING):
        seen = papermill.inspect_notebook(str(runbook.path))
    assert set(seen) == set(runbook.parameters)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize("name", sorted(RUNBOOKS))
def test_every_numeric_parameter_is_bounded_and_defaults_fit(name):
    runbook = RUNBOOKS[name]
    for p in runbook.parameters.values():
        if p.base_type in ("int", "float"):
            assert p.constraint is not None and p.constraint.numeric, f"{name}: {p.name}"
        if p.name in ("lookback", "horizon"):
            assert p.constraint is not None and p.constraint.format == "duration", p.name
        if p.constraint is not None:
            assert "[" not in p.help, f"{name}: {p.name} help keeps a bracket"
        p.check(p.default)  # raises UsageError when the default breaks its own constraint
        if isinstance(p.default, float):
            assert math.isfinite(p.default), p.name


@pytest.mark.parametrize("name", sorted(RUNBOOKS))
def test_every_notebook_declares_the_inventory_keys_it_needs(name):
    import nbformat

    runbook = RUNBOOKS[name]
    declared = nbformat.read(runbook.path, as_version=4).metadata["fraiseql_rb"]["requires"]
    assert isinstance(declared, list)
    assert tuple(declared) == runbook.requires
    # what a runbook may require is an inventory key (the DR runbooks need backup_dir,
    # wal_archive_dir): an unknown name would be a requirement no inventory can meet
    assert set(declared) <= inventory.KNOWN_KEYS


def test_the_checklist_phases_are_the_declared_choices():
    phase = RUNBOOKS["operational-checklist"].parameters["phase"]
    assert phase.constraint.choices == operational_checklist.PHASES


def test_a_malformed_requires_is_refused(tmp_path):
    import nbformat

    nb = nbformat.read(RUNBOOKS["service-health"].path, as_version=4)
    nb.metadata["fraiseql_rb"] = {"requires": "database_url"}
    path = tmp_path / "deploy" / "broken.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    with pytest.raises(UsageError, match="requires must be a list"):
        runbooks.load_runbook(path)


# ---- required inventory keys -----------------------------------------------------------------

def test_prepare_refuses_a_target_without_a_required_key(tmp_path):
    inv = write_inventory(tmp_path / "inv.toml", fraiseql_url=BOTH["fraiseql_url"])
    with pytest.raises(InventoryError) as caught:
        execute.prepare("service-health", target="prod", inventory_path=str(inv),
                       output_dir=tmp_path / "reports")
    assert str(caught.value) == (f"inventory {inv}: target 'prod' has no database_url, which "
                                 "runbook 'service-health' needs")
    # a runbook that needs only fraiseql_url runs against it
    assert execute.prepare("service-down", target="prod", inventory_path=str(inv)).target == "prod"


def test_a_secret_reference_counts_as_present(tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text('[targets.prod]\nfraiseql_url = "http://127.0.0.1:9"\n'
                   'database_url_env = "PROD_DATABASE_URL"\n')
    assert execute.prepare("service-health", target="prod", inventory_path=str(inv)).target


# ---- through the real command line -----------------------------------------------------------

BAD_VALUES = [
    ("service-health", "samples", "0", "must be in 1..1000, got 0"),
    ("service-health", "samples", "-3", "must be in 1..1000, got -3"),
    ("service-health", "samples", "99999999999999999999999999",
     "must be in 1..1000, got 99999999999999999999999999"),
    ("service-health", "warning_ms", "nan", "expects a finite number, got 'nan'"),
    ("service-health", "warning_ms", "inf", "expects a finite number, got 'inf'"),
    ("auth-failures", "window_hours", "100000000", "must be in 0.1..168, got 100000000"),
    ("daily-security-review", "window_hours", "100000000", "must be in 1..720, got 100000000"),
    ("monthly-security-report", "month", "2026-13", "must be a month as YYYY-MM, got '2026-13'"),
    ("operational-checklist", "phase", "staging",
     "must be one of pre-production, post-deployment, got 'staging'"),
    ("database-dashboard", "lookback", "90x", "must be a Prometheus duration, got '90x'"),
    ("high-error-rate", "lookback", "1M", "must be a Prometheus duration, got '1M'"),
    ("high-query-latency", "lookback", "24 hours",
     "must be a Prometheus duration, got '24 hours'"),
    ("monthly-security-report", "work_days", "Mon-Fry", "must be a set of weekdays, got 'Mon-Fry'"),
]


@pytest.mark.parametrize(("runbook", "name", "value", "message"), BAD_VALUES,
                         ids=[f"{r}-{n}-{v[:12]}" for r, n, v, _ in BAD_VALUES])
def test_cli_refuses_a_value_outside_the_constraint(tmp_path, runbook, name, value, message):
    """Against a complete inventory, so nothing but the value stands in the way; no kernel
    starts (a started run would leave the output directory) and nothing is written."""
    inv = write_inventory(tmp_path / "inv.toml", **BOTH)
    out = tmp_path / "reports"
    line = one_line_error(cli("run", runbook, "--inventory", str(inv), "--target", "prod",
                              "--output-dir", str(out), "-p", name, value, cwd=tmp_path))
    assert line == f"fraiseql-rb: runbook {runbook!r}: parameter {name!r} {message}" or (
        line.startswith(f"fraiseql-rb: runbook {runbook!r}: parameter {name!r} {message}: "))
    assert not out.exists(), "nothing may be written for refused input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inv.toml"]


def test_cli_refuses_a_target_without_a_required_key(tmp_path):
    inv = write_inventory(tmp_path / "inv.toml", fraiseql_url=BOTH["fraiseql_url"])
    out = tmp_path / "reports"
    line = one_line_error(cli("run", "service-health", "--inventory", str(inv), "--target",
                              "prod", "--output-dir", str(out), cwd=tmp_path))
    assert line == (f"fraiseql-rb: inventory {inv}: target 'prod' has no database_url, which "
                    "runbook 'service-health' needs")
    assert not out.exists()


def test_list_shows_constraints_and_required_keys(tmp_path):
    result = cli("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    block = result.stdout.split("service-health  [deploy]", 1)[1].split("\n", 1)[1]
    assert block.splitlines()[0] == "    requires: fraiseql_url, database_url (inventory keys)"
    assert ("    samples: int = 5  [1..1000]  # requests per endpoint for the response-time "
            "check") in result.stdout
    assert "    phase: str = 'pre-production'  [one of: pre-production, post-deployment]" in (
        result.stdout)
    assert "    pool_max: int | None = None  [1..10000]" in result.stdout
