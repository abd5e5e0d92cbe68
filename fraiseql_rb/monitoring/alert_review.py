"""Alert review (runbook §3.2): which alerts fire or are pending, what to run next, and
whether the rules can fire at all on this deployment.

With Prometheus (the target's `prometheus_url`) the answer is Prometheus' own. Without it,
the conditions of the shipped rules are evaluated here on two scrapes a sampling window
apart (and PostgreSQL for the archiving and replication rules): the same thresholds, but
without the rules' `for:` durations, so a true condition is reported as "pending".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fraiseql_rb.checks import alert_rules
from fraiseql_rb.core import paths, progress, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import metrics, postgres, prometheus, service

RULES_FILE = paths.PACKAGE_DIR / "data" / "prometheus" / "fraiseql-alerts.yml"
SEVERITY_STATUS = {"critical": Status.CRITICAL, "high": Status.CRITICAL,
                   "warning": Status.WARNING, "info": Status.INFO}


def shipped_rules(path: Path = RULES_FILE) -> dict[str, dict[str, Any]]:
    """The alerting rules by name, from a Prometheus rules file."""
    data = yaml.safe_load(path.read_text())
    return {rule["alert"]: rule for group in data["groups"] for rule in group["rules"]
            if "alert" in rule}


@dataclass
class ActiveAlert:
    name: str
    state: str  # firing | pending
    severity: str
    value: float | None
    runbook: str | None
    summary: str
    since: str | None = None


def next_step(alert: ActiveAlert, target: str) -> str:
    if alert.runbook:
        return f"fraiseql-rb run {alert.runbook} --target {target}"
    return "read the alert's description; no runbook is linked"


def from_prometheus(ctx: RunContext) -> list[ActiveAlert]:
    client = prometheus.from_target(ctx)
    assert client is not None
    rules = shipped_rules()
    found = []
    with client:
        for alert in client.alerts():
            name = alert["name"]
            annotations = alert.get("annotations") or {}
            rule = rules.get(name, {})
            found.append(ActiveAlert(
                name=name, state=alert["state"],
                severity=(alert.get("labels") or {}).get("severity")
                or annotations.get("severity", "warning"),
                value=alert.get("value"),
                runbook=annotations.get("runbook") or rule.get("annotations", {}).get("runbook"),
                summary=annotations.get("summary", ""),
                since=str(alert.get("active_at") or "")))
    return found


# -- the same conditions, evaluated here -----------------------------------------------------

Scrape = metrics.Scrape | None
Verdict = tuple[bool | None, float | None, str]  # condition holds?, its value, in words
Evaluator = Callable[[RunContext, Scrape, Scrape], Verdict]


def _rate(a: Scrape, b: Scrape, concept: str) -> float | None:
    return metrics.rate(a, b, concept) if a is not None and b is not None else None


def _down(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    """`up == 0` as Prometheus would see it, but a server that answers /health while its
    /metrics is missing (404, another release or a proxy) is up: not evaluable, not down."""
    if b is not None:
        return False, 1.0, "scraped"
    with service.client(ctx) as http:
        page = service.scrape(ctx, http)
        if page.reachable and page.status_code == 200:
            return False, 1.0, "scraped (the earlier scrape could not be parsed)"
        health = service.probe(http, "GET", f"{ctx.target.fraiseql_url}/health")
    if health.reachable:
        why = (f"/metrics is not served by this server (HTTP {page.status_code})"
               if service.not_served(page) else
               f"/metrics answered HTTP {page.status_code}" if page.reachable
               else f"/metrics: {page.error}")
        return None, None, (f"{why}, but /health answers (HTTP {health.status_code}): the "
                            "server is up; Prometheus' up cannot be judged here")
    return True, 0.0, f"the server does not answer: {health.error or page.error}"


def _db_error_rate(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    r = _rate(a, b, "execution_errors")
    return (None if r is None else r > 10), r, f"{r or 0:.2f} execution errors/s (> 10)"


def _error_ratio(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    errors, total = _rate(a, b, "queries_error"), _rate(a, b, "queries_total")
    if errors is None or not total:
        return None, None, "no queries in the window"
    ratio = errors / total
    return ratio > 0.05, ratio, f"{ratio:.1%} of queries failed (> 5 %)"


def _latency(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    p99 = metrics.quantile_between(a, b, "query_duration", 0.99) if a and b else None
    return (None if p99 is None else p99 >= 5), p99, f"p99 {p99 or 0:.3f} s (>= 5 s)"


def _cache(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    ratio = metrics.value(b, "cache_hit_ratio") if b else None
    lookups = (_rate(a, b, "cache_hits") or 0) + (_rate(a, b, "cache_misses") or 0)
    if ratio is None or lookups == 0:
        return None, ratio, "no cache lookups in the window"
    return ratio < 0.7, ratio, f"cache hit ratio {ratio:.2f} (< 0.7)"


def _pool(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    if b is None:
        return None, None, "no scrape"
    active, total = metrics.value(b, "pool_active"), metrics.value(b, "pool_total")
    waiting = metrics.value(b, "pool_waiting") or 0
    if not total:
        return None, None, "no pool gauges"
    share = (active or 0) / total
    return share > 0.9 and waiting > 0, share, \
        f"{share:.0%} of open pool connections active, {waiting:g} requests waiting"


def _memory(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    rss = metrics.value(b, "resident_memory") if b else None
    if rss is None:
        return None, None, "no resident-memory metric here (v2 exports none)"
    return rss > 7e9, rss, f"{rss / 2**30:.2f} GiB resident (> 7 GB)"


def _archiving(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    with postgres.connect(ctx.target.database_url()) as conn:
        row = postgres.one(conn, postgres.ARCHIVING_SQL)
    failed, archived = row["last_failed_time"], row["last_archived_time"]
    failing = bool(failed and (archived is None or failed > archived))
    return failing, float(row["failed_count"]), f"{row['failed_count']} archive failures" + (
        ", the latest after the last success" if failing else "")


def _replication(ctx: RunContext, a: Scrape, b: Scrape) -> Verdict:
    with postgres.connect(ctx.target.database_url()) as conn:
        replicas = postgres.rows(conn, postgres.REPLICATION_SQL)
    lags = [r["replay_lag_s"] for r in replicas if r["replay_lag_s"] is not None]
    if not lags:
        return None, None, "no replica reports a lag"
    return max(lags) > 150, max(lags), f"replay lag {max(lags):.0f} s (> 150 s)"


EVALUATORS: dict[str, Evaluator] = {
    "FraiseQLDown": _down, "HighDatabaseErrorRate": _db_error_rate,
    "HighErrorRatio": _error_ratio, "HighQueryLatency": _latency,
    "LowCacheHitRatio": _cache, "ConnectionPoolNearCapacity": _pool,
    "MemoryLeakSuspected": _memory, "WALArchivingFailing": _archiving,
    "ReplicationLagHigh": _replication,
}


def _safe_scrape(ctx: RunContext) -> metrics.Scrape | None:
    try:
        return metrics.scrape(ctx)
    except Exception:  # noqa: BLE001 - a failed scrape is what FraiseQLDown evaluates
        return None


def evaluate_here(ctx: RunContext, window_s: float) -> tuple[list[ActiveAlert], pd.DataFrame]:
    """Every shipped rule's condition on two scrapes `window_s` apart."""
    rules = shipped_rules()
    first = _safe_scrape(ctx)
    if first is None and ctx.unresponsive.hung(ctx.target.fraiseql_url):
        second = None  # the server hung in this run: a second scrape would be skipped
    else:
        print(f"sampling for {window_s:g} s ...")
        progress.pause(window_s, "between the two scrapes")
        second = _safe_scrape(ctx)
    rows, active = [], []
    for name, evaluator in EVALUATORS.items():
        rule = rules.get(name, {})
        annotations = rule.get("annotations", {})
        try:
            holds, value, detail = evaluator(ctx, first, second)
        except Exception as exc:  # noqa: BLE001 - one rule failing must not hide the others
            holds, value, detail = None, None, f"could not evaluate: {exc}"
        rows.append({"alert": name, "condition": {True: "true", False: "false",
                                                  None: "not evaluable"}[holds],
                     "value": value, "detail": detail, "for": rule.get("for")})
        if holds:
            active.append(ActiveAlert(name, "pending", rule.get("labels", {}).get(
                "severity", "warning"), value, annotations.get("runbook"), detail))
    return active, pd.DataFrame(rows)


@check("alerts.active")
def check_active(ctx: RunContext,
                 window_s: float = thresholds.METRICS_WINDOW_S) -> list[Finding]:
    """Firing and pending alerts, each with the runbook to run next."""
    table: pd.DataFrame | None = None
    if ctx.target.get("prometheus_url"):
        source = "Prometheus"
        active = from_prometheus(ctx)
    else:
        source = f"two scrapes {window_s:g} s apart (no prometheus_url)"
        active, table = evaluate_here(ctx, window_s)
    findings = [ctx.record("alerts.source", Status.INFO, f"alert states from {source}",
                           {"source": source}, table=table)]
    for alert in sorted(active, key=lambda a: (a.state != "firing", a.name)):
        status = SEVERITY_STATUS.get(alert.severity, Status.WARNING)
        if alert.state != "firing":
            status = Status.WARNING if status is not Status.INFO else status
        findings.append(ctx.record(
            f"alerts.{alert.name}", status,
            f"{alert.name} is {alert.state}: {alert.summary}".rstrip(": "),
            {"state": alert.state, "severity": alert.severity, "value": alert.value,
             "runbook": alert.runbook, "since": alert.since},
            next_step(alert, ctx.target_name)))
    listing = pd.DataFrame([{"alert": a.name, "state": a.state, "severity": a.severity,
                             "next": next_step(a, ctx.target_name)} for a in active])
    if not active:
        findings.append(ctx.record("alerts.summary", Status.OK,
                                   "no alert is firing or pending", {"source": source}))
    else:
        firing = sum(a.state == "firing" for a in active)
        findings.append(ctx.record(
            "alerts.summary", Status.INFO,
            f"{firing} firing and {len(active) - firing} pending: "
            + ", ".join(a.name for a in active), {"source": source}, table=listing))
    return findings


@check("alerts.lint")
def check_rules_can_fire(ctx: RunContext, rules_path: str | None = None) -> Finding:
    """Rules on metrics nobody exports never fire: check them against what is really there
    (Prometheus' series names when it is configured, else the target's own scrape)."""
    path = Path(rules_path) if rules_path else RULES_FILE
    exported = set(metrics.scrape(ctx).names())
    client = prometheus.from_target(ctx)
    if client is not None:
        with client:
            exported |= set(client.label_values("__name__"))
    problems = alert_rules.lint(path, exported)
    table = pd.DataFrame([{"rule": p.rule, "kind": p.kind, "severity": p.severity.value,
                           "problem": p.message, "fix": p.suggestion} for p in problems])
    never = sorted({p.rule for p in problems if p.kind == alert_rules.NEVER_EXPORTED})
    evidence = {"rules_file": str(path), "problems": len(problems), "cannot_fire": never}
    if not problems:
        return ctx.result(Status.OK,
                          f"every rule in {path.name} names metrics that exist here", evidence)
    status = Status.WARNING
    summary = f"{len(problems)} problem(s) in {path.name}"
    if never:
        summary += f"; these rules can never fire here: {', '.join(never)}"
    return ctx.result(status, summary, evidence,
                      "export the missing series (e.g. run postgres_exporter or "
                      "process-exporter) or fix the rules as suggested", table=table)
