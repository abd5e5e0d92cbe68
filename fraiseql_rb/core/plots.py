"""Figures every dashboard shares, so that the six §9.2 dashboards look and read alike.

Each helper returns a `matplotlib.figure.Figure` built without pyplot: no global figure
state, nothing to close, no GUI backend, so the same call works in JupyterLab, in a
papermill run and in a test. The returned figure renders itself as PNG when it is the last
expression of a cell (`_repr_png_`), which is what puts it in the executed notebook and so in
the HTML artifact, whether or not the kernel ever activated matplotlib's inline backend.

Conventions: times on the x axis are UTC; the value axis label carries its unit; thresholds
are dashed lines, amber for warning and red for critical, labelled with what they mean.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from fraiseql_rb.core import thresholds as thresholds_mod
from fraiseql_rb.core.capacity import Projection, crossing_time, trend_points

COLOURS = {"warning": "#d4a017", "critical": "#cf222e"}
TREND_COLOUR = "#6e7781"
FIGSIZE = (9.0, 3.6)
DPI = 100


class DashboardFigure(Figure):
    """A Figure that shows itself as PNG in Jupyter without pyplot's inline backend."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


@dataclass(frozen=True)
class ThresholdLine:
    """A horizontal limit on a plot: its value (in the plot's unit), label and level."""

    value: float
    label: str
    level: str = "warning"  # warning or critical

    def __post_init__(self) -> None:
        if self.level not in COLOURS:
            raise ValueError(f"threshold level must be warning or critical, not {self.level!r}")


ThresholdSpec = Any  # ThresholdLine, (value, label[, level]), thresholds.Threshold, or a number


def threshold_lines(spec: ThresholdSpec | Iterable[ThresholdSpec], *,
                    scale: float = 1.0) -> list[ThresholdLine]:
    """Normalise what callers pass as thresholds into ThresholdLines.

    A `thresholds.Threshold` gives two lines (warning and critical); `scale` converts its
    unit to the plot's (100 for a fraction drawn as a percentage, 1/1000 for ms drawn in s).
    A bare number is a critical limit.
    """
    if spec is None:
        return []
    if isinstance(spec, (ThresholdLine, thresholds_mod.Threshold, int, float)) or (
            isinstance(spec, tuple) and spec and isinstance(spec[0], (int, float))):
        items: Iterable[Any] = [spec]
    else:
        items = spec
    out: list[ThresholdLine] = []
    for item in items:
        if isinstance(item, ThresholdLine):
            out.append(item)
        elif isinstance(item, thresholds_mod.Threshold):
            for level in ("warning", "critical"):
                value = getattr(item, level) * scale
                out.append(ThresholdLine(value, f"{level} {value:g}", level))
        elif isinstance(item, (int, float)):
            out.append(ThresholdLine(float(item), f"limit {item:g}", "critical"))
        elif isinstance(item, tuple):
            out.append(ThresholdLine(float(item[0]), *item[1:]))
        else:  # anything with value/label/level attributes
            out.append(ThresholdLine(float(item.value), str(item.label),
                                     str(getattr(item, "level", "warning"))))
    return out


def new_figure(nrows: int = 1, ncols: int = 1, *, height: float | None = None,
               width: float = FIGSIZE[0]) -> tuple[DashboardFigure, Any]:
    """A figure and its axes (one Axes, or an array for a grid), for multi-panel dashboards."""
    fig = DashboardFigure(figsize=(width, height or FIGSIZE[1] * nrows), dpi=DPI,
                          layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for tests, artifacts and `_repr_png_`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax
    fig, new_ax = new_figure()
    return fig, new_ax


def _utc_naive(values: Any) -> Any:
    """Datetimes as naive UTC (what matplotlib plots without a tz surprise); others as is."""
    index = pd.Index(values)
    if isinstance(index, pd.DatetimeIndex):
        return (index.tz_convert("UTC") if index.tz is not None else index).tz_localize(None)
    return index


def _series_of(data: pd.Series | pd.DataFrame) -> list[tuple[str, Any, Any]]:
    """(name, x, y) per line: a Series; a long frame (time, value[, series]) as
    `prometheus.query_range` returns it; or a wide frame (time index, a column per line)."""
    if isinstance(data, pd.Series):
        return [(str(data.name or ""), data.index, data.to_numpy(dtype=float))]
    if {"time", "value"} <= set(data.columns):
        if "series" not in data.columns:
            return [("", data["time"], data["value"].to_numpy(dtype=float))]
        return [(str(name), group["time"], group["value"].to_numpy(dtype=float))
                for name, group in data.groupby("series", sort=False)]
    numeric = data.select_dtypes("number")
    return [(str(col), numeric.index, numeric[col].to_numpy(dtype=float))
            for col in numeric.columns]


def _draw_thresholds(ax: Axes, lines: list[ThresholdLine], *, vertical: bool = False,
                     legend: Sequence[str] | None = None) -> None:
    """Dashed lines labelled on the plot; `legend` gives longer legend entries if wanted."""
    for i, line in enumerate(lines):
        colour = COLOURS[line.level]
        entry = legend[i] if legend is not None else line.label
        if vertical:
            ax.axvline(line.value, color=colour, linestyle="--", linewidth=1.3,
                       label=entry, gid=f"threshold-{line.level}")
            ax.text(line.value, 0.99, f" {line.label}", transform=ax.get_xaxis_transform(),
                    color=colour, fontsize="small", ha="left", va="top")
        else:
            ax.axhline(line.value, color=colour, linestyle="--", linewidth=1.3,
                       label=entry, gid=f"threshold-{line.level}")
            ax.text(0.995, line.value, f"{line.label} ", transform=ax.get_yaxis_transform(),
                    color=colour, fontsize="small", ha="right", va="bottom")


def _finish(ax: Axes, *, title: str, xlabel: str | None, ylabel: str,
            si_unit: str | None, value_axis: str = "y") -> None:
    ax.set_title(title, loc="left", fontsize="medium", fontweight="bold")
    ax.set_ylabel(ylabel)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if si_unit is not None:
        axis = ax.yaxis if value_axis == "y" else ax.xaxis
        axis.set_major_formatter(EngFormatter(unit=si_unit))
    ax.grid(True, axis=value_axis, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if len([label for label in labels if label and not label.startswith("_")]) > 1:
        ax.legend(fontsize="small", loc="upper left", framealpha=0.8,
                  ncols=2 if len(labels) > 8 else 1)


def _time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def timeseries(data: pd.Series | pd.DataFrame, *, title: str, ylabel: str,
               thresholds: ThresholdSpec | Iterable[ThresholdSpec] = (),
               xlabel: str | None = "time (UTC)", si_unit: str | None = None,
               ax: Axes | None = None) -> Figure:
    """One line per series over time, with threshold lines.

    `ylabel` names the quantity and its unit ("P95 latency (s)"). `si_unit` ("B", "s")
    formats ticks as 1.5 GB or 20 ms. Empty data still gives the titled axes, saying so.
    """
    fig, ax = _axes(ax)
    lines = _series_of(data)
    for name, x, y in lines:
        ax.plot(_utc_naive(x), y, linewidth=1.5, label=name or "_nolegend_")
    if not lines or all(len(y) == 0 for _, _, y in lines):
        ax.text(0.5, 0.5, "no data in this range", transform=ax.transAxes, ha="center",
                va="center", color=TREND_COLOUR)
    elif isinstance(_utc_naive(lines[0][1]), pd.DatetimeIndex):
        _time_axis(ax)
    _draw_thresholds(ax, threshold_lines(thresholds))
    _finish(ax, title=title, xlabel=xlabel, ylabel=ylabel, si_unit=si_unit)
    return fig


def bar(data: pd.Series | pd.DataFrame, *, title: str, xlabel: str, ylabel: str,
        x: str | None = None, y: str | Sequence[str] | None = None,
        horizontal: bool = False, thresholds: ThresholdSpec | Iterable[ThresholdSpec] = (),
        si_unit: str | None = None, ax: Axes | None = None) -> Figure:
    """Bars per category; several value columns are stacked (table + index + toast bytes).

    `xlabel` always names the categories and `ylabel` the values (with unit), whichever way
    the bars point; `horizontal=True` suits long names such as tables, largest at the top.
    A Series uses its index as categories; a frame its `x` column (default: the first
    non-numeric column, else the index) and its `y` columns (default: every numeric one).
    """
    fig, ax = _axes(ax)
    if isinstance(data, pd.Series):
        frame = data.to_frame(name=str(data.name or "value"))
        categories = [str(c) for c in data.index]
    else:
        frame = data
        if x is None:
            text_columns = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
            x = text_columns[0] if text_columns else None
        categories = [str(c) for c in (data[x] if x is not None else data.index)]
    columns = [y] if isinstance(y, str) else list(y) if y is not None else [
        c for c in frame.columns if c != x and pd.api.types.is_numeric_dtype(frame[c])]
    positions = range(len(categories))
    base = pd.Series(0.0, index=frame.index)
    for column in columns:
        heights = frame[column].astype(float).fillna(0.0)
        label = str(column) if len(columns) > 1 else "_nolegend_"
        if horizontal:
            ax.barh(positions, heights, left=base, label=label)
        else:
            ax.bar(positions, heights, bottom=base, label=label)
        base = base + heights
    if horizontal:
        ax.set_yticks(list(positions), categories)
        ax.invert_yaxis()
    else:
        ax.set_xticks(list(positions), categories, rotation=30 if len(categories) > 6 else 0,
                      ha="right" if len(categories) > 6 else "center")
    if not categories:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
                color=TREND_COLOUR)
    _draw_thresholds(ax, threshold_lines(thresholds), vertical=horizontal)
    if horizontal:  # the value axis is x: labels follow the bars
        _finish(ax, title=title, xlabel=ylabel, ylabel=xlabel, si_unit=si_unit,
                value_axis="x")
    else:
        _finish(ax, title=title, xlabel=xlabel, ylabel=ylabel, si_unit=si_unit)
    return fig


def _history_series(history: pd.Series | pd.DataFrame) -> pd.Series:
    if isinstance(history, pd.Series):
        return history
    return pd.Series(history["value"].to_numpy(dtype=float),
                     index=pd.DatetimeIndex(history["time"]), name="value")


def _when(moment: datetime, now: datetime) -> str:
    days = (moment - now).total_seconds() / 86400
    date = f"{moment:%Y-%m-%d}"
    if days < 0:
        return f"trend already past it ({date})"
    if days < 1:
        return f"reached today ({date})"
    return f"reached in {days:.0f} day{'' if round(days) == 1 else 's'} ({date})"


def projection(history: pd.Series | pd.DataFrame, fitted: Projection,
               crossing_times: Sequence[datetime | None] | None = None, *, title: str,
               ylabel: str, threshold: ThresholdSpec | Iterable[ThresholdSpec],
               horizon: timedelta | None = None, upward: bool = True,
               si_unit: str | None = None, ax: Axes | None = None) -> Figure:
    """Capacity planning: the history, its linear trend forward, and when each threshold is
    reached (a dotted marker on the chart, and the date in the legend).

    `crossing_times` match the thresholds in order; omitted, they are computed with
    `capacity.crossing_time`. The trend is drawn `horizon` past the last sample, by default
    as far ahead as the history reaches back: a line fitted on two weeks says little about
    next year, so later crossings are named in the legend but not drawn.
    """
    fig, ax = _axes(ax)
    series = _history_series(history).dropna()
    lines = threshold_lines(threshold)
    if crossing_times is None:
        crossing_times = [crossing_time(fitted, line.value, upward=upward) for line in lines]
    if len(crossing_times) != len(lines):
        raise ValueError(f"{len(crossing_times)} crossing times for {len(lines)} thresholds")
    times = pd.DatetimeIndex(series.index)
    times = times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
    first, last = times.min().to_pydatetime(), times.max().to_pydatetime()
    end = last + (horizon if horizon is not None else max(last - first, timedelta(days=1)))
    ax.plot(_utc_naive(times), series.to_numpy(dtype=float), linewidth=1.5, label="history")
    trend = trend_points(fitted, first, end)
    ax.plot(_utc_naive(trend.index), trend.to_numpy(), color=TREND_COLOUR, linestyle=":",
            linewidth=1.5, label=f"trend {fitted.slope_per_day:+.3g}/day (r² {fitted.r2:.2f})")
    notes = []
    for line, moment in zip(lines, crossing_times, strict=True):
        note = "not approaching" if moment is None else _when(moment, last)
        notes.append(f"{line.label}: {note}")
        if moment is not None and first <= moment <= end:
            when = _utc_naive([moment])[0]
            ax.axvline(when, color=COLOURS[line.level], linestyle=":", linewidth=1,
                       gid=f"crossing-{line.level}")
            ax.annotate(f"{moment:%Y-%m-%d}", (when, line.value), xytext=(4, 4),
                        textcoords="offset points", color=COLOURS[line.level],
                        fontsize="small")
    _draw_thresholds(ax, lines, legend=notes)
    _time_axis(ax)
    _finish(ax, title=title, xlabel="time (UTC)", ylabel=ylabel, si_unit=si_unit)
    return fig


def latency_lines(warning_s: float, critical_s: float) -> list[ThresholdLine]:
    """§6.1 scale up when P95 > 2 s (warning); §3.2 HighQueryLatency at P99 > 5 s."""
    return [ThresholdLine(warning_s, f"§6.1 P95 > {warning_s:g} s", "warning"),
            ThresholdLine(critical_s, f"§3.2 P99 > {critical_s:g} s", "critical")]
