"""Runbook §8.1 "Regular Security Reviews", monthly: the security report, its policy
compliance table and its PDF.

The runbook's monthly review is three commands that do not exist (`generate-security-report
--month=... --output=/reports/security-$month.pdf`, `analyze-access-logs`,
`compliance-checker --generate-report`). Here they are one runbook, `monthly-security-report`:

- the month's totals by kind and by day, and the access review (`security_review`: every
  count in PostgreSQL, only bounded top-N rows in pandas);
- policy compliance, one row per policy, each decided by the pre-flight checks that already
  exist (`preflight`, `tls`, `database`, `config`): they run on a scratch context, so the
  report records one `compliance.<policy>` finding per policy, with the source checks'
  verdicts as its evidence, rather than thirty pre-flight findings;
- `security-report-YYYY-MM.pdf` in the run's artifact directory (reportlab): title, summary,
  totals, the compliance table, the figures (PNG) and the access tables, as real text a
  reader can search and copy.

`MonthlyReport` carries what the notebook's steps produced (tables, figures) to the PDF, so a
notebook cell stays one call. Nothing here changes the system.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.checks import audit, config, database, tls
from fraiseql_rb.core import plots, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.errors import RunbookError, UsageError
from fraiseql_rb.core.findings import STATUS_COLOURS, Finding, Status, isoformat, utcnow, worst
from fraiseql_rb.preflight import config_preflight
from fraiseql_rb.security import review as security_review

# ---- policy compliance ---------------------------------------------------------------------


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
    path = config_preflight.config_path(ctx)
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
        ("config.file", lambda: config_preflight.check_config_file(scratch)),
        ("config.error_redaction", lambda: check_error_redaction(scratch)),
        ("tls.server.expiry", lambda: config_preflight.check_config_certificates(
            scratch, warning_days=warning_days, critical_days=critical_days)),
        ("tls.endpoint.protocol", lambda: config_preflight.check_served_tls(
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


# ---- the month's report ----------------------------------------------------------------------


@dataclass
class MonthlyReport:
    """One month's report as the notebook builds it, step by step; `write_pdf` renders it."""

    ctx: RunContext
    label: str
    start: datetime
    end: datetime
    work: security_review.WorkHours
    top_n: int = security_review.TOP_N
    warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning
    critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical
    totals: pd.DataFrame | None = None
    all_events: int | None = None
    access: security_review.AccessReview | None = None
    new_ips: pd.DataFrame | None = None
    new_ip_count: int | None = None
    compliance: pd.DataFrame | None = None
    figures: list[tuple[str, Figure]] = field(default_factory=list)

    # the notebook's steps, each one call

    def describe(self) -> str:
        return (f"{security_review.describe_month(self.label, self.start, self.end)}; "
                f"working hours {self.work.describe()}; top {self.top_n}")

    def check_totals(self) -> Finding:
        found = security_review.check_month_totals(self.ctx, self.label, self.start, self.end)
        if isinstance(found.table, pd.DataFrame):
            self.totals = found.table
            self.all_events = found.evidence.get("all_events")
        return found

    @property
    def no_data(self) -> bool:
        found = self._last("security.monthly_totals")
        return bool(found and found.evidence.get("no_data"))

    def daily_plot(self) -> Figure | Finding:
        """Security events per day of the month, one line per kind."""
        try:
            days = security_review.buckets(self.ctx, self.start, self.end,
                                           security_review.MONTH_KINDS,
                                           width=security_review.DAY)
            wide = days.pivot(index="bucket", columns="kind", values="count")[
                list(security_review.MONTH_KINDS)]
            wide.columns = [security_review.TITLES.get(k, k) for k in wide.columns]
            fig = plots.timeseries(wide, title=f"Security events per day, {self.label}",
                                   ylabel="events per day", xlabel="day (UTC)")
            fig.axes[0].set_ylim(bottom=0)
            return self._keep("Security events per day", fig)
        except Exception as exc:  # noqa: BLE001 - a plot never stops the report
            return self._plot_failed("daily", exc)

    def type_plot(self) -> Figure | Finding:
        """The month's totals by kind, as bars."""
        try:
            if self.totals is None:
                raise RunbookError("the totals step did not run")
            data = self.totals.assign(what=[security_review.TITLES.get(k, k)
                                            for k in self.totals["kind"]])
            fig = plots.bar(data, x="what", y="count", horizontal=True,
                            title=f"Security events by type, {self.label}",
                            xlabel="event type", ylabel="events in the month")
            return self._keep("Security events by type", fig)
        except Exception as exc:  # noqa: BLE001 - a plot never stops the report
            return self._plot_failed("by type", exc)

    def check_access(self) -> Finding | None:
        review = security_review.check_access_review(self.ctx, self.label, self.start,
                                                     self.end, work=self.work,
                                                     top_n=self.top_n)
        if isinstance(review, security_review.AccessReview):
            self.access = review
        return self._last("security.access_review")

    def outside_hours(self) -> pd.DataFrame:
        if self.access is None:
            print("The access review did not run: nothing to show.")
            return pd.DataFrame()
        t = self.access.totals
        print(f"{t['outside_hours']:,} of {t['events']:,} events outside working hours "
              f"({self.work.describe()})")
        return self.access.outside_table()

    def check_new_addresses(self) -> Finding:
        found = security_review.check_new_addresses(self.ctx, self.label, self.start,
                                                    self.end, top_n=self.top_n)
        if isinstance(found.table, pd.DataFrame):
            self.new_ips = found.table
            self.new_ip_count = found.evidence.get("new_addresses")
        return found

    def check_compliance(self) -> pd.DataFrame | Finding:
        table = check_compliance(self.ctx, warning_days=self.warning_days,
                                 critical_days=self.critical_days)
        if isinstance(table, pd.DataFrame):
            self.compliance = table
        return table

    def write_pdf(self) -> Finding:
        """`security-report-YYYY-MM.pdf` in the run's artifact directory. Records
        `security.report_pdf`: ok with its path, info when the run has no artifact
        directory (called from Python), unknown when it cannot be written."""
        if self.ctx.log.path is None:
            return self.ctx.record("security.report_pdf", Status.INFO,
                                   "no PDF written: this run has no artifact directory "
                                   "(run it with fraiseql-rb run, or from the notebook)", {})
        path = self.ctx.log.path.parent / pdf_name(self.label)
        try:
            pages = write_pdf(self, path)
        except Exception as exc:  # noqa: BLE001 - the notebook and HTML still stand
            return self.ctx.record("security.report_pdf", Status.UNKNOWN,
                                   f"could not write the PDF: {describe_error(exc)}",
                                   {"error": type(exc).__name__, "path": str(path)},
                                   "read the error; the notebook and HTML hold the same "
                                   "report")
        return self.ctx.record("security.report_pdf", Status.OK,
                               f"{path.name} written ({pages} pages, "
                               f"{path.stat().st_size / 1024:.0f} KiB) beside the notebook",
                               {"path": str(path), "pages": pages,
                                "bytes": path.stat().st_size})

    # helpers

    def _last(self, name: str) -> Finding | None:
        return self.ctx.latest(name)

    def _keep(self, caption: str, fig: Figure) -> Figure:
        self.figures.append((caption, fig))
        return fig

    def _plot_failed(self, what: str, exc: Exception) -> Finding:
        return self.ctx.record("security.plot", Status.UNKNOWN,
                               f"could not draw the {what} plot: {describe_error(exc)}",
                               {"error": type(exc).__name__})

    def __repr__(self) -> str:
        return self.describe()


def begin(ctx: RunContext, month: str | None = None, *, top_n: int = security_review.TOP_N,
          work_start_hour: int = thresholds.WORK_START_HOUR,
          work_end_hour: int = thresholds.WORK_END_HOUR, work_days: Any = thresholds.WORK_DAYS,
          warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
          critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical,
          now: datetime | None = None) -> MonthlyReport:
    """Check the parameters (a bad month or working-hours value raises a UsageError whose
    message is the one line to read) and start the report of `month` (YYYY-MM, None = the
    previous calendar month, UTC)."""
    label, start, end = security_review.month_window(month, now)
    work = security_review.WorkHours.parse(work_days, work_start_hour, work_end_hour)
    if int(top_n) < 1:
        raise UsageError(f"top_n must be at least 1, not {top_n}")
    return MonthlyReport(ctx, label, start, end, work, int(top_n), float(warning_days),
                         float(critical_days))


# ---- the PDF ---------------------------------------------------------------------------------

# Relative column widths of the PDF's tables (1.0 when not listed).
COLUMN_WEIGHTS = {"user": 3.4, "ip": 1.9, "value": 3.0, "by": 0.6, "events": 1.0,
                  "outside_hours": 1.2, "ips": 0.7, "users": 0.8, "first_seen": 1.7,
                  "last_seen": 1.7}


def pdf_name(label: str) -> str:
    return f"security-report-{label}.pdf"


def _text(value: Any) -> str:
    """A value as masked, XML-escaped text for a reportlab Paragraph."""
    if value is None or (not isinstance(value, (str, list, dict, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, datetime):  # pd.Timestamp is one
        return isoformat(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return escape(secrets.mask(str(value)))


def totals_line(report: MonthlyReport) -> str:
    """The month's totals in one plain line (the PDF's summary; tests search for it)."""
    if report.totals is None:
        return "Totals: not computed (the totals step did not run)."
    parts = [f"{r['kind']} {int(r['count']):,}" for r in report.totals.to_dict("records")]
    if report.all_events is not None:
        parts.append(f"all audit events {report.all_events:,}")
    return f"Totals for {report.label}: " + " | ".join(parts) + "."


def summary_lines(report: MonthlyReport) -> list[str]:
    ctx = report.ctx
    lines = [f"Window: {audit.describe_window(report.start, report.end)} (UTC). Target "
             f"{ctx.target_name}; generated {isoformat(utcnow())} by fraiseql-rb "
             f"{ctx.runbook}" + (f", {ctx.log.incident_id}" if ctx.log.incident_id else "")
             + "."]
    if report.no_data:
        lines.append(f"No audit events were recorded in {report.label}: there is nothing to "
                     "total or review for this month. The compliance table describes the "
                     "deployment as it is today.")
    lines.append(totals_line(report))
    if report.access is not None and report.access.totals["events"]:
        t = report.access.totals
        share = t["outside_hours"] / t["events"]
        lines.append(f"Access: {t['events']:,} audit events from {t['users']:,} users and "
                     f"{t['ips']:,} addresses; {t['outside_hours']:,} ({share:.1%}) outside "
                     f"working hours ({report.work.describe()}).")
    if report.new_ip_count is not None:
        lines.append(f"Addresses first seen this month: {report.new_ip_count:,}.")
    overall, sentence = compliance_summary(report.compliance)
    lines.append(f"Compliance: {sentence}.")
    lines.append(f"Run status so far: {report.ctx.status.upper()} "
                 f"({len(report.ctx.log.findings)} findings).")
    return lines


def write_pdf(report: MonthlyReport, path: Path) -> int:
    """Render the report to `path`; returns the number of pages."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Image,
        KeepTogether,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9)
    title = f"Security report {report.label}: {report.ctx.target_name}"
    width = A4[0] - 36 * mm
    story: list[Any] = [Paragraph(escape(title), styles["Title"])]

    def heading(text: str) -> None:
        story.append(Paragraph(escape(text), styles["Heading2"]))

    def table(frame: pd.DataFrame, widths: list[float] | None = None,
              status_column: str | None = None) -> None:
        if frame is None or frame.empty:
            story.append(Paragraph("<i>none</i>", body))
            return
        if widths is None:
            weights = [COLUMN_WEIGHTS.get(str(c), 1.0) for c in frame.columns]
            widths = [width * w / sum(weights) for w in weights]
        header = [Paragraph(f"<b>{_text(str(c).replace('_', ' '))}</b>", small)
                  for c in frame.columns]
        data = [header]
        for record in frame.itertuples(index=False):
            cells = []
            for column, value in zip(frame.columns, record, strict=True):
                text = _text(value.item() if hasattr(value, "item") else value)
                if column == status_column:
                    text = (f"<font color='{STATUS_COLOURS.get(str(value), '#000000')}'>"
                            f"<b>{text.upper()}</b></font>")
                cells.append(Paragraph(text, small))
            data.append(cells)
        t = Table(data, colWidths=widths, repeatRows=1)
        t.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d7de")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f6f8fa")),
            ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        story.append(t)

    heading("Summary")
    for line in summary_lines(report):
        story.append(Paragraph(_text(line), body))
    heading("Totals by type")
    table(report.totals if report.totals is not None else pd.DataFrame(),
          [0.3 * width, 0.5 * width, 0.2 * width])
    heading("Policy compliance")
    story.append(Paragraph(_text(compliance_summary(report.compliance)[1]) + ".", body))
    table(report.compliance if report.compliance is not None else pd.DataFrame(),
          [0.22 * width, 0.11 * width, 0.45 * width, 0.22 * width], status_column="status")
    for caption, fig in report.figures:
        png = plots.to_png(fig)
        w_in, h_in = fig.get_size_inches()
        image = Image(io.BytesIO(png), width=width, height=width * h_in / w_in)
        story.append(KeepTogether([Paragraph(escape(caption), styles["Heading3"]), image]))
    if report.access is not None:
        story.append(PageBreak())
        heading(f"Access review (top {report.top_n})")
        story.append(Paragraph("By user", styles["Heading3"]))
        table(_shown(report.access.by_user))
        story.append(Paragraph("By client address", styles["Heading3"]))
        table(_shown(report.access.by_ip))
        story.append(Paragraph(escape(f"Users outside working hours "
                                      f"({report.work.describe()})"), styles["Heading3"]))
        table(_shown(report.access.outside_users))
        story.append(Paragraph(escape(f"Addresses outside working hours "
                                      f"({report.work.describe()})"), styles["Heading3"]))
        table(_shown(report.access.outside_ips))
    if report.new_ips is not None:
        story.append(Paragraph(escape(f"Addresses first seen in {report.label} "
                                      f"({report.new_ip_count or 0:,} in all)"),
                               styles["Heading3"]))
        table(_shown(report.new_ips))
    heading("Findings of this run")
    findings = pd.DataFrame([{"status": str(f.status), "check": f.check, "summary": f.summary}
                             for f in report.ctx.log.findings],
                            columns=["status", "check", "summary"])
    table(findings, [0.12 * width, 0.25 * width, 0.63 * width], status_column="status")
    story.append(Spacer(1, 4 * mm))

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#6e7781"))
        canvas.drawString(18 * mm, 10 * mm, f"fraiseql-rb {report.ctx.runbook} - {title}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    doc = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                            topMargin=16 * mm, bottomMargin=18 * mm, title=title,
                            author="fraiseql-rb", subject=f"runbook §8.1 monthly, {report.label}",
                            creator=f"fraiseql-rb {report.ctx.runbook}")
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    tmp.replace(path)
    return int(doc.page)


def _shown(frame: pd.DataFrame, limit: int = 200) -> pd.DataFrame:
    """A bounded table for the PDF, datetimes to the minute (UTC)."""
    out = frame.head(limit).copy()
    if "user" in out.columns:  # events keyed by address only
        out["user"] = out["user"].map(lambda v: "(no user)" if v is None or pd.isna(v) else v)
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].map(lambda v: f"{v:%Y-%m-%d %H:%M}Z"
                                          if pd.notna(v) else "")
    return out
