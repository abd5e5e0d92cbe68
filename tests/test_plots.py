"""Dashboard figures: titled, labelled with units, thresholds drawn, renderable to PNG."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import matplotlib.colors as mcolors
import pandas as pd
import pytest

from fraiseql_rb.core import capacity, plots, thresholds

START = datetime(2026, 1, 1, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"


def _times(n: int = 60) -> pd.DatetimeIndex:
    return pd.date_range(START, periods=n, freq="1min")


def _threshold_lines(fig):
    ax = fig.axes[0]
    return [ln for ln in ax.lines if (ln.get_gid() or "").startswith("threshold-")]


def test_timeseries_title_unit_thresholds_and_png():
    latency = pd.Series([0.5 + i / 40 for i in range(60)], index=_times(), name="p95")
    fig = plots.timeseries(latency, title="Query latency", ylabel="P95 latency (s)",
                           thresholds=[(2.0, "scale up (§6.1)", "warning"),
                                       plots.ThresholdLine(5.0, "P99 alert (§3.2)", "critical")])
    ax = fig.axes[0]
    assert ax.get_title(loc="left") == "Query latency"
    assert ax.get_ylabel() == "P95 latency (s)"
    lines = _threshold_lines(fig)
    assert len(lines) == 2
    by_level = {ln.get_gid(): ln for ln in lines}
    assert list(by_level["threshold-warning"].get_ydata()) == [2.0, 2.0]
    assert mcolors.to_hex(by_level["threshold-warning"].get_color()) == plots.COLOURS["warning"]
    assert mcolors.to_hex(by_level["threshold-critical"].get_color()) == plots.COLOURS["critical"]
    assert {t.get_text().strip() for t in ax.texts} == {"scale up (§6.1)", "P99 alert (§3.2)"}
    assert len(ax.lines) == 3  # the data and two thresholds
    png = plots.to_png(fig)
    assert png.startswith(PNG) and len(png) > 5000
    assert fig._repr_png_().startswith(PNG)  # what Jupyter shows, with or without pyplot


def test_long_frame_gives_one_line_per_series():
    frame = pd.concat([pd.DataFrame({"time": _times(), "series": name, "value": float(k)})
                       for k, name in enumerate(["instance=a", "instance=b", "instance=c"])])
    fig = plots.timeseries(frame, title="Requests", ylabel="requests per second (req/s)")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["instance=a", "instance=b", "instance=c"]
    assert ax.get_legend() is not None
    assert _threshold_lines(fig) == []


def test_a_runbook_threshold_is_two_lines_scaled_to_the_plot_unit():
    cpu = pd.Series([50.0] * 60, index=_times())
    fig = plots.timeseries(cpu, title="CPU", ylabel="CPU used (%)",
                           thresholds=plots.threshold_lines(thresholds.CPU_USED, scale=100))
    values = sorted(ln.get_ydata()[0] for ln in _threshold_lines(fig))
    assert values == [70.0, 90.0]


def test_empty_data_still_titled_and_says_so():
    empty = pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]"), "series": [],
                          "value": []})
    fig = plots.timeseries(empty, title="Cache hit ratio", ylabel="hit ratio (fraction)",
                           thresholds=[0.7])
    ax = fig.axes[0]
    assert "no data in this range" in [t.get_text() for t in ax.texts]
    assert len(_threshold_lines(fig)) == 1
    assert plots.to_png(fig).startswith(PNG)


def test_panels_share_one_figure():
    fig, axes = plots.new_figure(2, 1)
    series = pd.Series(range(60), index=_times(), dtype=float)
    assert plots.timeseries(series, title="a", ylabel="x (1)", ax=axes[0]) is fig
    assert plots.bar(pd.Series({"x": 1.0}), title="b", xlabel="k", ylabel="n (1)",
                     ax=axes[1]) is fig
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["a", "b"]


def test_bar_stacks_columns_and_labels_axes():
    sizes = pd.DataFrame({"table": ["audit", "tb_user", "tb_post"],
                          "heap_bytes": [3e8, 2e6, 1e6], "index_bytes": [1e8, 1e6, 5e5]})
    fig = plots.bar(sizes, title="Largest tables", xlabel="table", ylabel="size (bytes)",
                    si_unit="B")
    ax = fig.axes[0]
    assert ax.get_title(loc="left") == "Largest tables"
    assert ax.get_ylabel() == "size (bytes)" and ax.get_xlabel() == "table"
    assert len(ax.patches) == 6  # two stacked segments per table
    assert [t.get_text() for t in ax.get_xticklabels()] == ["audit", "tb_user", "tb_post"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["heap_bytes", "index_bytes"]
    assert plots.to_png(fig).startswith(PNG)


def test_horizontal_bar_puts_values_and_thresholds_on_x():
    conns = pd.Series({"active": 40.0, "idle": 5.0}, name="connections")
    fig = plots.bar(conns, title="Connections", xlabel="state", ylabel="connections (count)",
                    horizontal=True, thresholds=[(80.0, "80 % of pool", "warning")])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "connections (count)" and ax.get_ylabel() == "state"
    (line,) = _threshold_lines(fig)
    assert list(line.get_xdata()) == [80.0, 80.0]


def test_projection_marks_crossings_within_the_horizon():
    times = pd.date_range(START, periods=15, freq="1D")
    history = pd.Series([50 + 2 * i for i in range(15)], index=times, dtype=float)  # +2 %/day
    fit = capacity.linear_projection(history.index, history)
    levels = [plots.ThresholdLine(80.0, "disk 80 %", "warning"),
              plots.ThresholdLine(90.0, "disk 90 %", "critical"),
              plots.ThresholdLine(200.0, "far away", "critical")]
    fig = plots.projection(history, fit, title="Disk", ylabel="disk used (%)", threshold=levels)
    ax = fig.axes[0]
    assert ax.get_title(loc="left") == "Disk" and ax.get_ylabel() == "disk used (%)"
    assert len(_threshold_lines(fig)) == 3
    # 80 % on day 15 and 90 % on day 20 lie within the default 14-day horizon; 200 % does not
    markers = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("crossing-")]
    assert len(markers) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "disk 80 %: reached in 1 day (2026-01-16)" in legend
    assert "disk 90 %: reached in 6 days (2026-01-21)" in legend
    assert any(text.startswith("far away: reached in 61 days") for text in legend)
    assert any(text.startswith("trend +2/day") for text in legend)
    assert plots.to_png(fig).startswith(PNG)


def test_projection_says_when_a_limit_is_not_approached():
    times = pd.date_range(START, periods=10, freq="1D")
    history = pd.Series([60.0 - i for i in range(10)], index=times)
    fit = capacity.linear_projection(history.index, history)
    fig = plots.projection(history, fit, [None], title="Memory", ylabel="memory used (%)",
                           threshold=75.0)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "limit 75: not approaching" in legend
    with pytest.raises(ValueError, match="2 crossing times for 1 thresholds"):
        plots.projection(history, fit, [None, None], title="x", ylabel="y (1)", threshold=75.0)


def test_bad_threshold_level_is_refused():
    with pytest.raises(ValueError, match="warning or critical"):
        plots.ThresholdLine(1.0, "x", "amber")


def test_plots_never_load_pyplot():
    """No global figure state: safe in papermill, no figures leaking between cells."""
    code = ("import sys, pandas as pd; from fraiseql_rb.core import plots; "
            "plots.to_png(plots.timeseries(pd.Series([1.0, 2.0]), title='t', ylabel='y (1)')); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_timestamps_are_plotted_in_utc():
    local = pd.Series([1.0, 2.0], index=pd.DatetimeIndex(
        [START, START + timedelta(hours=1)]).tz_convert("Europe/Paris"))
    fig = plots.timeseries(local, title="t", ylabel="y (1)")
    xdata = fig.axes[0].lines[0].get_xdata()
    assert pd.Timestamp(xdata[0]) == pd.Timestamp(START).tz_localize(None)
