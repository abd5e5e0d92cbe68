"""Runbook §2.2 step 2 "Run database migrations", with FraiseQL's real tool, fraiseql-confiture.

§2.2 says `fraiseql-migrate --config /etc/fraiseql/config.toml`; there is no such command.
FraiseQL's migrations are confiture's (`confiture migrate up|down`), one version per file pair
`<version>_<name>.up.sql` / `.down.sql` (or a Python class), tracked in the `tb_confiture`
table. A migration is a planned change, so it goes through the three phases of
`checks.change`:

- **pre-checks**: `confiture migrate status` (what is applied, what is pending, the plan for
  this run), which migrations of the plan can be rolled back (read from the files: confiture
  itself only refuses a missing .down.sql, see `reversibility`), `confiture migrate
  preflight` (its static review of the files: missing rollbacks, lock-risky statements), the
  lock risk now (a long transaction holding a lock on a table the migration alters: the
  ALTER would queue behind it and every query on that table behind the ALTER), the
  instances' schema_hash before, and a fresh dump (no migration after a failed dump);
- **the change**: `confiture migrate up` (execute=True), or `down` / `down-to` for a
  rollback, which is dangerous (execute=True and confirm = the target's name). Every
  session confiture opens gets PostgreSQL's lock_timeout, so a statement gives up instead
  of queueing behind a long transaction. Without the switches the command is recorded;
- **verification**: status clean, every instance on one schema_hash, a read through the
  data path;
- **rollback**: when the verification of an `up` fails, the migrations this run applied are
  rolled back (`migrate down --steps N`), only with confirm and only if all of them can be.

Every confiture exit code becomes a finding with its meaning (`targets.confiture`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fraiseql_rb.checks import backup, change, instances
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import confiture, pgstats, postgres

RUNBOOK = "schema-migration"
DIRECTIONS = ("up", "down")
PRECHECKS = ("schema_migration.status", "schema_migration.reversibility",
             "schema_migration.preflight", "schema_migration.lock_risk", "backup.fresh_dump")
STATUS_TIMEOUT_S = thresholds.COMMAND_TIMEOUT_S  # status and preflight only read
VERIFY_CHECKS = ("schema_migration.verify_status", "deploy.consistency", "graphql.data_path")

# `-- confiture:irreversible <reason>`: confiture's generator writes it into a .down.sql that
# has nothing to undo a change with, and before an up statement whose data no down brings back
_IRREVERSIBLE = re.compile(r"^\s*--\s*confiture:irreversible\b[ \t]*(?P<why>.*)$", re.M)
_LINE_COMMENT = re.compile(r"--[^\n]*")
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.S)


# -- the migrations on disk, and what can be undone --------------------------------------------

@dataclass(frozen=True)
class Migration:
    """One migration: its files, whether it can be rolled back (and why not), what data its
    up loses (its `confiture:irreversible` reasons), and its state in the database."""

    version: str
    name: str
    file: str | None  # the .up.sql or .py; None: the ledger knows it, the directory does not
    kind: str  # sql, python, missing
    reversible: bool
    why_not: str | None = None
    loses_data: tuple[str, ...] = ()
    status: str = "unknown"  # applied, pending, unknown (from confiture status)
    applied_at: str | None = None


def parse_name(filename: str) -> tuple[str, str]:
    """(version, name) of a migration file, as confiture reads it: the text before the first
    underscore is the version (`20260301000002_add_post_updated_at.up.sql`)."""
    stem = filename
    for suffix in (".up.sql", ".down.sql", ".py"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    version, sep, name = stem.partition("_")
    return version, (name if sep else stem)


def has_statement(sql: str) -> bool:
    """Whether SQL text holds anything but comments and whitespace."""
    return bool(_LINE_COMMENT.sub("", _BLOCK_COMMENT.sub("", sql)).strip(" \t\r\n;"))


def reversibility(up_file: Path) -> tuple[bool, str | None, tuple[str, ...]]:
    """(reversible, why not, data its up loses) of a SQL migration, from its files.

    Measured with confiture 1.29: `migrate up` refuses an .up.sql without its .down.sql
    (MIGR_001) and only `down-to` refuses to cross one (exit 8); but a .down.sql that holds
    only the `-- confiture:irreversible` directive, as confiture's generator writes when no
    rollback can be derived, is run by `migrate down` as if it undid the change: the ledger
    row goes, the change stays. So a .down.sql with that directive, or with no statement, is
    irreversible here, and refused before confiture is called."""
    up_text = up_file.read_text(encoding="utf-8", errors="replace")
    loses = tuple(m.group("why").strip() or "data" for m in _IRREVERSIBLE.finditer(up_text))
    down = up_file.with_name(up_file.name[: -len(".up.sql")] + ".down.sql")
    if not down.is_file():
        return False, f"{down.name} does not exist", loses
    text = down.read_text(encoding="utf-8", errors="replace")
    declared = [m.group("why").strip() for m in _IRREVERSIBLE.finditer(text)]
    if declared:
        return False, (f"{down.name} declares it irreversible: "
                       f"{'; '.join(d for d in declared if d) or 'no reason given'}"), loses
    if not has_statement(text):
        return False, f"{down.name} holds no statement: `migrate down` would only delete " \
                      "its ledger row", loses
    return True, None, loses


def read_migrations(directory: Path) -> list[Migration]:
    """Every migration file in `directory`, by version, as confiture discovers them (.up.sql
    files and .py modules other than __init__ and _private ones). A Python migration defines
    down() in its class: it is taken as reversible, as confiture takes it."""
    found: list[Migration] = []
    for path in directory.glob("*.up.sql"):
        version, name = parse_name(path.name)
        reversible, why, loses = reversibility(path)
        found.append(Migration(version, name, path.name, "sql", reversible, why, loses))
    for path in directory.glob("*.py"):
        if path.name == "__init__.py" or path.name.startswith("_"):
            continue
        version, name = parse_name(path.name)
        found.append(Migration(version, name, path.name, "python", True))
    return sorted(found, key=lambda m: m.version)


def merge_status(files: list[Migration], payload: dict[str, Any] | None,
                 tracking_table: bool) -> list[Migration]:
    """The files with their state from `confiture migrate status -f json`, plus any version
    the ledger holds that no file matches (it cannot be rolled back from here)."""
    states = {str(m.get("version")): m for m in (payload or {}).get("migrations") or []
              if isinstance(m, dict)}
    applied = [str(v) for v in (payload or {}).get("applied") or []]
    merged = []
    for m in files:
        state = states.get(m.version, {})
        status = str(state.get("status") or "unknown")
        if not tracking_table:
            status = "pending"
        merged.append(Migration(**{**asdict(m), "status": status,
                                   "applied_at": state.get("applied_at")}))
    known = {m.version for m in files}
    for version in applied:
        if version not in known:
            merged.append(Migration(version, str(states.get(version, {}).get("name") or "?"),
                                    None, "missing", False, "its file is not in the "
                                    "migrations directory", status="applied"))
    return sorted(merged, key=lambda m: m.version)


@dataclass(frozen=True)
class Plan:
    """What this run would do: the versions in the order they run, or why there is nothing
    to do (`nothing`), or why no plan can be made (`problem`)."""

    direction: str
    to_version: str | None
    versions: tuple[str, ...] = ()
    nothing: str | None = None
    problem: str | None = None


def make_plan(migrations: list[Migration], direction: str,
              to_version: str | None = None) -> Plan:
    """up: the pending migrations in version order (up to and including `to_version`, as
    `migrate up --target`); down: the last applied one (`migrate down`, back to the previous
    version), or every applied one newer than `to_version`, newest first (`down-to`)."""
    if direction not in DIRECTIONS:
        return Plan(direction, to_version, problem=f"direction {direction!r} is not up or down")
    known = {m.version: m for m in migrations}
    if to_version is not None and to_version not in known:
        return Plan(direction, to_version, problem=f"to_version {to_version} is not a "
                    f"migration here (known: {', '.join(known) or 'none'})")
    if direction == "up":
        pending = [m.version for m in migrations if m.status != "applied"]
        if to_version is not None:
            if known[to_version].status == "applied":
                return Plan(direction, to_version, nothing=f"{to_version} is already applied")
            pending = [v for v in pending if v <= to_version]
        if not pending:
            return Plan(direction, to_version, nothing="no migration is pending")
        return Plan(direction, to_version, tuple(pending))
    applied = [m.version for m in migrations if m.status == "applied"]
    if not applied:
        return Plan(direction, to_version, nothing="no migration is applied")
    if to_version is None:
        return Plan(direction, to_version, (applied[-1],))
    if to_version not in applied:
        return Plan(direction, to_version, problem=f"to_version {to_version} is not applied: "
                    "down-to keeps it applied and rolls back what is newer")
    newer = [v for v in applied if v > to_version]
    if not newer:
        return Plan(direction, to_version, nothing=f"{to_version} is the latest applied")
    return Plan(direction, to_version, tuple(reversed(newer)))


# -- what the steps share ---------------------------------------------------------------------

def _url(ctx: RunContext) -> str:
    """Migrations need DDL rights: the admin role (the schema owner, or a superuser) when the
    inventory has one, else the application's."""
    return ctx.target.database_url("admin_database" if ctx.target.get("admin_database_url")
                                   else "database")


def _directory(ctx: RunContext) -> Path:
    return Path(str(ctx.target.require("migrations_dir")))


def _status_finding(ctx: RunContext) -> Finding | None:
    return ctx.latest("schema_migration.status")


def plan_of(ctx: RunContext) -> dict[str, Any] | None:
    """The plan the status pre-check made (its evidence), or None when it made none."""
    found = _status_finding(ctx)
    plan = found.evidence.get("plan") if found is not None else None
    return plan if isinstance(plan, dict) and not plan.get("problem") else None


def _migrations(ctx: RunContext) -> dict[str, dict[str, Any]]:
    found = _status_finding(ctx)
    rows = found.evidence.get("migrations", []) if found is not None else []
    return {str(m["version"]): m for m in rows}


def _planned(ctx: RunContext) -> list[dict[str, Any]]:
    plan = plan_of(ctx) or {}
    table = _migrations(ctx)
    return [table[v] for v in plan.get("versions", []) if v in table]


def _direction(ctx: RunContext) -> str:
    plan = plan_of(ctx)
    return str(plan["direction"]) if plan else "up"


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["version", "name", "status", "reversible", "why_not", "loses_data", "file"]
    return pd.DataFrame([{c: (", ".join(r[c]) if c == "loses_data" else r.get(c))
                          for c in columns} for r in rows], columns=columns)


def _tool_failed(ctx: RunContext, ran: confiture.Run, stops: str) -> Finding:
    """A confiture run that failed, hung or could not start: critical, with its exit code,
    what confiture says it means and its last output; `stops` says what does not happen."""
    remediation = {
        "db_unreachable": "check admin_database_url (or database_url) and its password, and "
                          "that PostgreSQL accepts the connection (database-unavailable)",
        "missing": "install fraiseql-confiture (pip install 'fraiseql-confiture>=1.29,<1.30')",
        "timeout": "find what it waited for (a lock: pg_locks; the network), then rerun",
    }.get(ran.meaning[0], "read confiture's message and output above, fix it, and rerun")
    return ctx.result(Status.CRITICAL, f"{ran.describe()}; {stops}", ran.evidence(),
                      remediation)


# -- pre-checks -------------------------------------------------------------------------------

@check("schema_migration.status")
def check_status(ctx: RunContext, direction: str = "up", to_version: str | None = None,
                 timeout_s: float = STATUS_TIMEOUT_S) -> Finding:
    """§2.2 step 2's starting point: `confiture migrate status` against the database (which
    migrations are applied, which pending), merged with what the files say (which can be
    rolled back), and the plan for this run. Pending migrations are information, not a
    problem: the plan says what the change would run."""
    change.phase(ctx, "pre-checks", "is it safe to migrate now, and what will it cost")
    directory = _directory(ctx)
    if not directory.is_dir():
        return ctx.result(Status.CRITICAL, f"migrations_dir {directory} is not a directory: "
                          "there is nothing to migrate from", {"migrations_dir": str(directory)},
                          "point migrations_dir in the inventory at the directory of the "
                          "release's migrations (<version>_<name>.up.sql / .down.sql)")
    try:
        ledger = confiture.tracking_table(_url(ctx))
    except postgres.ConnectionFailed as exc:
        return ctx.result(Status.CRITICAL, f"cannot reach the database to read the migration "
                          f"state: {exc}; nothing is migrated", {"error": str(exc)},
                          "check admin_database_url (or database_url) and its password, and "
                          "that PostgreSQL accepts connections (database-unavailable)")
    tracking = ledger is not None
    if tracking:
        ran = confiture.run("status", migrations_dir=directory, database_url=_url(ctx),
                            timeout_s=timeout_s)
        print(f"ran: {ran.shown}")
        if ran.returncode not in (0, 1, 2) or ran.payload is None:
            return _tool_failed(ctx, ran, "the migration state is unknown, so nothing is "
                                "migrated")
        payload, command, code, said = ran.payload, ran.shown, ran.returncode, ran.meaning[1]
    else:  # `confiture migrate status` would create the table: a pre-check changes nothing
        payload, code = None, 2
        command = confiture.command_line("status", migrations_dir=directory,
                                         database_url=_url(ctx))[1]
        said = (f"not run: there is no {confiture.TRACKING_TABLE} (confiture has not run on "
                "this database), and `confiture migrate status` would create it")
        print(f"not run: {command} ({said})")
    migrations = merge_status(read_migrations(directory), payload, tracking)
    plan = make_plan(migrations, direction, to_version)
    rows = [asdict(m) for m in migrations]
    pending = [m for m in migrations if m.status != "applied"]
    irreversible = [m.version for m in migrations if not m.reversible]
    evidence = {"migrations_dir": str(directory), "tracking_table": ledger,
                "command": command, "returncode": code, "meaning": said,
                "applied": [m.version for m in migrations if m.status == "applied"],
                "pending": [m.version for m in pending], "irreversible": irreversible,
                "migrations": rows, "plan": asdict(plan)}
    table = _table(rows)
    state = (f"{len(migrations) - len(pending)} applied, {len(pending)} pending"
             + ("" if tracking else f" (no {confiture.TRACKING_TABLE} yet: confiture has not "
                "run on this database; `migrate up` creates it)"))
    if irreversible:
        state += f"; cannot be rolled back: {', '.join(irreversible)}"
    if plan.problem:
        return ctx.result(Status.CRITICAL, f"{state}; no plan: {plan.problem}", evidence,
                          "rerun with a to_version from the table (or none)", table=table)
    if plan.nothing:
        return ctx.result(Status.INFO, f"{state}; nothing to do ({plan.nothing})", evidence,
                          table=table)
    verb = "apply" if plan.direction == "up" else "roll back"
    return ctx.result(Status.INFO, f"{state}; this run would {verb} "
                      f"{', '.join(plan.versions)}", evidence, table=table)


@check("schema_migration.reversibility")
def check_reversibility(ctx: RunContext) -> Finding:
    """Can what this run does be undone? A rollback (direction down) that would cross an
    irreversible migration is refused here, before confiture runs: confiture refuses only a
    missing .down.sql (exit 8, and only in `down-to`), and would "roll back" a .down.sql that
    has nothing to run. An `up` with an irreversible migration is information: once applied,
    the dump taken before it is the only way back."""
    plan = plan_of(ctx)
    if plan is None or not plan["versions"]:
        return ctx.skip("no migration to run")
    rows = _planned(ctx)
    blocked = [r for r in rows if not r["reversible"]]
    lossy = [r for r in rows if r["loses_data"]]
    evidence = {"direction": plan["direction"], "versions": plan["versions"],
                "irreversible": [{"version": r["version"], "why": r["why_not"]}
                                 for r in blocked],
                "loses_data": {r["version"]: r["loses_data"] for r in lossy}}
    named = "; ".join(f"{r['version']} ({r['name']}) cannot be rolled back: {r['why_not']}"
                      for r in blocked)
    if plan["direction"] == "down":
        if blocked:
            return ctx.result(Status.CRITICAL, f"refused: {named}; nothing is rolled back",
                              evidence | {"refused": True},
                              "restore the dump taken before that migration was applied "
                              "(pg_restore), or write a new migration that undoes what can "
                              "be undone; roll back only what is newer (to_version)")
        return ctx.result(Status.OK, f"every migration to roll back ({', '.join(plan['versions'])})"
                          " has a .down.sql with statements", evidence | {"refused": False})
    if blocked:
        return ctx.result(Status.INFO, f"once applied, {named}. The rollback will refuse it "
                          "and the dump taken before the change is the only way back",
                          evidence | {"refused": False})
    note = (f"; the up of {', '.join(r['version'] for r in lossy)} loses data no rollback "
            "brings back" if lossy else "")
    return ctx.result(Status.OK, f"every migration to apply ({', '.join(plan['versions'])}) "
                      f"can be rolled back{note}", evidence | {"refused": False})


def _issue_version(issue: dict[str, Any]) -> str | None:
    """The migration a preflight issue is about: its file's version (the replica-safety
    issues put the table in `migration`), else `migration`."""
    if issue.get("file"):
        return parse_name(Path(str(issue["file"])).name)[0]
    return str(issue["migration"]) if issue.get("migration") else None


def affected_tables(change_set: list[dict[str, Any]], versions: list[str]
                    ) -> list[tuple[str | None, str]]:
    """(schema, table) of every object confiture's change set names for `versions`
    (`public.tb_post.updated_at` -> (public, tb_post); `tb_post` -> (None, tb_post))."""
    found: list[tuple[str | None, str]] = []
    for item in change_set:
        if str(item.get("migration")) not in versions or not item.get("object"):
            continue
        parts = str(item["object"]).split(".")
        pair = (parts[0], parts[1]) if len(parts) >= 2 else (None, parts[0])
        if pair not in found:
            found.append(pair)
    return found


@check("schema_migration.preflight")
def check_preflight(ctx: RunContext, timeout_s: float = STATUS_TIMEOUT_S) -> Finding:
    """`confiture migrate preflight`: confiture's static review of the migration files
    (it does not connect): a missing rollback, unparseable SQL, duplicate versions, changed
    files are errors and stop the change; lock-risky statements (an index built without
    CONCURRENTLY, a constraint validated at once) are warnings, shown as what the change
    will cost. Only the issues of this run's migrations count. Its change set names the
    tables the migrations touch, for the lock-risk check."""
    plan = plan_of(ctx)
    if plan is None or not plan["versions"]:
        return ctx.skip("no migration to run")
    ran = confiture.run("preflight", migrations_dir=_directory(ctx), timeout_s=timeout_s)
    print(f"ran: {ran.shown}")
    if ran.returncode not in (0, 7) or ran.payload is None:
        return _tool_failed(ctx, ran, "the migrations were not reviewed, so none runs")
    versions = list(plan["versions"])
    issues = [i for i in ran.payload.get("issues") or [] if isinstance(i, dict)
              and (_issue_version(i) in versions or _issue_version(i) is None)]
    changes = [c for c in (ran.payload.get("change_set") or {}).get("changes") or []
               if isinstance(c, dict)]
    mine = [c for c in changes if str(c.get("migration")) in versions]
    errors = [i for i in issues if i.get("severity") in ("error", "critical")]
    warnings = [i for i in issues if i.get("severity") == "warning"]
    tables = affected_tables(changes, versions)
    evidence = {"command": ran.shown, "returncode": ran.returncode,
                "window_safe": ran.payload.get("window_safe"),
                "errors": errors, "warnings": warnings, "changes": mine,
                "tables": [list(t) for t in tables]}
    table = pd.DataFrame([{"severity": i.get("severity"), "code": i.get("code"),
                           "migration": _issue_version(i), "message": i.get("message"),
                           "advice": i.get("actionable")} for i in errors + warnings],
                         columns=["severity", "code", "migration", "message", "advice"])
    tiers = sorted({str(c.get("tier")) for c in mine if c.get("tier")})
    cost = f"; change tiers: {', '.join(tiers)}" if tiers else ""
    if errors:
        return ctx.result(Status.CRITICAL, f"preflight found {len(errors)} error(s): "
                          + "; ".join(f"{i.get('code')}: {i.get('message')}" for i in errors),
                          evidence, errors[0].get("actionable") or "fix the migration files "
                          "and rerun", table=table)
    if warnings:
        return ctx.result(Status.INFO, f"preflight: no error; {len(warnings)} warning(s) on "
                          "what the change will cost: " + "; ".join(
                              f"{i.get('code')} ({_issue_version(i)})" for i in warnings)
                          + cost, evidence, table=table)
    return ctx.result(Status.OK, f"preflight: no error or warning for "
                      f"{', '.join(versions)}{cost}", evidence, table=table)


def judge_locks(locks: pd.DataFrame, tables: list[tuple[str | None, str]] | None,
                long_transaction_s: float) -> dict[str, Any]:
    """Which sessions' locks make the migration risky now. `locks` is pgstats.relation_locks
    (schema, table, mode, granted, state, transaction_age_s, ...); `tables` what the
    migration alters (None: not known). A transaction older than `long_transaction_s`
    holding a lock on an altered table blocks the migration's ALTER (it needs ACCESS
    EXCLUSIVE, which conflicts with every lock), and everyone queued after it; a long one on
    another table may reach an altered one at any moment; a lock whose age this role cannot
    see is named as such."""
    def altered(row: pd.Series) -> bool:
        if tables is None:
            return True
        return any(t == row["table"] and (s is None or s == row["schema"]) for s, t in tables)

    blocking, long_elsewhere, unseen, brief = [], [], [], []
    for _, row in locks.iterrows():
        if not bool(row.get("granted")):
            continue
        age = row.get("transaction_age_s")
        entry = {"pid": int(row["pid"]), "table": f"{row['schema']}.{row['table']}",
                 "mode": row.get("mode"), "state": row.get("state"), "user": row.get("user"),
                 "transaction_age_s": None if pd.isna(age) else round(float(age), 1)}
        if pd.isna(age):
            (unseen if altered(row) else brief).append(entry)
        elif float(age) > long_transaction_s:
            (blocking if altered(row) and tables is not None else long_elsewhere).append(entry)
        else:
            brief.append(entry)
    return {"blocking": blocking, "long_elsewhere": long_elsewhere, "unseen": unseen,
            "brief": len(brief)}


@check("schema_migration.lock_risk")
def check_lock_risk(ctx: RunContext,
                    long_transaction_s: float = thresholds.LONG_TRANSACTION_S) -> Finding:
    """Lock risk now: the migration's ALTER TABLE needs ACCESS EXCLUSIVE on each table it
    alters. Queued behind a transaction that holds any lock on that table, it blocks every
    later query on the table for as long as that transaction lasts (the lock_timeout this
    runbook gives confiture ends that wait, failing the migration). pg_locks shows every
    role's locks; how long their transactions have been open needs pg_read_all_stats for
    other roles' sessions."""
    plan = plan_of(ctx)
    if plan is None or not plan["versions"]:
        return ctx.skip("no migration to run")
    pre = ctx.latest("schema_migration.preflight")
    listed = pre.evidence.get("tables") if pre is not None else None
    tables = [(s, t) for s, t in listed] if listed else None
    with postgres.connect(_url(ctx)) as conn:
        locks = pgstats.relation_locks(conn)
    judged = judge_locks(locks, tables, long_transaction_s)
    where = (", ".join(f"{s}.{t}" if s else t for s, t in tables) if tables else
             "(not known: preflight named no table, so every table counts)")
    evidence = {"tables": [list(t) for t in tables] if tables else None,
                "long_transaction_s": long_transaction_s, **judged}
    shown = pd.DataFrame(judged["blocking"] + judged["long_elsewhere"] + judged["unseen"],
                         columns=["pid", "table", "mode", "state", "user",
                                  "transaction_age_s"])

    def named(entries: list[dict[str, Any]]) -> str:
        return "; ".join(f"pid {e['pid']} ({e['user']}, {e['state']}) holds {e['mode']} on "
                         f"{e['table']}" + (f" in a transaction open {e['transaction_age_s']:g} s"
                                            if e["transaction_age_s"] is not None else "")
                         for e in entries[:5])

    if judged["blocking"]:
        return ctx.result(Status.CRITICAL, f"a long transaction holds a lock on a table the "
                          f"migration alters: {named(judged['blocking'])}. The migration would "
                          "queue behind it and block every query on that table meanwhile",
                          evidence, "find what it is (pg_stat_activity) and let it finish, or "
                          "end it (SELECT pg_terminate_backend(pid)); then rerun", table=shown)
    if judged["long_elsewhere"]:
        return ctx.result(Status.WARNING, f"long transactions are open: "
                          f"{named(judged['long_elsewhere'])}; one that touches {where} while "
                          "the migration waits for its lock would queue behind it",
                          evidence, "let them finish before the change, or watch it: the "
                          "migration gives up after lock_timeout_ms", table=shown)
    if judged["unseen"]:
        return ctx.result(Status.INFO, f"locks on {where} whose transactions' age this role "
                          f"cannot see: {named(judged['unseen'])} (grant pg_read_all_stats "
                          "to see them); the migration gives up after lock_timeout_ms rather "
                          "than queue behind them", evidence, table=shown)
    return ctx.result(Status.OK, f"no transaction older than {long_transaction_s:g} s holds a "
                      f"lock on {where} ({judged['brief']} short-lived lock(s) now)", evidence)


@check("schema_migration.instances_before")
def snapshot_instances(ctx: RunContext) -> Finding:
    """Each instance's version and schema_hash before the change, for the verification to
    compare with. FraiseQL's schema_hash is the hash of the server's compiled schema
    (schema.compiled.json), not of the database."""
    plan = plan_of(ctx)
    if plan is None or not plan["versions"]:
        return ctx.skip("no migration to run")
    table = instances.instance_table(ctx)
    hashes = sorted({h for h in table["schema_hash"] if isinstance(h, str) and h})
    answering = int(table["http_status"].notna().sum())
    return ctx.result(Status.INFO, f"{answering} of {len(table)} instance(s) answer before the "
                      f"change; schema_hash "
                      f"{', '.join(h[:12] + '…' for h in hashes) or 'not reported'}",
                      {"schema_hashes": hashes, "instances": table["instance"].tolist(),
                       "answering": answering}, table=table)


def take_dump(ctx: RunContext) -> Finding:
    """The dump taken right before the change (a pre-check: a failed dump stops it). Of the
    schema when everything this run does can be undone by its own .down.sql; of the whole
    database when a migration to apply cannot be rolled back or loses data, and before a
    rollback (a .down.sql that drops a column drops its data): then the rows are what
    restoring needs. Taken only when the change may run; a dry run records the command."""
    plan = plan_of(ctx)
    if plan is None or not plan["versions"]:
        return backup.take_fresh_dump.skip(ctx, "no migration to run")
    direction = plan["direction"]
    blocking = change.stopping(ctx, PRECHECKS)
    if ctx.execute and blocking:
        return backup.take_fresh_dump.skip(ctx, f"the change will not run: "
                                           f"{', '.join(blocking)} stopped it")
    if ctx.execute and direction == "down" and ctx.confirm != ctx.target_name:
        return backup.take_fresh_dump.skip(ctx, "the rollback will not run without confirm")
    rows = _planned(ctx)
    schema_only = direction == "up" and all(r["reversible"] and not r["loses_data"]
                                            for r in rows)
    what = ("schema only: every migration to apply can be rolled back" if schema_only else
            "the whole database: " + ("the rollback's .down.sql may drop data"
                                      if direction == "down" else
                                      "a migration to apply cannot be rolled back or loses "
                                      "data"))
    return backup.take_fresh_dump(ctx, f"before confiture migrate {direction} "
                                  f"{', '.join(plan['versions'])}; {what}",
                                  schema_only=schema_only)


def authorize(ctx: RunContext) -> Finding:
    """The one decision whether the change runs (checks.change.gate): every pre-check
    recorded and none critical or unknown, something to do, execute=True, and for a rollback
    confirm = the target's name."""
    plan = plan_of(ctx)
    found = _status_finding(ctx)
    nothing = (plan or {}).get("nothing") or "no plan"
    needed = bool(plan and plan["versions"]) or found is None or \
        found.status in (Status.CRITICAL, Status.UNKNOWN)
    return change.gate(ctx, PRECHECKS, dangerous=_direction(ctx) == "down", needed=needed,
                       nothing_to_do=nothing)


# -- the change -------------------------------------------------------------------------------

def _arguments(plan: dict[str, Any], lock_timeout_ms: int) -> tuple[str, list[str]]:
    """confiture's subcommand and arguments for the plan."""
    wait = ["--lock-timeout", str(confiture.advisory_wait_ms(lock_timeout_ms))]
    if plan["direction"] == "up":
        target = ["--target", plan["to_version"]] if plan.get("to_version") else []
        return "up", [*target, *wait]
    if plan.get("to_version"):
        return "down-to", [str(plan["to_version"])]
    return "down", ["--steps", str(len(plan["versions"])), *wait]


def _record(ctx: RunContext, action: str, ran: confiture.Run) -> None:
    ctx.action(action, ran.shown, executed=True,
               result={"returncode": ran.returncode, "class": ran.meaning[0],
                       "error_code": ran.error_code, "elapsed_s": ran.elapsed_s,
                       "messages": ran.messages()[:3], "output": list(ran.output[-5:])})


def done_versions(ran: confiture.Run) -> list[str]:
    """The versions confiture reports applied (up) or rolled back (down, down-to)."""
    payload = ran.payload or {}
    items = payload.get("applied") if ran.command == "up" else payload.get("rolled_back")
    return [str(i.get("version") if isinstance(i, dict) else i) for i in items or []]


def _failure(ctx: RunContext, ran: confiture.Run, plan: dict[str, Any], done: list[str],
             lock_timeout_ms: int) -> Finding:
    """The finding for a failed confiture up/down: its meaning, in the migration's terms."""
    evidence = ran.evidence() | {"done": done, "plan": plan["versions"],
                                 "lock_timeout_ms": lock_timeout_ms}
    before = f"; applied before it and still applied: {', '.join(done)}" if done and \
        ran.command == "up" else (f"; rolled back before it: {', '.join(done)}" if done else "")
    if ran.lock_timed_out():
        return ctx.result(Status.CRITICAL, f"a migration statement gave up waiting for a table "
                          f"lock after {lock_timeout_ms} ms (PostgreSQL lock_timeout): a "
                          f"transaction holds a lock on the table; that migration was rolled "
                          f"back{before}. {ran.describe()}", evidence | {"lock_timeout": True},
                          "find the transaction holding the lock (the lock-risk pre-check, "
                          "pg_locks), let it finish or end it, then rerun")
    if ran.meaning[0] == "lock_contention":
        return ctx.result(Status.CRITICAL, f"{ran.describe()}: another confiture run is "
                          "migrating this database now; nothing was changed by this one",
                          evidence, "wait for the other migration to finish (confiture_lock_"
                          "holder names it), then rerun")
    if ran.meaning[0] == "irreversible_rollback" or ran.error_code in \
            confiture.IRREVERSIBLE_CODES:
        return ctx.result(Status.CRITICAL, f"refused by confiture: {ran.describe()}",
                          evidence | {"refused": True}, "restore the dump taken before the "
                          "migration instead; nothing was rolled back")
    return ctx.result(Status.CRITICAL, f"{ran.describe()}{before}", evidence,
                      "read confiture's message above; fix the migration or the database, "
                      "then rerun (status shows what is applied now)")


@check("schema_migration.change")
def migrate(ctx: RunContext, lock_timeout_ms: int = thresholds.MIGRATION_LOCK_TIMEOUT_MS,
            timeout_s: float = thresholds.MIGRATION_TIMEOUT_S) -> Finding:
    """§2.2 step 2 itself: `confiture migrate up` (or `down` / `down-to` for a rollback),
    only when the gate allowed it; otherwise the exact command is recorded, not run. Every
    session confiture opens has lock_timeout = `lock_timeout_ms` (PGOPTIONS), and confiture
    is stopped after `timeout_s`."""
    plan = plan_of(ctx)
    if plan is None or not plan["versions"]:
        return ctx.skip("no migration to run")
    change.phase(ctx, "change", f"confiture migrate {plan['direction']}: "
                 f"{', '.join(plan['versions'])}")
    command, args = _arguments(plan, lock_timeout_ms)
    action = f"migrate_{plan['direction']}"
    if not change.allowed(ctx):
        shown = _shown_command(ctx, command, args, lock_timeout_ms)
        print(repr(ctx.action(action, shown, executed=False)))
        return ctx.result(Status.INFO, f"not run ({change.gate_outcome(ctx)}): {shown}",
                          {"executed": False, "command": shown, "plan": plan["versions"]})
    ran = confiture.run(command, *args, migrations_dir=_directory(ctx),
                        database_url=_url(ctx), timeout_s=timeout_s,
                        lock_timeout_ms=lock_timeout_ms)
    _record(ctx, action, ran)
    done = done_versions(ran)
    if not ran.ok:
        if ran.returncode is None or ran.missing:
            return _tool_failed(ctx, ran, f"the migration may be half done: status shows what "
                                f"is applied{'; done: ' + ', '.join(done) if done else ''}")
        return _failure(ctx, ran, plan, done, lock_timeout_ms)
    verb = "applied" if plan["direction"] == "up" else "rolled back"
    return ctx.result(Status.OK, f"{verb} {', '.join(done) or 'nothing'} in "
                      f"{ran.elapsed_s:g} s", ran.evidence() | {"executed": True, "done": done,
                                                                "plan": plan["versions"]})


def _shown_command(ctx: RunContext, command: str, args: list[str],
                   lock_timeout_ms: int) -> str:
    """The command line a run would use, as an action records it (no password in it)."""
    return confiture.command_line(command, *args, migrations_dir=_directory(ctx),
                                  database_url=_url(ctx), lock_timeout_ms=lock_timeout_ms)[1]


def changed(ctx: RunContext) -> bool:
    """The change ran and succeeded (what the verification verifies)."""
    found = ctx.latest("schema_migration.change")
    return found is not None and found.evidence.get("executed") is True and \
        found.status is Status.OK


# -- verification -----------------------------------------------------------------------------

@check("schema_migration.verify_status")
def verify_status(ctx: RunContext, timeout_s: float = STATUS_TIMEOUT_S) -> Finding:
    """After the change, `confiture migrate status` again: every migration of the plan
    applied (up; and nothing pending when no to_version was given) or pending again
    (down)."""
    plan = plan_of(ctx)
    if not changed(ctx):
        return ctx.skip("the change did not run or failed: nothing to verify")
    assert plan is not None
    change.phase(ctx, "verification", "status clean, one schema on every instance, a read "
                 "through the data path")
    ran = confiture.run("status", migrations_dir=_directory(ctx), database_url=_url(ctx),
                        timeout_s=timeout_s)
    if ran.returncode not in (0, 1) or ran.payload is None:
        return _tool_failed(ctx, ran, "the change could not be verified")
    applied = [str(v) for v in ran.payload.get("applied") or []]
    pending = [str(v) for v in ran.payload.get("pending") or []]
    evidence = {"applied": applied, "pending": pending, "returncode": ran.returncode,
                "plan": plan["versions"]}
    if plan["direction"] == "up":
        missing = [v for v in plan["versions"] if v not in applied]
        left = pending if not plan.get("to_version") else []
        if missing or left:
            return ctx.result(Status.CRITICAL, f"status after the change: not applied "
                              f"{', '.join(missing + left)}", evidence,
                              "read the change's finding; rerun to apply what is pending")
        return ctx.result(Status.OK, f"status clean: {len(applied)} applied, "
                          f"{len(pending)} pending ({', '.join(pending) or 'none'})", evidence)
    still = [v for v in plan["versions"] if v in applied]
    if still:
        return ctx.result(Status.CRITICAL, f"still applied after the rollback: "
                          f"{', '.join(still)}", evidence, "read the change's finding")
    return ctx.result(Status.OK, f"rolled back: {', '.join(plan['versions'])} pending again; "
                      f"{len(applied)} applied", evidence)


def verify_instances(ctx: RunContext) -> list[Finding]:
    """deployment-verification's check that every instance serves one schema_hash, and how
    it compares with before. The server's schema_hash is the hash of its compiled schema,
    not of the database: it changes only when a new schema.compiled.json is deployed (and
    loaded) with the migration. Agreement proves that no instance serves another API; it
    says nothing about the database."""
    if not changed(ctx):
        return [instances.check_consistency.skip(ctx, "the change did not run or failed")]
    table = instances.instance_table(ctx)
    found = [instances.check_consistency(ctx, table)]
    found.append(compare_schema_hash(ctx, table))
    return found


@check("schema_migration.schema_hash")
def compare_schema_hash(ctx: RunContext, table: pd.DataFrame) -> Finding:
    """The instances' schema_hash after the change against before."""
    before_found = ctx.latest("schema_migration.instances_before")
    before = before_found.evidence.get("schema_hashes", []) if before_found else []
    after = sorted({h for h in table["schema_hash"] if isinstance(h, str) and h})
    evidence = {"before": before, "after": after}
    if not after:
        return ctx.result(Status.INFO, "the instances report no schema_hash (an older or "
                          "foreign server): which schema they serve is not known", evidence)
    if len(after) > 1:
        return ctx.result(Status.CRITICAL, f"the instances serve {len(after)} schemas after "
                          "the change", evidence, "deploy one schema.compiled.json to all and "
                          "reload (POST /api/v1/admin/reload-schema)")
    if after == before:
        return ctx.result(Status.INFO, f"every instance still serves schema_hash "
                          f"{after[0][:12]}…: the compiled schema did not change. A database "
                          "migration alone does not change it; if the GraphQL API should "
                          "change with it, deploy the new schema.compiled.json and reload",
                          evidence)
    return ctx.result(Status.OK, f"every instance serves the new schema_hash {after[0][:12]}… "
                      f"(was {', '.join(h[:12] + '…' for h in before) or 'not reported'})",
                      evidence)


def verify_data_path(ctx: RunContext, probe_query: str | None = None) -> Finding:
    """A GraphQL read that goes through PostgreSQL (the target's probe_query): the views the
    API reads still answer after the migration."""
    if not changed(ctx):
        return service_checks.check_data_path.skip(ctx, "the change did not run or failed")
    return service_checks.check_data_path(ctx, probe_query)


def verification_failed(ctx: RunContext) -> list[str]:
    """The verification checks that failed (critical or unknown) in this run."""
    failed = []
    for name in VERIFY_CHECKS + ("schema_migration.schema_hash",):
        found = ctx.latest(name)
        if found is not None and found.status in (Status.CRITICAL, Status.UNKNOWN):
            failed.append(name)
    return failed


# -- rollback ---------------------------------------------------------------------------------

def applied_by_run(ctx: RunContext) -> list[str]:
    """The versions this run's `up` applied (also when it failed half-way)."""
    found = ctx.latest("schema_migration.change")
    if found is None or _direction(ctx) != "up":
        return []
    return [str(v) for v in found.evidence.get("done") or []]


@check("schema_migration.rollback")
def rollback_if_failed(ctx: RunContext,
                       lock_timeout_ms: int = thresholds.MIGRATION_LOCK_TIMEOUT_MS,
                       timeout_s: float = thresholds.MIGRATION_TIMEOUT_S) -> Finding:
    """When an `up` failed (half-way) or its verification failed: roll back what this run
    applied, `confiture migrate down --steps N`, newest first. A rollback is dangerous, so
    it runs only with confirm = the target's name, and only if every one of them can be
    rolled back; otherwise the command is recorded and the finding says what to do."""
    if _direction(ctx) != "up":
        return ctx.skip("a rollback run is not rolled back automatically")
    ran_change = ctx.latest("schema_migration.change")
    failed_change = ran_change is not None and ran_change.status is Status.CRITICAL
    failed = verification_failed(ctx)
    if not failed_change and not failed:
        return ctx.skip("the change and its verification passed: nothing to roll back"
                        if changed(ctx) else "the change did not run: nothing to roll back")
    applied = applied_by_run(ctx)
    why = ("the change failed" if failed_change else
           f"the verification failed ({', '.join(failed)})")
    if not applied:
        return ctx.skip(f"{why}, but this run applied nothing: nothing to roll back")
    table = _migrations(ctx)
    blocked = [v for v in applied if not table.get(v, {}).get("reversible", False)]
    args = ["--steps", str(len(applied)), "--lock-timeout",
            str(confiture.advisory_wait_ms(lock_timeout_ms))]
    shown = _shown_command(ctx, "down", args, lock_timeout_ms)
    evidence: dict[str, Any] = {"why": why, "applied": applied, "blocked": blocked,
                                "command": shown}
    if blocked:
        ctx.action("migrate_down", shown, executed=False)
        return ctx.result(Status.CRITICAL, f"{why}; the rollback cannot run: "
                          f"{', '.join(blocked)} cannot be rolled back", evidence |
                          {"executed": False}, "restore the dump taken before the change "
                          "(backup.fresh_dump above), or fix forward with a new migration")
    if ctx.confirm != ctx.target_name:
        ctx.action("migrate_down", shown, executed=False)
        return ctx.result(Status.CRITICAL, f"{why}; the rollback of {', '.join(applied)} is "
                          f"recorded, not run: it needs confirm={ctx.target_name}", evidence
                          | {"executed": False}, f"roll back: rerun with -p direction down -p "
                          f"execute true -p confirm {ctx.target_name} (once per migration), "
                          "or fix forward")
    change.phase(ctx, "rollback", f"confiture migrate down --steps {len(applied)}: {why}")
    ran = confiture.run("down", *args, migrations_dir=_directory(ctx), database_url=_url(ctx),
                        timeout_s=timeout_s, lock_timeout_ms=lock_timeout_ms)
    _record(ctx, "migrate_down", ran)
    done = done_versions(ran)
    evidence |= ran.evidence() | {"executed": True, "rolled_back": done}
    if ran.ok and sorted(done) == sorted(applied):
        return ctx.result(Status.WARNING, f"{why}; rolled back {', '.join(done)}: the database "
                          "is as before the change", evidence, "find why the verification "
                          "failed before applying again")
    return ctx.result(Status.CRITICAL, f"{why}; the rollback failed: {ran.describe()}",
                      evidence, "restore the dump taken before the change")


# -- the change record ------------------------------------------------------------------------

def what(ctx: RunContext) -> str:
    """The change in one line, for the change record."""
    plan = plan_of(ctx)
    if plan is None:
        return "confiture migrate (no plan: the status pre-check failed)"
    if not plan["versions"]:
        return f"confiture migrate {plan['direction']}: {plan.get('nothing')}"
    verb = "apply" if plan["direction"] == "up" else "roll back"
    return f"confiture migrate {plan['direction']}: {verb} {', '.join(plan['versions'])}"


def outcome(ctx: RunContext) -> str:
    """The change record's outcome (checks.change.OUTCOMES) from what this run did."""
    gated = change.gate_outcome(ctx)
    if gated != "applied":
        return gated or "refused"
    back = ctx.latest("schema_migration.rollback")
    if back is not None and back.evidence.get("executed"):
        return "rolled-back" if back.status is Status.WARNING else "rollback-failed"
    if not changed(ctx) or verification_failed(ctx):
        return "failed"
    return "applied"
