"""The sampling window the incident playbooks measure over (high-error-rate, high-query-latency).

A `Window` is taken by `collect`: for `window_s` seconds it scrapes the target's `/metrics`
at both ends (and every few seconds) and reads PostgreSQL through a `DatabaseProbe` (at both
ends, at every tick, once after). When the target names a `prometheus_url` that holds current
series of the FraiseQL job with enough samples, the figures come from Prometheus over the last
`window_s` seconds ending with the window, widened to at least four scrape intervals (read
from the job's `up` samples) so a rate never rests on one or two scrapes; otherwise from the
two scrapes. `record_source` records which, as the playbook's `*.source` finding; the
playbook's `lookback` (`range_text` here) is the span of history `Window.history` draws from
Prometheus.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import psycopg

from fraiseql_rb.core import progress, secrets, thresholds, timespec
from fraiseql_rb.core.context import RunContext, describe_error
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import metrics, postgres, prometheus

SCRAPES_PER_WINDOW = thresholds.PROMETHEUS_SCRAPES_PER_WINDOW
DEFAULT_SCRAPE_INTERVAL_S = thresholds.PROMETHEUS_SCRAPE_INTERVAL_S
JOB = prometheus.JOB  # the Prometheus job scraping FraiseQL

PROMETHEUS = "prometheus"
SCRAPES = "scrapes"
NO_SOURCE = "none"


Probe = Callable[[psycopg.Connection], dict[str, Any]]


@dataclass
class DatabaseProbe:
    """What to read from PostgreSQL during a window: at both ends, at every tick, and once
    after the end (so that reading is not counted in what the ends compare)."""

    at_ends: Probe | None = None
    each_tick: Probe | None = None
    after: Probe | None = None


@dataclass
class Window:
    """One sampling window: direct /metrics pages, Prometheus when it can answer, and the
    database readings. Every reading method answers from `source` (None when unmeasured)."""

    ctx: RunContext
    window_s: float
    range_text: str
    source: str = NO_SOURCE
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: datetime | None = None
    pages: list[metrics.Scrape] = field(default_factory=list)
    scrape_errors: list[str] = field(default_factory=list)
    prometheus_note: str = "the target names no prometheus_url"
    names: set[str] = field(default_factory=set)
    scrape_interval_s: float | None = None  # Prometheus' scrape interval for the job
    db: dict[str, Any] = field(default_factory=dict)  # start, end, ticks
    db_role: str | None = None
    db_error: str | None = None
    error: str | None = None  # why the window could not be taken at all
    finding: Finding | None = None

    # -- what was seen ---------------------------------------------------------------------

    @property
    def first(self) -> metrics.Scrape | None:
        return self.pages[0] if len(self.pages) >= 2 else None

    @property
    def last(self) -> metrics.Scrape | None:
        return self.pages[-1] if self.pages else None

    @property
    def prometheus_window_s(self) -> int:
        """The Prometheus rate window: `window_s`, widened to hold enough scrapes."""
        interval = self.scrape_interval_s or DEFAULT_SCRAPE_INTERVAL_S
        return math.ceil(max(self.window_s, SCRAPES_PER_WINDOW * interval))

    @property
    def seconds(self) -> float | None:
        """The span the rates cover."""
        if self.source == PROMETHEUS:
            return float(self.prometheus_window_s)
        if self.source == SCRAPES and self.first is not None and self.last is not None:
            return self.last.monotonic - self.first.monotonic
        return None

    def describe(self) -> str:
        if self.source == PROMETHEUS:
            return f"Prometheus, the last {self.prometheus_window_s} s"
        if self.source == SCRAPES:
            return f"two scrapes {self.seconds:.0f} s apart"
        return "no metrics"

    # -- Prometheus ----------------------------------------------------------------------

    def series(self, concept: str) -> prometheus.Series | None:
        return prometheus.Series.find(self.names, concept, JOB) if self.names else None

    def _promql(self, expr: str) -> list[prometheus.Sample]:
        client = prometheus.from_target(self.ctx)
        assert client is not None
        with client:
            return client.query(expr, at=self.ended)

    def _increase_expr(self, s: prometheus.Series, by: str | None = None) -> str:
        counted = s.selector("_count") if s.kind in ("histogram", "summary") else s.selector()
        grouping = f" by ({by})" if by else ""
        return f"sum{grouping} (increase({counted}[{self.prometheus_window_s}s]))"

    # -- readings ------------------------------------------------------------------------

    def increase(self, concept: str) -> float | None:
        """How much a counter (or a histogram's observation count) grew over the window."""
        if self.source == PROMETHEUS:
            s = self.series(concept)
            if s is None:
                return None
            found = self._promql(self._increase_expr(s))
            return _finite(found[0].value) if found else None
        if self.source == SCRAPES and self.first is not None and self.last is not None:
            per_s = metrics.rate(self.first, self.last, concept)
            return None if per_s is None else per_s * (self.seconds or 0.0)
        return None

    def increase_by(self, concept: str, label: str) -> dict[str, float]:
        """The increase per value of one label (e.g. per `operation`)."""
        if self.source == PROMETHEUS:
            s = self.series(concept)
            if s is None:
                return {}
            return {x.labels.get(label, ""): _finite(x.value) or 0.0
                    for x in self._promql(self._increase_expr(s, label))}
        if self.source == SCRAPES and self.first is not None and self.last is not None:
            before = metrics.by_label(self.first, concept, label)
            after = metrics.by_label(self.last, concept, label)
            return {k: (v - before[k] if k in before and v >= before[k] else v)
                    for k, v in after.items()}
        return {}

    def quantile(self, concept: str, q: float, **labels: str) -> float | None:
        """The q-quantile of what was observed in the window (seconds for durations)."""
        if self.source == PROMETHEUS:
            s = self.series(concept)
            if s is None:
                return None
            extra = ",".join(f'{k}="{prometheus.quote_label(v)}"' for k, v in labels.items())
            if s.kind == "summary":
                expr = f"max({s.selector(extra=','.join(filter(None, [extra, _q(q)])))})"
            else:
                expr = (f"histogram_quantile({q}, sum by (le) (increase("
                        f"{s.selector('_bucket', extra)}[{self.prometheus_window_s}s])))")
            found = self._promql(expr)
            return _finite(found[0].value) if found else None
        if self.source == SCRAPES and self.first is not None and self.last is not None:
            return metrics.quantile_between(self.first, self.last, concept, q, **labels)
        return None

    def gauge(self, concept: str, how: str = "max") -> float | None:
        """A gauge over the window's direct pages: its `max` or its `last` value."""
        values = [v for v in (metrics.value(p, concept) for p in self.pages) if v is not None]
        if not values:
            return None
        return max(values) if how == "max" else values[-1]

    def history(self, exprs: dict[str, str]) -> pd.DataFrame:
        """Named PromQL expressions over `range` (long frame: time, series, value).

        `{rate}` in an expression is replaced by the rate window: at least four scrape
        intervals, and at least two steps so that every step is covered."""
        span = timespec.parse_range(self.range_text)
        step = prometheus.step_for(span)
        interval = self.scrape_interval_s or DEFAULT_SCRAPE_INTERVAL_S
        window = f"{math.ceil(max(SCRAPES_PER_WINDOW * interval, 2 * step))}s"
        end = self.ended or datetime.now(UTC)
        frames = []
        client = prometheus.from_target(self.ctx)
        assert client is not None
        with client:
            for name, expr in exprs.items():
                frame = client.query_range(expr.replace("{rate}", window), end - span, end, step)
                if not frame.empty:
                    frame = frame.assign(series=name)[["time", "series", "value"]]
                    frames.append(frame.dropna(subset=["value"]))
        if not frames:
            return pd.DataFrame({"time": [], "series": [], "value": []})
        return pd.concat(frames, ignore_index=True)


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else float(value)


def clean(value: Any) -> Any:
    """NaN (pandas' missing value) as None, so findings.json stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as dicts for evidence, missing values as None."""
    return clean(frame.to_dict(orient="records"))


def _q(q: float) -> str:
    return f'quantile="{q:g}"'


def stats_url(ctx: RunContext) -> tuple[str, str]:
    """The URL to read statistics with: `admin_database_url` when the inventory has one (it
    sees every role's sessions and statements), else the application role's."""
    admin = ctx.target.admin_database_url()
    if admin is not None:
        return admin, "admin_database_url"
    return ctx.target.database_url(), "database_url (other roles' statements are hidden)"


def _safe_scrape(ctx: RunContext, w: Window) -> None:
    try:
        w.pages.append(metrics.scrape(ctx))
    except Exception as exc:  # noqa: BLE001 - a failed scrape is a fact of the window
        w.scrape_errors.append(describe_error(exc))


def _scrape_interval(client: prometheus.PrometheusClient, at: datetime) -> float | None:
    """The job's scrape interval, read from the timestamps of its last `up` samples."""
    found = client.query(f'up{{job="{JOB}"}}[3m]', at=at)
    by_instance: dict[str, list[float]] = {}
    for x in found:
        by_instance.setdefault(x.labels.get("instance", ""), []).append(x.time.timestamp())
    gaps = []
    for times in by_instance.values():
        ordered = sorted(times)
        gaps += [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def _prometheus_source(ctx: RunContext, w: Window) -> str | None:
    """Use Prometheus for this window if it holds the job's current FraiseQL series and enough
    samples to rate them; fills `w.names` and `w.scrape_interval_s`. Returns why not, or None."""
    client = prometheus.from_target(ctx)
    if client is None:
        return "the target names no prometheus_url"
    where = secrets.mask(str(ctx.target.get("prometheus_url")))
    try:
        with client:
            found = client.query(f'count by (__name__) ({{job="{JOB}"}})', at=w.ended)
            names = {s.labels.get("__name__", "") for s in found} - {""}
            total = prometheus.Series.find(names, "queries_total", JOB)
            if total is None:
                # `up` and scrape_* stay while the target is down; its own series go stale
                return (f"Prometheus at {where} holds no current FraiseQL series of job "
                        f"{JOB!r}" + (" (the target is down: up == 0)" if "up" in names else ""))
            w.scrape_interval_s = _scrape_interval(client, w.ended)
            check = client.query(f"sum(increase({total.selector()}[{w.prometheus_window_s}s]))",
                                 at=w.ended)
    except prometheus.PrometheusError as exc:
        return f"Prometheus could not answer: {exc}"
    if not check:
        return (f"Prometheus at {where} has too few samples of job {JOB!r} in the last "
                f"{w.prometheus_window_s} s (just started?)")
    w.names = names
    return None


def collect(ctx: RunContext, window_s: float, range_text: str, *,
            probe: DatabaseProbe | None = None) -> Window:
    """Sample for `window_s` seconds: /metrics at both ends and every tick, the database probe,
    then decide the source (Prometheus when it holds the job's current series)."""
    if not 1 <= float(window_s) <= 600:
        raise ValueError(f"window_s must be between 1 and 600 seconds, not {window_s!r}")
    timespec.parse_range(range_text)  # a bad range stops here, with how to write it
    w = Window(ctx, float(window_s), str(range_text).strip())
    conn: psycopg.Connection | None = None
    if probe is not None:
        url, w.db_role = stats_url(ctx)
        try:
            conn = postgres.connect(url)
        except postgres.ConnectionFailed as exc:
            w.db_error = str(exc)
    print(f"sampling for {window_s:g} s ...", flush=True)

    def read(kind: str, fn: Probe | None) -> None:
        nonlocal conn
        if conn is None or fn is None:
            return
        try:
            value = fn(conn)
        except psycopg.Error as exc:
            w.db_error = secrets.mask(postgres.first_line(exc))
            if conn.broken:
                conn.close()
                conn = None
            return
        if kind == "ticks":
            w.db.setdefault("ticks", []).append(value)
        else:
            w.db[kind] = value

    try:
        began = time.monotonic()
        _safe_scrape(ctx, w)
        read("start", probe.at_ends if probe else None)
        if not w.pages and conn is None and ctx.unresponsive.hung(ctx.target.fraiseql_url):
            print("nothing to sample: the server hung and no database session", flush=True)
            window_s = 0  # every later scrape would be skipped (Prometheus keeps its window)
        tick_s = min(5.0, max(1.0, window_s / 5))
        with progress.waiting("sampling window", window_s):
            while (left := window_s - (time.monotonic() - began)) > 0:
                time.sleep(min(tick_s, left))
                if window_s - (time.monotonic() - began) > 0.5:
                    _safe_scrape(ctx, w)
                    read("ticks", probe.each_tick if probe else None)
        _safe_scrape(ctx, w)
        read("ticks", probe.each_tick if probe else None)
        read("end", probe.at_ends if probe else None)
        read("after", probe.after if probe else None)
    finally:
        if conn is not None:
            conn.close()
    w.ended = datetime.now(UTC)
    why_not = _prometheus_source(ctx, w)
    if why_not is None:
        w.source = PROMETHEUS
        interval = (f", scraped every {w.scrape_interval_s:g} s" if w.scrape_interval_s
                    else "")
        where = secrets.mask(str(ctx.target.get("prometheus_url")))
        w.prometheus_note = f"Prometheus at {where}, job {JOB!r}{interval}"
    else:
        w.prometheus_note = why_not
        if len(w.pages) >= 2:
            w.source = SCRAPES
    return w


def record_source(ctx: RunContext, w: Window, check_name: str) -> Finding:
    """The `*.source` finding: where the numbers come from, and what could not be read."""
    evidence: dict[str, Any] = {
        "source": w.source, "window_s": w.window_s, "seconds": w.seconds,
        "range": w.range_text, "started": w.started, "ended": w.ended,
        "prometheus": w.prometheus_note, "scrapes": len(w.pages),
        "scrape_errors": w.scrape_errors[-3:], "database_role": w.db_role,
        "database_error": w.db_error,
    }
    if w.error:
        return ctx.record(check_name, Status.UNKNOWN, f"could not sample: {w.error}", evidence,
                          "fix the parameter or the inventory and rerun")
    if w.source == NO_SOURCE:
        error = w.scrape_errors[-1] if w.scrape_errors else "no answer"
        return ctx.record(check_name, Status.UNKNOWN,
                          f"no metrics to measure: /metrics failed ({error}) and "
                          f"{w.prometheus_note}", evidence,
                          "run the service-down playbook if the server does not answer; fix "
                          "metrics_token or prometheus_url otherwise")
    summary = f"measured from {w.describe()} ({w.prometheus_note})"
    if w.db_error:
        summary += f"; database statistics incomplete: {w.db_error}"
    return ctx.record(check_name, Status.INFO, summary, evidence)


def failed_window(ctx: RunContext, window_s: Any, range_text: Any,
                  exc: BaseException) -> Window:
    """An empty window that says why it could not be taken."""
    w = Window(ctx, float(window_s) if isinstance(window_s, (int, float)) else 0.0,
               str(range_text))
    w.error = describe_error(exc)
    return w


def unmeasured(vocabulary: Vocabulary, reason: str) -> Candidate:
    """`none` because nothing could be measured: the diagnosis then says so, as `unknown`
    (the playbook's `verdict_status` reads `measured: False`)."""
    return Candidate("none", vocabulary.threshold, reason, {"measured": False})
