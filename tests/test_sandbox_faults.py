"""The incident faults of the drill sandbox, each against the live sandbox: the real symptom
while it is injected, and its disappearance after heal (processes gone, rows deleted, flags
cleared). Symptoms are read the way a playbook reads them: pg_stat_activity, pg_locks, the
audit table, the stand-in's /metrics, /proc, its log, TLS handshakes.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from fraiseql_rb.checks import tls
from fraiseql_rb.sandbox import faults, holder, processes, server
from fraiseql_rb.sandbox.state import Sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.drill]


# ---- helpers -------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """The first truthy value of `predicate` within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def sql(sb: Sandbox, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(**sb.cluster.superuser_conninfo("fraiseql"), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def verify(sb: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sb.ca_cert))


def scrape(sb: Sandbox) -> list[Any]:
    response = httpx.get(f"{sb.server_url}/metrics", verify=verify(sb), timeout=10,
                         headers={"Authorization": f"Bearer {sb.secret('metrics_token')}"})
    assert response.status_code == 200
    return [s for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def gauge(sb: Sandbox, name: str) -> float:
    return next(s.value for s in scrape(sb) if s.name == name)


def buckets(sb: Sandbox) -> dict[float, float]:
    """Cumulative fraiseql_query_duration_seconds buckets summed over every operation."""
    out: dict[float, float] = {}
    for s in scrape(sb):
        if s.name == "fraiseql_query_duration_seconds_bucket":
            le = float(s.labels["le"])
            out[le] = out.get(le, 0.0) + s.value
    return out


def p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(upper bound of the bucket holding the 99th percentile, count) between two scrapes."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta[float("inf")]
    bound = next(le for le in sorted(delta) if delta[le] >= 0.99 * total) if total else 0.0
    return bound, total


def graphql(sb: Sandbox, query: str, timeout: float = 10) -> httpx.Response:
    return httpx.post(f"{sb.server_url}/graphql", json={"query": query}, verify=verify(sb),
                      timeout=timeout)


def parallel(*calls: Callable[[], Any]) -> None:
    threads = [threading.Thread(target=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)


def sessions(sb: Sandbox, application: str, state: str | None = None) -> int:
    rows = sql(sb, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                   "AND (%s::text IS NULL OR state = %s)", (application, state, state))
    return int(rows[0][0])


@pytest.fixture
def sb(healthy_sandbox) -> Sandbox:  # noqa: ANN001 - conftest's LiveSandbox
    return Sandbox.open(healthy_sandbox.root)


# ---- slow-query ----------------------------------------------------------------------------


def test_slow_query(healthy_sandbox, sb: Sandbox) -> None:
    drill_app = holder.application_name("slow")
    before = buckets(sb)
    healthy_sandbox.fault("slow-query")
    try:
        pid = Sandbox.open(sb.root).state["slow_query_pid"]
        healthy_sandbox.fault("slow-query")  # twice: the same holder, nothing stacked
        assert Sandbox.open(sb.root).state["slow_query_pid"] == pid
        assert sessions(sb, drill_app) == len(holder.SLOW_STATEMENTS)
        def long_running() -> set[str]:
            return {q for (q,) in sql(
                sb, "SELECT query FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND now() - query_start > interval '1 second'",
                (drill_app,))}

        # both statements, each past its first second: they start a moment apart, so the
        # wait is for the whole set, not for the first one to show
        wait_for(lambda: long_running() == set(holder.SLOW_STATEMENTS), 5)
        assert long_running() == set(holder.SLOW_STATEMENTS)
        # the stand-in's own statements now sleep inside PostgreSQL, cache or not
        parallel(*[lambda n=n: graphql(sb, f"{{ users(limit: {n}) {{ id }} }}")
                   for n in range(1, 5)])
        assert wait_for(lambda: sql(
            sb, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                "AND query LIKE '%%pg_sleep%%'", (faults.STANDIN_APPLICATION,)), 3)
        bound, count = p99(before, buckets(sb))
        assert count >= 4 and bound >= 1.0
    finally:
        healthy_sandbox.heal("slow-query")
    assert not processes.alive(pid, holder.marker(sb.root, "slow"))
    assert sessions(sb, drill_app) == 0
    time.sleep(1.7)  # let requests started before the heal finish
    before = buckets(sb)
    parallel(*[lambda n=n: graphql(sb, f"{{ users(limit: {n}) {{ id }} }}") for n in range(1, 5)])
    bound, count = p99(before, buckets(sb))
    assert count >= 4 and bound < 1.0


# ---- lock-contention -----------------------------------------------------------------------

BLOCKED_PAIRS = """
SELECT blocked.application_name, blocking.application_name, blocked.query
FROM pg_stat_activity AS blocked
CROSS JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid)
JOIN pg_stat_activity AS blocking ON blocking.pid = b.pid
"""


def test_lock_contention(healthy_sandbox, sb: Sandbox) -> None:
    """The background traffic's `posts` reads queue behind the holder's table lock."""
    healthy_sandbox.fault("lock-contention")
    try:
        pid = Sandbox.open(sb.root).state["lock_contention_pid"]
        pairs = wait_for(lambda: sql(sb, BLOCKED_PAIRS), 10)
        assert pairs, "no blocked session within 10 s"
        blocked_app, blocking_app, query = pairs[0]
        assert (blocked_app, blocking_app) == (faults.STANDIN_APPLICATION,
                                                holder.application_name("lock"))
        assert "v_post" in query
        waiting = sql(sb, "SELECT mode FROM pg_locks WHERE NOT granted "
                          "AND relation = 'tb_post'::regclass")
        held = sql(sb, "SELECT a.state, a.query FROM pg_locks AS l JOIN pg_stat_activity AS a "
                       "USING (pid) WHERE l.granted AND l.mode = 'AccessExclusiveLock' "
                       "AND l.relation = 'tb_post'::regclass")
        assert waiting and held == [("idle in transaction",
                                     "LOCK TABLE tb_post IN ACCESS EXCLUSIVE MODE")]
    finally:
        healthy_sandbox.heal("lock-contention")
    assert not processes.alive(pid, holder.marker(sb.root, "lock"))
    assert sessions(sb, holder.application_name("lock")) == 0
    assert wait_for(lambda: not sql(sb, BLOCKED_PAIRS), 5)
    response = graphql(sb, "{ posts(limit: 3) { id } }", timeout=5)
    assert response.status_code == 200 and len(response.json()["data"]["posts"]) == 3


# ---- memory-leak ---------------------------------------------------------------------------


def test_memory_leak(healthy_sandbox, sb: Sandbox) -> None:
    pid = server.pid(sb)
    assert pid is not None

    def rss_mib() -> float:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    start = rss_mib()
    healthy_sandbox.fault("memory-leak")
    try:
        assert wait_for(lambda: rss_mib() - start > 20, 10), "RSS did not grow 20 MiB in 10 s"
    finally:
        healthy_sandbox.heal("memory-leak")
    assert wait_for(lambda: rss_mib() - start < 10, 5), "the leaked memory was not freed"
    assert "memory-leak" not in server.read_behaviour_faults(sb)


# ---- pool-exhaustion -----------------------------------------------------------------------


def test_pool_exhaustion(healthy_sandbox, sb: Sandbox) -> None:
    healthy_sandbox.fault("pool-exhaustion")
    try:
        assert gauge(sb, "fraiseql_db_pool_connections_active") >= 8
        assert sessions(sb, faults.STANDIN_APPLICATION, "idle in transaction") >= 8
        failed = graphql(sb, "{ users(limit: 7) { email } }")  # not cached: needs the pool
        assert failed.status_code == 500
        assert "Connection pool error" in failed.json()["errors"][0]["message"]
    finally:
        healthy_sandbox.heal("pool-exhaustion")
    assert sessions(sb, faults.STANDIN_APPLICATION, "idle in transaction") == 0
    assert wait_for(lambda: gauge(sb, "fraiseql_db_pool_connections_active") <= 2, 5)
    assert graphql(sb, "{ users(limit: 7) { email } }").status_code == 200


# ---- auth-attack ---------------------------------------------------------------------------


def test_auth_attack(healthy_sandbox, sb: Sandbox) -> None:
    ips = faults.attack_ips(int(sb.state["seed"]))

    def counts() -> dict[str, int]:
        rows = sql(sb, "SELECT host(ip_address), count(*) FROM fraiseql_audit_logs "
                       "WHERE event_type = 'authentication_failed' "
                       "AND timestamp > now() - interval '2 hours' "
                       "AND ip_address = ANY(%s::inet[]) GROUP BY 1", (ips,))
        return {ip: n for ip, n in rows}

    total_before = sql(sb, "SELECT count(*) FROM fraiseql_audit_logs")[0][0]
    assert counts() == {}
    healthy_sandbox.fault("auth-attack")
    healthy_sandbox.fault("auth-attack")  # twice: replaced, not added
    try:
        during = counts()
        assert set(during) == set(ips) and sum(during.values()) == faults.AUTH_ATTACK_EVENTS
        assert min(during.values()) > 100
        log = sb.server_log.read_text()
        for status in (403, 429):
            assert re.search(rf"path=/metrics status={status} .*peer={faults.ATTACKER_ADDRESS}",
                             log), status
        assert scrape(sb), "scrapes from 127.0.0.1 still work"
    finally:
        healthy_sandbox.heal("auth-attack")
    assert counts() == {}
    assert sql(sb, "SELECT count(*) FROM fraiseql_audit_logs")[0][0] == total_before
    assert "auth_attack" not in Sandbox.open(sb.root).state


# ---- oidc-down -----------------------------------------------------------------------------


def test_oidc_down(healthy_sandbox, sb: Sandbox) -> None:
    def get(path: str) -> httpx.Response:
        return httpx.get(f"{sb.server_url}{path}", verify=verify(sb), timeout=5)

    discovery = get("/.well-known/openid-configuration")
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == sb.server_url
    jwks = get("/.well-known/jwks.json")
    assert discovery.json()["jwks_uri"] == f"{sb.server_url}/.well-known/jwks.json"
    assert [k["kty"] for k in jwks.json()["keys"]] == ["EC", "EC"]
    healthy_sandbox.fault("oidc-down")
    try:
        assert get("/.well-known/openid-configuration").status_code == 503
        assert get("/.well-known/jwks.json").status_code == 503
        assert get("/health").status_code == 200, "the GraphQL server itself stays up"
    finally:
        healthy_sandbox.heal("oidc-down")
    assert get("/.well-known/openid-configuration").status_code == 200
    assert get("/.well-known/jwks.json").json() == jwks.json(), "same keys: not restarted"


# ---- cert-expired --------------------------------------------------------------------------


def test_cert_expired(healthy_sandbox, sb: Sandbox) -> None:
    port = int(sb.state["server_port"])

    def served_leaf() -> x509.Certificate:
        return x509.load_der_x509_certificate(
            tls.fetch_peer_certificate("127.0.0.1", port).chain[0])

    assert httpx.get(f"{sb.server_url}/health", verify=verify(sb), timeout=5).status_code == 200
    healthy_sandbox.fault("cert-expired")
    try:
        with pytest.raises(httpx.ConnectError, match="certificate has expired"):
            httpx.get(f"{sb.server_url}/health", verify=verify(sb), timeout=5)
        leaf = served_leaf()
        now = datetime.now(UTC)
        assert leaf.not_valid_after_utc < now
        assert (now - leaf.not_valid_after_utc).total_seconds() < 2 * 86400
    finally:
        healthy_sandbox.heal("cert-expired")
    assert served_leaf().not_valid_after_utc > datetime.now(UTC)
    assert httpx.get(f"{sb.server_url}/health", verify=verify(sb), timeout=5).status_code == 200


def test_holder_idle_mode(healthy_sandbox, sb: Sandbox) -> None:
    """The third holder mode (no fault uses it yet): sessions idle in transaction."""
    name = holder.application_name("idle")
    pid = holder.start(sb, "idle", "test_idle_pid", count=3)
    try:
        assert holder.start(sb, "idle", "test_idle_pid", count=3) == pid, "not stacked"
        assert sessions(sb, name, "idle in transaction") == 3
    finally:
        holder.stop(sb, "idle", "test_idle_pid")
    assert not processes.alive(pid, holder.marker(sb.root, "idle"))
    assert sessions(sb, name) == 0


def test_every_fault_says_what_it_does() -> None:
    for name in ("slow-query", "lock-contention", "memory-leak", "pool-exhaustion",
                 "auth-attack", "oidc-down", "cert-expired"):
        assert len(faults.FAULTS[name].description) > 40, name
