"""Runbook §8.1 "Regular Security Reviews": the daily, weekly and monthly reviews' checks.

**Daily**: three counts, each against its own history. The runbook's daily review is three
`SELECT COUNT(*)` over the last 24 hours (failed
authentications, SQL-injection attempts, CSRF failures) read by eye. A count means little
alone, so here each is judged against the same hours on each of the previous `baseline_days`
days: the mean and sample standard deviation of those daily counts are computed in
PostgreSQL (`audit.BASELINE_SQL`), and a count is flagged, critical, when it is above
mean + sigma·stddev **and** at least `min_count` (so 3 events against a quiet history of 0
are not an alarm). For a flagged kind the top client addresses and users are listed and the
finding names the addresses that alone exceed the bar. An hourly plot shows the window
against the same hours' baseline band. Any audit source works (`fraiseql_rb.checks.audit`); the
notebook runs unattended (a daily job) and changes nothing.

**Weekly**: §8.1's `GROUP BY user_id` over the week's `rate_limit_exceeded` events, top N,
each user beside the previous week (`check_rate_limited`); the certificate dates §8.1 reads
with `openssl x509 -noout -dates`, for the file the config names, the certificate the
endpoint serves and PostgreSQL's (`check_certificates`, reusing `tls` and `preflight`); the
week per event type, day by day against the week before (`weekly_counts`, `weekly_trend`).

**Monthly** (the data behind `security_report`): a calendar month in UTC (`month_window`);
totals by kind and by day (`buckets`, any bucket width); the access review over the audit
table's events of every type: events by user and by address with the share outside working
hours (`access_review`), and the addresses first seen this month, i.e. absent from all
earlier data (`new_addresses`).

Every count and grouping runs in PostgreSQL; what reaches pandas is one row per bucket and
kind, or a top-N bounded by a parameter. The month's access queries group all its events
(not only security kinds), so they read the month's range of the table whatever the indexes:
they run with a longer statement timeout (`MONTH_STATEMENT_TIMEOUT_MS`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from psycopg import sql

from fraiseql_rb.checks import audit, tls
from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import Finding, Status, isoformat, utcnow
from fraiseql_rb.preflight import config_preflight
from fraiseql_rb.targets import postgres

# Limits: defined (value, unit, why) in thresholds.CATALOGUE, named here for this module.
WINDOW_HOURS = thresholds.REVIEW_WINDOW_HOURS  # §8.1: "NOW() - INTERVAL '24 hours'"
BASELINE_DAYS = thresholds.REVIEW_BASELINE_DAYS  # a week of the same hours
SIGMA = thresholds.REVIEW_SIGMA  # flagged above mean + SIGMA standard deviations ...
MIN_COUNT = thresholds.REVIEW_MIN_COUNT  # ... and only from this many events
TOP_N = thresholds.TOP_N
KINDS = audit.REVIEW_KINDS
LABELS = {"auth_failure": "failed authentications", "sql_injection": "SQL injection attempts",
          "csrf_failure": "CSRF failures", "rate_limited": "rate-limit events",
          "authorization_denied": "authorization denials"}
TITLES = {"auth_failure": "Failed authentications", "sql_injection": "SQL injection attempts",
          "csrf_failure": "CSRF failures", "rate_limited": "Rate-limit events",
          "authorization_denied": "Authorization denials"}
NEXT_STEP = {
    "auth_failure": "run the auth-failures playbook now; block the addresses named here at the "
                    "load balancer if they are not yours",
    "sql_injection": "block the addresses named here, and read their requests in the server "
                     "log: a probe that found nothing still maps the API",
    "csrf_failure": "check for a broken client release (many addresses) or a forged-request "
                    "campaign (few addresses); block the latter",
}


def window(hours: float = WINDOW_HOURS, end: datetime | None = None
           ) -> tuple[datetime, datetime]:
    """[now - hours, now): the review's window."""
    return audit.last_hours(hours, end)


def describe(start: datetime, end: datetime, baseline_days: int) -> str:
    return (f"window {audit.describe_window(start, end)}, judged against the same hours on "
            f"each of the {baseline_days} days before")


def _label(kind: str) -> str:
    return LABELS.get(kind, kind)


def judge(count: int, mean: float, stddev: float, *, sigma: float = SIGMA,
          min_count: int = MIN_COUNT) -> tuple[bool, float]:
    """(flagged, bar): flagged when count > mean + sigma·stddev and count ≥ min_count."""
    bar = mean + sigma * stddev
    return count > bar and count >= min_count, bar


@check("security.daily_counts")
def check_daily_counts(ctx: RunContext, start: datetime, end: datetime, *,
                       baseline_days: int = BASELINE_DAYS, sigma: float = SIGMA,
                       min_count: int = MIN_COUNT, top_n: int = TOP_N) -> pd.DataFrame:
    """The three §8.1 counts, each judged against the same hours of the previous days.
    Records `security.<kind>` per kind (critical when flagged, naming the top addresses)
    and returns the table behind them."""
    src = audit.source(ctx)
    now = audit.counts(ctx, start, end, KINDS).set_index("kind")["count"]
    base = audit.baseline(ctx, start, end, KINDS, windows=baseline_days,
                          step=timedelta(days=1)).set_index("kind")
    rows = []
    for kind in KINDS:
        count = int(now[kind])
        mean, stddev = float(base.loc[kind, "mean"]), float(base.loc[kind, "stddev"])
        flagged, bar = judge(count, mean, stddev, sigma=sigma, min_count=min_count)
        rows.append({"kind": kind, "what": _label(kind), "count": count,
                     "baseline mean": round(mean, 2), "baseline stddev": round(stddev, 2),
                     "baseline max": int(base.loc[kind, "max"]), "bar": round(bar, 2),
                     "flagged": flagged})
        _record_kind(ctx, src, kind, start, end, count, mean, stddev, int(base.loc[kind, "max"]),
                     bar, flagged, baseline_days=baseline_days, sigma=sigma,
                     min_count=min_count, top_n=top_n)
    return pd.DataFrame(rows)


def _record_kind(ctx: RunContext, src: audit.Source, kind: str, start: datetime,
                 end: datetime, count: int, mean: float, stddev: float, maximum: int,
                 bar: float, flagged: bool, *, baseline_days: int, sigma: float,
                 min_count: int, top_n: int) -> Finding:
    hours = (end - start).total_seconds() / 3600
    evidence: dict[str, Any] = {
        "kind": kind, "window": [isoformat(start), isoformat(end)], "count": count,
        "baseline_days": baseline_days, "baseline_mean": round(mean, 3),
        "baseline_stddev": round(stddev, 3), "baseline_max": maximum, "sigma": sigma,
        "bar": round(bar, 3), "min_count": min_count, "flagged": flagged,
        "source": src.label}
    check_name = f"security.{kind}"
    what = f"{count} {_label(kind)} in the last {hours:g} h"
    against = (f"the same hours on the previous {baseline_days} days: mean {mean:.1f}, "
               f"stddev {stddev:.1f}, bar {bar:.1f} (mean + {sigma:g}σ)")
    if audit.COVERAGE[src.vocabulary][kind][0] == "none":
        return ctx.record(check_name, Status.INFO,
                          f"{_label(kind)} cannot be counted from this audit source "
                          f"({src.kind}): {audit.COVERAGE[src.vocabulary][kind][1]}",
                          {**evidence, "coverage": "none"})
    if not flagged:
        return ctx.record(check_name, Status.OK,
                          f"{what}: within its history ({against}; flagged only above the bar "
                          f"and from {min_count} events)", evidence)
    ips = audit.top(ctx, start, end, kind, by="ip", limit=top_n)
    users = audit.top(ctx, start, end, kind, by="user", limit=top_n)
    # the addresses that alone exceed what the whole service normally sees in this window
    loud = ips[ips["count"] > max(bar, 0)]
    named = loud if not loud.empty else ips.head(3)
    evidence.update({
        "attacking_ips": [r["ip"] for r in named.to_dict("records") if r["ip"]],
        "each_above_bar": not loud.empty,
        "top_ips": _records(ips, "ip"), "top_users": _records(users, "user")})
    sources = ", ".join(f"{r['ip']} ({int(r['count'])})" for r in named.to_dict("records"))
    lead = ("addresses each above the bar on their own" if not loud.empty
            else "no single address dominates; the largest")
    return ctx.record(check_name, Status.CRITICAL,
                      f"{what}, above {against}; {lead}: {sources or 'none recorded'}",
                      evidence, NEXT_STEP[kind],
                      table=ips.assign(by="ip").rename(columns={"ip": "value"}))


def _records(frame: pd.DataFrame, key: str) -> list[dict[str, Any]]:
    return [{key: r[key], "count": int(r["count"]), "ips": int(r["ips"]),
             "users": int(r["users"]), "first_seen": r["first_seen"],
             "last_seen": r["last_seen"]} for r in frame.to_dict("records")]


def top_sources(ctx: RunContext, start: datetime, end: datetime, *,
                top_n: int = TOP_N) -> pd.DataFrame:
    """The top addresses and users of each flagged kind (read from the findings just
    recorded): DataFrame(kind, by, value, count, ips, users, first_seen, last_seen)."""
    flagged = [f.evidence["kind"] for f in ctx.log.findings
               if f.check.startswith("security.") and f.evidence.get("flagged")]
    columns = ["kind", "by", "value", "count", "ips", "users", "first_seen", "last_seen"]
    parts = []
    for kind in dict.fromkeys(flagged):
        for by in ("ip", "user"):
            frame = audit.top(ctx, start, end, kind, by=by, limit=top_n)
            parts.append(frame.rename(columns={by: "value"}).assign(kind=kind, by=by))
    if not parts:
        print("Nothing flagged: no sources to list.")
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def hourly_plot(ctx: RunContext, start: datetime, end: datetime, *,
                baseline_days: int = BASELINE_DAYS, sigma: float = SIGMA) -> Figure | Finding:
    """Per kind, events per hour in the window against the same hour's baseline band
    (mean to mean + sigma·stddev over the previous days). Never raises: a failure to draw is
    an `unknown` finding."""
    try:
        counts = audit.hourly(ctx, start, end, KINDS)
        base = audit.hourly_baseline(ctx, start, end, KINDS, days=baseline_days)
        fig, axes = plots.new_figure(len(KINDS), 1, height=2.6 * len(KINDS))
        for ax, kind in zip(axes, KINDS, strict=True):
            seen = counts[counts["kind"] == kind].set_index("hour")["count"]
            band = base[base["kind"] == kind].set_index("hour")
            hours = pd.DatetimeIndex(band.index).tz_convert("UTC").tz_localize(None)
            upper = band["mean"] + sigma * band["stddev"]
            ax.fill_between(hours, band["mean"].clip(lower=0), upper, color="#6e7781",
                            alpha=0.25,
                            label=f"baseline mean … +{sigma:g}σ ({baseline_days} days)")
            ax.plot(hours, band["mean"], color="#6e7781", linewidth=1, linestyle=":",
                    label="baseline mean")
            plots.timeseries(seen.rename("this window").astype(float), ax=ax,
                             title=TITLES.get(kind, kind), ylabel="events per hour",
                             xlabel=None if kind != KINDS[-1] else "time (UTC)")
        return fig
    except Exception as exc:  # noqa: BLE001 - a plot never stops the review
        return ctx.record("security.plot", Status.UNKNOWN,
                          f"could not draw the hourly plot: {describe_error(exc)}",
                          {"error": type(exc).__name__})


# ---- counts per bucket (the weekly trend, the monthly days) ---------------------------------

DAY = audit.DAY

buckets = audit.buckets  # the weekly trend and the month's days: buckets a day wide


# ---- weekly: rate limiting by user, certificates, the week's trend --------------------------

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
    rows = [{"kind": k, "what": _label(k), "this week": int(now[k]),
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
                         limit: int = TOP_N) -> tuple[pd.DataFrame, dict[str, int]]:
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
                       top_n: int = TOP_N, growth: float = RATE_GROWTH,
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
        ("tls.server", lambda: config_preflight.check_config_certificates(
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
        days = buckets(ctx, start - span, end, chosen, width=DAY)
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
                             title=f"{TITLES.get(kind, kind)} per day", ylabel="events per day",
                             xlabel=None if kind != chosen[-1] else "day (UTC, 24 h from the "
                                                                     "window's start)")
            ax.set_ylim(bottom=0)
        return fig
    except Exception as exc:  # noqa: BLE001 - a plot never stops the review
        return ctx.record("security.plot", Status.UNKNOWN,
                          f"could not draw the weekly trend: {describe_error(exc)}",
                          {"error": type(exc).__name__})


# ---- monthly: the month, working hours, totals, the access review ----------------------------

MONTH_STATEMENT_TIMEOUT_MS = thresholds.MONTH_STATEMENT_TIMEOUT_MS  # they read the whole month
_MONTH = re.compile(r"^\s*(\d{4})-(\d{1,2})\s*$")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # ISO 1..7


def month_window(month: str | None, now: datetime | None = None
                 ) -> tuple[str, datetime, datetime]:
    """(label YYYY-MM, start, end) of a calendar month in UTC: [first day 00:00, first day
    of the next month), cut at `now` for the month in progress. None means the previous
    calendar month. Anything else than a past or current YYYY-MM is a UsageError whose
    message is the one line to show."""
    now = (now or utcnow()).astimezone(UTC).replace(microsecond=0)
    if month is None or not str(month).strip():
        first = now.replace(day=1, hour=0, minute=0, second=0)
        previous = (first - DAY).replace(day=1)
        return f"{previous:%Y-%m}", previous, first
    match = _MONTH.match(str(month))
    year, number = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 1 <= number <= 12 or year < 1970:
        raise UsageError(f"month {month!r} is not a calendar month: give it as YYYY-MM "
                         f"(e.g. {now:%Y-%m}), or none for the previous month")
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    if start > now:
        raise UsageError(f"month {month!r} has not begun (it is {now:%Y-%m-%d} UTC): "
                         "a report covers a past or the current month")
    return f"{start:%Y-%m}", start, min(end, now)


def describe_month(label: str, start: datetime, end: datetime) -> str:
    to_date = " (to date)" if end.day != 1 or end.hour or end.minute or end.second else ""
    return f"month {label}{to_date}: {audit.describe_window(start, end)}"


@dataclass(frozen=True)
class WorkHours:
    """Working time in UTC: ISO weekdays (1 = Monday) and [start_hour, end_hour)."""

    days: tuple[int, ...] = field(default_factory=lambda: parse_work_days(thresholds.WORK_DAYS))
    start_hour: int = thresholds.WORK_START_HOUR
    end_hour: int = thresholds.WORK_END_HOUR

    def __post_init__(self) -> None:
        if not 0 <= self.start_hour < self.end_hour <= 24:
            raise UsageError(f"working hours {self.start_hour}-{self.end_hour} are not a "
                             "range within a day: need 0 <= work_start_hour < work_end_hour "
                             "<= 24 (UTC)")
        if not self.days or any(d not in range(1, 8) for d in self.days):
            raise UsageError(f"working days {self.days} must be ISO weekdays 1-7")

    @classmethod
    def parse(cls, days: str | Iterable[int | str],
              start_hour: int = thresholds.WORK_START_HOUR,
              end_hour: int = thresholds.WORK_END_HOUR) -> WorkHours:
        """`days` as "Mon-Fri", "mon,tue,thu", "Sun-Thu", "1-5" or a list of ISO days."""
        return cls(parse_work_days(days), int(start_hour), int(end_hour))

    def describe(self) -> str:
        names = [DAY_NAMES[d - 1].capitalize() for d in self.days]
        run = list(range(self.days[0], self.days[0] + len(self.days)))
        days = f"{names[0]}-{names[-1]}" if list(self.days) == run and len(run) > 2 else (
            ", ".join(names))
        return f"{days} {self.start_hour:02d}:00-{self.end_hour:02d}:00 UTC"


def _day(token: str, spec: Any) -> int:
    text = token.strip().lower()
    if text.isdigit() and 1 <= int(text) <= 7:
        return int(text)
    for i, name in enumerate(DAY_NAMES, start=1):
        if len(text) >= 3 and name.startswith(text[:3]) and (
                text == name or text in ("monday", "tuesday", "wednesday", "thursday",
                                         "friday", "saturday", "sunday")):
            return i
    raise UsageError(f"work_days {spec!r}: {token.strip()!r} is not a weekday (Mon..Sun or "
                     "1..7), e.g. Mon-Fri")


def parse_work_days(spec: str | Iterable[int | str]) -> tuple[int, ...]:
    """ISO weekdays from "Mon-Fri" (ranges may wrap: "Sun-Thu"), "mon,wed" or [1, 2, 3]."""
    tokens = spec.split(",") if isinstance(spec, str) else [str(t) for t in spec]
    days: set[int] = set()
    for token in tokens:
        if not token.strip():
            continue
        first, sep, last = token.partition("-")
        if sep:
            a, b = _day(first, spec), _day(last, spec)
            span = (b - a) % 7
            days.update((a - 1 + i) % 7 + 1 for i in range(span + 1))
        else:
            days.add(_day(token, spec))
    if not days:
        raise UsageError(f"work_days {spec!r} names no weekday, e.g. Mon-Fri")
    return tuple(sorted(days))


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
                  work: WorkHours | None = None, limit: int = TOP_N) -> AccessReview:
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
                  limit: int = TOP_N) -> tuple[pd.DataFrame, int, int]:
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
    table = counts.assign(what=[_label(k) for k in counts["kind"]])[["kind", "what", "count"]]
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
                      + ", ".join(f"{n:,} {_label(k)}" for k, n in by_kind.items()),
                      {**evidence, "no_data": False}, table=table)


@check("security.access_review")
def check_access_review(ctx: RunContext, label: str, start: datetime, end: datetime, *,
                        work: WorkHours, top_n: int = TOP_N) -> AccessReview:
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
                        top_n: int = TOP_N) -> Finding:
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
