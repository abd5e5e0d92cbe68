"""Security events from the audit log, in one vocabulary whatever the deployment writes.

Three sources exist (shared/reference/fraiseql-v2-interface.md, "Audit and security events"):

- `table` (the default): the runbook's `fraiseql_audit_logs(id, timestamp, event_type,
  user_id, ip_address inet, details jsonb)`, with the runbook's event names
  (`authentication_failed`, `sql_injection_attempt`, `csrf_failure`, `rate_limit_exceeded`);
- `v2_table`: the real v2 server's `audit_log` table (`event_type` from the v2 list, outcome in
  `status` 'success' | 'failure' | 'denied', `username`, `error_message`, ...);
- `jsonl:/path/or/glob`: the v2 server's JSON log lines (tracing), `event_type` from the v2 list
  and the outcome in the line itself (see `_failed`).

The inventory names it: `audit_source = "table" | "v2_table" | "jsonl:PATTERN"` (a table
source may name its table: `table:audit.events`, `v2_table:audit_log`). Every function speaks
`KINDS`: `auth_failure`, `sql_injection`, `csrf_failure`, `rate_limited`,
`authorization_denied`; `RULES` says which events of each source make each kind.

For the table sources every count and grouping runs in PostgreSQL (only aggregated rows or a
bounded top-N reach pandas), in a read-only session with a statement timeout. The event
mapping travels as bound arrays and is joined against the table on `(event_type,
"timestamp")`, the index `index_check` looks for. JSON-lines files are streamed line by line
and aggregated on the fly; nothing holds all events. Time windows are half-open,
[start, end), always timezone-aware; hour buckets begin at `start`.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pandas as pd
import psycopg
from psycopg import sql

from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import Finding, Status, isoformat, utcnow
from fraiseql_rb.targets import postgres

KINDS = ("auth_failure", "sql_injection", "csrf_failure", "rate_limited", "authorization_denied")
# Runbook §8.1's daily review: failed authentications, SQL injection attempts, CSRF failures.
REVIEW_KINDS = ("auth_failure", "sql_injection", "csrf_failure")
RUNBOOK_TABLE = "fraiseql_audit_logs"
V2_TABLE = "audit_log"
SOURCE_KINDS = ("table", "v2_table", "jsonl")
BY = ("ip", "user", "reason")
# The columns every query filters on; the index `index_check` wants, in this order.
INDEX_COLUMNS = ("event_type", "timestamp")


class AuditSourceError(RunbookError):
    """The audit source named in the inventory cannot be used; the message says why."""


# ---- the vocabulary ------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """Events of `event_type` count as `kind` (only failed ones when `failed_only`)."""

    event_type: str
    kind: str
    failed_only: bool = False


RULES: dict[str, tuple[Rule, ...]] = {
    # The runbook's names (§8.1): one event type per kind, the event itself is the failure.
    "table": (
        Rule("authentication_failed", "auth_failure"),
        Rule("sql_injection_attempt", "sql_injection"),
        Rule("csrf_failure", "csrf_failure"),
        Rule("rate_limit_exceeded", "rate_limited"),
        Rule("authorization_denied", "authorization_denied"),
    ),
    # The v2 list: auth_failure, or a jwt_validation that failed; a csrf_state_validated that
    # failed; authorization_denied. v2 logs no rate-limit event (its 429s are a metric) and
    # no SQL-injection event at all; a rate_limit_exceeded line is counted if one is written.
    "v2": (
        Rule("auth_failure", "auth_failure"),
        Rule("jwt_validation", "auth_failure", failed_only=True),
        Rule("csrf_state_validated", "csrf_failure", failed_only=True),
        Rule("rate_limit_exceeded", "rate_limited"),
        Rule("authorization_denied", "authorization_denied"),
    ),
}

# How well each source measures each kind: (exact | approximate | none, what to know).
COVERAGE: dict[str, dict[str, tuple[str, str]]] = {
    "table": {
        "auth_failure": ("exact", "authentication_failed events"),
        "sql_injection": ("exact", "sql_injection_attempt events"),
        "csrf_failure": ("exact", "csrf_failure events"),
        "rate_limited": ("exact", "rate_limit_exceeded events"),
        "authorization_denied": ("approximate", "not in the runbook's vocabulary; counted when "
                                                "the deployment writes authorization_denied"),
    },
    "v2": {
        "auth_failure": ("exact", "auth_failure events and failed jwt_validation events"),
        "sql_injection": ("none", "FraiseQL v2 has no SQL-injection event (queries are "
                                  "parameterised); hostile payloads surface as GraphQL "
                                  "validation or parse errors (metric "
                                  "fraiseql_validation_errors_total)"),
        "csrf_failure": ("exact", "failed csrf_state_validated events"),
        "rate_limited": ("approximate", "v2 logs no rate-limit event: its HTTP 429 answers are "
                                        "counted in fraiseql_http_responses_4xx (with every "
                                        "other 4xx)"),
        "authorization_denied": ("exact", "authorization_denied events"),
    },
}

# What the security reviews call each kind: in a sentence (LABELS) and as a title (TITLES).
LABELS = {"auth_failure": "failed authentications", "sql_injection": "SQL injection attempts",
          "csrf_failure": "CSRF failures", "rate_limited": "rate-limit events",
          "authorization_denied": "authorization denials"}
TITLES = {"auth_failure": "Failed authentications", "sql_injection": "SQL injection attempts",
          "csrf_failure": "CSRF failures", "rate_limited": "Rate-limit events",
          "authorization_denied": "Authorization denials"}


def label(kind: str) -> str:
    """A kind as words in a sentence ("failed authentications"); an unknown kind as is."""
    return LABELS.get(kind, kind)


def _kinds(kinds: str | Iterable[str] | None) -> list[str]:
    chosen = [kinds] if isinstance(kinds, str) else list(kinds or KINDS)
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown audit kind(s) {unknown}; the vocabulary is {list(KINDS)}")
    return list(dict.fromkeys(chosen))


def _window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("audit windows need timezone-aware datetimes (UTC)")
    if end < start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    return start.astimezone(UTC), end.astimezone(UTC)


def last_hours(hours: float, end: datetime | None = None) -> tuple[datetime, datetime]:
    """The half-open window of the last `hours` hours: (end - hours, end), end = now."""
    if hours <= 0:
        raise ValueError("hours must be positive")
    end = (end or utcnow()).astimezone(UTC).replace(microsecond=0)
    return end - timedelta(hours=hours), end


def _slots(start: datetime, end: datetime) -> int:
    """Hour buckets starting at `start` that cover [start, end) (the last may be partial)."""
    return max(0, math.ceil((end - start).total_seconds() / 3600))


# ---- the source ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where a target's audit events are: a table (runbook or v2 layout) or JSON-lines files."""

    kind: str  # table | v2_table | jsonl
    table: str | None = None  # [schema.]name for the table sources
    pattern: str | None = None  # file or glob for jsonl

    @property
    def vocabulary(self) -> str:
        """Whose event names the source uses: the runbook's (`table`) or v2's."""
        return "table" if self.kind == "table" else "v2"

    @property
    def rules(self) -> tuple[Rule, ...]:
        return RULES[self.vocabulary]

    @property
    def is_table(self) -> bool:
        return self.kind != "jsonl"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.table}" if self.is_table else f"jsonl {self.pattern}"

    def files(self) -> list[Path]:
        """The JSON-lines files the pattern matches now, in name order (rotations first)."""
        if self.pattern is None:
            return []
        return sorted(Path(p) for p in glob.glob(self.pattern) if Path(p).is_file())

    def split_table(self) -> tuple[str | None, str]:
        assert self.table is not None
        schema, _, name = self.table.rpartition(".")
        return schema or None, name


_TABLE_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*$")


def parse_source(text: str | None, base_dir: Path | None = None) -> Source:
    """`audit_source` as the inventory writes it; None or "" means the runbook's table."""
    value = (text or "table").strip()
    kind, _, rest = value.partition(":")
    kind, rest = kind.strip(), rest.strip()
    if kind == "jsonl":
        if not rest:
            raise AuditSourceError("audit_source jsonl needs a path: jsonl:/var/log/fraiseql/"
                                   "audit*.jsonl")
        path = Path(rest).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return Source("jsonl", pattern=str(path))
    if kind in ("table", "v2_table"):
        table = rest or (RUNBOOK_TABLE if kind == "table" else V2_TABLE)
        if not _TABLE_NAME.match(table):
            raise AuditSourceError(f"audit_source {value!r}: {table!r} is not a table name "
                                   "(name or schema.name)")
        return Source(kind, table=table)
    raise AuditSourceError(f"audit_source {value!r} is not one of table, v2_table, "
                           "jsonl:PATH (see the inventory's audit_source)")


def source(ctx: RunContext) -> Source:
    """The target's audit source (inventory `audit_source`, default the runbook's table)."""
    return parse_source(ctx.target.get("audit_source"), ctx.target.base_dir)


def connect(ctx: RunContext) -> psycopg.Connection:
    """A read-only session on the target's database: as the application role, or through
    `admin_database_url` when the application role itself is refused (an auth incident must
    still be able to read its audit log)."""
    try:
        return postgres.connect(ctx.target.database_url())
    except postgres.ConnectionFailed:
        admin = ctx.target.admin_database_url()
        if admin is None:
            raise
        return postgres.connect(admin)


# Per-source SQL pieces. All are constants of this module; user values never reach them.
_OUTCOME = {
    "table": sql.SQL("TRUE"),  # the runbook's events are failures by name
    "v2_table": sql.SQL("(NOT r.failed_only OR a.status IN ('failure', 'denied'))"),
}
_KEY = {
    ("table", "ip"): sql.SQL("host(a.ip_address)"),
    ("table", "user"): sql.SQL("a.user_id::text"),
    ("table", "reason"): sql.SQL("a.details ->> 'reason'"),
    ("v2_table", "ip"): sql.SQL("host(a.ip_address)"),
    ("v2_table", "user"): sql.SQL("coalesce(a.username, a.user_id::text)"),
    ("v2_table", "reason"): sql.SQL("a.error_message"),
}

# The event mapping as a relation, from bound arrays: (event_type, failed_only, kind).
RULES_CTE = """
WITH rules AS (
    SELECT r.event_type, r.failed_only, r.kind
    FROM unnest(%(rule_events)s::text[], %(rule_failed)s::bool[], %(rule_kinds)s::text[])
         AS r(event_type, failed_only, kind)
    WHERE r.kind = ANY(%(kinds)s::text[])
)"""


def _table_ident(src: Source) -> sql.Identifier:
    schema, name = src.split_table()
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _compose(template: str, src: Source, by: str | None = None) -> sql.Composed:
    parts: dict[str, sql.Composable] = {
        "rules": sql.SQL(RULES_CTE), "table": _table_ident(src), "outcome": _OUTCOME[src.kind]}
    if by is not None:
        parts["key"] = _KEY[(src.kind, by)]
        parts["ip"] = _KEY[(src.kind, "ip")]
        parts["user"] = _KEY[(src.kind, "user")]
    return sql.SQL(template).format(**parts)


def _params(src: Source, kinds: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The mapping as arrays; `event_types` repeats the wanted events as a plain filter, whose
    values the planner can weigh (MCV statistics) to choose the index."""
    return {"event_types": sorted({r.event_type for r in src.rules if r.kind in kinds}),
            "rule_events": [r.event_type for r in src.rules],
            "rule_failed": [r.failed_only for r in src.rules],
            "rule_kinds": [r.kind for r in src.rules], "kinds": list(kinds), **extra}


def _query(ctx: RunContext, src: Source, template: str, params: dict[str, Any],
           by: str | None = None) -> list[dict[str, Any]]:
    with connect(ctx) as conn:
        return postgres.rows(conn, _compose(template, src, by), params)  # type: ignore[arg-type]


# ---- counts --------------------------------------------------------------------------------

COUNTS_SQL = """
{rules}
SELECT k.kind, count(a.event_type) AS count
FROM unnest(%(kinds)s::text[]) WITH ORDINALITY AS k(kind, pos)
LEFT JOIN rules AS r ON r.kind = k.kind
LEFT JOIN {table} AS a
       ON a.event_type = r.event_type AND {outcome}
      AND a.event_type = ANY(%(event_types)s::text[])
      AND a."timestamp" >= %(start)s AND a."timestamp" < %(end)s
GROUP BY k.kind, k.pos
ORDER BY k.pos
"""


def counts(ctx: RunContext, start: datetime, end: datetime,
           kinds: Iterable[str] | None = None) -> pd.DataFrame:
    """Events of each kind in [start, end): DataFrame(kind, count), zeros included."""
    chosen, (start, end) = _kinds(kinds), _window(start, end)
    src = source(ctx)
    if src.is_table:
        rows = _query(ctx, src, COUNTS_SQL, _params(src, chosen, start=start, end=end))
        found = {row["kind"]: int(row["count"]) for row in rows}
    else:
        found = Counter(e.kind for e in _scan(src, chosen, start, end))
    return pd.DataFrame({"kind": chosen, "count": [int(found.get(k, 0)) for k in chosen]})


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

BUCKETS_SQL = """
{rules},
hits AS (
    SELECT r.kind,
           floor(extract(epoch FROM a."timestamp" - %(start)s::timestamptz)
                 / %(width_s)s)::int AS slot,
           count(*) AS n
    FROM rules AS r
    JOIN {table} AS a
      ON a.event_type = r.event_type AND {outcome}
     AND a.event_type = ANY(%(event_types)s::text[])
     AND a."timestamp" >= %(start)s AND a."timestamp" < %(end)s
    GROUP BY 1, 2
)
SELECT %(start)s::timestamptz + s.slot * %(width)s::interval AS bucket, k.kind,
       coalesce(sum(h.n), 0)::bigint AS count
FROM generate_series(0, %(slots)s - 1) AS s(slot)
CROSS JOIN unnest(%(kinds)s::text[]) WITH ORDINALITY AS k(kind, pos)
LEFT JOIN hits AS h ON h.kind = k.kind AND h.slot = s.slot
GROUP BY s.slot, k.kind, k.pos
ORDER BY s.slot, k.pos
"""


def buckets(ctx: RunContext, start: datetime, end: datetime,
            kinds: Iterable[str] | None = None, *, width: timedelta = DAY) -> pd.DataFrame:
    """Events per bucket and kind: DataFrame(bucket, kind, count), buckets `width` long from
    `start` (the last may be partial), every bucket and kind, zeros included."""
    chosen, (start, end) = _kinds(kinds), _window(start, end)
    if width <= timedelta(0):
        raise ValueError("the bucket width must be positive")
    slots = max(0, math.ceil((end - start) / width))
    columns = ["bucket", "kind", "count"]
    if slots == 0:
        return _frame([], columns)
    src = source(ctx)
    if src.is_table:
        rows = _query(ctx, src, BUCKETS_SQL, _params(
            src, chosen, start=start, end=end, slots=slots, width=width,
            width_s=width.total_seconds()))
    else:
        per: Counter[tuple[int, str]] = Counter()
        for e in _scan(src, chosen, start, end):
            per[(int((e.ts - start) / width), e.kind)] += 1
        rows = [{"bucket": start + s * width, "kind": k, "count": per.get((s, k), 0)}
                for s in range(slots) for k in chosen]
    frame = _frame(rows, columns)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    frame["count"] = frame["count"].astype(int)
    return frame


def hourly(ctx: RunContext, start: datetime, end: datetime,
           kinds: Iterable[str] | None = None) -> pd.DataFrame:
    """Events per hour and kind: DataFrame(hour, kind, count), every hour of the window
    (the first at `start`; the last may be partial) and every kind, zeros included."""
    return buckets(ctx, start, end, kinds, width=HOUR).rename(columns={"bucket": "hour"})


TOP_SQL = """
{rules}
SELECT {key} AS value, count(*) AS count,
       count(DISTINCT {ip}) AS ips, count(DISTINCT {user}) AS users,
       min(a."timestamp") AS first_seen, max(a."timestamp") AS last_seen
FROM rules AS r
JOIN {table} AS a
  ON a.event_type = r.event_type AND {outcome}
 AND a.event_type = ANY(%(event_types)s::text[])
 AND a."timestamp" >= %(start)s AND a."timestamp" < %(end)s
GROUP BY 1
ORDER BY count DESC, value ASC NULLS LAST
LIMIT %(limit)s
"""


def top(ctx: RunContext, start: datetime, end: datetime, kind: str, by: str = "ip",
        limit: int = 10) -> pd.DataFrame:
    """The `limit` largest sources of one kind in [start, end), by client address, user or
    reason: DataFrame(<by>, count, ips, users, first_seen, last_seen), largest first (ties
    by value). `ips`/`users` are the distinct addresses and users behind each row: one
    address trying many users is credential stuffing, one user from many addresses a
    distributed guess at one account. A missing value (no user, no reason) is None."""
    (chosen,), (start, end) = _kinds([kind]), _window(start, end)
    if by not in BY:
        raise ValueError(f"by must be one of {BY}, not {by!r}")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    src = source(ctx)
    columns = [by, "count", "ips", "users", "first_seen", "last_seen"]
    if src.is_table:
        rows = _query(ctx, src, TOP_SQL,
                      _params(src, [chosen], start=start, end=end, limit=limit), by=by)
        rows = [{by: r["value"], **{c: r[c] for c in columns[1:]}} for r in rows]
    else:
        rows = _top_jsonl(src, chosen, start, end, by, limit)
    frame = _frame(rows, columns)
    frame[by] = frame[by].astype(object).where(frame[by].notna(), None)
    for column in ("first_seen", "last_seen"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


# Mean and spread of the counts in `windows` earlier windows, each `step` before the last:
# window w is [start - w·step, end - w·step). With step = the window's length they are the
# windows just before it (an incident's "preceding baseline"); with step = 1 day, the same
# hours on each earlier day (the daily review's). Sample standard deviation (n - 1).
BASELINE_SQL = """
{rules},
windows AS (
    SELECT w, %(start)s::timestamptz - w * %(step)s::interval AS lo,
              %(end)s::timestamptz - w * %(step)s::interval AS hi
    FROM generate_series(1, %(windows)s) AS w
),
hits AS (  -- one index range scan over all the windows, then each row to its window(s)
    SELECT r.kind, w.w, count(*) AS n
    FROM rules AS r
    JOIN {table} AS a
      ON a.event_type = r.event_type AND {outcome}
     AND a.event_type = ANY(%(event_types)s::text[])
     AND a."timestamp" >= %(lo)s AND a."timestamp" < %(hi)s
    JOIN windows AS w ON a."timestamp" >= w.lo AND a."timestamp" < w.hi
    GROUP BY 1, 2
),
per_window AS (  -- every (kind, window), zeros included
    SELECT k.kind, k.pos, w.w, coalesce(h.n, 0) AS n
    FROM unnest(%(kinds)s::text[]) WITH ORDINALITY AS k(kind, pos)
    CROSS JOIN windows AS w
    LEFT JOIN hits AS h ON h.kind = k.kind AND h.w = w.w
)
SELECT kind, count(*) AS windows, avg(n)::float8 AS mean,
       coalesce(stddev_samp(n), 0)::float8 AS stddev,
       min(n) AS min, max(n) AS max, sum(n) AS total
FROM per_window
GROUP BY kind, pos
ORDER BY pos
"""


def baseline(ctx: RunContext, start: datetime, end: datetime,
             kinds: Iterable[str] | None = None, *, windows: int,
             step: timedelta | None = None) -> pd.DataFrame:
    """Counts of each kind in `windows` earlier windows like [start, end), `step` apart
    (default: back to back): DataFrame(kind, windows, mean, stddev, min, max, total)."""
    chosen, (start, end) = _kinds(kinds), _window(start, end)
    step = step or (end - start)
    if windows < 1:
        raise ValueError("windows must be at least 1")
    if step <= timedelta(0):
        raise ValueError("step must be positive")
    src = source(ctx)
    columns = ["kind", "windows", "mean", "stddev", "min", "max", "total"]
    if src.is_table:
        rows = _query(ctx, src, BASELINE_SQL, _params(
            src, chosen, start=start, end=end, windows=windows, step=step,
            lo=start - windows * step, hi=end - step))
    else:
        per: Counter[tuple[str, int]] = Counter()
        lo = start - windows * step
        for e in _scan(src, chosen, lo, end - step):
            for w in range(1, windows + 1):
                if start - w * step <= e.ts < end - w * step:
                    per[(e.kind, w)] += 1
        rows = [_stats(k, [per.get((k, w), 0) for w in range(1, windows + 1)])
                for k in chosen]
    frame = _frame(rows, columns)
    return frame.astype({"windows": int, "mean": float, "stddev": float, "min": int,
                         "max": int, "total": int})


# The same, per hour of the window: for hour h of [start, end) and day d = 1..days, the count
# in [start + h hours, start + (h+1) hours) - d days (the last hour cut at `end`).
HOURLY_BASELINE_SQL = """
{rules},
hits AS (  -- one index range scan; a row shifted d days forward lands in hour h
    SELECT r.kind, d.d,
           floor(extract(epoch FROM a."timestamp" + d.d * %(step)s::interval
                                    - %(start)s::timestamptz) / 3600)::int AS h,
           count(*) AS n
    FROM rules AS r
    JOIN {table} AS a
      ON a.event_type = r.event_type AND {outcome}
     AND a.event_type = ANY(%(event_types)s::text[])
     AND a."timestamp" >= %(lo)s AND a."timestamp" < %(hi)s
    JOIN generate_series(1, %(days)s) AS d(d)
      ON a."timestamp" + d.d * %(step)s::interval >= %(start)s::timestamptz
     AND a."timestamp" + d.d * %(step)s::interval < %(end)s::timestamptz
    GROUP BY 1, 2, 3
),
per_slot AS (  -- every (kind, day, hour), zeros included
    SELECT k.kind, k.pos, d.d, s.h, coalesce(hits.n, 0) AS n
    FROM unnest(%(kinds)s::text[]) WITH ORDINALITY AS k(kind, pos)
    CROSS JOIN generate_series(1, %(days)s) AS d(d)
    CROSS JOIN generate_series(0, %(slots)s - 1) AS s(h)
    LEFT JOIN hits ON hits.kind = k.kind AND hits.d = d.d AND hits.h = s.h
)
SELECT %(start)s::timestamptz + h * interval '1 hour' AS hour, kind,
       avg(n)::float8 AS mean, coalesce(stddev_samp(n), 0)::float8 AS stddev
FROM per_slot
GROUP BY h, kind, pos
ORDER BY h, pos
"""


def hourly_baseline(ctx: RunContext, start: datetime, end: datetime,
                    kinds: Iterable[str] | None = None, *, days: int,
                    step: timedelta = timedelta(days=1)) -> pd.DataFrame:
    """For each hour bucket of [start, end) (as `hourly` makes them) the mean and sample
    standard deviation of the same hour on each of `days` earlier days:
    DataFrame(hour, kind, mean, stddev)."""
    chosen, (start, end) = _kinds(kinds), _window(start, end)
    if days < 1:
        raise ValueError("days must be at least 1")
    slots = _slots(start, end)
    columns = ["hour", "kind", "mean", "stddev"]
    if slots == 0:
        return _frame([], columns)
    src = source(ctx)
    if src.is_table:
        rows = _query(ctx, src, HOURLY_BASELINE_SQL, _params(
            src, chosen, start=start, end=end, days=days, slots=slots, step=step,
            lo=start - days * step, hi=end - step))
    else:
        per: Counter[tuple[str, int, int]] = Counter()
        for e in _scan(src, chosen, start - days * step, end - step):
            for d in range(1, days + 1):
                shifted = e.ts + d * step
                if start <= shifted < end:
                    per[(e.kind, d, int((shifted - start).total_seconds() // 3600))] += 1
        rows = []
        for h in range(slots):
            for k in chosen:
                stats = _stats(k, [per.get((k, d, h), 0) for d in range(1, days + 1)])
                rows.append({"hour": start + timedelta(hours=h), "kind": k,
                             "mean": stats["mean"], "stddev": stats["stddev"]})
    frame = _frame(rows, columns)
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
    return frame.astype({"mean": float, "stddev": float})


def _stats(kind: str, values: list[int]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"kind": kind, "windows": n, "mean": mean, "stddev": math.sqrt(var),
            "min": min(values), "max": max(values), "total": sum(values)}


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(
        {c: pd.Series(dtype="object") for c in columns})


# ---- the index the queries need ------------------------------------------------------------

# Indexes on the table whose leading columns are (event_type, "timestamp"), valid or not.
INDEX_SQL = """
SELECT i.indexrelid::regclass::text AS index, pg_get_indexdef(i.indexrelid) AS definition,
       i.indisvalid AS valid, i.indisready AS ready
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = %(table)s
  AND n.nspname = coalesce(%(schema)s, current_schema())
  AND i.indnkeyatts >= 2
  AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
       FROM unnest(i.indkey[0:1]) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      ) = %(columns)s::text[]
ORDER BY i.indisvalid DESC, 1
"""
TABLE_EXISTS_SQL = """
SELECT c.reltuples::bigint AS estimated_rows, pg_total_relation_size(c.oid) AS bytes
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = %(table)s AND n.nspname = coalesce(%(schema)s, current_schema())
  AND c.relkind IN ('r', 'p')
"""


def _bare(name: str) -> str:
    """An identifier as a person writes it: bare when that means the same, else quoted."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def create_index_statement(src: Source) -> str:
    """The statement that builds the index the audit queries need, without locking writes."""
    schema, name = src.split_table()
    table = f"{_bare(schema)}.{_bare(name)}" if schema else _bare(name)
    index = _bare(f"ix_{name}_event_type_timestamp"[:63])
    return f'CREATE INDEX CONCURRENTLY {index} ON {table} (event_type, "timestamp");'


@dataclass(frozen=True)
class IndexStatus:
    table: str
    exists: bool  # the table itself
    index: str | None  # a valid index on (event_type, "timestamp"), if any
    invalid: list[str]  # such indexes left invalid by a failed CONCURRENTLY build
    estimated_rows: int | None
    statement: str


def index_status(conn: psycopg.Connection, src: Source) -> IndexStatus:
    schema, name = src.split_table()
    args = {"table": name, "schema": schema, "columns": list(INDEX_COLUMNS)}
    table = postgres.one(conn, TABLE_EXISTS_SQL, args)
    found = postgres.rows(conn, INDEX_SQL, args) if table else []
    valid = [r["index"] for r in found if r["valid"] and r["ready"]]
    return IndexStatus(table=src.table or name, exists=bool(table),
                       index=valid[0] if valid else None,
                       invalid=[r["index"] for r in found if not (r["valid"] and r["ready"])],
                       estimated_rows=table.get("estimated_rows") if table else None,
                       statement=create_index_statement(src))


@check("audit.index")
def index_check(ctx: RunContext) -> Finding:
    """Does the index the audit queries use exist? Without it every count scans the table."""
    src = source(ctx)
    if not src.is_table:
        return ctx.result(Status.INFO,
                          "the audit source is JSON-lines files: no index applies",
                          {"source": src.label})
    with connect(ctx) as conn:
        st = index_status(conn, src)
    evidence = {"source": src.kind, "table": st.table, "index": st.index,
                "invalid_indexes": st.invalid, "estimated_rows": st.estimated_rows,
                "columns": list(INDEX_COLUMNS), "statement": st.statement}
    if not st.exists:
        return ctx.result(Status.UNKNOWN,
                          f"the audit table {st.table} does not exist in this database",
                          evidence, "check audit_source in the inventory and that the server "
                                    "logs audit events to PostgreSQL")
    if st.index:
        return ctx.result(Status.OK,
                          f"{st.table} has the index the audit queries use ({st.index} on "
                          "event_type, timestamp)", evidence)
    broken = (f"; {', '.join(st.invalid)} is INVALID (a failed concurrent build): drop it "
              "first" if st.invalid else "")
    return ctx.result(Status.WARNING,
                      f"{st.table} (about {st.estimated_rows or 0:,} rows) has no index on "
                      f"(event_type, timestamp): every security count scans the whole "
                      f"table{broken}", evidence,
                      f"create it without blocking writes: {st.statement}")


# ---- what the source covers ----------------------------------------------------------------

def coverage(src: Source) -> pd.DataFrame:
    """Per kind: how the source measures it (exact, approximate, none) and from what."""
    rows = []
    for kind in KINDS:
        quality, note = COVERAGE[src.vocabulary][kind]
        events = [r.event_type + (" (failed)" if r.failed_only else "")
                  for r in src.rules if r.kind == kind]
        rows.append({"kind": kind, "coverage": quality, "events": ", ".join(events),
                     "note": note})
    return pd.DataFrame(rows)


@check("audit.source")
def check_source(ctx: RunContext, kinds: Iterable[str] | None = None) -> list[Finding]:
    """Which audit source this target uses, that it is readable, and what it cannot count.

    For a v2 source an info finding says that SQL-injection attempts have no v2 event (and
    that rate limiting is only approximated), so a zero there is not read as "none happened".
    """
    src = source(ctx)
    chosen = _kinds(kinds)
    table = coverage(src)
    evidence: dict[str, Any] = {"source": src.kind, "vocabulary": src.vocabulary}
    if src.is_table:
        with connect(ctx) as conn:
            st = index_status(conn, src)
        evidence.update({"table": st.table, "estimated_rows": st.estimated_rows})
        if not st.exists:
            found = ctx.result(Status.CRITICAL,
                               f"the audit table {st.table} does not exist: no security "
                               "event can be counted", evidence,
                               "point audit_source at the table the server writes (table, "
                               "v2_table or jsonl:PATH), or enable audit logging to PostgreSQL")
            return [found]
        found = ctx.result(Status.OK,
                           f"audit events read from the {src.kind} {st.table} (about "
                           f"{st.estimated_rows or 0:,} rows)", evidence, table=table)
    else:
        files = src.files()
        evidence.update({"pattern": src.pattern, "files": [str(f) for f in files][:20],
                         "file_count": len(files),
                         "bytes": sum(f.stat().st_size for f in files)})
        if not files:
            return [ctx.result(Status.CRITICAL,
                               f"no JSON-lines audit file matches {src.pattern}", evidence,
                               "check audit_source (jsonl:PATH) and where the server's JSON "
                               "logs are written")]
        found = ctx.result(Status.OK,
                           f"audit events streamed from {len(files)} JSON-lines file(s) "
                           f"matching {src.pattern}", evidence, table=table)
    out = [found]
    if src.vocabulary != "v2":  # the runbook's table has an event for each kind it counts
        return out
    missing = [k for k in chosen if COVERAGE[src.vocabulary][k][0] == "none"]
    rough = [k for k in chosen if COVERAGE[src.vocabulary][k][0] == "approximate"]
    for kind in missing:
        out.append(ctx.record(
            f"audit.coverage.{kind}", Status.INFO,
            f"{kind} cannot be counted from a v2 audit source: "
            f"{COVERAGE[src.vocabulary][kind][1]}; its count here is always 0",
            {"kind": kind, "source": src.kind, "coverage": "none"},
            "watch fraiseql_validation_errors_total and fraiseql_parse_errors_total instead"
            if kind == "sql_injection" else None))
    for kind in rough:
        out.append(ctx.record(
            f"audit.coverage.{kind}", Status.INFO,
            f"{kind} is only approximated by this source: {COVERAGE[src.vocabulary][kind][1]}",
            {"kind": kind, "source": src.kind, "coverage": "approximate"}))
    return out


# ---- JSON-lines streaming ------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    ts: datetime
    kind: str
    ip: str | None
    user: str | None
    reason: str | None


_FAILED_WORDS = {"failure", "failed", "fail", "denied", "error", "rejected", "invalid"}
_SUCCESS_WORDS = {"success", "succeeded", "ok", "passed", "valid"}
_DEBUG_SOME = re.compile(r'^Some\((.*)\)$', re.S)
_IP_KEYS = ("ip_address", "ip", "client_ip", "remote_addr", "peer_addr", "client_addr")
_USER_KEYS = ("username", "user_id", "subject", "user")
_REASON_KEYS = ("reason", "error", "error_message")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _plain(value: Any) -> str | None:
    """A field as text: tracing's Debug forms `None` and `Some("x")` unwrapped."""
    if value is None:
        return None
    if not isinstance(value, str):
        return str(value)
    text = value.strip()
    if text in ("", "None", "null"):
        return None
    match = _DEBUG_SOME.match(text)
    if match:
        inner = match.group(1).strip()
        if len(inner) >= 2 and inner[0] == inner[-1] == '"':
            try:
                return str(json.loads(inner))
            except ValueError:
                return inner[1:-1]
        return inner
    return text


def _first(record: dict[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        if key in record:
            value = _plain(record[key])
            if value is not None:
                return value
    return None


def _failed(record: dict[str, Any]) -> bool:
    """The outcome of a v2 auth event line. The serialised AuditEntry carries `success`; the
    tracing line from StructuredAuditLogger carries `error` on failures and says "failed
    operation" in its message (and is logged at WARN); an audit_log-shaped record has
    `status`."""
    if "success" in record:
        value = record["success"]
        if isinstance(value, str):
            return value.strip().lower() not in ("true", "1", "yes")
        return not bool(value)
    for key in ("status", "outcome", "result"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            word = value.strip().lower()
            if word in _FAILED_WORDS:
                return True
            if word in _SUCCESS_WORDS:
                return False
    if _plain(record.get("error")) or _plain(record.get("error_message")):
        return True
    message = str(record.get("message") or record.get("msg") or "").lower()
    if "failed operation" in message or "failure" in message:
        return True
    if "successful operation" in message:
        return False
    return str(record.get("level", "")).upper() in ("WARN", "WARNING", "ERROR")


def _timestamp(record: dict[str, Any]) -> datetime | None:
    raw = record.get("timestamp", record.get("time", record.get("ts")))
    if isinstance(raw, (int, float)):
        return datetime.fromtimestamp(float(raw), UTC)
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ip(value: str | None) -> str | None:
    """An address without the port a socket address carries (1.2.3.4:5678, [::1]:80)."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("[") and "]" in text:
        return text[1:text.index("]")]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text.split("/", 1)[0]


def _scan(src: Source, kinds: Sequence[str], start: datetime, end: datetime
          ) -> Iterator[Event]:
    """Matching events in [start, end), one line at a time; unparseable lines are skipped."""
    wanted = {r.event_type: r for r in src.rules if r.kind in kinds}
    for path in src.files():
        with _open(path) as handle:
            for line in handle:
                if '"event_type"' not in line:  # cheap pre-filter before parsing JSON
                    continue
                try:
                    raw = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(raw, dict):
                    continue
                fields = raw.get("fields")
                record = {**raw, **fields} if isinstance(fields, dict) else raw
                rule = wanted.get(str(record.get("event_type", "")))
                if rule is None:
                    continue
                ts = _timestamp(record)
                if ts is None or not start <= ts < end:
                    continue
                if rule.failed_only and not _failed(record):
                    continue
                yield Event(ts, rule.kind, _ip(_first(record, _IP_KEYS)),
                            _first(record, _USER_KEYS), _first(record, _REASON_KEYS))


def _top_jsonl(src: Source, kind: str, start: datetime, end: datetime, by: str,
               limit: int) -> list[dict[str, Any]]:
    count: Counter[str | None] = Counter()
    ips: dict[str | None, set[str]] = defaultdict(set)
    users: dict[str | None, set[str]] = defaultdict(set)
    first: dict[str | None, datetime] = {}
    last: dict[str | None, datetime] = {}
    for e in _scan(src, [kind], start, end):
        key = getattr(e, by)
        count[key] += 1
        if e.ip is not None:
            ips[key].add(e.ip)
        if e.user is not None:
            users[key].add(e.user)
        first[key] = min(first.get(key, e.ts), e.ts)
        last[key] = max(last.get(key, e.ts), e.ts)
    ordered = sorted(count.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))
    return [{by: key, "count": n, "ips": len(ips[key]), "users": len(users[key]),
             "first_seen": first[key], "last_seen": last[key]}
            for key, n in ordered[:limit]]


def describe_window(start: datetime, end: datetime) -> str:
    """[start, end) for a summary line."""
    return f"[{isoformat(start)}, {isoformat(end)})"
