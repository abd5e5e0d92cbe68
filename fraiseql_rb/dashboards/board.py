"""What every §9.2 dashboard shares: where its numbers come from, and how a panel is fetched,
drawn and judged.

A dashboard opens a `Board` first. The board decides, once, where the metrics come from:

* **Prometheus** when the target names a `prometheus_url` that answers and holds series of
  the FraiseQL job: every panel is a range query over the dashboard's `lookback`, with a step
  from `prometheus.step_for` and rate windows of at least 15 minutes (two 5-minute steps of
  an imported history, and longer than the runbook alerts' `for:` clauses, so a point above
  a line means the alert's condition held);
* **direct samples** otherwise: two scrapes of the server's /metrics a few seconds apart
  (rates and latency percentiles from their difference) and the current value of gauges.
  Panels then show one bar per signal instead of a line over time.

Panels ask for metric *concepts* (`metrics.CATALOG`), never for names: the board resolves a
concept against the names Prometheus holds for the job (v2 first, then exporter, then the
runbook's names), or reads it from the scrape through `metrics`. A concept the server does
not export is reported as missing, not as zero.

Every figure title says which source fed it, every value axis carries its unit, and
threshold lines come from `thresholds` (runbook §3.2 and §6.1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullLocator

from fraiseql_rb.checks import config
from fraiseql_rb.core import plots, progress, secrets, thresholds, timespec
from fraiseql_rb.core.context import RunContext, describe_error
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import metrics, prometheus
from fraiseql_rb.targets.prometheus import JOB, Series

MIN_RATE_WINDOW_S = thresholds.DASHBOARD_MIN_RATE_WINDOW_S
POINTS = 300  # points per series: enough to read a day at 5-minute resolution
SAMPLE_INTERVAL_S = thresholds.DASHBOARD_SAMPLE_INTERVAL_S
COVERAGE_SHARE = thresholds.HISTORY_COVERAGE_MIN

# §6.1 scale up when P95 > 2 s (warning); §3.2 HighQueryLatency at P99 > 5 s (critical).
LATENCY_WARNING_S = thresholds.RESPONSE_TIME_MS.warning / 1000
LATENCY_CRITICAL_S = thresholds.RESPONSE_TIME_MS.critical / 1000
# Runbook limits that `thresholds` does not hold (yet): §3.2's alert expressions.
CACHE_HIT_FLOOR = thresholds.CACHE_HIT_RATIO_MIN
POOL_ALERT_SHARE = thresholds.POOL_ACTIVE_SHARE_MAX
DB_ERRORS_PER_S = thresholds.DB_ERRORS_PER_S_MAX

PROMETHEUS = "prometheus"
DIRECT = "direct samples"


# -- signals: one line (or bar) of a panel ---------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """A direct-sample value, with a note when it is not quite what was asked."""

    value: float | None
    note: str = ""


class Signal:
    """One quantity of a panel: a PromQL expression, or a reading of two scrapes."""

    def promql(self, board: Board) -> str | None:  # None: the concept is not exported
        raise NotImplementedError

    def direct(self, board: Board, pair: tuple[metrics.Scrape, metrics.Scrape]) -> Reading:
        raise NotImplementedError

    def concepts(self) -> tuple[str, ...]:
        return ()


def _counted(s: Series) -> str:
    """The series a rate is taken of: histograms and summaries through `_count`."""
    return s.selector("_count") if s.kind in ("histogram", "summary") else s.selector()


@dataclass(frozen=True)
class Rate(Signal):
    """Per-second rate of a counter (a histogram's observation rate)."""

    concept: str

    def promql(self, board: Board) -> str | None:
        s = board.series(self.concept)
        return None if s is None else f"sum(rate({_counted(s)}[{board.window}]))"

    def direct(self, board: Board, pair: tuple[metrics.Scrape, metrics.Scrape]) -> Reading:
        return Reading(metrics.rate(pair[0], pair[1], self.concept))

    def concepts(self) -> tuple[str, ...]:
        return (self.concept,)


@dataclass(frozen=True)
class Gauge(Signal):
    """A gauge summed over the job's instances; `peak=True` takes each step's maximum
    (capacity wants the busiest moment of a step, not whatever the step landed on)."""

    concept: str
    peak: bool = False

    def promql(self, board: Board) -> str | None:
        s = board.series(self.concept)
        if s is None:
            return None
        if self.peak:
            return f"sum(max_over_time({s.selector()}[{board.step_s}s]))"
        return f"sum({s.selector()})"

    def direct(self, board: Board, pair: tuple[metrics.Scrape, metrics.Scrape]) -> Reading:
        return Reading(metrics.value(pair[1], self.concept))

    def concepts(self) -> tuple[str, ...]:
        return (self.concept,)


@dataclass(frozen=True)
class Quantile(Signal):
    """A latency percentile: `histogram_quantile` over bucket rates summed by `le` (or a
    summary's own quantile). Directly: over what was observed between the two scrapes, else
    since the server started (said in the series name)."""

    concept: str
    q: float

    def promql(self, board: Board) -> str | None:
        s = board.series(self.concept)
        if s is None:
            return None
        if s.kind == "summary":
            quantile = f'quantile="{self.q:g}"'
            return f"max({s.selector(extra=quantile)})"
        return (f"histogram_quantile({self.q:g}, sum by (le) "
                f"(rate({s.selector('_bucket')}[{board.window}])))")

    def direct(self, board: Board, pair: tuple[metrics.Scrape, metrics.Scrape]) -> Reading:
        value = metrics.quantile_between(pair[0], pair[1], self.concept, self.q)
        if value is not None:
            return Reading(value)
        lifetime = metrics.quantile(pair[1], self.concept, self.q)
        return Reading(lifetime, "" if lifetime is None else "since server start")

    def concepts(self) -> tuple[str, ...]:
        return (self.concept,)


@dataclass(frozen=True)
class Ratio(Signal):
    """numerator / (sum of denominators), or 1 minus that (`complement`), e.g. the share
    of requests answered without a 5xx. Undefined (no point) where the denominator is 0."""

    numerator: Signal
    denominators: tuple[Signal, ...]
    complement: bool = False

    def promql(self, board: Board) -> str | None:
        top = self.numerator.promql(board)
        bottom = [d.promql(board) for d in self.denominators]
        if top is None or any(b is None for b in bottom):
            return None
        expr = f"({top}) / ({' + '.join(str(b) for b in bottom)})"
        return f"1 - {expr}" if self.complement else expr

    def direct(self, board: Board, pair: tuple[metrics.Scrape, metrics.Scrape]) -> Reading:
        top = self.numerator.direct(board, pair).value
        bottom = [d.direct(board, pair).value for d in self.denominators]
        if top is None or any(b is None for b in bottom) or not sum(bottom):  # type: ignore[arg-type]
            return Reading(None)
        ratio = top / sum(bottom)  # type: ignore[arg-type]
        return Reading(1 - ratio if self.complement else ratio)

    def concepts(self) -> tuple[str, ...]:
        return tuple(c for s in (self.numerator, *self.denominators) for c in s.concepts())


@dataclass(frozen=True)
class Up(Signal):
    """Prometheus' own `up` for the job (runbook §3.2 FraiseQLDown); directly, 1 when both
    scrapes answered. Prometheus records `up` only for scrapes it made itself: an imported
    history has none."""

    def promql(self, board: Board) -> str | None:
        if "up" not in board.names:
            return None
        return f'max(up{{job="{prometheus.quote_label(board.job)}"}})'

    def direct(self, board: Board, pair: tuple[metrics.Scrape, metrics.Scrape]) -> Reading:
        return Reading(1.0)


# -- panels --------------------------------------------------------------------------------

@dataclass
class Panel:
    """A panel's data: a long frame (time, series, value) and what fed each series."""

    frame: pd.DataFrame
    source: str
    queries: dict[str, str] = field(default_factory=dict)  # label -> PromQL or concept
    missing: list[str] = field(default_factory=list)  # labels with no series at all
    # label -> the metric concepts it was looked up under (for "unavailable, looked for ...")
    concepts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    approximate: dict[str, str] = field(default_factory=dict)  # label -> catalog note

    def values(self, label: str) -> pd.Series:
        """One signal's values by time, NaN dropped."""
        rows = self.frame[self.frame["series"] == label]
        return pd.Series(rows["value"].to_numpy(dtype=float),
                         index=pd.DatetimeIndex(rows["time"]), name=label).dropna()

    def latest(self, label: str) -> float | None:
        values = self.values(label)
        return float(values.iloc[-1]) if len(values) else None

    def peak(self, label: str) -> tuple[float | None, datetime | None]:
        values = self.values(label)
        if not len(values):
            return None, None
        return float(values.max()), values.idxmax().to_pydatetime()

    def low(self, label: str) -> tuple[float | None, datetime | None]:
        values = self.values(label)
        if not len(values):
            return None, None
        return float(values.min()), values.idxmin().to_pydatetime()

    def covered_days(self) -> float:
        times = self.frame["time"].dropna()
        if len(times) < 2:
            return 0.0
        return round((times.max() - times.min()).total_seconds() / 86400, 2)

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "queries": self.queries}
        if self.source == PROMETHEUS:
            out["covered_days"] = self.covered_days()
        for key in ("missing", "errors", "notes", "approximate"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @property
    def empty(self) -> bool:
        return self.frame["value"].dropna().empty


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]"),
                         "series": pd.Series(dtype=object), "value": pd.Series(dtype=float)})


# -- the board -----------------------------------------------------------------------------

def duration_text(seconds: float) -> str:
    """900 -> "15m", 3600 -> "1h", 86400 * 7 -> "7d": what PromQL and people both read."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass
class Board:
    """One dashboard run: its range, its metric source, and the panels fetched so far."""

    run: RunContext
    range_text: str
    span: timedelta
    start: datetime
    end: datetime
    step_s: int
    window_s: int
    job: str
    sample_interval_s: float
    client: prometheus.PrometheusClient | None = None
    names: set[str] = field(default_factory=set)
    coverage: dict[str, Any] = field(default_factory=dict)
    source_finding: Finding | None = None
    _series: dict[str, Series | None] = field(default_factory=dict)
    _panels: dict[Any, Panel] = field(default_factory=dict)
    _pair: tuple[metrics.Scrape, metrics.Scrape] | None = None
    _pair_error: str | None = None
    _memo: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return PROMETHEUS if self.client is not None else DIRECT

    @property
    def window(self) -> str:
        return duration_text(self.window_s)

    @property
    def source_label(self) -> str:
        """For figure titles: which source fed the figure."""
        if self.client is not None:
            return f"Prometheus, last {self.range_text}"
        return f"direct samples {self.sample_interval_s:g} s apart"

    def title(self, text: str) -> str:
        return f"{text} ({self.source_label})"

    def series(self, concept: str) -> Series | None:
        if concept not in self._series:
            self._series[concept] = Series.find(self.names, concept, self.job)
        return self._series[concept]

    def series_name(self, concept: str) -> tuple[str, bool] | None:
        """The series a concept is read from, and whether it only approximates it."""
        if self.client is not None:
            s = self.series(concept)
            return None if s is None else (s.name, s.approximate)
        pair = self.pair()
        res = None if pair is None else metrics.resolve(pair[1], concept)
        return None if res is None else (res.name, res.approximate)

    # -- data --------------------------------------------------------------------------------

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """A dashboard's own data (SQL results, probes), fetched once per run."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def pair(self) -> tuple[metrics.Scrape, metrics.Scrape] | None:
        """Two scrapes `sample_interval_s` apart, taken once per run (None if unreachable)."""
        if self._pair is None and self._pair_error is None:
            try:
                first = metrics.scrape(self.run)
                progress.pause(self.sample_interval_s, "between the two /metrics scrapes")
                self._pair = (first, metrics.scrape(self.run))
            except metrics.ScrapeError as exc:
                self._pair_error = str(exc)
        return self._pair

    def panel(self, signals: Mapping[str, Signal]) -> Panel:
        """Fetch the signals (once per run: panels are cached), as a long frame."""
        key = tuple(signals.items())
        if key not in self._panels:
            fetch = self._prometheus_panel if self.client is not None else self._direct_panel
            self._panels[key] = fetch(signals)
        return self._panels[key]

    def _approximate(self, panel: Panel, label: str, signal: Signal) -> None:
        for name in signal.concepts():
            c = metrics.concept(name)
            if self.client is not None:
                s = self.series(name)
                if s is not None and s.approximate:
                    panel.approximate[label] = f"{s.name}: {s.note}"
            elif self._pair is not None:
                res = metrics.resolve(self._pair[1], c)
                if res is not None and res.approximate:
                    panel.approximate[label] = f"{res.name}: {res.note}"

    def _prometheus_panel(self, signals: Mapping[str, Signal]) -> Panel:
        assert self.client is not None
        panel = Panel(_empty_frame(), PROMETHEUS)
        frames = []
        for label, signal in signals.items():
            expr = signal.promql(self)
            if expr is None:
                panel.missing.append(label)
                panel.concepts[label] = signal.concepts()
                continue
            panel.queries[label] = expr
            self._approximate(panel, label, signal)
            try:
                frame = self.client.query_range(expr, self.start, self.end, self.step_s)
            except prometheus.PrometheusError as exc:
                panel.errors[label] = str(exc)
                continue
            if frame.empty:
                continue
            names = frame["series"].unique()
            frame = frame[["time", "series", "value"]].copy()
            if len(names) == 1:
                frame["series"] = label
            else:
                frame["series"] = label + " " + frame["series"].astype(str)
            frames.append(frame)
        if frames:
            panel.frame = pd.concat(frames, ignore_index=True)
        return panel

    def _direct_panel(self, signals: Mapping[str, Signal]) -> Panel:
        panel = Panel(_empty_frame(), DIRECT)
        pair = self.pair()
        rows = []
        for label, signal in signals.items():
            panel.queries[label] = ", ".join(signal.concepts()) or type(signal).__name__
            if pair is None:
                if isinstance(signal, Up):
                    rows.append((datetime.now(UTC), label, 0.0))
                else:
                    panel.errors[label] = self._pair_error or "no scrape"
                continue
            self._approximate(panel, label, signal)
            try:
                reading = signal.direct(self, pair)
            except ValueError as exc:  # a concept of the wrong kind for this signal
                panel.errors[label] = str(exc)
                continue
            if reading.value is None:
                panel.missing.append(label)
                panel.concepts[label] = signal.concepts()
                continue
            name = f"{label} ({reading.note})" if reading.note else label
            if reading.note:
                panel.notes[label] = reading.note
            rows.append((pair[1].wall, name, float(reading.value)))
        if rows:
            frame = pd.DataFrame(rows, columns=["time", "series", "value"])
            frame["time"] = pd.to_datetime(frame["time"], utc=True)
            panel.frame = frame
        return panel

    def label_of(self, panel: Panel, label: str) -> str:
        """The series name a signal got in the frame (a direct note may extend it)."""
        names = panel.frame["series"].unique()
        return next((n for n in names if n == label or n.startswith(f"{label} (")), label)

    # -- drawing -----------------------------------------------------------------------------

    def figure(self, panel: Panel, *, title: str, ylabel: str,
               thresholds: Iterable[plots.ThresholdLine] = (), si_unit: str | None = None,
               log: bool = False) -> Figure:
        """A panel as a figure: lines over time from Prometheus, one bar per signal from
        direct samples; the title says which."""
        lines = list(thresholds)
        if panel.source == PROMETHEUS:
            fig = plots.timeseries(panel.frame, title=self.title(title), ylabel=ylabel,
                                   thresholds=lines, si_unit=si_unit)
        else:
            values = pd.Series(panel.frame["value"].to_numpy(dtype=float),
                               index=panel.frame["series"].to_list(), name=ylabel)
            fig = plots.bar(values, title=self.title(title), xlabel="signal", ylabel=ylabel,
                            thresholds=lines, si_unit=si_unit)
        if log and (panel.frame["value"].dropna() > 0).any():
            axis = fig.axes[0].yaxis
            fig.axes[0].set_yscale("log")
            axis.set_minor_locator(NullLocator())  # decades suffice; minor ticks cost time
            if si_unit is not None:
                axis.set_major_formatter(EngFormatter(unit=si_unit))
        return fig


def open_board(run: RunContext, lookback: str = "24h", *, job: str = JOB,
               sample_interval_s: float = SAMPLE_INTERVAL_S, points: int = POINTS) -> Board:
    """Validate the lookback (how far back the range goes), choose the metric source, and
    record `dashboard.source`.

    A lookback that is not a duration raises UsageError: the run stops there with one line
    saying how to write it (e.g. 24h, 7d, 90m).
    """
    span = timespec.parse_range(lookback)
    if not sample_interval_s or sample_interval_s <= 0 or sample_interval_s > 60:
        raise UsageError(f"sample_interval_s must be between 0 and 60 seconds, "
                         f"not {sample_interval_s!r}")
    end = datetime.now(UTC)
    step = prometheus.step_for(span, points)
    board = Board(run=run, range_text=str(lookback).strip(), span=span, start=end - span, end=end,
                  step_s=step, window_s=max(MIN_RATE_WINDOW_S, step), job=job,
                  sample_interval_s=float(sample_interval_s))
    client = prometheus.from_target(run)
    reason = "the target names no prometheus_url"
    status = Status.INFO
    if client is not None:
        where = secrets.mask(str(run.target.get("prometheus_url")))
        try:
            coverage = _coverage(client, board)
        except prometheus.PrometheusError as exc:
            reason, status = f"{exc}", Status.WARNING
            client.close()
            client = None
        else:
            if coverage["names"]:
                board.client = client
                board.names = set(coverage.pop("names"))
                board.coverage = coverage
            else:
                reason = (f"Prometheus at {where} holds no series of job {job!r} in the last "
                          f"{board.range_text}")
                status = Status.WARNING
                client.close()
                client = None
    board.source_finding = _record_source(board, reason, status)
    return board


def _coverage(client: prometheus.PrometheusClient, board: Board) -> dict[str, Any]:
    """Which series names the job has over the range (one instant query) and how much of the
    range they cover (one range query counting the job's series per step)."""
    job = f'{{job="{prometheus.quote_label(board.job)}"}}'
    span = f"{max(1, int(board.span.total_seconds()))}s"
    found = client.query(f"count by (__name__) (last_over_time({job}[{span}]))", board.end)
    names = sorted({s.labels["__name__"] for s in found if s.labels.get("__name__")})
    if not names:
        return {"names": []}
    frame = client.query_range(f"count({job})", board.start, board.end, board.step_s)
    if frame.empty:
        return {"names": []}
    first, last = frame["time"].min().to_pydatetime(), frame["time"].max().to_pydatetime()
    covered = (last - first).total_seconds() / 86400
    return {"names": names, "first_sample": first, "last_sample": last,
            "covered_days": round(covered, 2),
            "range_days": round(board.span.total_seconds() / 86400, 2)}


def _days_text(days: float) -> str:
    if days >= 2:
        return f"{days:.3g} days"
    return f"{days * 24:.3g} hours" if days * 24 >= 2 else f"{days * 1440:.3g} minutes"


def _record_source(board: Board, reason: str, status: Status) -> Finding:
    run = board.run
    if board.client is not None:
        cov = board.coverage
        covered = (cov["last_sample"] - cov["first_sample"]).total_seconds() / 86400
        share = covered * 86400 / max(board.span.total_seconds(), 1e-9)
        evidence = {"source": PROMETHEUS,
                    "prometheus_url": secrets.mask(str(run.target.get("prometheus_url"))),
                    "job": board.job, "range": board.range_text, "step_s": board.step_s,
                    "rate_window": board.window, "series_names": len(board.names), **cov}
        summary = (f"Prometheus fed this dashboard: job {board.job!r}, history covers "
                   f"{_days_text(covered)} of {_days_text(board.span.total_seconds() / 86400)} "
                   f"(step {duration_text(board.step_s)}, rate window {board.window})")
        if share < COVERAGE_SHARE:
            summary += "; the history is shorter than the range"
        return run.record("dashboard.source", Status.INFO, summary, evidence)
    evidence = {"source": DIRECT, "interval_s": board.sample_interval_s, "reason": reason,
                "range": board.range_text}
    summary = (f"direct samples fed this dashboard: two scrapes of /metrics "
               f"{board.sample_interval_s:g} s apart and current gauges ({reason}); "
               "panels show the present, not the range")
    remediation = ("check Prometheus (prometheus_url) so the dashboard shows history"
                   if status is Status.WARNING else None)
    return run.record("dashboard.source", status, summary, evidence, remediation)


# -- threshold lines from the runbook ---------------------------------------------------------

def pool_lines(pool_max: float, warning: float, critical: float = POOL_ALERT_SHARE
               ) -> list[plots.ThresholdLine]:
    """§6.1 connections > 80 % of pool capacity; §3.2 ConnectionPoolNearCapacity (90 %)."""
    return [plots.ThresholdLine(pool_max * warning,
                                f"§6.1 {warning:.0%} of pool ({pool_max * warning:g})",
                                "warning"),
            plots.ThresholdLine(pool_max * critical,
                                f"§3.2 {critical:.0%} of pool ({pool_max * critical:g})",
                                "critical")]


def pool_capacity(board: Board, pool_max: int | None = None) -> tuple[int, str]:
    """The pool's maximum size and where it came from: the notebook's parameter, the
    target's server config (`config_path`), else v2's default (stated as assumed)."""
    if pool_max:
        return int(pool_max), "pool_max parameter"
    size, source = config.pool_max(board.run.target.get("config_path"))
    if size:
        return int(size), source
    return thresholds.V2_DEFAULT_POOL_MAX, "v2 default pool_max_size (assumed)"


class Verdicts(list):  # type: ignore[type-arg]
    """Several findings of one step, shown one under the other in the notebook."""

    def __repr__(self) -> str:
        return "\n".join(repr(f) for f in self)

    def _repr_html_(self) -> str:
        return "".join(f._repr_html_() for f in self)


# -- judging -------------------------------------------------------------------------------

def level(value: float | None, warning: float, critical: float | None = None, *,
          higher_is_worse: bool = True) -> Status:
    """ok / warning / critical for a value against its lines; unknown for no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Status.UNKNOWN

    def beyond(limit: float) -> bool:
        return value > limit if higher_is_worse else value < limit

    if critical is not None and beyond(critical):
        return Status.CRITICAL
    if beyond(warning):
        return Status.WARNING
    return Status.OK


def board_check(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`context.check` for functions taking a Board: a check that cannot run records an
    `unknown` finding under `name` instead of stopping the dashboard."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(board: Board, *args: Any, **kwargs: Any) -> Any:
            try:
                return func(board, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means "could not check"
                return board.run.could_not_run(name, exc)

        return wrapper

    return decorate


def safe_figure(what: str) -> Callable[[Callable[..., Figure]], Callable[..., Figure]]:
    """A figure whose data could not be read (database down, table missing) is drawn empty
    with the reason in its title, instead of stopping the dashboard; the step's check
    records the failure as a finding."""

    def decorate(func: Callable[..., Figure]) -> Callable[..., Figure]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Figure:
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - drawn as "no data", checked elsewhere
                reason = describe_error(exc)
                reason = reason if len(reason) <= 70 else reason[:69] + "…"
                empty = pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"))
                return plots.timeseries(empty, title=f"{what}: no data ({reason})",
                                        ylabel=what)

        return wrapper

    return decorate


def how_read(panel: Panel) -> str:
    """How a judged value was read, for summaries: over the range, or between two scrapes."""
    return "over the range" if panel.source == PROMETHEUS else "between the two scrapes"


def no_data(run: RunContext, check: str, panel: Panel, what: str) -> Finding:
    """The finding when a panel has nothing to judge."""
    why = "; ".join(f"{k}: {v}" for k, v in panel.errors.items()) or (
        _unavailable(panel) if panel.missing else "no samples")
    return run.record(check, Status.UNKNOWN, f"no data for {what}: {why}", panel.evidence(),
                      "check that the server exports its metrics and Prometheus scrapes them")


def _unavailable(panel: Panel) -> str:
    """Series absent from a source that did answer: named with the metrics looked for."""
    concepts = [c for label in panel.missing for c in panel.concepts.get(label, ())
                if c in metrics.CONCEPTS]
    text = f"no series for {', '.join(panel.missing)}"
    return f"{text}: {metrics.unavailable(*dict.fromkeys(concepts))}" if concepts else text


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for evidence, with NaN and NaT as None (JSON has no "not a time")."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def judge_latency(board: Board, panel: Panel, check: str, what: str, warning_s: float,
                   critical_s: float) -> list[Finding]:
    """p95 and p99 against the lines: the peak over the range (each point is a rate window of
    15 min or more, longer than the alerts' `for`), or the value between two scrapes."""
    run = board.run
    if panel.empty:
        return Verdicts([no_data(run, check, panel, what)])
    out = Verdicts()
    for name in ("p95", "p99"):
        label = board.label_of(panel, name)
        peak, at = panel.peak(label)
        evidence: dict[str, Any] = {**panel.evidence(), "quantile": name, "peak_s": peak,
                                    "peak_at": fmt_time(at), "latest_s": panel.latest(label),
                                    "warning_s": warning_s, "critical_s": critical_s}
        if board.source == PROMETHEUS:
            evidence["rate_window"] = board.window
        if peak is None:
            out.append(run.record(f"{check}_{name}", Status.UNKNOWN,
                                  f"no {name} for {what}: no observations", evidence))
            continue
        status = level(peak, warning_s, critical_s)
        when = f" at {fmt_time(at)}" if board.source == PROMETHEUS else ""
        summary = (f"{what} {name} at most {peak * 1000:.0f} ms {how_read(panel)}{when} "
                   f"(warning above {warning_s:g} s, critical above {critical_s:g} s)")
        remediation = None if status is Status.OK else (
            "run the high-query-latency playbook; §6.1: add an instance if it persists")
        out.append(run.record(f"{check}_{name}", status, summary, evidence, remediation))
    return out


def fmt_time(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
