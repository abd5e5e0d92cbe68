"""Backups as runbook §5.1 defines them: a daily dump that `pg_restore --list` can read, and
a continuous WAL archive. Checking that a backup *restores* belongs to the DR runbooks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import pgbin

DUMP_PATTERNS = ("fraiseql-*.dump", "fraiseql-*.sql", "fraiseql-*.backup")


def pg_restore() -> str:
    """pg_restore from the same installation the sandbox uses (any 10+ reads our dumps)."""
    return str(pgbin.pg_bin("pg_restore"))


@check("backup.recent_dump")
def check_recent_dump(ctx: RunContext,
                      max_age_hours: float = thresholds.BACKUP_MAX_AGE_HOURS) -> Finding:
    """§5.1 "Full backup (daily, 02:00 UTC)" and "Verify backups: pg_restore --list"."""
    directory = ctx.target.get("backup_dir")
    if not directory:
        return ctx.result(Status.UNKNOWN,
                          "the target names no backup_dir, so backups cannot be checked", {},
                          "add backup_dir to the inventory")
    base = Path(directory)
    dumps = sorted((p for pattern in DUMP_PATTERNS for p in base.glob(pattern)),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    table = pd.DataFrame([{"file": p.name, "bytes": p.stat().st_size,
                           "age_hours": round((time.time() - p.stat().st_mtime) / 3600, 1)}
                          for p in dumps[:10]])
    if not dumps:
        return ctx.result(Status.CRITICAL,
                          f"no dump in {base}", {"backup_dir": str(base)},
                          "run the daily pg_dump (§5.1) and check the cron job")
    newest = dumps[0]
    age_h = (time.time() - newest.stat().st_mtime) / 3600
    listing = subprocess.run([pg_restore(), "--list", str(newest)], capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL,
                             env=secrets.clean_environment())
    entries = sum(1 for line in listing.stdout.splitlines()
                  if line and not line.startswith(";"))
    evidence = {"newest": newest.name, "age_hours": round(age_h, 1), "bytes":
                newest.stat().st_size, "toc_entries": entries, "dumps": len(dumps),
                "max_age_hours": max_age_hours}
    if listing.returncode != 0:
        reason = (listing.stderr.strip().splitlines() or ["unreadable"])[-1]
        return ctx.result(Status.CRITICAL,
                          f"the newest dump {newest.name} is not readable by pg_restore: "
                          f"{reason}", evidence,
                          "use pg_dump -Fc (custom format): the runbook's plain .sql dump "
                          "cannot be verified with pg_restore --list", table=table)
    if age_h > max_age_hours:
        return ctx.result(Status.CRITICAL,
                          f"the newest dump is {age_h:.0f} h old (over {max_age_hours:g} h)",
                          evidence, "check the backup cron job and its log", table=table)
    return ctx.result(Status.OK,
                      f"{newest.name}: {age_h:.1f} h old, {entries} entries readable by "
                      "pg_restore", evidence, table=table)
