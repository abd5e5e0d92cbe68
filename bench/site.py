"""Benchmark of `fraiseql-rb site`: a full build over 5,000 runs and a one-run rebuild.

Generates a reports tree of RUNS runs over DAYS days (findings.json and a small HTML report
each, with the variety of a real fleet: several runbooks and targets, every status, incident
runs with diagnoses and actions, daily-security-review totals with their baselines,
backup-verification age and RPO evidence, a few damaged and interrupted runs), then times:

  full_build_s      the first build (every findings.json read)      target < 30 s (#14)
  one_run_rebuild_s a rebuild after one more run is added           target < 2 s (#14)

Usage: python3 bench/site.py [--runs 5000] [--days 90] [--keep DIR]. `generate()` is also
used by tests/test_site*.py to make a realistic tree. Targets are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGETS = {"full_build_s": 30.0, "one_run_rebuild_s": 2.0}
FLEET = ["prod-eu", "prod-us", "staging", "sandbox"]
ROUTINE = ["service-health", "daily-security-review", "backup-verification",
           "performance-dashboard", "alert-review", "operational-checklist"]
PLAYBOOKS = {
    "service-down": ["process_down", "database_unreachable", "config_invalid",
                     "recovered_after_restart"],
    "high-error-rate": ["database_errors", "bad_deploy", "dependency_unhealthy"],
    "database-unavailable": ["server_stopped", "connections_exhausted", "auth_failed"],
    "connection-pool-exhaustion": ["pool_too_small", "long_transactions", "leak"],
}
KINDS = {"auth_failure": 20, "sql_injection": 1.5, "csrf_failure": 4}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _finding(check: str, status: str, at: datetime, summary: str, evidence: dict,
             remediation: str | None = None) -> dict:
    return {"check": check, "status": status, "at": _iso(at), "summary": summary,
            "evidence": evidence, "remediation": remediation}


def _worst(statuses: list[str]) -> str:
    rank = {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}
    return max((s for s in statuses if s in rank), key=rank.__getitem__, default="ok")


def _body(rng: random.Random, runbook: str, target: str, start: datetime,
          incident: str | None) -> tuple[list[dict], list[dict]]:
    t = start + timedelta(seconds=1)
    findings: list[dict] = []
    actions: list[dict] = []
    if runbook == "daily-security-review":
        for kind, mean in KINDS.items():
            sd = max(mean / 4, 0.8)
            count = max(0, int(rng.gauss(mean, sd))) + (int(mean * 3) if rng.random() < .03
                                                          else 0)
            bar = mean + 3 * sd
            flagged = count > bar and count >= 20
            findings.append(_finding(
                f"security.{kind}", "warning" if flagged else "ok", t,
                f"{count} {kind.replace('_', ' ')} events in the last 24 h",
                {"kind": kind, "count": count, "baseline_days": 7,
                 "baseline_mean": round(rng.gauss(mean, sd / 3), 3),
                 "baseline_stddev": round(sd, 3), "sigma": 3.0, "bar": round(bar, 3),
                 "min_count": 20, "flagged": flagged}))
    elif runbook == "backup-verification":
        age = abs(rng.gauss(8, 6)) if rng.random() > .05 else rng.uniform(27, 50)
        rpo = abs(rng.gauss(20, 15)) if rng.random() > .05 else rng.uniform(300, 900)
        findings.append(_finding("backup.recent_dump", "ok" if age < 26 else "critical", t,
                                 f"newest dump {age:.1f} h old",
                                 {"age_hours": round(age, 2), "max_age_hours": 26.0,
                                  "tier": 2, "tier_rpo_s": 300}))
        findings.append(_finding("backup.current_rpo", "ok" if rpo < 300 else "warning", t,
                                 f"current RPO {rpo:.0f} s",
                                 {"current_rpo_s": round(rpo, 1), "tier_rpo_s": 300}))
        for n in range(rng.randint(0, 3)):
            actions.append({"action": "delete_expired_backup", "executed": False,
                            "command": f"rm -- /backups/fraiseql-2026{n:04d}.dump",
                            "at": _iso(t), "result": None})
    elif runbook in PLAYBOOKS:
        status = rng.choice(["critical", "critical", "warning", "ok"])
        cause = rng.choice(PLAYBOOKS[runbook]) if status != "ok" else "none"
        findings.append(_finding("service.health", status, t,
                                 "health endpoint: " + ("healthy" if status == "ok"
                                                        else "connection refused"),
                                 {"http_status": 200 if status == "ok" else None}))
        t += timedelta(seconds=rng.randint(2, 40))
        if status != "ok":
            executed = rng.random() < .5
            actions.append({"action": "restart_service", "executed": executed,
                            "command": f"systemctl restart fraiseql@{target}", "at": _iso(t),
                            "result": "exit 0; healthy after 4 s" if executed else None})
            t += timedelta(seconds=5)
        findings.append(_finding("diagnosis", status, t, f"root cause: {cause}",
                                 {"root_cause": cause, "candidates": [{"code": cause}]},
                                 "see the runbook section for " + cause))
    else:
        for n in range(rng.randint(3, 8)):
            status = rng.choices(["ok", "warning", "critical", "info"], [20, 3, 1, 3])[0]
            findings.append(_finding(f"{runbook.split('-')[0]}.check_{n}", status, t,
                                     f"check {n} of {runbook}", {"value": rng.random()}))
            t += timedelta(seconds=1)
    return findings, actions


def write_run(root: Path, rng: random.Random, runbook: str, target: str, start: datetime,
              incident: str | None = None, damage: str | None = None) -> Path:
    """One run directory as the runner leaves it (or a damaged one)."""
    leaf = start.strftime("%H%M%SZ") + (f"_{incident}" if incident else "")
    run_dir = root / start.strftime("%Y-%m-%d") / runbook / leaf
    while run_dir.exists():  # as the runner does: never two runs in one directory
        start += timedelta(seconds=1)
        leaf = start.strftime("%H%M%SZ") + (f"_{incident}" if incident else "")
        run_dir = root / start.strftime("%Y-%m-%d") / runbook / leaf
    run_dir.mkdir(parents=True)
    findings, actions = _body(rng, runbook, target, start, incident)
    status = _worst([f["status"] for f in findings])
    interrupted = None
    if damage == "interrupted":
        interrupted = _iso(start + timedelta(seconds=9))
        findings.append(_finding("run.interrupted", "unknown", start + timedelta(seconds=9),
                                 "the run was interrupted by SIGINT", {"signal": "SIGINT"}))
        status = _worst([status, "unknown"])
    data = {"runbook": runbook, "target": target, "incident_id": incident,
            "started_at": _iso(start), "finished_at": _iso(start + timedelta(seconds=10)),
            "interrupted_at": interrupted, "parameters": {"target": target},
            "status": status, "findings": findings, "actions": actions}
    (run_dir / f"{runbook}.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{runbook}</title></head>"
        f"<body><h1>{runbook} on {target}</h1><p>status {status}</p></body></html>\n")
    (run_dir / f"{runbook}.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, '
                                              '"nbformat_minor": 5}\n')
    if damage == "missing":
        return run_dir
    text = json.dumps(data, indent=2)
    (run_dir / "findings.json").write_text(text[: len(text) // 2] if damage == "truncated"
                                           else text)
    if runbook == "monthly-security-report":
        (run_dir / "monthly-security-report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    return run_dir


def generate(root: Path, runs: int = 5000, days: int = 90, *, seed: int = 14,
             end: datetime | None = None) -> int:
    """A reports tree of about `runs` runs over `days` days ending at `end` (default: now)."""
    rng = random.Random(seed)
    end = (end or datetime.now(UTC)).replace(microsecond=0)
    start = end - timedelta(days=days)
    written = 0
    seconds = days * 86400
    incident_no = 100
    while written < runs:
        at = start + timedelta(seconds=rng.randrange(seconds))
        if rng.random() < .08:  # an incident: 2-4 playbooks on one target within the hour
            incident_no += 1
            incident, target = f"INC-{incident_no}", rng.choice(FLEET)
            for _ in range(rng.randint(2, 4)):
                at += timedelta(minutes=rng.randint(1, 15))
                write_run(root, rng, rng.choice(list(PLAYBOOKS)), target, at, incident)
                written += 1
            continue
        runbook = rng.choice(ROUTINE + ["monthly-security-report"] * (rng.random() < .02))
        damage = rng.choices([None, "interrupted", "truncated", "missing"],
                             [400, 3, 1, 1])[0]
        write_run(root, rng, runbook, rng.choice(FLEET), at, None, damage)
        written += 1
    # one daily-security-review and backup-verification per target per day, for trends
    for day in range(days):
        for target in FLEET:
            moment = start + timedelta(days=day, hours=6, seconds=rng.randrange(600))
            write_run(root, rng, "daily-security-review", target, moment)
            write_run(root, rng, "backup-verification", target, moment + timedelta(hours=1))
    return written + days * len(FLEET) * 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--keep", help="generate into this directory and keep it")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from fraiseql_rb.site import build

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fraiseql-rb-site-"))
    try:
        # the daily routine adds 2 runs per target per day: generate the rest at random
        extra = args.days * len(FLEET) * 2
        t0 = time.perf_counter()
        total = generate(root / "reports", max(args.runs - extra, 0), args.days)
        print(f"generated {total} runs over {args.days} days in "
              f"{time.perf_counter() - t0:.1f} s")
        results: dict[str, float] = {}
        t0 = time.perf_counter()
        stats = build.build(root / "reports")
        results["full_build_s"] = time.perf_counter() - t0
        print(f"  full build: {stats.runs} runs read {stats.read}, {stats.incidents} "
              f"incidents, {stats.damaged} damaged, {stats.written} pages")
        rng = random.Random(1)
        write_run(root / "reports", rng, "service-health", "prod-eu",
                  datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5))
        t0 = time.perf_counter()
        stats = build.build(root / "reports")
        results["one_run_rebuild_s"] = time.perf_counter() - t0
        print(f"  rebuild: {stats.runs} runs, read {stats.read}, {stats.written} pages written")
        size = sum(p.stat().st_size for p in (root / "reports" / "site").iterdir())
        print(f"  site size: {size / 1e6:.1f} MB")
        for name, value in results.items():
            verdict = "ok" if value < TARGETS[name] else "MISSED"
            print(f"{name}: {value:.2f}  (target < {TARGETS[name]:g})  {verdict}")
        return 0 if all(results[k] < TARGETS[k] for k in results) else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
