"""`fraiseql-rb run --notify always|problems`: after a run, one message with its verdict.

The message says what a person paged at night needs before opening anything: runbook,
target, incident, verdict, root cause and next step (as the terminal summary shows them), and
where the report is: under the target's `site_url` when the reports are published, else the
local artifact directory. A notification that cannot be sent is a line on stderr and a
`notify.sent` finding in the run's findings.json, never a different exit code: the run's
verdict is about the target, not about the chat service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fraiseql_rb.core import artifacts, inventory, report, secrets
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import FindingsLog, Status
from fraiseql_rb.runner.execute import RunRequest, RunResult
from fraiseql_rb.targets import notify as channels

MODES = ("always", "problems")
# apprise's notify type per verdict: how Slack, Teams, ... colour the message
KIND = {Status.OK: "success", Status.WARNING: "warning", Status.UNKNOWN: "warning",
        Status.CRITICAL: "failure"}
CHECK = "notify.sent"


def wanted(mode: str, status: Status | str) -> bool:
    """`always`, or `problems` and the run was not ok."""
    return mode == "always" or Status(status) is not Status.OK


def report_link(request: RunRequest, result: RunResult, site_url: str | None) -> str:
    """The HTML report's address: `site_url` stands for the published output directory
    (what `fraiseql-rb site --serve` serves; the site itself is its `site/`), so the report
    is `<site_url>/<YYYY-MM-DD>/<runbook>/<HHMMSSZ[_INCIDENT]>/<runbook>.html`. Without
    `site_url`: the local path. A run that left no HTML links its directory."""
    html = result.artifact_dir / f"{result.runbook}.html"
    local = html if html.exists() else result.artifact_dir
    if not site_url:
        return str(local.resolve())
    try:
        relative = local.resolve().relative_to(Path(request.output_dir).resolve())
    except ValueError:  # not under the output directory: nothing published links to it
        return str(local.resolve())
    return f"{site_url.rstrip('/')}/{relative.as_posix()}"


def compose(request: RunRequest, result: RunResult, link: str) -> tuple[str, str, dict[str, Any]]:
    """(title, body, fields) of the one message; every value masked."""
    findings = result.findings
    cause = report.root_cause(findings)
    if cause is not None:
        code, reason, step = cause
        root = f"{code} — {reason}" if reason else code
    else:
        root = "none recorded (no diagnosis in this runbook)"
        step = report._first_next_step(findings)
    fields = {
        "runbook": result.runbook, "target": request.target,
        "incident": request.incident_id or "none", "verdict": str(result.status),
        "root_cause": " ".join(root.split()), "next_step": " ".join(step.split()) or "none",
        "report": link,
    }
    fields = {key: secrets.mask(str(value)) for key, value in fields.items()}
    incident = f" [{fields['incident']}]" if request.incident_id else ""
    title = (f"fraiseql-rb: {fields['runbook']} on {fields['target']}{incident}: "
             f"{fields['verdict'].upper()}")
    body = "\n".join([
        f"runbook: {fields['runbook']}", f"target: {fields['target']}",
        f"incident: {fields['incident']}", f"verdict: {fields['verdict']}",
        f"root cause: {fields['root_cause']}", f"next step: {fields['next_step']}",
        f"report: {fields['report']}",
    ])
    return title, body, fields


def check(request: RunRequest) -> int:
    """Read and parse the target's notification URLs before the run: a bad URL or an
    unreadable notify_env/notify_file is a UsageError (exit 64) before anything runs.
    Returns how many URLs there are."""
    target = inventory.load(request.inventory_path).target(request.target)
    return channels.check(target)


def _record(result: RunResult, status: Status, summary: str, evidence: dict[str, Any],
            remediation: str | None) -> None:
    """Append the finding to the run's findings.json, masked, and seal the directory again
    (the runner left every file ARTIFACT_FILE_MODE; the atomic rewrite keeps that mode)."""
    path = result.artifact_dir / "findings.json"
    try:
        finished_at = json.loads(path.read_text()).get("finished_at")
        log = FindingsLog.from_file(path)
        log.finished_at = finished_at  # from_file reopens a run; this one had ended
        log.record(CHECK, status, summary, evidence, remediation)  # masked, saved atomically
        artifacts.seal(result.artifact_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"fraiseql-rb: could not add the notification's finding to {path}: "
              f"{secrets.mask(str(exc))}", file=sys.stderr)


def after_run(request: RunRequest, result: RunResult, mode: str) -> list[channels.Delivery]:
    """Send the verdict to the target's apprise URLs when `mode` asks for it; record what
    happened. Never raises and never changes the run's exit code: a failed send is an `info`
    finding (so findings.json's status still matches the exit code) and a line on stderr."""
    if mode not in MODES or not wanted(mode, result.status):
        return []
    try:
        target = inventory.load(request.inventory_path).target(request.target)
        site_url = target.get("site_url")
        listed = channels.urls(target)
    except RunbookError as exc:
        message = secrets.mask(str(exc))
        print(f"fraiseql-rb: notification not sent: {message}", file=sys.stderr)
        _record(result, Status.INFO, f"notification NOT sent: {message}",
                {"mode": mode, "sent": 0, "failed": 0}, "fix the target's notify settings")
        return []
    if not listed:
        print(f"fraiseql-rb: notification not sent: target {request.target!r} has no notify, "
              "notify_env or notify_file", file=sys.stderr)
        _record(result, Status.INFO, "notification NOT sent: the target has no notify, "
                "notify_env or notify_file", {"mode": mode, "sent": 0, "failed": 0},
                "add apprise URLs to the target (notify_env or notify_file keep them secret)")
        return []
    link = report_link(request, result, str(site_url) if site_url else None)
    title, body, fields = compose(request, result, link)
    deliveries = channels.send(listed, title, body, KIND.get(Status(result.status), "info"))
    failed = [d for d in deliveries if not d.sent]
    evidence = {"mode": mode, "sent": len(deliveries) - len(failed), "failed": len(failed),
                "channels": [d.to_dict() for d in deliveries], "message": fields}
    if failed:
        reasons = channels.failures(deliveries)
        print(f"fraiseql-rb: notification failed for {len(failed)} of {len(deliveries)} "
              f"URL(s): {reasons}", file=sys.stderr)
        _record(result, Status.INFO, f"notification failed for {len(failed)} of "
                f"{len(deliveries)} URL(s): {reasons}", evidence,
                "check the channel (is the webhook up, is its token valid?); the verdict "
                "above stands")
    else:
        _record(result, Status.INFO, f"notification sent to {len(deliveries)} URL(s)",
                evidence, None)
    return deliveries
