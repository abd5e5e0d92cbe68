"""Checks of the FraiseQL v2 HTTP surface (`service.*`, `graphql.*`, `metrics.endpoint`): each
probe of `targets.service` judged by the runbook's figures, the server's logs read through the
inventory's logs_command, and the restart that §4.1 and §4.2 prescribe.

Names and shapes follow the real server (see shared/reference/fraiseql-v2-interface.md):
`/health` answers 200 for healthy and degraded and 503 only when the database is down;
introspection is off by default, so the liveness probe is `{ __typename }`; `/metrics`
needs the bearer token and is 404 when metrics are not enabled.
"""

from __future__ import annotations

import re
import statistics
import uuid
from typing import Any

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from fraiseql_rb.core import reachability, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import commands, service


@check("service.health")
def check_health(ctx: RunContext) -> Finding:
    """§2.1 step 3: `curl -s /health | jq .` with the fields explained."""
    with service.client(ctx) as http:
        p = service.probe(http, "GET", f"{ctx.target.fraiseql_url}/health")
    if p.skipped:
        return ctx.endpoint_hung(p.skipped)
    release = service.remember_release(ctx, p)
    body = p.body if isinstance(p.body, dict) else {}
    if service.not_served(p):
        return ctx.result(Status.INFO, "/health is not served by this server (HTTP 404): "
                          "liveness rests on the other probes", {
                              "url": p.url, "http_status": p.status_code,
                              "not_served": True},
                          "point fraiseql_url at the FraiseQL server itself, or configure "
                          "its health path")
    status, summary = service.health_verdict(p)
    db = body.get("database") or {}
    evidence = {"url": p.url, "http_status": p.status_code, "elapsed_ms": p.elapsed_ms,
                "status": body.get("status"), "database_connected": db.get("connected"),
                "version": body.get("version"), "schema_hash": body.get("schema_hash"),
                "release": release.describe(), "error": p.error}
    remediation = {
        Status.CRITICAL: "run the service-down playbook (fraiseql-rb run service-down)"
        if not p.reachable else "run the database-unavailable playbook",
        Status.WARNING: "inspect the degraded component in the health fields below",
    }.get(status)
    return ctx.result(status, summary, evidence, remediation,
                      table=service.explain_health(body) if body else None)


@check("service.readiness")
def check_readiness(ctx: RunContext) -> Finding:
    """/readiness is what a load balancer should route on: 200 ready or 503 with a reason."""
    with service.client(ctx) as http:
        p = service.probe(http, "GET", f"{ctx.target.fraiseql_url}/readiness")
    if p.skipped:
        return ctx.endpoint_hung(p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    evidence = {"http_status": p.status_code, "status": body.get("status"),
                "reason": body.get("reason"), "elapsed_ms": p.elapsed_ms, "error": p.error}
    if not p.reachable:
        return ctx.result(Status.CRITICAL,
                          f"no answer from /readiness: {p.error}", evidence,
                          "run the service-down playbook")
    if service.not_served(p):
        evidence["not_served"] = True
        return ctx.result(Status.INFO,
                          "/readiness is not served by this server (HTTP 404): route the load "
                          "balancer on /health instead", evidence)
    if p.status_code == 200 and body.get("status") == "ready":
        return ctx.result(Status.OK, "ready to take traffic", evidence)
    return ctx.result(Status.CRITICAL,
                      f"not ready: {body.get('reason') or f'HTTP {p.status_code}'}", evidence,
                      "keep it out of the load balancer until ready; check the database")


@check("graphql.probe")
def check_graphql(ctx: RunContext) -> Finding:
    """The v2 liveness query `{ __typename }` (the runbook's introspection query is refused
    by a default server, so it cannot be the smoke test)."""
    with service.client(ctx) as http:
        p = service.graphql(http, ctx.target.fraiseql_url, service.TYPENAME_QUERY)
    if p.skipped:
        return ctx.endpoint_hung(p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    evidence = {"query": service.TYPENAME_QUERY, "http_status": p.status_code,
                "elapsed_ms": p.elapsed_ms, "response": body or p.error}
    typename = (body.get("data") or {}).get("__typename") if body else None
    if typename:
        return ctx.result(Status.OK,
                          f"GraphQL answers: __typename = {typename} in {p.elapsed_ms} ms",
                          evidence)
    if service.not_served(p):
        evidence["not_served"] = True
        return ctx.result(Status.INFO, "/graphql is not served by this server (HTTP 404)",
                          evidence, "check fraiseql_url: FraiseQL serves GraphQL at /graphql")
    release = service.server_release(ctx)
    evidence["release"] = release.describe()
    if p.reachable and (p.status_code or 0) < 500 and release.lacks("root_typename"):
        return ctx.result(Status.INFO,
                          f"{release.not_available('root_typename')}: the server answered "
                          f"HTTP {p.status_code}, so liveness rests on /health", evidence,
                          "set probe_query in the inventory to a query of your schema for a "
                          "GraphQL probe (graphql.data_path)")
    summary = (f"GraphQL endpoint unreachable: {p.error}" if not p.reachable
               else f"GraphQL did not answer {service.TYPENAME_QUERY}: HTTP {p.status_code}")
    return ctx.result(Status.CRITICAL, summary, evidence,
                      "check the server log (logs_command) for GraphQL errors")


def _has_data(data: Any) -> bool:
    """Did the answer carry something read: a non-empty object with a non-null field."""
    return isinstance(data, dict) and any(v is not None for v in data.values())


def _error_messages(body: Any) -> list[str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(e.get("message") if isinstance(e, dict) else e)[:300] for e in errors]


@check("graphql.data_path")
def check_data_path(ctx: RunContext, probe_query: str | None = None) -> Finding:
    """A GraphQL query that reads through PostgreSQL (the inventory's `probe_query`, or the
    `probe_query` parameter): `{ __typename }` never touches the database, so only an answer
    with data and no errors proves the whole path works."""
    query = probe_query or ctx.target.get("probe_query")
    if not query:
        return ctx.result(Status.INFO,
                          "no data-path probe configured: `{ __typename }` does not touch the "
                          "database, so nothing here proved a read through PostgreSQL",
                          {"probe_query": None},
                          "set probe_query in the inventory (e.g. probe_query = \"{ users"
                          "(limit: 1) { id } }\") or run with -p probe_query '...'")
    # a query-result cache answers a repeated query without the database; a comment unique
    # to this request changes the cache key, not the query
    sent = f"{query}\n# fraiseql-rb data-path probe {uuid.uuid4().hex}"
    with service.client(ctx) as http:
        p = service.graphql(http, ctx.target.fraiseql_url, sent)
    if p.skipped:
        return ctx.endpoint_hung(p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    messages = _error_messages(body)
    data = body.get("data") if body else None
    evidence: dict[str, Any] = {"query": query, "http_status": p.status_code,
                                "elapsed_ms": p.elapsed_ms, "errors": messages,
                                "data_fields": sorted(data) if isinstance(data, dict) else None}
    if not p.reachable:
        return ctx.result(Status.CRITICAL, f"GraphQL endpoint unreachable: {p.error}",
                          evidence, "run the service-down playbook")
    if service.not_served(p):
        return ctx.result(Status.INFO, "/graphql is not served by this server (HTTP 404)",
                          evidence | {"not_served": True},
                          "check fraiseql_url: FraiseQL serves GraphQL at /graphql")
    if messages:
        return ctx.result(Status.CRITICAL,
                          f"the data-path probe failed (HTTP {p.status_code}): {messages[0]}",
                          evidence, "a database error: run the database-unavailable playbook; "
                          "otherwise the high-error-rate playbook")
    if p.status_code != 200 or not _has_data(data):
        what = "no data" if p.status_code == 200 else f"HTTP {p.status_code}"
        return ctx.result(Status.CRITICAL,
                          f"the data-path probe got {what}: nothing proves a read through "
                          "PostgreSQL", evidence | {"response": str(p.body)[:300]},
                          "run the query by hand; check the server log (logs_command)")
    return ctx.result(Status.OK,
                      f"a read through PostgreSQL works: the probe answered "
                      f"{', '.join(sorted(data))} in {p.elapsed_ms} ms", evidence)


@check("graphql.introspection")
def check_introspection(ctx: RunContext) -> Finding:
    """The runbook's §2.1 smoke test, run only on request: v2 refuses it by default."""
    with service.client(ctx) as http:
        p = service.graphql(http, ctx.target.fraiseql_url, service.INTROSPECTION_QUERY)
    if p.skipped:
        return ctx.endpoint_hung(p.skipped)
    body = p.body if isinstance(p.body, dict) else {}
    types = (((body.get("data") or {}).get("__schema") or {}).get("types")) if body else None
    evidence = {"http_status": p.status_code, "elapsed_ms": p.elapsed_ms}
    if service.not_served(p):
        return ctx.result(Status.INFO, "/graphql is not served by this server (HTTP 404)",
                          evidence | {"not_served": True})
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


@check("metrics.endpoint")
def check_metrics_endpoint(ctx: RunContext) -> Finding:
    """`/metrics` reachable with the token and parseable as Prometheus text."""
    has_token = ctx.target.has("metrics_token")
    with service.client(ctx) as http:
        p = service.scrape(ctx, http)
    if p.skipped:
        return ctx.endpoint_hung(p.skipped)
    evidence: dict[str, Any] = {"url": p.url, "http_status": p.status_code,
                                "elapsed_ms": p.elapsed_ms, "token_configured": has_token}
    if not p.reachable:
        return ctx.result(Status.CRITICAL,
                          f"metrics endpoint unreachable: {p.error}", evidence,
                          "run the service-down playbook")
    if service.not_served(p):
        evidence["not_served"] = True
        return ctx.result(Status.INFO,
                          "/metrics is not served by this server (HTTP 404; v2 mounts it only "
                          "with metrics_enabled=true and a metrics_token)", evidence,
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
    own = sum(n.startswith("fraiseql_") for n in names)
    evidence.update({"families": len(families), "fraiseql_families": own})
    if families and not own:
        return ctx.result(Status.INFO,
                          f"/metrics answers with {len(families)} families but none named "
                          "fraiseql_*: another exporter or a proxy answers here, so FraiseQL's "
                          "own metrics are unavailable", evidence | {"names": names[:20]},
                          "point fraiseql_url at the FraiseQL server, or accept that the "
                          "metric-based checks report these metrics as unavailable")
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
    with service.client(ctx) as http:
        base = ctx.target.fraiseql_url
        for _ in range(samples):
            for name, send in (
                    ("/health", lambda: service.probe(http, "GET", f"{base}/health")),
                    ("/graphql", lambda: service.graphql(http, base, service.TYPENAME_QUERY))):
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
        return ctx.endpoint_hung(skipped)
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


# -- the logs ------------------------------------------------------------------------------

ERROR_LINE = re.compile(r"\b(ERROR|FATAL|CRITICAL|PANIC|panic(ked)?|Traceback|error:|"
                        r"refused|denied|Killed|out of memory)", re.IGNORECASE)


@check("service.logs")
def check_logs(ctx: RunContext, lines: int = 20, *, show: bool = False) -> Finding:
    """The logs where the inventory's logs_command reads them (§4.2 step 2 `docker logs
    fraiseql`, §10 "logs readable"): the last `lines` kept, the error-looking lines picked out,
    and with `show` the tail printed (masked) for the responder."""
    if not ctx.target.get("logs_command"):
        return ctx.result(Status.UNKNOWN,
                          "not read: the target has no logs_command, so its logs cannot be "
                          "read from here", {},
                          "add logs_command (journalctl -u fraiseql -n 200, docker logs "
                          "--tail 200 fraiseql) to the inventory")
    result = commands.run(ctx, "logs_command")
    every = result.stdout.splitlines()
    tail = every[-lines:]
    errors = [line for line in every if ERROR_LINE.search(line)][-10:]
    if show:
        print(f"$ {secrets.mask(result.command)}   (last {len(tail)} of {len(every)} lines)")
        for line in tail:
            print(f"  {line}")
    evidence = {"command": result.command, "returncode": result.returncode,
                "lines_read": len(every), "last_lines": tail, "error_lines": errors}
    if not result.ok:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        return ctx.result(Status.WARNING,
                          f"logs_command failed ({result.returncode}): {last}", evidence,
                          "read the logs on the host; fix logs_command in the inventory")
    if not every:
        return ctx.result(Status.WARNING, "logs_command printed nothing", evidence,
                          "check that the service logs where logs_command reads")
    found = f"; {len(errors)} error-looking line(s), the last: {errors[-1]}" if errors else ""
    return ctx.result(Status.OK,
                      f"read the last {len(tail)} of {len(every)} log lines{found}", evidence)


# -- the restart ----------------------------------------------------------------------------

@check("service.restart")
def restart(ctx: RunContext, needed: bool | None, why: str, *,
            wait_s: float = thresholds.RESTART_WAIT_S, poll_s: float = 1.0,
            step: str | None = None, resolves: tuple[str, ...] = (),
            leaves: str | None = None) -> Finding:
    """The restart a playbook decided on (`needed`, because `why`): the target's
    restart_command, run only with execute=True, then /health polled for up to `wait_s`.

    Healthy again, it `resolves` the findings the restart fixed; `leaves` names what a restart
    does not fix (a leak comes back), which keeps a healthy restart a warning."""
    if not needed:
        return ctx.result(Status.INFO, f"no restart: {why}",
                          {"needed": needed, "executed": False, "reason": why})
    command = ctx.target.get("restart_command")
    if not command:
        return ctx.result(Status.UNKNOWN,
                          f"a restart is needed ({why}) but the target has no restart_command",
                          {"needed": True, "executed": False, "reason": why},
                          "restart it by hand (systemctl restart fraiseql) and add "
                          "restart_command to the inventory")
    done = commands.restart(ctx, wait_s, poll_s, why=why, step=step)
    if not done.executed:
        print(repr(done.action))
        return ctx.result(Status.INFO,
                          f"dry run: a restart is needed ({why}); would run `{command}` and "
                          f"wait up to {wait_s:g} s for health",
                          {"needed": True, "executed": False, "reason": why,
                           "command": command, "wait_s": wait_s},
                          "rerun with execute=True, or run the command yourself and rerun "
                          "this playbook")
    result, output = done.result, done.output
    assert result is not None
    evidence: dict[str, Any] = {"needed": True, "executed": True, "reason": why,
                                "command": command, "returncode": result.returncode,
                                "command_s": result.elapsed_s, "wait_s": wait_s}
    if done.health is None:
        return ctx.result(Status.CRITICAL,
                          f"restart_command failed (exit {result.returncode}): "
                          f"{output[-1] if output else 'no output'}",
                          evidence | {"healthy": False},
                          "run it by hand and read its error; then the checks below")
    p, status, summary, waited, polls = done.health
    body = p.body if isinstance(p.body, dict) else {}
    evidence.update({"healthy": status is Status.OK, "waited_s": waited, "polls": polls,
                     "http_status": p.status_code, "status": body.get("status"),
                     "version": body.get("version"), "schema_hash": body.get("schema_hash")})
    if status is not Status.OK:
        return ctx.result(Status.CRITICAL,
                          f"still not healthy {waited:.1f} s after the restart: {summary}",
                          evidence, "continue with the service-down playbook's later steps "
                          "(database, configuration, changes)")
    if leaves:
        return ctx.result(Status.WARNING,
                          f"healthy again {waited:.1f} s after the restart, but {leaves}",
                          evidence, "watch it; fix the cause the diagnosis names")
    # what the restart fixed stays in the timeline, but the run's status is the state after it
    return ctx.result(Status.OK, f"healthy again {waited:.1f} s after the restart: {summary}",
                      evidence, resolves=resolves)


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 1)
