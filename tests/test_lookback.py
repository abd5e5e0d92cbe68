"""`range` became `lookback` (it shadowed the builtin in eight notebooks); `-p range VALUE`
still works for a while, as `-p lookback VALUE`, with one deprecation line on stderr."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fraiseql_rb.core import runbooks
from fraiseql_rb.core.errors import UsageError

RUNBOOKS = runbooks.discover()
LOOKBACK = sorted(name for name, rb in RUNBOOKS.items() if "lookback" in rb.parameters)
DEPRECATION = "fraiseql-rb: -p range is deprecated, use -p lookback"


def test_the_runbooks_with_history_take_lookback_as_a_duration_and_none_takes_range():
    expected = ["capacity-planning-dashboard", "database-dashboard", "network-dashboard",
                "performance-dashboard", "security-dashboard", "service-health-dashboard",
                "high-error-rate", "high-query-latency", "scale-out"]
    assert sorted(expected) == LOOKBACK
    for name in LOOKBACK:
        assert RUNBOOKS[name].parameters["lookback"].constraint.format == "duration", name
    for old, new in runbooks.DEPRECATED_PARAMETERS.items():
        assert not [n for n, rb in RUNBOOKS.items() if old in rb.parameters], old
        assert [n for n, rb in RUNBOOKS.items() if new in rb.parameters], new


@pytest.mark.parametrize("name", sorted(RUNBOOKS))
def test_no_parameter_shadows_a_builtin(name):
    shadowing = [p for p in RUNBOOKS[name].parameters if hasattr(builtins, p)]
    assert not shadowing, f"{name}: {shadowing}"


def test_bind_maps_the_old_name_with_a_warning():
    runbook = RUNBOOKS["performance-dashboard"]
    with pytest.warns(runbooks.DeprecatedParameter,
                      match="^-p range is deprecated, use -p lookback$"):
        assert runbook.bind({"range": "2h", "job": "x"}) == {"lookback": "2h", "job": "x"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        assert runbook.bind({"lookback": "2h"}) == {"lookback": "2h"}


def test_bind_refuses_both_names_and_the_old_one_where_it_never_was():
    with pytest.raises(UsageError, match="-p range is the deprecated name of -p lookback: "
                                         "give only -p lookback"):
        RUNBOOKS["high-error-rate"].bind({"range": "2h", "lookback": "1h"})
    with pytest.raises(UsageError, match="has no parameter 'range'"):
        RUNBOOKS["service-health"].bind({"range": "2h"})


def test_a_bad_value_under_the_old_name_is_one_line_naming_both(tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text('[targets.prod]\nfraiseql_url = "http://127.0.0.1:9"\n'
                   'database_url = "postgresql://app@127.0.0.1:9/db"\n')
    result = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb", "run", "database-dashboard", "--inventory",
         str(inv), "--target", "prod", "--output-dir", str(tmp_path / "reports"),
         "-p", "range", "90x"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 64, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("fraiseql-rb: runbook 'database-dashboard': parameter 'lookback' "
                           "must be a Prometheus duration, got '90x': "), line
    assert line.endswith(" (-p range is deprecated, use -p lookback)"), line
    assert not (tmp_path / "reports").exists()


@pytest.fixture(scope="module")
def runs(sandbox) -> dict[str, subprocess.CompletedProcess[str]]:
    fast = ("-q", "-p", "sample_interval_s", "1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(sandbox.run, "service-health-dashboard", *fast,
                                     "-p", name, "2h")
                   for name in ("range", "lookback")}
        return {name: future.result() for name, future in futures.items()}


def _run_with(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode in (0, 1), result.stderr[-2000:]
    artifact = Path(result.stdout.strip().splitlines()[-1])  # the contract: the last line
    findings = json.loads((artifact / "findings.json").read_text())
    assert findings["parameters"]["lookback"] == "2h"
    assert "range" not in findings["parameters"]
    source = next(f for f in findings["findings"] if f["check"] == "dashboard.source")
    assert source["evidence"]["range"] == "2h"
    return findings


def test_cli_old_name_runs_as_lookback_with_one_deprecation_line(runs):
    result = runs["range"]
    _run_with(result)
    assert result.stderr.splitlines() == [DEPRECATION]  # -q: nothing else on stderr


def test_cli_new_name_runs_without_the_line(runs):
    result = runs["lookback"]
    _run_with(result)
    assert result.stderr == ""
