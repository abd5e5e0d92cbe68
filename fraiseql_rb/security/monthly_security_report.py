"""Runbook §8.1 "Regular Security Reviews", monthly: the security report, its data and its PDF.

The runbook's monthly review is three commands that do not exist (`generate-security-report
--month=... --output=/reports/security-$month.pdf`, `analyze-access-logs`,
`compliance-checker --generate-report`). Here they are one runbook, `monthly-security-report`:

- the month: a calendar month in UTC (`month_window`), its totals by kind and by day
  (`check_month_totals`, `audit.buckets`); the access review over the audit table's events
  of every type: events by user and by address with the share outside working hours
  (`access_review`, `WorkHours`), and the addresses first seen this month, i.e. absent from
  all earlier data (`new_addresses`);
- policy compliance, one row per policy, each decided by the pre-flight checks that already
  exist (`compliance`);
- `security-report-YYYY-MM.pdf` in the run's artifact directory (`monthly_pdf`).

Every count and grouping runs in PostgreSQL; what reaches pandas is one row per day and
kind, or a top-N bounded by a parameter. The month's access queries group all its events
(not only security kinds), so they read the month's range of the table whatever the indexes:
they run with a longer statement timeout (`MONTH_STATEMENT_TIMEOUT_MS`).

`MonthlyReport` carries what the notebook's steps produced (tables, figures) to the PDF, so a
notebook cell stays one call. Nothing here changes the system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from psycopg import sql

from fraiseql_rb.checks import audit
from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.errors import RunbookError, UsageError
from fraiseql_rb.core.findings import Finding, Status, isoformat
from fraiseql_rb.core.timespec import WorkHours, month_window
from fraiseql_rb.security import compliance, monthly_pdf
from fraiseql_rb.targets import postgres

# ---- the month, working hours, totals, the access review -----------------------------------

MONTH_STATEMENT_TIMEOUT_MS = thresholds.MONTH_STATEMENT_TIMEOUT_MS  # they read the whole month
def describe_month(label: str, start: datetime, end: datetime) -> str:
    to_date = " (to date)" if end.day != 1 or end.hour or end.minute or end.second else ""
    return f"month {label}{to_date}: {audit.describe_window(start, end)}"


# Working time as a predicate on a row's timestamp, in UTC whatever the session's TimeZone.
WORKING_SQL = """(
    extract(isodow FROM a."timestamp" AT TIME ZONE 'UTC')::int = ANY(%(work_days)s::int[])
    AND extract(hour FROM a."timestamp" AT TIME ZONE 'UTC')::int >= %(work_start)s
    AND extract(hour FROM a."timestamp" AT TIME ZONE 'UTC')::int < %(work_end)s)"""

MONTH_TOTAL_SQL = """
SELECT count(*) AS events FROM {table} AS a
WHERE a."timestamp" >= %(start)s AND a."timestamp" < %(end)s
"""

# One pass over the month: events per (user, address) pair, then per user, per address and
# overall from the pairs (a user's distinct addresses are its pairs), each ranked twice: by
# events and by events outside working hours. Returned: the top `limit` of each ranking
# and one `all` row; never more than 4·limit + 1 rows.
ACCESS_SQL = """
WITH pairs AS MATERIALIZED (
    SELECT {user} AS u, {ip} AS i, count(*) AS events,
           count(*) FILTER (WHERE NOT {working}) AS outside_hours,
           min(a."timestamp") AS first_seen, max(a."timestamp") AS last_seen
    FROM {table} AS a
    WHERE a."timestamp" >= %(start)s AND a."timestamp" < %(end)s
    GROUP BY 1, 2
),
grouped AS (
    SELECT 'user' AS by, u AS value, sum(events)::bigint AS events,
           sum(outside_hours)::bigint AS outside_hours, count(i) AS ips,
           NULL::bigint AS users, min(first_seen) AS first_seen, max(last_seen) AS last_seen
    FROM pairs GROUP BY u
    UNION ALL
    SELECT 'ip', i, sum(events)::bigint, sum(outside_hours)::bigint, NULL::bigint, count(u),
           min(first_seen), max(last_seen)
    FROM pairs GROUP BY i
),
ranked AS (
    SELECT g.*,
           row_number() OVER (PARTITION BY by ORDER BY events DESC, value ASC NULLS LAST)
               AS rank_events,
           row_number() OVER (PARTITION BY by ORDER BY outside_hours DESC,
                                                      value ASC NULLS LAST) AS rank_outside
    FROM grouped AS g
)
SELECT by, value, events, outside_hours, ips, users, first_seen, last_seen, rank_events,
       rank_outside
FROM ranked
WHERE rank_events <= %(limit)s OR (rank_outside <= %(limit)s AND outside_hours > 0)
UNION ALL
SELECT 'all', NULL, coalesce(sum(events), 0)::bigint, coalesce(sum(outside_hours), 0)::bigint,
       count(DISTINCT i), count(DISTINCT u), min(first_seen), max(last_seen), 0, 0
FROM pairs
"""

# Addresses of the month that appear nowhere before it. The earlier addresses are reduced to
# their distinct set first (a small hash whatever the history's size), then anti-joined.
NEW_ADDRESSES_SQL = """
WITH pairs AS MATERIALIZED (
    SELECT a.ip_address AS ip, {user} AS u, count(*) AS events,
           min(a."timestamp") AS first_seen, max(a."timestamp") AS last_seen
    FROM {table} AS a
    WHERE a."timestamp" >= %(start)s AND a."timestamp" < %(end)s
      AND a.ip_address IS NOT NULL
    GROUP BY 1, 2
),
month AS (
    SELECT ip, sum(events)::bigint AS events, count(u) AS users,
           min(first_seen) AS first_seen, max(last_seen) AS last_seen
    FROM pairs GROUP BY ip
),
earlier AS MATERIALIZED (
    SELECT DISTINCT a.ip_address AS ip FROM {table} AS a
    WHERE a."timestamp" < %(start)s AND a.ip_address IS NOT NULL
),
new AS (
    SELECT m.* FROM month AS m WHERE NOT EXISTS (SELECT 1 FROM earlier AS e WHERE e.ip = m.ip)
)
SELECT * FROM (
    SELECT 'ip' AS row, host(ip) AS ip, events, users, first_seen, last_seen
    FROM new ORDER BY events DESC, ip LIMIT %(limit)s
) AS top
UNION ALL
SELECT 'all', NULL, (SELECT count(*) FROM new), (SELECT count(*) FROM month), NULL, NULL
"""


def _month_connect(ctx: RunContext) -> Any:
    """audit.connect with the month's longer statement timeout (still read-only)."""
    conn = audit.connect(ctx)
    conn.execute("SELECT set_config('statement_timeout', %s, false)",
                 (str(MONTH_STATEMENT_TIMEOUT_MS),))
    return conn


def _month_sql(template: str, src: audit.Source) -> sql.Composed:
    return sql.SQL(template).format(table=audit._table_ident(src),
                                    user=audit._KEY[(src.kind, "user")],
                                    ip=audit._KEY[(src.kind, "ip")], working=sql.SQL(WORKING_SQL))


def _need_table(src: audit.Source, what: str) -> None:
    if not src.is_table:
        raise audit.AuditSourceError(
            f"{what} reads events of every type from an audit table; the JSON-lines source "
            f"{src.pattern} holds only the v2 auth events (set audit_source to the table)")


def month_total(ctx: RunContext, start: datetime, end: datetime) -> int:
    """Audit events of every type in [start, end) (table sources only)."""
    start, end = audit._window(start, end)
    src = audit.source(ctx)
    _need_table(src, "the month's total")
    with _month_connect(ctx) as conn:
        row = postgres.one(conn, _month_sql(MONTH_TOTAL_SQL, src),
                           {"start": start, "end": end})
    return int(row.get("events") or 0)


ACCESS_COLUMNS = ["value", "events", "outside_hours", "ips", "users", "first_seen",
                  "last_seen"]


@dataclass(frozen=True)
class AccessReview:
    """The month's access, bounded: totals and the top users and addresses."""

    start: datetime
    end: datetime
    work: WorkHours
    totals: dict[str, Any]  # events, outside_hours, ips, users, first_seen, last_seen
    by_user: pd.DataFrame  # top by events: user, events, outside_hours, ips, first/last_seen
    by_ip: pd.DataFrame  # top by events: ip, events, outside_hours, users, first/last_seen
    outside_users: pd.DataFrame  # top by events outside working hours
    outside_ips: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Top users and addresses in one frame: by, value, events, outside_hours, ...."""
        return _stack(self.by_user, self.by_ip)

    def outside_table(self) -> pd.DataFrame:
        """The same for events outside working hours (most such events first)."""
        return _stack(self.outside_users, self.outside_ips)


def _stack(users: pd.DataFrame, ips: pd.DataFrame) -> pd.DataFrame:
    parts = [users.rename(columns={"user": "value"}).assign(by="user"),
             ips.rename(columns={"ip": "value"}).assign(by="ip")]
    frame = pd.concat([p.astype(object) for p in parts if not p.empty] or [parts[0]],
                      ignore_index=True).reindex(columns=["by", *ACCESS_COLUMNS])
    for column in ("events", "outside_hours", "ips", "users"):
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64") if len(frame) else (
            frame[column])
    for column in ("first_seen", "last_seen"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def access_review(ctx: RunContext, start: datetime, end: datetime, *,
                  work: WorkHours | None = None, limit: int = thresholds.TOP_N) -> AccessReview:
    """Requests by user and by client address over the audit table's events of every type in
    [start, end): events, events outside working hours, distinct addresses per user and
    users per address, first and last seen. One pass in PostgreSQL; `limit` rows per
    ranking reach pandas."""
    start, end = audit._window(start, end)
    work = work or WorkHours()
    if limit < 1:
        raise ValueError("limit must be at least 1")
    src = audit.source(ctx)
    _need_table(src, "the access review")
    with _month_connect(ctx) as conn:
        rows = postgres.rows(conn, _month_sql(ACCESS_SQL, src), {
            "start": start, "end": end, "limit": limit, "work_days": list(work.days),
            "work_start": work.start_hour, "work_end": work.end_hour})
    total = next(r for r in rows if r["by"] == "all")

    def frame(by: str, rank: str) -> pd.DataFrame:
        picked = sorted((r for r in rows if r["by"] == by and r[rank] <= limit
                         and (rank == "rank_events" or r["outside_hours"] > 0)),
                        key=lambda r: r[rank])
        out = audit._frame([{c: r[c] for c in ACCESS_COLUMNS} for r in picked],
                           ACCESS_COLUMNS)
        out["value"] = out["value"].astype(object).where(out["value"].notna(), None)
        for column in ("first_seen", "last_seen"):
            out[column] = pd.to_datetime(out[column], utc=True)
        drop = "users" if by == "user" else "ips"
        return out.drop(columns=[drop]).rename(columns={"value": by})

    totals = {k: total[k] for k in ("events", "outside_hours", "ips", "users", "first_seen",
                                    "last_seen")}
    totals.update({k: int(totals[k] or 0) for k in ("events", "outside_hours", "ips", "users")})
    return AccessReview(start, end, work, totals, frame("user", "rank_events"),
                        frame("ip", "rank_events"), frame("user", "rank_outside"),
                        frame("ip", "rank_outside"))


def new_addresses(ctx: RunContext, start: datetime, end: datetime, *,
                  limit: int = thresholds.TOP_N) -> tuple[pd.DataFrame, int, int]:
    """Client addresses with events in [start, end) and none before `start`, in all the
    table's data: (the `limit` busiest: DataFrame(ip, events, users, first_seen,
    last_seen), how many new addresses, how many addresses the month saw)."""
    start, end = audit._window(start, end)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    src = audit.source(ctx)
    _need_table(src, "first-seen addresses")
    with _month_connect(ctx) as conn:
        rows = postgres.rows(conn, _month_sql(NEW_ADDRESSES_SQL, src),
                             {"start": start, "end": end, "limit": limit})
    summary = next(r for r in rows if r["row"] == "all")
    columns = ["ip", "events", "users", "first_seen", "last_seen"]
    frame = audit._frame([{c: r[c] for c in columns} for r in rows if r["row"] == "ip"],
                         columns)
    for column in ("first_seen", "last_seen"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame, int(summary["events"] or 0), int(summary["users"] or 0)


# ---- monthly checks: each records one finding and returns its table ----------------------------


def _table_only(ctx: RunContext, check_name: str, what: str, src: audit.Source) -> Finding:
    """A JSON-lines source holds only v2 auth events: say what is missing, as context."""
    return ctx.record(check_name, Status.INFO,
                      f"{what} needs the audit table's events of every type; the JSON-lines "
                      f"source {src.pattern} holds only the v2 auth events, so it is skipped",
                      {"source": src.label},
                      "point audit_source at the audit table (table or v2_table) for it")

MONTH_KINDS = audit.KINDS


@check("security.monthly_totals")
def check_month_totals(ctx: RunContext, label: str, start: datetime, end: datetime
                       ) -> Finding:
    """The month's security events by kind, and its audit events of every type. Records and
    returns `security.monthly_totals` (info: the report's subject, never an alarm; its
    table: kind, what, count); a month without a single audit event says so plainly, since
    every table below will then be empty."""
    src = audit.source(ctx)
    counts = audit.counts(ctx, start, end, MONTH_KINDS)
    table = counts.assign(what=[audit.label(k) for k in counts["kind"]])[["kind", "what", "count"]]
    by_kind = {r["kind"]: int(r["count"]) for r in table.to_dict("records")}
    security = sum(by_kind.values())
    everything = month_total(ctx, start, end) if src.is_table else None
    evidence = {"month": label, "window": [isoformat(start), isoformat(end)],
                "totals": by_kind, "security_events": security, "all_events": everything,
                "source": src.label}
    if not security and not everything:
        return ctx.result(Status.INFO,
                   f"no audit events at all in {label} {audit.describe_window(start, end)}: "
                   "nothing to total or review for this month (before audit logging "
                   "began, or rotated out of the audit table); the compliance checks "
                   "below describe the deployment as it is today", {**evidence,
                                                                    "no_data": True},
                   table=table)
    every = f" among {everything:,} audit events of every type" if everything else ""
    return ctx.result(Status.INFO,
                      f"{label}: {security:,} security events{every}: "
                      + ", ".join(f"{n:,} {audit.label(k)}" for k, n in by_kind.items()),
                      {**evidence, "no_data": False}, table=table)


@check("security.access_review")
def check_access_review(ctx: RunContext, label: str, start: datetime, end: datetime, *,
                        work: WorkHours, top_n: int = thresholds.TOP_N) -> AccessReview:
    """§8.1 monthly "analyze-access-logs": who used the API from where, and when. Records
    `security.access_review` (info) and returns the review."""
    src = audit.source(ctx)
    if not src.is_table:
        return _table_only(ctx, "security.access_review", "the access review", src)
    review = access_review(ctx, start, end, work=work, limit=top_n)
    t = review.totals
    share = t["outside_hours"] / t["events"] if t["events"] else 0.0
    evidence = {"month": label, "window": [isoformat(start), isoformat(end)],
                "working_hours": work.describe(), **t,
                "outside_share": round(share, 4), "top_n": top_n,
                "top_users": review.by_user.head(top_n).to_dict("records"),
                "top_ips": review.by_ip.head(top_n).to_dict("records"),
                "top_outside_users": review.outside_users.to_dict("records"),
                "top_outside_ips": review.outside_ips.to_dict("records")}
    if not t["events"]:
        ctx.result(Status.INFO,
                   f"no audit events in {label}: no access to review", evidence,
                   table=review.table())
        return review
    busiest = review.by_user.iloc[0] if not review.by_user.empty else None
    lead = (f"; busiest user {busiest['user'] or '(none)'} ({int(busiest['events']):,} "
            f"events from {int(busiest['ips'])} address(es))" if busiest is not None else "")
    ctx.result(Status.INFO,
               f"{t['events']:,} audit events in {label} from {t['users']:,} users and "
               f"{t['ips']:,} addresses; {t['outside_hours']:,} ({share:.1%}) outside working "
               f"hours ({work.describe()}){lead}", evidence, table=review.table())
    return review


@check("security.new_addresses")
def check_new_addresses(ctx: RunContext, label: str, start: datetime, end: datetime, *,
                        top_n: int = thresholds.TOP_N) -> Finding:
    """Client addresses first seen this month (in no earlier event). Records and returns
    `security.new_addresses` (info: a reviewer confirms they are known partners, new
    offices, or not; its table: the busiest `top_n`)."""
    src = audit.source(ctx)
    if not src.is_table:
        return _table_only(ctx, "security.new_addresses", "first-seen addresses", src)
    table, new, seen = new_addresses(ctx, start, end, limit=top_n)
    evidence = {"month": label, "new_addresses": new, "month_addresses": seen,
                "top": table.to_dict("records")}
    if not new:
        return ctx.result(Status.INFO,
                          f"no address first seen in {label} ({seen:,} addresses, all seen "
                          f"before)" if seen else f"no client address at all in {label}",
                          evidence, table=table)
    named = ", ".join(f"{r['ip']} ({int(r['events']):,})" for r in table.head(5).to_dict(
        "records"))
    return ctx.result(Status.INFO,
                      f"{new:,} of the {seen:,} addresses of {label} were never seen before; "
                      f"busiest: {named}", evidence,
                      "confirm each busy new address belongs to a known client; block the "
                      "others", table=table)


# ---- the month's report ----------------------------------------------------------------------


@dataclass
class MonthlyReport:
    """One month's report as the notebook builds it, step by step; `write_pdf` renders it."""

    ctx: RunContext
    label: str
    start: datetime
    end: datetime
    work: WorkHours
    top_n: int = thresholds.TOP_N
    warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning
    critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical
    totals: pd.DataFrame | None = None
    all_events: int | None = None
    access: AccessReview | None = None
    new_ips: pd.DataFrame | None = None
    new_ip_count: int | None = None
    compliance: pd.DataFrame | None = None
    figures: list[tuple[str, Figure]] = field(default_factory=list)

    # the notebook's steps, each one call

    def describe(self) -> str:
        return (f"{describe_month(self.label, self.start, self.end)}; "
                f"working hours {self.work.describe()}; top {self.top_n}")

    def check_totals(self) -> Finding:
        found = check_month_totals(self.ctx, self.label, self.start, self.end)
        if isinstance(found.table, pd.DataFrame):
            self.totals = found.table
            self.all_events = found.evidence.get("all_events")
        return found

    @property
    def no_data(self) -> bool:
        found = self._last("security.monthly_totals")
        return bool(found and found.evidence.get("no_data"))

    def daily_plot(self) -> Figure | Finding:
        """Security events per day of the month, one line per kind."""
        try:
            days = audit.buckets(self.ctx, self.start, self.end, MONTH_KINDS,
                                 width=audit.DAY)
            wide = days.pivot(index="bucket", columns="kind", values="count")[
                list(MONTH_KINDS)]
            wide.columns = [audit.TITLES.get(k, k) for k in wide.columns]
            fig = plots.timeseries(wide, title=f"Security events per day, {self.label}",
                                   ylabel="events per day", xlabel="day (UTC)")
            fig.axes[0].set_ylim(bottom=0)
            return self._keep("Security events per day", fig)
        except Exception as exc:  # noqa: BLE001 - a plot never stops the report
            return self._plot_failed("daily", exc)

    def type_plot(self) -> Figure | Finding:
        """The month's totals by kind, as bars."""
        try:
            if self.totals is None:
                raise RunbookError("the totals step did not run")
            data = self.totals.assign(what=[audit.TITLES.get(k, k)
                                            for k in self.totals["kind"]])
            fig = plots.bar(data, x="what", y="count", horizontal=True,
                            title=f"Security events by type, {self.label}",
                            xlabel="event type", ylabel="events in the month")
            return self._keep("Security events by type", fig)
        except Exception as exc:  # noqa: BLE001 - a plot never stops the report
            return self._plot_failed("by type", exc)

    def check_access(self) -> Finding | None:
        review = check_access_review(self.ctx, self.label, self.start, self.end,
                                     work=self.work, top_n=self.top_n)
        if isinstance(review, AccessReview):
            self.access = review
        return self._last("security.access_review")

    def outside_hours(self) -> pd.DataFrame:
        if self.access is None:
            print("The access review did not run: nothing to show.")
            return pd.DataFrame()
        t = self.access.totals
        print(f"{t['outside_hours']:,} of {t['events']:,} events outside working hours "
              f"({self.work.describe()})")
        return self.access.outside_table()

    def check_new_addresses(self) -> Finding:
        found = check_new_addresses(self.ctx, self.label, self.start, self.end,
                                    top_n=self.top_n)
        if isinstance(found.table, pd.DataFrame):
            self.new_ips = found.table
            self.new_ip_count = found.evidence.get("new_addresses")
        return found

    def check_compliance(self) -> pd.DataFrame | Finding:
        table = compliance.check_compliance(self.ctx, warning_days=self.warning_days,
                                            critical_days=self.critical_days)
        if isinstance(table, pd.DataFrame):
            self.compliance = table
        return table

    def write_pdf(self) -> Finding:
        """`security-report-YYYY-MM.pdf` in the run's artifact directory. Records
        `security.report_pdf`: ok with its path, info when the run has no artifact
        directory (called from Python), unknown when it cannot be written."""
        if self.ctx.log.path is None:
            return self.ctx.record("security.report_pdf", Status.INFO,
                                   "no PDF written: this run has no artifact directory "
                                   "(run it with fraiseql-rb run, or from the notebook)", {})
        path = self.ctx.log.path.parent / monthly_pdf.pdf_name(self.label)
        try:
            pages = monthly_pdf.write_pdf(self, path)
        except Exception as exc:  # noqa: BLE001 - the notebook and HTML still stand
            return self.ctx.record("security.report_pdf", Status.UNKNOWN,
                                   f"could not write the PDF: {describe_error(exc)}",
                                   {"error": type(exc).__name__, "path": str(path)},
                                   "read the error; the notebook and HTML hold the same "
                                   "report")
        return self.ctx.record("security.report_pdf", Status.OK,
                               f"{path.name} written ({pages} pages, "
                               f"{path.stat().st_size / 1024:.0f} KiB) beside the notebook",
                               {"path": str(path), "pages": pages,
                                "bytes": path.stat().st_size})

    # helpers

    def _last(self, name: str) -> Finding | None:
        return self.ctx.latest(name)

    def _keep(self, caption: str, fig: Figure) -> Figure:
        self.figures.append((caption, fig))
        return fig

    def _plot_failed(self, what: str, exc: Exception) -> Finding:
        return self.ctx.record("security.plot", Status.UNKNOWN,
                               f"could not draw the {what} plot: {describe_error(exc)}",
                               {"error": type(exc).__name__})

    def __repr__(self) -> str:
        return self.describe()


def begin(ctx: RunContext, month: str | None = None, *, top_n: int = thresholds.TOP_N,
          work_start_hour: int = thresholds.WORK_START_HOUR,
          work_end_hour: int = thresholds.WORK_END_HOUR, work_days: Any = thresholds.WORK_DAYS,
          warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
          critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical,
          now: datetime | None = None) -> MonthlyReport:
    """Check the parameters (a bad month or working-hours value raises a UsageError whose
    message is the one line to read) and start the report of `month` (YYYY-MM, None = the
    previous calendar month, UTC)."""
    label, start, end = month_window(month, now)
    work = WorkHours.parse(work_days, work_start_hour, work_end_hour)
    if int(top_n) < 1:
        raise UsageError(f"top_n must be at least 1, not {top_n}")
    return MonthlyReport(ctx, label, start, end, work, int(top_n), float(warning_days),
                         float(critical_days))
