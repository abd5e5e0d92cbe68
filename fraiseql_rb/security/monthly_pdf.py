"""The monthly security report's PDF (runbook §8.1 monthly `generate-security-report
--output=/reports/security-$month.pdf`); used by monthly_security_report.

`security-report-YYYY-MM.pdf` (reportlab): title, summary, totals, the compliance table, the
figures (PNG) and the access tables, as real text a reader can search and copy.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import pandas as pd

from fraiseql_rb.checks import audit
from fraiseql_rb.core import plots, secrets
from fraiseql_rb.core.findings import STATUS_COLOURS, isoformat, utcnow
from fraiseql_rb.security.compliance import compliance_summary

if TYPE_CHECKING:
    from fraiseql_rb.security.monthly_security_report import MonthlyReport

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
