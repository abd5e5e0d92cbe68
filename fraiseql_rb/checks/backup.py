"""Backups as runbook §5.1 defines them: a daily dump and a continuous WAL archive, each
proven rather than assumed. The test restore itself belongs to the DR runbooks.

- `backup.recent_dump`: the newest `fraiseql-YYYYMMDD.{sql,dump}` in `backup_dir`, its age
  against §5.1's daily schedule (and the recovery tier's RPO, as context), its format read
  from its content: a custom (`PGDMP`) or tar archive is listed with `pg_restore --list`; a
  plain SQL dump cannot be (pg_restore reads only the archive formats, so §5.1's
  `pg_restore --list fraiseql-20260126.sql` always fails), so its header and the
  `-- PostgreSQL database dump complete` line pg_dump writes last are checked instead.
- `backup.wal_ready`: WAL segments waiting for archive_command (`.ready` files).
- `backup.wal_continuity`: every segment name in `wal_archive_dir` from the newest base
  backup's start WAL (its `backup_manifest`) to the newest archived one, with no gap.
- `backup.current_rpo`: the work that would be lost now: time since the newest WAL safely
  archived, when WAL has been written since, against the tier's RPO.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import pgbin, postgres

DUMP_PATTERNS = ("fraiseql-*.dump", "fraiseql-*.sql", "fraiseql-*.backup")
PLAIN_HEADER = b"-- PostgreSQL database dump"
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"
WHY_NOT_PG_RESTORE = ("pg_restore reads only pg_dump's archive formats (custom -Fc, "
                      "directory, tar); a plain SQL dump is a psql script, so §5.1's "
                      "`pg_restore --list fraiseql-YYYYMMDD.sql` can never check it: it is "
                      "checked by its header and pg_dump's closing line, and by the test "
                      "restore with psql")
DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024  # PostgreSQL's default (initdb --wal-segsize)
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.(?:gz|bz2|lz4|zst|xz))?$")
BACKUP_LABEL_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")


def pg_restore() -> str:
    """pg_restore from the same installation the sandbox uses (any 10+ reads our dumps)."""
    return str(pgbin.pg_bin("pg_restore"))


def tier_of(tier: int | None) -> thresholds.Tier:
    """§5.2's recovery tier (1..4), the default one when None."""
    number = thresholds.DR_DEFAULT_TIER if tier is None else int(tier)
    if number not in thresholds.DR_TIERS:
        raise ValueError(f"tier must be 1..4, got {tier!r}")
    return thresholds.DR_TIERS[number]


def human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# -- dumps ------------------------------------------------------------------------------------


def dump_format(path: Path) -> str:
    """`custom` (PGDMP magic), `tar` (ustar), `plain` (SQL text), `directory` or `unknown`,
    read from the content, never the name."""
    if path.is_dir():
        return "directory" if (path / "toc.dat").is_file() else "unknown"
    with path.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PGDMP"):
        return "custom"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.lstrip().startswith(b"--") or head.lstrip().upper().startswith((b"SET ", b"CREATE")):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return "unknown"
        return "plain"
    return "unknown"


def dumps(backup_dir: Path) -> list[Path]:
    """The dumps in backup_dir, newest (by modification time) first."""
    return sorted((p for pattern in DUMP_PATTERNS for p in backup_dir.glob(pattern)
                   if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)


def newest_per_format(found: list[Path]) -> list[Path]:
    """The newest dump of each format, newest first (`found` is newest first)."""
    seen: dict[str, Path] = {}
    for path in found:
        seen.setdefault(dump_format(path), path)
    return list(seen.values())


def plain_dump_complete(path: Path) -> tuple[bool, str]:
    """A plain dump starts with pg_dump's header and ends with its closing comment line."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(4096)
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    if PLAIN_HEADER not in head:
        return False, "no '-- PostgreSQL database dump' header: not written by pg_dump"
    if PLAIN_TRAILER not in tail:
        return False, ("no '-- PostgreSQL database dump complete' line at the end: the dump "
                       "is truncated (pg_dump stopped or the disk filled)")
    return True, "pg_dump's header and closing line are present"


def list_archive(path: Path, timeout_s: float = thresholds.COMMAND_TIMEOUT_S
                 ) -> tuple[bool, int, str]:
    """`pg_restore --list`: (readable, TOC entries, pg_restore's last error line)."""
    listing = subprocess.run([pg_restore(), "--list", str(path)], capture_output=True,
                             text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                             env=secrets.clean_environment())
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    reason = (listing.stderr.strip().splitlines() or [""])[-1]
    return listing.returncode == 0, entries, reason


@check("backup.recent_dump")
def check_recent_dump(ctx: RunContext,
                      max_age_hours: float = thresholds.BACKUP_MAX_AGE_HOURS,
                      tier: int | None = None) -> Finding:
    """§5.1 "Full backup (daily, 02:00 UTC)" and "Verify backups": the newest dump's age and
    whether it is a whole dump in a format we can read."""
    directory = ctx.target.get("backup_dir")
    if not directory:
        return ctx.result(Status.UNKNOWN,
                          "the target names no backup_dir, so backups cannot be checked", {},
                          "add backup_dir to the inventory")
    base = Path(directory)
    found = dumps(base)
    now = time.time()
    table = pd.DataFrame([{"file": p.name, "format": dump_format(p), "bytes": p.stat().st_size,
                           "age_hours": round((now - p.stat().st_mtime) / 3600, 1)}
                          for p in found[:10]])
    if not found:
        return ctx.result(Status.CRITICAL,
                          f"no dump in {base}", {"backup_dir": str(base)},
                          "run the daily pg_dump (§5.1) and check the cron job")
    newest = found[0]
    age_s = now - newest.stat().st_mtime
    rpo = tier_of(tier)
    evidence: dict[str, Any] = {
        "newest": newest.name, "path": str(newest), "format": dump_format(newest),
        "age_hours": round(age_s / 3600, 1), "bytes": newest.stat().st_size,
        "dumps": len(found), "max_age_hours": max_age_hours, "tier": rpo.number,
        "tier_rpo_s": rpo.rpo_s, "dump_alone_meets_rpo": age_s <= rpo.rpo_s, "verified": {}}
    contents, broken = [], []
    for path in newest_per_format(found):  # a .sql and a .dump of the same night: both
        fmt = dump_format(path)
        if fmt in ("custom", "tar", "directory"):
            readable, entries, reason = list_archive(path)
            evidence["verified"][path.name] = {"format": fmt, "checked_by": "pg_restore --list",
                                               "toc_entries": entries, "ok": readable}
            if readable:
                contents.append(f"{path.name} ({fmt}): {entries} entries readable by "
                                "pg_restore")
            else:
                broken.append(f"{path.name} ({fmt} format) is not readable by pg_restore: "
                              f"{reason or 'unreadable'}")
        elif fmt == "plain":
            whole, why = plain_dump_complete(path)
            evidence["verified"][path.name] = {"format": fmt, "ok": whole, "detail": why,
                                               "checked_by": "header and closing line"}
            evidence["why_not_pg_restore"] = WHY_NOT_PG_RESTORE
            if whole:
                contents.append(f"{path.name} (plain SQL): complete (pg_restore --list "
                                "cannot read plain SQL)")
            else:
                broken.append(f"{path.name} (plain SQL) is incomplete: {why}")
        else:
            evidence["verified"][path.name] = {"format": fmt, "ok": False}
            broken.append(f"{path.name} is not a pg_dump file (neither the custom format's "
                          "PGDMP header, a tar archive, nor SQL text)")
    if broken:
        return ctx.result(Status.CRITICAL, f"the newest dump is broken: {'; '.join(broken)}",
                          evidence, "take a new dump now (pg_dump -Fc) and find why this one "
                          "broke (disk full, a killed pg_dump, a copy cut short)", table=table)
    content = "; ".join(contents)
    if age_s > max_age_hours * 3600:
        return ctx.result(Status.CRITICAL,
                          f"the newest dump {newest.name} is {age_s / 3600:.0f} h old (over "
                          f"{max_age_hours:g} h: §5.1's daily dump did not run)",
                          evidence, "check the backup cron job and its log; take a dump now",
                          table=table)
    rpo_note = ("within" if age_s <= rpo.rpo_s else "beyond") + \
        f" the tier-{rpo.number} RPO of {human_age(rpo.rpo_s)}"
    more = "" if age_s <= rpo.rpo_s else ": the WAL archive must cover the rest"
    return ctx.result(Status.OK,
                      f"{newest.name}: {human_age(age_s)} old ({rpo_note}{more}), {content}",
                      evidence, table=table)


# -- WAL segment names ------------------------------------------------------------------------


def segments_per_xlogid(segment_size: int) -> int:
    return 0x1_0000_0000 // segment_size


def segment_position(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, position in the WAL sequence) of a segment file name."""
    match = SEGMENT_RE.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name}")
    tli, log, seg = (int(g, 16) for g in match.groups()[:3])
    return tli, log * segments_per_xlogid(segment_size) + seg


def segment_name(timeline: int, position: int, segment_size: int) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{position // per:08X}{position % per:08X}"


def lsn_position(lsn: str, segment_size: int) -> int:
    """Position of the segment holding an LSN such as 0/2000028."""
    high, low = lsn.split("/")
    return ((int(high, 16) << 32) | int(low, 16)) // segment_size


@dataclass(frozen=True)
class BaseBackup:
    path: Path
    timeline: int
    start_lsn: str
    taken_at: float  # the manifest's modification time

    def start_segment(self, segment_size: int) -> str:
        return segment_name(self.timeline, lsn_position(self.start_lsn, segment_size),
                            segment_size)


def base_backups(backup_dir: Path) -> list[BaseBackup]:
    """Base backups under backup_dir/base/base-*/ with a readable backup_manifest, newest
    first (pg_basebackup writes the manifest last, so one without it is incomplete)."""
    found = []
    for manifest in (backup_dir / "base").glob("base-*/backup_manifest"):
        try:
            ranges = json.loads(manifest.read_text())["WAL-Ranges"]
            first = min(ranges, key=lambda r: int(r["Timeline"]))
            found.append(BaseBackup(manifest.parent, int(first["Timeline"]),
                                    str(first["Start-LSN"]), manifest.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda b: (b.taken_at, b.path.name), reverse=True)


def archived_segments(archive: Path, segment_size: int) -> dict[int, str]:
    """position -> file name of each WAL segment in the archive (highest timeline wins)."""
    found: dict[int, tuple[int, str]] = {}
    for path in archive.iterdir():
        if not SEGMENT_RE.match(path.name) or not path.is_file():
            continue
        tli, pos = segment_position(path.name, segment_size)
        if pos not in found or found[pos][0] < tli:
            found[pos] = (tli, path.name)
    return {pos: name for pos, (_tli, name) in found.items()}


def archive_gaps(present: dict[int, str], start: int, segment_size: int,
                 timeline: int = 1) -> list[tuple[str, str, int]]:
    """Runs of missing segments from `start` to the newest present: (first, last, count),
    named on the timeline of the segment before the gap."""
    if not present:
        return []
    gaps, newest, tli, pos = [], max(present), timeline, start
    while pos <= newest:
        if pos in present:
            tli = int(present[pos][:8], 16)
            pos += 1
            continue
        first = pos
        while pos <= newest and pos not in present:
            pos += 1
        gaps.append((segment_name(tli, first, segment_size),
                     segment_name(tli, pos - 1, segment_size), pos - first))
    return gaps


def wal_segment_size(ctx: RunContext) -> tuple[int, str]:
    """The target's wal_segment_size in bytes (and where it came from)."""
    try:
        with postgres.connect(ctx.target.admin_database_url() or ctx.target.database_url()
                              ) as conn:
            row = postgres.one(conn, "SELECT setting::bigint AS size FROM pg_settings "
                                     "WHERE name = 'wal_segment_size'")
        if row.get("size"):
            return int(row["size"]), "server"
    except (postgres.ConnectionFailed, psycopg.Error):
        pass
    return DEFAULT_WAL_SEGMENT_SIZE, "default (the server did not answer)"


@check("backup.wal_continuity")
def check_wal_continuity(ctx: RunContext) -> Finding:
    """§5.1 "WAL archiving (continuous)": point-in-time recovery replays every segment from
    the newest base backup's start on; one missing name in that sequence ends the replay
    there, so every name must be in wal_archive_dir."""
    archive_dir, backup_dir = ctx.target.get("wal_archive_dir"), ctx.target.get("backup_dir")
    if not archive_dir:
        return ctx.result(Status.UNKNOWN, "the target names no wal_archive_dir, so the WAL "
                          "archive cannot be checked", {}, "add wal_archive_dir to the inventory")
    archive = Path(archive_dir)
    if not archive.is_dir():
        return ctx.result(Status.CRITICAL, f"the WAL archive {archive} does not exist",
                          {"wal_archive_dir": str(archive)},
                          "check archive_command's destination (§5.1)")
    size, size_from = wal_segment_size(ctx)
    present = archived_segments(archive, size)
    backups = base_backups(Path(backup_dir)) if backup_dir else []
    evidence: dict[str, Any] = {"wal_archive_dir": str(archive), "segments": len(present),
                                "wal_segment_size": size, "segment_size_from": size_from}
    if not present:
        return ctx.result(Status.CRITICAL, f"the WAL archive {archive} holds no segment",
                          evidence, "check archive_mode and archive_command (§5.1)")
    status, remediation = Status.OK, None
    if backups:
        newest = backups[0]
        start = lsn_position(newest.start_lsn, size)
        start_name = newest.start_segment(size)
        since = f"since base backup {newest.path.name} (starts at {start_name})"
        evidence.update(base_backup=newest.path.name, start_wal=start_name,
                        start_lsn=newest.start_lsn)
    else:
        start = min(present)
        start_name = present[start]
        since = f"from the oldest archived segment {start_name} (no base backup found)"
        status = Status.WARNING
        remediation = ("take a base backup (pg_basebackup -Ft -z -X stream -D "
                       "backup_dir/base/base-YYYYMMDDTHHMMSSZ): without one the archive "
                       "cannot be replayed onto anything")
        evidence.update(base_backup=None, start_wal=start_name)
    newest_pos = max(present)
    evidence["newest_wal"] = present[newest_pos]
    if newest_pos < start:
        return ctx.result(Status.CRITICAL,
                          f"no archived segment {since}: the newest archived is "
                          f"{present[newest_pos]}", evidence,
                          "archiving stopped before the base backup was taken: fix "
                          "archive_command, then take a new base backup")
    timeline = int(start_name[:8], 16)
    gaps = archive_gaps(present, start, size, timeline)
    evidence["gaps"] = [{"first": a, "last": b, "missing": n} for a, b, n in gaps]
    if start not in present and (not gaps or gaps[0][0] != start_name):
        gaps.insert(0, (start_name, start_name, 1))
    if gaps:
        named = ", ".join(a if n == 1 else f"{a}..{b} ({n})" for a, b, n in gaps[:5])
        return ctx.result(Status.CRITICAL,
                          f"the WAL archive has a gap {since}: missing {named}; recovery "
                          "stops at the first missing segment", evidence,
                          "take a new base backup now (the archive after it is whole again), "
                          "then find why the segments are missing (archive_command, cleanup "
                          "jobs, the archive's disk)")
    count = newest_pos - start + 1
    return ctx.result(status, f"{count} WAL segments {since} to {present[newest_pos]}, "
                      "no gap", evidence, remediation)


# -- what waits for archiving, and what would be lost now -------------------------------------

FAILING_SQL = """
SELECT last_failed_wal, failed_count,
       last_failed_time IS NOT NULL AND (last_archived_time IS NULL
                                         OR last_failed_time > last_archived_time) AS failing
FROM pg_stat_archiver
"""

READY_SQL = """
SELECT name, EXTRACT(EPOCH FROM now() - modification)::float AS age_s
FROM pg_ls_archive_statusdir()
WHERE name LIKE '%.ready'
ORDER BY modification
"""


@check("backup.wal_ready")
def check_wal_ready(ctx: RunContext, tier: int | None = None,
                    warning_age_s: float = thresholds.WAL_READY_AGE_S) -> Finding:
    """Segments closed but not yet archived (`pg_wal/archive_status/*.ready`): each one is
    work a lost primary takes with it. Reading that directory needs the admin role (or
    pg_monitor); without it this says so instead of guessing."""
    rpo = tier_of(tier)
    url = ctx.target.admin_database_url() or ctx.target.database_url()
    try:
        with postgres.connect(url) as conn:
            ready = postgres.rows(conn, READY_SQL)
            archiver = postgres.one(conn, FAILING_SQL)
    except psycopg.errors.InsufficientPrivilege:
        role = postgres.url_user(url) or "the role"
        return ctx.result(Status.UNKNOWN,
                          f"cannot list pg_wal/archive_status as {role}: reading it needs "
                          "superuser or pg_monitor", {"role": role},
                          f"add admin_database_url to the inventory, or GRANT pg_monitor TO "
                          f"{role}")
    oldest = ready[0]["age_s"] if ready else 0.0
    evidence = {"ready": len(ready), "oldest_age_s": round(oldest, 1),
                "files": [r["name"] for r in ready[:20]], "tier": rpo.number,
                "tier_rpo_s": rpo.rpo_s, "warning_age_s": warning_age_s}
    if not ready:
        return ctx.result(Status.OK, "no WAL segment waiting for archive_command", evidence)
    text = (f"{len(ready)} WAL segments waiting for archive_command, the oldest "
            f"{ready[0]['name']} for {human_age(oldest)}")
    remediation = ("read the PostgreSQL log for archive_command errors; check the archive "
                   "destination's space and permissions; pg_wal fills while this lasts")
    evidence.update(archiver_failing=bool(archiver.get("failing")),
                    last_failed_wal=archiver.get("last_failed_wal"))
    if oldest > rpo.rpo_s:
        return ctx.result(Status.CRITICAL, f"{text}: beyond the tier-{rpo.number} RPO of "
                          f"{human_age(rpo.rpo_s)}", evidence, remediation)
    if archiver.get("failing"):
        return ctx.result(Status.WARNING, f"{text}, and archive_command is failing (last "
                          f"failure {archiver.get('last_failed_wal')}): they will pass the "
                          f"tier-{rpo.number} RPO of {human_age(rpo.rpo_s)}", evidence,
                          remediation)
    if oldest > warning_age_s:
        return ctx.result(Status.WARNING, text, evidence, remediation)
    return ctx.result(Status.OK, f"{text}: archive_command is keeping up", evidence)


RPO_SQL = """
SELECT a.last_archived_wal, a.last_archived_time, a.last_failed_wal, a.last_failed_time,
       a.failed_count, a.archived_count,
       EXTRACT(EPOCH FROM now() - a.last_archived_time)::float AS archived_age_s,
       pg_current_wal_lsn()::text AS current_lsn,
       current_setting('archive_timeout') AS archive_timeout,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
           AS wal_segment_size
FROM pg_stat_archiver a
"""


def _unarchived_bytes(row: dict[str, Any]) -> int | None:
    """WAL written after the end of the last archived segment (None when unknown)."""
    name, size = row.get("last_archived_wal"), row.get("wal_segment_size")
    if not name or not size or not row.get("current_lsn"):
        return None
    match = re.match(r"^[0-9A-F]{24}", name)
    if not match:
        return None
    _tli, pos = segment_position(match.group(0), int(size))
    if name.endswith(".history"):
        return None
    high, low = row["current_lsn"].split("/")
    current = (int(high, 16) << 32) | int(low, 16)
    end = (pos + 1) * int(size) if not BACKUP_LABEL_RE.match(name) else pos * int(size)
    return max(0, current - end)


@check("backup.current_rpo")
def check_current_rpo(ctx: RunContext, tier: int | None = None) -> Finding:
    """The RPO the deployment has right now: if the primary were lost this second, the work
    since the newest WAL safely archived is gone. Zero when nothing was written after it."""
    rpo = tier_of(tier)
    try:
        with postgres.connect(ctx.target.admin_database_url() or ctx.target.database_url()
                              ) as conn:
            row = postgres.one(conn, RPO_SQL)
    except postgres.ConnectionFailed as exc:
        return _rpo_from_archive(ctx, rpo, str(exc))
    unarchived = _unarchived_bytes(row)
    age = row.get("archived_age_s")
    evidence = {"last_archived_wal": row.get("last_archived_wal"),
                "last_archived_at": row.get("last_archived_time"),
                "unarchived_bytes": unarchived, "current_lsn": row.get("current_lsn"),
                "archive_timeout": row.get("archive_timeout"), "tier": rpo.number,
                "tier_rpo_s": rpo.rpo_s, "failed_count": row.get("failed_count"),
                "measured_from": "pg_stat_archiver"}
    if age is None:
        return ctx.result(Status.CRITICAL, "no WAL segment has ever been archived: the current "
                          "RPO is everything since the last dump", evidence,
                          "turn on archive_mode and archive_command (§5.1) and check "
                          "database.wal_archiving")
    if unarchived == 0:
        evidence["current_rpo_s"] = 0.0
        return ctx.result(Status.OK,
                          f"current RPO 0 s: nothing written since {row['last_archived_wal']} "
                          f"was archived {human_age(age)} ago (tier-{rpo.number} RPO "
                          f"{human_age(rpo.rpo_s)})", evidence)
    evidence["current_rpo_s"] = round(age, 1)
    written = f"{unarchived / 1024:.0f} kB of WAL written since" if unarchived else "WAL since"
    summary = (f"current RPO {human_age(age)}: the newest WAL safely archived is "
               f"{row['last_archived_wal']}, {human_age(age)} ago ({written})")
    if age > rpo.rpo_s:
        timeout_hint = ("" if row.get("archive_timeout") not in (None, "0") else
                        "; archive_timeout is 0, so a quiet server archives only when a 16 MB "
                        "segment fills: set archive_timeout below the RPO")
        return ctx.result(Status.CRITICAL,
                          f"{summary}: beyond the tier-{rpo.number} RPO of "
                          f"{human_age(rpo.rpo_s)}", evidence,
                          "fix archiving first (see database.wal_archiving and "
                          f"backup.wal_ready){timeout_hint}")
    return ctx.result(Status.OK, f"{summary}, within the tier-{rpo.number} RPO of "
                      f"{human_age(rpo.rpo_s)}", evidence)


def _rpo_from_archive(ctx: RunContext, rpo: thresholds.Tier, error: str) -> Finding:
    """Without the server: the newest archived file's age, an upper bound of the loss."""
    archive_dir = ctx.target.get("wal_archive_dir")
    files = [p for p in Path(archive_dir).iterdir() if SEGMENT_RE.match(p.name)] \
        if archive_dir and Path(archive_dir).is_dir() else []
    if not files:
        return ctx.result(Status.UNKNOWN, f"cannot measure the current RPO: the database does "
                          f"not answer ({error}) and no archive to read", {"error": error},
                          "run database-unavailable; add wal_archive_dir to the inventory")
    newest = max(files, key=lambda p: p.stat().st_mtime)
    age = time.time() - newest.stat().st_mtime
    evidence = {"newest_archived": newest.name, "current_rpo_s": round(age, 1),
                "measured_from": "archive file time", "tier": rpo.number,
                "tier_rpo_s": rpo.rpo_s, "error": error,
                "archived_at": datetime.fromtimestamp(newest.stat().st_mtime, UTC)}
    status = Status.CRITICAL if age > rpo.rpo_s else Status.OK
    return ctx.result(status, f"current RPO at most {human_age(age)} (the database does not "
                      f"answer; newest archived {newest.name}) against the tier-{rpo.number} "
                      f"RPO of {human_age(rpo.rpo_s)}", evidence,
                      "run the database-unavailable playbook" if status is Status.CRITICAL
                      else None)


# -- a fresh dump before a planned change (§7.1 step 5, §2.2 step 2) --------------------------

def split_password(url: str) -> tuple[str, str | None]:
    """A libpq URL without its password, and the password: pg_dump gets the password in its
    own environment (PGPASSWORD), never on a command line that `ps` or an action shows."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**params), (str(password) if password else None)


def pre_change_path(ctx: RunContext, suffix: str) -> Path:
    """Where a copy taken before a change goes: backup_dir (else the run's directory), as
    `pre-<runbook>-<UTC time><suffix>`, never over an earlier one taken in the same second,
    and never named as §5.1's pruned `fraiseql-*`/`config-*` backups are."""
    folder = ctx.target.get("backup_dir")
    if folder:
        directory = Path(str(folder))
    else:
        opened = ctx.log.open()
        directory = opened.parent if opened is not None else Path.cwd()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"pre-{ctx.runbook}-{stamp}{suffix}"
    for n in range(2, 100):
        if not path.exists():
            break
        path = directory / f"pre-{ctx.runbook}-{stamp}-{n}{suffix}"
    return path


@check("backup.fresh_dump")
def take_fresh_dump(ctx: RunContext, why: str, *, schema_only: bool = False,
                    kind: str | None = None,
                    timeout_s: float = thresholds.RESTORE_TIMEOUT_S) -> Finding:
    """A dump taken right before a change, so that the change can be undone whatever
    happens (§7.1 step 5 "Backup", the migration's safety net). It is a pre-check: a failed
    dump stops the change. Taken only when the change may run (execute=True); a dry run
    records the command. Written into the target's backup_dir (else the run's directory) as
    `pre-<runbook>-<UTC time>.dump` (custom format, so `pg_restore --list` reads it), with
    its size and SHA-256. `kind` picks the URL (default: admin_database when the inventory
    has one, else database)."""
    kind = kind or ("admin_database" if ctx.target.get("admin_database_url") else "database")
    url, password = split_password(ctx.target.database_url(kind))
    path = pre_change_path(ctx, ".dump")
    directory = path.parent
    partial = path.with_name(path.name + ".partial")  # renamed once pg_dump succeeded
    argv = [str(pgbin.pg_bin("pg_dump")), "-Fc", *(["--schema-only"] if schema_only else []),
            "-f", str(partial), "--dbname", url]
    shown = " ".join(argv[:-1] + [f"'{secrets.mask(url)}'"]).replace(str(partial), str(path))
    evidence: dict[str, Any] = {"path": str(path), "schema_only": schema_only, "why": why,
                                "command": shown}
    if not ctx.execute:
        print(repr(ctx.action("fresh_dump", shown, executed=False)))
        return ctx.result(Status.INFO, f"dry run: the dump before the change ({why}) would be "
                          f"written to {path}", evidence | {"taken": False})
    if not directory.is_dir():
        return ctx.result(Status.CRITICAL, f"cannot take the dump: {directory} is not a "
                          "directory", evidence | {"taken": False},
                          "create the backup directory (or fix backup_dir) and rerun")
    env = secrets.clean_environment() | ({"PGPASSWORD": password} if password else {})
    began = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              env=env, stdin=subprocess.DEVNULL)
        error = secrets.mask(done.stderr.strip().splitlines()[-1]) if done.returncode else ""
    except subprocess.TimeoutExpired:
        error = f"pg_dump did not finish within {timeout_s:g} s"
    elapsed = round(time.monotonic() - began, 2)
    size = partial.stat().st_size if partial.is_file() else 0
    ok = not error and size > 0
    if ok:
        partial.rename(path)
    digest = sha256_of(path) if ok else None
    ctx.action("fresh_dump", shown, executed=True,
               result={"ok": ok, "bytes": size, "sha256": digest, "elapsed_s": elapsed,
                       **({"error": error} if error else {})})
    evidence |= {"taken": ok, "bytes": size, "sha256": digest, "elapsed_s": elapsed}
    if not ok:
        partial.unlink(missing_ok=True)  # half a dump is worse than none: it looks like one
        return ctx.result(Status.CRITICAL, f"the dump before the change failed: "
                          f"{error or 'pg_dump wrote nothing'}; the change stops here",
                          evidence | {"error": error}, "fix what stopped pg_dump (disk "
                          "space, permissions, the connection) and rerun")
    return ctx.result(Status.OK, f"dump taken before the change: {path.name}, "
                      f"{size:,} bytes in {elapsed:g} s (sha256 {digest[:12]}…)", evidence)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
