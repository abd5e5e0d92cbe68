"""Runbook §8.1 "Regular Security Reviews", daily: three counts, each against its own history.

The runbook's daily review is three `SELECT COUNT(*)` over the last 24 hours (failed
authentications, SQL-injection attempts, CSRF failures) read by eye. A count means little
alone, so here each is judged against the same hours on each of the previous `baseline_days`
days: the mean and sample standard deviation of those daily counts are computed in
PostgreSQL (`audit.BASELINE_SQL`), and a count is flagged, critical, when it is above
mean + sigma·stddev **and** at least `min_count` (so 3 events against a quiet history of 0
are not an alarm). For a flagged kind the top client addresses and users are listed and the
finding names the addresses that alone exceed the bar. An hourly plot shows the window
against the same hours' baseline band. Any audit source works (`fraiseql_rb.checks.audit`); the
notebook runs unattended (a daily job) and changes nothing.

Every count and grouping runs in PostgreSQL; what reaches pandas is one row per kind (per
hour and kind for the plot), or a top-N bounded by a parameter.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.checks import audit
from fraiseql_rb.core import plots, thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.findings import Finding, Status, isoformat

# Limits: defined (value, unit, why) in thresholds.CATALOGUE, named here for this module.
WINDOW_HOURS = thresholds.REVIEW_WINDOW_HOURS  # §8.1: "NOW() - INTERVAL '24 hours'"
BASELINE_DAYS = thresholds.REVIEW_BASELINE_DAYS  # a week of the same hours
SIGMA = thresholds.REVIEW_SIGMA  # flagged above mean + SIGMA standard deviations ...
MIN_COUNT = thresholds.REVIEW_MIN_COUNT  # ... and only from this many events
KINDS = audit.REVIEW_KINDS
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


def judge(count: int, mean: float, stddev: float, *, sigma: float = SIGMA,
          min_count: int = MIN_COUNT) -> tuple[bool, float]:
    """(flagged, bar): flagged when count > mean + sigma·stddev and count ≥ min_count."""
    bar = mean + sigma * stddev
    return count > bar and count >= min_count, bar


@check("security.daily_counts")
def check_daily_counts(ctx: RunContext, start: datetime, end: datetime, *,
                       baseline_days: int = BASELINE_DAYS, sigma: float = SIGMA,
                       min_count: int = MIN_COUNT, top_n: int = thresholds.TOP_N
                       ) -> pd.DataFrame:
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
        rows.append({"kind": kind, "what": audit.label(kind), "count": count,
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
    what = f"{count} {audit.label(kind)} in the last {hours:g} h"
    against = (f"the same hours on the previous {baseline_days} days: mean {mean:.1f}, "
               f"stddev {stddev:.1f}, bar {bar:.1f} (mean + {sigma:g}σ)")
    if audit.COVERAGE[src.vocabulary][kind][0] == "none":
        return ctx.record(check_name, Status.INFO,
                          f"{audit.label(kind)} cannot be counted from this audit source "
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
                top_n: int = thresholds.TOP_N) -> pd.DataFrame:
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
                             title=audit.TITLES.get(kind, kind), ylabel="events per hour",
                             xlabel=None if kind != KINDS[-1] else "time (UTC)")
        return fig
    except Exception as exc:  # noqa: BLE001 - a plot never stops the review
        return ctx.record("security.plot", Status.UNKNOWN,
                          f"could not draw the hourly plot: {describe_error(exc)}",
                          {"error": type(exc).__name__})

