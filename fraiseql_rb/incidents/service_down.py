"""Runbook §4.2 "Playbook: Service Down": probe, look, restart (only with execute=True), dig.

The runbook's steps are `curl /health`, `docker logs`, `systemctl status`, `systemctl restart`,
wait 30 s for health, and if it is still down: the database, the configuration file, recent
changes, escalation. The target's own `status_command`, `logs_command` and `restart_command`
stand in for docker/systemctl (their output is masked); the restart runs only when the run has
`execute=True`, otherwise the exact command is recorded as an action that was not executed.
The deeper checks run only while the service is still down, as the runbook orders them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fraiseql_rb.checks import config, database
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.findings import Finding, Status, isoformat, utcnow
from fraiseql_rb.targets import commands

ESCALATE = "escalate to a senior engineer with this report (§4.2 step 6d)"

VOCABULARY = Vocabulary("service-down", {
    "none": "nothing to restart: the service answers healthy; if users still see failures, run "
            "the high-error-rate playbook",
    "process_down": "start the service: rerun with execute=True or run the recorded "
                    "restart_command, then read the log lines above for why it stopped; if it "
                    f"does not stay up, {ESCALATE}",
    "database_unreachable": "the server runs but cannot reach PostgreSQL, and a restart will not "
                            "fix that: run the database-unavailable playbook",
    "config_invalid": "fix the configuration errors listed above (fraiseql-rb validate-config "
                      f"on the config file), then restart; if it still fails, {ESCALATE}",
    "dependency_unhealthy": "the server answers but a dependency is impaired: read the degraded "
                            "component in the health fields or the readiness reason, and fix "
                            f"that dependency; if it persists, {ESCALATE}",
    "recovered_after_restart": "the service is back after the restart: watch it for the next "
                               "hour, find in the log lines above why it stopped, and record "
                               "the cause in the incident",
    "unknown": f"the checks could not establish a cause: {ESCALATE}",
}, fallback="unknown", severity={"recovered_after_restart": Status.WARNING,
                                 "dependency_unhealthy": Status.WARNING})

# Config findings that stop a v2 server from starting (the others are about safety).
STARTUP_BLOCKING = frozenset({
    "config.syntax", "config.value", "config.refused_section", "config.unknown_keys",
    "config.interpolation", "config.env", "config.tls",
})


# -- step 3: process state ----------------------------------------------------------------

_PROCESS_STATUS = {"running": Status.OK, "stopped": Status.CRITICAL, "failed": Status.CRITICAL,
                   "starting": Status.WARNING, "restarting": Status.WARNING,
                   "stopping": Status.WARNING, "paused": Status.CRITICAL,
                   "unknown": Status.UNKNOWN}


@check("service.process")
def check_process(ctx: RunContext) -> Finding:
    """§4.2 step 3 `systemctl status fraiseql`, through the target's status_command."""
    if not ctx.target.get("status_command"):
        return ctx.result(Status.INFO,
                          "not checked: the target has no status_command", {"state": None},
                          "add status_command (e.g. systemctl status fraiseql, docker inspect "
                          "-f '{{.State.Status}}' fraiseql) to the inventory")
    result = commands.run(ctx, "status_command")
    parsed = commands.parse_status(result.stdout + "\n" + result.stderr, result.returncode)
    evidence = {"state": parsed.state, "pid": parsed.pid, "read_from": parsed.source,
                "line": parsed.detail, "returncode": result.returncode,
                "command": result.command, "output": result.stdout.splitlines()[:12]}
    status = _PROCESS_STATUS[parsed.state]
    pid = f", pid {parsed.pid}" if parsed.pid else ""
    summary = f"process {parsed.state}{pid} ({parsed.source}: {parsed.detail})"
    remediation = {
        Status.CRITICAL: "restart it (next step) and read the log lines for why it stopped",
        Status.WARNING: "it is changing state: wait a few seconds and run the status again",
        Status.UNKNOWN: "run the status command by hand; fix status_command if it is wrong",
    }.get(status)
    return ctx.result(status, summary, evidence, remediation)


# -- step 2: logs -------------------------------------------------------------------------

def recent_logs(ctx: RunContext, lines: int = 20) -> Finding:
    """§4.2 step 2 `docker logs fraiseql`: the last lines from logs_command, masked and shown,
    with the error-looking lines picked out."""
    return service_checks.check_logs(ctx, lines, show=True)


# -- steps 4-5: restart and wait ------------------------------------------------------------

def restart_needed(ctx: RunContext) -> tuple[bool | None, str]:
    """Does §4.2 step 4 apply? Only when the process is not serving: a server that answers
    `unhealthy` because its database is down would come back the same after a restart."""
    health, process = ctx.latest("service.health"), ctx.latest("service.process")
    state = process.evidence.get("state") if process is not None else None
    if state in ("stopped", "failed", "paused"):
        return True, f"the process is {state}"
    if health is None or health.status is Status.UNKNOWN:
        return None, "the health check could not run, so there is nothing to judge a restart on"
    ev = health.evidence
    if ev.get("http_status") is None:
        return True, f"the service does not answer /health ({ev.get('error')})"
    if ev.get("http_status") not in (200, 503):
        return True, f"/health answers HTTP {ev.get('http_status')}"
    if health.status is Status.OK:
        return False, "the service answers healthy"
    if ev.get("database_connected") is False:
        return False, ("the server answers but reports its database disconnected: a restart "
                       "does not fix the database")
    return False, f"the server answers ({ev.get('status')}): a restart is not the fix"


RESTART_RESOLVES = ("service.health", "service.readiness", "service.process")


def restart(ctx: RunContext, wait_s: float = thresholds.RESTART_WAIT_S,
            poll_s: float = 1.0) -> Finding:
    """§4.2 steps 4-5: `systemctl restart fraiseql` through restart_command, only with
    execute=True and only when `restart_needed`, then wait for health (30 s by default, the
    runbook's figure). Healthy again, it resolves health, readiness and process state."""
    needed, why = restart_needed(ctx)
    return service_checks.restart(ctx, needed, why, wait_s=wait_s, poll_s=poll_s,
                                  step="§4.2 step 5", resolves=RESTART_RESOLVES)


def still_down(ctx: RunContext) -> bool:
    """§4.2 step 6 "If still down": not healthy, and not brought back by a restart."""
    restarted = ctx.latest("service.restart")
    if restarted is not None and restarted.evidence.get("healthy"):
        return False
    health = ctx.latest("service.health")
    return health is None or health.status is not Status.OK


# -- step 6: if still down ----------------------------------------------------------------

def database_vouched_for(ctx: RunContext) -> bool:
    """Did the service's own answers show its database working? /health healthy with
    `database.connected` true and /readiness not failing. A server that says nothing about
    its database (an older or foreign one) vouches for nothing."""
    health, ready = ctx.latest("service.health"), ctx.latest("service.readiness")
    if health is None or health.status is not Status.OK:
        return False
    if health.evidence.get("database_connected") is not True:
        return False
    return ready is None or ready.status is not Status.CRITICAL


def check_database(ctx: RunContext) -> Finding:
    """§4.2 step 6a: can the application role reach PostgreSQL at all? Skipped only when the
    service is up and its own answers vouch for its database; otherwise the database is
    judged on its own evidence."""
    if not still_down(ctx) and database_vouched_for(ctx):
        return database.check_reachable.skip(ctx, "the service is up and reports its "
                                                  "database connected")
    return database.check_reachable(ctx)


def check_configuration(ctx: RunContext) -> list[Finding]:
    """§4.2 step 6b: the config file the server reads, through the validator."""
    if not still_down(ctx):
        return [config.check_config.skip(ctx, "the service is up")]
    return config.check_config(ctx)


def changed_files(directory: Path, hours: float, now: datetime | None = None
                  ) -> list[dict[str, Any]]:
    """Files directly in `directory` modified in the last `hours`, newest first."""
    moment = (now or utcnow()).timestamp()
    rows = []
    for path in directory.iterdir():
        try:
            if not path.is_file():
                continue
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if moment - mtime <= hours * 3600:
            rows.append({"file": path.name,
                         "modified": isoformat(datetime.fromtimestamp(mtime, UTC)),
                         "hours_ago": round((moment - mtime) / 3600, 2)})
    return sorted(rows, key=lambda r: r["hours_ago"])


def _build_of(findings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last version/schema_hash a run saw (its health probe, or after its restart)."""
    for f in reversed(findings):
        ev = f.get("evidence") or {}
        if f.get("check") in ("service.health", "service.restart") and ev.get("version"):
            return {"version": ev.get("version"), "schema_hash": ev.get("schema_hash"),
                    "seen_at": f.get("at")}
    return None


def previous_build(ctx: RunContext) -> dict[str, Any] | None:
    """The build the newest earlier artifact of this runbook saw for this target.

    Artifacts sit in OUTPUT_DIR/YYYY-MM-DD/RUNBOOK/HHMMSSZ[_INCIDENT]/findings.json; this
    run's own findings.json (the runner's `findings_path`) fixes OUTPUT_DIR.
    """
    current = ctx.log.path
    if current is None:
        return None
    current = Path(current).resolve()
    root = current.parent.parents[2]
    found = sorted(root.glob(f"*/{ctx.runbook}/*/findings.json"),
                   key=lambda p: (p.parent.parent.parent.name, p.parent.name), reverse=True)
    for path in found:
        if path.resolve() == current:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("target") != ctx.target_name:
            continue
        build = _build_of(data.get("findings") or [])
        if build:
            return {**build, "artifact": str(path.parent)}
    return None


def current_build(ctx: RunContext) -> dict[str, Any] | None:
    return _build_of([f.to_dict() for f in ctx.log.findings])


@check("service.recent_changes")
def recent_changes(ctx: RunContext, hours: float = thresholds.RECENT_CHANGES_HOURS) -> Finding:
    """§4.2 step 6c "Review recent changes": files changed in the config's directory, and the
    version or schema_hash against the last artifact of this runbook for this target."""
    if not still_down(ctx):
        return ctx.skip("the service is up")
    config_path = ctx.target.get("config_path")
    directory = Path(config_path).parent if config_path else None
    files = changed_files(directory, hours) if directory and directory.is_dir() else None
    now, before = current_build(ctx), previous_build(ctx)
    differences = []
    if now and before:
        for key in ("version", "schema_hash"):
            if now.get(key) != before.get(key):
                differences.append(f"{key} {before.get(key)} -> {now.get(key)}")
    evidence = {"hours": hours, "config_dir": str(directory) if directory else None,
                "changed_files": files, "current": now, "previous": before,
                "differences": differences}
    parts = []
    if files is None:
        parts.append("config directory not inspected (no config_path on this host)")
    elif files:
        parts.append(f"{len(files)} file(s) in {directory} changed in the last {hours:g} h: "
                     + ", ".join(f"{r['file']} ({r['hours_ago']:g} h ago)" for r in files[:5]))
    else:
        parts.append(f"no file in {directory} changed in the last {hours:g} h")
    if differences:
        parts.append("the build changed since the run of " + str(before and before["seen_at"])
                     + ": " + "; ".join(differences))
    elif before and not now:
        parts.append(f"the current build is unknown (no answer); the last run saw version "
                     f"{before['version']}, schema_hash {before['schema_hash']} at "
                     f"{before['seen_at']}")
    elif before:
        parts.append(f"same version and schema_hash as the run of {before['seen_at']}")
    else:
        parts.append("no earlier run of this playbook for this target to compare the build "
                     "with")
    status = Status.WARNING if files or differences else Status.INFO
    return ctx.result(status, "; ".join(parts), evidence,
                      "review these changes first: roll back the one that preceded the outage"
                      if status is Status.WARNING else None,
                      table=pd.DataFrame(files) if files else None)


# -- the diagnosis ------------------------------------------------------------------------

def candidates(ctx: RunContext) -> list[Candidate]:
    """The root causes the recorded steps support, for `diagnosis.conclude`."""
    health = ctx.latest("service.health")
    ready = ctx.latest("service.readiness")
    process = ctx.latest("service.process")
    restarted = ctx.latest("service.restart")
    db = ctx.latest("database.reachable")
    hev = health.evidence if health is not None else {}
    state = process.evidence.get("state") if process is not None else None
    # a /readiness this server does not serve (404) is info, not a failing dependency
    not_ready = (ready is not None and ready.status is Status.CRITICAL
                 and ready.evidence.get("http_status") is not None)
    ready_why = None
    if not_ready:
        ready_why = (ready.evidence.get("reason")
                     or f"HTTP {ready.evidence.get('http_status')}")

    if restarted is not None and restarted.evidence.get("executed") \
            and restarted.evidence.get("healthy"):
        return [Candidate("recovered_after_restart", 0.95,
                          f"it did not serve ({restarted.evidence.get('reason')}); healthy "
                          f"{restarted.evidence.get('waited_s')} s after the restart",
                          {k: restarted.evidence.get(k) for k in
                           ("reason", "command", "waited_s", "version")})]
    if health is None or health.status is Status.UNKNOWN:
        return []
    if health.status is Status.OK:
        if db is not None and db.status is Status.CRITICAL:
            return [Candidate("database_unreachable", 0.7,
                              "/health answers healthy but the application role cannot "
                              "connect to PostgreSQL from here",
                              {"database": db.evidence.get("error")})]
        if not_ready:
            return [Candidate("dependency_unhealthy", 0.8,
                              f"/health is healthy but /readiness fails: {ready_why}",
                              {"readiness": ready_why})]
        return [Candidate("none", 1.0, health.summary, {"version": hev.get("version")})]

    out: list[Candidate] = []
    answered = hev.get("http_status") is not None
    db_down = db is not None and db.status is Status.CRITICAL
    db_up = db is not None and db.status is Status.OK
    if state in ("stopped", "failed", "paused"):
        out.append(Candidate("process_down", 0.9, f"the process is {state} "
                             f"({process.evidence.get('line')})", {"state": state}))
    elif not answered:
        hung = " although status_command reports it running (hung, or not listening)" \
            if state == "running" else ""
        out.append(Candidate("process_down", 0.8 if state is None else 0.75,
                             f"no answer from {hev.get('url')}: {hev.get('error')}{hung}",
                             {"state": state, "error": hev.get("error")}))
    elif hev.get("http_status") not in (200, 503):
        out.append(Candidate("process_down", 0.6, f"/health answers HTTP "
                             f"{hev.get('http_status')} (a proxy in front of a stopped "
                             "service?)", {"http_status": hev.get("http_status")}))
    if db_down:
        score = 0.95 if answered else 0.85
        out.append(Candidate("database_unreachable", score,
                             "the application role cannot connect to PostgreSQL"
                             + (" and the server reports database.connected=false"
                                if hev.get("database_connected") is False else ""),
                             {"database": db.evidence.get("error")}))
    elif answered and (hev.get("database_connected") is False or health.status is
                       Status.WARNING or not_ready):
        if db_up:
            what = ("reports its database disconnected" if hev.get("database_connected")
                    is False else f"reports {hev.get('status')}")
            why = f"; readiness: {ready_why}" if ready_why else ""
            out.append(Candidate("dependency_unhealthy", 0.8,
                                 f"the server {what} while PostgreSQL answers the application "
                                 f"role from here{why}", {"health": hev.get("status"),
                                                          "readiness": ready_why}))
        elif hev.get("database_connected") is False:
            out.append(Candidate("database_unreachable", 0.6,
                                 "the server reports database.connected=false (not confirmed "
                                 "from here)", {}))
    blocking = [f for f in ctx.log.findings if f.check in STARTUP_BLOCKING
                and f.status is Status.CRITICAL]
    if blocking:
        serving = answered and hev.get("http_status") in (200, 503)
        out.append(Candidate("config_invalid", 0.6 if serving else 0.92,
                             f"{len(blocking)} configuration error(s) that stop a v2 server "
                             f"from starting: {blocking[0].summary}"
                             + (" (the running process predates them: a restart would fail)"
                                if serving else ""),
                             {"errors": [f.check for f in blocking]}))
    return out
