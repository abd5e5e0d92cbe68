"""Runbook §10, the operational checklist, as data: each item says how it is verified.

An item is either verified by checks (its own finding carries the worst of theirs and names
them) or is something only a person can confirm, recorded as `info` with what to confirm.
No item is silently marked ok: an item with no check that ran is `unknown`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fraiseql_rb.checks import backup, cache, config, database, instances, service, tls
from fraiseql_rb.core import runbooks
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Finding, Status, worst

PHASES = ("pre-production", "post-deployment")
# §9.1 "Runbooks to Create", by the runbook name that implements each here.
SECTION_9_1 = {
    "Service Down Runbook": "service-down", "Database Unavailable Runbook":
    "database-unavailable", "High Error Rate Runbook": "high-error-rate",
    "Memory Leak Investigation": "memory-leak", "Connection Pool Exhaustion":
    "connection-pool-exhaustion", "TLS Certificate Renewal": "tls-certificate-renewal",
    "Disaster Recovery Procedures": "disaster-recovery", "Failover Procedures": "failover",
    "Scaling Procedures": "scaling",
}

Verifier = Callable[[RunContext, dict[str, Any]], list[Finding] | Finding]


@dataclass(frozen=True)
class Item:
    key: str
    phase: str
    text: str  # the runbook's words
    verify: tuple[Verifier, ...] = ()
    confirm: str | None = None  # what a person must confirm, for what no program can see


def _instances(ctx: RunContext, _: dict[str, Any]) -> Finding:
    return instances.check_instances(ctx, instances.instance_table(ctx))


def _tls_files(ctx: RunContext, o: dict[str, Any]) -> list[Finding]:
    return tls.check_config_certificates(ctx, o.get("config_path"),
                                               warning_days=o["warning_days"],
                                               critical_days=o["critical_days"])


def _tls_served(ctx: RunContext, o: dict[str, Any]) -> list[Finding]:
    return tls.check_served_tls(ctx, o.get("config_path"),
                                      warning_days=o["warning_days"],
                                      critical_days=o["critical_days"])


def _library_runbooks(ctx: RunContext, _: dict[str, Any]) -> Finding:
    available = runbooks.discover()
    present = {title: name for title, name in SECTION_9_1.items() if name in available}
    missing = [title for title in SECTION_9_1 if title not in present]
    return ctx.record("checklist.incident_runbooks_available", Status.INFO,
                      f"fraiseql-rb provides {len(present)} of the {len(SECTION_9_1)} "
                      "runbooks of §9.1" + (f"; not yet: {', '.join(missing)}" if missing
                                            else ""),
                      {"present": present, "missing": missing})


def _logs_answer(ctx: RunContext, _: dict[str, Any]) -> Finding:
    return service.check_logs(ctx)


def _wrap(func: Callable[..., Any]) -> Verifier:
    return lambda ctx, _options: func(ctx)


ITEMS: tuple[Item, ...] = (
    # Pre-Production
    Item("load_balancer", "pre-production", "Load balancer configured and tested",
         (_instances,), "the load balancer routes only to ready instances (/readiness) and "
         "fails one over when it stops"),
    Item("tls_certificates", "pre-production", "TLS certificates installed and verified",
         (_tls_files, _tls_served)),
    Item("postgres_initialized", "pre-production", "PostgreSQL database initialized",
         (_wrap(database.check_database_exists), _wrap(database.check_role_grants),
          _wrap(database.check_password_encryption))),
    Item("redis_running", "pre-production", "Redis cluster running (if multi-instance)",
         (_wrap(cache.check_redis),)),
    Item("monitoring", "pre-production", "Monitoring and alerting configured",
         (_wrap(service.check_metrics_endpoint),),
         "alert rules are loaded in Prometheus and route to the on-call rota"),
    Item("log_aggregation", "pre-production", "Log aggregation running", (_logs_answer,),
         "the server's logs arrive in the aggregation system (search for a request)"),
    Item("backups_tested", "pre-production", "Backup procedures tested",
         (_wrap(backup.check_recent_dump), _wrap(database.check_wal_archiving)),
         "a restore from the latest dump and WAL archive was rehearsed"),
    Item("dr_plan", "pre-production", "Disaster recovery plan documented", (),
         "the DR plan states RTO/RPO per tier (§5.2) and who decides to fail over"),
    Item("incident_runbooks", "pre-production", "Incident response runbooks created",
         (_library_runbooks,), "the on-call team knows where the runbooks are"),
    Item("team_trained", "pre-production", "Team trained on procedures", (),
         "every on-call engineer has stepped through a drill (fraiseql-rb sandbox fault)"),
    # Post-Deployment
    # WAL archiving belongs here too: a deployment that broke archive_command is healthy to
    # every HTTP probe while the §5.1 point-in-time recovery silently stops.
    Item("health_checks", "post-deployment", "Health checks passing",
         (_wrap(service.check_health), _wrap(service.check_readiness),
          _wrap(service.check_graphql), _wrap(database.check_wal_archiving))),
    Item("metrics_flowing", "post-deployment", "Metrics flowing to monitoring system",
         (_wrap(service.check_metrics_endpoint),),
         "the monitoring system shows this deployment's series (not only the endpoint)"),
    Item("logs_flowing", "post-deployment", "Logs flowing to aggregation system",
         (_logs_answer,), "recent requests appear in the aggregation system"),
    Item("alerts_firing", "post-deployment", "Alerts firing correctly", (),
         "a test alert reached the on-call pager"),
    Item("load_test", "post-deployment", "Load test completed successfully", (),
         "the load test report for this version is attached to the change"),
    Item("performance_baseline", "post-deployment", "Performance baseline established",
         (_wrap(service.check_response_times),),
         "the baseline is recorded where the next review will find it"),
    Item("security_scan", "post-deployment", "Security scan completed",
         (_wrap(config.check_config_file),), "the image and dependency scan is clean"),
    Item("documentation", "post-deployment", "Documentation updated", (),
         "the runbook and architecture notes reflect this deployment"),
    Item("team_notified", "post-deployment", "Team notified of availability", (),
         "the availability announcement went out"),
)


def items_for(phase: str) -> list[Item]:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    return [item for item in ITEMS if item.phase == phase]


def verify_item(ctx: RunContext, key: str, **options: Any) -> Finding:
    """Run an item's checks and record the item's own verdict, naming what decided it."""
    item = next(i for i in ITEMS if i.key == key)
    results: list[Finding] = []
    for verifier in item.verify:
        outcome = verifier(ctx, options)
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    decisive = [f for f in results if f.status is not Status.INFO]
    evidence = {"runbook_item": item.text,
                "verified_by": {f.check: f.status.value for f in results}}
    name = f"checklist.{item.key}"
    if not item.verify:
        return ctx.record(name, Status.INFO, f"{item.text}: to be confirmed by a person — "
                          f"{item.confirm}", evidence)
    status = worst([f.status for f in decisive]) if decisive else Status.INFO
    summary = f"{item.text}: {status.value} (" + ", ".join(
        f"{f.check} {f.status.value}" for f in results) + ")"
    if item.confirm:
        summary += f"; also confirm: {item.confirm}"
    return ctx.record(name, status, summary, evidence,
                      None if status in (Status.OK, Status.INFO) else
                      "resolve the findings named above before signing this item off")


def run_phase(ctx: RunContext, phase: str, **options: Any) -> pd.DataFrame:
    """Verify every item of a phase; the table is the checklist as signed off."""
    rows = []
    for item in items_for(phase):
        finding = verify_item(ctx, item.key, **options)
        rows.append({"item": item.text, "status": finding.status.value,
                     "how": "checked" if item.verify else "confirm manually",
                     "detail": finding.summary.split(": ", 1)[-1]})
    return pd.DataFrame(rows)
