"""Trends over the last 90 days: security-review totals against their baseline band, backup
age and RPO, and each runbook's status per day per target (a heat strip).

Plain inline SVG and HTML tables: the site must open from a file share with no JS library
and no network.
"""

from __future__ import annotations

from datetime import date, timedelta
from html import escape
from typing import Any

DAYS = 90
RANK = {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}


def window(runs: list[dict[str, Any]], days: int = DAYS) -> list[str]:
    """The last `days` days ending on the newest run's day (not today: an archive of old
    reports still shows its own last quarter)."""
    newest = max((r["started_at"][:10] for r in runs), default=None)
    try:
        end = date.fromisoformat(newest) if newest else None
    except ValueError:
        end = None
    if end is None:
        return []
    return [(end - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def security(runs: list[dict[str, Any]], days: list[str]) -> dict[tuple[str, str],
                                                                   dict[str, dict[str, Any]]]:
    """(target, kind) -> day -> the day's last daily-security-review total for that kind."""
    wanted = set(days)
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for run in runs:  # newest first: the first seen on a day is that day's last run
        day = run["started_at"][:10]
        if run["runbook"] != "daily-security-review" or day not in wanted:
            continue
        for kind, values in run["security"].items():
            out.setdefault((run["target"] or "?", kind), {}).setdefault(day, values)
    return dict(sorted(out.items()))


def backup(runs: list[dict[str, Any]], days: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> day -> the day's last backup-verification evidence (age, RPO, limits)."""
    wanted = set(days)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        day = run["started_at"][:10]
        if run["runbook"] == "backup-verification" and day in wanted and run["backup"]:
            out.setdefault(run["target"] or "?", {}).setdefault(day, run["backup"])
    return dict(sorted(out.items()))


def heat(runs: list[dict[str, Any]], days: list[str]) -> dict[str, dict[str, dict[str, list]]]:
    """runbook -> target -> day -> [worst status, runs that day]; a damaged run counts as
    unknown (we could not tell)."""
    wanted = set(days)
    out: dict[str, dict[str, dict[str, list]]] = {}
    for run in runs:
        day = run["started_at"][:10]
        if day not in wanted:
            continue
        status = "unknown" if run["damaged"] else run["status"]
        cell = out.setdefault(run["runbook"], {}).setdefault(run["target"] or "?", {})
        worst = cell.setdefault(day, [status, 0])
        if RANK.get(status, 2) > RANK.get(worst[0], 2):
            worst[0] = status
        worst[1] += 1
    return {rb: dict(sorted(t.items())) for rb, t in sorted(out.items())}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def chart(days: list[str], series: list[tuple[str, str, dict[str, Any]]], *,
          band: dict[str, tuple[float, float]] | None = None,
          limit: dict[str, Any] | None = None, unit: str = "",
          marks: set[str] | None = None) -> str:
    """A small line chart: one polyline per series (day -> value), an optional shaded band
    (day -> (low, high)), an optional dashed limit line (day -> value) and red dots on
    `marks` days of the first series."""
    width, height, left, bottom, top = 760, 150, 46, 20, 8
    values = [v for _, _, s in series for v in map(_num, s.values()) if v is not None]
    values += [x for lo_hi in (band or {}).values() for x in lo_hi]
    values += [v for v in map(_num, (limit or {}).values()) if v is not None]
    high = max(values, default=1.0) or 1.0
    step = (width - left - 4) / max(len(days) - 1, 1)

    def xy(i: int, value: float) -> str:
        y = top + (height - top - bottom) * (1 - value / high)
        return f"{left + i * step:.1f},{y:.1f}"

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="2" y="{top + 8}" class="axis">{high:g}{escape(unit)}</text>',
             f'<text x="2" y="{height - bottom}" class="axis">0</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
             'class="base"/>']
    if days:
        parts.append(f'<text x="{left}" y="{height - 4}" class="axis">{days[0]}</text>')
        parts.append(f'<text x="{width - 70}" y="{height - 4}" class="axis">{days[-1]}</text>')
    if band:
        idx = [i for i, d in enumerate(days) if d in band]
        if idx:
            upper = [xy(i, band[days[i]][1]) for i in idx]
            lower = [xy(i, band[days[i]][0]) for i in reversed(idx)]
            parts.append(f'<polygon class="band" points="{" ".join(upper + lower)}">'
                         '<title>baseline band: mean ± sigma × stddev</title></polygon>')
    if limit:
        pts = [xy(i, v) for i, d in enumerate(days) if (v := _num(limit.get(d))) is not None]
        if pts:
            parts.append(f'<polyline class="limit" points="{" ".join(pts)}"><title>limit'
                         '</title></polyline>')
    for n, (name, colour, values_by_day) in enumerate(series):
        pts = [(i, d, v) for i, d in enumerate(days)
               if (v := _num(values_by_day.get(d))) is not None]
        if not pts:
            continue
        parts.append(f'<polyline fill="none" stroke="{escape(colour)}" stroke-width="1.5" '
                     f'points="{" ".join(xy(i, v) for i, _, v in pts)}"><title>'
                     f'{escape(name)}</title></polyline>')
        for i, d, v in pts:
            flagged = n == 0 and marks is not None and d in marks
            parts.append(f'<circle cx="{xy(i, v).split(",")[0]}" cy="{xy(i, v).split(",")[1]}"'
                         f' r="{3 if flagged else 1.6}" fill="{"#cf222e" if flagged else colour}"'
                         f'><title>{escape(d)}: {v:g}{escape(unit)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def security_chart(days: list[str], by_day: dict[str, dict[str, Any]]) -> str:
    """A kind's daily totals with its baseline band (mean ± sigma × stddev, as the review
    judged it) and the days the review flagged marked red."""
    band: dict[str, tuple[float, float]] = {}
    for day, v in by_day.items():
        mean, sd, sigma = _num(v.get("baseline_mean")), _num(v.get("baseline_stddev")), \
            _num(v.get("sigma"))
        if mean is not None and sd is not None:
            spread = (sigma if sigma is not None else 3.0) * sd
            band[day] = (max(mean - spread, 0.0), mean + spread)
    counts = {d: v.get("count") for d, v in by_day.items()}
    flagged = {d for d, v in by_day.items() if v.get("flagged")}
    return chart(days, [("count", "#0969da", counts)], band=band, marks=flagged)


def heat_strip(days: list[str], by_target: dict[str, dict[str, list]]) -> str:
    """One row per target, one cell per day, coloured by that day's worst status."""
    rows = []
    for target, cells in by_target.items():
        tds = []
        for day in days:
            cell = cells.get(day)
            if cell is None:
                tds.append('<td class="h-none"></td>')
            else:
                tds.append(f'<td class="h-{escape(cell[0])}" title="{escape(day)}: '
                           f'{escape(cell[0])} ({cell[1]} run{"s" if cell[1] != 1 else ""})">'
                           '</td>')
        rows.append(f'<tr><th>{escape(target)}</th>{"".join(tds)}</tr>')
    return f'<table class="heat">{"".join(rows)}</table>'
