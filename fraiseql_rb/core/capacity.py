"""Capacity planning (§6.1, §9.2): fit a straight line to a resource's history and say when
it reaches a threshold.

A least-squares line is deliberately simple: a reviewer can check it by eye on the plot, and
`r2` says how far to trust it (a low r2 means the history is not a trend, so the date is not a
forecast). Time is measured in days so that `slope_per_day` reads directly ("+1.2 GB/day").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

_DAY_S = 86400.0


@dataclass(frozen=True)
class Projection:
    """value(t) = intercept + slope_per_day * days since `origin` (the first sample)."""

    slope_per_day: float
    intercept: float
    r2: float
    origin: datetime

    def value_at(self, moment: datetime) -> float:
        return self.intercept + self.slope_per_day * _days(moment, self.origin)

    def at_days(self, days: float) -> datetime:
        return self.origin + timedelta(days=days)


def _utc(moment: Any) -> datetime:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.to_pydatetime()


def _days(moment: datetime, origin: datetime) -> float:
    return (_utc(moment) - origin).total_seconds() / _DAY_S


def linear_projection(times: Iterable[Any], values: Iterable[float]) -> Projection:
    """Least-squares line through (time, value); NaN values are skipped.

    Needs two samples at different times: with fewer there is no trend to speak of, which is
    a ValueError rather than a made-up slope.
    """
    moments = [_utc(t) for t in times]
    numbers = [float(v) for v in values]
    if len(moments) != len(numbers):
        raise ValueError(f"{len(moments)} times but {len(numbers)} values")
    pairs = [(t, v) for t, v in zip(moments, numbers, strict=True) if not math.isnan(v)]
    if len({t for t, _ in pairs}) < 2:
        raise ValueError("a trend needs at least two samples at different times")
    origin = min(t for t, _ in pairs)
    x = np.array([_days(t, origin) for t, _ in pairs])
    y = np.array([v for _, v in pairs])
    x_mean, y_mean = x.mean(), y.mean()
    slope = float(((x - x_mean) * (y - y_mean)).sum() / ((x - x_mean) ** 2).sum())
    intercept = float(y_mean - slope * x_mean)
    residual = float(((y - (intercept + slope * x)) ** 2).sum())
    total = float(((y - y_mean) ** 2).sum())
    # A perfectly flat history is perfectly explained by a flat line.
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return Projection(slope_per_day=slope, intercept=intercept, r2=r2, origin=origin)


def crossing_time(projection: Projection, threshold: float, *,
                  upward: bool = True) -> datetime | None:
    """When the trend line reaches `threshold`; None when it is not heading that way.

    `upward=True` (the default) is for limits reached by growing (disk, memory, connections);
    `upward=False` for floors reached by falling (free space, cache hit ratio). The moment can
    be in the past: the trend is already beyond the threshold.
    """
    slope = projection.slope_per_day
    if slope == 0 or (slope > 0) != upward:
        return None
    try:
        return projection.at_days((threshold - projection.intercept) / slope)
    except OverflowError:  # so slow that it lands past year 9999: not approaching
        return None


def trend_points(projection: Projection, start: datetime, end: datetime,
                 points: int = 50) -> pd.Series:
    """The fitted line sampled from `start` to `end`, for plotting it beside the history."""
    index = pd.date_range(_utc(start), _utc(end), periods=points)
    return pd.Series([projection.value_at(t) for t in index], index=index, name="trend")
