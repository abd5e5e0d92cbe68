"""A small typed client for the Prometheus HTTP API, for the §9.2 dashboards and alert review.

Every call has a timeout (client side, and passed to Prometheus so the server gives up on an
expensive query too) and every failure is one `PrometheusError` line a notebook can show or
record: unreachable, HTTP error, or Prometheus' own `errorType: error`.

`query_range` returns a *long* frame, one row per (series, time): columns `time` (UTC),
`series` (a short name built from the labels that differ between the series), `value`, then
one column per label. Long is what plotting wants: `plots.timeseries` draws one line per
`series`, and pandas can pivot it wide with `frame.pivot(index="time", columns="series",
values="value")` when a table is wanted. A label named time, series or value gets no
column of its own (it still names the series).
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from fraiseql_rb.core import reachability, secrets, thresholds
from fraiseql_rb.core.errors import RunbookError, UsageError
from fraiseql_rb.core.timespec import parse_range
from fraiseql_rb.targets import metrics

JOB = "fraiseql"  # the Prometheus job scraping FraiseQL (runbook §3.2: up{job="fraiseql"})

if TYPE_CHECKING:
    from fraiseql_rb.core.context import RunContext

DEFAULT_TIMEOUT_S = thresholds.PROMETHEUS_TIMEOUT_S
FRAME_COLUMNS = ["time", "series", "value"]
# Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS = 11_000


class PrometheusError(RunbookError):
    """Prometheus could not answer: unreachable, an HTTP error, or a rejected query."""


class PrometheusSkipped(PrometheusError, reachability.Skipped):
    """Prometheus was not asked: its endpoint already hung in this run."""


@dataclass(frozen=True)
class Sample:
    """One value of one series at one moment (an instant-vector or scalar element)."""

    labels: dict[str, str]
    value: float
    time: datetime

    @property
    def metric(self) -> str | None:
        return self.labels.get("__name__")

    @property
    def name(self) -> str:
        """`metric{label="v",...}` as Prometheus prints it, for tables and messages."""
        return series_name(self.labels)


def series_name(labels: dict[str, str]) -> str:
    metric = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{metric}{{{rest}}}" if rest or not metric else metric


class PrometheusClient:
    """Read-only access to one Prometheus server. Use as a context manager or call `close()`."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 token: str | None = None, verify: Any = True,
                 memo: reachability.Unresponsive | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # `memo`: the run's hung endpoints (default: the active run's); a hung Prometheus is
        # asked once per run, then every call raises PrometheusSkipped at once
        self._http = reachability.Client(timeout=timeout_s, verify=verify, headers=headers,
                                         follow_redirects=False, memo=memo)

    def __repr__(self) -> str:
        return f"PrometheusClient({secrets.mask(self.base_url)!r})"

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET an API path and return its `data`, or raise one PrometheusError line."""
        url = f"{self.base_url}{path}"
        where = secrets.mask(self.base_url)
        try:
            response = self._http.get(url, params=params)
        except reachability.Skipped as exc:
            raise PrometheusSkipped(exc.timeout) from None
        except httpx.TimeoutException:
            raise PrometheusError(f"Prometheus at {where} did not answer within "
                                  f"{self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus at {where} is unreachable: "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            raise PrometheusError(f"Prometheus rejected {path}: {body.get('errorType')}: "
                                  f"{_first_line(body.get('error', ''))}")
        if response.status_code != 200 or not isinstance(body, dict):
            raise PrometheusError(f"Prometheus at {where} answered HTTP {response.status_code} "
                                  f"to {path}: {_first_line(response.text[:200]) or 'no body'}")
        return body.get("data")

    def _query_params(self, params: dict[str, Any]) -> dict[str, Any]:
        # The server-side timeout, so an expensive query stops there rather than running on.
        return {**params, "timeout": f"{self.timeout_s:g}s"}

    # -- API -------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the server has loaded its data and answers queries (`/-/ready`).

        Never raises: an unreachable server is simply not ready. Call `query("1")` to get
        the reason as a PrometheusError.
        """
        try:
            return self._http.get(f"{self.base_url}/-/ready").status_code == 200
        except (httpx.HTTPError, reachability.Skipped):
            return False

    def query(self, expr: str, at: datetime | None = None) -> list[Sample]:
        """Evaluate `expr` at one moment (now by default): one Sample per series.

        A scalar result is one Sample without labels; a range-vector result (`up[5m]`) gives
        one Sample per stored value.
        """
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = _epoch(at)
        data = self._get("/api/v1/query", self._query_params(params))
        kind, result = data["resultType"], data["result"]
        if kind in ("scalar", "string"):
            return [Sample({}, _float(result[1]), _time(result[0]))]
        if kind == "vector":
            return [Sample(r["metric"], _float(r["value"][1]), _time(r["value"][0]))
                    for r in result]
        return [Sample(r["metric"], _float(v), _time(t))
                for r in result for t, v in r["values"]]

    def query_range(self, expr: str, start: datetime, end: datetime,
                    step_s: float) -> pd.DataFrame:
        """Evaluate `expr` every `step_s` seconds from `start` to `end`: a long frame.

        Columns: `time` (UTC), `series`, `value`, then one per label (see the module doc).
        """
        if end <= start:
            raise UsageError(f"query range ends ({end}) before it starts ({start})")
        if step_s <= 0:
            raise UsageError(f"step must be positive, not {step_s}")
        points = (_epoch(end) - _epoch(start)) / step_s
        if points > MAX_POINTS:
            raise UsageError(f"{points:.0f} points per series is more than Prometheus allows "
                             f"({MAX_POINTS}); use a larger step (see step_for)")
        data = self._get("/api/v1/query_range", self._query_params(
            {"query": expr, "start": _epoch(start), "end": _epoch(end), "step": step_s}))
        return range_frame(data["result"], expr)

    def query_window(self, expr: str, window: str | timedelta = "24h",
                     end: datetime | None = None, points: int = 300) -> pd.DataFrame:
        """`query_range` over the last `window` (e.g. "24h") with a step from `step_for`."""
        span = parse_range(window)
        end = end or datetime.now(UTC)
        return self.query_range(expr, end - span, end, step_for(span, points))

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (`/api/v1/alerts`), each a dict with keys `name`, `state` (firing or
        pending), `active_at` (UTC datetime), `value`, `labels` and `annotations`."""
        data = self._get("/api/v1/alerts")
        return [{"name": a["labels"].get("alertname", ""), "state": a.get("state"),
                 "active_at": _parse_time(a.get("activeAt")), "value": _float(a.get("value")),
                 "labels": a.get("labels", {}), "annotations": a.get("annotations", {})}
                for a in data.get("alerts", [])]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (`/api/v1/rules`) flattened out of its group.

        Keys: `group`, `file`, `name`, `type` (alerting or recording), `query`, `for_s`,
        `health` (ok, err, unknown), `last_error`, `last_evaluation` (UTC datetime),
        `labels`, `annotations`, and for alerting rules `state` and `alerts` (active count).
        """
        data = self._get("/api/v1/rules")
        out: list[dict[str, Any]] = []
        for group in data.get("groups", []):
            for rule in group.get("rules", []):
                entry = {"group": group.get("name"), "file": group.get("file"),
                         "name": rule.get("name"), "type": rule.get("type"),
                         "query": rule.get("query"), "for_s": rule.get("duration"),
                         "health": rule.get("health"), "last_error": rule.get("lastError") or None,
                         "last_evaluation": _parse_time(rule.get("lastEvaluation")),
                         "labels": rule.get("labels") or {},
                         "annotations": rule.get("annotations") or {}}
                if rule.get("type") == "alerting":
                    entry["state"] = rule.get("state")
                    entry["alerts"] = len(rule.get("alerts") or [])
                out.append(entry)
        return out

    def label_values(self, label: str) -> list[str]:
        """Every value a label has (`__name__`: every series name Prometheus holds)."""
        data = self._get(f"/api/v1/label/{label}/values")
        return [str(v) for v in data] if isinstance(data, list) else []

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (`/api/v1/targets`): `job`, `instance`, `health` (up, down,
        unknown), `last_error`, `last_scrape` (UTC), `scrape_duration_s`, `scrape_url`,
        `labels`."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return [{"job": t.get("labels", {}).get("job", t.get("scrapePool")),
                 "instance": t.get("labels", {}).get("instance"), "health": t.get("health"),
                 "last_error": t.get("lastError") or None,
                 "last_scrape": _parse_time(t.get("lastScrape")),
                 "scrape_duration_s": t.get("lastScrapeDuration"),
                 "scrape_url": secrets.mask(t.get("scrapeUrl", "")),
                 "labels": t.get("labels", {})}
                for t in data.get("activeTargets", [])]


def from_target(ctx: RunContext) -> PrometheusClient | None:
    """A client for the target's `prometheus_url`; None when the inventory names none.

    An optional bearer token comes from `prometheus_token_env`/`_file` (read at use), and the
    target's `ca_bundle` verifies a private CA, as for the FraiseQL endpoints.
    """
    url = ctx.target.get("prometheus_url")
    if not url:
        return None
    verify: Any = True
    if ctx.target.get("ca_bundle"):
        verify = ssl.create_default_context(cafile=ctx.target.get("ca_bundle"))
    return PrometheusClient(str(url), token=ctx.target.secret("prometheus_token"), verify=verify,
                            memo=ctx.unresponsive)


# -- result shaping ----------------------------------------------------------------------------

def range_frame(result: list[dict[str, Any]], expr: str = "") -> pd.DataFrame:
    """A matrix result as the long frame described in the module doc."""
    if not result:
        return pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]"),
                             "series": pd.Series(dtype=object), "value": pd.Series(dtype=float)})
    labelsets = [r["metric"] for r in result]
    keys = sorted({k for labels in labelsets for k in labels})
    varying = [k for k in keys
               if len({labels.get(k) for labels in labelsets}) > 1]
    names = [_short_name(labels, varying, expr, len(labelsets)) for labels in labelsets]
    label_columns = [k for k in keys if k not in FRAME_COLUMNS]
    records = []
    for name, series in zip(names, result, strict=True):
        extra = [series["metric"].get(k) for k in label_columns]
        records.extend([_time(t), name, _float(v), *extra] for t, v in series["values"])
    frame = pd.DataFrame.from_records(records, columns=[*FRAME_COLUMNS, *label_columns])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def _short_name(labels: dict[str, str], varying: list[str], expr: str, count: int) -> str:
    """Name a series by what tells it apart; a lone series by its metric name or query."""
    if count == 1 or not varying:
        return labels.get("__name__") or expr or series_name(labels)
    parts = ",".join(f"{k}={labels.get(k, '')}" for k in varying if k != "__name__")
    if "__name__" in varying:
        return labels.get("__name__", "") + (f"{{{parts}}}" if parts else "")
    return parts


# -- durations ---------------------------------------------------------------------------------

# Steps a person reads easily on an axis; step_for picks the smallest one that is enough.
_NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600,
                 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)


def step_for(span: str | timedelta, points: int = 300) -> int:
    """A round step in seconds giving at most about `points` points over `span`.

    Few enough points to plot and fetch quickly, and a step a reader recognises (5m, 1h).
    """
    if points < 1:
        raise UsageError(f"points must be at least 1, not {points}")
    wanted = parse_range(span).total_seconds() / points
    for step in _NICE_STEPS_S:
        if step >= wanted:
            return step
    return math.ceil(wanted / 86400) * 86400


def _epoch(moment: datetime | float) -> float:
    if isinstance(moment, (int, float)):
        return float(moment)
    if moment.tzinfo is None:  # naive means UTC, as everywhere in the runbooks
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


def _parse_time(text: str | None) -> datetime | None:
    """Prometheus' RFC 3339 times (nanoseconds, `Z`); the zero time means never."""
    if not text or text.startswith("0001-01-01"):
        return None
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.floor("us").to_pydatetime()  # datetime holds microseconds


def _float(value: Any) -> float:
    """Prometheus sends values as strings ("1.5", "NaN", "+Inf")."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _first_line(value: object) -> str:
    text = str(value).strip()
    return secrets.mask(text.splitlines()[0]) if text else ""


# -- concepts resolved against Prometheus -----------------------------------------------------

@dataclass(frozen=True)
class Series:
    """A catalog concept found in Prometheus: the name held there and the job's matchers."""

    concept: str
    name: str  # the base name (histograms: without _bucket)
    kind: str
    matchers: str  # 'job="fraiseql",status="error"', ready for {...}
    vocabulary: str
    approximate: bool
    note: str

    def selector(self, suffix: str = "", extra: str = "") -> str:
        inner = ",".join(m for m in (self.matchers, extra) if m)
        return f"{self.name}{suffix}{{{inner}}}"

    @classmethod
    def find(cls, names: set[str], which: str, job: str) -> Series | None:
        """The first name of a concept that Prometheus holds for the job, in catalog order
        (`metrics.resolve` over the names), with the job's and the catalog's matchers."""
        res = metrics.resolve(names, which)
        if res is None:
            return None
        matchers = [f'job="{quote_label(job)}"'] + [
            f'{k}{op}"{quote_label(v)}"' for k, op, v in res.ref.matchers]
        return cls(res.concept.name, res.name, res.kind, ",".join(matchers), res.vocabulary,
                   res.approximate, res.note)


def quote_label(value: str) -> str:
    """A label value inside double quotes in PromQL."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
