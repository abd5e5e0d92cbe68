"""Shared fixtures: real PostgreSQL clusters (pg_fixtures) and one live drill sandbox.

The sandbox is started once per session (once per pytest-xdist worker), lazily, by whichever
needs it first: a test using the `sandbox` fixture, or nbval's notebook items (which cannot use
fixtures, so a setup hook starts it and points the notebooks' kernels at it through the
environment).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# This file sits at the repository root so that it serves both tests/ and notebooks/ (nbval);
# the PostgreSQL fixtures live in tests/pg_fixtures.py.
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
import nbval_parameters  # noqa: E402
from pg_fixtures import *  # noqa: E402, F403 - fixtures: pg_cluster, make_cluster

from fraiseql_rb.sandbox import manager

REPO = Path(__file__).resolve().parent


@dataclass
class LiveSandbox:
    root: Path
    inventory: Path
    reports: Path

    def cli(self, *args: str, check: bool = False, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `fraiseql-rb` as a user would, against this sandbox's inventory."""
        env = {**os.environ, "FRAISEQL_RB_INVENTORY": str(self.inventory), **(env or {})}
        return subprocess.run([sys.executable, "-m", "fraiseql_rb", *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=check)

    def run(self, runbook: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("run", runbook, "--target", "sandbox", "--output-dir",
                        str(self.reports), *args)

    def inventory_without(self, *keys: str) -> Path:
        """A copy of the inventory lacking `keys` (e.g. prometheus_url), secrets by absolute
        path so it works from anywhere; returns its path."""
        import tomllib

        raw = tomllib.loads(self.inventory.read_text())["targets"]["sandbox"]
        lines = ["[targets.sandbox]"]
        for key, value in raw.items():
            if key in keys:
                continue
            if key.endswith("_file") and not str(value).startswith("/"):
                value = str(self.root / value)
            lines.append(f"{key} = {json.dumps(value)}")
        path = Path(tempfile.mkdtemp(prefix="inv-", dir=self.reports)) / "inventory.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def fault(self, name: str) -> None:
        manager.inject(self.root, name)

    def heal(self, name: str) -> None:
        manager.heal(self.root, name)


_live: LiveSandbox | None = None


def live_sandbox() -> LiveSandbox:
    global _live
    if _live is None:
        # one sandbox per pytest-xdist worker (gw0, gw1, ...): drills fault their own
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        root = Path(tempfile.mkdtemp(prefix=f"fraiseql-rb-test-sandbox-{worker}-", dir="/tmp"))
        shutil.rmtree(root)  # `up` wants to create it
        result = manager.up(root, audit_events=5_000)
        reports = Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-reports-"))
        _live = LiveSandbox(root, result.inventory, reports)
        os.environ["FRAISEQL_RB_INVENTORY"] = str(result.inventory)
        os.environ["FRAISEQL_RB_OUTPUT_DIR"] = str(reports)
    return _live


@pytest.fixture(scope="session")
def sandbox() -> LiveSandbox:
    return live_sandbox()


@pytest.fixture
def healthy_sandbox(sandbox: LiveSandbox) -> LiveSandbox:
    """The sandbox with every fault healed before and after the test."""
    for name in manager.Sandbox.open(sandbox.root).faults():
        sandbox.heal(name)
    yield sandbox
    for name in manager.Sandbox.open(sandbox.root).faults():
        sandbox.heal(name)


SANDBOX_FIXTURES = {"sandbox", "healthy_sandbox"}
CLUSTER_FIXTURES = {"pg_cluster", "make_cluster"}


# A module that starts processes (the CLI, a kernel, a server) is not made of unit tests.
_STARTS_PROCESSES = re.compile(r"\b(subprocess|Popen|multiprocessing|standin_server|"
                               r"prometheus\.start|redis_server)\b")


def _is_notebook(item: pytest.Item) -> bool:
    return ".ipynb::" in item.nodeid or item.nodeid.endswith(".ipynb")


@functools.cache
def _starts_processes(module: Path) -> bool:
    return bool(_STARTS_PROCESSES.search(module.read_text()))


def _shares_module_state(item: pytest.Item) -> bool:
    """Does the test use a module- or class-scoped fixture (set up once per worker that runs
    any test of the module, so the module's tests belong on one worker)?"""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d[-1].scope in ("module", "class") for d in defs if d)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Mark every test by what it needs, so `-m unit` runs the fast ones alone: `notebook`
    (nbval cells) and `sandbox` need the live sandbox, `postgres` a cluster of its own;
    the rest is `unit`. For `--dist loadgroup`, one group per file for the cells of one
    notebook (one kernel, in order), for a module with module-scoped fixtures, and for a
    module of sandbox tests (its drills are ordered so that a fault's after-effects, such as
    the error rate Prometheus still shows for a minute, never meet another module's healthy
    run); every other test goes to whichever worker is free."""
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if _is_notebook(item) or _shares_module_state(item) or needs & SANDBOX_FIXTURES:
            item.add_marker(pytest.mark.xdist_group(str(item.path.relative_to(REPO))))
        if _is_notebook(item):
            item.add_marker(pytest.mark.notebook)
            item.add_marker(pytest.mark.sandbox)
        elif needs & SANDBOX_FIXTURES:
            item.add_marker(pytest.mark.sandbox)
        elif needs & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        elif not item.get_closest_marker("slow") and not _starts_processes(item.path):
            item.add_marker(pytest.mark.unit)
    _schedule(items)


def _group(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark is not None else item.nodeid


def _schedule(items: list[pytest.Item]) -> None:
    """The order xdist hands out work (with --no-loadscope-reorder): groups that wait
    minutes (`long`) first, so the other workers run everything else meanwhile; then the
    largest groups first, as xdist's own reorder would. Stable: a group keeps its order."""
    sizes: dict[str, int] = {}
    for item in items:
        sizes[_group(item)] = sizes.get(_group(item), 0) + 1
    items.sort(key=lambda i: (i.get_closest_marker("long") is None, -sizes[_group(i)]))


_nbval_env: dict[str, str] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """nbval's kernel starts with the notebook's first cell and cannot take fixtures: start
    this worker's sandbox before it, so the kernel inherits the sandbox's inventory, and give
    it the short sampling windows of `nbval_parameters` (never to the kernels of runs that
    other tests start: they say their parameters themselves)."""
    if _is_notebook(item):
        live_sandbox()
        if not _nbval_env:
            _nbval_env.update(nbval_parameters.install(
                Path(tempfile.mkdtemp(prefix="fraiseql-rb-test-ipython-"))))
        os.environ.update(_nbval_env)
    else:
        for key in _nbval_env:
            os.environ.pop(key, None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if "IPYTHONDIR" in _nbval_env:
        shutil.rmtree(_nbval_env["IPYTHONDIR"], ignore_errors=True)
    if _live is not None:
        manager.down(_live.root, purge=True)
        shutil.rmtree(_live.reports, ignore_errors=True)
