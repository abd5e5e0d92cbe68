"""HTML for the site's pages: plain HTML, one stylesheet, a few lines of vanilla JS for the
index filters. Every value from a report is escaped: findings carry text from the systems
they inspected (log lines, config values), and a reviewer's browser must not run it."""

from __future__ import annotations

import hashlib
import re
from html import escape
from typing import Any
from urllib.parse import quote

from fraiseql_rb.site import trends

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#1f2328}
nav{padding:.8em 0;border-bottom:1px solid #d0d7de;margin-bottom:1em}
nav a{margin-right:1.2em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eaeef2;vertical-align:top}
.badge{display:inline-block;padding:0 .5em;border-radius:1em;color:#fff;font-size:12px}
.s-ok{background:#1a7f37}.s-warning{background:#9a6700}.s-critical{background:#cf222e}
.s-unknown{background:#6e7781}.s-info{background:#0969da}
.s-executed{background:#8250df}.s-not.executed,.s-not-executed{background:#afb8c1}
.mark{color:#cf222e;font-weight:600}
.filters{display:flex;flex-wrap:wrap;gap:.8em;margin-bottom:.8em}
.filters label{display:flex;flex-direction:column;font-size:12px}
.files a{margin-right:.5em}
.heat{width:auto;border-collapse:separate;border-spacing:1px}
.heat td{width:7px;height:14px;padding:0;border:0}
.heat th{font-weight:normal;padding-right:8px;border:0;white-space:nowrap}
.h-ok{background:#2da44e}.h-warning{background:#d4a72c}.h-critical{background:#cf222e}
.h-unknown{background:#8c959f}.h-none{background:#f6f8fa}
.chart .band{fill:#0969da22}.chart .limit{fill:none;stroke:#cf222e;stroke-dasharray:4 3}
.chart .axis{font-size:10px;fill:#57606a}.chart .base{stroke:#d0d7de}
.legend span{margin-right:1em}
"""

FILTER_JS = """
(function () {
  var ids = ["runbook", "target", "incident", "status"];
  var rows = Array.prototype.slice.call(document.querySelectorAll("#runs tbody tr"));
  function value(id) { return document.getElementById("f-" + id).value; }
  function apply() {
    var from = value("from"), to = value("to"), shown = 0;
    rows.forEach(function (row) {
      var d = row.dataset, ok = (!from || d.date >= from) && (!to || d.date <= to);
      ids.forEach(function (id) {
        var v = value(id);
        if (v && (id === "status" ? d.status.split(" ").indexOf(v) < 0 : d[id] !== v)) {
          ok = false;
        }
      });
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.getElementById("shown").textContent = shown + " of " + rows.length + " runs";
  }
  ["from", "to"].concat(ids).forEach(function (id) {
    document.getElementById("f-" + id).addEventListener("input", apply);
    document.getElementById("f-" + id).addEventListener("change", apply);
  });
  apply();
})();
"""


def incident_file(incident_id: str) -> str:
    """The incident page's file name: ids are validated when a run starts, but a hand-edited
    findings.json may hold anything, so anything else is replaced and disambiguated."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", incident_id)[:64]
    if safe != incident_id:
        safe += "-" + hashlib.sha256(incident_id.encode()).hexdigest()[:8]
    return f"incident-{safe}.html"


def page(title: str, body: str, *, script: str = "") -> str:
    nav = ('<nav><a href="index.html">Runs</a><a href="incidents.html">Incidents</a>'
           '<a href="trends.html">Trends</a></nav>')
    js = f'<script src="{script}"></script>' if script else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f'<title>{escape(title)} · fraiseql-rb</title>'
            f'<link rel="icon" href="data:,"><link rel="stylesheet" href="site.css">'
            f'</head><body>{nav}'
            f'<h1>{escape(title)}</h1>{body}{js}</body></html>\n')


def badge(status: str | None) -> str:
    s = status or "unknown"
    cls = re.sub(r"[^a-z]", "-", s)
    return f'<span class="badge s-{cls}">{escape(s)}</span>'


def _marks(run: dict[str, Any]) -> str:
    out = []
    if run["damaged"]:
        out.append(f'<span class="mark damaged">damaged: {escape(run["damaged"])}</span>')
    if run["interrupted"]:
        out.append('<span class="mark interrupted">interrupted</span>')
    return " ".join(out)


def file_links(run: dict[str, Any], prefix: str) -> str:
    """Links to the run's artifacts, relative to the site directory (`prefix` leads from it
    to the output directory), so the site works wherever the tree is copied or served."""
    base = prefix + quote(run["path"]) + "/"
    names = {f: f for f in run["files"]}
    links = []
    for label, pick in (("report", lambda f: f.endswith(".html")),
                        ("notebook", lambda f: f.endswith(".ipynb")),
                        ("findings.json", lambda f: f == "findings.json"),
                        ("pdf", lambda f: f.endswith(".pdf"))):
        for name in sorted(n for n in names if pick(n)):
            text = name if label == "pdf" else label
            links.append(f'<a href="{base}{quote(name)}">{escape(text)}</a>')
    return f'<span class="files">{"".join(links)}</span>'


def _status_tokens(run: dict[str, Any]) -> str:
    tokens = [run["status"]]
    if run["damaged"]:
        tokens.append("damaged")
    if run["interrupted"]:
        tokens.append("interrupted")
    return " ".join(tokens)


def _options(name: str, values: list[str]) -> str:
    opts = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    return (f'<label>{escape(name)}<select id="f-{escape(name)}">'
            f'<option value="">all</option>{opts}</select></label>')


def month_file(month: str) -> str:
    """The page of one month's runs (`month` as YYYY-MM)."""
    return f"runs-{month}.html"


def _months(counts: dict[str, int], total: int, shown: int) -> str:
    """Every month with its number of runs, so any run is two clicks from the index."""
    links = " ".join(f'<a href="{quote(month_file(m))}">{escape(m)}</a> ({n})'
                     for m, n in sorted(counts.items(), reverse=True))
    lead = (f"The newest {shown} of {total} runs; every run by month: " if shown < total
            else "By month: ")
    return f'<p class="months">{lead}{links}</p>'


def index(runs: list[dict[str, Any]], prefix: str, *, title: str = "Runs",
          months: dict[str, int] | None = None, total: int | None = None) -> str:
    """Runs, newest first, with filters by date range, runbook, target, incident and
    status (status also offers 'damaged' and 'interrupted'). The index lists the newest
    runs and links every month's page (`months`: runs per month, `total`: all runs); a
    month's page is the same table for that month."""
    rows = []
    for run in runs:
        incident = run["incident_id"] or ""
        inc_cell = (f'<a href="{quote(incident_file(incident))}">{escape(incident)}</a>'
                    if incident else "")
        cause = run["root_cause"] or ""
        rows.append(
            f'<tr data-date="{escape(run["started_at"][:10])}" '
            f'data-runbook="{escape(run["runbook"])}" data-target="{escape(run["target"] or "")}"'
            f' data-incident="{escape(incident)}" data-status="{escape(_status_tokens(run))}">'
            f'<td>{escape(run["started_at"].replace("T", " "))}</td>'
            f'<td>{escape(run["runbook"])}</td><td>{escape(run["target"] or "?")}</td>'
            f'<td>{inc_cell}</td><td>{badge(run["status"])} {_marks(run)}</td>'
            f'<td>{escape(cause)}</td><td>{file_links(run, prefix)}</td></tr>')
    values = {k: sorted({r[k] for r in runs if r[k]}) for k in ("runbook", "target",
                                                                  "incident_id")}
    filters = ('<div class="filters">'
               '<label>from<input type="date" id="f-from"></label>'
               '<label>to<input type="date" id="f-to"></label>'
               + _options("runbook", values["runbook"]) + _options("target", values["target"])
               + _options("incident", values["incident_id"])
               + _options("status", ["ok", "warning", "critical", "unknown", "damaged",
                                     "interrupted"])
               + '</div><p id="shown"></p>')
    table = ('<table id="runs"><thead><tr><th>started (UTC)</th><th>runbook</th>'
             '<th>target</th><th>incident</th><th>verdict</th><th>root cause</th>'
             f'<th>artifacts</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    nav = _months(months, total if total is not None else len(runs), len(runs)) if months else ""
    return page(title, nav + filters + table, script="filter.js")


def incidents_list(by_incident: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for incident, runs in sorted(by_incident.items(),
                                 key=lambda kv: max(r["started_at"] for r in kv[1]),
                                 reverse=True):
        first = min(r["started_at"] for r in runs)
        worst = max((r["status"] for r in runs), key=lambda s: trends.RANK.get(s, 2))
        causes = sorted({r["root_cause"] for r in runs if r["root_cause"]})
        rows.append(f'<tr><td><a href="{quote(incident_file(incident))}">{escape(incident)}</a>'
                    f'</td><td>{escape(first.replace("T", " "))}</td><td>{len(runs)}</td>'
                    f'<td>{badge(worst)}</td><td>{escape(", ".join(causes))}</td></tr>')
    body = ('<table><thead><tr><th>incident</th><th>first run (UTC)</th><th>runs</th>'
            f'<th>worst</th><th>root causes</th></tr></thead><tbody>{"".join(rows)}'
            '</tbody></table>')
    return page("Incidents", body)


def incident(incident_id: str, runs: list[dict[str, Any]], prefix: str) -> str:
    """Every run of one incident merged into one timeline: the post-incident review's first
    draft (what was seen when, the diagnosis of each playbook, what was executed)."""
    runs = sorted(runs, key=lambda r: r["started_at"])
    summary_rows = []
    events = []
    for run in runs:
        actions = [e for e in run["timeline"] if e["kind"] == "action"]
        executed = sum(1 for e in actions if e["status"] == "executed")
        summary_rows.append(
            f'<tr><td>{escape(run["started_at"].replace("T", " "))}</td>'
            f'<td>{escape(run["runbook"])}</td><td>{escape(run["target"] or "?")}</td>'
            f'<td>{badge(run["status"])} {_marks(run)}</td>'
            f'<td>{escape(run["root_cause"] or "")}</td><td>{escape(run["diagnosis"] or "")}'
            f'</td><td>{len(actions)} ({executed} executed)</td>'
            f'<td>{file_links(run, prefix)}</td></tr>')
        for e in run["timeline"]:
            events.append((e["at"] or run["started_at"], run, e))
    events.sort(key=lambda item: item[0])
    lines = []
    for at, run, e in events:
        cls = ' class="action"' if e["kind"] == "action" else ""
        lines.append(
            f'<tr{cls}><td>{escape(at.replace("T", " "))}</td><td>{escape(run["runbook"])}'
            f' / {escape(run["target"] or "?")}</td><td>{escape(e["kind"])}</td>'
            f'<td>{escape(e["name"] or "")}</td><td>{badge(e["status"])}</td>'
            f'<td>{escape(e["text"] or "")}</td><td>{escape(e["next"] or "")}</td></tr>')
    body = (f'<h2>Runs ({len(runs)})</h2><table class="runs"><thead><tr><th>started (UTC)</th>'
            '<th>runbook</th><th>target</th><th>verdict</th><th>root cause</th>'
            '<th>diagnosis</th><th>actions</th><th>artifacts</th></tr></thead><tbody>'
            f'{"".join(summary_rows)}</tbody></table>'
            f'<h2>Timeline ({len(events)} events)</h2><table id="timeline"><thead><tr>'
            '<th>at (UTC)</th><th>runbook / target</th><th>kind</th><th>check or action</th>'
            '<th>status</th><th>what</th><th>next step or result</th></tr></thead><tbody>'
            f'{"".join(lines)}</tbody></table>')
    return page(f"Incident {incident_id}", body)


def trends_page(runs: list[dict[str, Any]]) -> str:
    days = trends.window(runs)
    parts = []
    if days:
        parts.append(f"<p>{escape(days[0])} to {escape(days[-1])} (UTC days).</p>")
    parts.append("<h2>Daily security review</h2>")
    sec = trends.security(runs, days)
    if not sec:
        parts.append("<p>No daily-security-review runs in this window.</p>")
    for (target, kind), by_day in sec.items():
        parts.append(f'<h3>{escape(kind)} on {escape(target)}</h3>'
                     + trends.security_chart(days, by_day))
    parts.append('<p class="legend"><span>blue: events in the 24 h window</span><span>shaded: '
                 'baseline band (mean ± sigma × stddev)</span><span>red dot: flagged</span></p>')
    parts.append("<h2>Backups</h2>")
    bk = trends.backup(runs, days)
    if not bk:
        parts.append("<p>No backup-verification runs in this window.</p>")
    for target, by_day in bk.items():
        parts.append(f"<h3>{escape(target)}: newest dump age (hours)</h3>" + trends.chart(
            days, [("age", "#8250df", {d: v.get("age_hours") for d, v in by_day.items()})],
            limit={d: v.get("max_age_hours") for d, v in by_day.items()}, unit=" h"))
        parts.append(f"<h3>{escape(target)}: current RPO (seconds)</h3>" + trends.chart(
            days, [("RPO", "#bf3989", {d: v.get("rpo_s") for d, v in by_day.items()})],
            limit={d: v.get("tier_rpo_s") for d, v in by_day.items()}, unit=" s"))
    parts.append('<p class="legend"><span>dashed red: the limit (max age, the tier\'s RPO)'
                 '</span></p>')
    parts.append("<h2>Status per day</h2>")
    for runbook, by_target in trends.heat(runs, days).items():
        parts.append(f"<h3>{escape(runbook)}</h3>" + trends.heat_strip(days, by_target))
    parts.append('<p class="legend"><span class="h-ok">&nbsp;&nbsp;</span> ok '
                 '<span class="h-warning">&nbsp;&nbsp;</span> warning '
                 '<span class="h-unknown">&nbsp;&nbsp;</span> unknown or damaged '
                 '<span class="h-critical">&nbsp;&nbsp;</span> critical</p>')
    return page("Trends", "".join(parts))
