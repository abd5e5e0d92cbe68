"""Runbook §8.1 "Regular Security Reviews", weekly: rate limiting by user, certificates, the
week's trend.

§8.1's `GROUP BY user_id` over the week's `rate_limit_exceeded` events, top N, each user
beside the previous week (`check_rate_limited`); the certificate dates §8.1 reads with
`openssl x509 -noout -dates`, for the file the config names, the certificate the endpoint
serves and PostgreSQL's (`check_certificates`, reusing `checks.tls`); the week per
event type, day by day against the week before (`weekly_counts`, `weekly_trend`).

Every count and grouping runs in PostgreSQL (or streams a JSON-lines source); what reaches
pandas is one row per day and kind, or a top-N bounded by a parameter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.checks import audit, tls
from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.findings import Finding, Status, isoformat
from fraiseql_rb.targets import postgres

WEEK = timedelta(days=7)  # §8.1 weekly: "timestamp > NOW() - INTERVAL '7 days'"
WEEKLY_KINDS = (*audit.REVIEW_KINDS, "rate_limited")  # the daily three and the weekly one
RATE_GROWTH = thresholds.RATE_LIMIT_GROWTH  # rate-limit events growing this much ...
RATE_MIN_COUNT = thresholds.RATE_LIMIT_MIN_COUNT  # ... from at least this many (total or user)


def week(end: datetime | None = None) -> tuple[datetime, datetime]:
    """[now - 7 days, now): the weekly review's window; the previous week is the 7 days
    before it."""
    return audit.last_hours(WEEK.total_seconds() / 3600, end)


def describe_week(start: datetime, end: datetime) -> str:
    span = end - start
    return (f"this week {audit.describe_window(start, end)}, compared with the week before "
            f"{audit.describe_window(start - span, start)}")


def weekly_counts(ctx: RunContext, start: datetime, end: datetime,
                  kinds: Iterable[str] = WEEKLY_KINDS) -> pd.DataFrame | Finding:
    """Each kind this week and the week before: DataFrame(kind, what, this week,
    previous week, change). Records `security.weekly_counts` (info: context for the
    reviewer; the daily review is what alarms). Never raises: counts that cannot be read
    are an `unknown` finding."""
    chosen = audit._kinds(kinds)
    span = end - start
    try:
        now = audit.counts(ctx, start, end, chosen).set_index("kind")["count"]
        before = audit.counts(ctx, start - span, start, chosen).set_index("kind")["count"]
    except Exception as exc:  # noqa: BLE001 - the review's other steps still stand
        return ctx.could_not_run("security.weekly_counts", exc)
    rows = [{"kind": k, "what": audit.label(k), "this week": int(now[k]),
             "previous week": int(before[k]), "change": int(now[k]) - int(before[k])}
            for k in chosen]
    table = pd.DataFrame(rows)
    ctx.record("security.weekly_counts", Status.INFO,
               "this week: " + ", ".join(f"{r['this week']:,} {r['what']} (previous week "
                                         f"{r['previous week']:,})" for r in rows),
               {"window": [isoformat(start), isoformat(end)],
                "previous_window": [isoformat(start - span), isoformat(start)],
                "this_week": {r["kind"]: r["this week"] for r in rows},
                "previous_week": {r["kind"]: r["previous week"] for r in rows}})
    return table


RATE_BY_USER_SQL = """
{rules}
SELECT {user} AS value,
       count(*) FILTER (WHERE a."timestamp" >= %(start)s) AS this_week,
       count(*) FILTER (WHERE a."timestamp" < %(start)s) AS previous_week,
       count(DISTINCT {ip}) FILTER (WHERE a."timestamp" >= %(start)s) AS ips,
       max(a."timestamp") AS last_seen
FROM rules AS r
JOIN {table} AS a
  ON a.event_type = r.event_type AND {outcome}
 AND a.event_type = ANY(%(event_types)s::text[])
 AND a."timestamp" >= %(lo)s AND a."timestamp" < %(end)s
GROUP BY 1
ORDER BY this_week DESC, previous_week DESC, value ASC NULLS LAST
LIMIT %(limit)s
"""
RATE_TOTALS_SQL = """
{rules}
SELECT count(*) FILTER (WHERE a."timestamp" >= %(start)s) AS this_week,
       count(*) FILTER (WHERE a."timestamp" < %(start)s) AS previous_week,
       count(DISTINCT {user}) FILTER (WHERE a."timestamp" >= %(start)s) AS users,
       count(DISTINCT {user}) FILTER (WHERE a."timestamp" < %(start)s) AS previous_users,
       count(*) FILTER (WHERE a."timestamp" >= %(start)s AND {user} IS NULL) AS without_user
FROM rules AS r
JOIN {table} AS a
  ON a.event_type = r.event_type AND {outcome}
 AND a.event_type = ANY(%(event_types)s::text[])
 AND a."timestamp" >= %(lo)s AND a."timestamp" < %(end)s
"""
RATE_COLUMNS = ["user", "this week", "previous week", "change", "ips", "last_seen"]


def rate_limited_by_user(ctx: RunContext, start: datetime, end: datetime, *,
                         limit: int = thresholds.TOP_N) -> tuple[pd.DataFrame, dict[str, int]]:
    """§8.1 weekly: `SELECT user_id, COUNT(*) ... 'rate_limit_exceeded' ... GROUP BY user_id`,
    for [start, end) and the same span before it, in one pass over the index.

    Returns (the `limit` users with most events this week: DataFrame(user, this week,
    previous week, change, ips, last_seen), a user of None being events keyed by address
    only; the totals: this_week, previous_week, users, previous_users, without_user)."""
    (start, end) = audit._window(start, end)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    kind = "rate_limited"
    src = audit.source(ctx)
    lo = start - (end - start)
    if src.is_table:
        params = audit._params(src, [kind], start=start, end=end, lo=lo, limit=limit)
        with audit.connect(ctx) as conn:
            rows = postgres.rows(conn, audit._compose(RATE_BY_USER_SQL, src, by="user"),
                                 params)
            totals = postgres.one(conn, audit._compose(RATE_TOTALS_SQL, src, by="user"),
                                  params)
    else:
        rows, totals = _rate_jsonl(src, start, end, lo, limit)
    frame = audit._frame([{"user": r["value"], "this week": int(r["this_week"]),
                           "previous week": int(r["previous_week"]),
                           "change": int(r["this_week"]) - int(r["previous_week"]),
                           "ips": int(r["ips"]), "last_seen": r["last_seen"]} for r in rows],
                         RATE_COLUMNS)
    frame["user"] = frame["user"].astype(object).where(frame["user"].notna(), None)
    frame["last_seen"] = pd.to_datetime(frame["last_seen"], utc=True)
    return frame, {k: int(totals.get(k) or 0) for k in
                   ("this_week", "previous_week", "users", "previous_users", "without_user")}


def _rate_jsonl(src: audit.Source, start: datetime, end: datetime, lo: datetime,
                limit: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    now: Counter[str | None] = Counter()
    before: Counter[str | None] = Counter()
    ips: dict[str | None, set[str]] = {}
    last: dict[str | None, datetime] = {}
    for e in audit._scan(src, ["rate_limited"], lo, end):
        if e.ts >= start:
            now[e.user] += 1
            if e.ip:
                ips.setdefault(e.user, set()).add(e.ip)
        else:
            before[e.user] += 1
        last[e.user] = max(last.get(e.user, e.ts), e.ts)
    users = set(now) | set(before)
    ordered = sorted(users, key=lambda u: (-now[u], -before[u], u is None, u or ""))
    rows = [{"value": u, "this_week": now[u], "previous_week": before[u],
             "ips": len(ips.get(u, ())), "last_seen": last[u]} for u in ordered[:limit]]
    totals = {"this_week": sum(now.values()), "previous_week": sum(before.values()),
              "users": len([u for u in now if u is not None]),
              "previous_users": len([u for u in before if u is not None]),
              "without_user": now.get(None, 0)}
    return rows, totals


def _rose(now: int, before: int, growth: float, min_count: int) -> bool:
    return now >= min_count and now > growth * before


@check("security.rate_limited")
def check_rate_limited(ctx: RunContext, start: datetime, end: datetime, *,
                       top_n: int = thresholds.TOP_N, growth: float = RATE_GROWTH,
                       min_count: int = RATE_MIN_COUNT) -> Finding:
    """Rate-limit events this week by user, top N, beside the previous week. Records and
    returns `security.rate_limited` (its table: the top users): a warning when the total,
    or one user's count, more than `growth`-folds the previous week's from at least
    `min_count` events (a client hammering the API, or a legitimate one whose limits no
    longer fit); ok otherwise."""
    src = audit.source(ctx)
    table, totals = rate_limited_by_user(ctx, start, end, limit=top_n)
    coverage, note = audit.COVERAGE[src.vocabulary]["rate_limited"]
    evidence: dict[str, Any] = {
        "window": [isoformat(start), isoformat(end)], **totals, "growth": growth,
        "min_count": min_count, "coverage": coverage, "source": src.label,
        "top_users": [{"user": r["user"], "this_week": r["this week"],
                       "previous_week": r["previous week"]} for r in table.to_dict("records")]}
    if coverage == "none":
        return ctx.result(Status.INFO,
                          f"rate-limit events cannot be counted from this audit source: "
                          f"{note}", evidence, table=table)
    rising = [r for r in table.to_dict("records") if r["user"] is not None
              and _rose(r["this week"], r["previous week"], growth, min_count)]
    total_rose = _rose(totals["this_week"], totals["previous_week"], growth, min_count)
    what = (f"{totals['this_week']:,} rate-limit events this week from {totals['users']:,} "
            f"user(s) (previous week {totals['previous_week']:,} from "
            f"{totals['previous_users']:,})")
    if totals["without_user"]:
        what += f"; {totals['without_user']:,} keyed by address only (no user)"
    caveat = f" (approximate for this source: {note})" if coverage == "approximate" else ""
    evidence["rising_users"] = [r["user"] for r in rising]
    if total_rose or rising:
        named = ", ".join(f"{r['user']} ({r['previous week']:,} -> {r['this week']:,})"
                          for r in rising) or "no single user: spread over many"
        return ctx.result(Status.WARNING,
                          f"{what}: more than {growth:g}x the previous week; rising: {named}"
                          f"{caveat}", evidence,
                          "look at what these users sent (server log, by user): a script or "
                          "a scraper hammering the API is blocked, a legitimate client whose "
                          "traffic grew needs a higher rps_per_user, not a ticket every week",
                          table=table)
    top = table.iloc[0] if not table.empty else None
    lead = (f"; most: {top['user'] or '(no user)'} ({int(top['this week']):,})"
            if top is not None and top["this week"] else "")
    return ctx.result(Status.OK,
                      f"{what}: no rise beyond {growth:g}x the previous week{lead}{caveat}",
                      evidence, table=table)


CERTIFICATE_NAMES = {"tls.server": "certificate file the config names",
                     "tls.endpoint": "certificate the endpoint serves",
                     "tls.postgres": "PostgreSQL's certificate"}


def check_certificates(ctx: RunContext, *,
                       warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
                       critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical
                       ) -> pd.DataFrame:
    """§8.1 weekly `openssl x509 -in server.crt -noout -dates`, for the three certificates a
    FraiseQL deployment depends on: the file the config names (`tls.server.*`, when the
    config enables TLS), the one the endpoint actually serves (`tls.endpoint.*`, verified
    against the target's ca_bundle) and PostgreSQL's (`tls.postgres.*`). Each check records
    its own findings (`<prefix>.expiry` the dates); returns one row per certificate."""
    found: list[Finding] = []
    steps = (
        ("tls.server", lambda: tls.check_config_certificates(
            ctx, warning_days=warning_days, critical_days=critical_days)),
        ("tls.endpoint", lambda: tls.check_endpoint_tls(
            ctx, ctx.target.fraiseql_url, warning_days=warning_days,
            critical_days=critical_days, name="endpoint", ca_bundle=ctx.target.get("ca_bundle"))),
        ("tls.postgres", lambda: tls.check_postgres_tls(
            ctx, warning_days=warning_days, critical_days=critical_days)),
    )
    for prefix, step in steps:
        try:
            found += step()
        except Exception as exc:  # noqa: BLE001 - one certificate never hides the others
            found.append(ctx.record(f"{prefix}.expiry", Status.UNKNOWN,
                                    f"could not check the {CERTIFICATE_NAMES[prefix]}: "
                                    f"{describe_error(exc)}", {"error": type(exc).__name__},
                                    "fix what stopped the check (inventory, network) and "
                                    "rerun"))
    return expiry_table(found)


def expiry_table(found: Iterable[Finding]) -> pd.DataFrame:
    """One row per certificate: its `.expiry` finding, or (when there is none, e.g. the
    handshake failed or the config enables no TLS) the worst finding about it."""
    rows = []
    findings = list(found)
    for prefix, name in CERTIFICATE_NAMES.items():
        mine = [f for f in findings if f.check.startswith(prefix + ".")]
        if not mine:
            continue
        expiry = [f for f in mine if f.check == f"{prefix}.expiry"]
        f = expiry[-1] if expiry else max(mine, key=lambda g: _severity(g.status))
        rows.append({"certificate": name, "status": str(f.status), "check": f.check,
                     "subject": f.evidence.get("subject_cn"),
                     "not_after": f.evidence.get("not_after"),
                     "days_left": (round(float(f.evidence["days_left"]), 1)
                                   if f.evidence.get("days_left") is not None else None),
                     "summary": f.summary})
    return pd.DataFrame(rows, columns=["certificate", "status", "check", "subject",
                                       "not_after", "days_left", "summary"])


_SEVERITY = {Status.INFO: 0, Status.OK: 1, Status.WARNING: 2, Status.UNKNOWN: 3,
             Status.CRITICAL: 4}


def _severity(status: Status | str) -> int:
    return _SEVERITY[Status(status)]


def weekly_trend(ctx: RunContext, start: datetime, end: datetime,
                 kinds: Iterable[str] = WEEKLY_KINDS) -> Figure | Finding:
    """Per kind, events per day this week (24-hour days from `start`) against the same day
    of the week before. Never raises: a failure to draw is an `unknown` finding."""
    try:
        chosen = audit._kinds(kinds)
        span = end - start
        days = audit.buckets(ctx, start - span, end, chosen, width=audit.DAY)
        fig, axes = plots.new_figure(len(chosen), 1, height=2.4 * len(chosen))
        axes = [axes] if len(chosen) == 1 else list(axes)
        for ax, kind in zip(axes, chosen, strict=True):
            series = days[days["kind"] == kind].set_index("bucket")["count"].astype(float)
            this = series[series.index >= pd.Timestamp(start)]
            before = series[series.index < pd.Timestamp(start)]
            before.index = before.index + pd.Timedelta(span)
            ax.plot(plots._utc_naive(before.index), before.to_numpy(), color="#6e7781",
                    linestyle="--", marker=".", linewidth=1, label="previous week (same day)")
            plots.timeseries(this.rename("this week"), ax=ax,
                             title=f"{audit.TITLES.get(kind, kind)} per day",
                             ylabel="events per day",
                             xlabel=None if kind != chosen[-1] else "day (UTC, 24 h from the "
                                                                     "window's start)")
            ax.set_ylim(bottom=0)
        return fig
    except Exception as exc:  # noqa: BLE001 - a plot never stops the review
        return ctx.record("security.plot", Status.UNKNOWN,
                          f"could not draw the weekly trend: {describe_error(exc)}",
                          {"error": type(exc).__name__})

