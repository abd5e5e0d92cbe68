"""Linear capacity projections on synthetic histories whose answer is known exactly."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from fraiseql_rb.core import capacity, thresholds

START = datetime(2026, 1, 1, tzinfo=UTC)


def _history(slope_per_day: float, start_value: float, days: int = 10,
             every: timedelta = timedelta(hours=6)) -> tuple[list[datetime], list[float]]:
    times = [START + every * i for i in range(int(timedelta(days=days) / every) + 1)]
    values = [start_value + slope_per_day * (t - START).total_seconds() / 86400 for t in times]
    return times, values


def test_exact_slope_and_crossing():
    times, values = _history(2.5, 100.0)
    fit = capacity.linear_projection(times, values)
    assert fit.slope_per_day == pytest.approx(2.5, abs=1e-9)
    assert fit.intercept == pytest.approx(100.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.origin == START
    crossing = capacity.crossing_time(fit, 150.0)
    assert crossing is not None
    assert abs(crossing - (START + timedelta(days=20))) < timedelta(seconds=1)
    assert fit.value_at(START + timedelta(days=4)) == pytest.approx(110.0)


def test_accepts_pandas_and_naive_utc_times():
    times, values = _history(1.0, 0.0)
    naive = [t.replace(tzinfo=None) for t in times]
    frame = pd.DataFrame({"time": pd.DatetimeIndex(times), "value": values})
    for given in (naive, frame["time"], pd.DatetimeIndex(times)):
        fit = capacity.linear_projection(given, frame["value"])
        assert fit.slope_per_day == pytest.approx(1.0) and fit.origin == START


def test_flat_and_decreasing_never_cross_an_upper_limit():
    flat = capacity.linear_projection(*_history(0.0, 40.0))
    assert flat.slope_per_day == pytest.approx(0.0) and flat.r2 == 1.0
    assert capacity.crossing_time(flat, 80.0) is None
    falling = capacity.linear_projection(*_history(-3.0, 90.0))
    assert capacity.crossing_time(falling, 95.0) is None


def test_falling_toward_a_floor():
    falling = capacity.linear_projection(*_history(-0.01, 0.95))
    crossing = capacity.crossing_time(falling, 0.70, upward=False)
    assert crossing is not None
    assert abs(crossing - (START + timedelta(days=25))) < timedelta(seconds=1)
    rising = capacity.linear_projection(*_history(0.01, 0.5))
    assert capacity.crossing_time(rising, 0.3, upward=False) is None


def test_already_beyond_gives_a_past_moment():
    fit = capacity.linear_projection(*_history(1.0, 90.0))  # 90 → 100 over ten days
    crossing = capacity.crossing_time(fit, 80.0)
    assert crossing is not None and crossing < START


def test_scale_up_threshold_from_the_runbook():
    disk = capacity.linear_projection(*_history(0.01, 0.50))  # 1 point of disk a day
    crossing = capacity.crossing_time(disk, thresholds.SCALE_UP["disk"].warning)
    assert crossing is not None
    assert abs(crossing - (START + timedelta(days=30))) < timedelta(seconds=1)
    assert thresholds.SCALE_UP["cpu"].warning == 0.70
    assert thresholds.SCALE_UP["memory"].warning == 0.75
    assert thresholds.SCALE_UP["connections"].warning == 0.80
    assert thresholds.SCALE_UP["latency_p95"].warning == 2000


def test_noise_lowers_r2_and_nan_is_skipped():
    times, values = _history(1.0, 0.0)
    noisy = [v + (5 if i % 2 else -5) for i, v in enumerate(values)]
    noisy[3] = math.nan
    fit = capacity.linear_projection(times, noisy)
    assert 0 < fit.r2 < 1
    assert fit.slope_per_day == pytest.approx(1.0, abs=0.5)


def test_too_little_history_is_an_error():
    with pytest.raises(ValueError, match="two samples"):
        capacity.linear_projection([START, START], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 times but 1 values"):
        capacity.linear_projection([START, START + timedelta(days=1)], [1.0])


def test_trend_points_span_the_range():
    fit = capacity.linear_projection(*_history(2.0, 10.0))
    trend = capacity.trend_points(fit, START, START + timedelta(days=5), points=6)
    assert len(trend) == 6
    assert list(trend.round(6)) == [10.0, 12.0, 14.0, 16.0, 18.0, 20.0]


# -- capacity-planning-dashboard counts PostgreSQL's slots, and "now" is now (issue 11 §2) ----

def test_capacity_counts_postgres_slots_beside_the_pool(sandbox):
    """Another application holds most of max_connections: the pool's history looks fine, but
    the connections finding counts the slots used now against max_connections and warns; its
    current value is read live, not the last step's peak."""
    from contextlib import ExitStack

    import psycopg
    from drill_helpers import findings_of

    from fraiseql_rb.sandbox import cluster as pgcluster
    from fraiseql_rb.sandbox import manager

    cluster = manager.Sandbox.open(sandbox.root).cluster
    role = "rb_capacity_batch"
    with cluster.connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        available = (int(conn.execute("SHOW max_connections").fetchone()[0])
                     - int(conn.execute("SHOW superuser_reserved_connections").fetchone()[0]))
    info = {**cluster.superuser_conninfo(pgcluster.APP_DB), "user": role}
    held = math.ceil(thresholds.POOL_OF_MAX_CONNECTIONS.warning * available) + 2
    try:
        with ExitStack() as stack:
            for _ in range(held):
                stack.enter_context(psycopg.connect(**info, application_name="batch"))
            result = sandbox.run("capacity-planning-dashboard", "-p", "lookback", "24h")
    finally:
        with cluster.connect() as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
    data = findings_of(result)
    [conns] = [f for f in data["findings"] if f["check"] == "capacity.connections"]
    evidence = conns["evidence"]
    assert evidence["max_connections"] == available + evidence["reserved_connections"]
    assert evidence["slots_used"] >= held
    assert conns["status"] in ("warning", "critical"), conns
    assert "PostgreSQL slots" in conns["summary"]
    assert evidence["current_source"] == "/metrics now"  # not the last hour's peak
    assert "now" in conns["summary"]
