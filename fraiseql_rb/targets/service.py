"""The FraiseQL v2 HTTP surface: probes, the /health contract, scrapes and the admin API.

Names and shapes follow the real server (see shared/reference/fraiseql-v2-interface.md):
`/health` answers 200 for healthy and degraded and 503 only when the database is down;
introspection is off by default, so the liveness probe is `{ __typename }`; `/metrics`
needs the bearer token and is 404 when metrics are not enabled.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
import pandas as pd

from fraiseql_rb.core import reachability, releases, thresholds
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status

TYPENAME_QUERY = "{ __typename }"
INTROSPECTION_QUERY = "{ __schema { types { name } } }"  # the runbook's §2.1 smoke test

# What each /health field means, for the responder reading it at 3 a.m.
HEALTH_FIELDS = {
    "status": "healthy, degraded (answers, but a dependency is impaired) or unhealthy "
              "(database down; HTTP 503)",
    "database.connected": "the server reached PostgreSQL on this probe",
    "database.database_type": "the database backend",
    "database.active_connections": "pool connections in use",
    "database.idle_connections": "pool connections open and idle",
    "observers": "change-data observers: running, events processed, last error",
    "cache": "query cache backend and whether it is connected",
    "secrets": "secrets backend (e.g. Vault) connectivity",
    "federation": "federated subgraphs, when configured",
    "version": "server build; every instance should report the same",
    "schema_hash": "hash of the compiled schema; instances must agree",
}


@dataclass
class Probe:
    """One HTTP exchange, kept whole so a check can explain what it saw."""

    url: str
    status_code: int | None = None
    body: Any = None
    elapsed_ms: float | None = None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # set when the request was not sent: its endpoint already hung in this run
    skipped: reachability.Timeout | None = None

    @property
    def reachable(self) -> bool:
        return self.status_code is not None


def client(ctx: RunContext | None = None,
           timeout_s: float = thresholds.HTTP_TIMEOUT_S, *,
           skip_unresponsive: bool = True) -> httpx.Client:
    """The HTTP client for the target's endpoints. It consults the run's memo of hung
    endpoints (see `reachability`): a request to one raises `reachability.Skipped` at once,
    which `probe` and `scrape` turn into a skipped Probe. `skip_unresponsive=False` tries
    them anyway (polling for a restarted server)."""
    verify: Any = True
    if ctx is not None and ctx.target.get("ca_bundle"):
        verify = ssl.create_default_context(cafile=ctx.target.get("ca_bundle"))
    return reachability.Client(timeout=timeout_s, verify=verify, follow_redirects=False,
                               memo=ctx.unresponsive if ctx is not None else None,
                               skip=skip_unresponsive)


def probe(http: httpx.Client, method: str, url: str, *, token: str | None = None,
          json_body: Any = None, text: bool = False) -> Probe:
    """One request, timed; its body parsed as JSON when it is JSON (kept as text with `text`).
    Never raises for HTTP trouble: the Probe says what happened."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = Probe(url=url)
    started = time.perf_counter()
    try:
        response = http.request(method, url, headers=headers, json=json_body)
    except reachability.Skipped as exc:
        result.error, result.skipped = str(exc), exc.timeout
        return result
    except httpx.HTTPError as exc:
        result.error = _describe_http_error(exc)
        return result
    result.elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    result.status_code = response.status_code
    result.headers = {"content-type": response.headers.get("content-type", "")}
    if text:
        result.body = response.text
        return result
    try:
        result.body = response.json()
    except ValueError:
        result.body = response.text
    return result


def _describe_http_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


def explain_health(body: Any) -> pd.DataFrame:
    """The /health document flattened, each field with what it means."""
    rows = []
    if isinstance(body, dict):
        for key, value in body.items():
            if isinstance(value, dict):
                for sub, subvalue in value.items():
                    name = f"{key}.{sub}"
                    rows.append((name, subvalue, HEALTH_FIELDS.get(name, "")))
            else:
                rows.append((key, value, HEALTH_FIELDS.get(key, "")))
    return pd.DataFrame(rows, columns=["field", "value", "meaning"])


# status words of health endpoints that are not v2's (Spring, the IETF health-check draft,
# most proxies): a server that is not FraiseQL v2 still says whether it is up
FOREIGN_HEALTHY = frozenset({"ok", "up", "pass", "ready", "available"})
FOREIGN_FAILING = frozenset({"fail", "down", "error", "unavailable", "unhealthy"})


def health_verdict(p: Probe) -> tuple[Status, str]:
    """Map one /health answer to a status, by the v2 contract."""
    if not p.reachable:
        return Status.CRITICAL, f"no answer from {p.url}: {p.error}"
    body = p.body if isinstance(p.body, dict) else {}
    state = body.get("status")
    db = body.get("database") or {}
    if p.status_code == 503 or state == "unhealthy":
        why = "database not connected" if db.get("connected") is False else "unhealthy"
        return Status.CRITICAL, f"service answers but is unhealthy ({why}, HTTP {p.status_code})"
    if p.status_code == 200 and state not in ("healthy", "degraded"):
        # not v2's body: another release, a proxy or a generic health endpoint answering
        word = str(state).lower() if state is not None else None
        if word in FOREIGN_HEALTHY:
            return Status.OK, (f"answers 200 {state!r}, not FraiseQL v2's health body: the "
                               "database state is not reported here")
        if word in FOREIGN_FAILING:
            return Status.CRITICAL, f"/health answers 200 but says {state!r}"
        return Status.WARNING, (f"/health answers 200 with a body this check does not know "
                                f"(status {state!r}): is fraiseql_url the FraiseQL server?")
    if p.status_code != 200:
        return Status.CRITICAL, f"unexpected /health answer: HTTP {p.status_code}, status {state!r}"
    if state == "degraded":
        return Status.WARNING, "service answers but reports degraded"
    return Status.OK, f"healthy, version {body.get('version')}, answered in {p.elapsed_ms} ms"


def not_served(p: Probe) -> bool:
    """The endpoint answered 404: this server (its release, a proxy) does not serve it,
    which is not a failure."""
    return p.status_code == HTTPStatus.NOT_FOUND


@dataclass(frozen=True)
class ServerRelease:
    """The server's version as its /health reports it; `version` None when not known."""

    version: releases.Version | None
    reported: Any = None  # the raw `version` field, for evidence

    def describe(self) -> str:
        return releases.describe(self.version, self.reported)

    def lacks(self, feature: str) -> bool:
        """Known to lack `feature` (an unknown version lacks nothing: checks try)."""
        return releases.lacks(feature, self.version)

    def not_available(self, feature: str) -> str:
        return releases.not_available(feature, self.version)


_RELEASE_ATTR = "_fraiseql_server_release"  # kept on the run's context: read once per run


def remember_release(ctx: RunContext, p: Probe) -> ServerRelease:
    """Keep the version a /health answer reports for the rest of the run."""
    body = p.body if isinstance(p.body, dict) else {}
    reported = body.get("version")
    found = ServerRelease(releases.parse_version(reported), reported)
    if p.reachable:  # no answer is no evidence: a later probe may still read it
        setattr(ctx, _RELEASE_ATTR, found)
    return found


def server_release(ctx: RunContext) -> ServerRelease:
    """The server's release, from /health, read once per run (it may report none)."""
    known = getattr(ctx, _RELEASE_ATTR, None)
    if isinstance(known, ServerRelease):
        return known
    with client(ctx) as http:
        p = probe(http, "GET", f"{ctx.target.fraiseql_url}/health")
    if p.skipped:
        return ServerRelease(None)
    return remember_release(ctx, p)


def wait_for_health(ctx: RunContext, wait_s: float, poll_s: float = 1.0
                    ) -> tuple[Probe, Status, str, float, int]:
    """Poll /health every `poll_s` until it is healthy or `wait_s` has passed, printing each
    answer so a responder watching the notebook sees the progress."""
    began = time.monotonic()
    polls = 0
    url = f"{ctx.target.fraiseql_url}/health"
    with client(ctx, timeout_s=min(5.0, max(1.0, poll_s)),
                skip_unresponsive=False) as http:  # it is meant to come back
        while True:
            polls += 1
            p = probe(http, "GET", url)
            status, summary = health_verdict(p)
            elapsed = time.monotonic() - began
            print(f"  {elapsed:5.1f} s  {status.upper():<8} {summary}", flush=True)
            if status is Status.OK or elapsed + poll_s > wait_s:
                return p, status, summary, round(elapsed, 1), polls
            time.sleep(max(0.0, poll_s - (time.monotonic() - began - elapsed)))


def admin_detail(ctx: RunContext) -> dict[str, Any]:
    """`GET /admin/v1/health/detailed` with the admin token: pool_max, cache_entries, ...
    Raises RuntimeError with the reason when it cannot be read."""
    token = ctx.target.admin_token()
    if not token:
        raise RuntimeError("the target names no admin_token (admin_token_env/_file)")
    with client(ctx) as http:
        p = probe(http, "GET", f"{ctx.target.fraiseql_url}/admin/v1/health/detailed",
                  token=token)
    if not p.reachable:
        raise RuntimeError(f"admin endpoint unreachable: {p.error}")
    if p.status_code != 200 or not isinstance(p.body, dict):
        hint = {404: " (admin API off: admin_api_enabled and admin_token)",
                401: " (token refused)", 403: " (token refused)"}.get(p.status_code or 0, "")
        raise RuntimeError(f"admin endpoint answered HTTP {p.status_code}{hint}")
    return p.body


def graphql(http: httpx.Client, base_url: str, query: str) -> Probe:
    return probe(http, "POST", f"{base_url}/graphql", json_body={"query": query})


def scrape(ctx: RunContext, http: httpx.Client, base_url: str | None = None) -> Probe:
    """GET /metrics with the target's bearer token; body kept as text for the parser."""
    url = f"{base_url or ctx.target.fraiseql_url}/metrics"
    return probe(http, "GET", url, token=ctx.target.metrics_token(), text=True)
