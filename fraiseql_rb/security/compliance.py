"""Policy compliance for the monthly security report (runbook §8.1 monthly
`compliance-checker --generate-report`); used by monthly_security_report.

One row per policy, each decided by the checks that already exist (`checks.config`,
`checks.tls`, `checks.database`): they run on a scratch context, so the report records one
`compliance.<policy>` finding per policy, with the source checks' verdicts as its evidence,
rather than thirty pre-flight findings. Nothing here changes the system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fraiseql_rb.checks import audit, config, database, tls
from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.findings import Finding, Status, isoformat, worst


@dataclass(frozen=True)
class Policy:
    """A policy of the runbook and the pre-flight checks (by check name) that decide it."""

    key: str  # the finding is compliance.<key>
    title: str
    requirement: str  # where the runbook asks for it
    sources: tuple[str, ...]


POLICIES: tuple[Policy, ...] = (
    Policy("tls_endpoint", "TLS 1.2 or newer on the served endpoint",
           "§1.1 load balancer TLS 1.2+; §1.2 min_tls_version = 1.2",
           ("tls.endpoint.protocol", "config.tls_version")),
    Policy("tls_postgres", "TLS 1.2 or newer to PostgreSQL",
           "§1.1 database: encrypted connections",
           ("tls.postgres.ssl", "tls.postgres.min_protocol", "tls.postgres.connection")),
    Policy("scram", "SCRAM-SHA-256 password authentication",
           "§1.1 database: SCRAM-SHA-256",
           ("database.password_encryption", "database.role_passwords")),
    Policy("rate_limiting", "Rate limiting on", "§1.2 [rate_limit] enabled = true",
           ("config.rate_limit",)),
    Policy("audit", "Audit logging on", "§1.2 [audit] enabled = true; §8.1 reviews read it",
           ("config.audit", "audit.recent")),
    Policy("error_redaction", "Error redaction on",
           "§1.2 [security] error_redaction_enabled = true",
           ("config.error_redaction",)),
    Policy("certificates", "Certificates valid (dates, host name, chain)",
           "§1.2 and §8.1 weekly: openssl x509 -dates",
           ("tls.server.certificate", "tls.server.expiry", "tls.server.key_match",
            "tls.server.chain",
            "tls.endpoint.expiry", "tls.endpoint.hostname", "tls.endpoint.chain",
            "tls.postgres.expiry", "tls.postgres.hostname")),
)
VERDICT = {Status.OK: "met", Status.WARNING: "at risk", Status.CRITICAL: "not met",
           Status.UNKNOWN: "not verified", Status.INFO: "to confirm by hand"}
AUDIT_RECENT = timedelta(days=7)


@check("config.error_redaction")
def check_error_redaction(ctx: RunContext) -> Finding:
    """Error redaction (sanitisation) as the config file sets it, in any of the formats:
    the runbook's `[security] error_redaction_enabled`, fraiseql.toml's
    `[fraiseql.security.error_sanitization] enabled` (on by default). The v2 server config
    has no such key: the setting is compiled from fraiseql.toml, so a person confirms it."""
    path = config.config_path(ctx)
    if not path or not Path(path).is_file():
        return ctx.result(Status.UNKNOWN,
                          "no config file to read error redaction from", {"config_path": path},
                          "set config_path for the target in the inventory")
    doc = config.load(path)
    if doc.error is not None:
        return ctx.result(Status.UNKNOWN,
                          f"the config file cannot be parsed: {doc.error.message}",
                          {"config_path": path}, "run validate-config on it")
    fmt = config.detect(doc.data).format
    settings = config.settings_by_role(path)
    key = next((k for k in config.TABLES[fmt].values() if k.role == "error_redaction"), None)
    evidence = {"config_path": path, "format": str(fmt), "key": key.display if key else None}
    if key is None:
        return ctx.result(Status.INFO,
            "the v2 server config has no error-redaction switch: it is compiled from "
            "fraiseql.toml [fraiseql.security.error_sanitization] enabled (on by default); "
            "confirm it there", evidence,
            "check fraiseql.toml: [fraiseql.security.error_sanitization] enabled = true")
    value = settings.get("error_redaction", key.default)
    evidence["value"] = value
    where = f"{key.display} = {str(value).lower()}" if "error_redaction" in settings else (
        f"{key.display} not set (default {key.default})")
    if value is True:
        return ctx.result(Status.OK,
                          f"error redaction is on ({where})", evidence)
    return ctx.result(Status.WARNING,
                      f"error redaction is not on ({where}): errors may show SQL, table "
                      "names or stack details to clients", evidence,
                      f"set {key.display} = true")


@check("audit.recent")
def check_audit_recent(ctx: RunContext, end: datetime | None = None) -> Finding:
    """Is the audit log being written? Security events of the last 7 days, counted on the
    index; none at all is a warning to confirm audit logging is on (a quiet week is rare)."""
    start, end = audit.last_hours(AUDIT_RECENT.total_seconds() / 3600, end)
    counts = audit.counts(ctx, start, end, audit.KINDS)
    by_kind = {r["kind"]: int(r["count"]) for r in counts.to_dict("records")}
    total = sum(by_kind.values())
    evidence = {"window": [isoformat(start), isoformat(end)], "counts": by_kind,
                "source": audit.source(ctx).label}
    if total:
        return ctx.result(Status.OK,
                          f"the audit log is being written: {total:,} security events in the "
                          "last 7 days", evidence)
    return ctx.result(Status.WARNING,
                      "no security event recorded in the last 7 days: confirm audit logging "
                      "is on and writes where audit_source points", evidence,
                      "enable audit logging (fraiseql.toml [fraiseql.security.audit_logging] "
                      "enabled = true) and check audit_source in the inventory")


def _preflight_findings(ctx: RunContext, *, warning_days: float, critical_days: float
                        ) -> list[Finding]:
    """Run the pre-flight checks the policies read, on a scratch context (same target, no
    findings file), and return what they recorded."""
    scratch = RunContext.adhoc(ctx.runbook, target=ctx.target)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("config.file", lambda: config.check_config_file(scratch)),
        ("config.error_redaction", lambda: check_error_redaction(scratch)),
        ("tls.server.expiry", lambda: tls.check_config_certificates(
            scratch, warning_days=warning_days, critical_days=critical_days)),
        ("tls.endpoint.protocol", lambda: tls.check_served_tls(
            scratch, warning_days=warning_days, critical_days=critical_days)),
        ("tls.postgres.ssl", lambda: tls.check_postgres_tls(
            scratch, warning_days=warning_days, critical_days=critical_days)),
        ("database.password_encryption", lambda: database.check_password_encryption(scratch)),
        ("audit.recent", lambda: check_audit_recent(scratch)),
    ]
    if ctx.target.get("admin_database_url"):
        steps.append(("database.role_passwords",
                      lambda: database.check_role_passwords(scratch)))
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one check never stops the others
            scratch.record(name, Status.UNKNOWN, f"could not run the check: "
                                                 f"{describe_error(exc)}",
                           {"error": type(exc).__name__})
    return scratch.log.findings


def _rank(status: Status) -> int:
    return {Status.CRITICAL: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.OK: 3,
            Status.INFO: 4}[status]


def _decide(policy: Policy, found: list[Finding], context: dict[str, Finding]
            ) -> tuple[Status, list[Finding], str]:
    """(status, the findings behind it worst first, a note) for one policy."""
    mine = sorted((f for f in found if f.check in policy.sources),
                  key=lambda f: _rank(f.status))
    note = ""
    if policy.key == "scram" and not any(f.check == "database.role_passwords" for f in mine):
        note = "stored role passwords not checked: the target has no admin_database_url"
    if not mine:
        why = context.get("config.file")
        note = (f"the pre-flight check did not report ({why.summary})" if why is not None
                else "the pre-flight check did not report")
        return Status.UNKNOWN, [], note
    decisive = [f.status for f in mine if f.status is not Status.INFO]
    return (worst(decisive) if decisive else Status.INFO), mine, note


@check("compliance")
def check_compliance(ctx: RunContext, *,
                     warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
                     critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical
                     ) -> pd.DataFrame:
    """§8.1 monthly "compliance-checker": one row per policy (TLS 1.2+ served and to
    PostgreSQL, SCRAM, rate limiting, audit, error redaction, certificates), its status
    taken from the pre-flight checks (the worst of the decisive ones; `info` when only a
    person can confirm it), the evidence and the source checks. Records `compliance.<key>`
    per policy; returns DataFrame(policy, status, evidence, source check)."""
    found = _preflight_findings(ctx, warning_days=warning_days, critical_days=critical_days)
    by_check = {f.check: f for f in found}
    rows = []
    for policy in POLICIES:
        status, mine, note = _decide(policy, found, by_check)
        evidence_text = "; ".join([f.summary.rstrip(".") for f in mine]
                                  + ([note] if note else []))
        first_fix = next((f.remediation for f in mine
                          if f.status not in (Status.OK, Status.INFO) and f.remediation), None)
        if status is Status.INFO:
            first_fix = next((f.remediation for f in mine if f.remediation), None)
        ctx.record(f"compliance.{policy.key}", status,
                   f"{policy.title}: {VERDICT[status]} - {evidence_text}",
                   {"policy": policy.title, "requirement": policy.requirement,
                    "sources": [{"check": f.check, "status": str(f.status),
                                 "summary": f.summary} for f in mine],
                    "note": note or None},
                   first_fix or ("rerun config-preflight to see why" if status is
                                 Status.UNKNOWN else None))
        rows.append({"policy": policy.title, "status": str(status),
                     "evidence": evidence_text,
                     "source check": ", ".join(dict.fromkeys(f.check for f in mine))
                     or ", ".join(policy.sources)})
    return pd.DataFrame(rows, columns=["policy", "status", "evidence", "source check"])


def compliance_summary(table: pd.DataFrame | None) -> tuple[str, str]:
    """(overall status, one sentence) for a compliance table."""
    if table is None or table.empty:
        return "unknown", "policy compliance was not checked"
    statuses = [Status(s) for s in table["status"]]
    counts = {s: statuses.count(s) for s in Status if statuses.count(s)}
    decisive = [s for s in statuses if s is not Status.INFO]
    overall = worst(decisive) if decisive else Status.INFO
    parts = [f"{counts[s]} {VERDICT[s]}" for s in (Status.OK, Status.WARNING, Status.CRITICAL,
                                                    Status.UNKNOWN, Status.INFO) if s in counts]
    return str(overall), (f"{counts.get(Status.OK, 0)} of {len(statuses)} policies met "
                          f"({', '.join(parts)}); overall {overall.upper()}")

