"""What the responder and the reviewer see of a run, built from its findings.json dict.

- `terminal_summary`: the lines `fraiseql-rb run` prints after `status: ...` (root cause, next
  step, each critical finding), before the artifact directory that stays the last line;
- `page_title` and `header_html`: the `<title>` and the header block at the top of the HTML
  report (incident, target, times, verdict, root cause, next step, actions, who ran it);
- `FindingsTable`: the timeline that closes every notebook (`RunContext.summary()`), whole,
  as text and as HTML;
- `install_display_formatters`: in the kernel, lists of findings and plain strings display
  as findings and text, never as Python reprs;
- `show`: a figure (or any object) shown in the notebook mid-cell, before the cell's own
  result.

Every value shown is escaped (HTML) and masked (`secrets.mask`); keys that an older
findings.json lacks (`run_by`, `interrupted_at`, `confirmed_by`, ...) are skipped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from fraiseql_rb.core import secrets
from fraiseql_rb.core.findings import PHASE_CHECK, STATUS_COLOURS, Action, Finding

_STATUS_ORDER = ("critical", "unknown", "warning", "ok", "info")


# ---------------------------------------------------------------------------------------------
# shared helpers

def _text(value: Any) -> str:
    """A value as masked text: strings as they are, anything else as compact JSON."""
    if value is None:
        return ""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            value = str(value)
    return secrets.mask(value)


def _one_line(value: Any) -> str:
    return " ".join(_text(value).split())


def _e(value: Any) -> str:
    """Masked and HTML-escaped."""
    return html.escape(_text(value))


def diagnosis(findings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The incident playbook's `diagnosis` finding (the last one, if it was recorded twice)."""
    found = [f for f in findings.get("findings") or [] if f.get("check") == "diagnosis"]
    return found[-1] if found else None


def root_cause(findings: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(code, reason, next step) from the diagnosis finding, or None without one."""
    found = diagnosis(findings)
    if found is None:
        return None
    code = str((found.get("evidence") or {}).get("root_cause") or "unknown")
    summary = str(found.get("summary") or "")
    reason = summary
    for prefix in (f"root cause: {code} — ", f"root cause: {code}"):
        if summary.startswith(prefix):
            reason = summary[len(prefix):].strip(" —-:")
            break
    return code, reason, str(found.get("remediation") or "")


def _critical(findings: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in findings.get("findings") or []
            if f.get("status") == "critical" and f.get("check") != "diagnosis"]


def _first_next_step(findings: Mapping[str, Any]) -> str:
    """Without a diagnosis: the next step of the first finding that set the verdict; in a
    planned change (it has a change record), of the last one: where the change ended (its
    rollback, say) matters more than a pre-check's warning."""
    status = findings.get("status")
    if status in (None, "ok"):
        return ""
    found = list(findings.get("findings") or [])
    if any(f.get("check") == PHASE_CHECK for f in found):
        found.reverse()
    for finding in found:
        if (finding.get("status") == status and finding.get("remediation")
                and not finding.get("resolved_by")):
            return str(finding["remediation"])
    return ""


def _parse(moment: Any) -> datetime | None:
    if not isinstance(moment, str) or not moment:
        return None
    try:
        return datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(start: Any, end: Any) -> str:
    begin, finish = _parse(start), _parse(end)
    if begin is None or finish is None:
        return ""
    seconds = max(0, round((finish - begin).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run_by(findings: Mapping[str, Any]) -> str:
    """`user@host`, or "" when findings.json does not say."""
    who = findings.get("run_by")
    if isinstance(who, Mapping):
        user, host = who.get("user"), who.get("host")
        return "@".join(str(part) for part in (user, host) if part)
    return str(who) if who else ""


# ---------------------------------------------------------------------------------------------
# the terminal

def terminal_summary(findings: Mapping[str, Any]) -> list[str]:
    """Lines printed after `status: ...`: root cause and next step, then each critical
    finding's summary, one line each, masked. The caller prints the artifact directory last."""
    lines: list[str] = []
    cause = root_cause(findings)
    if cause is not None:
        code, reason, step = cause
        lines.append(f"root cause: {_one_line(code)}" + (f" — {_one_line(reason)}"
                                                         if reason else ""))
        if step:
            lines.append(f"next step: {_one_line(step)}")
    else:
        step = _first_next_step(findings)
        if step:
            lines.append(f"next step: {_one_line(step)}")
    for finding in _critical(findings):
        label = "critical"
        if finding.get("resolved_by"):
            label += f" (resolved by {_one_line(finding['resolved_by'])})"
        lines.append(f"{label}: {_one_line(finding.get('check'))}: "
                     f"{_one_line(finding.get('summary'))}")
    return lines


# ---------------------------------------------------------------------------------------------
# the HTML page

def page_title(findings: Mapping[str, Any]) -> str:
    """`<title>` of the HTML report: runbook, target, incident id, date (masked, unescaped:
    nbconvert's template escapes it)."""
    parts = [findings.get("runbook"), findings.get("target"), findings.get("incident_id"),
             str(findings.get("started_at") or "")[:10]]
    return secrets.mask(" · ".join(str(p) for p in parts if p))


def badge(status: Any, label: str | None = None) -> str:
    """A coloured status badge."""
    key = str(status or "unknown").lower()
    colour = STATUS_COLOURS.get(key, STATUS_COLOURS["unknown"])
    return (f"<span class='fraiseql-rb-badge' style='display:inline-block;padding:1px 8px;"
            f"border-radius:10px;background:{colour};color:#fff;font-weight:bold;"
            f"font-size:85%;letter-spacing:0.03em'>{_e((label or key).upper())}</span>")


def _counts(findings: Mapping[str, Any]) -> str:
    """`1 warning, 4 info of 8 findings; 3 critical since resolved` (a resolved finding no
    longer decides the verdict, so it is counted apart)."""
    records = findings.get("findings") or []
    if not records:
        return "no findings recorded"
    current = [f.get("status") for f in records if not f.get("resolved_by")]
    resolved = [f.get("status") for f in records if f.get("resolved_by")]
    parts = [f"{current.count(s)} {s}" for s in _STATUS_ORDER if current.count(s)]
    out = ", ".join(parts) + f" of {len(records)} finding{'s' if len(records) != 1 else ''}"
    gone = [f"{resolved.count(s)} {s}" for s in _STATUS_ORDER if resolved.count(s)]
    return out + (f"; {', '.join(gone)} since resolved" if gone else "")


def _times_html(findings: Mapping[str, Any]) -> list[tuple[str, str]]:
    started = findings.get("started_at")
    finished = findings.get("finished_at")
    interrupted = findings.get("interrupted_at")
    rows = [("Started", _e(started) if started else "—")]
    if interrupted:
        took = _duration(started, interrupted)
        rows.append(("Finished", f"<b style='color:{STATUS_COLOURS['critical']}'>interrupted at "
                                 f"{_e(interrupted)}</b>" + (f" (after {took})" if took else "")
                                 + "; the checks after that point did not run"))
    elif finished:
        took = _duration(started, finished)
        rows.append(("Finished", _e(finished) + (f" ({took})" if took else "")))
    else:
        rows.append(("Finished", "not finished"))
    return rows


def _action_html(action: Mapping[str, Any]) -> str:
    executed = bool(action.get("executed"))
    verb = ("<b>ran</b>" if executed
            else "<b>not executed</b> (dry run: recorded for a person to run)")
    out = (f"<code>{_e(action.get('action'))}</code>: {verb}: "
           f"<code>{_e(action.get('command'))}</code>")
    if action.get("result") is not None:
        out += f" → <span style='white-space:pre-wrap'>{_e(action.get('result'))}</span>"
    if action.get("at"):
        out += f" <span style='color:#6e7781'>at {_e(action['at'])}</span>"
    if action.get("confirmed_by"):
        out += f"; confirmed by {_e(action['confirmed_by'])}"
    return out


_HEADER_CSS = ("border:1px solid #d0d7de;border-left:6px solid {colour};border-radius:6px;"
               "padding:10px 16px;margin:0 0 18px 0;background:#f6f8fa;color:#1f2328;"
               "font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;"
               "font-size:14px;line-height:1.45")
_TH = "text-align:left;vertical-align:top;padding:3px 14px 3px 0;white-space:nowrap;border:0"
_TD = "text-align:left;vertical-align:top;padding:3px 0;border:0"


def header_html(findings: Mapping[str, Any]) -> str:
    """The block at the top of the HTML report, built from the final findings.json dict."""
    status = str(findings.get("status") or "unknown")
    colour = STATUS_COLOURS.get(status, STATUS_COLOURS["unknown"])
    rows: list[tuple[str, str]] = [
        ("Incident", _e(findings["incident_id"]) if findings.get("incident_id")
         else "<i>none given</i>"),
        ("Target", _e(findings.get("target"))),
        *_times_html(findings),
        ("Verdict", f"{badge(status)} {_e(_counts(findings))}"),
    ]
    cause = root_cause(findings)
    if cause is not None:
        code, reason, step = cause
        rows.append(("Root cause", f"<code>{_e(code)}</code>"
                                   + (f" — {_e(reason)}" if reason else "")))
        if step:
            rows.append(("Next step", _e(step)))
    elif _first_next_step(findings):
        rows.append(("Next step", _e(_first_next_step(findings))))
    critical = _critical(findings)
    if critical:
        items = "".join(
            f"<li><code>{_e(f.get('check'))}</code>: {_e(f.get('summary'))}"
            + (f" <i>(resolved by {_e(f['resolved_by'])})</i>" if f.get("resolved_by")
               else "") + "</li>" for f in critical)
        rows.append(("Critical", f"<ul style='margin:0;padding-left:18px'>{items}</ul>"))
    actions = findings.get("actions") or []
    if actions:
        items = "".join(f"<li>{_action_html(a)}</li>" for a in actions)
        rows.append(("Actions", f"<ul style='margin:0;padding-left:18px'>{items}</ul>"))
    else:
        rows.append(("Actions", "none: nothing was changed"))
    who = run_by(findings)
    provenance = []
    if who:
        provenance.append(_e(who))
    if findings.get("fraiseql_rb_version"):
        provenance.append(f"fraiseql-rb {_e(findings['fraiseql_rb_version'])}")
    if findings.get("notebook_sha256"):
        provenance.append(f"notebook sha256 <code>{_e(findings['notebook_sha256'])}</code>")
    if provenance:
        rows.append(("Run by", " · ".join(provenance)))
    body = "".join(f"<tr><th style=\"{_TH}\">{label}</th><td style=\"{_TD}\">{value}</td></tr>"
                   for label, value in rows)
    title = " · ".join(_e(p) for p in (findings.get("runbook"), findings.get("target")) if p)
    style = _HEADER_CSS.format(colour=colour)
    return (f"<section id='fraiseql-rb-report-header' style=\"{style}\">"
            f"<div style='font-size:16px;margin-bottom:6px'>{badge(status)} "
            f"<b>{title}</b></div>"
            f"<table style='border-collapse:collapse;margin:0;font-size:14px'>{body}</table>"
            "</section>")


# ---------------------------------------------------------------------------------------------
# the closing findings table

def _timeline(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """In time order: by `at`, ties in recording order (sorted is stable)."""
    return sorted(records, key=lambda r: str(r.get("at") or ""))


class FindingsTable:
    """The findings and the actions of a run, in time order, nothing cut off.

    Displays as text (papermill, nbval, a terminal) and as explicit HTML (JupyterLab, the
    HTML report), so no column is truncated the way a DataFrame's repr truncates.
    """

    def __init__(self, findings: Iterable[Mapping[str, Any]],
                 actions: Iterable[Mapping[str, Any]] = ()) -> None:
        self.findings = _timeline(findings)
        self.actions = _timeline(actions)

    def __len__(self) -> int:
        return len(self.findings)

    def __repr__(self) -> str:
        if not self.findings:
            lines = ["No findings recorded."]
        else:
            width = max(len(str(f.get("check"))) for f in self.findings)
            lines = []
            for f in self.findings:
                status = str(f.get("status", "")).upper()
                lines.append(f"{_text(f.get('at'))}  {status:<8}  "
                             f"{_text(f.get('check')):<{width}}  {_one_line(f.get('summary'))}")
                pad = " " * (len(_text(f.get("at"))) + 14 + width)
                if f.get("resolved_by"):
                    lines.append(f"{pad}resolved by {_one_line(f['resolved_by'])}")
                if f.get("remediation"):
                    lines.append(f"{pad}next: {_one_line(f['remediation'])}")
        if self.actions:
            lines.append("")
            lines.append(f"Actions ({len(self.actions)}):")
            for a in self.actions:
                verb = "ran" if a.get("executed") else "not executed"
                line = (f"{_text(a.get('at'))}  {verb:<12}  {_one_line(a.get('action'))}: "
                        f"{_one_line(a.get('command'))}")
                if a.get("result") is not None:
                    line += f" -> {_one_line(a.get('result'))}"
                if a.get("confirmed_by"):
                    line += f" (confirmed by {_one_line(a['confirmed_by'])})"
                lines.append(line)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        th = "text-align:left;vertical-align:top;padding:4px 8px"
        td = "text-align:left;vertical-align:top;padding:4px 8px;white-space:normal"
        rows = []
        for f in self.findings:
            status = str(f.get("status", "unknown"))
            colour = STATUS_COLOURS.get(status, STATUS_COLOURS["unknown"])
            note = (f"<br><i>resolved by {_e(f['resolved_by'])}</i>"
                    if f.get("resolved_by") else "")
            rows.append(
                f"<tr><td style='{td};white-space:nowrap'>{_e(f.get('at'))}</td>"
                f"<td style='{td}'><b style='color:{colour}'>{_e(status.upper())}</b></td>"
                f"<td style='{td}'><code>{_e(f.get('check'))}</code></td>"
                f"<td style='{td}'>{_e(f.get('summary'))}{note}</td>"
                f"<td style='{td}'>{_e(f.get('remediation'))}</td></tr>")
        head = "".join(f"<th style='{th}'>{h}</th>"
                       for h in ("at", "status", "check", "summary", "next step"))
        out = (f"<table class='fraiseql-rb-findings' style='border-collapse:collapse'>"
               f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        if not self.findings:
            out = "<p>No findings recorded.</p>"
        if self.actions:
            confirmed = any(a.get("confirmed_by") for a in self.actions)
            columns = ["action", "command", "executed", "result", "at"]
            if confirmed:
                columns.append("confirmed by")
            head = "".join(f"<th style='{th}'>{h}</th>" for h in columns)
            body = []
            for a in self.actions:
                executed = ("<b>yes</b>" if a.get("executed")
                            else "no (dry run)")
                cells = [f"<code>{_e(a.get('action'))}</code>",
                         f"<code style='white-space:pre-wrap'>{_e(a.get('command'))}</code>",
                         executed,
                         f"<span style='white-space:pre-wrap'>{_e(a.get('result'))}</span>",
                         _e(a.get("at"))]
                if confirmed:
                    cells.append(_e(a.get("confirmed_by")))
                body.append("<tr>" + "".join(f"<td style='{td}'>{c}</td>" for c in cells)
                            + "</tr>")
            out += (f"<p style='margin-top:12px'><b>Actions</b> ({len(self.actions)})</p>"
                    f"<table class='fraiseql-rb-actions' style='border-collapse:collapse'>"
                    f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return out


# ---------------------------------------------------------------------------------------------
# the kernel's display formatters

def _records(obj: Any) -> list[Any] | None:
    """The items of a non-empty list/tuple made only of findings and actions, else None."""
    if isinstance(obj, (list, tuple)) and obj and all(
            isinstance(item, (Finding, Action)) for item in obj):
        return list(obj)
    return None


def _records_html(obj: Any) -> str | None:
    items = _records(obj)
    if items is None:
        return None
    return "".join(item._repr_html_() for item in items)


def _text_html(obj: Any) -> str | None:
    """A string a cell ends with (a step's description) reads as text, not as a repr."""
    if not isinstance(obj, str):
        return None
    return (f"<div style='white-space:pre-wrap;text-align:left'>{html.escape(secrets.mask(obj))}"
            "</div>")


def show(obj: Any) -> None:
    """Show a figure in the notebook (JupyterLab, papermill); a no-op outside IPython."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - always present with ipykernel
        return
    if get_ipython() is not None:
        display(obj)


def install_display_formatters(shell: Any = None) -> bool:
    """Register IPython formatters so that a cell ending in a list or tuple of findings shows
    the findings (text and HTML) and a cell ending in a string shows the text, not its repr.
    Other lists keep IPython's display. Idempotent; False outside IPython."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - always present with ipykernel
            return False
        shell = get_ipython()
    if shell is None:
        return False
    formatters = shell.display_formatter.formatters
    html_formatter, text_formatter = formatters["text/html"], formatters["text/plain"]
    for kind in (list, tuple):
        _chain_html(html_formatter, kind, _records_html)
        _chain_text(text_formatter, kind)
    _chain_html(html_formatter, str, _text_html)
    return True


def _registered(formatter: Any, kind: type) -> Any:
    try:
        return formatter.lookup_by_type(kind)
    except KeyError:
        return None


def _chain_html(formatter: Any, kind: type, render: Any) -> None:
    previous = _registered(formatter, kind)
    if getattr(previous, "_fraiseql_rb", False):
        return

    def printer(obj: Any) -> str | None:
        out = render(obj)
        if out is None and previous is not None:
            return previous(obj)
        return out

    printer._fraiseql_rb = True  # type: ignore[attr-defined]
    formatter.for_type(kind, printer)


def _chain_text(formatter: Any, kind: type) -> None:
    previous = _registered(formatter, kind)
    if getattr(previous, "_fraiseql_rb", False):
        return

    def printer(obj: Any, p: Any, cycle: bool) -> None:
        items = _records(obj)
        if items is None:
            if previous is not None:
                previous(obj, p, cycle)
            else:  # pragma: no cover - IPython always has list and tuple printers
                p.text(repr(obj))
            return
        for index, item in enumerate(items):
            if index:
                p.break_()
            for number, line in enumerate(repr(item).splitlines()):
                if number:
                    p.break_()
                p.text(line)

    printer._fraiseql_rb = True  # type: ignore[attr-defined]
    formatter.for_type(kind, printer)
