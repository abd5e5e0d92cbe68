"""The FraiseQL v2 HTTP surface: probes and the checks built on them.

Names and shapes follow the real server (see shared/reference/fraiseql-v2-interface.md):
`/health` answers 200 for healthy and degraded and 503 only when the database is down;
introspection is off by default, so the liveness probe is `{ __typename }`; `/metrics`
needs the bearer token and is 404 when metrics are not enabled.
"""

from __future__ import annotations

import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import reachability

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
          json_body: Any = None) -> Probe:
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
    if p.status_code != 200 or state not in ("healthy", "degraded"):
        return Status.CRITICAL, f"unexpected /health answer: HTTP {p.status_code}, status {state!r}"
    if state == "degraded":
        return Status.WARNING, "service answers but reports degraded"
    return Status.OK, f"healthy, version {body.get('version')}, answered in {p.elapsed_ms} ms"


@check("service.health")
def check_health(ctx: RunContext) -> Finding:
    """§2.1 step 3: `curl -s /health | jq .` with the fields explained."""
    with client(ctx) as http:
        p = probe(http, "GET", f"{ctx.target.fraiseql_url}/health")
    if p.skipped:
        return ctx.record_skipped("service.health", p.skipped)
    status, summary = health_verdict(p)
    body = p.body if isinstance(p.body, dict) else {}
    db = body.get("database") or {}
    evidence = {"url": p.url, "http_status": p.status_code, "elapsed_ms": p.elapsed_ms,
                "status": body.get("status"), "database_connected": db.get("connected"),
                "version": body.get("version"), "schema_hash": body.get("schema_hash"),
                "error": p.error}
    remediation = {
        Status.CRITICAL: "run the service-down playbook (fraiseql-rb run service-down)"
        if not p.reachable else "run the database-unavailable playbook",
        Status.WARNING: "inspect the degraded component in the health fields below",
    }.get(status)
    return ctx.result(status, summary, evidence, remediation,
                      table=explain_health(body) if body else None)


@check("service.readiness")
def check_readiness(ctx: RunContext) -> Finding:
    """/readiness is what a load balancer should route on: 200 ready or 503 with a reason."""
    with client(ctx) as http:
        p = probe(http, "GET", f"{ctx.target.fraiseql_url}/readiness")
    if p.skipped:
        return ctx.record_skipped("service.readiness", p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    evidence = {"http_status": p.status_code, "status": body.get("status"),
                "reason": body.get("reason"), "elapsed_ms": p.elapsed_ms, "error": p.error}
    if not p.reachable:
        return ctx.result(Status.CRITICAL,
                          f"no answer from /readiness: {p.error}", evidence,
                          "run the service-down playbook")
    if p.status_code == 200 and body.get("status") == "ready":
        return ctx.result(Status.OK, "ready to take traffic", evidence)
    return ctx.result(Status.CRITICAL,
                      f"not ready: {body.get('reason') or f'HTTP {p.status_code}'}", evidence,
                      "keep it out of the load balancer until ready; check the database")


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


@check("graphql.probe")
def check_graphql(ctx: RunContext) -> Finding:
    """The v2 liveness query `{ __typename }` (the runbook's introspection query is refused
    by a default server, so it cannot be the smoke test)."""
    with client(ctx) as http:
        p = graphql(http, ctx.target.fraiseql_url, TYPENAME_QUERY)
    if p.skipped:
        return ctx.record_skipped("graphql.probe", p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    evidence = {"query": TYPENAME_QUERY, "http_status": p.status_code,
                "elapsed_ms": p.elapsed_ms, "response": body or p.error}
    typename = (body.get("data") or {}).get("__typename") if body else None
    if typename:
        return ctx.result(Status.OK,
                          f"GraphQL answers: __typename = {typename} in {p.elapsed_ms} ms",
                          evidence)
    summary = (f"GraphQL endpoint unreachable: {p.error}" if not p.reachable
               else f"GraphQL did not answer {TYPENAME_QUERY}: HTTP {p.status_code}")
    return ctx.result(Status.CRITICAL, summary, evidence,
                      "check the server log (logs_command) for GraphQL errors")


@check("graphql.introspection")
def check_introspection(ctx: RunContext) -> Finding:
    """The runbook's §2.1 smoke test, run only on request: v2 refuses it by default."""
    with client(ctx) as http:
        p = graphql(http, ctx.target.fraiseql_url, INTROSPECTION_QUERY)
    if p.skipped:
        return ctx.record_skipped("graphql.introspection", p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    types = (((body.get("data") or {}).get("__schema") or {}).get("types")) if body else None
    evidence = {"http_status": p.status_code, "elapsed_ms": p.elapsed_ms}
    if types:
        evidence["type_count"] = len(types)
        return ctx.result(Status.OK,
                          f"introspection allowed: {len(types)} types", evidence,
                          table=pd.DataFrame({"type": [t.get("name") for t in types]}))
    errors = body.get("errors") if body else None
    evidence["errors"] = errors or p.error
    return ctx.result(Status.INFO,
                      "introspection refused, as on a default v2 server "
                      "(introspection_enabled=false)", evidence)


def scrape(ctx: RunContext, http: httpx.Client, base_url: str | None = None) -> Probe:
    """GET /metrics with the target's bearer token; body kept as text for the parser."""
    url = f"{base_url or ctx.target.fraiseql_url}/metrics"
    token = ctx.target.metrics_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = Probe(url=url)
    started = time.perf_counter()
    try:
        response = http.get(url, headers=headers)
    except reachability.Skipped as exc:
        result.error, result.skipped = str(exc), exc.timeout
        return result
    except httpx.HTTPError as exc:
        result.error = _describe_http_error(exc)
        return result
    result.elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    result.status_code = response.status_code
    result.body = response.text
    return result


@check("metrics.endpoint")
def check_metrics_endpoint(ctx: RunContext) -> Finding:
    """`/metrics` reachable with the token and parseable as Prometheus text."""
    has_token = ctx.target.has("metrics_token")
    with client(ctx) as http:
        p = scrape(ctx, http)
    if p.skipped:
        return ctx.record_skipped("metrics.endpoint", p.skipped)
    evidence: dict[str, Any] = {"url": p.url, "http_status": p.status_code,
                                "elapsed_ms": p.elapsed_ms, "token_configured": has_token}
    if not p.reachable:
        return ctx.result(Status.CRITICAL,
                          f"metrics endpoint unreachable: {p.error}", evidence,
                          "run the service-down playbook")
    if p.status_code == 404:
        return ctx.result(Status.WARNING,
                          "metrics are not mounted (v2 needs metrics_enabled=true and a "
                          "metrics_token)", evidence,
                          "set FRAISEQL_METRICS_ENABLED=true and FRAISEQL_METRICS_TOKEN")
    if p.status_code in (401, 403):
        return ctx.result(Status.WARNING,
                          "metrics token rejected" if has_token else
                          "metrics need a bearer token and the inventory names none", evidence,
                          "set metrics_token_env or metrics_token_file for this target")
    if p.status_code == 429:
        return ctx.result(Status.WARNING,
                          "metrics endpoint is refusing this address after failed token "
                          "attempts (HTTP 429)", evidence, "check the token, wait, retry")
    if p.status_code != 200:
        return ctx.result(Status.WARNING,
                          f"metrics endpoint answered HTTP {p.status_code}", evidence)
    families = list(text_string_to_metric_families(p.body))
    names = sorted(f.name for f in families)
    evidence.update({"families": len(families),
                     "fraiseql_families": sum(n.startswith("fraiseql_") for n in names)})
    return ctx.result(Status.OK,
                      f"metrics flowing: {len(families)} families in {p.elapsed_ms} ms",
                      evidence)


@check("service.response_time")
def check_response_times(ctx: RunContext, samples: int = 5,
                         warning_ms: float = thresholds.RESPONSE_TIME_MS.warning,
                         critical_ms: float = thresholds.RESPONSE_TIME_MS.critical) -> Finding:
    """Round trips of /health and `{ __typename }`; thresholds from §6.1 and §3.2."""
    measured: dict[str, list[float]] = {"/health": [], "/graphql": []}
    skipped: reachability.Timeout | None = None
    with client(ctx) as http:
        base = ctx.target.fraiseql_url
        for _ in range(samples):
            for name, send in (("/health", lambda: probe(http, "GET", f"{base}/health")),
                               ("/graphql", lambda: graphql(http, base, TYPENAME_QUERY))):
                p = send()
                skipped = skipped or p.skipped
                if p.elapsed_ms is not None:
                    measured[name].append(p.elapsed_ms)
            if skipped:
                break  # the endpoint hung: every further request would be skipped too
    table = pd.DataFrame([
        {"endpoint": name, "samples": len(v), "median_ms": _q(v, 0.5), "p95_ms": _q(v, 0.95),
         "max_ms": max(v) if v else None} for name, v in measured.items()
    ])
    all_ms = [ms for values in measured.values() for ms in values]
    evidence = {"samples": samples, "p95_ms": _q(all_ms, 0.95), "warning_ms": warning_ms,
                "critical_ms": critical_ms,
                "per_endpoint": table.to_dict(orient="records")}
    if skipped:  # a round-trip figure with requests missing would not be the one asked for
        return ctx.record_skipped("service.response_time", skipped)
    if not all_ms:
        return ctx.result(Status.CRITICAL,
                          "no request got an answer", evidence, "run the service-down playbook")
    p95 = _q(all_ms, 0.95) or 0.0
    if p95 > critical_ms:
        status = Status.CRITICAL
    elif p95 > warning_ms:
        status = Status.WARNING
    else:
        status = Status.OK
    return ctx.result(status,
                      f"p95 round trip {p95:.1f} ms over {len(all_ms)} requests "
                      f"(warning above {warning_ms:g} ms)", evidence,
                      None if status is Status.OK else "run the high-query-latency playbook",
                      table=table)


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 1)
