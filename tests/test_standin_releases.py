"""The stand-in emulates FraiseQL releases (issue 11 §1): each release started as a process
against the shared session cluster answers what that release of the real server answers
(see fraiseql_rb/sandbox/standin/releases.py for the facts and where they were read); the
observer fault degrades /health; `sandbox up --server-version` records and serves a release.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraiseql_rb.sandbox.cluster import free_port
from fraiseql_rb.sandbox.standin import releases

REPO = Path(__file__).resolve().parents[1]
METRICS_TOKEN = "mt-" + secrets.token_urlsafe(24)
ADMIN_TOKEN = "at-" + secrets.token_urlsafe(32)
# request_timeout_secs 1: the stand-in's statements time out after a second, so the
# slow-query fault (1.5 s inside PostgreSQL) is an execution timeout
CONFIG = """
pool_min_size = 1
pool_max_size = 4
pool_timeout_secs = 3
cors_enabled = false
metrics_enabled = true
admin_api_enabled = true
request_timeout_secs = 1
"""
RELEASES = ("2.9", "2.14.1", "main", "foreign")
V2 = ("2.9", "2.14.1", "main")


class Standin:
    """One stand-in process emulating `release`, with its fault file."""

    def __init__(self, workdir: Path, release: str, dsn: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.state = workdir / f"{release}-state"
        self.state.mkdir()
        cfg = workdir / f"{release}.toml"
        cfg.write_text(CONFIG, encoding="utf-8")
        self.log = workdir / f"{release}.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FRAISEQL_") and k != "DATABASE_URL"}
        env.update(PYTHONPATH=str(REPO), DATABASE_URL=dsn,
                   FRAISEQL_BIND_ADDR=f"127.0.0.1:{port}",
                   FRAISEQL_METRICS_TOKEN=METRICS_TOKEN, FRAISEQL_ADMIN_TOKEN=ADMIN_TOKEN)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fraiseql_rb.sandbox.standin", "--config", str(cfg),
                 "--state-dir", str(self.state), "--release", release],
                stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=workdir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def faults(self, flags: dict[str, object]) -> None:
        (self.state / "faults.json").write_text(json.dumps(flags), encoding="utf-8")

    def gql(self, query: str) -> httpx.Response:
        return self.client.post("/graphql", json={"query": query})

    def metrics(self) -> dict[str, float]:
        resp = self.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert resp.status_code == 200
        return {s.name + json.dumps(s.labels, sort_keys=True) if s.labels else s.name: s.value
                for family in text_string_to_metric_families(resp.text)
                for s in family.samples}

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=15) == 0


@pytest.fixture(scope="module")
def standins(pg_app_dsn: str) -> Iterator[dict[str, Standin]]:
    """One stand-in per release, started side by side (each takes about a second)."""
    workdir = Path(tempfile.mkdtemp(prefix="standin-releases-"))
    started = {name: Standin(workdir, name, pg_app_dsn) for name in RELEASES}
    try:
        yield started
    finally:
        for inst in started.values():
            inst.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_release_names_and_aliases() -> None:
    for text in ("2.9", "2.9.x", "2.9.X", "2.9.0", "v2.9", "v2.9.x"):
        assert releases.resolve(text).name == "2.9"
    assert releases.resolve("v2.14.1").name == "2.14.1"
    assert releases.resolve(None).name == releases.resolve("main").name == "main"
    for bad in ("2.14", "2.10.0", "3.0", "latest", "2.9.1"):
        with pytest.raises(releases.UnknownRelease, match="emulates 2.9, 2.14.1, main, foreign"):
            releases.resolve(bad)


@pytest.mark.parametrize("release", RELEASES)
def test_root_typename(standins: dict[str, Standin], release: str) -> None:
    resp = standins[release].gql("{ __typename }")
    assert resp.status_code == 200
    if release == "2.9":
        assert resp.json() == {"errors": [{
            "message": "Validation error: Query '__typename' not found in schema",
            "code": "VALIDATION_ERROR"}]}
    else:
        assert resp.json() == {"data": {"__typename": "Query"}}
    # a real query works on every release
    users = standins[release].gql("{ users(limit: 1) { id } }")
    assert users.status_code == 200 and len(users.json()["data"]["users"]) == 1


@pytest.mark.parametrize("release", RELEASES)
def test_health_version_and_readiness(standins: dict[str, Standin], release: str) -> None:
    client = standins[release].client
    health = client.get("/health")
    assert health.status_code == 200
    readiness = client.get("/readiness")
    if release == "foreign":
        assert health.json() == {"status": "ok"}
        assert readiness.status_code == 404
        return
    body = health.json()
    assert body["status"] == "healthy" and "schema_hash" in body
    assert body["version"] == {"2.9": "2.9.0", "2.14.1": "2.14.1"}.get(
        release, releases.RELEASES["main"].version)
    assert readiness.status_code == 200
    detailed = client.get("/admin/v1/health/detailed",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert detailed.json()["version"] == body["version"]


@pytest.mark.parametrize("release", RELEASES)
def test_timeout_status(standins: dict[str, Standin], release: str) -> None:
    inst = standins[release]
    before = inst.metrics()
    inst.faults({"slow-query": {"delay_ms": 1500}})
    try:
        resp = inst.gql("{ posts(limit: 2) { id } }")
    finally:
        inst.faults({})
    expected = 408 if release in ("2.9", "2.14.1") else 504
    assert resp.status_code == expected
    assert resp.json() == {"errors": [{"message": "Query timeout after 1000ms",
                                       "code": "TIMEOUT"}]}
    if release == "foreign":
        return
    # (the parser appends _total to counters named without it); the HTTP counters move just
    # after the response is written, so give them a moment
    klass = f"fraiseql_http_responses_{'4xx' if expected == 408 else '5xx'}_total"
    deadline = time.monotonic() + 5
    while (after := inst.metrics())[klass] == before[klass] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after[klass] - before[klass] >= 1
    errors = "fraiseql_graphql_queries_error_total"
    assert after[errors] - before[errors] == 1


@pytest.mark.parametrize("release", RELEASES)
def test_cache_stats_shape(standins: dict[str, Standin], release: str) -> None:
    resp = standins[release].client.get("/api/v1/admin/cache/stats",
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if release == "foreign":
        assert resp.status_code == 404
        return
    assert resp.status_code == 200
    data = resp.json()["data"]
    if release == "main":
        assert set(data) == {"caches", "message"}
        (entry,) = data["caches"]
        assert entry["cache"] == "query_result" and entry["configured"] is True
        assert {"entries_count", "hits", "misses", "ttl_secs", "max_entries"} <= set(entry)
        assert data["message"] == "Configured cache(s): query_result"
    else:
        assert set(data) == {"entries_count", "cache_enabled", "ttl_secs", "message"}


@pytest.mark.parametrize("release", RELEASES)
def test_metric_names(standins: dict[str, Standin], release: str) -> None:
    inst = standins[release]
    inst.gql("{ users(limit: 1) { id } }")
    names = inst.metrics()
    cost = "fraiseql_graphql_queries_cost_total"
    if release == "foreign":
        assert not [n for n in names if n.startswith("fraiseql_")]
        assert any(n.startswith("http_requests_total") for n in names)
        assert inst.client.get("/metrics/json", headers={
            "Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 404
        return
    assert "fraiseql_graphql_queries_total" in names
    assert (cost in names) is (release == "main")


@pytest.mark.parametrize("release", RELEASES)
def test_observer_fault_degrades_health(standins: dict[str, Standin], release: str) -> None:
    inst = standins[release]
    inst.faults({"observer-fail": {}})
    try:
        resp = inst.client.get("/health")
    finally:
        inst.faults({})
    assert resp.status_code == 200
    if release == "foreign":
        assert resp.json() == {"status": "ok"}
        return
    body = resp.json()
    assert body["status"] == "degraded"
    assert body["observers"]["running"] is False
    assert isinstance(body["observers"]["events_processed"], int)
    assert body["observers"]["last_error"]
    healed = inst.client.get("/health").json()
    assert healed["status"] == "healthy" and "observers" not in healed


@pytest.mark.parametrize("release", V2)
def test_backfilled_history_has_the_cost_counter_only_where_the_release_does(
        release: str) -> None:
    from fraiseql_rb.sandbox import prometheus

    history = prometheus._History("fraiseql", "127.0.0.1:8443", 42)
    prometheus._simulate(history, list(range(0, 3600, 300)), 300,
                         cost_metric=releases.RELEASES[release].cost_metric)
    names = {name for name, _ in history.series}
    assert "fraiseql_graphql_queries_total" in names
    assert ("fraiseql_graphql_queries_cost_total" in names) is (release == "main")


def test_unknown_release_refused_by_the_standin(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb.sandbox.standin", "--config", str(cfg),
         "--release", "9.9"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO),
             "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: unknown FraiseQL release '9.9': the stand-in emulates 2.9, 2.14.1, main, "
        "foreign (2.9 also as 2.9.x or 2.9.0)"]


def test_sandbox_up_refuses_an_unknown_release(tmp_path: Path) -> None:
    root = tmp_path / "sb"
    result = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir", str(root), "up",
         "--server-version", "1.0"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 64
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown FraiseQL release '1.0'" in result.stderr
    assert not root.exists()


@pytest.mark.slow
def test_sandbox_up_serves_the_release_and_switches() -> None:
    from fraiseql_rb.sandbox import server
    from fraiseql_rb.sandbox.state import Sandbox

    # not pytest's tmp_path: it sits under a 0700 directory the postgres user cannot enter
    root = Path(tempfile.mkdtemp(prefix="fraiseql-rb-rel-", dir="/tmp")) / "sandbox"
    root.parent.chmod(0o755)
    run = [sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir", str(root)]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run, *args], capture_output=True, text=True, timeout=180)

    def health() -> dict[str, object]:
        sb = Sandbox.open(root)
        verify = ssl.create_default_context(cafile=str(sb.ca_cert))
        return httpx.get(f"{sb.server_url}/health", timeout=5, verify=verify).json()

    def version() -> object:
        return health().get("version")

    try:
        up = cli("up", "--audit-events", "100", "--server-version", "2.14.1")
        assert up.returncode == 0, up.stderr
        assert version() == "2.14.1"
        status = cli("status")
        assert status.returncode == 0 and "release 2.14.1" in status.stdout, status.stdout
        # the inventory's restart command keeps the recorded release
        assert cli("service", "restart").returncode == 0
        assert version() == "2.14.1"
        assert "Release: 2.14.1" in cli("service", "status").stdout
        # a patch upgrade switches the running sandbox to another release
        server.restart(Sandbox.open(root), release="2.9.x")
        assert version() == "2.9.0"
        assert Sandbox.open(root).server_release == "2.9"
        assert "release 2.9 " in cli("status").stdout
        # the observer fault, through the sandbox, on the switched server
        assert cli("fault", "observer-fail").returncode == 0
        assert health()["status"] == "degraded"
        assert cli("heal", "observer-fail").returncode == 0
        assert health()["status"] == "healthy"
    finally:
        cli("down", "--purge")
        shutil.rmtree(root.parent, ignore_errors=True)
