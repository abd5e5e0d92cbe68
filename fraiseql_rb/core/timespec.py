"""Times as runbook parameters write them: a Prometheus duration ("90m", "1h30m"), a calendar
month ("2026-03"), working days ("Mon-Fri") and hours. Each parser raises UsageError with the
one line to show, so `fraiseql-rb run -p` refuses a value before a kernel starts
(`runbooks.FORMATS`) exactly as the runbook would at run time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import utcnow

# -- durations ---------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+$")


def parse_range(text: str | timedelta) -> timedelta:
    """A duration written the Prometheus way ("90m", "24h", "7d", "1h30m") as a timedelta.

    Units are case-sensitive (ms s m h d w y) so that "1M" is refused rather than read as a
    minute when a month was meant. Zero and bare numbers are refused too.
    """
    if isinstance(text, timedelta):
        span = text
    else:
        cleaned = str(text).strip().replace(" ", "")
        if not _DURATION.match(cleaned):
            raise UsageError(f"cannot read {text!r} as a time range: write a number and a unit, "
                             "e.g. 90m, 24h, 7d or 1h30m (units: ms s m h d w y)")
        span = timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(cleaned)))
    if span <= timedelta(0):
        raise UsageError(f"time range {text!r} must be longer than zero")
    return span


# -- calendar months -------------------------------------------------------------------------

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
        previous = (first - timedelta(days=1)).replace(day=1)
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


# -- working days and hours --------------------------------------------------------------------

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
