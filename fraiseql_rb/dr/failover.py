"""Runbook §5.2 "Failover Procedure": promote the replica when, and only when, the primary is down.

§5.2's script is `curl /health` fails → `psql -c "SELECT pg_promote();"` on the replica, sleep
10, `sed -i "s/primary:5432/replica:5432/"` on the config, `systemctl restart fraiseql`,
`curl /health`, a Slack message. Here every step is gated, and each gate is a finding:

- the primary must really be down: /health, and a direct connection as the application role
  and as the admin role. A primary that still answers is never failed over, whatever
  /health says: two primaries split the data, so it is refused;
- the replica must be fit: in recovery, streaming or replayed up to the last WAL it received,
  no further behind than `maximum_lag_bytes` (Patroni's maximum_lag_on_failover) against the
  last WAL it received and, where the old primary's data directory is readable here
  (`replica_primary_data_dir`, read with pg_controldata), the primary's last checkpoint, and
  on the primary's timeline. What could not be measured is said;
- the promotion (`SELECT pg_promote(wait => true)` on the replica's admin URL), the config
  rewrite (every connection string naming the primary's host:port pointed at the replica's,
  written beside the file and moved over it, after a backup copy) and the restart run only
  with execute=True and confirm equal to the target's name. Otherwise each command is
  recorded as an action not executed, and nothing changes;
- after it: /health, a read through the data path (`probe_query`), and a row written and read
  back on the new primary as the application role, in a table made for it and dropped after;
  §5.2's notification is sent through the target's apprise URLs once a promotion happened
  (recorded, not sent, in a dry run).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from fraiseql_rb.checks import database
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.findings import Finding, Status, utcnow
from fraiseql_rb.targets import pgbin, postgres

# The old config is kept beside it as `<config>.pre-failover-<UTC time>`; the sandbox's
# primary-down heal restores it by this name (fraiseql_rb/sandbox/replica.py).
CONFIG_BACKUP_SUFFIX = ".pre-failover-"
WRITE_CHECK_TABLE = "fraiseql_rb_failover_check"  # made, written, read back and dropped
PROMOTE_SQL = "SELECT pg_promote(wait => true, wait_seconds => {})"
DOWN = frozenset({"server_down", "network_timeout"})  # postgres.attempt codes: no answer

VOCABULARY = Vocabulary("failover", {
    "none": "nothing to fail over: the primary answers and the service is healthy",
    "primary_down_replica_fit": "the primary is down and the replica is fit to take over: "
                                "rerun with -p execute true -p confirm <target> to run the "
                                "recorded actions (promote, point the config at the replica, "
                                "restart), unless the primary can be started sooner",
    "primary_down_promoted": "the service runs on the promoted replica: point database_url "
                             "(and admin_database_url) of this target in the inventory at it, "
                             "keep the old primary stopped until it is rebuilt as a standby "
                             "of the new primary, and find why it stopped; the old config "
                             "is kept beside the new one",
    "primary_down_replica_unfit": "do not promote this replica (it would lose writes or "
                                  "follow the wrong history): bring the primary back "
                                  "(pg_ctl start, or restore from backup, §5.1), or fix the "
                                  "replica (resume replay, let it catch up) and rerun",
    "primary_reachable_refused": "refused: the primary still answers, so promoting the "
                                 "replica would make two primaries (split brain). The outage "
                                 "is elsewhere: run service-down or database-unavailable",
    "replica_missing": "there is no replica to fail over to: start it (replica_start_command) "
                       "if it exists, otherwise bring the primary back or restore from "
                       "backup (§5.1)",
    "unknown": "the gates could not be measured: read the findings above, fix what stopped "
               "them and rerun; promote nothing meanwhile",
}, fallback="unknown", severity={"primary_down_promoted": Status.WARNING,
                                 "primary_reachable_refused": Status.WARNING})


# -- step 1: is the primary really down? ----------------------------------------------------

@check("failover.primary")
def check_primary(ctx: RunContext,
                  connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§5.2 step 1 "Detect primary down": a direct connection to the primary as the
    application role and, when the inventory has it, as the admin role. Down means neither
    gets an answer (nothing listens, or no answer in time); then the old primary's last
    position is read where its data directory is readable from here."""
    roles = [("application role", "database")]
    if ctx.target.get("admin_database_url"):
        roles.append(("admin role", "admin_database"))
    attempts: dict[str, dict[str, Any]] = {}
    for role, kind in roles:
        found = postgres.attempt(ctx.target.database_url(kind), connect_timeout_s)
        attempts[role] = {"failure": found.failure.code, "error": found.error,
                          "tcp": found.tcp.outcome if found.tcp else "unix socket",
                          "host": found.host, "port": found.port}
    first = attempts["application role"]
    where = f"{first['host']}:{first['port']}" if first["host"] else "its unix socket"
    answering = {role: a["failure"] for role, a in attempts.items() if a["failure"] not in DOWN}
    evidence: dict[str, Any] = {"endpoint": where, "attempts": attempts,
                                "answers": bool(answering)}
    if answering:
        how = ", ".join(f"{role}: {'connected' if code == 'none' else code}"
                        for role, code in answering.items())
        status = Status.OK if "none" in answering.values() else Status.WARNING
        return ctx.result(status, f"the primary at {where} answers ({how}): it is not down, "
                          "so there is nothing to fail over", evidence,
                          None if status is Status.OK else
                          "the primary is up but refuses a role: run database-unavailable")
    timed_out = any(a["failure"] == "network_timeout" for a in attempts.values())
    last = last_known_primary(ctx)
    evidence["last_known"] = last
    caution = (" No answer in time is not proof that it stopped: fence it (stop it, or cut it "
               "off from clients) before promoting." if timed_out else "")
    return ctx.result(Status.CRITICAL,
                      f"the primary at {where} is down ({first['failure']}: "
                      f"{first['error'] or first['tcp']}); {last['summary']}.{caution}",
                      evidence, "fail over to the replica if it is fit (next steps), or start "
                      "the primary if it can come back sooner")


_CONTROLDATA = {"Database cluster state": "state",
                "Latest checkpoint location": "checkpoint_lsn",
                "Latest checkpoint's TimeLineID": "timeline",
                "Time of latest checkpoint": "checkpoint_at"}


def last_known_primary(ctx: RunContext) -> dict[str, Any]:
    """The old primary's last WAL position and timeline from `pg_controldata` of its data
    directory (`replica_primary_data_dir`), where that directory is readable from here.
    After a clean shutdown its last checkpoint is the end of its WAL; after a crash it is
    only a lower bound."""
    directory = ctx.target.get("replica_primary_data_dir")
    if not directory:
        return {"known": False, "summary": "its last WAL position is unknown here (no "
                "replica_primary_data_dir in the inventory)"}
    try:
        proc = subprocess.run([str(pgbin.pg_bin("pg_controldata")), "-D", str(directory)],
                              capture_output=True, text=True, check=False,
                              timeout=thresholds.TOOL_PROBE_TIMEOUT_S,
                              env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")})
    except (OSError, subprocess.TimeoutExpired, pgbin.PgBinariesNotFound) as exc:
        return {"known": False, "summary": f"its last WAL position is unknown here "
                f"(pg_controldata: {secrets.mask(postgres.first_line(exc))})"}
    if proc.returncode != 0:
        error = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        return {"known": False, "summary": "its last WAL position is unknown here "
                f"(pg_controldata: {secrets.mask(error)})"}
    fields = {}
    for line in proc.stdout.splitlines():
        label, _, value = line.partition(":")
        if label.strip() in _CONTROLDATA:
            fields[_CONTROLDATA[label.strip()]] = value.strip()
    clean = fields.get("state") == "shut down"
    timeline = int(fields["timeline"]) if fields.get("timeline", "").isdigit() else None
    what = ("it shut down cleanly: its WAL ends at its last checkpoint"
            if clean else f"its state is '{fields.get('state')}' (crashed, or still running): "
            "WAL written after its last checkpoint is not known here")
    return {"known": True, "clean_shutdown": clean, "timeline": timeline,
            "checkpoint_lsn": fields.get("checkpoint_lsn"), "state": fields.get("state"),
            "checkpoint_at": fields.get("checkpoint_at"), "data_dir": str(directory),
            "summary": f"pg_controldata of {directory}: {what} ({fields.get('checkpoint_lsn')}, "
                       f"timeline {timeline})"}


def primary_down(ctx: RunContext) -> bool:
    found = ctx.latest("failover.primary")
    return found is not None and found.evidence.get("answers") is False


# -- step 2: is the replica fit to take over? -----------------------------------------------

TIMELINE_SQL = "SELECT timeline_id FROM pg_control_checkpoint()"


def _replica_url(ctx: RunContext) -> tuple[str, str]:
    """The replica's admin URL (promotion and pg_control_checkpoint need it) with its
    password, else the application role's; and the URL as the inventory writes it."""
    kind = ("replica_admin_database" if ctx.target.get("replica_admin_database_url")
            else "replica_database")
    return ctx.target.database_url(kind), str(ctx.target.get(f"{kind}_url"))


@check("failover.replica")
def check_replica(ctx: RunContext, maximum_lag_bytes: int = thresholds.MAXIMUM_LAG_BYTES,
                  connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§5.2 step 2's precondition, which the script does not check: a replica in recovery,
    streaming or replayed up to the last WAL it received, no further behind than
    `maximum_lag_bytes`, on the primary's timeline."""
    if not primary_down(ctx):
        return ctx.skip("the primary answers (or was not checked): nothing to promote")
    if not ctx.target.get("replica_database_url"):
        return ctx.result(Status.CRITICAL, "no replica is configured (replica_database_url): "
                          "there is nothing to fail over to", {"configured": False,
                                                               "fit": False},
                          VOCABULARY.remediation["replica_missing"])
    url, shown = _replica_url(ctx)
    host, port = postgres.endpoint(shown)
    where = f"{host}:{port}" if host else "its unix socket"
    timeout = max(1, int(round(connect_timeout_s)))
    try:
        with postgres.connect(url, connect_timeout_s=timeout) as conn:
            state = database.standby_state(conn)
            timeline, timeline_error = _timeline(conn)
    except postgres.ConnectionFailed as exc:
        return ctx.result(Status.CRITICAL, f"the replica at {where} does not answer: {exc}",
                          {"configured": True, "reachable": False, "fit": False,
                           "endpoint": where, "error": str(exc)},
                          VOCABULARY.remediation["replica_missing"])
    primary = ctx.latest("failover.primary")
    last = (primary.evidence.get("last_known") if primary is not None else None) or {}
    judged = judge_replica(state, last, timeline, maximum_lag_bytes)
    if timeline_error:
        judged["unmeasured"].append(f"the replica's timeline ({timeline_error})")
    evidence = {"configured": True, "reachable": True, "endpoint": where, **state,
                "timeline": timeline, "maximum_lag_bytes": maximum_lag_bytes, **judged}
    unmeasured = judged["unmeasured"]
    note = f" Not measured: {'; '.join(unmeasured)}." if unmeasured else ""
    if judged["fit"]:
        return ctx.result(Status.OK,
                          f"the replica at {where} is fit to promote: in recovery, "
                          f"{judged['position']}, {judged['lag_bytes']} bytes behind (at most "
                          f"{maximum_lag_bytes}), timeline {timeline}.{note}", evidence)
    return ctx.result(Status.CRITICAL,
                      f"the replica at {where} is not fit to promote: "
                      f"{'; '.join(judged['reasons'])}.{note}", evidence,
                      VOCABULARY.remediation["primary_down_replica_unfit"])


def _timeline(conn: psycopg.Connection) -> tuple[int | None, str | None]:
    try:
        row = postgres.one(conn, TIMELINE_SQL)
    except psycopg.Error as exc:  # pg_control_checkpoint() needs a superuser or pg_monitor
        return None, secrets.mask(postgres.first_line(exc))
    value = row.get("timeline_id")
    return (int(value) if value is not None else None), None


def judge_replica(state: dict[str, Any], last: dict[str, Any], timeline: int | None,
                  maximum_lag_bytes: int) -> dict[str, Any]:
    """Is a standby in `state` (database.standby_state) fit to promote, with the primary's
    `last` known position (last_known_primary) and the replica's `timeline`?"""
    reasons: list[str] = []
    unmeasured: list[str] = []
    streaming = state.get("receiver_status") == "streaming"
    gap = int(state.get("replay_gap_bytes") or 0)  # received, not replayed
    replayed = database.lsn_bytes(state.get("replay_lsn"))
    primary_lsn = database.lsn_bytes(last.get("checkpoint_lsn")) if last.get("known") else None
    behind_primary = (max(0, primary_lsn - replayed)
                      if primary_lsn is not None and replayed is not None else None)
    lag = max(gap, behind_primary or 0)
    if primary_lsn is None:
        unmeasured.append(last.get("summary") or "the primary's last WAL position")
    elif not last.get("clean_shutdown"):
        unmeasured.append("WAL the primary wrote after its last checkpoint")
    if not state.get("in_recovery"):
        reasons.append("it is not in recovery: it is a primary already (promoted earlier?)")
    else:
        if not streaming and gap > 0:
            paused = ", replay paused" if state.get("replay_paused") else ""
            reasons.append(f"it is not streaming and has not replayed all it received "
                           f"({gap} bytes left{paused})")
        if lag > maximum_lag_bytes:
            reasons.append(f"it is {lag} bytes behind, more than maximum_lag_bytes "
                           f"({maximum_lag_bytes})")
        primary_timeline = last.get("timeline")
        if timeline is not None and primary_timeline is not None \
                and timeline != primary_timeline:
            reasons.append(f"it is on timeline {timeline}, the primary was on "
                           f"{primary_timeline}")
        elif primary_timeline is None:
            unmeasured.append("the primary's timeline")
    position = ("streaming" if streaming else
                "replayed everything it received" if gap == 0 else f"{gap} bytes not replayed")
    return {"fit": not reasons, "reasons": reasons, "unmeasured": unmeasured,
            "streaming": streaming, "lag_bytes": lag, "behind_primary_bytes": behind_primary,
            "position": position, "primary_timeline": last.get("timeline")}


# -- the gate: may anything change? ---------------------------------------------------------

def applies(ctx: RunContext) -> tuple[bool, str]:
    """Does a failover apply at all: the primary down and the replica fit?"""
    primary, replica = ctx.latest("failover.primary"), ctx.latest("failover.replica")
    if primary is None or primary.status is Status.UNKNOWN:
        return False, "the primary's state is not known"
    if not primary_down(ctx):
        return False, "the primary answers (a promotion now would make two primaries)"
    if replica is None or replica.status is Status.UNKNOWN:
        return False, "the replica's state is not known"
    if not replica.evidence.get("fit"):
        return False, "the replica is not fit to promote"
    return True, "the primary is down and the replica is fit"


def confirmed(ctx: RunContext) -> bool:
    """The gates pass and the run may make the change (execute=True, confirm=<target>)."""
    return applies(ctx)[0] and ctx.may_execute(dangerous=True)


@check("failover.authorization")
def authorize(ctx: RunContext) -> Finding:
    """Promotion is the most dangerous change there is: it runs only when the gates pass,
    with execute=True and confirm equal to the target's name (DESIGN, "Safety")."""
    ok, why = applies(ctx)
    evidence = {"applies": ok, "execute": ctx.execute, "confirmed": False}
    if not ok:
        return ctx.result(Status.INFO, f"no failover: {why}; nothing is changed", evidence)
    if not ctx.execute:
        return ctx.result(Status.INFO, f"dry run: {why}; the commands below are recorded "
                          "(executed=false) and nothing changes", evidence,
                          "rerun with -p execute true -p confirm <target> to run them")
    if ctx.confirm != ctx.target_name:
        given = "is not set" if ctx.confirm is None else f"is {ctx.confirm!r}"
        return ctx.result(Status.WARNING,
                          f"execute=True but confirm {given}, not the target's name "
                          f"{ctx.target_name!r}: nothing runs", evidence,
                          f"rerun with -p execute true -p confirm {ctx.target_name} to promote")
    return ctx.result(Status.INFO, f"confirmed (execute=True, confirm={ctx.confirm}): {why}, "
                      "promoting", evidence | {"confirmed": True})


def _not_run_reason(ctx: RunContext) -> str:
    return ("dry run" if not ctx.execute else
            f"confirm is not the target's name {ctx.target_name!r}")


# -- step 2: promote ------------------------------------------------------------------------

@check("failover.promote")
def promote(ctx: RunContext, wait_s: int = thresholds.PROMOTE_WAIT_S) -> Finding:
    """§5.2 step 2 `psql -c "SELECT pg_promote();"` on the replica, waiting for it to leave
    recovery (instead of the script's `sleep 10`), then its new timeline."""
    ok, why = applies(ctx)
    if not ok:
        return ctx.skip(why)
    url, shown = _replica_url(ctx)
    statement = PROMOTE_SQL.format(int(wait_s))
    command = f"psql '{shown}' -c '{statement};'"
    if not confirmed(ctx):
        print(repr(ctx.action("promote_replica", command, executed=False)))
        return ctx.result(Status.INFO, f"not run ({_not_run_reason(ctx)}): would promote the "
                          f"replica with `{statement}`",
                          {"executed": False, "promoted": False, "command": command})
    print(f"promoting: {command}", flush=True)
    timeout_ms = int(wait_s) * 1000 + thresholds.DB_STATEMENT_TIMEOUT_MS
    try:
        with postgres.connect(url, statement_timeout_ms=timeout_ms, read_only=False) as conn:
            row = postgres.one(conn, "SELECT pg_promote(wait => true, wait_seconds => %s) "
                               "AS promoted", (int(wait_s),))
            after = postgres.one(conn, "SELECT pg_is_in_recovery() AS in_recovery")
            if not after.get("in_recovery"):
                after |= postgres.one(conn, "SELECT ('x' || substr(pg_walfile_name("
                                      "pg_current_wal_lsn()), 1, 8))::bit(32)::int "
                                      "AS timeline, pg_current_wal_lsn()::text AS wal_lsn")
    except (postgres.ConnectionFailed, psycopg.Error) as exc:
        error = secrets.mask(postgres.first_line(exc))
        ctx.action("promote_replica", command, executed=True, result={"error": error})
        return ctx.result(Status.CRITICAL, f"the promotion failed: {error}",
                          {"executed": True, "promoted": False, "command": command,
                           "error": error},
                          "read the replica's log; promote by hand (pg_ctl promote -D "
                          "<replica data dir>) if it is still a fit standby")
    promoted = bool(row.get("promoted")) and not after.get("in_recovery")
    result = {"promoted": promoted, "in_recovery": after.get("in_recovery"),
              "timeline": after.get("timeline"), "wal_lsn": after.get("wal_lsn")}
    ctx.action("promote_replica", command, executed=True, result=result)
    replica = ctx.latest("failover.replica")
    before = replica.evidence.get("timeline") if replica is not None else None
    if not promoted:
        return ctx.result(Status.CRITICAL, f"pg_promote did not finish within {wait_s} s: the "
                          "replica is still in recovery", {"executed": True, **result},
                          "read the replica's log; wait for it, or promote by hand")
    return ctx.result(Status.OK, f"promoted: the replica is a primary now, on timeline "
                      f"{after.get('timeline')} (was {before}), writing at "
                      f"{after.get('wal_lsn')}", {"executed": True, "command": command,
                                                  **result, "timeline_before": before})


def promoted(ctx: RunContext) -> bool:
    found = ctx.latest("failover.promote")
    return found is not None and bool(found.evidence.get("promoted"))


# -- step 3: point the server at the new primary --------------------------------------------

_ASSIGNMENT = re.compile(r"""^(?P<lead>\s*)(?P<key>[A-Za-z0-9_.-]+)(?P<eq>\s*=\s*)
                             (?P<q>["'])(?P<value>[^"'\n]*)(?P=q)(?P<tail>\s*(?:\#.*)?)$""",
                         re.VERBOSE)
_SECTION = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(?:#.*)?$")
_NETLOC = re.compile(r"^(?P<auth>[^@/]*@)?(?P<host>\[[^\]]*\]|[^:/?]*)(?::(?P<port>\d+))?$")


def repoint(url: str, old: tuple[str | None, int], new: tuple[str | None, int]) -> str | None:
    """`url` with host:port `old` replaced by `new`, or None if it does not name `old`."""
    if not re.match(r"^postgres(ql)?://", url):
        return None
    scheme, _, rest = url.partition("://")
    netloc, sep, path = rest.partition("/")
    found = _NETLOC.match(netloc)
    if not found:
        return None
    port = int(found.group("port") or 5432)
    if (found.group("host"), port) != old:
        return None
    return f"{scheme}://{found.group('auth') or ''}{new[0]}:{new[1]}{sep}{path}"


def rewrite_config(text: str, old: tuple[str | None, int], new: tuple[str | None, int]
                   ) -> tuple[str, list[dict[str, Any]]]:
    """§5.2 step 3's `sed -i "s/primary:5432/replica:5432/"`, confined to what it means:
    each `key = "postgres://..."` line naming `old` gets `new`, nothing else in the file
    changes (comments, order, other keys). Returns the new text and what changed."""
    lines = text.splitlines(keepends=True)
    section = ""
    changes = []
    for number, line in enumerate(lines, 1):
        body = line.rstrip("\r\n")
        heading = _SECTION.match(body)
        if heading:
            section = heading.group(1)
            continue
        found = _ASSIGNMENT.match(body)
        if not found:
            continue
        value = repoint(found.group("value"), old, new)
        if value is None:
            continue
        ending = line[len(body):]
        lines[number - 1] = (f"{found.group('lead')}{found.group('key')}{found.group('eq')}"
                             f"{found.group('q')}{value}{found.group('q')}"
                             f"{found.group('tail')}{ending}")
        key = f"{section}.{found.group('key')}" if section else found.group("key")
        changes.append({"line": number, "key": key,
                        "old": secrets.mask(found.group("value")), "new": secrets.mask(value)})
    return "".join(lines), changes


def _endpoints(ctx: RunContext) -> tuple[tuple[str | None, int], tuple[str | None, int]]:
    old = postgres.endpoint(str(ctx.target.require("database_url")))
    new = postgres.endpoint(str(ctx.target.require("replica_database_url")))
    return old, new


def _show(endpoint: tuple[str | None, int]) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


@check("failover.switch_config")
def switch_config(ctx: RunContext) -> Finding:
    """§5.2 step 3 "Update connection strings" (`sed -i` on the config), done safely: a
    backup copy of the file first, then the new text written to a file beside it and moved
    over it (a reader sees the old file or the new one, never half of one). Only after a
    promotion that succeeded."""
    ok, why = applies(ctx)
    if not ok:
        return ctx.skip(why)
    old, new = _endpoints(ctx)
    config_path = ctx.target.get("config_path")
    if not config_path:
        command = (f"point the server's database URL at {_show(new)} (was {_show(old)}) "
                   "wherever it is set")
        ctx.action("switch_connection_string", command, executed=False)
        return ctx.result(Status.WARNING, "no config_path in the inventory: the connection "
                          "string cannot be switched here", {"executed": False,
                                                             "command": command},
                          "switch it by hand where the server reads it (config file or "
                          "DATABASE_URL in its environment), then restart it")
    path = Path(str(config_path))
    text = path.read_text()
    new_text, changes = rewrite_config(text, old, new)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(path.name + CONFIG_BACKUP_SUFFIX + stamp)
    keys = ", ".join(c["key"] for c in changes) or "nothing"
    command = (f"cp -p '{path}' '{backup}' && rewrite {keys} in '{path}': {_show(old)} -> "
               f"{_show(new)} (written to a temporary file beside it, then renamed over it)")
    evidence: dict[str, Any] = {"config_path": str(path), "from": _show(old), "to": _show(new),
                                "changes": changes}
    if not changes:
        env = " (it reads ${...} from the environment)" if "${" in text else ""
        ctx.action("switch_connection_string", command, executed=False)
        return ctx.result(Status.CRITICAL if promoted(ctx) else Status.WARNING,
                          f"{path} names no connection string to the primary at {_show(old)}"
                          f"{env}: the server takes its database URL from elsewhere",
                          evidence | {"executed": False},
                          f"point the server's DATABASE_URL (its unit's environment) at "
                          f"{_show(new)} and restart it")
    try:
        tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        if path.suffix == ".toml":
            raise
    if not promoted(ctx):
        print(repr(ctx.action("switch_connection_string", command, executed=False)))
        reason = _not_run_reason(ctx) if not confirmed(ctx) else "the promotion failed"
        return ctx.result(Status.INFO, f"not run ({reason}): would point {keys} in {path} at "
                          f"{_show(new)} (was {_show(old)}), keeping the old file as {backup}",
                          evidence | {"executed": False, "backup": str(backup)})
    replace_atomically(path, new_text, backup)
    ctx.action("switch_connection_string", command, executed=True,
               result={"backup": str(backup), "changes": changes})
    return ctx.result(Status.OK, f"{path}: {keys} now name {_show(new)} (was {_show(old)}); "
                      f"the old file is kept as {backup}. If the server's environment sets "
                      "DATABASE_URL, that wins over the file: change it there too",
                      evidence | {"executed": True, "backup": str(backup)})


def replace_atomically(path: Path, text: str, backup: Path) -> None:
    """Copy `path` to `backup` (mode and times kept), then write `text` to a temporary file
    in the same directory with the same mode and owner and rename it over `path`."""
    shutil.copy2(path, backup)
    info = path.stat()
    tmp = path.with_name(f".{path.name}.failover-{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, info.st_mode & 0o7777)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(PermissionError):
            os.chown(tmp, info.st_uid, info.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- steps 4-5: restart and verify ------------------------------------------------------------

def restart_service(ctx: RunContext, wait_s: float = thresholds.RESTART_WAIT_S) -> Finding:
    """§5.2 step 4 `systemctl restart fraiseql` (the target's restart_command) and step 5
    `curl /health`, waiting up to `wait_s` for it to answer healthy. Without execute=True
    and confirm the command is recorded, not run."""
    ok, why = applies(ctx)
    if not ok:
        return service_checks.restart.skip(ctx, f"no failover: {why}")
    reason = "the config names the promoted replica (§5.2 step 4)"
    if confirmed(ctx):
        if not promoted(ctx):
            return service_checks.restart(ctx, False, "the promotion failed: a restart would "
                                          "not move the server")
        return service_checks.restart(ctx, True, reason, wait_s=wait_s, step="§5.2 step 5",
                                      resolves=("service.health",))
    if ctx.execute:  # execute=True alone would let the restart run: record it instead
        command = ctx.target.get("restart_command")
        if command:
            print(repr(ctx.action("restart_service", str(command), executed=False)))
        return service_checks.restart.skip(ctx, f"not run ({_not_run_reason(ctx)})")
    return service_checks.restart(ctx, True, reason, wait_s=wait_s)


def verify_data_path(ctx: RunContext, probe_query: str | None = None) -> Finding:
    """§5.2 step 5 beyond `curl /health`: a GraphQL read that goes through PostgreSQL,
    now the promoted replica."""
    if not promoted(ctx):
        return service_checks.check_data_path.skip(ctx, "no failover ran")
    return service_checks.check_data_path(ctx, probe_query)


@check("failover.write_check")
def check_write(ctx: RunContext) -> Finding:
    """A replica answers reads too: only a write proves the new primary. A row written and
    read back as the application role on the promoted node, in a table made for it (by the
    admin role, which grants the application role INSERT and SELECT on it) and dropped
    after."""
    ok, why = applies(ctx)
    if not ok:
        return ctx.skip(why)
    shown = str(ctx.target.get("replica_database_url"))
    role = postgres.url_user(shown) or "(the URL's default user)"
    command = (f"on {shown}: CREATE TABLE public.{WRITE_CHECK_TABLE} (as the admin role), "
               f"GRANT INSERT, SELECT to {role}; INSERT a row and SELECT it back as {role}; "
               "DROP TABLE")
    if not promoted(ctx):
        ctx.action("write_check", command, executed=False)
        return ctx.skip("no promotion ran: nothing to write to")
    token = uuid.uuid4().hex
    table = sql.Identifier("public", WRITE_CHECK_TABLE)
    admin_url = (ctx.target.database_url("replica_admin_database")
                 if ctx.target.get("replica_admin_database_url") else None)
    owner_url = admin_url or ctx.target.database_url("replica_database")
    created = False
    try:
        with postgres.connect(owner_url, read_only=False) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, "
                                 "token text NOT NULL, incident text, at timestamptz NOT "
                                 "NULL DEFAULT now())").format(table))
            created = True
            if admin_url and postgres.url_user(shown):
                grantee = sql.Identifier(str(postgres.url_user(shown)))
                conn.execute(sql.SQL("GRANT INSERT, SELECT ON {} TO {}").format(table, grantee))
                conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                    sql.Identifier("public", f"{WRITE_CHECK_TABLE}_id_seq"), grantee))
        with postgres.connect(ctx.target.database_url("replica_database"),
                              read_only=False) as conn:
            written = postgres.one(conn, sql.SQL("INSERT INTO {} (token, incident) VALUES "
                                                 "(%s, %s) RETURNING id, at").format(table),
                                   (token, ctx.log.incident_id))
            back = postgres.one(conn, sql.SQL("SELECT token FROM {} WHERE id = %s").format(
                table), (written["id"],))
            node = postgres.one(conn, "SELECT pg_is_in_recovery() AS in_recovery, "
                                "inet_server_port() AS port, current_user AS role")
    except (postgres.ConnectionFailed, psycopg.Error) as exc:
        error = secrets.mask(postgres.first_line(exc))
        denied = isinstance(exc, psycopg.errors.InsufficientPrivilege)
        ctx.action("write_check", command, executed=True, result={"error": error})
        why_not = (f" The application role may not create a table here ({error}): give the "
                   "inventory replica_admin_database_url so the check can make one for it"
                   if denied and admin_url is None else "")
        return ctx.result(Status.CRITICAL, f"no write on the new primary: {error}.{why_not}",
                          {"executed": True, "error": error, "role": role},
                          "read the new primary's log; the application cannot write until "
                          "this works")
    finally:
        if created:
            with contextlib.suppress(postgres.ConnectionFailed, psycopg.Error), \
                    postgres.connect(owner_url, read_only=False) as conn:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    read_back = back.get("token") == token
    result = {"row_id": written["id"], "read_back": read_back, "role": node.get("role"),
              "in_recovery": node.get("in_recovery"), "port": node.get("port")}
    ctx.action("write_check", command, executed=True, result=result)
    if not read_back or node.get("in_recovery"):
        return ctx.result(Status.CRITICAL, "the row written on the new primary did not come "
                          "back", {"executed": True, **result})
    health = ctx.latest("service.restart")
    path = ctx.latest("graphql.data_path")
    serving = (health is not None and health.evidence.get("healthy")
               and path is not None and path.status is Status.OK)
    return ctx.result(Status.OK, f"the new primary takes writes: row {written['id']} written "
                      f"and read back as {node.get('role')} on port {node.get('port')}, then "
                      "the table dropped", {"executed": True, **result},
                      resolves=("failover.primary",) if serving else ())


# -- step 6: notify ---------------------------------------------------------------------------

@check("failover.notification")
def notification(ctx: RunContext) -> Finding:
    """§5.2 step 6 `curl -X POST https://slack.webhook/... -d '{"text":"Failover complete:
    Replica promoted"}'`: the message and where it goes. Once the replica was promoted it is
    sent through the target's apprise URLs (targets/notify.py); otherwise only recorded."""
    if not primary_down(ctx):
        return ctx.skip("no failover: nothing to announce")
    _, shown = _replica_url(ctx)
    new = _show(postgres.endpoint(shown))
    incident = f" ({ctx.log.incident_id})" if ctx.log.incident_id else ""
    if promoted(ctx):
        message = (f"Failover complete{incident}: replica {new} promoted, FraiseQL "
                   f"{ctx.target.fraiseql_url} restarted on it")
    elif applies(ctx)[0]:
        message = (f"Failover needed{incident}: the primary is down and the replica {new} is "
                   "fit; waiting for confirmation")
    else:
        message = f"Failover blocked{incident}: the primary is down; {applies(ctx)[1]}"
    from fraiseql_rb.targets import notify

    keys = notify.configured(ctx.target)
    if promoted(ctx) and keys:  # it happened: tell the team now, through apprise
        return _send_notification(ctx, message, keys)
    where = (f"the target's {', '.join(keys)} (apprise URLs, not shown)" if keys else
             "no channel is configured: §5.2 posts to a Slack webhook; add notify_env or "
             "notify_file (apprise URLs) to the target")
    return ctx.result(Status.INFO, f"notification (not sent here): {message!r} to {where}",
                      {"message": message, "channels": keys, "sent": False},
                      "send it (fraiseql-rb run --notify always), or post it yourself")


def _send_notification(ctx: RunContext, message: str, keys: list[str]) -> Finding:
    """Send §5.2's message through the target's apprise URLs (targets/notify.py). A channel
    that fails is a warning with its masked reason: the failover itself stands."""
    from fraiseql_rb.core.errors import RunbookError
    from fraiseql_rb.targets import notify

    try:
        deliveries = notify.send(notify.urls(ctx.target),
                                 f"fraiseql-rb: failover on {ctx.target.name}", message)
    except RunbookError as exc:
        return ctx.result(Status.WARNING, f"notification not sent: {exc}",
                          {"message": message, "channels": keys, "sent": False},
                          "fix the target's notify settings, then post the message yourself")
    failed = [d for d in deliveries if not d.sent]
    evidence = {"message": message, "channels": keys, "sent": not failed and bool(deliveries),
                "deliveries": [d.to_dict() for d in deliveries]}
    if failed or not deliveries:
        reasons = notify.failures(deliveries) or "no URL configured"
        return ctx.result(Status.WARNING, f"notification {message!r} not sent to "
                          f"{len(failed)} of {len(deliveries)} URL(s): {reasons}", evidence,
                          "post the message yourself and check the channel")
    return ctx.result(Status.INFO, f"notification sent: {message!r} to {len(deliveries)} "
                      "URL(s)", evidence)


# -- the diagnosis ----------------------------------------------------------------------------

def candidates(ctx: RunContext) -> list[Candidate]:
    """The root cause the recorded gates support, for `diagnosis.conclude`."""
    primary = ctx.latest("failover.primary")
    if primary is None or primary.status is Status.UNKNOWN:
        return []
    if not primary_down(ctx):
        health = ctx.latest("service.health")
        if health is not None and health.status is Status.OK:
            return [Candidate("none", 1.0, primary.summary, {"endpoint":
                                                             primary.evidence.get("endpoint")})]
        what = health.summary if health is not None else "the service was not checked"
        return [Candidate("primary_reachable_refused", 0.95,
                          f"{primary.summary}; yet the service is not healthy ({what})",
                          {"endpoint": primary.evidence.get("endpoint")})]
    replica = ctx.latest("failover.replica")
    if replica is None or replica.status is Status.UNKNOWN:
        return []
    ev = replica.evidence
    if not ev.get("configured") or not ev.get("reachable"):
        return [Candidate("replica_missing", 0.95, replica.summary,
                          {"configured": ev.get("configured")})]
    keep = {k: ev.get(k) for k in ("endpoint", "lag_bytes", "timeline", "reasons",
                                   "unmeasured")}
    if not ev.get("fit"):
        return [Candidate("primary_down_replica_unfit", 0.95, "; ".join(ev.get("reasons")
                                                                        or []), keep)]
    if promoted(ctx):
        write = ctx.latest("failover.write_check")
        proof = write.summary if write is not None else "no write was tried"
        return [Candidate("primary_down_promoted", 0.95,
                          f"{ctx.latest('failover.promote').summary}; {proof}", keep)]
    return [Candidate("primary_down_replica_fit", 0.9, replica.summary, keep)]
