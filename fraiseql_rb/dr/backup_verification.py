"""Runbook §5.1 "Backup Strategy", verified daily: backups proven by restoring them.

Steps (each a check with its finding): the newest dump's age and format
(`backup.recent_dump`, in checks/backup.py); a **test restore** of that dump into a scratch
cluster this runbook makes and removes (`targets/scratch.py`; never the target), with the row
count of every table and an md5 of every key table (`tb_*`) compared with the source in one
consistent snapshot; the hourly config tarballs and the daily audit archives, each read to
the end as `tar -tzf` and `gunzip -t` do; what §5.1's retention (`find -mtime +30/+90
-delete`) would delete, deleted only with execute=True; and WAL archiving proven (checks in
checks/backup.py and checks/database.py), ending with the current RPO.

The source side only reads (a read-only session through targets/postgres); the restore runs
pg_restore or psql against the scratch cluster only.
"""

from __future__ import annotations

import gzip
import re
import shlex
import subprocess
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from fraiseql_rb.checks import backup
from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import postgres, scratch

CONFIG_RE = re.compile(r"^config-(\d{8})-(\d{6})\.tar\.gz$")
AUDIT_RE = re.compile(r"^audit-(\d{8})\.gz$")
KEY_TABLE = re.compile(r"^tb_")  # the schema's entity tables (tb_<name>, pk_<name>)
RETENTION_PATTERNS = {"dump": ("fraiseql-*.sql", "fraiseql-*.dump"),
                      "config": ("config-*.tar.gz",)}
_CHUNK = 1024 * 1024


def _tool_message(stderr: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in stderr.splitlines() if ln.strip()][-lines:]
    return secrets.mask(" | ".join(kept)[-600:]) or "no message"


# -- the test restore --------------------------------------------------------------------------

TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name,
       has_table_privilege(c.oid, 'SELECT') AS readable,
       ARRAY(SELECT a.attname FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY a.attnum)::text[] AS pkey
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

ROLES_SQL = "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"


@dataclass
class TableState:
    """Row counts and key-table checksums of one database, read in one snapshot."""

    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str | None] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def table_state(conn: psycopg.Connection) -> TableState:
    """count(*) of every table and md5 of every key table's rows ordered by primary key, in
    one REPEATABLE READ READ ONLY transaction (a consistent snapshot)."""
    state = TableState()
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        for table in postgres.rows(conn, TABLES_SQL):
            name = f"{table['schema']}.{table['name']}"
            if not table["readable"]:
                state.unreadable.append(name)
                continue
            ident = sql.Identifier(table["schema"], table["name"])
            row = conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(ident)).fetchone()
            state.counts[name] = int(_first(row))
            if KEY_TABLE.match(table["name"]):
                order = (sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c))
                                           for c in table["pkey"])
                         if table["pkey"] else sql.SQL("t::text"))
                query = sql.SQL("SELECT md5(string_agg(t::text, E'\\n' ORDER BY {})) AS md5 "
                                "FROM {} AS t").format(order, ident)
                state.checksums[name] = _first(conn.execute(query).fetchone())
    finally:
        conn.execute("COMMIT")
    return state


def _first(row: Any) -> Any:
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def source_url(ctx: RunContext) -> str:
    """The admin role sees every table; the application role only what it was granted."""
    return ctx.target.admin_database_url() or ctx.target.database_url()


def restore_command(fmt: str, dump: Path, dsn: str, bin_of: Any) -> list[str]:
    """pg_restore for the archive formats, psql stopping at the first error for plain SQL."""
    if fmt == "plain":
        return [bin_of("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password",
                "-d", dsn, "-f", str(dump)]
    return [bin_of("pg_restore"), "--exit-on-error", "--no-password", "-d", dsn, str(dump)]


@dataclass
class Restored:
    dump: Path
    fmt: str
    seconds: float
    database_bytes: int
    state: TableState


def dumps_to_restore(backup_dir: Path) -> list[Path]:
    """The newest dump of each format written within a day of the newest dump (a night that
    writes both the runbook's plain .sql and a custom .dump gets both restored)."""
    found = backup.dumps(backup_dir)
    if not found:
        return []
    newest = found[0].stat().st_mtime
    window = thresholds.BACKUP_MAX_AGE_HOURS * 3600
    return [p for p in backup.newest_per_format(found) if newest - p.stat().st_mtime <= window]


@check("backup.test_restore")
def check_test_restore(ctx: RunContext, dump: Path | str | None = None,
                       timeout_s: float = thresholds.RESTORE_TIMEOUT_S) -> list[Finding]:
    """§5.1 "Verify backups", done the only way that proves a backup: restore the newest
    dump (of each format) into a scratch cluster, then compare its tables with the source
    (row counts, and md5 of the key tables). The scratch cluster is removed whatever
    happens."""
    directory = ctx.target.get("backup_dir")
    chosen = [Path(dump)] if dump is not None else \
        dumps_to_restore(Path(directory)) if directory else []
    if not chosen:
        return [ctx.result(Status.UNKNOWN, "no dump to restore (see backup.recent_dump)",
                           {"backup_dir": directory}, "run the daily pg_dump (§5.1)")]
    url = source_url(ctx)
    database = postgres.url_database(ctx.target.database_url()) or "fraiseql"
    with postgres.connect(url) as conn:
        roles = [r["rolname"] for r in postgres.rows(conn, ROLES_SQL)]
    snapshot: list[TableState] = []  # the source read once, after the first restore
    findings: list[Finding] = []
    for path in chosen:
        findings += _test_restore_one(ctx, path, database, roles, timeout_s, url, snapshot)
    return findings


def _test_restore_one(ctx: RunContext, dump: Path, database: str, roles: list[str],
                      timeout_s: float, url: str, snapshot: list[TableState]
                      ) -> list[Finding]:
    fmt = backup.dump_format(dump)
    evidence: dict[str, Any] = {"dump": dump.name, "format": fmt,
                                "bytes": dump.stat().st_size, "database": database}
    if fmt not in ("custom", "tar", "plain", "directory"):
        return [ctx.result(Status.CRITICAL, f"{dump.name} is not a pg_dump file: nothing to "
                           "restore", evidence, "take a new dump now")]
    try:
        restored = _restore(dump, fmt, database, roles, timeout_s)
    except RestoreFailed as exc:
        evidence.update(step=exc.step, tool_message=exc.message)
        return [ctx.result(Status.CRITICAL,
                           f"test restore of {dump.name} failed in {exc.step}: {exc.message}",
                           evidence, "this dump cannot be restored: take a new dump now, "
                           "restore it the same way, and keep the broken one for analysis")]
    except scratch.ScratchError as exc:
        evidence.update(step="scratch cluster", error=secrets.mask(str(exc)))
        return [ctx.result(Status.UNKNOWN, f"no scratch cluster for the test restore: "
                           f"{secrets.mask(str(exc))}", evidence,
                           f"fix the scratch space ({scratch.ENV_VAR}) or PostgreSQL's "
                           "binaries, then rerun")]
    if not snapshot:
        with postgres.connect(url, statement_timeout_ms=thresholds.VERIFY_STATEMENT_TIMEOUT_MS
                              ) as conn:
            snapshot.append(table_state(conn))
    source = snapshot[0]
    mb_s = evidence["bytes"] / 1e6 / max(restored.seconds, 1e-3)
    evidence.update(seconds=round(restored.seconds, 2), throughput_mb_s=round(mb_s, 2),
                    restored_database_bytes=restored.database_bytes,
                    tables=len(restored.state.counts))
    findings = [ctx.result(Status.OK,
                           f"{dump.name} ({fmt}) restored into a scratch cluster in "
                           f"{restored.seconds:.1f} s ({mb_s:.1f} MB/s of dump), "
                           f"{len(restored.state.counts)} tables", evidence)]
    findings.append(compare_row_counts(ctx, restored.state, source, dump.name))
    findings.append(compare_checksums(ctx, restored.state, source, dump.name))
    return findings


class RestoreFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.message = step, message


def _restore(dump: Path, fmt: str, database: str, roles: list[str],
             timeout_s: float) -> Restored:
    with scratch.cluster("backup-verification") as sc:
        with sc.connect() as conn:
            existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
            for role in roles:  # the dump's owners and grantees, so ownership restores too
                if role not in existing:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'")
                         .format(sql.Identifier(database)))
        command = restore_command(fmt, dump, sc.dsn(database), sc.bin)
        tool = Path(command[0]).name
        began = time.monotonic()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, env=secrets.clean_environment())
        except subprocess.TimeoutExpired:
            raise RestoreFailed(tool, f"did not finish within {timeout_s:g} s") from None
        seconds = time.monotonic() - began
        if proc.returncode != 0:
            raise RestoreFailed(tool, f"exit {proc.returncode}: {_tool_message(proc.stderr)}")
        with sc.connect(database, row_factory=dict_row) as conn:
            size = int(_first(conn.execute("SELECT pg_database_size(current_database())")
                              .fetchone()))
            state = table_state(conn)
    return Restored(dump, fmt, seconds, size, state)


@check("backup.restore_row_counts")
def compare_row_counts(ctx: RunContext, restored: TableState, source: TableState,
                       dump: str = "the dump") -> Finding:
    """Every source table is in the restore; a key table the source has rows in is not empty
    there; other differences are the changes since the dump (info, listed)."""
    rows = []
    for name in sorted(set(source.counts) | set(restored.counts)):
        src, got = source.counts.get(name), restored.counts.get(name)
        rows.append({"table": name, "source": src, "restored": got,
                     "difference": None if src is None or got is None else got - src})
    table = pd.DataFrame(rows)
    missing = [r["table"] for r in rows if r["restored"] is None]
    missing_key = [t for t in missing if KEY_TABLE.match(t.split(".", 1)[1])]
    missing_other = [t for t in missing if t not in missing_key]
    emptied = [r["table"] for r in rows if r["restored"] == 0 and (r["source"] or 0) > 0
               and KEY_TABLE.match(r["table"].split(".", 1)[1])]
    differ = [r for r in rows if r["difference"] not in (None, 0)]
    evidence = {"tables": len(source.counts), "matching": sum(1 for r in rows
                                                              if r["difference"] == 0),
                "missing_in_restore": missing, "key_tables_empty": emptied,
                "differences": {r["table"]: r["difference"] for r in differ},
                "only_in_restore": [r["table"] for r in rows if r["source"] is None],
                "not_readable_on_source": source.unreadable}
    if missing_key or emptied:
        what = "; ".join(filter(None, [
            f"key tables missing ({', '.join(missing_key[:5])})" if missing_key else "",
            f"key tables empty ({', '.join(emptied[:5])})" if emptied else ""]))
        return ctx.result(Status.CRITICAL, f"{dump} restored lacks data the source has: "
                          f"{what}", evidence, "the dump is incomplete: check pg_dump's "
                          "options (-t/-n filters, permissions of the dumping role) and take "
                          "a full dump", table=table)
    if missing_other:
        return ctx.result(Status.WARNING, f"{dump} restored lacks {len(missing_other)} tables "
                          f"the source has ({', '.join(missing_other[:5])}): created since "
                          "the dump, or left out of it", evidence,
                          "if the table is older than the dump, pg_dump leaves it out "
                          "(-t/-T/-n options, the dumping role's privileges): fix the dump",
                          table=table)
    if differ:
        grew = ", ".join(f"{r['table']} {r['difference']:+d}" for r in differ[:5])
        return ctx.result(Status.INFO, f"{dump}: {evidence['matching']} of {len(rows)} "
                          f"tables match the source row for row; {len(differ)} changed since "
                          f"the dump (restored minus source: {grew})", evidence, table=table)
    unread = f" ({len(source.unreadable)} not readable on the source)" \
        if source.unreadable else ""
    return ctx.result(Status.OK, f"{dump}: all {len(rows)} tables match the source row for row"
                      f"{unread}", evidence, table=table)


@check("backup.restore_checksums")
def compare_checksums(ctx: RunContext, restored: TableState, source: TableState,
                      dump: str = "the dump") -> Finding:
    """md5 of each key table's rows in primary-key order, restored against the source."""
    rows, changed, differ = [], [], []
    for name in sorted(source.checksums):
        same = restored.checksums.get(name) == source.checksums[name]
        counts_same = restored.counts.get(name) == source.counts.get(name)
        rows.append({"table": name, "source_md5": source.checksums[name],
                     "restored_md5": restored.checksums.get(name), "match": same})
        if not same:
            (differ if counts_same else changed).append(name)
    table = pd.DataFrame(rows)
    evidence = {"key_tables": len(rows), "mismatch_same_count": differ,
                "changed_since_dump": changed}
    if not rows:
        return ctx.result(Status.INFO, "no key table (tb_*) on the source to checksum",
                          evidence)
    if differ:
        return ctx.result(Status.WARNING,
                          f"{dump}: {', '.join(differ)}: same row count but different content from "
                          "the source (rows updated since the dump, or the restore altered "
                          "them)", evidence, "compare the rows by primary key; if nothing "
                          "was updated since the dump, the dump is not faithful", table=table)
    if changed:
        return ctx.result(Status.INFO, f"{dump}: {len(rows) - len(changed)} of {len(rows)} "
                          f"key tables identical to the source; {', '.join(changed)} changed "
                          "since the dump (row counts differ too)", evidence, table=table)
    return ctx.result(Status.OK, f"{dump}: all {len(rows)} key tables identical to the source "
                      "(md5 of their rows by primary key)", evidence, table=table)


# -- config tarballs and audit archives --------------------------------------------------------


def _matching(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    return sorted((p for p in directory.iterdir() if p.is_file() and pattern.match(p.name)),
                  key=lambda p: p.stat().st_mtime, reverse=True)


@check("backup.config_tarballs")
def check_config_tarballs(ctx: RunContext,
                          max_age_hours: float = thresholds.CONFIG_BACKUP_MAX_AGE_HOURS
                          ) -> Finding:
    """§5.1 "Configuration Backups (hourly)": the newest tarball's age, and every tarball
    read to its end (tar -tzf) so a truncated or corrupt one is found."""
    directory = ctx.target.get("backup_dir")
    if not directory:
        return ctx.result(Status.UNKNOWN, "the target names no backup_dir", {},
                          "add backup_dir to the inventory")
    found = _matching(Path(directory), CONFIG_RE)
    if not found:
        return ctx.result(Status.WARNING, f"no config tarball (config-YYYYMMDD-HHMMSS.tar.gz) "
                          f"in {directory}", {"backup_dir": directory},
                          "install §5.1's hourly tar -czf of /etc/fraiseql")
    rows, broken = [], []
    for path in found:
        try:
            with tarfile.open(path, "r:gz") as tar:
                members = len(tar.getmembers())
            error = None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            members, error = None, str(exc) or type(exc).__name__
            broken.append(f"{path.name} ({error})")
        rows.append({"file": path.name, "bytes": path.stat().st_size, "members": members,
                     "age_hours": round((time.time() - path.stat().st_mtime) / 3600, 1),
                     "error": error})
    table = pd.DataFrame(rows)
    age_h = rows[0]["age_hours"]
    evidence = {"tarballs": len(found), "newest": found[0].name, "newest_age_hours": age_h,
                "unreadable": broken, "max_age_hours": max_age_hours}
    if broken:
        return ctx.result(Status.CRITICAL, f"{len(broken)} config tarballs unreadable: "
                          f"{'; '.join(broken[:5])}", evidence,
                          "take a config backup now and find why these broke (disk full, "
                          "a copy cut short)", table=table)
    if age_h > max_age_hours:
        return ctx.result(Status.WARNING, f"the newest config tarball {found[0].name} is "
                          f"{age_h:.1f} h old (§5.1 backs up hourly)", evidence,
                          "check the hourly config backup cron job", table=table)
    return ctx.result(Status.OK, f"{len(found)} config tarballs, all readable; newest "
                      f"{found[0].name} {age_h:.1f} h old", evidence, table=table)


def gzip_test(path: Path) -> str | None:
    """What `gunzip -t` checks: the stream decompresses to its end and the CRC and length
    match. None when whole, else the error."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return str(exc) or type(exc).__name__
    return None


@check("backup.audit_archives")
def check_audit_archives(ctx: RunContext,
                         max_age_hours: float = thresholds.BACKUP_MAX_AGE_HOURS) -> Finding:
    """§5.1 "Audit Log Backups" and "Verify integrity: gunzip -t", on every archive."""
    directory = ctx.target.get("backup_dir")
    if not directory:
        return ctx.result(Status.UNKNOWN, "the target names no backup_dir", {},
                          "add backup_dir to the inventory")
    found = _matching(Path(directory), AUDIT_RE)
    if not found:
        return ctx.result(Status.WARNING, f"no audit archive (audit-YYYYMMDD.gz) in "
                          f"{directory}", {"backup_dir": directory},
                          "install §5.1's daily audit-log archive")
    rows = [{"file": p.name, "bytes": p.stat().st_size, "error": gzip_test(p),
             "age_hours": round((time.time() - p.stat().st_mtime) / 3600, 1)} for p in found]
    table = pd.DataFrame(rows)
    broken = [f"{r['file']} ({r['error']})" for r in rows if r["error"]]
    age_h = rows[0]["age_hours"]
    evidence = {"archives": len(rows), "newest": rows[0]["file"], "newest_age_hours": age_h,
                "corrupt": broken, "max_age_hours": max_age_hours}
    if broken:
        return ctx.result(Status.CRITICAL, f"{len(broken)} audit archives fail gunzip -t: "
                          f"{'; '.join(broken[:5])}", evidence,
                          "re-archive those days from fraiseql_audit_logs while the rows are "
                          "still in the table, and find why the files broke", table=table)
    if age_h > max_age_hours:
        return ctx.result(Status.WARNING, f"the newest audit archive {rows[0]['file']} is "
                          f"{age_h:.0f} h old (§5.1 archives daily)", evidence,
                          "check the daily audit archive cron job", table=table)
    return ctx.result(Status.OK, f"{len(rows)} audit archives pass gunzip -t; newest "
                      f"{rows[0]['file']}", evidence, table=table)


# -- retention ---------------------------------------------------------------------------------


def mtime_days(path: Path, now: float | None = None) -> int:
    """find's -mtime: the file's age in whole days, rounded down (+30 means > 30)."""
    return int(((now or time.time()) - path.stat().st_mtime) // 86400)


def expired(backup_dir: Path, kind: str, days: int, now: float | None = None
            ) -> tuple[list[Path], list[Path]]:
    """(files §5.1's `find backup_dir -name PATTERN -mtime +days` matches, the newest of them
    kept because it is the last backup of its kind)."""
    files = [p for pattern in RETENTION_PATTERNS[kind] for p in backup_dir.rglob(pattern)
             if p.is_file() and not p.is_symlink()]
    old = [p for p in files if mtime_days(p, now) > days]
    newest = max(files, key=lambda p: p.stat().st_mtime, default=None)
    kept = [p for p in old if p == newest]
    return sorted(p for p in old if p != newest), kept


@check("backup.retention")
def check_retention(ctx: RunContext, dump_days: int = thresholds.DUMP_RETENTION_DAYS,
                    config_days: int = thresholds.CONFIG_RETENTION_DAYS) -> Finding:
    """§5.1 retention: `find /backups -name 'fraiseql-*.sql' -mtime +30 -delete` (dumps of
    both formats here) and `... 'config-*.tar.gz' -mtime +90 -delete`. Lists what they would
    delete; deletes (each file an action) only with execute=True, and never the newest
    backup of a kind, which find would."""
    directory = ctx.target.get("backup_dir")
    if not directory:
        return ctx.result(Status.UNKNOWN, "the target names no backup_dir", {},
                          "add backup_dir to the inventory")
    base, now = Path(directory), time.time()
    plan, kept = [], []
    for kind, days in (("dump", dump_days), ("config", config_days)):
        old, last = expired(base, kind, days, now)
        plan += [(kind, days, p) for p in old]
        kept += [str(p) for p in last]
    find = [f"find {shlex.quote(str(base))} -name {shlex.quote(pattern)} -mtime +{days} -delete"
            for kind, days in (("dump", dump_days), ("config", config_days))
            for pattern in RETENTION_PATTERNS[kind]]
    table = pd.DataFrame([{"file": str(p), "kind": kind, "age_days": mtime_days(p, now),
                           "limit_days": days} for kind, days, p in plan])
    evidence: dict[str, Any] = {"would_delete": [str(p) for _, _, p in plan],
                                "kept_newest": kept, "runbook_commands": find,
                                "dump_days": dump_days, "config_days": config_days}
    if not plan:
        return ctx.result(Status.OK, f"nothing beyond retention ({dump_days} days for dumps, "
                          f"{config_days} for config tarballs)", evidence)
    execute = ctx.may_execute()
    deleted, failed = [], []
    for _kind, _days, path in plan:
        command = f"rm -- {shlex.quote(str(path))}"
        if not execute:
            ctx.action("delete_expired_backup", command, executed=False)
            continue
        try:
            path.unlink()
            deleted.append(str(path))
            ctx.action("delete_expired_backup", command, executed=True, result="deleted")
        except OSError as exc:
            failed.append(f"{path.name}: {exc.strerror or exc}")
            ctx.action("delete_expired_backup", command, executed=True,
                       result=f"failed: {exc.strerror or exc}")
    evidence.update(deleted=deleted, failed=failed)
    if not execute:
        return ctx.result(Status.INFO, f"{len(plan)} backups beyond retention would be deleted "
                          "(not executed: rerun with execute=True)", evidence,
                          "rerun with -p execute true to delete them", table=table)
    if failed:
        return ctx.result(Status.WARNING, f"deleted {len(deleted)} expired backups; "
                          f"{len(failed)} could not be: {'; '.join(failed[:3])}", evidence,
                          "check the backup directory's permissions", table=table)
    return ctx.result(Status.OK, f"deleted {len(deleted)} backups beyond retention", evidence,
                      table=table)
