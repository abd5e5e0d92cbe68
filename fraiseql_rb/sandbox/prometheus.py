"""Prometheus for the drill sandbox: its config, a week of backfilled history, start and stop.

Why a Prometheus at all: the monitoring and dashboard runbooks read rates, percentiles and
alert states from Prometheus, and the shipped alert rules must be seen loaded and evaluating
against the stand-in. Why a backfill: a Prometheus started seconds ago has no history, so a
"last 7 days" panel or a capacity trend would be empty. `backfill` writes a deterministic
week of the stand-in's own metric families (same names, types, buckets and job/instance
labels as the live scrape) with a diurnal traffic shape, and `promtool tsdb
create-blocks-from openmetrics` turns it into TSDB blocks before Prometheus starts.

Use: `configure` -> `backfill` -> `start` -> `wait_ready`; `stop` at the end. Secrets stay out
of everything written here: the scrape reads the metrics token from its file
(`credentials_file`), so neither prometheus.yml nor prometheus.log ever holds it.

The history has one point every `step_s` (5 minutes by default) and ends `GAP_S` before now,
so it cannot overlap what the live scrape appends; the live stand-in's counters start again
from 0, which rate() reads as an ordinary counter reset. Over the history, use rate windows of
at least two steps (`rate(x[15m])`); the live data is scraped every few seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.paths import PACKAGE_DIR

from .standin.metrics import _BUCKET_BOUNDS_US, _BUCKET_LABELS

JOB = "fraiseql"
SELF_JOB = "prometheus"
POSTGRES_JOB = "postgres"
CONFIG_FILE = "prometheus.yml"
DATA_DIR = "data"
LOG_FILE = "prometheus.log"
BACKFILL_INFO = "backfill.json"
RETENTION = "30d"
GAP_S = 300  # the history ends this long before now: no overlap with the live scrape
RULES_FILE = PACKAGE_DIR / "data" / "prometheus" / "fraiseql-alerts.yml"

# promtool (2.42) re-reads the whole input once per 2-hour block it writes: a week is 84
# blocks, and one 23 MB file took 5.9 s. Cutting the input into block-aligned chunks, each
# converted by its own promtool, makes the work linear in the input again and parallel
# (about 1.5 s for the default week: 107 series, 2,017 points each).
_BLOCK_S = 2 * 3600
_CHUNK_BLOCKS = 6
_PROMTOOL_TIMEOUT_S = 120

# The sandbox server's pool (manager.POOL_MAX, pool_min_size) and its traffic's operations
# (traffic.QUERIES: `{ __typename }` is sent without a name, so it is labelled by its field).
POOL_MIN, POOL_MAX = 2, 10
PEAK_RPS = 4.0
OPERATIONS = ("users", "posts", "__typename")
_OP_WEIGHTS = (4, 4, 1)
# Share of queries per latency bucket (the stand-in's 11 bounds, 1 ms .. 5 s, then beyond).
_LATENCY_MIX = {
    "users": (0.02, 0.48, 0.30, 0.13, 0.04, 0.02, 0.008, 0.002, 0, 0, 0, 0),
    "posts": (0.02, 0.43, 0.32, 0.15, 0.05, 0.02, 0.008, 0.002, 0, 0, 0, 0),
    "__typename": (0.93, 0.07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "database": (0.30, 0.55, 0.10, 0.04, 0.008, 0.002, 0, 0, 0, 0, 0, 0),
    "http": (0.01, 0.40, 0.33, 0.17, 0.06, 0.025, 0.004, 0.001, 0, 0, 0, 0),
}
# Counters the stand-in exports that sandbox traffic never moves; backfilled flat at 0 so
# that the history has the same series as the live scrape.
_QUIET_COUNTERS = (
    "fraiseql_rate_limit_redis_errors_total", "fraiseql_apq_hits_total",
    "fraiseql_apq_misses_total", "fraiseql_apq_stored_total",
    "fraiseql_multi_root_queries_total", "fraiseql_schema_reloads_total",
    "fraiseql_schema_reload_errors_total", "fraiseql_jwt_replay_rejected_total",
    "fraiseql_jwt_replay_cache_errors_total",
)


class PrometheusError(RunbookError):
    """The sandbox's Prometheus could not be configured, filled or started; one line why."""


def available() -> bool:
    """Whether this machine can run the sandbox's Prometheus (both binaries on PATH)."""
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"{name} is not installed (Debian: apt-get install prometheus)")
    return path


def _tail(path: Path, lines: int = 3) -> str:
    try:
        kept = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(kept[-lines:])[-500:]


# -- configuration ---------------------------------------------------------------------------

def configure(directory: Path, *, port: int, scrape_url: str, token_file: Path, ca_file: Path,
              rules_file: Path = RULES_FILE, scrape_interval_s: int = 5,
              postgres_exporter_url: str | Sequence[str] | None = None) -> Path:
    """Write `directory/prometheus.yml`: scrape the stand-in (job `fraiseql`, HTTPS with the
    sandbox CA, bearer token read from `token_file`), itself, optionally postgres_exporters
    (one URL, or several: the primary's and the replica's, all in job `postgres`), and
    evaluate `rules_file` at the scrape interval. Returns the config's path."""
    directory = Path(directory).absolute()
    url = urlsplit(scrape_url)
    if url.scheme not in ("http", "https") or not url.hostname or not url.port:
        raise PrometheusError(f"scrape URL {scrape_url!r} needs a scheme, a host and a port")
    for label, path in (("metrics token file", token_file), ("CA file", ca_file),
                        ("rules file", rules_file)):
        if not Path(path).is_file():
            raise PrometheusError(f"{label} {path} does not exist")
    if scrape_interval_s < 1:
        raise PrometheusError("the scrape interval must be at least 1 s")
    interval = f"{scrape_interval_s}s"
    scrape_configs: list[dict[str, object]] = [
        {
            "job_name": JOB,
            "scheme": url.scheme,
            "metrics_path": _metrics_path(url.path),
            # the token never sits in this file: Prometheus reads it at each scrape
            "authorization": {"type": "Bearer",
                              "credentials_file": str(Path(token_file).absolute())},
            "tls_config": {"ca_file": str(Path(ca_file).absolute())},
            "static_configs": [{"targets": [url.netloc]}],
        },
        # Prometheus' own metrics: rule evaluation failures and timings, for alert review.
        {"job_name": SELF_JOB, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
    ]
    exporters = ([postgres_exporter_url] if isinstance(postgres_exporter_url, str)
                 else list(postgres_exporter_url or []))
    if exporters:
        parsed = [urlsplit(u) for u in exporters]
        for raw, pg in zip(exporters, parsed, strict=True):
            if not pg.netloc:
                raise PrometheusError(f"postgres_exporter URL {raw!r} needs a host and a port")
        pg = parsed[0]
        scrape_configs.append({"job_name": POSTGRES_JOB, "scheme": pg.scheme or "http",
                               "metrics_path": _metrics_path(pg.path),
                               "static_configs": [{"targets": [p.netloc for p in parsed]}]})
    config = {
        "global": {"scrape_interval": interval,
                   "scrape_timeout": f"{min(scrape_interval_s, 10)}s",
                   "evaluation_interval": interval},
        "rule_files": [str(Path(rules_file).absolute())],
        "scrape_configs": scrape_configs,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    header = ("# Written by fraiseql-rb for the drill sandbox. No secret in here: the metrics\n"
              "# token is read from credentials_file at each scrape.\n")
    tmp = path.with_name(f".{CONFIG_FILE}.tmp")
    tmp.write_text(header + yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
    _check_config(path)
    return path


def _metrics_path(path: str) -> str:
    return path if path and path != "/" else "/metrics"


def _check_config(path: Path) -> None:
    """`promtool check config` (which also checks the rule files), when promtool is here."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0:
        detail = " | ".join(ln.strip() for ln in (result.stdout + result.stderr).splitlines()
                            if "FAILED" in ln or "error" in ln.lower())
        raise PrometheusError(f"promtool rejects {path}: {detail[-400:] or 'see promtool'}")


def _scrape_target(directory: Path, job: str = JOB) -> tuple[str, str]:
    """(job, instance) that the live scrape attaches, read back from prometheus.yml."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PrometheusError(f"no {CONFIG_FILE} in {directory}: run configure first")
    config = yaml.safe_load(path.read_text())
    for scrape in config.get("scrape_configs", []):
        if scrape.get("job_name") == job:
            return job, scrape["static_configs"][0]["targets"][0]
    raise PrometheusError(f"{path} has no scrape job {job!r}")


# -- backfill --------------------------------------------------------------------------------

@dataclass
class _Series:
    """One series' values at every step, plus its family's type for the OpenMetrics header."""

    family: str
    kind: str
    labels: tuple[tuple[str, str], ...]
    name: str
    values: list[float] = field(default_factory=list)


class _History:
    """The simulated week: a stand-in under diurnal traffic, sampled once per step."""

    def __init__(self, job: str, instance: str, seed: int) -> None:
        self.base = (("job", job), ("instance", instance))
        self.rng = random.Random(seed)
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = {}
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def _get(self, family: str, kind: str, name: str,
             labels: tuple[tuple[str, str], ...]) -> _Series:
        key = (name, labels)
        if key not in self.series:
            self.series[key] = _Series(family, kind, self.base + labels, name)
        return self.series[key]

    def gauge(self, name: str, value: float, labels: tuple[tuple[str, str], ...] = ()) -> None:
        self._get(name, "gauge", name, labels).values.append(value)

    def count(self, name: str, delta: float, labels: tuple[tuple[str, str], ...] = (),
              family: str | None = None, kind: str = "counter") -> float:
        """Add to a counter (which only ever grows) and record its new value."""
        key = (name, labels)
        total = self.counters.get(key, 0.0) + max(0.0, delta)
        self.counters[key] = total
        fam = family or (name.removesuffix("_total") if name.endswith("_total") else name)
        # OpenMetrics wants a counter's samples to end in _total; the v2 counters that do not
        # (fraiseql_cache_hits, ...) are declared `unknown`, which keeps their exact names.
        if kind == "counter" and not name.endswith("_total"):
            kind = "unknown"
        self._get(fam, kind, name, labels).values.append(total)
        return total

    def poisson(self, mean: float) -> int:
        """A seeded Poisson count: exact (Knuth) for small means, normal beyond 30."""
        if mean <= 0:
            return 0
        if mean < 30:
            limit, k, p = math.exp(-mean), 0, 1.0
            while True:
                p *= self.rng.random()
                if p <= limit:
                    return k
                k += 1
        return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))

    def split(self, n: int, mix: Sequence[float]) -> list[int]:
        """Spread n observations over the buckets by `mix`, stochastically rounded."""
        counts = [int(n * share + self.rng.random()) if share else 0 for share in mix]
        mode = max(range(len(mix)), key=lambda i: mix[i])
        counts[mode] = max(0, counts[mode] + n - sum(counts))
        while sum(counts) > n:  # rounding overshoot on tiny n
            i = max(range(len(counts)), key=lambda j: counts[j])
            counts[i] -= 1
        return counts

    def histogram(self, name: str, counts: Sequence[int],
                  labels: tuple[tuple[str, str], ...] = ()) -> tuple[int, float]:
        """Observe per-bucket counts into a cumulative histogram; returns (n, seconds)."""
        bounds = [b / 1_000_000 for b in _BUCKET_BOUNDS_US]
        lows = [0.0, *bounds]
        # a representative duration per bucket: inside it, jittered
        seconds = 0.0
        for i, n in enumerate(counts):
            if n:
                low = lows[i]
                high = bounds[i] if i < len(bounds) else bounds[-1] * 1.6
                seconds += n * (low + (high - low) * (0.35 + 0.3 * self.rng.random()))
        cumulative = 0
        for label, n in zip((*_BUCKET_LABELS, "+Inf"), counts, strict=True):
            cumulative += n  # the bucket counts every observation at or below its bound
            self.count(f"{name}_bucket", cumulative, (*labels, ("le", label)), family=name,
                       kind="histogram")
        n_total = sum(counts)
        self.count(f"{name}_sum", seconds, labels, family=name, kind="histogram")
        self.count(f"{name}_count", n_total, labels, family=name, kind="histogram")
        return n_total, seconds


def _load_factor(t: float) -> float:
    """Traffic relative to the weekday peak: low at 03:00 UTC, high mid-afternoon, and
    weekends at 60 %."""
    moment = datetime.fromtimestamp(t, tz=UTC)
    hour = moment.hour + moment.minute / 60
    daily = 0.25 + 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 3) / 24))
    weekend = 0.6 if moment.weekday() >= 5 else 1.0
    return daily * weekend


def _simulate(history: _History, times: Sequence[int], step_s: int,
              cost_metric: bool = True) -> None:
    rng = history.rng
    cost = {"users": 6, "posts": 6, "__typename": 1}
    queries_us = db_us = 0.0
    for t in times:
        load = _load_factor(t) * min(1.3, max(0.7, rng.gauss(1.0, 0.08)))
        n = history.poisson(PEAK_RPS * load * step_s)
        per_op = dict(zip(OPERATIONS, history.split(n, [w / sum(_OP_WEIGHTS)
                                                       for w in _OP_WEIGHTS]), strict=True))
        parse_err = history.poisson(n * 0.0003)
        validation_err = parse_err + history.poisson(n * 0.0007)
        successes = db_queries = lookups = 0
        exec_total = 0
        for op in OPERATIONS:
            m = per_op[op]
            exec_err = history.poisson(m * 0.002) if op != "__typename" else 0
            exec_err = min(exec_err, m)
            exec_total += exec_err
            ok = m - exec_err
            successes += ok
            db_queries += ok
            if op != "__typename":
                lookups += ok
            _, seconds = history.histogram("fraiseql_query_duration_seconds",
                                           history.split(m, _LATENCY_MIX[op]),
                                           (("operation", op),))
            queries_us += seconds * 1_000_000
            history.count("fraiseql_query_errors_total", exec_err, (("operation", op),))
        total = n + validation_err
        queries_error = exec_total + validation_err
        _, db_seconds = history.histogram("fraiseql_database_query_duration_seconds",
                                             history.split(lookups, _LATENCY_MIX["database"]))
        db_us += db_seconds * 1_000_000
        hit_ratio = min(0.98, max(0.6, rng.gauss(0.86, 0.03)))
        hits = round(lookups * hit_ratio)
        # requests besides GraphQL: health checks, readiness, the metrics scrape itself
        other = history.poisson(0.25 * step_s)
        http_n = total + other
        http_4xx = validation_err + history.poisson(0.001 * step_s)
        history.histogram("fraiseql_http_request_duration_seconds",
                          history.split(http_n, _LATENCY_MIX["http"]))
        qt = history.count("fraiseql_graphql_queries_total", total)
        history.count("fraiseql_graphql_queries_success", successes)
        history.count("fraiseql_graphql_queries_error", queries_error)
        history.gauge("fraiseql_graphql_query_duration_ms",
                      round(queries_us / qt / 1000, 3) if qt else 0.0)
        dbt = history.count("fraiseql_database_queries_total", db_queries)
        history.gauge("fraiseql_database_query_duration_ms",
                      round(db_us / dbt / 1000, 3) if dbt else 0.0)
        history.count("fraiseql_validation_errors_total", validation_err)
        history.count("fraiseql_parse_errors_total", parse_err)
        history.count("fraiseql_execution_errors_total", exec_total)
        history.count("fraiseql_http_requests_total", http_n)
        history.count("fraiseql_http_responses_2xx", http_n - http_4xx)
        history.count("fraiseql_http_responses_4xx", http_4xx)
        history.count("fraiseql_http_responses_5xx", 0)
        all_hits = history.count("fraiseql_cache_hits", hits)
        all_misses = history.count("fraiseql_cache_misses", lookups - hits)
        history.gauge("fraiseql_cache_hit_ratio",
                      round(all_hits / (all_hits + all_misses), 3)
                      if all_hits + all_misses else 0.0)
        for name in _QUIET_COUNTERS:
            history.count(name, 0)
        if cost_metric:  # releases up to v2.14.1 export no cost counter
            history.count("fraiseql_graphql_queries_cost_total",
                          sum(cost[op] * per_op[op] for op in OPERATIONS))
        for result in ("accepted", "rejected"):
            history.count("fraiseql_ws_connections_total", 0, (("result", result),))
            history.count("fraiseql_ws_subscriptions_total", 0, (("result", result),))
        # the pool: busy connections follow the load; it grows from its minimum on demand
        active = min(POOL_MAX, max(0, round(rng.gauss(load * 2.2, 0.6))))
        total_conns = min(POOL_MAX, max(POOL_MIN, active + max(0, round(rng.gauss(1, 0.7)))))
        history.gauge("fraiseql_db_pool_connections_total", total_conns)
        history.gauge("fraiseql_db_pool_connections_idle", total_conns - active)
        history.gauge("fraiseql_db_pool_connections_active", active)
        history.gauge("fraiseql_db_pool_requests_waiting", 0)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(round(value, 6))


def _openmetrics(series: Iterable[_Series], times: Sequence[int], first: int, last: int) -> str:
    """OpenMetrics text of the steps `first`..`last`-1: family by family, each series in time
    order, then `# EOF`."""
    by_family: dict[str, list[_Series]] = {}
    for s in series:
        by_family.setdefault(s.family, []).append(s)
    lines: list[str] = []
    for family, members in by_family.items():
        lines.append(f"# TYPE {family} {members[0].kind}")
        for s in members:
            head = s.name + "{" + ",".join(f'{k}="{v}"' for k, v in s.labels) + "} "
            lines.extend(f"{head}{_number(s.values[i])} {times[i]}" for i in range(first, last))
    lines.append("# EOF\n")
    return "\n".join(lines)


def backfill(directory: Path, *, days: int = 7, step_s: int = 300, seed: int = 42,
             now: float | datetime | None = None, cost_metric: bool = True) -> int:
    """Give the sandbox's Prometheus `days` of plausible history; returns the samples written.
    `cost_metric` False: no cost counter, as the emulated release (up to v2.14.1) exports none.

    Needs `configure` first (the job/instance labels come from its prometheus.yml) and must
    run before `start`. Same seed and `now`, same history. Writes `backfill.json` with what
    was done and how long it took. A data directory that already holds data (a sandbox
    brought up again) is left alone and 0 returned: a second history would interleave with
    the first and with what was scraped since, and counters would jump back and forth."""
    directory = Path(directory).absolute()
    job, instance = _scrape_target(directory)
    if days < 1 or step_s < 15:
        raise PrometheusError("backfill needs days >= 1 and a step of at least 15 s")
    promtool = _binary("promtool")
    data = directory / DATA_DIR
    if data.is_dir() and any(data.iterdir()):
        return 0
    began = time.perf_counter()
    moment = (now.timestamp() if isinstance(now, datetime)
              else float(now) if now is not None else time.time())
    end = int((moment - GAP_S) // step_s * step_s)
    times = list(range(end - days * 86400, end + 1, step_s))
    history = _History(job, instance, seed)
    _simulate(history, times, step_s, cost_metric)
    generated = time.perf_counter() - began

    data.mkdir(parents=True, exist_ok=True)
    converted = time.perf_counter()
    _create_blocks(promtool, list(history.series.values()), times, data)
    samples = len(history.series) * len(times)
    info = {"job": job, "instance": instance, "start": times[0], "end": times[-1],
            "step_s": step_s, "series": len(history.series), "samples": samples,
            "seed": seed, "generate_s": round(generated, 2),
            "promtool_s": round(time.perf_counter() - converted, 2)}
    (directory / BACKFILL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return samples


def _create_blocks(promtool: str, series: list[_Series], times: Sequence[int],
                   data: Path) -> None:
    """Convert the history into TSDB blocks under `data`: one OpenMetrics file per
    block-aligned chunk (see _CHUNK_BLOCKS), converted by parallel promtools."""
    span = _BLOCK_S * _CHUNK_BLOCKS
    bounds: list[int] = [0]  # step indexes where a new chunk starts
    for i in range(1, len(times)):
        if times[i] // span != times[i - 1] // span:
            bounds.append(i)
    bounds.append(len(times))
    with tempfile.TemporaryDirectory(prefix="backfill-", dir=data.parent) as tmp:
        jobs = []
        for index, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
            source = Path(tmp) / f"chunk-{index:03d}.om"
            source.write_text(_openmetrics(series, times, lo, hi))
            out = Path(tmp) / f"blocks-{index:03d}"
            out.mkdir()
            jobs.append((source, out))

        def convert(job: tuple[Path, Path]) -> None:
            source, out = job
            try:
                result = subprocess.run(
                    [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                     str(source), str(out)],
                    capture_output=True, text=True, timeout=_PROMTOOL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise PrometheusError(f"promtool took over {_PROMTOOL_TIMEOUT_S} s on "
                                      f"{source.name}") from None
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip().splitlines()
                raise PrometheusError(f"promtool could not create blocks from {source.name}: "
                                      f"{detail[-1] if detail else result.returncode}")

        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            list(pool.map(convert, jobs))
        for _, out in jobs:
            for block in out.iterdir():
                if block.is_dir():
                    os.replace(block, data / block.name)


# -- running ---------------------------------------------------------------------------------

def start(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Start Prometheus on 127.0.0.1:`port` with the config and data in `directory`, in its
    own session (a Ctrl-C in the caller does not reach it), logging to prometheus.log."""
    directory = Path(directory).absolute()
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise PrometheusError(f"no {CONFIG_FILE} in {directory}: run configure first")
    binary = _binary("prometheus")
    (directory / DATA_DIR).mkdir(parents=True, exist_ok=True)
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / DATA_DIR}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.retention.time={RETENTION}"]
    with open(directory / LOG_FILE, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=directory, start_new_session=True)


def wait_ready(port: int, timeout: float = 20, *, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    """Wait until `/-/ready` answers 200 (rules loaded, blocks opened, scraping begun)."""
    deadline = time.monotonic() + timeout
    where = f"; see {log}" if log else ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            last = f": {_tail(log)}" if log else ""
            raise PrometheusError(f"prometheus exited ({proc.returncode}){last}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise PrometheusError(f"prometheus on port {port} was not ready within {timeout:.0f} s"
                          f"{where}")


def _is_prometheus(pid: int) -> bool:
    """Guard against a reused pid: only signal a live process that runs prometheus."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return os.path.basename(cmdline.decode(errors="replace")) == "prometheus" and state != "Z"


def stop(pid: int | None, timeout: float = 10) -> bool:
    """Stop our Prometheus (SIGTERM, then SIGKILL after `timeout`); False if not running."""
    if not pid or not _is_prometheus(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _is_prometheus(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True
