"""Runbook §5.2 "Disaster Recovery Procedures": prove the RTO and the RPO by restoring.

The drill restores the newest base backup (`backup_dir/base/base-YYYYMMDDTHHMMSSZ/`, made by
`pg_basebackup -Ft -z -X stream`) plus the archived WAL (`wal_archive_dir`) into a scratch
cluster (`targets/scratch.py`), to the latest point or to `target_time`, starts it, checks the
schema and the marker row, optionally serves it with a stand-in FraiseQL server and asks its
`/health`, and measures:

- **RTO**: the machine time of the steps a real recovery needs (find the backup, extract it,
  configure recovery, replay until the database answers queries as a primary); time a person
  spends between notebook cells does not count;
- **RPO**: the newest committed transaction recovered against the newest on the source, read
  through a read-only session on the target at the drill's start. The same measure on both
  sides: commit timestamps (`pg_last_committed_xact()`, when `track_commit_timestamp` is on),
  else `max(at)` of the drill marker table `public.fraiseql_rb_marker`, else the newest
  `fraiseql_audit_logs."timestamp"`.

Both are judged against the §5.2 tier (`thresholds.DR_TIERS`). Every step is a finding with its
duration, and `timeline` lists them. Nothing on the target changes: the base backup and the
archive are only read (restore_command copies out of the archive), the restored cluster runs
with archive_mode off on its own port and socket, and the scratch space is removed when the
restore step ends, fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from psycopg.conninfo import conninfo_to_dict

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status, isoformat
from fraiseql_rb.core.runbooks import utc_timestamp
from fraiseql_rb.targets import postgres, scratch

BASE_DIR = "base"  # under backup_dir
BASE_NAME = re.compile(r"^base-(\d{8}T\d{6}Z)$")
SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
LABEL_WAL = re.compile(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", re.M)
LABEL_TIME = re.compile(r"^START TIME: (.+)$", re.M)
MARKER_TABLE = "public.fraiseql_rb_marker"
STANDIN_MODULE = "fraiseql_rb.sandbox.standin"  # run as a program, never imported here
SPACE_FACTOR = thresholds.DR_SCRATCH_SPACE_FACTOR
SERVER_WAIT_S = thresholds.DR_SERVER_START_WAIT_S
# the steps whose time makes the RTO: what an operator restoring for real goes through
RTO_STEPS = ("dr.base_backup", "dr.extract", "dr.configure", "dr.recovery")
# PostgreSQL's own words about the recovery, kept as evidence
RECOVERY_LOG = re.compile(
    r"FATAL|PANIC|ERROR|redo done|last completed transaction|recovery stopping|"
    r"consistent recovery state|archive recovery complete|selected new timeline|"
    r"restored log file|cannot stat|No such file|recovery target|starting point-in-time")

# What the measure of "newest committed" reads, on the source and on the restored database.
NEWEST = {
    "commit_timestamp": ("SELECT timestamp AS newest FROM pg_last_committed_xact()",
                         "the newest commit timestamp (track_commit_timestamp)"),
    "marker": (f"SELECT max(at) AS newest FROM {MARKER_TABLE}",
               f"max(at) of {MARKER_TABLE}"),
    "audit": ('SELECT max("timestamp") AS newest FROM public.fraiseql_audit_logs',
              'the newest fraiseql_audit_logs."timestamp"'),
}
TABLES_SQL = """
SELECT n.nspname || '.' || c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1"""


@dataclass
class BaseBackup:
    """One `base-YYYYMMDDTHHMMSSZ/` directory."""

    path: Path
    taken_at: datetime  # from the name (pg_basebackup's start, UTC)
    label: str = ""  # backup_label from base.tar.gz

    @property
    def start_segment(self) -> str | None:
        match = LABEL_WAL.search(self.label)
        return match.group(1) if match else None

    @property
    def compressed_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("*.tar*"))


@dataclass
class Step:
    check: str
    what: str
    started_at: datetime
    duration_s: float
    status: str


@dataclass
class Drill:
    """What the drill's steps learn, handed from one step to the next."""

    tier: thresholds.Tier
    target_time: datetime | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    backup: BaseBackup | None = None
    steps: list[Step] = field(default_factory=list)
    method: str | None = None  # key of NEWEST used on both sides
    source_newest: datetime | None = None
    recovered_newest: datetime | None = None
    source_tables: list[str] | None = None
    restored_bytes: int = 0
    extract_s: float | None = None
    answered: bool = False  # the restored database answered queries as a primary
    missing_segments: list[str] = field(default_factory=list)
    recovery_log: list[str] = field(default_factory=list)
    restored: Any = field(default=None, repr=False)  # the running scratch cluster
    data_dir: Path | None = None  # where the backup is restored (in scratch space)

    @property
    def rto_s(self) -> float | None:
        if not self.answered:
            return None
        return round(sum(s.duration_s for s in self.steps if s.check in RTO_STEPS), 3)

    def step(self, ctx: RunContext, what: str, started: float, started_at: datetime,
             finding: Finding) -> Finding:
        """Note a step's duration and status, and put the duration in its evidence."""
        duration = round(time.monotonic() - started, 3)
        finding.evidence.setdefault("duration_s", duration)
        self.steps.append(Step(finding.check, what, started_at, duration, str(finding.status)))
        with contextlib.suppress(Exception):
            ctx.log.save()
        return finding


def begin(tier: int = thresholds.DR_DEFAULT_TIER, target_time: str | None = None) -> Drill:
    """The drill's state; `target_time` is parsed as `-p` checked it ([timestamp])."""
    moment = utc_timestamp(target_time) if target_time else None
    return Drill(thresholds.DR_TIERS[int(tier)], moment)


# -- step 1: the base backup ---------------------------------------------------------------

def base_backups(backup_dir: Path) -> list[BaseBackup]:
    """Every base backup under backup_dir/base, newest first."""
    found = []
    for path in (backup_dir / BASE_DIR).glob("base-*"):
        match = BASE_NAME.match(path.name)
        if match and path.is_dir():
            taken = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            found.append(BaseBackup(path, taken))
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def read_label(backup: BaseBackup) -> str:
    """backup_label from base.tar.gz (read, never extracted to the target's disk)."""
    with tarfile.open(backup.path / "base.tar.gz", "r:gz") as tar:
        for member in tar:
            if member.name.lstrip("./") == "backup_label":
                handle = tar.extractfile(member)
                return handle.read().decode(errors="replace") if handle else ""
    raise ValueError(f"{backup.path.name}/base.tar.gz holds no backup_label: not a base backup")


def _timed(ctx: RunContext, drill: Drill, what: str, func: Any, *args: Any) -> Finding:
    started, started_at = time.monotonic(), datetime.now(UTC)
    finding = func(ctx, drill, *args)
    return drill.step(ctx, what, started, started_at, finding)


@check("dr.base_backup")
def _locate(ctx: RunContext, drill: Drill) -> Finding:
    directory = ctx.target.get("backup_dir")
    if not directory:
        return ctx.result(Status.UNKNOWN, "the target names no backup_dir: no base backup to "
                          "restore", {}, "add backup_dir to the inventory")
    backups = base_backups(Path(directory))
    usable = [b for b in backups if drill.target_time is None or b.taken_at < drill.target_time]
    evidence: dict[str, Any] = {"backup_dir": str(directory), "base_backups": len(backups),
                                "target_time": isoformat(drill.target_time)
                                if drill.target_time else None}
    if not usable:
        why = (f"none taken before target_time {isoformat(drill.target_time)}"
               if backups and drill.target_time else f"none under {directory}/{BASE_DIR}")
        return ctx.result(Status.CRITICAL, f"no base backup to restore: {why}", evidence,
                          "take one now (pg_basebackup -D backup_dir/base/base-$(date -u "
                          "+%Y%m%dT%H%M%SZ) -Ft -z -X stream -c fast) and schedule it daily")
    backup = usable[0]
    if not (backup.path / "base.tar.gz").is_file():
        return ctx.result(Status.CRITICAL, f"{backup.path.name} has no base.tar.gz",
                          {**evidence, "backup": str(backup.path),
                           "files": sorted(p.name for p in backup.path.iterdir())},
                          "take a new base backup in tar format (-Ft -z)")
    backup.label = read_label(backup)
    drill.backup = backup
    age_h = (drill.started_at - backup.taken_at).total_seconds() / 3600
    evidence.update(backup=backup.path.name, taken_at=isoformat(backup.taken_at),
                    age_hours=round(age_h, 1), compressed_bytes=backup.compressed_bytes,
                    start_segment=backup.start_segment,
                    manifest=(backup.path / "backup_manifest").is_file())
    return ctx.result(Status.OK, f"restoring {backup.path.name} ({age_h:.1f} h old, "
                      f"{backup.compressed_bytes / 1e6:.1f} MB compressed)", evidence)


def locate_backup(ctx: RunContext, drill: Drill) -> Finding:
    """Step 1: the newest base backup (for a target_time, the newest taken before it)."""
    return _timed(ctx, drill, "find the newest base backup", _locate)


# -- step 2: the archive holds every segment since the backup --------------------------------

def _segment_number(name: str, per_xlogid: int) -> tuple[int, int]:
    match = SEGMENT.match(name)
    assert match
    return int(match.group(1), 16), int(match.group(2), 16) * per_xlogid + int(match.group(3),
                                                                               16)


def _segment_name(timeline: int, number: int, per_xlogid: int) -> str:
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


def archive_gaps(archive: Path, start_segment: str) -> tuple[list[str], list[str]]:
    """(segments in the archive from the backup's first on, the ones missing between them).

    A segment counts on any timeline at or after the backup's (a failover continues the
    numbering on the next timeline). The segment size is read from an archived segment."""
    names = sorted(p.name for p in archive.iterdir() if SEGMENT.match(p.name))
    if not names:
        return [], [start_segment]
    size = (archive / names[-1]).stat().st_size or 16 * 1024 * 1024
    per_xlogid = 0x100000000 // size
    timeline, first = _segment_number(start_segment, per_xlogid)
    numbers: dict[int, str] = {}
    for name in names:
        tli, number = _segment_number(name, per_xlogid)
        if tli >= timeline and number >= first:
            numbers.setdefault(number, name)
    if not numbers:
        return [], [start_segment]
    missing = [_segment_name(timeline, n, per_xlogid)
               for n in range(first, max(numbers) + 1) if n not in numbers]
    return [numbers[n] for n in sorted(numbers)], missing


@check("dr.wal_archive")
def _archive(ctx: RunContext, drill: Drill) -> Finding:
    directory = ctx.target.get("wal_archive_dir")
    if drill.backup is None:
        return ctx.skip("no base backup was found, so there is no WAL to follow from")
    if not directory or not Path(directory).is_dir():
        return ctx.result(Status.CRITICAL if directory else Status.UNKNOWN,
                          f"no WAL archive at {directory}" if directory else
                          "the target names no wal_archive_dir: the restore can only reach "
                          "the end of the base backup", {"wal_archive_dir": directory},
                          "add wal_archive_dir to the inventory (§5.1 archive_command's "
                          "destination)")
    start = drill.backup.start_segment
    if start is None:
        return ctx.result(Status.UNKNOWN, "backup_label names no start WAL segment",
                          {"label": drill.backup.label[:300]})
    present, missing = archive_gaps(Path(directory), start)
    drill.missing_segments = missing
    evidence = {"wal_archive_dir": directory, "start_segment": start,
                "segments": len(present), "newest": present[-1] if present else None,
                "missing": missing[:20], "missing_count": len(missing)}
    if missing:
        return ctx.result(Status.CRITICAL,
                          f"the archive misses {len(missing)} WAL segment(s) since the base "
                          f"backup, first {missing[0]}: recovery stops there and everything "
                          "committed after it is lost", evidence,
                          "find why archive_command skipped it (pg_stat_archiver, the server "
                          "log); take a new base backup now so the next restore does not "
                          "need it")
    return ctx.result(Status.OK, f"{len(present)} WAL segments in the archive from {start} to "
                      f"{present[-1] if present else start}, none missing", evidence)


def check_archive(ctx: RunContext, drill: Drill) -> Finding:
    """Step 2: every WAL segment from the backup's start to the newest archived is there."""
    return _timed(ctx, drill, "check the WAL archive for gaps", _archive)


# -- step 3: the source's newest commit (read-only) ------------------------------------------

def choose_method(conn: Any) -> str | None:
    """The first measure of "newest committed" this database can give."""
    row = conn.execute("SELECT current_setting('track_commit_timestamp') = 'on' AS ts, "
                       "to_regclass(%s) IS NOT NULL AND has_table_privilege(%s, 'SELECT') "
                       "AS marker, to_regclass('public.fraiseql_audit_logs') IS NOT NULL AND "
                       "has_table_privilege('public.fraiseql_audit_logs', 'SELECT') AS audit",
                       (MARKER_TABLE, MARKER_TABLE)).fetchone()
    for method, usable in (("commit_timestamp", row[0]), ("marker", row[1]),
                           ("audit", row[2])):
        if usable:
            return method
    return None


def newest(conn: Any, method: str) -> datetime | None:
    value = conn.execute(NEWEST[method][0]).fetchone()[0]
    return value.astimezone(UTC) if value is not None else None


def tables(conn: Any) -> list[str]:
    return [row[0] for row in conn.execute(TABLES_SQL).fetchall()]


@check("dr.source")
def _source(ctx: RunContext, drill: Drill) -> Finding:
    url = ctx.target.database_url()
    with postgres.session(url) as conn:
        drill.method = choose_method(conn)
        drill.source_tables = tables(conn)
        drill.source_newest = newest(conn, drill.method) if drill.method else None
        archive_timeout = conn.execute("SELECT current_setting('archive_timeout')").fetchone()[0]
    evidence = {"database": conninfo_to_dict(url).get("dbname"), "measure": drill.method,
                "newest_commit": isoformat(drill.source_newest) if drill.source_newest else None,
                "tables": len(drill.source_tables), "archive_timeout": archive_timeout}
    if drill.method is None:
        return ctx.result(Status.UNKNOWN, "the source offers no measure of its newest commit "
                          "(track_commit_timestamp off, no readable marker or audit table): "
                          "the RPO cannot be measured", evidence,
                          "set track_commit_timestamp = on, or grant SELECT on "
                          f"{MARKER_TABLE} to the inventory's role")
    return ctx.result(Status.INFO, f"source: newest commit {evidence['newest_commit']} "
                      f"({NEWEST[drill.method][1]}), {len(drill.source_tables)} tables",
                      evidence)


def read_source(ctx: RunContext, drill: Drill) -> Finding:
    """Step 3: what the source holds now (read-only): its newest commit and its tables."""
    return _timed(ctx, drill, "read the source's newest commit", _source)


# -- step 4: the restore itself -----------------------------------------------------------

def extract(backup: BaseBackup, data_dir: Path) -> int:
    """base.tar.gz into data_dir and pg_wal.tar.gz (if any) into its pg_wal; bytes written."""
    data_dir.mkdir(mode=0o700)
    written = 0
    for archive, into in ((backup.path / "base.tar.gz", data_dir),
                          (backup.path / "pg_wal.tar.gz", data_dir / "pg_wal")):
        if not archive.is_file():
            continue
        into.mkdir(mode=0o700, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                tar.extract(member, into, filter="data")
                written += member.size if member.isfile() else 0
    data_dir.chmod(0o700)
    return written


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configure_recovery(data_dir: Path, archive: Path, target_time: datetime | None) -> str:
    """Recovery settings for a scratch restore; returns the restore_command written.

    restore_command only copies out of the archive. The scratch cluster adds port, socket,
    hba file and archive_mode=off on its command line; here what that cannot say: no
    synchronous standby to wait for, and a postgresql.conf when the backup holds none (a
    Debian layout keeps it in /etc)."""
    text = str(archive)
    if any(c in text for c in "\"$`\\\n'"):
        raise ValueError(f"the archive path {text!r} holds a quote, $ or a backslash: "
                         "restore_command cannot quote it safely")
    command = f'cp "{text}/%f" "%p"'
    for leftover in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        (data_dir / leftover).unlink(missing_ok=True)
    (data_dir / "postgresql.conf").touch()
    lines = ["", "# fraiseql-rb disaster-recovery-drill: a scratch restore, never the target",
             f"restore_command = {_conf_string(command)}",
             "recovery_target_timeline = 'latest'", "synchronous_standby_names = ''",
             "archive_mode = off"]
    if target_time is not None:
        moment = target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        lines += [f"recovery_target_time = {_conf_string(moment)}",
                  "recovery_target_action = 'promote'", "recovery_target_inclusive = on"]
    with (data_dir / "postgresql.auto.conf").open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    (data_dir / "recovery.signal").touch()
    return command


def _log_lines(logfile: Path, limit: int = 40) -> list[str]:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in logfile.read_text(errors="replace").splitlines()
                 if RECOVERY_LOG.search(ln)]
        restored = [ln for ln in lines if "restored log file" in ln]
        others = [ln for ln in lines if "restored log file" not in ln]
        kept = others[-limit:]
        if restored:  # the first and the last segment replayed say how far it went
            kept = [restored[0], *([restored[-1]] if len(restored) > 1 else []), *kept]
        return [secrets.mask(ln) for ln in kept]
    return []


def _wait_promoted(sc: scratch.ScratchCluster, deadline: float) -> None:
    """Until the restored server answers as a primary; ScratchError with its log if it
    stops or the deadline passes."""
    while True:
        try:
            with sc.connect("postgres") as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
        except Exception as exc:  # noqa: BLE001 - a dying server: its log says why
            if not (sc.pgdata / "postmaster.pid").exists() or time.monotonic() > deadline:
                raise scratch.ScratchError(f"the restored server stopped during recovery: "
                                           f"{sc.log_tail() or exc}") from None
        if time.monotonic() > deadline:
            raise scratch.ScratchError("recovery did not finish within the tier's RTO: "
                                       f"{sc.log_tail()}")
        time.sleep(0.2)


def restore(ctx: RunContext, drill: Drill, start_server: bool = False) -> list[Finding]:
    """Steps 4-8 inside one scratch space: extract, configure, recover, schema and marker,
    and optionally the stand-in server. Whatever happens, the scratch cluster is stopped and
    its directories removed before this returns (or re-raises KeyboardInterrupt)."""
    if drill.backup is None:
        return [_extract.skip(ctx, "no base backup to restore")]
    archive = Path(ctx.target.get("wal_archive_dir") or drill.backup.path)
    deadline = time.monotonic() + drill.tier.rto_s
    findings: list[Finding] = []
    with contextlib.ExitStack() as stack:  # unwinds: server stopped, then space removed
        stack.callback(setattr, drill, "restored", None)
        findings.append(_timed(ctx, drill, "extract the base backup", _extract, stack))
        if findings[-1].status != Status.OK:
            return findings
        data_dir = drill.data_dir
        findings.append(_timed(ctx, drill, "write the recovery settings", _configure,
                               data_dir, archive))
        if findings[-1].status != Status.OK:
            return findings
        findings.append(_timed(ctx, drill, "start and replay WAL until it answers",
                               _recover, data_dir, stack, deadline))
        sc = drill.restored
        if sc is None:
            return findings
        findings.append(_timed(ctx, drill, "check the schema", _schema, sc))
        findings.append(_timed(ctx, drill, "check the marker row", _marker, sc))
        if start_server:
            findings.append(_timed(ctx, drill, "serve it and ask /health", _server, sc))
        else:
            findings.append(_server.skip(ctx, "start_server is False"))
    return findings


@check("dr.extract")
def _extract(ctx: RunContext, drill: Drill, stack: contextlib.ExitStack) -> Finding:
    assert drill.backup is not None
    try:
        room = stack.enter_context(scratch.space("dr-drill"))
    except scratch.ScratchError as exc:
        return ctx.result(Status.CRITICAL, f"no scratch space to restore into: {exc}",
                          {"scratch": scratch_root()}, f"set {scratch.ENV_VAR} to a "
                          "directory on a disk large enough for the database")
    data_dir = drill.data_dir = room / "pgdata"
    manifest = drill.backup.path / "backup_manifest"
    needed = None
    with contextlib.suppress(OSError, ValueError):
        files = json.loads(manifest.read_text()).get("Files", [])
        needed = sum(int(f.get("Size", 0)) for f in files)
    free = shutil.disk_usage(data_dir.parent).free
    evidence: dict[str, Any] = {"scratch": str(data_dir.parent), "free_bytes": free,
                                "backup_bytes": needed}
    if needed is not None and needed * SPACE_FACTOR > free:
        return ctx.result(Status.CRITICAL,
                          f"not enough scratch space: the backup needs {needed / 1e6:.0f} MB "
                          f"(× {SPACE_FACTOR:g} for WAL), {free / 1e6:.0f} MB free in "
                          f"{data_dir.parent}", evidence,
                          f"point {scratch.ENV_VAR} at a larger disk and rerun")
    started = time.monotonic()
    try:
        written = extract(drill.backup, data_dir)
    except (OSError, tarfile.TarError, EOFError) as exc:
        return ctx.result(Status.CRITICAL, f"cannot extract {drill.backup.path.name}: "
                          f"{type(exc).__name__}: {exc}", evidence,
                          "the base backup is damaged: take a new one now and find what "
                          "damaged this one (disk, a copy cut short)")
    drill.extract_s = time.monotonic() - started
    drill.restored_bytes = written
    rate = written / 1e6 / drill.extract_s if drill.extract_s > 0 else None
    evidence.update(bytes=written, mb_per_s=round(rate, 1) if rate else None)
    return ctx.result(Status.OK, f"extracted {written / 1e6:.1f} MB in {drill.extract_s:.1f} s"
                      f"{f' ({rate:.0f} MB/s)' if rate else ''} into scratch space", evidence)


@check("dr.configure")
def _configure(ctx: RunContext, drill: Drill, data_dir: Path, archive: Path) -> Finding:
    command = configure_recovery(data_dir, archive, drill.target_time)
    target = isoformat(drill.target_time) if drill.target_time else "latest"
    return ctx.result(Status.OK, f"recovery to {target}: restore_command = {command}",
                      {"restore_command": command, "recovery_target": target,
                       "recovery_target_action": "promote", "archive_mode": "off"})


@check("dr.recovery")
def _recover(ctx: RunContext, drill: Drill, data_dir: Path, stack: contextlib.ExitStack,
             deadline: float) -> Finding:
    budget = max(1.0, deadline - time.monotonic())
    evidence: dict[str, Any] = {"rto_budget_s": drill.tier.rto_s}
    try:
        sc = stack.enter_context(scratch.cluster("dr-drill", data_dir=data_dir,
                                                 start_timeout_s=budget))
        try:
            _wait_promoted(sc, deadline)
        finally:
            drill.recovery_log = _log_lines(sc.logfile)
        with sc.connect("postgres") as conn:
            drill.recovered_newest = newest(conn, "commit_timestamp") if (
                drill.method == "commit_timestamp") else None
    except scratch.ScratchError as exc:
        evidence["postgresql_log"] = drill.recovery_log or [secrets.mask(str(exc))]
        gap = (f"; the archive misses {drill.missing_segments[0]}"
               if drill.missing_segments else "")
        return ctx.result(Status.CRITICAL, f"the restore failed: {_decisive(drill, exc)}"
                          f"{gap}", evidence,
                          "read PostgreSQL's lines above: a missing WAL segment needs a newer "
                          "base backup; a target_time before the backup's end needs an older "
                          "one; fix the cause and rerun the drill")
    drill.answered = True
    drill.restored = sc
    evidence["postgresql_log"] = drill.recovery_log
    stopped = _stopped_at_gap(drill)
    if stopped:
        evidence["stopped_before"] = stopped
        return ctx.result(Status.CRITICAL,
                          f"recovery ended early: WAL segment {stopped} is missing from the "
                          "archive, so everything after it is lost", evidence,
                          "take a new base backup now; find why archive_command skipped it")
    return ctx.result(Status.OK, "the restored database answers as a primary "
                      f"(port {sc.port}, recovery ended)", evidence)


def _decisive(drill: Drill, exc: Exception) -> str:
    """PostgreSQL's own reason for a failed restore: its first FATAL or PANIC line (without
    the log prefix), else the error as it came."""
    text = str(exc)
    for line in [*drill.recovery_log, *text.split(" | ")]:
        match = re.search(r"\b(FATAL|PANIC):\s+(.*)", line)
        if match:
            return secrets.mask(f"{match.group(1)}: {match.group(2).strip()}")
    return secrets.mask(text)


def _stopped_at_gap(drill: Drill) -> str | None:
    """The missing segment recovery asked for and did not get, when there is one."""
    for segment in drill.missing_segments:
        if any(segment in line for line in drill.recovery_log):
            return segment
    return drill.missing_segments[0] if drill.missing_segments else None


@check("dr.schema")
def _schema(ctx: RunContext, drill: Drill, sc: scratch.ScratchCluster) -> Finding:
    dbname = conninfo_to_dict(ctx.target.database_url()).get("dbname") or "postgres"
    with sc.connect(dbname) as conn:
        restored = tables(conn)
    evidence: dict[str, Any] = {"database": dbname, "tables": len(restored)}
    if drill.source_tables is None:
        return ctx.result(Status.OK if restored else Status.CRITICAL,
                          f"{len(restored)} tables restored (the source was not read)",
                          evidence)
    missing = sorted(set(drill.source_tables) - set(restored))
    evidence.update(source_tables=len(drill.source_tables), missing=missing[:20])
    if not restored:
        return ctx.result(Status.CRITICAL, f"the restored {dbname} holds no table", evidence,
                          "the base backup predates the schema: check what it was taken from")
    if missing:
        return ctx.result(Status.WARNING,
                          f"{len(missing)} of the source's tables are not in the restore: "
                          f"{', '.join(missing[:5])}", evidence,
                          "tables created after the recovery point are expected to be "
                          "missing; otherwise the backup is not of this database")
    return ctx.result(Status.OK, f"all {len(drill.source_tables)} tables of the source are "
                      "in the restore", evidence)


@check("dr.marker")
def _marker(ctx: RunContext, drill: Drill, sc: scratch.ScratchCluster) -> Finding:
    dbname = conninfo_to_dict(ctx.target.database_url()).get("dbname") or "postgres"
    with sc.connect(dbname) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              (MARKER_TABLE,)).fetchone()[0]
        rows, newest_at = conn.execute(f"SELECT count(*), max(at) FROM {MARKER_TABLE}"
                                       ).fetchone() if exists else (0, None)
        if drill.method in ("marker", "audit"):
            drill.recovered_newest = newest(conn, drill.method)
    evidence = {"table": MARKER_TABLE, "rows": rows,
                "newest": isoformat(newest_at.astimezone(UTC)) if newest_at else None,
                "target_time": isoformat(drill.target_time) if drill.target_time else None}
    if not exists or not rows:
        status = Status.CRITICAL if drill.method == "marker" else Status.WARNING
        return ctx.result(status, f"no marker row in the restore ({MARKER_TABLE} "
                          f"{'is empty' if exists else 'is missing'})", evidence,
                          "write a marker row after each base backup (INSERT INTO "
                          f"{MARKER_TABLE} (note) VALUES ('...')) so a restore can prove "
                          "it reached past the backup")
    if drill.target_time is not None and newest_at.astimezone(UTC) > drill.target_time:
        return ctx.result(Status.CRITICAL, f"the restore went past target_time: a marker row "
                          f"of {evidence['newest']} is there", evidence,
                          "recovery_target_time was not honoured: read the recovery log")
    return ctx.result(Status.OK, f"{rows} marker row(s), the newest of {evidence['newest']}",
                      evidence)


@check("dr.server")
def _server(ctx: RunContext, drill: Drill, sc: scratch.ScratchCluster) -> Finding:
    """The stand-in FraiseQL server on the restored database, as a program (this layer does
    not import the sandbox), and its /health."""
    dbname = conninfo_to_dict(ctx.target.database_url()).get("dbname") or "postgres"
    port = _free_port()
    config = sc.directory / "standin.toml"
    url = (f"postgresql://{sc.superuser}@/{dbname}?host={sc.socket_dir}&port={sc.port}")
    config.write_text(f'bind_addr = "127.0.0.1:{port}"\ndatabase_url = "{url}"\n'
                      "cors_enabled = false\n")
    log = sc.directory / "standin.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", STANDIN_MODULE, "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=secrets.clean_environment(),
                                start_new_session=True)
    try:
        body, status = None, None
        deadline = time.monotonic() + SERVER_WAIT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                            timeout=thresholds.HTTP_TIMEOUT_S) as resp:
                    status, body = resp.status, resp.read(2000).decode(errors="replace")
                    break
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read(2000).decode(errors="replace")
                break
            except OSError:
                time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=SERVER_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    evidence = {"health_status": status, "body": secrets.mask(body or "")[:300]}
    if status is None:
        tail = secrets.mask(log.read_text(errors="replace").strip()[-400:])
        return ctx.result(Status.UNKNOWN, f"the stand-in server did not answer /health within "
                          f"{SERVER_WAIT_S:g} s: {tail or 'no output'}", evidence,
                          "run the stand-in by hand against the restored cluster to see why")
    if status != 200:
        return ctx.result(Status.CRITICAL, f"/health on the restored database answered "
                          f"{status}", evidence, "read the body: the database part names why")
    return ctx.result(Status.OK, "a FraiseQL stand-in on the restored database answers "
                      "/health 200", evidence)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- step 9-11: the verdicts ---------------------------------------------------------------

@check("dr.rto")
def check_rto(ctx: RunContext, drill: Drill) -> Finding:
    """RTO measured: the time of the recovery steps until the database answered."""
    tier = drill.tier
    parts = {s.check: s.duration_s for s in drill.steps if s.check in RTO_STEPS}
    evidence = {"rto_s": drill.rto_s, "tier": tier.number, "tier_rto_s": tier.rto_s,
                "steps_s": parts, "restored_bytes": drill.restored_bytes}
    if drill.rto_s is None:
        return ctx.result(Status.CRITICAL, "no RTO: the restore never reached a database "
                          "answering queries", evidence, "fix the failed step above and rerun")
    within = drill.rto_s <= tier.rto_s
    return ctx.result(Status.OK if within else Status.CRITICAL,
                      f"RTO measured {drill.rto_s:.1f} s against tier {tier.number}'s "
                      f"{tier.rto_s:g} s{'' if within else ': missed'}", evidence,
                      None if within else "restore faster (a newer base backup means less WAL "
                      "to replay; faster disks) or agree a lower tier")


@check("dr.rpo")
def check_rpo(ctx: RunContext, drill: Drill) -> Finding:
    """RPO measured: the newest commit recovered against the newest on the source."""
    tier = drill.tier
    evidence: dict[str, Any] = {
        "measure": drill.method, "tier": tier.number, "tier_rpo_s": tier.rpo_s,
        "source_newest": isoformat(drill.source_newest) if drill.source_newest else None,
        "recovered_newest": isoformat(drill.recovered_newest) if drill.recovered_newest
        else None, "target_time": isoformat(drill.target_time) if drill.target_time else None}
    if drill.target_time is not None:
        if drill.recovered_newest is None:
            return ctx.result(Status.UNKNOWN, "point-in-time restore: the newest recovered "
                              "commit could not be read", evidence)
        late = drill.recovered_newest > drill.target_time
        return ctx.result(Status.CRITICAL if late else Status.INFO,
                          f"point-in-time restore to {evidence['target_time']}: newest "
                          f"recovered commit {evidence['recovered_newest']}"
                          f"{' is after the target' if late else ''} (the RPO against the "
                          "source is not measured by a restore to an earlier point)", evidence)
    if drill.source_newest is None or drill.recovered_newest is None:
        return ctx.result(Status.UNKNOWN, "the RPO could not be measured: the newest commit "
                          f"of the {'source' if drill.source_newest is None else 'restore'} "
                          "is unknown", evidence,
                          "see the source and marker steps above")
    rpo = max(0.0, (drill.source_newest - drill.recovered_newest).total_seconds())
    evidence["rpo_s"] = round(rpo, 3)
    within = rpo <= tier.rpo_s
    return ctx.result(Status.OK if within else Status.CRITICAL,
                      f"RPO measured {rpo:.1f} s (committed work a restore now would lose) "
                      f"against tier {tier.number}'s {tier.rpo_s:g} s"
                      f"{'' if within else ': missed'}", evidence,
                      None if within else "set archive_timeout below the tier's RPO (WAL is "
                      "archived only when a segment closes) or stream WAL to the archive "
                      "(pg_receivewal)")


@check("dr.timeline")
def timeline(ctx: RunContext, drill: Drill) -> Finding:
    """Every step with its start and duration: the drill's timeline."""
    rows = [{"step": s.what, "check": s.check, "started_at": isoformat(s.started_at),
             "duration_s": s.duration_s, "status": s.status, "in_rto": s.check in RTO_STEPS}
            for s in drill.steps]
    return ctx.result(Status.INFO, f"{len(rows)} steps, {sum(r['duration_s'] for r in rows):.1f}"
                      f" s in all; RTO {drill.rto_s if drill.rto_s is not None else '-'} s",
                      {"steps": rows}, table=pd.DataFrame(rows))


def scratch_root() -> str:
    """Where the drill's scratch space lives (FRAISEQL_RB_SCRATCH or the temp directory)."""
    return str(scratch.root()) + (f" (from ${scratch.ENV_VAR})"
                                  if os.environ.get(scratch.ENV_VAR) else "")
