"""The stand-in FraiseQL v2 server, run as a process against a real, throwaway PostgreSQL.

The database is the shared session cluster ``pg_cluster`` from tests/pg_fixtures.py (the real
sandbox schema, so v_user/v_post; reached as ``fraiseql_user`` with SCRAM over TLS), which these
tests only read. One main stand-in instance serves most tests; tests that need a differently
configured server start their own short-lived instance. The database outage test stops and
restarts PostgreSQL, so it gets a cluster of its own from ``make_cluster`` and its own stand-in.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraiseql_rb.sandbox.cluster import APP_USER, Cluster, free_port
from fraiseql_rb.sandbox.standin import document
from fraiseql_rb.sandbox.standin.app import App
from fraiseql_rb.sandbox.standin.config import load_settings

if TYPE_CHECKING:
    from pg_fixtures import PgPasswords

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Standin:
    """A running stand-in process and where to reach it."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    state_dir: Path
    secrets: tuple[str, ...]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FRAISEQL_") and k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    return env


def start_standin(workdir: Path, name: str, config: str, env: dict[str, str],
                  scheme: str = "http") -> Standin:
    port = free_port()
    cfg = workdir / f"{name}.toml"
    cfg.write_text(config, encoding="utf-8")
    state = workdir / f"{name}-state"
    state.mkdir(exist_ok=True)
    log = workdir / f"{name}.log"
    full_env = {**_clean_env(), "FRAISEQL_BIND_ADDR": f"127.0.0.1:{port}", **env}
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraiseql_rb.sandbox.standin", "--config", str(cfg),
             "--state-dir", str(state)],
            stdout=subprocess.DEVNULL, stderr=log_file, env=full_env, cwd=workdir)
    inst = Standin(proc, f"{scheme}://127.0.0.1:{port}", log, state,
                   tuple(v for k, v in env.items() if k.endswith("TOKEN")))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"stand-in exited {proc.returncode}: {inst.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return inst
        except OSError:
            time.sleep(0.1)
    inst.stop()
    raise AssertionError(f"stand-in did not listen: {inst.log_text()}")


BASE_CONFIG = """
pool_min_size = 2
pool_max_size = 5
pool_timeout_secs = 3
cors_enabled = false
"""
METRICS_TOKEN = "mt-" + secrets.token_urlsafe(24)
ADMIN_TOKEN = "at-" + secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="standin-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(pg_app_dsn: str, workdir: Path) -> Iterator[Standin]:
    """The main instance: metrics and admin API on, secrets passed only through the env."""
    inst = start_standin(
        workdir, "main", BASE_CONFIG + "metrics_enabled = true\nadmin_api_enabled = true\n",
        {"DATABASE_URL": pg_app_dsn, "FRAISEQL_METRICS_TOKEN": METRICS_TOKEN,
         "FRAISEQL_ADMIN_TOKEN": ADMIN_TOKEN})
    yield inst
    assert inst.stop() == 0
    assert "shutdown complete" in inst.log_text()


@pytest.fixture(scope="module")
def client(server: Standin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def gql(client: httpx.Client, query: str, **extra: object) -> httpx.Response:
    return client.post("/graphql", json={"query": query, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scrape(client: httpx.Client) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]],
                                                   float]]:
    resp = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert resp.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return resp.text, samples


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- health, readiness, GraphQL ----------------------------------------------------------


def test_health_shape(client: httpx.Client) -> None:
    assert wait_for(lambda: client.get("/health").status_code == 200, 10)
    body = client.get("/health").json()
    assert list(body) == ["status", "database", "version", "schema_hash"]
    assert body["status"] == "healthy"
    assert list(body["database"]) == ["connected", "database_type", "active_connections",
                                      "idle_connections"]
    assert body["database"]["connected"] is True
    assert body["database"]["database_type"] == "PostgreSQL"
    assert body["version"].endswith("-standin")
    assert re.fullmatch(r"[0-9a-f]{32}", body["schema_hash"])


def test_readiness(client: httpx.Client) -> None:
    resp = client.get("/readiness")
    assert (resp.status_code, resp.json()) == (200, {"status": "ready"})


def test_typename_probe(client: httpx.Client) -> None:
    resp = gql(client, "{ __typename }")
    assert (resp.status_code, resp.json()) == (200, {"data": {"__typename": "Query"}})
    get = client.get("/graphql", params={"query": "{ __typename }"})
    assert get.json() == {"data": {"__typename": "Query"}}


def test_introspection_refused_by_default(client: httpx.Client) -> None:
    resp = gql(client, "{ __schema { types { name } } }")
    assert resp.status_code == 200
    body = resp.json()
    assert "data" not in body
    assert "Introspection" in body["errors"][0]["message"]


def test_users_query_returns_requested_fields(client: httpx.Client) -> None:
    resp = gql(client, "query Users($n: Int) { users(limit: $n) { id name } }",
               variables={"n": 3}, operationName="Users")
    assert resp.status_code == 200
    users = resp.json()["data"]["users"]
    assert len(users) == 3
    assert all(set(u) == {"id", "name"} for u in users)
    posts = gql(client, "{ p: posts(limit: 2) { title author { name } } }").json()["data"]["p"]
    assert len(posts) == 2 and set(posts[0]["author"]) == {"name"}
    skipping = gql(client, "query S($off: Boolean = false) { a: users(limit: 1) { i: id } "
                           "b: posts(limit: 1) @skip(if: true) { id } "
                           "c: posts(limit: 1) @include(if: $off) { id } }")
    assert list(skipping.json()["data"]) == ["a"]
    assert list(skipping.json()["data"]["a"][0]) == ["i"]


def test_graphql_errors(client: httpx.Client) -> None:
    parse = gql(client, "{ users { id ")
    err = parse.json()["errors"][0]
    assert parse.status_code == 200 and err["code"] == "PARSE_ERROR"
    assert err["locations"][0]["line"] == 1
    unknown = gql(client, "{ nope { id } }")
    assert unknown.status_code == 200
    assert unknown.json()["errors"][0]["code"] == "VALIDATION_ERROR"
    assert "nope" in unknown.json()["errors"][0]["message"]
    bad_sub = gql(client, "{ users { password } }")
    assert bad_sub.json()["errors"][0]["code"] == "VALIDATION_ERROR"
    fragment = gql(client, "{ users { ...F } } fragment F on User { id }")
    assert fragment.status_code == 200
    assert fragment.json()["errors"] == [{"message": "Fragments are not supported by this server.",
                                          "code": "VALIDATION_ERROR",
                                          "locations": [{"line": 1, "column": 11}]}]
    empty = gql(client, "{}").json()["errors"][0]
    assert (empty["code"], empty["locations"]) == ("PARSE_ERROR", [{"line": 1, "column": 2}])
    plain = client.post("/graphql", content="{}", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415


# ---- GraphQL documents and the routing table, in process ---------------------------------


@pytest.mark.parametrize(
    ("query", "operation", "code", "message", "where"),
    [
        ("{ users { id ", None, "PARSE_ERROR", "Syntax Error: Expected Name, found <EOF>.",
         (1, 14)),
        ("{}", None, "PARSE_ERROR", "Syntax Error: Expected Name, found '}'.", (1, 2)),
        ("{ users {\n  id\n}\n}\n}", None, "PARSE_ERROR", "Syntax Error: Unexpected '}'.", (5, 1)),
        ("{ __typename }\ntype Foo { id: ID }", None, "PARSE_ERROR",
         "Syntax Error: Unexpected Name 'type'.", (2, 1)),
        ("{ users { ...F } } fragment F on User { id }", None, "VALIDATION_ERROR",
         "Fragments are not supported by this server.", (1, 11)),
        ("fragment F on User { id }\n{ users { ...F } }", None, "VALIDATION_ERROR",
         "Fragments are not supported by this server.", (1, 1)),
        ("{ users { ... on User { id } } }", None, "VALIDATION_ERROR",
         "Fragments are not supported by this server.", (1, 11)),
        ("query A { __typename } query B { __typename }", None, "VALIDATION_ERROR",
         "Must provide operation name if query contains multiple operations.", None),
        ("query A { __typename }", "B", "VALIDATION_ERROR", 'Unknown operation named "B".',
         None),
    ],
)
def test_document_refusals(query: str, operation: str | None, code: str, message: str,
                           where: tuple[int, int] | None) -> None:
    with pytest.raises(document.DocumentError) as info:
        document.parse_operation(query, operation)
    exc = info.value
    kind = "PARSE_ERROR" if isinstance(exc, document.QuerySyntaxError) else "VALIDATION_ERROR"
    assert (kind, str(exc), (exc.line, exc.column) if exc.line else None) == (code, message, where)


def test_document_operation_values_and_cost() -> None:
    op = document.parse_operation(
        "query Q($n: Int = 3, $c: Boolean!) { u: users(limit: $n, offset: 2) @skip(if: $c) "
        "{ id name } posts { title author { name } } } query R { __typename }", "Q")
    fields = document.fields_of(op.selection_set) or []
    variables = document.with_variable_defaults(op, {"c": False})
    assert variables == {"c": False, "n": 3}
    assert [document.response_key(f) for f in fields] == ["u", "posts"]
    assert document.arguments(fields[0], variables) == {"limit": 3, "offset": 2}
    assert not document.skipped(fields[0], variables)
    assert document.skipped(fields[0], {"c": True})
    assert document.operation_cost(op) == 7  # u, id, name, posts, title, author, name


def test_every_url_leads_to_its_route_module(tmp_path: Path) -> None:
    """The routing table names each URL's handler; its module is the route family's file."""
    cfg = tmp_path / "routes.toml"
    cfg.write_text(BASE_CONFIG + "metrics_enabled = true\nadmin_api_enabled = true\n",
                   encoding="utf-8")
    settings = load_settings(cfg, {"DATABASE_URL": "postgresql://u@127.0.0.1:1/fraiseql",
                                   "FRAISEQL_METRICS_TOKEN": METRICS_TOKEN,
                                   "FRAISEQL_ADMIN_TOKEN": ADMIN_TOKEN})
    app = App(settings, None)  # the pool is not opened: nothing connects
    table = {path: {m: f"{h.__module__.rsplit('.', 1)[-1]}.{h.__name__}"
                    for m, h in methods.items()} for path, methods in app.routes.items()}
    assert table == {
        "/health": {"GET": "health.health"},
        "/readiness": {"GET": "health.readiness"},
        "/graphql": {"GET": "graphql.get", "POST": "graphql.post"},
        "/.well-known/openid-configuration": {"GET": "oidc.discovery"},
        "/.well-known/jwks.json": {"GET": "oidc.jwks"},
        "/metrics": {"GET": "metrics.text"},
        "/metrics/json": {"GET": "metrics.json"},
        "/api/v1/admin/reload-schema": {"POST": "admin.reload_schema"},
        "/api/v1/admin/cache/clear": {"POST": "admin.cache_clear"},
        "/api/v1/admin/cache/stats": {"GET": "admin.cache_stats"},
        "/api/v1/admin/config": {"GET": "admin.config"},
        "/admin/v1/health/detailed": {"GET": "admin.health_detailed"},
        "/admin/v1/metrics/summary": {"GET": "admin.metrics_summary"},
    }


# ---- metrics -----------------------------------------------------------------------------


def test_metrics_auth(client: httpx.Client) -> None:
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers=bearer("wrong-token-value"))
    assert (wrong.status_code, wrong.text) == (403, "Invalid token")
    ok = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_metrics_names_types_and_movement(client: httpx.Client) -> None:
    _, before = scrape(client)
    gql(client, "{ users(limit: 1) { id } }")
    gql(client, "{ users(limit: 1) { id } }")  # second one is served from the cache
    gql(client, "{ broken ")
    text, after = scrape(client)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert not [n for n in types if n.startswith(("process_", "python_"))]
    expected = {
        "fraiseql_graphql_queries_total": "counter", "fraiseql_graphql_queries_success": "counter",
        "fraiseql_graphql_queries_error": "counter", "fraiseql_cache_hits": "counter",
        "fraiseql_cache_misses": "counter", "fraiseql_cache_hit_ratio": "gauge",
        "fraiseql_graphql_query_duration_ms": "gauge",
        "fraiseql_query_duration_seconds": "histogram",
        "fraiseql_query_errors_total": "counter",
        "fraiseql_database_query_duration_seconds": "histogram",
        "fraiseql_database_query_duration_ms": "gauge",
        "fraiseql_db_pool_connections_total": "gauge",
        "fraiseql_db_pool_connections_idle": "gauge",
        "fraiseql_db_pool_connections_active": "gauge",
        "fraiseql_db_pool_requests_waiting": "gauge",
        "fraiseql_http_requests_total": "counter", "fraiseql_http_responses_2xx": "counter",
        "fraiseql_http_responses_4xx": "counter", "fraiseql_http_responses_5xx": "counter",
        "fraiseql_http_request_duration_seconds": "histogram",
        "fraiseql_parse_errors_total": "counter", "fraiseql_validation_errors_total": "counter",
        "fraiseql_execution_errors_total": "counter", "fraiseql_apq_hits_total": "counter",
        "fraiseql_schema_reloads_total": "counter",
        "fraiseql_schema_reload_errors_total": "counter",
        "fraiseql_jwt_replay_rejected_total": "counter",
        "fraiseql_rate_limit_redis_errors_total": "counter",
        "fraiseql_graphql_queries_cost_total": "counter",
    }
    assert {n: types.get(n) for n in expected} == expected
    assert "fraiseql_cache_hits_total" not in types

    def delta(name: str) -> float:
        return after.get((name, ()), 0.0) - before.get((name, ()), 0.0)

    assert delta("fraiseql_graphql_queries_total") == 3
    assert delta("fraiseql_graphql_queries_error_total") == 1  # parser appends _total
    assert delta("fraiseql_parse_errors_total") == 1
    assert delta("fraiseql_graphql_queries_cost_total") == 4  # one per field; cached ones too
    assert delta("fraiseql_cache_hits_total") >= 1
    assert delta("fraiseql_http_requests_total") >= 4
    assert after[("fraiseql_query_duration_seconds_count", (("operation", "users"),))] >= 2
    js = client.get("/metrics/json", headers=bearer(METRICS_TOKEN)).json()
    assert list(js) == ["queries_total", "queries_success", "queries_error",
                        "avg_query_duration_ms", "cache_hit_ratio", "pool_connections_total",
                        "pool_connections_idle", "pool_connections_active",
                        "pool_requests_waiting"]


def test_metrics_and_admin_404_without_tokens(pg_app_dsn: str, workdir: Path) -> None:
    inst = start_standin(workdir, "bare", BASE_CONFIG, {"DATABASE_URL": pg_app_dsn})
    try:
        with httpx.Client(base_url=inst.url, timeout=10) as c:
            assert c.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 404
            assert c.get("/metrics/json").status_code == 404
            assert c.get("/api/v1/admin/config").status_code == 404
            assert c.get("/admin/v1/health/detailed").status_code == 404
            assert c.get("/no/such/path").status_code == 404
    finally:
        assert inst.stop() == 0


def test_metrics_429_after_ten_failures(pg_app_dsn: str, workdir: Path) -> None:
    token = "m-" + secrets.token_urlsafe(20)
    inst = start_standin(workdir, "brute", BASE_CONFIG + "metrics_enabled = true\n",
                         {"DATABASE_URL": pg_app_dsn, "FRAISEQL_METRICS_TOKEN": token})
    try:
        with httpx.Client(base_url=inst.url, timeout=10) as c:
            codes = [c.get("/metrics", headers=bearer(f"guess-{i}")).status_code
                     for i in range(10)]
            assert codes == [403] * 9 + [429]
            # Blocked for the rest of the window, even with the right token.
            assert c.get("/metrics", headers=bearer(token)).status_code == 429
    finally:
        assert inst.stop() == 0


# ---- admin -------------------------------------------------------------------------------


def test_admin_endpoints_need_admin_token(client: httpx.Client) -> None:
    gets = ["/admin/v1/health/detailed", "/admin/v1/metrics/summary",
            "/api/v1/admin/cache/stats", "/api/v1/admin/config"]
    for path in gets:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer(METRICS_TOKEN)).status_code == 403, path
        assert client.get(path, headers=bearer(ADMIN_TOKEN)).status_code == 200, path
    detailed = client.get(gets[0], headers=bearer(ADMIN_TOKEN)).json()
    assert list(detailed) == ["uptime_secs", "version", "pool_active", "pool_idle", "pool_max",
                              "cache_hit_rate", "cache_entries"]
    summary = client.get(gets[1], headers=bearer(ADMIN_TOKEN)).json()
    assert set(summary) == {"latency", "errors", "pool", "cache", "subscriptions"}
    config = client.get("/api/v1/admin/config", headers=bearer(ADMIN_TOKEN))
    assert config.json()["status"] == "success"
    assert METRICS_TOKEN not in config.text and ADMIN_TOKEN not in config.text
    assert config.json()["data"]["config"]["admin_token"] == "[REDACTED]"
    assert client.post("/api/v1/admin/cache/clear", json={"scope": "all"}).status_code == 401
    cleared = client.post("/api/v1/admin/cache/clear", json={"scope": "all"},
                          headers=bearer(ADMIN_TOKEN))
    assert cleared.json()["data"]["success"] is True
    missing = client.post("/api/v1/admin/reload-schema",
                          json={"schema_path": "/nonexistent.json", "validate_only": False},
                          headers=bearer(ADMIN_TOKEN))
    assert missing.status_code == 400 and missing.json()["code"] == "PARSE_ERROR"


# ---- startup refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("[server]\nhost = \"0.0.0.0\"\nport = 8000\n", "[server]"),
        ("listen_addr = \"0.0.0.0:4000\"\n", "listen_addr"),
        ("cors_enabled = false\nmetrics_enabled = true\n", "metrics_token is not set"),
    ],
)
def test_bad_config_refused(workdir: Path, config: str, needle: str) -> None:
    cfg = workdir / "bad.toml"
    cfg.write_text(config, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb.sandbox.standin", "--config", str(cfg)],
        env=_clean_env(), capture_output=True, text=True, timeout=30, cwd=workdir)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


# ---- TLS ---------------------------------------------------------------------------------


def _write_cert(directory: Path, common_name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def test_tls_serves_and_swaps_certificate(pg_app_dsn: str, workdir: Path) -> None:
    tls_dir = workdir / "tls"
    tls_dir.mkdir()
    cert, key = _write_cert(tls_dir, "standin-one")
    config = BASE_CONFIG + (f'[tls]\nenabled = true\ncert_path = "{cert}"\n'
                            f'key_path = "{key}"\nmin_version = "1.2"\n')
    inst = start_standin(workdir, "tls", config, {"DATABASE_URL": pg_app_dsn}, scheme="https")
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=inst.url, verify=ctx, timeout=10) as c:
            assert c.get("/readiness").status_code == 200
        port = int(inst.url.rsplit(":", 1)[1])
        first = ssl.get_server_certificate(("127.0.0.1", port))
        time.sleep(1.1)
        _write_cert(tls_dir, "standin-two")
        assert wait_for(lambda: ssl.get_server_certificate(("127.0.0.1", port)) != first, 5)
    finally:
        assert inst.stop() == 0


# ---- faults and database outage ----------------------------------------------------------


def test_error_spike_fault(server: Standin, client: httpx.Client) -> None:
    faults = server.state_dir / "faults.json"
    faults.write_text(json.dumps({"error-spike": {"operation": "posts"}}), encoding="utf-8")
    try:
        _, before = scrape(client)
        resp = gql(client, "{ posts(limit: 1) { id } }")
        assert resp.status_code == 500
        assert resp.json()["errors"][0]["code"] == "DATABASE_ERROR"
        assert gql(client, "{ users(limit: 2) { id } }").status_code == 200
        _, after = scrape(client)
        key = ("fraiseql_query_errors_total", (("operation", "posts"),))
        assert after[key] - before.get(key, 0.0) == 1
    finally:
        faults.unlink()
    assert gql(client, "{ posts(limit: 1) { id } }").status_code == 200


def test_memory_leak_fault(server: Standin, client: httpx.Client) -> None:
    def rss_kib() -> int:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    faults = server.state_dir / "faults.json"
    start = rss_kib()
    faults.write_text(json.dumps({"memory-leak": {"bytes_per_request": 4 * 1024 * 1024}}))
    try:
        for _ in range(10):
            client.get("/readiness")
        assert rss_kib() - start > 30 * 1024
    finally:
        faults.unlink()
    client.get("/readiness")


def test_database_outage_and_recovery(make_cluster: Callable[..., Cluster],
                                      pg_passwords: PgPasswords, workdir: Path) -> None:
    pg = make_cluster(provision=True, audit_events=100)  # its own: this test stops PostgreSQL
    inst = start_standin(workdir, "outage", BASE_CONFIG,
                         {"DATABASE_URL": pg.dsn(APP_USER, pg_passwords.app)})
    try:
        with httpx.Client(base_url=inst.url, timeout=10) as client:
            # a healthy server with live pool connections first, as the main instance would be
            assert wait_for(lambda: client.get("/health").status_code == 200, 10)
            # (not the query asserted below, which would then be answered from the cache)
            assert gql(client, "{ users(limit: 1) { id } }").status_code == 200
            pg.stop()
            try:
                t0 = time.monotonic()
                resp = client.get("/health")
                while resp.status_code != 503 and time.monotonic() - t0 < 5:
                    resp = client.get("/health")
                assert resp.status_code == 503
                assert time.monotonic() - t0 < 5
                body = resp.json()
                assert body["status"] == "unhealthy" and body["database"]["connected"] is False
                assert client.get("/readiness").json()["status"] == "not_ready"
                failed = gql(client, "{ users(limit: 4) { email } }")
                assert failed.status_code == 500
                assert failed.json()["errors"][0]["code"] == "DATABASE_ERROR"
            finally:
                pg.start()
            assert wait_for(lambda: client.get("/health").status_code == 200, 15)
            assert gql(client, "{ users(limit: 4) { email } }").status_code == 200
    finally:
        assert inst.stop() == 0


def test_no_secret_in_log(server: Standin, client: httpx.Client) -> None:
    client.get("/metrics", headers=bearer(METRICS_TOKEN))
    client.get("/api/v1/admin/config", headers=bearer(ADMIN_TOKEN))
    text = server.log_text()
    assert "path=/metrics status=200" in text
    for token in server.secrets:
        assert token not in text
    assert "Authorization" not in text and "Bearer" not in text


# ---- drill behaviours: slow-query, leak-connections, memory release, OIDC ----------------


def _with_faults(server: Standin, flags: dict[str, object]) -> Path:
    path = server.state_dir / "faults.json"
    path.write_text(json.dumps(flags), encoding="utf-8")
    return path


def test_slow_query_fault_sleeps_in_the_database_and_bypasses_the_cache(
        server: Standin, client: httpx.Client) -> None:
    query = "{ users(limit: 6) { id } }"
    assert gql(client, query).status_code == 200  # now cached
    _, before = scrape(client)
    faults = _with_faults(server, {"slow-query": {"delay_ms": 400}})
    try:
        for _ in range(2):  # the same query twice: neither answered from the cache
            t0 = time.monotonic()
            assert gql(client, query).status_code == 200
            assert time.monotonic() - t0 >= 0.4
    finally:
        faults.unlink()
    _, after = scrape(client)
    db_sum = "fraiseql_database_query_duration_seconds_sum"
    assert after[(db_sum, ())] - before[(db_sum, ())] >= 0.8
    t0 = time.monotonic()
    assert gql(client, query).status_code == 200
    assert time.monotonic() - t0 < 0.4


def test_leak_connections_fault_holds_pool_connections_idle_in_transaction(
        server: Standin, client: httpx.Client, pg_cluster: Cluster) -> None:
    def idle_in_transaction() -> int:
        with pg_cluster.connect("fraiseql") as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                               "= 'fraiseql-standin' AND state = 'idle in transaction'"
                               ).fetchone()
        return int(row[0]) if row else 0

    def active() -> float:
        return scrape(client)[1][("fraiseql_db_pool_connections_active", ())]

    faults = _with_faults(server, {"leak-connections": {"count": 3}})
    try:
        assert wait_for(lambda: active() >= 3, 5)
        # a connection counts as active from its checkout, before its BEGIN; SELECT 1 is done
        assert wait_for(lambda: idle_in_transaction() >= 3, 5)
    finally:
        faults.unlink()
    assert wait_for(lambda: idle_in_transaction() == 0, 5)
    assert wait_for(lambda: active() == 0, 5)


def test_memory_leak_is_capped_and_freed_without_further_requests(
        server: Standin, client: httpx.Client) -> None:
    def rss_mib() -> float:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    start = rss_mib()
    faults = _with_faults(server, {"memory-leak": {"bytes_per_request": 8 << 20,
                                                   "max_bytes": 40 << 20}})
    try:
        for _ in range(12):  # 96 MiB asked for, 40 MiB allowed
            client.get("/readiness")
        grown = rss_mib() - start
        assert 30 < grown < 60
    finally:
        faults.unlink()
    assert wait_for(lambda: rss_mib() - start < 10, 5), "freed by the fault watcher"


def test_oidc_discovery_and_jwks(server: Standin, client: httpx.Client) -> None:
    discovery = client.get("/.well-known/openid-configuration")
    assert discovery.status_code == 200
    doc = discovery.json()
    assert doc["issuer"] == server.url
    assert doc["jwks_uri"] == f"{server.url}/.well-known/jwks.json"
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert len(keys) == 2 and len({k["kid"] for k in keys}) == 2
    for key in keys:
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert "d" not in key, "public parts only"
    faults = _with_faults(server, {"oidc-down": {}})
    try:
        assert client.get("/.well-known/openid-configuration").status_code == 503
        assert client.get("/.well-known/jwks.json").status_code == 503
    finally:
        faults.unlink()
    assert client.get("/.well-known/jwks.json").json()["keys"] == keys


def test_auth_table_accepted_and_logged(pg_app_dsn: str, workdir: Path) -> None:
    config = BASE_CONFIG + ('[auth]\nissuer = "http://127.0.0.1:9"\naudience = "sandbox"\n'
                            'jwks_uri = "http://127.0.0.1:9/.well-known/jwks.json"\n'
                            'jwks_cache_ttl_secs = 60\nallowed_algorithms = ["ES256"]\n'
                            'required = false\nscope_claim = "scp"\n')
    inst = start_standin(workdir, "auth", config, {"DATABASE_URL": pg_app_dsn})
    try:
        with httpx.Client(base_url=inst.url, timeout=10) as c:
            assert wait_for(lambda: c.get("/readiness").status_code == 200, 10)
            assert c.get("/.well-known/openid-configuration").json()["issuer"] == inst.url
    finally:
        assert inst.stop() == 0
    log = inst.log_text()
    assert "OIDC auth: issuer http://127.0.0.1:9, audience sandbox" in log
    assert "required = true" not in log


@pytest.mark.parametrize(
    ("auth", "needle"),
    [
        ('audience = "a"\n', "missing field `issuer` in [auth]"),
        ('issuer = "https://idp.example"\n', "OIDC audience is REQUIRED"),
        ('issuer = "http://idp.example"\naudience = "a"\n', "OIDC issuer must use HTTPS"),
        ('issuer = "https://idp.example"\naudience = "a"\nallowed_algorithms = []\n',
         "At least one algorithm must be allowed"),
        ('issuer = "https://idp.example"\naudience = "a"\njwks_cache_ttl_secs = "5m"\n',
         "auth.jwks_cache_ttl_secs"),
    ],
)
def test_bad_auth_table_refused(workdir: Path, auth: str, needle: str) -> None:
    cfg = workdir / "bad-auth.toml"
    cfg.write_text("cors_enabled = false\n[auth]\n" + auth, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb.sandbox.standin", "--config", str(cfg)],
        env=_clean_env(), capture_output=True, text=True, timeout=30, cwd=workdir)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
