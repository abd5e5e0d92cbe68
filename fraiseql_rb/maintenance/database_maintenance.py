"""Runbook §7.2 "Database Maintenance", weekly and monthly, as a guarded planned change.

§7.2's SQL is not safe as written. Weekly `ANALYZE; VACUUM;` reads every table of the
database whether it needs it or not. Monthly `VACUUM FULL;` rewrites every table in turn,
each under an ACCESS EXCLUSIVE lock that stops every read and write of it until its copy is
done, and each needing free space for the copy; and `REINDEX TABLE *` is not SQL (REINDEX
names one index, table, schema or database, and without CONCURRENTLY it blocks writes). A
statement that waits for its lock behind a long transaction makes every later query of the
table queue behind it. So here:

- **pre-checks** (read-only, the role that will run the statements): dead tuples against
  autovacuum's own rule (50 + 20 % of the rows), table and index bloat (check_postgres'
  estimate, `pgstats.bloat`, graded by the catalogue's bloat levels), the last (auto)vacuum
  and analyze and the transaction-ID age, tables with autovacuum switched off, whether the
  role may VACUUM each table, the plan (statement, table, why, lock, size, confirm), the
  sessions that would block a statement or hold back what VACUUM may remove, and the free
  space a rewrite needs;
- **the change**: weekly `VACUUM (ANALYZE)` and `ANALYZE` only on the tables that need them
  (execute=True); monthly also `VACUUM (FULL, ANALYZE)` for tables past the bloat level and
  under `vacuum_full_max_mb`, and `REINDEX INDEX CONCURRENTLY` for bloated indexes, each of
  these also needing confirm = the target's name. Every statement runs in its own autocommit
  session (VACUUM and REINDEX CONCURRENTLY cannot run in a transaction block) with a short
  `lock_timeout`, so a table another session holds is skipped (a warning) instead of queued
  behind, and the rest go on;
- **verification**: dead tuples and bloat measured again, before and after in a table and a
  plot; then the change record.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from psycopg import sql

from fraiseql_rb.checks import change
from fraiseql_rb.checks import database as dbchecks
from fraiseql_rb.core import plots, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status, worst
from fraiseql_rb.targets import pgstats, postgres

SCHEDULES = ("weekly", "monthly")
BLOAT_RATIO = thresholds.BLOAT_RATIO  # check_postgres bloat levels, as the database dashboard
BLOAT_WASTED = thresholds.BLOAT_WASTED_BYTES
TOP = thresholds.TOP_N

PHASE_TEXT = {
    "pre-checks": "dead tuples, bloat, vacuum ages, autovacuum, the role, the plan, sessions "
                  "and locks, disk headroom",
    "change": "each planned statement in its own session, with lock_timeout",
    "verification": "dead tuples and bloat measured again",
}

# The pre-checks whose critical or unknown stops the whole change (change.gate). Bloat is not
# one: bloat is why maintenance runs. Disk headroom is judged per rewrite: a rewrite without
# room is not run, VACUUM and ANALYZE need none.
GATE_PRECHECKS = ("maintenance.dead_tuples", "maintenance.vacuum_age",
                  "maintenance.autovacuum_off", "maintenance.role", "maintenance.plan",
                  "maintenance.sessions")

# -- what each statement is, locks and may break -------------------------------------------

# PostgreSQL's table-level lock modes and which of them each conflicts with (the manual's
# "Conflicting Lock Modes" table), by their SQL names; pg_locks writes them "AccessShareLock".
_CONFLICTS: dict[str, frozenset[str]] = {
    "ACCESS SHARE": frozenset({"ACCESS EXCLUSIVE"}),
    "ROW SHARE": frozenset({"EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "ROW EXCLUSIVE": frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE",
                                "ACCESS EXCLUSIVE"}),
    "SHARE UPDATE EXCLUSIVE": frozenset({"SHARE UPDATE EXCLUSIVE", "SHARE",
                                         "SHARE ROW EXCLUSIVE", "EXCLUSIVE",
                                         "ACCESS EXCLUSIVE"}),
    "SHARE": frozenset({"ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE ROW EXCLUSIVE",
                        "EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "SHARE ROW EXCLUSIVE": frozenset({"ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
                                      "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "EXCLUSIVE": frozenset({"ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
                            "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "ACCESS EXCLUSIVE": frozenset({"ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE",
                                   "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE",
                                   "EXCLUSIVE", "ACCESS EXCLUSIVE"}),
}


def lock_mode(name: str) -> str:
    """A lock mode as SQL writes it, from either form ("AccessShareLock" or "ACCESS SHARE")."""
    text = str(name).strip()
    if text.upper() in _CONFLICTS:
        return text.upper()
    words = re.findall(r"[A-Z][a-z]*", text.removesuffix("Lock"))
    mode = " ".join(words).upper()
    if mode not in _CONFLICTS:
        raise ValueError(f"not a table lock mode: {name!r}")
    return mode


def conflicts(held: str, requested: str) -> bool:
    """Does a lock `held` (or queued) by another session make a request for `requested`
    wait? Either name form; a mode that is no table lock (SIReadLock) conflicts with none."""
    try:
        return lock_mode(held) in _CONFLICTS[lock_mode(requested)]
    except ValueError:
        return False


# kind -> (action name, SQL, lock, needs confirm, rewrites the relation, what it blocks)
KINDS: dict[str, dict[str, Any]] = {
    "vacuum": {"action": "vacuum_analyze", "sql": "VACUUM (ANALYZE) {}",
               "lock": "SHARE UPDATE EXCLUSIVE", "dangerous": False, "rewrite": False,
               "blocks": "DDL, other VACUUM/ANALYZE and CREATE INDEX on the table; reads "
                         "and writes go on"},
    "analyze": {"action": "analyze", "sql": "ANALYZE {}", "lock": "SHARE UPDATE EXCLUSIVE",
                "dangerous": False, "rewrite": False,
                "blocks": "DDL, other VACUUM/ANALYZE and CREATE INDEX on the table; reads "
                          "and writes go on"},
    "vacuum_full": {"action": "vacuum_full", "sql": "VACUUM (FULL, ANALYZE) {}",
                    "lock": "ACCESS EXCLUSIVE", "dangerous": True, "rewrite": True,
                    "blocks": "every read and write of the table until the copy is done"},
    "reindex": {"action": "reindex_concurrently", "sql": "REINDEX INDEX CONCURRENTLY {}",
                "lock": "SHARE UPDATE EXCLUSIVE", "dangerous": True, "rewrite": True,
                "blocks": "DDL and VACUUM on the table; reads and writes go on"},
}


def statement_sql(kind: str, schema: str, relation: str) -> sql.Composed:
    """The statement of `kind` on schema.relation, the names quoted by psycopg."""
    return sql.SQL(KINDS[kind]["sql"]).format(sql.Identifier(schema, relation))


def statement_text(kind: str, schema: str, relation: str) -> str:
    return statement_sql(kind, schema, relation).as_string(None)


# -- the decisions (pure) -------------------------------------------------------------------

def dead_tuples_limit(rows: float | None, base: float, scale: float) -> float:
    """autovacuum's rule: a table needs VACUUM past base + scale × its rows (reltuples;
    unknown before the first ANALYZE, then base alone)."""
    return base + scale * (rows if rows is not None and rows >= 0 else 0)


def analyze_limit(rows: float | None, base: float, scale: float) -> float:
    """autovacuum's rule for ANALYZE: rows changed since the last one past base + scale ×
    rows."""
    return dead_tuples_limit(rows, base, scale)


def parse_tables(tables: Any) -> set[tuple[str, str]] | None:
    """The `tables` parameter as {(schema, table)}; a bare name is in schema public. None:
    every user table."""
    if tables is None:
        return None
    if not isinstance(tables, (list, tuple, set)):
        raise ValueError(f"tables must be a list of schema.table names, not {tables!r}")
    chosen = set()
    for item in tables:
        parts = item.split(".") if isinstance(item, str) else []
        if not parts or len(parts) > 2 or not all(p.strip() for p in parts):
            raise ValueError(f"tables: {item!r} is not a schema.table name")
        chosen.add((parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0]))
    return chosen


def rewrite_fits(free_bytes: float, est_bytes: float, factor: float) -> bool:
    """Is there room for a rewrite of `est_bytes`: its new copy and the WAL it writes?"""
    return free_bytes >= est_bytes * factor


def _number(value: Any) -> float | None:
    """A frame cell as a number, None for NULL/NaN."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(number) else number


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _mib(size: float | None) -> str:
    return "?" if size is None else f"{size / 2**20:.1f} MiB"


def _statement(kind: str, schema: str, table: str, index: str | None, why: str,
               est_bytes: float | None) -> dict[str, Any]:
    spec = KINDS[kind]
    return {"statement": statement_text(kind, schema, index or table), "kind": kind,
            "action": spec["action"], "schema": schema, "table": table, "index": index,
            "name": f"{schema}.{table}", "why": why, "lock": spec["lock"],
            "blocks": spec["blocks"], "est_bytes": int(est_bytes or 0),
            "needs_confirm": spec["dangerous"], "rewrite": spec["rewrite"]}


def build_plan(survey: pd.DataFrame, bloat: pd.DataFrame, schedule: str, *,
               dead_tuples_base: float = thresholds.MAINTENANCE_DEAD_TUPLES_BASE,
               dead_tuples_scale: float = thresholds.MAINTENANCE_DEAD_TUPLES_SCALE,
               vacuum_full_max_bytes: float = thresholds.MAINTENANCE_VACUUM_FULL_MAX_BYTES,
               analyze_base: float = thresholds.MAINTENANCE_ANALYZE_BASE,
               analyze_scale: float = thresholds.MAINTENANCE_ANALYZE_SCALE,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The statements a `schedule` run makes, in order, and the tables left out with why.

    Weekly: `VACUUM (ANALYZE)` where dead tuples pass autovacuum's rule (or the
    transaction-ID age passes autovacuum_freeze_max_age), else `ANALYZE` where the rows
    changed since the last one pass its rule or the table was never analyzed. Monthly adds,
    after those (which need execute only), `VACUUM (FULL, ANALYZE)` for tables past the
    bloat warning level and at most `vacuum_full_max_bytes` with their indexes, and
    `REINDEX INDEX CONCURRENTLY` for bloated indexes of the other tables (a VACUUM FULL
    rebuilds its table's indexes). A table the role may not maintain is left out."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    statements: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    allowed: dict[tuple[str, str], Any] = {}
    for _, row in survey.iterrows():
        schema, table = str(row["schema"]), str(row["table"])
        name = f"{schema}.{table}"
        if not bool(row["may_maintain"]):
            excluded.append({"table": name, "reason": f"this role may not VACUUM, ANALYZE or "
                             f"REINDEX it (owner {row.get('owner') or '?'})"})
            continue
        allowed[(schema, table)] = row
        rows = _number(row["rows_estimate"])
        shown_rows = f"{int(rows)} rows" if rows is not None and rows >= 0 else "no estimate"
        dead = _number(row["dead_tuples"]) or 0
        limit = dead_tuples_limit(rows, dead_tuples_base, dead_tuples_scale)
        xid_age, freeze = _number(row.get("xid_age")), _number(row.get("freeze_max_age"))
        reasons = []
        if dead > limit:
            reasons.append(f"{int(dead)} dead tuples > {limit:g} ({dead_tuples_base:g} + "
                           f"{dead_tuples_scale:g} × {shown_rows})")
        if xid_age is not None and freeze is not None and xid_age > freeze:
            reasons.append(f"transaction-ID age {int(xid_age)} past autovacuum_freeze_max_age "
                           f"{int(freeze)}")
        if reasons:
            statements.append(_statement("vacuum", schema, table, None, "; ".join(reasons),
                                         _number(row["heap_bytes"])))
            continue
        modified = _number(row["modified_since_analyze"]) or 0
        live = _number(row["live_tuples"]) or 0
        a_limit = analyze_limit(rows, analyze_base, analyze_scale)
        if _missing(row["last_analyzed"]) and (live > 0 or modified > 0):
            statements.append(_statement("analyze", schema, table, None, "never analyzed: "
                                         "the planner and the bloat estimate have no "
                                         "statistics", _number(row["heap_bytes"])))
        elif modified > a_limit:
            statements.append(_statement("analyze", schema, table, None,
                                         f"{int(modified)} rows changed since the last "
                                         f"ANALYZE > {a_limit:g}", _number(row["heap_bytes"])))
    if schedule == "weekly":
        return statements, excluded
    rewrites: list[dict[str, Any]] = []
    fulls: set[tuple[str, str]] = set()
    estimates = bloat.assign(level=[dbchecks.bloat_level(float(r), float(w)) for r, w in
                                    zip(bloat["ratio"], bloat["wasted_bytes"], strict=True)])
    for _, row in estimates[estimates["kind"] == "table"].iterrows():
        key = (str(row["schema"]), str(row["table"]))
        if row["level"] is Status.OK or key not in allowed:
            continue
        total = _number(allowed[key]["total_bytes"]) or 0
        why = (f"{float(row['ratio']):g}× its expected size, {_mib(row['wasted_bytes'])} "
               f"wasted ({row['level'].value})")
        if total > vacuum_full_max_bytes:
            excluded.append({"table": f"{key[0]}.{key[1]}", "reason": f"{why}, but "
                             f"{_mib(total)} with its indexes is over the VACUUM FULL limit "
                             f"of {_mib(vacuum_full_max_bytes)}: rewrite it online with "
                             "pg_repack, or in a window of its own"})
            continue
        fulls.add(key)
        rewrites.append(_statement("vacuum_full", key[0], key[1], None, why, total))
    for _, row in estimates[estimates["kind"] == "index"].iterrows():
        key = (str(row["schema"]), str(row["table"]))
        if row["level"] is Status.OK or key not in allowed or key in fulls:
            continue
        rewrites.append(_statement(
            "reindex", key[0], key[1], str(row["index"]),
            f"index {float(row['ratio']):g}× its expected size, {_mib(row['wasted_bytes'])} "
            f"wasted ({row['level'].value})", _number(row["size_bytes"])))
    return statements + rewrites, excluded


# -- reading the database ---------------------------------------------------------------------

ROLE_SQL = """
SELECT current_user AS role, r.rolsuper AS superuser,
       pg_has_role('pg_read_all_stats', 'MEMBER') AS read_all_stats
FROM pg_roles r WHERE r.rolname = current_user
"""


def _url(ctx: RunContext) -> tuple[str, str]:
    """The URL the maintenance runs with: the admin URL when the inventory has one (VACUUM
    needs the tables' owner or a superuser), else the application role's; and its key."""
    admin = ctx.target.admin_database_url()
    if admin:
        return admin, "admin_database_url"
    return ctx.target.database_url(), "database_url"


def _connect(ctx: RunContext) -> psycopg.Connection:
    return postgres.connect(_url(ctx)[0])


def _names(frame: pd.DataFrame) -> list[str]:
    return [f"{s}.{t}" for s, t in zip(frame["schema"], frame["table"], strict=True)]


def _select(frame: pd.DataFrame, selected: set[tuple[str, str]] | None) -> pd.DataFrame:
    if selected is None or frame.empty:
        return frame.reset_index(drop=True)
    keys = list(zip(frame["schema"].astype(str), frame["table"].astype(str), strict=True))
    return frame[[key in selected for key in keys]].reset_index(drop=True)


def survey(conn: psycopg.Connection, selected: set[tuple[str, str]] | None = None,
           ) -> pd.DataFrame:
    """Per user table: live and dead tuples, changes since ANALYZE, last (auto)vacuum and
    analyze, autovacuum switch, sizes, row estimate, whether this role may maintain it and
    its transaction-ID age; from the dashboards' queries plus `table_maintenance`."""
    keys = ["schema", "table"]
    data = pgstats.vacuum_stats(conn, None)
    settings = pgstats.vacuum_settings(conn)[keys + ["autovacuum_enabled", "stats_reset"]]
    sizes = pgstats.table_sizes(conn, None)[keys + ["total_bytes", "heap_bytes",
                                                    "index_bytes", "rows_estimate"]]
    rights = pgstats.table_maintenance(conn)[keys + ["owner", "may_maintain", "xid_age",
                                                     "freeze_max_age", "autovacuum_on"]]
    merged = (data.merge(settings, on=keys, how="left").merge(sizes, on=keys, how="left")
              .merge(rights, on=keys, how="left"))
    merged["may_maintain"] = [False if _missing(v) else bool(v) for v in merged["may_maintain"]]
    merged["autovacuum_enabled"] = [True if _missing(v) else bool(v)
                                    for v in merged["autovacuum_enabled"]]
    merged = _select(merged, selected)
    merged.insert(0, "name", _names(merged) if len(merged) else [])
    return merged


def bloat_estimate(conn: psycopg.Connection, tables: pd.DataFrame) -> pd.DataFrame:
    """check_postgres' estimate (`pgstats.bloat`) for the surveyed tables and their
    indexes, each graded."""
    estimate = pgstats.bloat(conn, None)
    keys = set(zip(tables["schema"].astype(str), tables["table"].astype(str), strict=True))
    chosen = estimate[[(str(s), str(t)) in keys for s, t in
                       zip(estimate["schema"], estimate["table"], strict=True)]]
    chosen = chosen.reset_index(drop=True)
    chosen["level"] = [dbchecks.bloat_level(float(r), float(w)) for r, w in
                       zip(chosen["ratio"], chosen["wasted_bytes"], strict=True)]
    return chosen


def _describe_bloat(row: Any) -> str:
    if row["kind"] == "index":
        return f"index {row['schema']}.{row['index']} on {row['table']}"
    return f"table {row['schema']}.{row['table']}"


def _plain(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain values for evidence (NaN and NaT as None)."""
    out = []
    for record in frame.to_dict("records"):
        out.append({k: (None if not isinstance(v, (list, dict)) and _missing(v) else
                        v.value if isinstance(v, Status) else v) for k, v in record.items()})
    return out


# -- pre-checks --------------------------------------------------------------------------------

def phase(ctx: RunContext, name: str) -> Finding:
    """Enter phase `name` of this change (change.phase), with what it does here."""
    return change.phase(ctx, name, PHASE_TEXT[name])


@check("maintenance.dead_tuples")
def check_dead_tuples(ctx: RunContext, tables: list[str] | None = None,
                      dead_tuples_base: float = thresholds.MAINTENANCE_DEAD_TUPLES_BASE,
                      dead_tuples_scale: float = thresholds.MAINTENANCE_DEAD_TUPLES_SCALE,
                      ) -> Finding:
    """§7.2 weekly "Vacuum dead tuples": which tables hold more dead tuples than autovacuum's
    own rule allows (50 + 20 % of the rows). With autovacuum on it gets to them; with it off
    nothing does, and the table and its indexes grow."""
    with _connect(ctx) as conn:
        data = survey(conn, parse_tables(tables))
    if data.empty:
        return ctx.result(Status.INFO, "no user table to look at", {"over_limit": [],
                                                                     "dead_tuples": {}})
    rows = [_number(r) for r in data["rows_estimate"]]
    data["limit"] = [dead_tuples_limit(r, dead_tuples_base, dead_tuples_scale) for r in rows]
    over = data[data["dead_tuples"].fillna(0) > data["limit"]]
    shown = pd.concat([over, data.sort_values("dead_tuples", ascending=False).head(TOP)])
    shown = shown.drop_duplicates("name")
    evidence = {"over_limit": list(over["name"]),
                "dead_tuples": {n: int(d) for n, d in zip(shown["name"],
                                                         shown["dead_tuples"].fillna(0),
                                                         strict=True)},
                "limits": {n: float(v) for n, v in zip(shown["name"], shown["limit"],
                                                      strict=True)},
                "base": dead_tuples_base, "scale": dead_tuples_scale}
    table = shown[["name", "live_tuples", "dead_tuples", "dead_ratio", "limit",
                   "autovacuum_enabled", "last_vacuumed"]]
    rule = f"{dead_tuples_base:g} + {dead_tuples_scale:g} × its rows"
    if over.empty:
        top = data.sort_values("dead_tuples", ascending=False).iloc[0]
        return ctx.result(Status.OK, f"no table has more dead tuples than autovacuum's rule "
                          f"({rule}); most in {top['name']}: {int(top['dead_tuples'] or 0)}",
                          evidence, table=table)
    listed = ", ".join(f"{n} ({int(d)} dead, limit {lim:g})" for n, d, lim in
                       zip(over["name"][:TOP], over["dead_tuples"][:TOP], over["limit"][:TOP],
                           strict=True))
    off = [n for n, on, glob in zip(over["name"], over["autovacuum_enabled"],
                                    over["autovacuum_on"], strict=True)
           if not on or (not _missing(glob) and not bool(glob))]
    if off:
        return ctx.result(Status.WARNING, f"{len(over)} table(s) past autovacuum's rule "
                          f"({rule}): {listed}; autovacuum is off for {', '.join(off[:TOP])}, "
                          "so nothing but this runbook cleans them", evidence,
                          "run the plan below with -p execute true, and turn autovacuum back "
                          "on (maintenance.autovacuum_off)", table=table)
    return ctx.result(Status.INFO, f"{len(over)} table(s) past autovacuum's rule ({rule}): "
                      f"{listed}; autovacuum will reach them, the plan vacuums them now",
                      evidence, table=table)


@check("maintenance.bloat")
def check_bloat(ctx: RunContext, tables: list[str] | None = None,
                schedule: str = "weekly") -> Finding:
    """Tables and indexes larger than their rows need (check_postgres' statistics-based
    estimate, graded by the catalogue's levels as the database dashboard does). VACUUM makes
    the space reusable but gives none back: that takes a rewrite (monthly), so the next step
    depends on the `schedule` being run."""
    with _connect(ctx) as conn:
        data = survey(conn, parse_tables(tables))
        estimate = bloat_estimate(conn, data)
    if data.empty:
        return ctx.result(Status.INFO, "no user table to look at", {"bloated": []})
    bloated = estimate[estimate["level"] != Status.OK].sort_values("wasted_bytes",
                                                                   ascending=False)
    never = [n for n, la, live in zip(data["name"], data["last_analyzed"],
                                      data["live_tuples"].fillna(0), strict=True)
             if _missing(la) and live > 0]
    evidence = {"bloated": _plain(bloated[["kind", "schema", "table", "index", "ratio",
                                           "wasted_bytes", "size_bytes", "level"]].head(TOP)),
                "not_estimated": never, "ratio": [BLOAT_RATIO.warning, BLOAT_RATIO.critical],
                "wasted_bytes": [BLOAT_WASTED.warning, BLOAT_WASTED.critical]}
    table = estimate[["kind", "schema", "table", "index", "ratio", "wasted_bytes",
                      "size_bytes"]].sort_values("wasted_bytes", ascending=False).head(TOP)
    unseen = (f"; not estimated for {', '.join(never[:TOP])} (never analyzed: the plan "
              "analyzes them)") if never else ""
    if bloated.empty:
        status = Status.INFO if never else Status.OK
        return ctx.result(status, f"no table or index beyond {BLOAT_RATIO.warning:g}× its "
                          f"expected size with {_mib(BLOAT_WASTED.warning)} wasted (estimate "
                          f"from the last ANALYZE){unseen}", evidence, table=table)
    parts = [f"{_describe_bloat(row)} is {float(row['ratio']):g}× its expected size "
             f"({_mib(row['wasted_bytes'])} wasted, {row['level'].value})"
             for _, row in bloated.head(TOP).iterrows()]
    rewrite = ("the plan below rewrites them: run it with -p execute true -p confirm "
               f"{ctx.target_name} (VACUUM FULL for tables up to vacuum_full_max_mb, REINDEX "
               "INDEX CONCURRENTLY for indexes)" if schedule == "monthly" else
               "the monthly schedule (-p schedule monthly) proposes VACUUM FULL for tables up "
               "to vacuum_full_max_mb and REINDEX INDEX CONCURRENTLY for indexes")
    return ctx.result(worst(list(bloated["level"])), "; ".join(parts) + unseen, evidence,
                      f"VACUUM makes dead space reusable but gives none back: {rewrite}; "
                      "larger tables need pg_repack", table=table)


@check("maintenance.vacuum_age")
def check_vacuum_age(ctx: RunContext, tables: list[str] | None = None) -> Finding:
    """§7.2's "Analyze query planner statistics": when each table was last (auto)vacuumed
    and (auto)analyzed, tables with rows never analyzed (the planner guesses), and the
    transaction-ID age against autovacuum_freeze_max_age (past it, autovacuum must freeze
    the table before anything else)."""
    with _connect(ctx) as conn:
        data = survey(conn, parse_tables(tables))
    if data.empty:
        return ctx.result(Status.INFO, "no user table to look at", {})
    never = [n for n, la, live in zip(data["name"], data["last_analyzed"],
                                      data["live_tuples"].fillna(0), strict=True)
             if _missing(la) and live > 0]
    ages = [(n, _number(a), _number(f)) for n, a, f in
            zip(data["name"], data["xid_age"], data["freeze_max_age"], strict=True)]
    wrap = [n for n, a, f in ages if a is not None and f is not None and a > f]
    oldest = max((a for _, a, _ in ages if a is not None), default=None)
    freeze = next((f for _, _, f in ages if f is not None), None)
    evidence = {"never_analyzed": never, "past_freeze_max_age": wrap,
                "oldest_xid_age": oldest, "freeze_max_age": freeze,
                "last": {n: {"vacuumed": _plain_time(v), "analyzed": _plain_time(a)}
                         for n, v, a in zip(data["name"][:TOP], data["last_vacuumed"][:TOP],
                                            data["last_analyzed"][:TOP], strict=True)}}
    table = data[["name", "last_vacuumed", "last_analyzed", "last_autovacuum",
                  "last_autoanalyze", "xid_age"]].head(TOP)
    if wrap:
        return ctx.result(Status.WARNING, f"transaction-ID age past autovacuum_freeze_max_age "
                          f"({int(freeze or 0)}) on {', '.join(wrap[:TOP])}: autovacuum must "
                          "freeze them (anti-wraparound) and is not keeping up; the plan "
                          "vacuums them", evidence, "run the plan with -p execute true; find "
                          "what holds autovacuum back (maintenance.sessions)", table=table)
    if never:
        return ctx.result(Status.INFO, f"never analyzed: {', '.join(never[:TOP])} (the "
                          "planner guesses their row counts; the plan analyzes them); oldest "
                          f"transaction-ID age {int(oldest or 0)} of {int(freeze or 0)}",
                          evidence, table=table)
    return ctx.result(Status.OK, f"every table with rows has statistics; oldest "
                      f"transaction-ID age {int(oldest or 0)} of autovacuum_freeze_max_age "
                      f"{int(freeze or 0)}", evidence, table=table)


def _plain_time(value: Any) -> str | None:
    return None if _missing(value) else pd.Timestamp(value).isoformat()


@check("maintenance.autovacuum_off")
def check_autovacuum(ctx: RunContext, tables: list[str] | None = None) -> Finding:
    """Autovacuum switched off, for the server (`autovacuum`) or per table (reloptions
    `autovacuum_enabled = false`): such tables bloat between maintenance runs."""
    with _connect(ctx) as conn:
        data = survey(conn, parse_tables(tables))
    off = [n for n, on in zip(data["name"], data["autovacuum_enabled"], strict=True) if not on]
    server = bool(data["autovacuum_on"].iloc[0]) if len(data) and not _missing(
        data["autovacuum_on"].iloc[0]) else None
    evidence = {"autovacuum": server, "tables": off}
    if server is None:
        return ctx.result(Status.INFO, "no user table to look at (the server's autovacuum "
                          "setting was not read)", evidence)
    if server is False:
        return ctx.result(Status.WARNING, "autovacuum is off for the whole server: every "
                          "table bloats between maintenance runs, and wraparound protection "
                          "waits for the forced anti-wraparound vacuum", evidence,
                          "ALTER SYSTEM SET autovacuum = on, then reload the configuration")
    if off:
        return ctx.result(Status.WARNING, f"autovacuum is disabled on {', '.join(off[:TOP])} "
                          f"({len(off)} table(s)): their dead tuples stay until a manual "
                          "VACUUM", evidence, "ALTER TABLE ... RESET (autovacuum_enabled) on "
                          "each, unless the table is vacuumed on a schedule of its own")
    return ctx.result(Status.OK, f"autovacuum is on, and on for all {len(data)} table(s)",
                      evidence)


@check("maintenance.role")
def check_role(ctx: RunContext, tables: list[str] | None = None) -> Finding:
    """Which role runs the statements (admin_database_url when the inventory has one), and
    whether it may: VACUUM, ANALYZE and REINDEX need the table's owner, a superuser or the
    database's owner (PostgreSQL 17: the MAINTAIN privilege); for any other table
    PostgreSQL only warns "skipping" and does nothing."""
    url, which = _url(ctx)
    with postgres.connect(url) as conn:
        role = postgres.one(conn, ROLE_SQL)
        data = survey(conn, parse_tables(tables))
    refused = [n for n, may in zip(data["name"], data["may_maintain"], strict=True) if not may]
    evidence = {"role": role.get("role"), "via": which, "superuser": role.get("superuser"),
                "read_all_stats": role.get("read_all_stats"), "tables": len(data),
                "not_permitted": refused}
    who = f"{role.get('role')} (from {which})"
    if data.empty:
        return ctx.result(Status.INFO, f"{who}: no user table to look at", evidence)
    if refused:
        owners = sorted({str(o) for n, o in zip(data["name"], data["owner"], strict=True)
                         if n in refused})
        return ctx.result(Status.WARNING, f"{who} may not VACUUM, ANALYZE or REINDEX "
                          f"{len(refused)} of {len(data)} table(s) ({', '.join(refused[:TOP])},"
                          f" owned by {', '.join(owners)}): they are left out of the plan",
                          evidence, "add admin_database_url (with its password secret) to the "
                          "inventory: a role owning the tables or a superuser (pg_maintain "
                          "from PostgreSQL 17)")
    return ctx.result(Status.OK, f"{who} may maintain all {len(data)} table(s)"
                      f"{' (superuser)' if role.get('superuser') else ''}", evidence)


@check("maintenance.plan")
def plan(ctx: RunContext, schedule: str = "weekly", tables: list[str] | None = None,
         dead_tuples_base: float = thresholds.MAINTENANCE_DEAD_TUPLES_BASE,
         dead_tuples_scale: float = thresholds.MAINTENANCE_DEAD_TUPLES_SCALE,
         vacuum_full_max_mb: float = thresholds.MAINTENANCE_VACUUM_FULL_MAX_BYTES / 2**20,
         lock_timeout_ms: int = thresholds.MAINTENANCE_LOCK_TIMEOUT_MS) -> Finding:
    """The statements this run makes, one per table (or index), each with why, the lock it
    takes, the size it works on and whether it needs confirm; and what is left out, why.
    The measurements before it (dead tuples, sizes, bloat) are kept for the verification."""
    selected = parse_tables(tables)
    with _connect(ctx) as conn:
        data = survey(conn, selected)
        estimate = bloat_estimate(conn, data)
    statements, excluded = build_plan(
        data, estimate, schedule, dead_tuples_base=dead_tuples_base,
        dead_tuples_scale=dead_tuples_scale, vacuum_full_max_bytes=vacuum_full_max_mb * 2**20)
    if selected is not None:
        found = set(zip(data["schema"].astype(str), data["table"].astype(str), strict=True))
        excluded += [{"table": f"{s}.{t}", "reason": "no such table (or not visible to this "
                      "role)"} for s, t in sorted(selected - found)]
    planned = {s["name"] for s in statements}
    before = _measure(data, estimate, planned)
    evidence = {"schedule": schedule, "statements": statements, "excluded": excluded,
                "before": before, "lock_timeout_ms": lock_timeout_ms,
                "selected": sorted(f"{s}.{t}" for s, t in selected) if selected else None,
                "dead_tuples_base": dead_tuples_base, "dead_tuples_scale": dead_tuples_scale,
                "vacuum_full_max_mb": vacuum_full_max_mb}
    table = pd.DataFrame([{"statement": s["statement"], "table": s["name"], "why": s["why"],
                           "lock": s["lock"], "blocks": s["blocks"],
                           "est. size": _mib(s["est_bytes"]),
                           "needs confirm": s["needs_confirm"]} for s in statements],
                         columns=["statement", "table", "why", "lock", "blocks", "est. size",
                                  "needs confirm"])
    missing = [e for e in excluded if e["reason"].startswith("no such table")]
    left = ("; left out: " + "; ".join(f"{e['table']} ({e['reason']})"
                                        for e in excluded[:TOP])) if excluded else ""
    if missing:
        return ctx.result(Status.WARNING, f"{schedule} plan: tables asked for that do not "
                          f"exist: {', '.join(e['table'] for e in missing)}; "
                          f"{len(statements)} statement(s) planned{left}", evidence,
                          "check the names given in -p tables (schema.table)", table=table)
    if not statements:
        rules = "autovacuum's rules" + (" or the bloat levels" if schedule == "monthly" else "")
        return ctx.result(Status.OK, f"{schedule} plan: nothing to do: no table past {rules}"
                          f"{left}", evidence, table=table)
    kinds = pd.Series([s["kind"] for s in statements]).value_counts()
    counts = ", ".join(f"{n} × {KINDS[k]['sql'].split(' {}')[0]}" for k, n in kinds.items())
    confirm = sum(1 for s in statements if s["needs_confirm"])
    needs = (f"; {confirm} rewrite(s) also need confirm = {ctx.target_name!r}"
             if confirm else "")
    return ctx.result(Status.INFO, f"{schedule} plan: {len(statements)} statement(s) on "
                      f"{len(planned)} table(s) ({counts}), each with lock_timeout "
                      f"{lock_timeout_ms} ms{needs}{left}", evidence, table=table)


def _measure(data: pd.DataFrame, estimate: pd.DataFrame,
             names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Dead tuples, sizes and bloat (worst of the table and its indexes) per table."""
    wanted = set(names)
    out: dict[str, dict[str, Any]] = {}
    for _, row in data[data["name"].isin(wanted)].iterrows():
        rows = estimate[(estimate["schema"] == row["schema"])
                        & (estimate["table"] == row["table"])]
        own = rows[rows["kind"] == "table"]
        out[str(row["name"])] = {
            "dead_tuples": int(_number(row["dead_tuples"]) or 0),
            "live_tuples": int(_number(row["live_tuples"]) or 0),
            "total_bytes": int(_number(row["total_bytes"]) or 0),
            "bloat_ratio": float(own["ratio"].iloc[0]) if len(own) else None,
            "wasted_bytes": int(rows["wasted_bytes"].sum()) if len(rows) else 0,
            "bloat": worst(list(rows["level"])).value if len(rows) else Status.OK.value,
            "last_vacuumed": _plain_time(row["last_vacuumed"]),
        }
    return out


def _planned(ctx: RunContext) -> list[dict[str, Any]]:
    found = ctx.latest("maintenance.plan")
    return list(found.evidence.get("statements") or []) if found is not None else []


@check("maintenance.sessions")
def check_sessions(ctx: RunContext,
                   long_transaction_s: float = thresholds.LONG_TRANSACTION_S,
                   idle_in_transaction_s: float = thresholds.IDLE_IN_TRANSACTION_S) -> Finding:
    """§7.2's "Check for long-running queries", aimed at what maintenance meets: sessions
    holding (or queued for) a lock on a planned table that conflicts with the statement's
    lock (it would wait, and is skipped after lock_timeout), long-running and
    idle-in-transaction sessions (VACUUM cannot remove rows deleted after their snapshot),
    and replication slots or prepared transactions holding the same horizon back."""
    statements = _planned(ctx)
    plan_found = ctx.latest("maintenance.plan")
    lock_timeout_ms = (plan_found.evidence.get("lock_timeout_ms") if plan_found else None) \
        or thresholds.MAINTENANCE_LOCK_TIMEOUT_MS
    with _connect(ctx) as conn:
        locks = pgstats.relation_locks(conn)
        open_tx = pgstats.open_transactions(conn)
        holders = pgstats.xmin_holders(conn)
    clashes = []
    for st in statements:
        held = locks[(locks["schema"] == st["schema"]) & (locks["table"] == st["table"])]
        for _, lock in held.iterrows():
            if conflicts(lock["mode"], st["lock"]):
                clashes.append({"statement": st["statement"], "table": st["name"],
                                "pid": int(lock["pid"]), "mode": lock["mode"],
                                "granted": bool(lock["granted"]), "state": lock["state"],
                                "transaction_age_s": _number(lock["transaction_age_s"]),
                                "user": lock["user"], "application": lock["application"]})
    visible = open_tx[open_tx["state"] != "not visible"]
    age = visible["transaction_age_s"].astype(float)
    idle = visible["state"].astype(str).str.startswith("idle in transaction") & (
        visible["state_age_s"].astype(float) > idle_in_transaction_s)
    long = visible[(age > long_transaction_s) | idle]
    reindexes = [st["statement"] for st in statements if st["kind"] == "reindex"]
    snapshots = visible[visible["holds_xmin"].astype(bool) & ~visible["pid"].isin(long["pid"])]
    snapshots = snapshots if reindexes else snapshots.iloc[0:0]
    hidden = int((open_tx["state"] == "not visible").sum())
    evidence = {"conflicts": clashes, "long_transactions": _plain(long),
                "snapshots_before_reindex": _plain(snapshots),
                "not_visible": hidden, "xmin_holders": _plain(holders),
                "long_transaction_s": long_transaction_s,
                "idle_in_transaction_s": idle_in_transaction_s,
                "lock_timeout_ms": lock_timeout_ms}
    parts = []
    for c in clashes[:TOP]:
        how = "holds" if c["granted"] else "waits for"
        since = (f", transaction open {c['transaction_age_s']:.1f} s"
                 if c["transaction_age_s"] is not None else "")
        parts.append(f"pid {c['pid']} ({c['state']}{since}) {how} {c['mode']} on "
                     f"{c['table']}: {c['statement']} would wait for it, so it is skipped "
                     f"after lock_timeout {lock_timeout_ms} ms")
    for _, tx in long.head(TOP).iterrows():
        parts.append(f"pid {int(tx['pid'])} ({tx['state']}, user {tx['user']}) has had a "
                     f"transaction open for {float(tx['transaction_age_s']):.0f} s"
                     + (": VACUUM cannot remove rows deleted after its snapshot"
                        if tx["holds_xmin"] else ""))
    for _, tx in snapshots.head(TOP).iterrows():
        parts.append(f"pid {int(tx['pid'])} ({tx['state']}, user {tx['user']}) holds a "
                     "snapshot: REINDEX INDEX CONCURRENTLY waits for every transaction older "
                     f"than itself, so {len(reindexes)} reindex(es) would be cancelled after "
                     f"lock_timeout {lock_timeout_ms} ms (their half-built copies are dropped)")
    context = [f"{h['kind']} {h['name']} holds the xmin horizon {h['xmin_age']} "
               "transaction(s) back" for h in evidence["xmin_holders"][:TOP]
               if h.get("xmin_age")]
    table = pd.DataFrame(clashes) if clashes else (long if len(long) else None)
    note = f" ({'; '.join(context)})" if context else ""
    if parts:
        return ctx.result(Status.WARNING, "; ".join(parts) + note, evidence,
                          "let the transactions finish or end them (the "
                          "connection-pool-exhaustion runbook terminates idle ones), then "
                          "rerun; a skipped statement changes nothing", table=table)
    if hidden:
        return ctx.result(Status.INFO, f"no lock on a planned table conflicts with its "
                          f"statement; {hidden} session(s) of other roles are not visible to "
                          "this role (their transactions' age is unknown: grant it "
                          f"pg_read_all_stats or use admin_database_url){note}", evidence)
    return ctx.result(Status.OK, "no long-running or idle-in-transaction session, and no lock "
                      f"on a planned table that conflicts with its statement{note}", evidence)


def locate_data_directory(conn: psycopg.Connection, url: str) -> dict[str, Any]:
    """The filesystem holding the data directory, where it is readable from here: the
    server's `data_directory` (hidden without pg_read_all_settings), which must exist
    locally and be this server's (its postmaster.pid names our port) or the server must be
    local (a unix socket or loopback address)."""
    row = pgstats.data_directory(conn).iloc[0]
    directory, port = row["data_directory"], int(row["port"])
    evidence: dict[str, Any] = {"path": directory, "port": port, "measured": False,
                                "other_tablespaces": int(row["other_tablespaces"])}
    if _missing(directory):
        return evidence | {"why": "data_directory is hidden from this role (it needs "
                                  "pg_read_all_settings or a superuser)"}
    path = Path(str(directory))
    host, _ = postgres.endpoint(url)
    local = host is None or host == "localhost" or _loopback(host)
    owner_port = None
    try:
        lines = (path / "postmaster.pid").read_text().splitlines()
        owner_port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    except OSError:
        pass
    if not path.is_dir() or (owner_port is not None and owner_port != port) or (
            owner_port is None and not local):
        return evidence | {"why": f"{path} is not this server's data directory as seen from "
                                  "here (the database runs on another host?)"}
    usage = shutil.disk_usage(path)
    return evidence | {"measured": True, "free_bytes": usage.free, "total_bytes": usage.total,
                       "why": None}


def _loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@check("maintenance.disk_headroom")
def check_disk_headroom(ctx: RunContext,
                        space_factor: float = thresholds.MAINTENANCE_REWRITE_SPACE_FACTOR,
                        ) -> Finding:
    """VACUUM FULL and REINDEX write a new copy beside the old one (and as much WAL): each
    rewrite runs only when the data directory's filesystem has `space_factor` × its size
    free. Where that cannot be measured from here the rewrites do not run (VACUUM and
    ANALYZE need no room and still do)."""
    rewrites = [s for s in _planned(ctx) if s["rewrite"]]
    url, _ = _url(ctx)
    with postgres.connect(url) as conn:
        where = locate_data_directory(conn, url)
    free = where.get("free_bytes")
    fits = {s["statement"]: (rewrite_fits(free, s["est_bytes"], space_factor)
                             if where["measured"] else None) for s in rewrites}
    largest = max((s["est_bytes"] for s in rewrites), default=0)
    evidence = where | {"factor": space_factor, "need_bytes": largest * space_factor,
                        "fits": fits, "rewrites": len(rewrites)}
    seen = (f"{_mib(free)} free on {where['path']}" if where["measured"]
            else f"free space not measured: {where['why']}")
    spaces = (f" ({where['other_tablespaces']} other tablespace(s) not measured)"
              if where["other_tablespaces"] else "")
    if not rewrites:
        return ctx.result(Status.INFO, f"no rewrite planned (VACUUM and ANALYZE write no copy);"
                          f" {seen}{spaces}", evidence)
    if not where["measured"]:
        return ctx.result(Status.UNKNOWN, f"{len(rewrites)} rewrite(s) planned, the largest "
                          f"{_mib(largest)}, but {seen}: the rewrites are not run (VACUUM and "
                          "ANALYZE are)", evidence, "run the runbook where the data directory "
                          "is readable (on the database host), or check the free space by "
                          "hand and run the recorded statements")
    short = [st for st, ok in fits.items() if not ok]
    if short:
        return ctx.result(Status.WARNING, f"{seen}: not enough for {len(short)} of "
                          f"{len(rewrites)} rewrite(s) at {space_factor:g}× their size, which "
                          f"are not run: {'; '.join(short[:TOP])}{spaces}", evidence,
                          "free space on the data directory's filesystem, or rewrite those "
                          "tables online with pg_repack")
    return ctx.result(Status.OK, f"room for every rewrite: the largest ({_mib(largest)}) needs "
                      f"{_mib(largest * space_factor)} at {space_factor:g}×; {seen}{spaces}",
                      evidence)


def authorize(ctx: RunContext) -> Finding:
    """The gate: the change runs only when the pre-checks in GATE_PRECHECKS are recorded and
    none is critical or unknown, something is planned, and execute=True. VACUUM FULL and
    REINDEX are asked for confirm one by one, so the rest of a monthly plan runs without."""
    statements = _planned(ctx)
    return change.gate(ctx, GATE_PRECHECKS, needed=bool(statements),
                       nothing_to_do="no table needs VACUUM or ANALYZE (or a rewrite) by the "
                                     "plan's rules")


# -- the change ------------------------------------------------------------------------------

def execute_statement(url: str, statement: sql.Composable, *, lock_timeout_ms: int,
                      statement_timeout_ms: int = thresholds.MAINTENANCE_STATEMENT_TIMEOUT_MS,
                      ) -> dict[str, Any]:
    """Run one statement in its own autocommit session with `lock_timeout`: done, skipped
    (its lock was not granted in time, or PostgreSQL skipped the table for want of
    privilege) or failed, with its elapsed time and PostgreSQL's warnings."""
    notices: list[str] = []
    began = time.monotonic()
    outcome, error, by = "done", None, None
    try:
        with postgres.session(url, read_only=False,
                              statement_timeout_ms=statement_timeout_ms) as conn:
            conn.add_notice_handler(lambda d: notices.append(
                secrets.mask(f"{d.severity}: {d.message_primary}")))
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout_ms)))
            conn.execute(statement)
    except psycopg.errors.LockNotAvailable as exc:
        outcome, error, by = "skipped", secrets.mask(postgres.first_line(exc)), "lock_timeout"
    except psycopg.Error as exc:
        outcome, error = "failed", secrets.mask(postgres.first_line(exc))
    if outcome == "done" and any("skipping" in n for n in notices):
        outcome, error = "skipped", next(n for n in notices if "skipping" in n)
        by = "privilege"
    return {"outcome": outcome, "skipped_by": by,
            "elapsed_s": round(time.monotonic() - began, 3),
            "lock_timeout_ms": lock_timeout_ms, "error": error, "notices": notices[-5:]}


@check("maintenance.lock_skipped")
def _lock_skipped(ctx: RunContext, statement: dict[str, Any], result: dict[str, Any],
                  holders: list[int], dropped: list[dict[str, Any]]) -> Finding:
    """A statement that waited for another session longer than lock_timeout: cancelled, so
    nothing changed on its table (a cancelled REINDEX CONCURRENTLY's copy is dropped)."""
    if holders:
        what = (f"{statement['name']} is locked by another session (pid "
                f"{', '.join(map(str, holders))})")
    elif statement["kind"] == "reindex":
        what = ("it waited for a transaction older than itself (a session holding a "
                "snapshot, see maintenance.sessions)")
    else:
        what = f"{statement['name']} is locked by another session"
    left = ""
    if dropped:
        gone = [d["index"] for d in dropped if d["outcome"] == "done"]
        kept = [d["index"] for d in dropped if d["outcome"] != "done"]
        left = (f"; its half-built copy {', '.join(gone)} was dropped" if gone else "") + (
            f"; its half-built copy {', '.join(kept)} is INVALID and still there: DROP INDEX "
            "CONCURRENTLY it" if kept else "")
    return ctx.result(Status.WARNING, f"{statement['statement']} skipped: {what}; cancelled "
                      f"after lock_timeout {result['lock_timeout_ms']} ms (gave up after "
                      f"{result['elapsed_s']} s){left}; the rest went on",
                      {"statement": statement["statement"], "table": statement["name"],
                       "holders": holders, "dropped_leftovers": dropped, **result},
                      "rerun when the session holding it has finished (maintenance.sessions "
                      "names it); never raise lock_timeout to wait it out: every later query "
                      "of the table would queue behind the statement")


def _holders(url: str, st: dict[str, Any]) -> list[int]:
    """Sessions holding a lock on the statement's table that conflicts with it."""
    try:
        with postgres.connect(url) as conn:
            locks = pgstats.relation_locks(conn)
    except postgres.ConnectionFailed:
        return []
    held = locks[(locks["schema"] == st["schema"]) & (locks["table"] == st["table"])
                 & locks["granted"].astype(bool)]
    return sorted({int(p) for p, m in zip(held["pid"], held["mode"], strict=True)
                   if conflicts(m, st["lock"])})


def _leftovers(ctx: RunContext, url: str, st: dict[str, Any], lock_timeout_ms: int,
               ) -> list[dict[str, Any]]:
    """A REINDEX INDEX CONCURRENTLY cancelled half-way leaves `<index>_ccnew` behind,
    invalid, costing every write: drop it (DROP INDEX CONCURRENTLY, with the same
    lock_timeout), as the manual advises before a retry."""
    with postgres.connect(url) as conn:
        invalid = pgstats.invalid_indexes(conn)
    pattern = re.compile(rf"^{re.escape(str(st['index']))}_ccnew\d*$")
    dropped = []
    for _, row in invalid[(invalid["schema"] == st["schema"])].iterrows():
        if not pattern.match(str(row["index"])):
            continue
        query = sql.SQL("DROP INDEX CONCURRENTLY {}").format(
            sql.Identifier(str(row["schema"]), str(row["index"])))
        result = execute_statement(url, query, lock_timeout_ms=lock_timeout_ms)
        ctx.action("drop_invalid_index", query.as_string(None), executed=True, result=result)
        dropped.append({"index": f"{row['schema']}.{row['index']}", **result})
    return dropped


@check("maintenance.apply")
def apply(ctx: RunContext,
          lock_timeout_ms: int = thresholds.MAINTENANCE_LOCK_TIMEOUT_MS,
          statement_timeout_ms: int = thresholds.MAINTENANCE_STATEMENT_TIMEOUT_MS) -> Finding:
    """Each planned statement in order, in its own autocommit session with lock_timeout.
    It runs only when the gate allowed the change; VACUUM FULL and REINDEX also need
    confirm = the target's name and room on disk (maintenance.disk_headroom). Otherwise the
    statement is recorded (executed=false) with why. A table another session holds is
    skipped without waiting longer than lock_timeout; any other failure stops the change."""
    statements = _planned(ctx)
    url, _ = _url(ctx)
    headroom = ctx.latest("maintenance.disk_headroom")
    fits = (headroom.evidence.get("fits") or {}) if headroom is not None else {}
    allowed = change.allowed(ctx)
    results: list[dict[str, Any]] = []
    stopped: str | None = None
    for st in statements:
        reason = None
        if not allowed:
            reason = "the gate did not let the change run (change.gate)"
        elif stopped:
            reason = f"not run: {stopped} failed before it"
        elif st["needs_confirm"] and not ctx.may_execute(dangerous=True):
            reason = (f"{KINDS[st['kind']]['sql'].split(' {}')[0]} needs confirm = "
                      f"{ctx.target_name!r} (given: {ctx.confirm!r})")
        elif st["rewrite"] and fits.get(st["statement"]) is not True:
            reason = ("no room for its copy on the data directory's filesystem"
                      if fits.get(st["statement"]) is False else
                      "free space for its copy could not be measured")
        if reason:
            ctx.action(st["action"], st["statement"], executed=False,
                       result={"not_run": reason} if allowed else None)
            results.append({"statement": st["statement"], "kind": st["kind"],
                            "name": st["name"], "outcome": "not run", "why": reason})
            continue
        print(f"running: {st['statement']}", flush=True)
        query = statement_sql(st["kind"], st["schema"], st["index"] or st["table"])
        result = execute_statement(url, query, lock_timeout_ms=lock_timeout_ms,
                                   statement_timeout_ms=statement_timeout_ms)
        ctx.action(st["action"], st["statement"], executed=True, result=result)
        entry = {"statement": st["statement"], "kind": st["kind"], "name": st["name"],
                 **result}
        if st["kind"] == "reindex" and result["outcome"] != "done":
            entry["dropped_leftovers"] = _leftovers(ctx, url, st, lock_timeout_ms)
        if result["skipped_by"] == "lock_timeout":
            _lock_skipped(ctx, st, result, _holders(url, st),
                          entry.get("dropped_leftovers") or [])
        if result["outcome"] == "failed":
            stopped = st["statement"]
        results.append(entry)
    table = pd.DataFrame(results, columns=["statement", "outcome", "elapsed_s", "why", "error"])
    counts = pd.Series([r["outcome"] for r in results]).value_counts().to_dict()
    evidence = {"results": results, "counts": counts, "lock_timeout_ms": lock_timeout_ms,
                "executed": allowed}
    if not statements:
        return ctx.result(Status.INFO, "nothing planned, nothing run", evidence)
    if not allowed:
        return ctx.result(Status.INFO, f"{len(statements)} statement(s) recorded, not run "
                          "(see change.gate)", evidence, table=table)
    done = counts.get("done", 0)
    summary = (f"{done} of {len(statements)} statement(s) ran"
               + "".join(f", {n} {what}" for what, n in counts.items() if what != "done"))
    refused = [r for r in results if r["outcome"] == "not run"]
    if stopped:
        failure = next(r for r in results if r["outcome"] == "failed")
        return ctx.result(Status.CRITICAL, f"{summary}; {failure['statement']} failed: "
                          f"{failure['error']}; the change stopped there", evidence,
                          "read PostgreSQL's error above (disk full, statement_timeout, a "
                          "privilege) and fix it before rerunning", table=table)
    if refused or counts.get("skipped"):
        why = "; ".join(f"{r['statement']}: {r['why']}" for r in refused[:TOP])
        return ctx.result(Status.WARNING, f"{summary}{': ' + why if why else ''}", evidence,
                          f"rerun with -p confirm {ctx.target_name} for the rewrites, and when "
                          "the sessions holding skipped tables have finished", table=table)
    return ctx.result(Status.OK, f"{summary}, each within lock_timeout {lock_timeout_ms} ms",
                      evidence, table=table)


# -- verification -------------------------------------------------------------------------------

@check("maintenance.verify")
def verify(ctx: RunContext, wait_s: float = thresholds.MAINTENANCE_STATS_WAIT_S) -> Finding:
    """Dead tuples, sizes and bloat of the planned tables measured again, before and after.
    A VACUUM's counts reach pg_stat_user_tables when it ends; the reading is repeated for up
    to `wait_s` until every vacuumed table shows it. Dead tuples that did not drop are held
    by something older than the deletes (maintenance.sessions names what)."""
    found = ctx.latest("maintenance.plan")
    applied = ctx.latest("maintenance.apply")
    results = (applied.evidence.get("results") or []) if applied is not None else []
    done = [r for r in results if r.get("outcome") == "done"]
    if found is None or not done:
        return ctx.result(Status.INFO, "nothing ran, so nothing changed: the measurements "
                          "before stand", {"ran": 0, "tables": {}, "dropped": None})
    before: dict[str, dict[str, Any]] = found.evidence["before"]
    vacuumed = {r["name"] for r in done if r["kind"] in ("vacuum", "vacuum_full")}
    selected = parse_tables(found.evidence.get("selected"))
    base = found.evidence["dead_tuples_base"]
    scale = found.evidence["dead_tuples_scale"]
    deadline = time.monotonic() + wait_s
    while True:
        with _connect(ctx) as conn:
            data = survey(conn, selected)
            estimate = bloat_estimate(conn, data)
        after = _measure(data, estimate, before)
        limits = {n: dead_tuples_limit(_number(r), base, scale)
                  for n, r in zip(data["name"], data["rows_estimate"], strict=True)}
        held = [n for n in vacuumed if n in after and not _dropped(before[n], after[n],
                                                                     limits.get(n, base))]
        if not held or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    rows = {n: {"dead_before": b["dead_tuples"], "dead_after": after.get(n, {}).get(
                    "dead_tuples"),
                "size_before": b["total_bytes"], "size_after": after.get(n, {}).get(
                    "total_bytes"),
                "bloat_before": b["bloat"], "bloat_after": after.get(n, {}).get("bloat"),
                "wasted_before": b["wasted_bytes"], "wasted_after": after.get(n, {}).get(
                    "wasted_bytes"),
                "statements": [r["statement"] for r in done if r["name"] == n]}
            for n, b in before.items()}
    over_after = [n for n, d, lim in zip(data["name"], data["dead_tuples"].fillna(0),
                                         data["rows_estimate"], strict=True)
                  if d > dead_tuples_limit(_number(lim), base, scale)]
    bloated_after = sorted({f"{s}.{t}" for s, t, lvl in zip(
        estimate["schema"], estimate["table"], estimate["level"], strict=True)
        if lvl is not Status.OK})
    evidence = {"tables": rows, "dropped": not held, "not_dropped": held, "ran": len(done),
                "over_limit_after": over_after, "bloated_after": bloated_after}
    table = pd.DataFrame([{"table": n, **{k: v for k, v in r.items() if k != "statements"}}
                          for n, r in rows.items()])
    resolves = tuple(name for name, clear in (("maintenance.dead_tuples", not over_after),
                                              ("maintenance.bloat", not bloated_after)) if clear)
    shown = "; ".join(f"{n}: {r['dead_before']} → {r['dead_after']} dead, "
                      f"{_mib(r['size_before'])} → {_mib(r['size_after'])}"
                      for n, r in list(rows.items())[:TOP])
    if held:
        holding = _horizon_now(ctx)
        evidence["xmin_holders_now"] = holding
        now = f"; holding it now: {'; '.join(holding[:TOP])}" if holding else ""
        return ctx.result(Status.WARNING, f"dead tuples did not drop on {', '.join(held)} "
                          "after VACUUM: a transaction, replication slot (hot_standby_"
                          "feedback) or prepared transaction older than the deletes still "
                          f"needs them ({shown}){now}", evidence, "end what holds the xmin "
                          "horizon (an idle-in-transaction session, a stale slot), then rerun",
                          table=table, resolves=resolves)
    still = f"; still bloated: {', '.join(bloated_after[:TOP])}" if bloated_after else ""
    return ctx.result(Status.OK, f"dead tuples dropped where VACUUM ran ({shown}){still}",
                      evidence, None if not bloated_after else
                      "the bloat stays until a rewrite: -p schedule monthly (VACUUM FULL, "
                      "REINDEX INDEX CONCURRENTLY with confirm), or pg_repack", table=table,
                      resolves=resolves)


def _horizon_now(ctx: RunContext) -> list[str]:
    """What holds the xmin horizon back right now: sessions with a snapshot, replication
    slots, prepared transactions, oldest first."""
    with _connect(ctx) as conn:
        sessions = pgstats.open_transactions(conn)
        others = pgstats.xmin_holders(conn)
    found = [(int(r["xmin_age"]), f"pid {int(r['pid'])} ({r['state']}, user {r['user']}, "
              f"{int(r['xmin_age'])} transactions back)")
             for _, r in sessions[sessions["holds_xmin"].astype(bool)].iterrows()
             if not _missing(r["xmin_age"])]
    found += [(int(r["xmin_age"]), f"{r['kind']} {r['name']} ({int(r['xmin_age'])} "
               "transactions back)") for _, r in others.iterrows()
              if not _missing(r["xmin_age"])]
    return [text for _, text in sorted(found, reverse=True)]


def _dropped(before: dict[str, Any], after: dict[str, Any], limit: float) -> bool:
    """Did a vacuumed table's dead tuples drop (or were there none worth removing)?"""
    dead_after = after.get("dead_tuples") or 0
    return dead_after < before["dead_tuples"] or dead_after <= limit


def before_after_figure(ctx: RunContext) -> Figure:
    """Dead tuples and total size of the planned tables, before and after the change, as
    bars side by side (nothing drawn but the reason when nothing ran)."""
    found = ctx.latest("maintenance.verify")
    rows = (found.evidence.get("tables") or {}) if found is not None else {}
    names = list(rows)
    fig, axes = plots.new_figure(1, 2, height=max(3.0, 0.5 * len(names) + 1.8))
    panels = (("dead", "dead tuples", 1), ("size", "total size (MiB)", 2**20))
    for ax, (key, label, per) in zip(axes, panels, strict=True):
        positions = list(range(len(names)))
        for offset, when in ((-0.2, "before"), (0.2, "after")):
            values = [(rows[n].get(f"{key}_{when}") or 0) / per for n in names]
            ax.barh([p + offset for p in positions], values, height=0.4, label=when)
        ax.set_yticks(positions, names)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.set_title(f"{label.split(' (')[0].capitalize()}: before and after", loc="left",
                     fontsize="medium", fontweight="bold")
        ax.grid(True, axis="x", alpha=0.3)
        if names:
            ax.legend(fontsize="small", loc="lower right")
        else:
            ax.text(0.5, 0.5, "nothing ran", transform=ax.transAxes, ha="center",
                    va="center", color=plots.TREND_COLOUR)
    return fig


def record(ctx: RunContext, schedule: str, tables: list[str] | None = None,
           **parameters: Any) -> Finding:
    """The change record: the gate's decision, refined by what ran and what the
    verification saw (a change whose dead tuples did not drop, or a statement that failed, is
    `failed`; nothing run at all is `dry-run`)."""
    statements = _planned(ctx)
    outcome = change.gate_outcome(ctx) or "refused"
    applied = ctx.latest("maintenance.apply")
    results = (applied.evidence.get("results") or []) if applied is not None else []
    verified = ctx.latest("maintenance.verify")
    if outcome == "applied":
        outcomes = [r.get("outcome") for r in results]
        if "failed" in outcomes:
            outcome = "failed"
        elif "done" not in outcomes:
            outcome = "failed" if "skipped" in outcomes else "dry-run"
        elif verified is not None and verified.status is not Status.OK:
            outcome = "failed"
    kinds = pd.Series([s["kind"] for s in statements], dtype=object).value_counts()
    planned = ", ".join(f"{n} × {KINDS[k]['sql'].split(' {}')[0]}" for k, n in kinds.items())
    what = (f"§7.2 {schedule} database maintenance of {ctx.target_name}: "
            f"{len(statements)} statement(s) planned{f' ({planned})' if planned else ''}")
    return change.record(ctx, what, {"schedule": schedule, "tables": tables, **parameters},
                         outcome)


def maintain(ctx: RunContext, schedule: str = "weekly", tables: list[str] | None = None,
             lock_timeout_ms: int = thresholds.MAINTENANCE_LOCK_TIMEOUT_MS,
             vacuum_full_max_mb: float = thresholds.MAINTENANCE_VACUUM_FULL_MAX_BYTES / 2**20,
             dead_tuples_base: float = thresholds.MAINTENANCE_DEAD_TUPLES_BASE,
             dead_tuples_scale: float = thresholds.MAINTENANCE_DEAD_TUPLES_SCALE) -> Finding:
    """The notebook's steps in order (for Python callers and tests): pre-checks, gate,
    change, verification, change record."""
    phase(ctx, "pre-checks")
    check_dead_tuples(ctx, tables, dead_tuples_base, dead_tuples_scale)
    check_bloat(ctx, tables, schedule)
    check_vacuum_age(ctx, tables)
    check_autovacuum(ctx, tables)
    check_role(ctx, tables)
    plan(ctx, schedule, tables, dead_tuples_base, dead_tuples_scale, vacuum_full_max_mb,
         lock_timeout_ms)
    check_sessions(ctx)
    check_disk_headroom(ctx)
    authorize(ctx)
    phase(ctx, "change")
    apply(ctx, lock_timeout_ms)
    phase(ctx, "verification")
    verify(ctx)
    return record(ctx, schedule, tables, lock_timeout_ms=lock_timeout_ms,
                  vacuum_full_max_mb=vacuum_full_max_mb, dead_tuples_base=dead_tuples_base,
                  dead_tuples_scale=dead_tuples_scale)
