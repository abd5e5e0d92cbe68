"""The verdict model: findings and actions, recorded as they happen.

Every `record` rewrites `findings.json` atomically, so the file is always complete and valid:
a notebook that dies half-way still leaves everything it found, and a reviewer reads the
`at` times as the incident's timeline.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from fraiseql_rb.core import secrets
from fraiseql_rb.core.errors import EXIT_CRITICAL, EXIT_OK, EXIT_UNKNOWN, EXIT_WARNING

# Artifact files: the owner writes, the owner's group (the reviewers) reads, others nothing.
ARTIFACT_FILE_MODE = 0o640
ARTIFACT_DIR_MODE = 0o750
# Who and what produced a verdict, top-level keys of findings.json (see `provenance`).
PROVENANCE_KEYS = ("run_by", "fraiseql_rb_version", "notebook_sha256")


# A change runbook records the phase it enters under this check (checks/change.py), so that
# the runner can say which phase an interrupted change had reached.
PHASE_CHECK = "change.phase"


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"
    INFO = "info"


# The exit code of a status (DESIGN's exit codes): a run's and `validate-config`'s.
EXIT_CODE = {Status.OK: EXIT_OK, Status.WARNING: EXIT_WARNING,
             Status.CRITICAL: EXIT_CRITICAL, Status.UNKNOWN: EXIT_UNKNOWN}

# Overall status is the worst finding; unknown ranks above warning and below critical, and
# info (context, manual steps) never changes it.
_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}
STATUS_COLOURS = {
    Status.OK: "#1a7f37", Status.WARNING: "#9a6700", Status.CRITICAL: "#cf222e",
    Status.UNKNOWN: "#6e7781", Status.INFO: "#0969da",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def worst(statuses: list[Status | str]) -> Status:
    """Overall status of a set of findings; with nothing decisive recorded it is unknown."""
    ranked = [Status(s) for s in statuses if Status(s) is not Status.INFO]
    if not ranked:
        return Status.UNKNOWN
    return max(ranked, key=_RANK.__getitem__)


def _jsonable(value: Any) -> Any:
    """Evidence may hold datetimes, paths, numpy numbers: make it plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


@dataclass
class Finding:
    check: str
    status: Status
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str | None = None
    at: str = field(default_factory=lambda: isoformat(utcnow()))
    # Set when a later finding shows the condition cleared (a restart brought health back):
    # the finding stays in the timeline but no longer decides the overall status.
    resolved_by: str | None = None
    # A table shown under the verdict in the notebook; display only, never serialised.
    table: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"check": self.check, "status": str(self.status), "summary": self.summary,
               "at": self.at, "evidence": self.evidence, "remediation": self.remediation}
        if self.resolved_by:
            out["resolved_by"] = self.resolved_by
        return out

    def __repr__(self) -> str:
        text = f"[{self.status.upper()}] {self.check}: {self.summary}"
        if self.remediation and self.status not in (Status.OK, Status.INFO):
            text += f"\n  next: {self.remediation}"
        if self.table is not None:
            text += "\n" + str(self.table)
        return text

    def _repr_html_(self) -> str:
        colour = STATUS_COLOURS[self.status]
        rows = "".join(
            f"<tr><td style='text-align:left'><code>{html.escape(str(k))}</code></td>"
            f"<td style='text-align:left'>{html.escape(_short(v))}</td></tr>"
            for k, v in self.evidence.items()
        )
        out = (
            f"<div style='border-left:4px solid {colour};padding:4px 10px;margin:4px 0'>"
            f"<b style='color:{colour}'>{self.status.upper()}</b> "
            f"<code>{html.escape(self.check)}</code> — {html.escape(self.summary)}"
        )
        if self.remediation and self.status not in (Status.OK, Status.INFO):
            out += f"<br><i>Next step:</i> {html.escape(self.remediation)}"
        if self.table is not None and hasattr(self.table, "to_html"):
            out += self.table.to_html(index=False, border=0)
        elif rows:
            out += f"<table style='margin-top:4px;font-size:90%'>{rows}</table>"
        return out + "</div>"


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(_jsonable(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Action:
    action: str
    command: str
    executed: bool
    result: Any = None
    at: str = field(default_factory=lambda: isoformat(utcnow()))
    confirmed_by: str | None = None  # who let it run: user@host and the switches given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __repr__(self) -> str:
        verb = "ran" if self.executed else "would run (execute=False)"
        return f"[ACTION] {self.action}: {verb}: {self.command}" + (
            f" -> {self.result}" if self.result is not None else "")

    def _repr_html_(self) -> str:
        verb = "Ran" if self.executed else "Dry run — would have run"
        out = (f"<div style='border-left:4px solid #8250df;padding:4px 10px;margin:4px 0'>"
               f"<b>{verb}</b> <code>{html.escape(self.action)}</code>: "
               f"<code>{html.escape(self.command)}</code>")
        if self.result is not None:
            out += f"<br>result: {html.escape(_short(self.result))}"
        return out + "</div>"


class FindingsLog:
    """The findings and actions of one runbook run, persisted after every change."""

    def __init__(self, runbook: str, target: str, *, incident_id: str | None = None,
                 parameters: dict[str, Any] | None = None, path: Path | None = None,
                 started_at: str | None = None, provenance: dict[str, Any] | None = None,
                 open_path: Callable[[], Path] | None = None) -> None:
        """`open_path` defers the file: a live session makes its artifact directory only
        when it records something, so re-running the first cell leaves no empty run."""
        self.runbook = runbook
        self.target = target
        self.incident_id = incident_id
        self.parameters = secrets.mask_data(_jsonable(parameters or {}))
        self.path = path
        self._open_path = open_path
        self.started_at = started_at or isoformat(utcnow())
        self.finished_at: str | None = None
        self.interrupted_at: str | None = None
        self.provenance = {key: (provenance or {}).get(key) for key in PROVENANCE_KEYS}
        self.findings: list[Finding] = []
        self.actions: list[Action] = []
        self.save()

    def record(self, check: str, status: Status | str, summary: str,
               evidence: dict[str, Any] | None = None,
               remediation: str | None = None, table: Any = None,
               resolves: Iterable[str] = ()) -> Finding:
        """Record a finding; `resolves` names earlier checks whose condition this one shows
        cleared, so they stay in the timeline without deciding the overall status."""
        finding = Finding(
            check=check,
            status=Status(status),
            summary=secrets.mask(summary),
            evidence=secrets.mask_data(_jsonable(evidence or {})),
            remediation=secrets.mask(remediation) if remediation else None,
            table=table,
        )
        cleared = set(resolves)
        for earlier in self.findings:
            if earlier.check in cleared and earlier.resolved_by is None:
                earlier.resolved_by = f"{check} at {finding.at}"
        self.findings.append(finding)
        self.save()
        return finding

    def latest(self, check: str) -> Finding | None:
        """The most recent finding of `check` in this run, or None when it has none."""
        return next((f for f in reversed(self.findings) if f.check == check), None)

    def action(self, action: str, command: str, *, executed: bool,
               result: Any = None, confirmed_by: str | None = None) -> Action:
        entry = Action(action=action, command=secrets.mask(command), executed=executed,
                       result=secrets.mask_data(_jsonable(result)), confirmed_by=confirmed_by)
        self.actions.append(entry)
        self.save()
        return entry

    @classmethod
    def from_file(cls, path: Path) -> FindingsLog:
        """Reopen a findings.json (the runner closes what the kernel wrote)."""
        data = json.loads(path.read_text())
        log = cls.__new__(cls)
        log.runbook, log.target = data["runbook"], data["target"]
        log.incident_id, log.parameters = data["incident_id"], data["parameters"]
        log.started_at, log.finished_at, log.path = data["started_at"], None, path
        log._open_path, log.interrupted_at = None, data.get("interrupted_at")
        log.provenance = {key: data.get(key) for key in PROVENANCE_KEYS}
        log.findings = [
            Finding(**{**f, "status": Status(f["status"])}) for f in data["findings"]
        ]
        log.actions = [Action(**a) for a in data["actions"]]
        return log

    def mask(self) -> None:
        """Mask again with every secret this process knows (the kernel may have known fewer)."""
        self.parameters = secrets.mask_data(self.parameters)
        for finding in self.findings:
            finding.summary = secrets.mask(finding.summary)
            finding.evidence = secrets.mask_data(finding.evidence)
            finding.remediation = secrets.mask(finding.remediation or "") or None
        for action in self.actions:
            action.command = secrets.mask(action.command)
            action.result = secrets.mask_data(action.result)

    @property
    def status(self) -> Status:
        """The state now: the worst finding not since resolved by a later one."""
        return worst([f.status for f in self.findings if f.resolved_by is None])

    def to_dict(self) -> dict[str, Any]:
        """findings.json; `finished_at` stays null until the run ends, and for good when it
        was interrupted (then `interrupted_at` says when)."""
        return {
            "runbook": self.runbook,
            "target": self.target,
            "incident_id": self.incident_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted_at": self.interrupted_at,
            **self.provenance,
            "parameters": self.parameters,
            "status": str(self.status),
            "findings": [f.to_dict() for f in self.findings],
            "actions": [a.to_dict() for a in self.actions],
        }

    def open(self) -> Path | None:
        """The findings file, made now if this run deferred it (see `open_path`)."""
        if self.path is None and self._open_path is not None:
            self.path = self._open_path()
        return self.path

    def save(self) -> None:
        if self.findings or self.actions:
            self.open()
        if self.path is not None:
            write_json_atomic(self.path, self.to_dict())

    def finish(self) -> None:
        self.finished_at = isoformat(utcnow())
        self.save()

    def interrupt(self, at: str) -> None:
        """Close a run that a signal stopped: it has no `finished_at`, it was interrupted."""
        self.interrupted_at = at
        self.finished_at = None
        self.save()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".findings-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, ARTIFACT_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
