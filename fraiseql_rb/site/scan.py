"""Read the reports tree incrementally into one small summary per run.

A site over months of runs must rebuild in a moment after each new run, so every run's
summary is cached in the site directory, keyed by its directory and the size and mtime of
its findings.json (and the directory's own mtime, which moves when a PDF is added): a
rebuild re-reads only the runs whose key changed. Damaged runs (no findings.json, one that
does not parse, an interrupted run) become summaries marked as such, never an exception.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraiseql_rb.core.findings import write_json_atomic

CACHE_NAME = ".scan-cache.json"
CACHE_VERSION = 1
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LEAF = re.compile(r"^(\d{2})(\d{2})(\d{2})Z(?:_(.+))?$")
_STATUSES = ("ok", "warning", "critical", "unknown")


@dataclass
class ScanResult:
    """Every run's summary, newest first, and how many findings.json were actually read."""

    runs: list[dict[str, Any]]
    read: int = 0
    reused: int = 0
    removed: int = 0
    damaged: list[str] = field(default_factory=list)


def run_dirs(output_dir: Path, site_dir: Path) -> list[Path]:
    """OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/HHMMSSZ[_INCIDENT]: only that shape counts as a run, and
    never anything under the site directory (it may live inside the output directory)."""
    site = site_dir.resolve()
    found: list[Path] = []
    for day in _entries(output_dir):
        if not _DATE.match(day.name) or day.resolve() == site:
            continue
        for runbook in _entries(day):
            for leaf in _entries(runbook):
                if _LEAF.match(leaf.name) and leaf.resolve() != site:
                    found.append(leaf)
    return found


def _entries(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as it:
            return [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _key(run_dir: Path) -> list[int]:
    """What changes when a run changes: findings.json rewritten or a file added."""
    try:
        st = (run_dir / "findings.json").stat()
        findings = [st.st_mtime_ns, st.st_size]
    except OSError:
        findings = [0, -1]
    try:
        own = run_dir.stat().st_mtime_ns
    except OSError:
        own = 0
    return [*findings, own]


def scan(output_dir: Path, site_dir: Path) -> ScanResult:
    """Summaries of every run, reusing the cache for runs whose key has not moved."""
    cache_path = site_dir / CACHE_NAME
    cached = _load_cache(cache_path)
    fresh: dict[str, Any] = {}
    result = ScanResult(runs=[])
    for run_dir in run_dirs(output_dir, site_dir):
        rel = run_dir.relative_to(output_dir).as_posix()
        key = _key(run_dir)
        entry = cached.get(rel)
        if entry is not None and entry.get("key") == key:
            summary = entry["summary"]
            result.reused += 1
        else:
            summary = summarise(run_dir, rel)
            result.read += 1
        fresh[rel] = {"key": key, "summary": summary}
        result.runs.append(summary)
        if summary["damaged"]:
            result.damaged.append(rel)
    result.removed = len(set(cached) - set(fresh))
    if result.read or result.removed or not cache_path.exists():
        site_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_path, {"version": CACHE_VERSION, "runs": fresh})
    result.runs.sort(key=lambda r: (r["started_at"], r["path"]), reverse=True)
    return result


def _load_cache(path: Path) -> dict[str, Any]:
    """A missing, old or damaged cache only means a full read."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    runs = data.get("runs")
    return runs if isinstance(runs, dict) else {}


def summarise(run_dir: Path, rel: str) -> dict[str, Any]:
    """What the site shows of one run, from its path first (so a damaged run still has a
    date, runbook and incident), then from its findings.json."""
    day, runbook, leaf = rel.split("/")[-3:]
    match = _LEAF.match(leaf)
    assert match is not None  # run_dirs only yields matching leaves
    hh, mm, ss, incident = match.groups()
    try:
        files = sorted(e.name for e in os.scandir(run_dir) if e.is_file())
    except OSError:
        files = []
    summary: dict[str, Any] = {
        "path": rel, "runbook": runbook, "target": None, "incident_id": incident,
        "started_at": f"{day}T{hh}:{mm}:{ss}Z", "finished_at": None, "status": "unknown",
        "damaged": None, "interrupted": False, "root_cause": None, "diagnosis": None,
        "files": [f for f in files if f == "findings.json" or f.endswith((".html", ".ipynb",
                                                                             ".pdf"))],
        "counts": {}, "timeline": [], "security": {}, "backup": {},
    }
    path = run_dir / "findings.json"
    if not path.exists():
        summary["damaged"] = "no findings.json: the run is still going or was cut off"
        return summary
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("findings", []), list):
            raise ValueError("not a findings object")
    except (OSError, ValueError) as exc:
        summary["damaged"] = f"findings.json does not parse ({type(exc).__name__})"
        return summary
    _fill(summary, data)
    return summary


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _fill(summary: dict[str, Any], data: dict[str, Any]) -> None:
    summary["runbook"] = _text(data.get("runbook")) or summary["runbook"]
    summary["target"] = _text(data.get("target"))
    summary["incident_id"] = _text(data.get("incident_id")) or summary["incident_id"]
    summary["started_at"] = _text(data.get("started_at")) or summary["started_at"]
    summary["finished_at"] = _text(data.get("finished_at"))
    status = data.get("status")
    summary["status"] = status if status in _STATUSES else "unknown"
    findings = [f for f in data.get("findings") or [] if isinstance(f, dict)]
    actions = [a for a in data.get("actions") or [] if isinstance(a, dict)]
    counts: dict[str, int] = {}
    for f in findings:
        counts[str(f.get("status"))] = counts.get(str(f.get("status")), 0) + 1
        evidence = f.get("evidence") if isinstance(f.get("evidence"), dict) else {}
        check = f.get("check")
        if check == "diagnosis":
            summary["root_cause"] = _text(evidence.get("root_cause"))
            summary["diagnosis"] = _text(f.get("summary"))
        elif check == "run.interrupted":
            summary["interrupted"] = True
        elif isinstance(check, str) and check.startswith("security.") and "count" in evidence:
            summary["security"][str(evidence.get("kind") or check[9:])] = {
                k: evidence.get(k) for k in ("count", "baseline_mean", "baseline_stddev",
                                             "sigma", "bar", "flagged")}
        elif check == "backup.recent_dump":
            summary["backup"].update(age_hours=evidence.get("age_hours"),
                                     max_age_hours=evidence.get("max_age_hours"))
        elif check == "backup.current_rpo":
            summary["backup"].update(rpo_s=evidence.get("current_rpo_s"),
                                     tier_rpo_s=evidence.get("tier_rpo_s"))
    if data.get("interrupted_at"):
        summary["interrupted"] = True
    summary["counts"] = counts
    if summary["incident_id"]:  # only incidents get a timeline page: keep the cache small
        summary["timeline"] = [
            {"at": _text(f.get("at")), "kind": "finding", "name": _text(f.get("check")),
             "status": _text(f.get("status")), "text": _text(f.get("summary")),
             "next": _text(f.get("remediation"))} for f in findings
        ] + [
            {"at": _text(a.get("at")), "kind": "action", "name": _text(a.get("action")),
             "status": ("executed" if a.get("executed") else "not executed"),
             "text": _text(a.get("command")), "next": _text(a.get("result"))} for a in actions
        ]
