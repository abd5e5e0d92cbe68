"""The sandbox's backup directory as runbook §5.1 fills it, and the backup drill faults.

`make` runs once, at `sandbox up`, after the schema, the data and the stand-in's config
exist. In `backup_dir` (the cluster's `backups/`, mode 0700, every file 0600):

    fraiseql-YYYYMMDD.sql       `pg_dump fraiseql > ...` (plain SQL), daily at 02:00 UTC
    fraiseql-YYYYMMDD.dump      `pg_dump -Fc` (custom format: `pg_restore --list` reads it)
    base/base-YYYYMMDDTHHMMSSZ/ `pg_basebackup -D DIR -Ft -z -X stream -c fast`: base.tar.gz,
                                pg_wal.tar.gz, backup_manifest (for point-in-time recovery
                                with the WAL archive; `-X fetch` would put the WAL inside
                                base.tar.gz and write no pg_wal.tar.gz)
    config-YYYYMMDD-HHMMSS.tar.gz   tar -czf of the stand-in's config directory (server/)
    audit-YYYYMMDD.gz           gzip of a CSV COPY (with header) of that UTC day's
                                fraiseql_audit_logs rows

Only today's dump pair is a full dump made now. The older days (DUMP_DAYS of them) are
copies of one smaller real dump (the schema and every row but the audit table's), their file
times set to their day at 02:00 UTC, so that §5.1's `find -mtime +30 -delete` has something
to delete. Config tarballs are hourly over the last CONFIG_HOURLY_HOURS hours (file time =
the hour in their name), then daily at 00:00 UTC back to CONFIG_DAYS days (`-mtime +90`
finds some). Audit archives cover the AUDIT_DAYS days before today, each written at 01:00 UTC
the next day (the runbook's `0 1 * * *`), never later than now.

Before the dumps this module creates the (empty) marker table

    public.fraiseql_rb_marker(id serial PRIMARY KEY, note text,
                              at timestamptz DEFAULT now())

in database fraiseql, so dumps and base backup hold it as a real deployment's would; after the
base backup it inserts one row (note `after base-...`), closes the WAL segment and waits until
the archive holds it. The row exists only in WAL after the base backup: a cluster restored
from `base/` that shows the marker row has replayed the archive.

Faults (registered in `faults`): `backup-stale` moves the two newest days of dumps into
`<sandbox>/.backup-stale/` (outside backup_dir; renames keep their times), so no dump is
younger than §5.1's daily period plus slack; heal moves them back. `backup-corrupt` keeps
pristine copies of the newest custom dump and the newest audit archive in
`<sandbox>/.backup-corrupt/`, then truncates the dump to half its size and the archive to
half (file times kept): `pg_restore` of the dump fails at its data, though `pg_restore
--list` still reads the table of contents at its start; `gunzip -t` fails on the archive.
Heal copies them back byte for byte.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import perf_counter
from typing import TypeVar

from psycopg import sql

from . import audit_data
from . import cluster as pgcluster
from .state import Sandbox, SandboxError, progress

T = TypeVar("T")

DUMP_DAYS = 35  # days of older dumps: some beyond the 30-day retention of §5.1
DUMP_HOUR = 2  # §5.1 "Full backup (daily, 02:00 UTC)"
CONFIG_HOURLY_HOURS = 48  # hourly config tarballs over the last two days
CONFIG_DAYS = 100  # then daily ones back to here: some beyond the 90-day retention
AUDIT_DAYS = 35
AUDIT_HOUR = 1  # §5.1 "0 1 * * *"
STALE_DAYS_MOVED = 2  # backup-stale: today's and yesterday's dumps
MARKER_TABLE = "fraiseql_rb_marker"
FILE_MODE = 0o600
_DUMP_NAME = re.compile(r"fraiseql-(\d{8})\.(sql|dump)")


def stale_dir(sb: Sandbox) -> Path:
    return sb.root / ".backup-stale"


def corrupt_dir(sb: Sandbox) -> Path:
    return sb.root / ".backup-corrupt"


def base_dir(backup_dir: Path) -> Path:
    return backup_dir / "base"


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def _set_time(path: Path, when: datetime) -> None:
    stamp = when.timestamp()
    os.utime(path, (stamp, stamp))


def _write(path: Path, data: bytes, when: datetime) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    _set_time(path, when)


# ---- making them -------------------------------------------------------------------------


def make(sb: Sandbox, now: datetime | None = None) -> Path:
    """Fill backup_dir as described above; returns the base backup's directory."""
    now = now or datetime.now(UTC)
    # the day the files are named after, for whoever reads them across a midnight
    sb.state["backups_made_at"] = now.isoformat()
    cl = sb.cluster
    cl.backup_dir.mkdir(mode=0o700, exist_ok=True)
    took: dict[str, float] = {}

    def timed(name: str, func: Callable[[], T]) -> T:
        began = perf_counter()
        result = func()
        took[name] = perf_counter() - began
        return result

    create_marker_table(cl)
    timed("dumps", lambda: make_dumps(cl, now))
    base = timed("base backup", lambda: make_base_backup(cl, now))
    timed("marker + WAL switch", lambda: (write_marker(cl, f"after {base.name}"),
                                          cl.wait_archived(timeout=30)))
    timed("config", lambda: make_config_tarballs(sb.server_dir, cl.backup_dir, now))
    timed("audit", lambda: make_audit_archives(cl, now))
    progress("backups: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in took.items()))
    return base


def make_dumps(cl: pgcluster.Cluster, now: datetime) -> list[Path]:
    """Today's full pair, then DUMP_DAYS older pairs copied from one dump without the audit
    rows, at 02:00 UTC of their day. The custom dump is the newest file of each day, as the
    recent-dump check reads the newest dump with pg_restore."""
    today = now.date()
    stamp = today.strftime("%Y%m%d")
    plain = cl.dump(path=cl.backup_dir / f"fraiseql-{stamp}.sql", plain=True)
    custom = cl.dump(path=cl.backup_dir / f"fraiseql-{stamp}.dump")
    _set_time(plain, now - timedelta(seconds=1))
    _set_time(custom, now)
    made = [plain, custom]
    small = {suffix: cl.backup_dir / f".older.{suffix}.partial" for suffix in ("sql", "dump")}
    try:
        for suffix, path in small.items():
            cl.dump(path=path, plain=suffix == "sql",
                    exclude_table_data=(audit_data.AUDIT_TABLE,))
        for back in range(1, DUMP_DAYS + 1):
            day = today - timedelta(days=back)
            for suffix, source in small.items():
                target = cl.backup_dir / f"fraiseql-{day:%Y%m%d}.{suffix}"
                shutil.copyfile(source, target)
                target.chmod(FILE_MODE)
                _set_time(target, _at(day, DUMP_HOUR) + timedelta(
                    seconds=1 if suffix == "dump" else 0))
                made.append(target)
    finally:
        for path in small.values():
            path.unlink(missing_ok=True)
    return made


def make_base_backup(cl: pgcluster.Cluster, now: datetime) -> Path:
    """`pg_basebackup -Ft -z -X stream -c fast` into base/base-YYYYMMDDTHHMMSSZ/ (gzip
    level 1: a third of the default level's time, for a slightly larger file)."""
    parent = base_dir(cl.backup_dir)
    parent.mkdir(mode=0o700, exist_ok=True)
    target = parent / f"base-{now:%Y%m%dT%H%M%SZ}"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        cl._run("pg_basebackup", [  # noqa: SLF001 - the cluster's own program runner
            cl._bin("pg_basebackup"),  # noqa: SLF001
            "-h", str(cl.run_dir), "-p", str(cl.port), "-U", pgcluster.SUPERUSER,
            "-D", str(partial), "-Ft", "-z", "-Z", "1", "-X", "stream", "-c", "fast",
            "--no-sync",
        ], as_server=False)
        missing = [name for name in ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest")
                   if not (partial / name).is_file()]
        if missing:
            raise SandboxError(f"pg_basebackup wrote no {', '.join(missing)} in {partial}")
        for path in partial.iterdir():
            path.chmod(FILE_MODE)
        partial.chmod(0o700)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def create_marker_table(cl: pgcluster.Cluster) -> None:
    """The drill's marker table, empty, before any backup is taken; the application role
    gets §2.1's ALL on it, as on every table of the schema."""
    table = sql.Identifier("public", MARKER_TABLE)
    with cl.connect(pgcluster.APP_DB) as conn:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id serial PRIMARY KEY, "
                             "note text, at timestamptz DEFAULT now())").format(table))
        conn.execute(sql.SQL("GRANT ALL ON TABLE {} TO {}").format(
            table, sql.Identifier(pgcluster.APP_USER)))
        conn.execute(sql.SQL("GRANT ALL ON SEQUENCE {} TO {}").format(
            sql.Identifier("public", f"{MARKER_TABLE}_id_seq"),
            sql.Identifier(pgcluster.APP_USER)))


def write_marker(cl: pgcluster.Cluster, note: str) -> None:
    """Insert one marker row (creating the table if needed), in one committed write."""
    create_marker_table(cl)
    with cl.connect(pgcluster.APP_DB) as conn:
        conn.execute(sql.SQL("INSERT INTO {} (note) VALUES (%s)").format(
            sql.Identifier("public", MARKER_TABLE)), (note,))


def config_times(now: datetime) -> list[datetime]:
    """When the config tarballs were made: hourly, then daily at midnight, newest first."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    times = [hour - timedelta(hours=back) for back in range(CONFIG_HOURLY_HOURS)]
    oldest_hourly = times[-1]
    midnight = _at(now.date(), 0)
    times += [midnight - timedelta(days=back) for back in range(1, CONFIG_DAYS + 1)
              if midnight - timedelta(days=back) < oldest_hourly]
    return times


def make_config_tarballs(config_dir: Path, backup_dir: Path, now: datetime) -> list[Path]:
    """One tar.gz of config_dir, written under every name of `config_times`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(config_dir, arcname=config_dir.name)
    data = buffer.getvalue()
    made = []
    for when in config_times(now):
        path = backup_dir / f"config-{when:%Y%m%d-%H%M%S}.tar.gz"
        _write(path, data, when)
        made.append(path)
    return made


def make_audit_archives(cl: pgcluster.Cluster, now: datetime) -> list[Path]:
    """audit-YYYYMMDD.gz for each of the AUDIT_DAYS days before today: that day's rows.

    One scan finds each day's id range; each day's COPY then reads its range by primary key
    (the table has no index on time alone)."""
    made = []
    table = sql.Identifier(audit_data.AUDIT_TABLE)
    first_day = now.date() - timedelta(days=AUDIT_DAYS)
    with cl.connect(pgcluster.APP_DB) as conn, conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute(sql.SQL('SELECT "timestamp"::date, min(id), max(id) FROM {} '
                            'WHERE "timestamp" >= %s AND "timestamp" < %s GROUP BY 1')
                    .format(table), (_at(first_day, 0), _at(now.date(), 0)))
        ranges = {day: (low, high) for day, low, high in cur.fetchall()}
        for back in range(1, AUDIT_DAYS + 1):
            day = now.date() - timedelta(days=back)
            low, high = ranges.get(day, (0, -1))
            query = sql.SQL('COPY (SELECT * FROM {} WHERE id BETWEEN {} AND {} '
                            'AND "timestamp" >= {} AND "timestamp" < {} '
                            'ORDER BY "timestamp", id) TO STDOUT WITH (FORMAT csv, HEADER)'
                            ).format(table, sql.Literal(low), sql.Literal(high),
                                     sql.Literal(_at(day, 0)),
                                     sql.Literal(_at(day + timedelta(days=1), 0)))
            raw = io.BytesIO()
            with cur.copy(query) as copy:
                for chunk in copy:
                    raw.write(chunk)
            path = cl.backup_dir / f"audit-{day:%Y%m%d}.gz"
            written = min(_at(day + timedelta(days=1), AUDIT_HOUR), now)
            _write(path, gzip.compress(raw.getvalue(), mtime=int(written.timestamp())),
                   written)
            made.append(path)
    return made


# ---- backup-stale ----------------------------------------------------------------------------


def dumps_by_day(directory: Path) -> dict[str, list[Path]]:
    """fraiseql-YYYYMMDD.{sql,dump} files of `directory`, by the day in their name."""
    days: dict[str, list[Path]] = {}
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(directory.iterdir()):
            match = _DUMP_NAME.fullmatch(path.name)
            if match:
                days.setdefault(match.group(1), []).append(path)
    return days


def inject_stale(sb: Sandbox) -> None:
    """Move the dumps of the two newest days aside (once: a second inject moves nothing)."""
    holding = stale_dir(sb)
    if holding.is_dir() and any(holding.iterdir()):
        return
    holding.mkdir(mode=0o700, exist_ok=True)
    days = dumps_by_day(sb.cluster.backup_dir)
    for day in sorted(days, reverse=True)[:STALE_DAYS_MOVED]:
        for path in days[day]:
            os.rename(path, holding / path.name)  # a rename keeps the file's times


def heal_stale(sb: Sandbox) -> None:
    holding = stale_dir(sb)
    if not holding.is_dir():
        return
    for path in holding.iterdir():
        os.rename(path, sb.cluster.backup_dir / path.name)
    holding.rmdir()


# ---- backup-corrupt --------------------------------------------------------------------------


def _newest(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def inject_corrupt(sb: Sandbox) -> None:
    """Truncate the newest custom dump and the newest audit archive to half their size,
    keeping pristine copies (once: a second inject truncates nothing more)."""
    holding = corrupt_dir(sb)
    if holding.is_dir() and any(holding.iterdir()):
        return
    backup_dir = sb.cluster.backup_dir
    victims = [p for p in (_newest(backup_dir, "fraiseql-*.dump"),
                           _newest(backup_dir, "audit-*.gz")) if p is not None]
    if not victims:
        raise SandboxError(f"no dump or audit archive in {backup_dir} to corrupt")
    holding.mkdir(mode=0o700, exist_ok=True)
    for path in victims:
        shutil.copy2(path, holding / path.name)
    for path in victims:
        stat = path.stat()
        os.truncate(path, stat.st_size // 2)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def heal_corrupt(sb: Sandbox) -> None:
    """Copy the pristine files back over the truncated ones, wherever they now are (in
    backup_dir, or moved aside by backup-stale)."""
    holding = corrupt_dir(sb)
    if not holding.is_dir():
        return
    for pristine in holding.iterdir():
        places = [sb.cluster.backup_dir / pristine.name, stale_dir(sb) / pristine.name]
        for place in [p for p in places if p.exists()] or places[:1]:
            shutil.copy2(pristine, place)
        pristine.unlink()
    holding.rmdir()
