"""Runbook §6.1 "Horizontal Scaling": decide whether to add an instance, add it (or remove
one), prove it serves the same API, and register it.

§6.1 says when ("CPU > 70% sustained for 10min, Memory > 75% used, Connections > 80% pool
capacity, Query latency P95 > 2s, Disk > 80% used") and how (`docker run` a new instance,
`curl /health`, `lb-cli add-backend`, watch the balancer; `lb-cli remove-backend` and stop one
to scale down). Here:

- **the decision**: each trigger with its measured value and where it came from, from
  Prometheus history over `lookback` when Prometheus holds the series (CPU sustained: the
  lowest CPU of the window is above the line), else from samples taken now (this machine's
  /proc for the server's process found by `status_command`, two scrapes of /metrics
  `sample_interval_s` apart, the filesystems of the target's paths). What could not be
  measured is said (info), never counted as fine. Scaling out is recommended when a trigger
  fires; the decision is the `scale.decision` finding.
- **the rule for execute=True**: scaling out when a trigger fires needs execute=True;
  scaling out when none fires (ahead of a known peak, say) is the operator's call, so it
  also needs confirm = the target's name. Scaling in while a trigger fires removes capacity
  the triggers ask for, so it needs confirm too; otherwise execute=True suffices.
- **the budget, before anything starts**: every instance's pool (`pool_max` from
  /admin/v1/health/detailed, else the server config, else v2's default) plus the new one's
  (the same as `fraiseql_url`'s) must fit PostgreSQL's max_connections less the reserved
  slots (superuser_reserved_connections, and reserved_connections from PostgreSQL 16) and
  less the sessions other clients hold now (every client session that is not the server's
  role). Otherwise the change is refused (critical) and nothing starts.
- **the change**: the inventory's `scale_command` with `{direction}` = out and `{instance}`
  empty. Its contract: it starts one instance and prints the new instance's base URL as the
  last line of its output that is an http(s) URL (`https://10.0.0.7:8000`). The runbook then
  polls that URL's /health for up to `health_wait_s`, and runs deployment-verification's
  checks over the fleet with it (healthy, one version, one schema_hash, all pools within
  max_connections). An instance that never gets healthy, or that disagrees, is removed again
  (`scale_command` with `in` and its URL: the rollback).
- **registering it**: a copy of the inventory with the target's `instances` = the old list
  (or [fraiseql_url] when it had none) plus the new URL, written beside the inventory as
  `<inventory>.scaled-<UTC time>.toml` (never over it). Beside it because relative
  `*_file` secrets and paths resolve against the inventory's own directory, so the copy
  works as it is (`--inventory` it, or move it over the original after a look). The
  load-balancer step (§6.1 `lb-cli add-backend NAME URL`) is recorded as an action a person
  runs (executed=false, an info finding).
- **`direction=in`**: removes `instance` (default: the last listed instance that is not
  `fraiseql_url`; `fraiseql_url` itself is refused): `lb-cli remove-backend` is recorded
  first (take it out of rotation), then `scale_command` with `in` and its URL stops it (the
  server drains on SIGTERM), then the URL must stop answering and the others stay healthy,
  and the inventory copy lists the instances without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import shutil
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from fraiseql_rb.checks import change, config, host
from fraiseql_rb.checks import instances as fleet_checks
from fraiseql_rb.core import inventory, progress, secrets, thresholds, timespec
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import commands, metrics, postgres, prometheus, service

SIGNALS = ("cpu", "memory", "connections", "latency_p95", "disk")
DEFAULT_LOOKBACK = f"{int(thresholds.CPU_SUSTAINED_MIN)}m"  # §6.1 "sustained for 10min"
SUBQUERY_STEP = "30s"  # resolution of the sustained-CPU and memory subqueries
LB_ADD = "lb-cli add-backend {name} {url}"  # §6.1 step 3
LB_REMOVE = "lb-cli remove-backend {name}"  # §6.1 step 5
INVENTORY_SUFFIX = ".scaled-"  # <inventory>.scaled-<UTC time>.toml
_URL = re.compile(r"https?://\S+")
_COPY = re.compile(rf"{re.escape(INVENTORY_SUFFIX)}\d{{8}}T\d{{6}}Z(-\d+)?\.toml$")


# -- the fleet ------------------------------------------------------------------------------

def instance_table(ctx: RunContext) -> pd.DataFrame:
    """Start the pre-checks: every instance's /health and admin detail (deployment-
    verification's table: version, schema_hash, pool_max), shown."""
    change.phase(ctx, "pre-checks", "the fleet, the §6.1 triggers and PostgreSQL's "
                 "connection budget")
    return fleet_checks.instance_table(ctx)


@check("scale.fleet")
def check_fleet(ctx: RunContext, table: pd.DataFrame) -> Finding:
    """The instances behind the load balancer now: how many answer healthy. An unhealthy one
    is a warning (the new instance will not fix it), never a reason to refuse."""
    healthy = table[table["verdict"] == "ok"]["instance"].tolist() if len(table) else []
    bad = [r for r in table.itertuples() if r.verdict != "ok"]
    evidence = {"instances": table["instance"].tolist() if len(table) else [],
                "healthy": healthy, "unhealthy": [r.instance for r in bad]}
    if bad:
        return ctx.result(Status.WARNING, f"{len(healthy)} of {len(table)} instance(s) "
                          "healthy; not healthy: " + "; ".join(f"{r.instance}: {r.detail}"
                                                              for r in bad), evidence,
                          "run service-down on the unhealthy instance: more instances do "
                          "not mend a broken one", table=table)
    return ctx.result(Status.OK, f"{len(table)} instance(s), all healthy", evidence,
                      table=table)


def pool_sizes(ctx: RunContext, table: pd.DataFrame) -> list[tuple[str, int, str]]:
    """(instance, pool_max, where it came from) for each instance, as deployment-
    verification's database.pool_capacity reads them: admin API, else the server config,
    else v2's default (stated as assumed)."""
    from_config, config_source = config.pool_max(ctx.target.get("config_path"))
    out = []
    for row in table.itertuples():
        if row.pool_max is not None and not pd.isna(row.pool_max):
            out.append((row.instance, int(row.pool_max), "admin API"))
        elif from_config is not None:
            out.append((row.instance, int(from_config), config_source))
        else:
            out.append((row.instance, thresholds.V2_DEFAULT_POOL_MAX, "v2 default (assumed)"))
    return out


# -- the §6.1 triggers ----------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """One §6.1 trigger as measured: `value` None means it could not be measured (`note`
    says why). Shares are 0-1; latency in seconds."""

    signal: str
    value: float | None
    limit: float
    source: str
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def fires(self) -> bool:
        return self.value is not None and self.value > self.limit

    def shown(self, number: float | None = None) -> str:
        number = self.value if number is None else number
        if number is None:
            return "not measured"
        return f"{number:.3g} s" if self.signal == "latency_p95" else f"{number:.0%}"


_TRIGGER_TEXT = {
    "cpu": "CPU > {limit} sustained for the window",
    "memory": "memory > {limit} used",
    "connections": "connections > {limit} of pool capacity",
    "latency_p95": "query latency P95 > {limit}",
    "disk": "disk > {limit} used",
}


def judge_trigger(reading: Reading) -> tuple[Status, str]:
    """A trigger's verdict: warning when it fires (a §6.1 reason to scale), ok when measured
    below its line, info when not measured (said, never taken as fine)."""
    rule = _TRIGGER_TEXT[reading.signal].format(limit=reading.shown(reading.limit))
    note = f" ({reading.note})" if reading.note else ""
    if not reading.measured:
        return Status.INFO, f"§6.1 {rule}: not measured{note}"
    if reading.fires:
        return Status.WARNING, (f"§6.1 {rule}: fires at {reading.shown()} from "
                                f"{reading.source}{note}")
    return Status.OK, f"§6.1 {rule}: {reading.shown()} from {reading.source}{note}"


def decide(readings: Iterable[Reading], direction: str) -> dict[str, Any]:
    """The scaling decision from the triggers: recommended when any fires; `dangerous` is
    this runbook's rule for when execute=True also needs confirm (module docstring)."""
    readings = list(readings)
    fired = [r.signal for r in readings if r.fires]
    unmeasured = [r.signal for r in readings if not r.measured]
    dangerous = not fired if direction == "out" else bool(fired)
    return {"direction": direction, "fired": fired, "unmeasured": unmeasured,
            "measured": [r.signal for r in readings if r.measured],
            "recommended": bool(fired), "needs_confirm": dangerous}


@dataclass
class _Sources:
    """Where the triggers are read from, fetched once: Prometheus (its series names), and a
    sampling window (two /metrics scrapes and the server process's CPU time) when needed."""

    ctx: RunContext
    lookback: str
    sample_interval_s: float
    client: prometheus.PrometheusClient | None = None
    names: set[str] = dataclasses.field(default_factory=set)
    prometheus_note: str = "the target names no prometheus_url"
    window: dict[str, Any] | None = None

    def open(self) -> None:
        client = prometheus.from_target(self.ctx)
        if client is None:
            return
        try:
            self.names = set(client.label_values("__name__"))
        except prometheus.PrometheusError as exc:
            self.prometheus_note = f"Prometheus: {exc}"
            client.close()
            return
        self.client = client
        self.prometheus_note = "Prometheus holds no such series"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def scalar(self, expr: str) -> float | None:
        """One instant query's single value (None: no data, or NaN)."""
        assert self.client is not None
        found = self.client.query(expr)
        if not found or math.isnan(found[0].value):
            return None
        return float(found[0].value)

    def series(self, concept: str) -> prometheus.Series | None:
        return prometheus.Series.find(self.names, concept, prometheus.JOB) if self.names \
            else None

    def sampled(self) -> dict[str, Any]:
        """Two scrapes of fraiseql_url's /metrics and the server's CPU time, taken
        `sample_interval_s` apart, once per run."""
        if self.window is None:
            self.window = _sample_window(self.ctx, self.sample_interval_s)
        return self.window


def _cpu_ticks(pid: int) -> float | None:
    """utime + stime of a process in seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(ctx: RunContext) -> tuple[int | None, str]:
    """The server's pid from `status_command` ("Main PID: N") when it runs here."""
    if not ctx.target.get("status_command"):
        return None, "the target has no status_command to find the server's process"
    if not host.is_local(ctx.target.fraiseql_url):
        return None, "the server does not run on this machine"
    result = commands.run(ctx, "status_command", timeout_s=thresholds.TOOL_PROBE_TIMEOUT_S)
    pid = commands.parse_pid(result.stdout)
    if pid is None or not Path(f"/proc/{pid}/stat").is_file():
        return None, "status_command names no process running here"
    return pid, f"pid {pid} from status_command"


def _sample_window(ctx: RunContext, interval_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"interval_s": interval_s}
    pid, out["pid_source"] = server_pid(ctx)
    pages = []
    try:
        pages.append(metrics.scrape(ctx))
    except metrics.ScrapeError as exc:
        out["scrape_error"] = str(exc)
    began, ticks = time.monotonic(), _cpu_ticks(pid) if pid else None
    progress.pause(interval_s, "sampling the server for the §6.1 triggers")
    if pages:
        try:
            pages.append(metrics.scrape(ctx))
        except metrics.ScrapeError as exc:
            out["scrape_error"] = str(exc)
    after = _cpu_ticks(pid) if pid else None
    elapsed = time.monotonic() - began
    if ticks is not None and after is not None and elapsed > 0:
        cpus, cpu_source = host.cpu_count()
        out.update(cpu=(after - ticks) / elapsed / cpus, cpus=cpus, cpu_source=cpu_source,
                   pid=pid)
    out["pages"] = pages
    return out


def _cpu(src: _Sources, limit: float) -> Reading:
    if src.client is not None and "node_cpu_seconds_total" in src.names:
        busy = '(1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m])))'
        low = src.scalar(f"min_over_time({busy}[{src.lookback}:{SUBQUERY_STEP}])")
        if low is not None:
            return Reading("cpu", low, limit, f"Prometheus node_exporter, lowest over the "
                           f"last {src.lookback}", "the whole window above the line is "
                           "'sustained'")
    window = src.sampled()
    if "cpu" in window:
        note = ("below the line now, so not above it for the whole window"
                if window["cpu"] <= limit else
                f"above the line now; whether for the whole {src.lookback} is not known "
                "without history (node_exporter in Prometheus)")
        return Reading("cpu", window["cpu"], limit, f"the server process "
                       f"({window['pid_source']}) over {window['interval_s']:g} s, of "
                       f"{window['cpus']:g} CPU(s)", note)
    return Reading("cpu", None, limit, "", f"no node_cpu_seconds_total in Prometheus "
                   f"({src.prometheus_note}) and {window['pid_source']}")


def _memory_here() -> tuple[float, str]:
    """Used share of this machine's memory (its cgroup's limit when it has one)."""
    cgroup = host.CGROUP
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            return used / int(limit), "cgroup memory.current / memory.max"
    except (OSError, ValueError):
        pass
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) * 1024 if rest.split() else 0
    total = info["MemTotal"]
    return (total - info.get("MemAvailable", 0)) / total, "/proc/meminfo (MemTotal - " \
        "MemAvailable)"


def _memory(src: _Sources, limit: float) -> Reading:
    if src.client is not None and {"node_memory_MemAvailable_bytes",
                                   "node_memory_MemTotal_bytes"} <= src.names:
        used = ("(1 - sum(node_memory_MemAvailable_bytes) / "
                "sum(node_memory_MemTotal_bytes))")
        value = src.scalar(f"avg_over_time({used}[{src.lookback}:{SUBQUERY_STEP}])")
        if value is not None:
            return Reading("memory", value, limit, f"Prometheus node_exporter, mean over the "
                           f"last {src.lookback}")
    if not host.is_local(src.ctx.target.fraiseql_url):
        return Reading("memory", None, limit, "", "no node_memory_* in Prometheus "
                       f"({src.prometheus_note}) and the server is on another machine")
    value, how = _memory_here()
    return Reading("memory", value, limit, f"this machine now, {how}")


def _connections(src: _Sources, limit: float, sizes: list[tuple[str, int, str]]) -> Reading:
    capacity = sum(size for _, size, _ in sizes)
    if not capacity:
        return Reading("connections", None, limit, "", "no instance and no pool size known")
    s = src.series("pool_active")
    if src.client is not None and s is not None:
        active = src.scalar(f"sum(avg_over_time({s.selector()}[{src.lookback}]))")
        if active is not None:
            return Reading("connections", active / capacity, limit, f"Prometheus {s.name}, "
                           f"mean over the last {src.lookback}",
                           f"{active:.1f} active of {capacity} pooled")
    active_now, errors = 0.0, []
    for url, _, _ in sizes:
        try:
            value = metrics.value(metrics.scrape(src.ctx, url), "pool_active")
        except metrics.ScrapeError as exc:
            errors.append(str(exc))
            continue
        if value is None:
            errors.append(f"{url}: {metrics.unavailable('pool_active')}")
            continue
        active_now += value
    if errors:
        return Reading("connections", None, limit, "", "; ".join(errors))
    return Reading("connections", active_now / capacity, limit, "/metrics of every instance "
                   "now", f"{active_now:g} active of {capacity} pooled")


def _latency(src: _Sources, limit: float) -> Reading:
    s = src.series("query_duration")
    if src.client is not None and s is not None and s.kind == "histogram":
        p95 = src.scalar(f"histogram_quantile(0.95, sum by (le) "
                         f"(rate({s.selector('_bucket')}[{src.lookback}])))")
        if p95 is not None:
            return Reading("latency_p95", p95, limit, f"Prometheus {s.name}, the last "
                           f"{src.lookback}")
    window = src.sampled()
    pages = window.get("pages") or []
    if len(pages) < 2:
        return Reading("latency_p95", None, limit, "", window.get("scrape_error")
                       or "no /metrics scrapes")
    p95 = metrics.quantile_between(pages[0], pages[1], "query_duration", 0.95)
    if p95 is None:
        return Reading("latency_p95", None, limit, "", f"no query observed in the "
                       f"{window['interval_s']:g} s between two scrapes of /metrics")
    return Reading("latency_p95", p95, limit, f"two /metrics scrapes "
                   f"{window['interval_s']:g} s apart")


def _disk(src: _Sources, limit: float) -> Reading:
    target = src.ctx.target
    paths = [str(target.get(k)) for k in ("config_path", "backup_dir", "wal_archive_dir")
             if target.get(k) and Path(str(target.get(k))).exists()]
    if not paths and host.is_local(target.fraiseql_url):
        paths = ["/"]
    if not paths:
        return Reading("disk", None, limit, "", "none of the target's paths (config_path, "
                       "backup_dir, wal_archive_dir) is on this machine")
    worst: tuple[float, str] | None = None
    for path in paths:
        usage = shutil.disk_usage(path)
        share = usage.used / usage.total
        if worst is None or share > worst[0]:
            worst = (share, path)
    assert worst is not None
    return Reading("disk", worst[0], limit, f"the fullest filesystem of the target's paths "
                   f"now ({worst[1]})", f"looked at {', '.join(paths)}")


def _trigger(signal: str, measure: Any) -> Any:
    """A @check per trigger, recording judge_trigger's verdict with the reading."""

    @check(f"scale.{signal}")
    def one(ctx: RunContext, *args: Any) -> Finding:
        reading = measure(*args)
        status, summary = judge_trigger(reading)
        return ctx.result(status, summary, {**dataclasses.asdict(reading),
                                            "fires": reading.fires}, None
                          if status is not Status.WARNING else
                          "§6.1: add an instance (this runbook with -p execute true)")

    one.__name__ = f"check_{signal}"
    return one


check_cpu = _trigger("cpu", _cpu)
check_memory = _trigger("memory", _memory)
check_connections = _trigger("connections", _connections)
check_latency_p95 = _trigger("latency_p95", _latency)
check_disk = _trigger("disk", _disk)


def check_triggers(ctx: RunContext, table: pd.DataFrame, *,
                   lookback: str = DEFAULT_LOOKBACK,
                   cpu_warning: float = thresholds.CPU_USED.warning,
                   memory_warning: float = thresholds.MEMORY_USED.warning,
                   connections_warning: float = thresholds.POOL_OF_MAX_CONNECTIONS.warning,
                   latency_warning_s: float = thresholds.RESPONSE_TIME_MS.warning / 1000,
                   disk_warning: float = thresholds.DISK_USED.warning,
                   sample_interval_s: float = thresholds.DASHBOARD_SAMPLE_INTERVAL_S
                   ) -> list[Finding]:
    """The five §6.1 triggers (`scale.cpu`, `scale.memory`, `scale.connections`,
    `scale.latency_p95`, `scale.disk`), each with its value and source."""
    timespec.parse_range(lookback)  # a bad lookback stops here, before any query
    src = _Sources(ctx, str(lookback).strip(), float(sample_interval_s))
    src.open()
    try:
        sizes = pool_sizes(ctx, table)
        return [check_cpu(ctx, src, cpu_warning),
                check_memory(ctx, src, memory_warning),
                check_connections(ctx, src, connections_warning, sizes),
                check_latency_p95(ctx, src, latency_warning_s),
                check_disk(ctx, src, disk_warning)]
    finally:
        src.close()


def readings(ctx: RunContext) -> list[Reading]:
    """The triggers this run recorded, as Readings (an unrecorded or failed one: not
    measured)."""
    out = []
    for signal in SIGNALS:
        found = ctx.latest(f"scale.{signal}")
        ev = found.evidence if found is not None else {}
        if "limit" in ev:
            out.append(Reading(signal, ev.get("value"), ev["limit"], ev.get("source", ""),
                               ev.get("note", "")))
        else:
            why = found.summary if found is not None else "not checked"
            out.append(Reading(signal, None, math.nan, "", why))
    return out


@check("scale.decision")
def check_decision(ctx: RunContext, direction: str) -> Finding:
    """§6.1's "when to scale", as one verdict: the triggers in a table, what fired, what
    could not be measured, and what execute=True will need."""
    found = readings(ctx)
    decision = decide(found, direction)
    table = pd.DataFrame([{"trigger": r.signal, "value": r.shown(),
                           "limit": r.shown(r.limit) if not math.isnan(r.limit) else "",
                           "fires": r.fires if r.measured else None,
                           "source": r.source or "not measured", "note": r.note}
                          for r in found])
    unmeasured = (f"; not measured: {', '.join(decision['unmeasured'])}"
                  if decision["unmeasured"] else "")
    fired = ", ".join(f"{r.signal} {r.shown()}" for r in found if r.fires)
    confirm = f"-p execute true -p confirm {ctx.target_name}"
    if direction == "in":
        if decision["fired"]:
            return ctx.result(Status.WARNING, f"do not scale in: §6.1 triggers fire ({fired})"
                              f"{unmeasured}; removing an instance needs {confirm}",
                              decision, "scale in when the triggers are quiet", table=table)
        return ctx.result(Status.INFO, f"no §6.1 trigger fires{unmeasured}: an instance may "
                          "be removed (-p execute true)", decision, table=table)
    if decision["fired"]:
        return ctx.result(Status.WARNING, f"scale out recommended: §6.1 triggers fire "
                          f"({fired}){unmeasured}", decision,
                          "add an instance: rerun with -p execute true", table=table)
    return ctx.result(Status.INFO, f"scale out not needed by §6.1: no trigger fires"
                      f"{unmeasured}; adding one anyway (ahead of a known peak) needs "
                      f"{confirm}", decision, table=table)


# -- which instance goes (direction in) ---------------------------------------------------------

def removal_candidate(listed: list[str], primary: str, asked: str | None
                      ) -> tuple[str | None, str | None]:
    """(the URL to remove, None) or (None, why not): `asked` must be a listed instance and
    never `primary` (fraiseql_url); by default the last listed one that is not it."""
    primary = primary.rstrip("/")
    if asked:
        asked = asked.strip().rstrip("/")
        if asked == primary:
            return None, f"{asked} is fraiseql_url, the instance the target is known by: " \
                "scale in never removes it"
        if asked not in listed:
            return None, f"{asked} is not one of the target's instances " \
                f"({', '.join(listed)})"
        return asked, None
    others = [u for u in listed if u != primary]
    return (others[-1], None) if others else (None, None)


@check("scale.removal")
def check_removal(ctx: RunContext, direction: str, instance: str | None = None) -> Finding:
    """Which instance `direction=in` removes (module docstring); `out` removes none."""
    if direction != "in":
        return ctx.skip("direction out: no instance is removed")
    listed = ctx.target.instances
    chosen, refused = removal_candidate(listed, ctx.target.fraiseql_url, instance)
    evidence = {"instances": listed, "fraiseql_url": ctx.target.fraiseql_url,
                "asked": instance, "remove": chosen}
    if refused:
        return ctx.result(Status.CRITICAL, f"refused: {refused}", evidence,
                          "name an instance of the target's `instances` other than "
                          "fraiseql_url (-p instance URL)")
    if chosen is None:
        return ctx.result(Status.INFO, "nothing to remove: the target lists no instance "
                          "besides fraiseql_url", evidence | {"nothing": True})
    return ctx.result(Status.OK, f"{chosen} is the instance to remove ({len(listed) - 1} "
                      "will remain)", evidence)


def to_remove(ctx: RunContext) -> str | None:
    found = ctx.latest(check_removal.check_name)  # type: ignore[attr-defined]
    return found.evidence.get("remove") if found is not None else None


# -- the connection budget ------------------------------------------------------------------

BUDGET_SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved
"""


def connection_budget(max_connections: int, reserved: int, others: int, pools: list[int],
                      added: list[int] | None = None, removed: list[int] | None = None,
                      warning_fraction: float = thresholds.POOL_OF_MAX_CONNECTIONS.warning
                      ) -> dict[str, Any]:
    """Do the pools fit after the change? They may use max_connections less the reserved
    slots less what other clients hold now; `status` is critical when they do not fit
    (refuse), warning above `warning_fraction` of it (§6.1 80 %), else ok."""
    after = sum(pools) + sum(added or []) - sum(removed or [])
    available = max_connections - reserved - others
    share = after / available if available > 0 else math.inf
    status = (Status.CRITICAL if after > available else
              Status.WARNING if share > warning_fraction else Status.OK)
    return {"max_connections": max_connections, "reserved": reserved, "others": others,
            "available": available, "pools_now": sum(pools), "pools_after": after,
            "share_after": round(share, 3) if math.isfinite(share) else None,
            "fits": after <= available, "status": status.value,
            "warning_fraction": warning_fraction}


@check("scale.capacity")
def check_capacity(ctx: RunContext, table: pd.DataFrame, direction: str = "out") -> Finding:
    """All pools after the change against PostgreSQL's connection slots (module docstring):
    a new instance whose pool would not fit is refused before anything starts."""
    sizes = pool_sizes(ctx, table)
    role = postgres.url_user(str(ctx.target.get("database_url")))
    url = ctx.target.admin_database_url() or ctx.target.database_url()
    with postgres.connect(url) as conn:
        settings = postgres.one(conn, BUDGET_SQL)
        sessions = postgres.sessions(conn)
    others = [s for s in sessions if not postgres.is_server_session(s, role)
              and s.get("application") != postgres.APPLICATION_NAME]
    reserved = int(settings["superuser_reserved"]) + int(settings["reserved"])
    pools = [size for _, size, _ in sizes]
    if direction == "in":
        gone = to_remove(ctx)
        removed = [size for url_, size, _ in sizes if url_ == gone]
        budget = connection_budget(settings["max_connections"], reserved, len(others), pools,
                                   removed=removed)
    else:
        new = pools[0] if pools else thresholds.V2_DEFAULT_POOL_MAX
        budget = connection_budget(settings["max_connections"], reserved, len(others), pools,
                                   added=[new])
    evidence = {**budget, "direction": direction, "server_role": role,
                "pool_sizes": [{"instance": u, "pool_max": s, "source": w}
                               for u, s, w in sizes],
                "other_clients": sorted({f"{s.get('user')} ({s.get('application')})"
                                         for s in others})}
    summary = (f"{len(pools)} pool(s) = {budget['pools_now']} connections now, "
               f"{budget['pools_after']} after scaling {direction}, against {budget['available']}"
               f" available (max_connections {budget['max_connections']} less {reserved} "
               f"reserved less {len(others)} held by other clients)")
    if not budget["fits"]:
        return ctx.result(Status.CRITICAL, f"refused: {summary}: the new instance's pool "
                          "would not fit", evidence,
                          "raise max_connections (a restart), lower pool_max_size on every "
                          "instance, or put a pooler (PgBouncer) in front of PostgreSQL "
                          "before adding an instance")
    if budget["status"] == Status.WARNING.value:
        return ctx.result(Status.WARNING, f"{summary}: above {budget['warning_fraction']:.0%}"
                          , evidence, "§6.1: leave headroom for maintenance and other "
                          "clients; plan more max_connections or a pooler")
    return ctx.result(Status.OK, summary, evidence)


# -- the gate --------------------------------------------------------------------------------

def authorize(ctx: RunContext, direction: str) -> Finding:
    """The gate (checks/change.py): the budget (and for `in` the instance to remove) must
    pass; the rule of the module docstring says when confirm is needed as well."""
    found = ctx.latest(check_decision.check_name)  # type: ignore[attr-defined]
    needs_confirm = bool(found.evidence.get("needs_confirm")) if found is not None else True
    prechecks = ["scale.capacity"] if direction == "out" else ["scale.removal",
                                                                 "scale.capacity"]
    needed = direction == "out" or to_remove(ctx) is not None
    return change.gate(ctx, prechecks, dangerous=needs_confirm, needed=needed,
                       nothing_to_do="no instance besides fraiseql_url to remove")


# -- the change ------------------------------------------------------------------------------

def instance_url(lines: Iterable[str]) -> str | None:
    """The new instance's URL: the last output line that is an http(s) URL (the contract of
    scale_command out)."""
    for line in reversed([ln.strip() for ln in lines]):
        if _URL.fullmatch(line):
            return line.rstrip("/")
    return None


def backend_name(url: str) -> str:
    """A load-balancer backend name for an instance URL (`fraiseql-10-0-0-7-8000`)."""
    parts = urlsplit(url)
    return re.sub(r"[^A-Za-z0-9]+", "-", f"fraiseql-{parts.hostname}-{parts.port or ''}"
                  ).strip("-")


def _wait_healthy(ctx: RunContext, url: str, wait_s: float, poll_s: float = 1.0
                  ) -> tuple[Status, str, float]:
    """Poll `url`/health until healthy or `wait_s` passed (each answer printed)."""
    began = time.monotonic()
    with progress.waiting(f"waiting for {url}/health", wait_s), \
            service.client(ctx, timeout_s=min(5.0, max(1.0, poll_s)),
                           skip_unresponsive=False) as http:
        while True:
            status, summary = service.health_verdict(service.probe(http, "GET",
                                                                    f"{url}/health"))
            elapsed = round(time.monotonic() - began, 1)
            print(f"  {elapsed:5.1f} s  {status.upper():<8} {summary}", flush=True)
            if status is Status.OK or elapsed + poll_s > wait_s:
                return status, summary, elapsed
            time.sleep(poll_s)


@check("scale.change")
def make_change(ctx: RunContext, direction: str,
                health_wait_s: float = thresholds.SCALE_HEALTH_WAIT_S) -> Finding:
    """§6.1 steps 1-2 (out: start one, wait for its health) or step 5 (in: out of the load
    balancer first, then stop it). Without the gate's leave every command is recorded."""
    allowed = change.allowed(ctx)
    change.phase(ctx, "change", f"scale {direction}" + ("" if allowed else
                                                        ": recorded only, nothing runs"))
    if direction == "in":
        return _scale_in(ctx, allowed)
    outcome = change.run_command(ctx, "scale_command", "scale_out",
                                 values={"direction": "out", "instance": ""})
    if not outcome.executed and not outcome.missing:
        return ctx.result(Status.INFO, f"not run ({change.gate_outcome(ctx)}): "
                          f"{secrets.mask(outcome.command)}", outcome.evidence())
    if not outcome.ok:
        return change.command_failed(ctx, outcome, "scale_command out",
                                     "read its output above; nothing was registered")
    url = instance_url(outcome.output)
    evidence = {**outcome.evidence(), "instance": url}
    if url is None:
        return ctx.result(Status.CRITICAL, "scale_command out printed no instance URL as "
                          "its last URL line: the new instance cannot be verified or "
                          "registered", evidence, "find and stop the instance it started; "
                          "make scale_command print the new instance's URL last")
    print(f"waiting up to {health_wait_s:g} s for {url}/health", flush=True)
    status, summary, elapsed = _wait_healthy(ctx, url, health_wait_s)
    evidence.update(health=summary, waited_s=elapsed, healthy=status is Status.OK)
    if status is not Status.OK:
        return ctx.result(Status.CRITICAL, f"the new instance {url} is not healthy after "
                          f"{elapsed:g} s ({summary}): it will be removed (rollback)",
                          evidence, "read the new instance's log")
    return ctx.result(Status.OK, f"started {url}: healthy after {elapsed:g} s", evidence)


def _scale_in(ctx: RunContext, allowed: bool) -> Finding:
    url = to_remove(ctx)
    if url is None:
        return ctx.skip("no instance to remove")
    lb = LB_REMOVE.format(name=shlex.quote(backend_name(url)))
    ctx.action("load_balancer", lb, executed=False)
    print(f"manual step first: take {url} out of the load balancer: {lb}", flush=True)
    outcome = change.run_command(ctx, "scale_command", "scale_in",
                                 values={"direction": "in", "instance": url})
    evidence = {**outcome.evidence(), "instance": url, "load_balancer": lb}
    if not outcome.executed and not outcome.missing:
        return ctx.result(Status.INFO, f"not run ({change.gate_outcome(ctx)}): first {lb} "
                          f"(by hand), then {secrets.mask(outcome.command)}", evidence)
    if not outcome.ok:
        return change.command_failed(ctx, outcome, "scale_command in",
                                     f"{url} may still run: look at it before retrying")
    return ctx.result(Status.OK, f"stopped {url} (after {lb}, a manual step)", evidence)


def changed_url(ctx: RunContext) -> str | None:
    """The instance this run started (out) or stopped (in); None when nothing ran."""
    found = ctx.latest(make_change.check_name)  # type: ignore[attr-defined]
    if found is None or not found.evidence.get("executed"):
        return None
    return found.evidence.get("instance")


def _change_ok(ctx: RunContext) -> bool:
    found = ctx.latest(make_change.check_name)  # type: ignore[attr-defined]
    return found is not None and found.status is Status.OK and bool(
        found.evidence.get("executed"))


# -- verification ----------------------------------------------------------------------------

def _with_instances(ctx: RunContext, urls: list[str]) -> RunContext:
    """The same run (same findings log) over a target whose `instances` are `urls`, for
    deployment-verification's checks."""
    target = ctx.target
    scaled = inventory.Target(target.name, {**target.raw, "instances": urls}, target.base_dir)
    return dataclasses.replace(ctx, _target=scaled)


def instances_after(ctx: RunContext, direction: str) -> list[str]:
    """The fleet after the change: the listed instances (or [fraiseql_url]) plus the new
    one, or without the removed one."""
    url = changed_url(ctx)
    listed = list(ctx.target.instances)
    if url is None:
        return listed
    if direction == "in":
        return [u for u in listed if u != url]
    return [*listed, url] if url not in listed else listed


@check("scale.verify")
def verify(ctx: RunContext, direction: str) -> list[Finding] | Finding:
    """Deployment-verification's checks over the fleet after the change (`deploy.instances`:
    every instance healthy, `deploy.consistency`: one version and one schema_hash,
    `database.pool_capacity`: all pools within max_connections); for `in`, first that the
    removed URL no longer answers (`scale.removed`). Then this step's verdict."""
    if not _change_ok(ctx):
        return ctx.skip("no instance was added or removed")
    change.phase(ctx, "verification", "the fleet after scaling " + direction)
    found = []
    if direction == "in":
        found.append(check_removed(ctx))
    urls = instances_after(ctx, direction)
    after = _with_instances(ctx, urls)
    table = fleet_checks.instance_table(after)
    found.append(fleet_checks.check_instances(after, table))
    found.append(fleet_checks.check_consistency(after, table))
    found.append(fleet_checks.check_pool_capacity(after, table))
    bad = [f for f in found if f.status in (Status.CRITICAL, Status.UNKNOWN)]
    evidence = {"instances": urls, "failed": [f.check for f in bad]}
    if bad:
        found.append(ctx.result(Status.CRITICAL, "the fleet after scaling "
                                f"{direction} does not verify: "
                                + "; ".join(f"{f.check}: {f.summary}" for f in bad), evidence,
                                "read the failed checks" + (": the new instance is removed "
                                                            "again (rollback)"
                                                            if direction == "out" else "")))
    else:
        found.append(ctx.result(Status.OK, f"{len(urls)} instance(s) verified as "
                                "deployment-verification does: healthy, one version and "
                                "schema, pools within max_connections", evidence))
    return found


@check("scale.removed")
def check_removed(ctx: RunContext) -> Finding:
    """The removed instance's /health no longer answers."""
    url = changed_url(ctx)
    with service.client(ctx, skip_unresponsive=False) as http:
        probe = service.probe(http, "GET", f"{url}/health")
    if probe.reachable:
        return ctx.result(Status.CRITICAL, f"{url} still answers (HTTP {probe.status_code}) "
                          "after scale_command in", {"instance": url,
                                                     "http_status": probe.status_code},
                          "stop it by hand; keep it out of the load balancer")
    return ctx.result(Status.OK, f"{url} no longer answers ({probe.error})",
                      {"instance": url, "error": probe.error})


def verification_failed(ctx: RunContext) -> list[str]:
    """The verification checks of this run that failed (critical or unknown)."""
    found = ctx.latest(verify.check_name)  # type: ignore[attr-defined]
    if found is None or found.status not in (Status.CRITICAL, Status.UNKNOWN):
        return []
    return list(found.evidence.get("failed") or [verify.check_name])  # type: ignore[attr-defined]


# -- rollback --------------------------------------------------------------------------------

@check("scale.rollback")
def rollback(ctx: RunContext, direction: str) -> Finding:
    """A new instance that never got healthy, or that failed verification, is removed again:
    `scale_command` with `in` and its URL. Scaling in has no rollback (start one again with
    direction out)."""
    if direction != "out":
        return ctx.skip("scaling in has no rollback: scale out again if needed")
    found = ctx.latest(make_change.check_name)  # type: ignore[attr-defined]
    url = found.evidence.get("instance") if found is not None else None
    if found is None or not found.evidence.get("executed") or not url:
        return ctx.skip("no instance was started")
    unhealthy = found.status is not Status.OK
    failed = verification_failed(ctx)
    if not (unhealthy or failed):
        return ctx.skip("no rollback needed: the new instance verified")
    why = "it never answered healthy" if unhealthy else f"verification failed: " \
        f"{', '.join(failed)}"
    change.phase(ctx, "rollback", f"remove {url} again ({why})")
    outcome = change.run_command(ctx, "scale_command", "scale_in_rollback",
                                 values={"direction": "in", "instance": url})
    if not outcome.ok:
        return change.command_failed(ctx, outcome, f"the rollback (scale_command in {url})",
                                     f"stop {url} by hand and keep it out of the load "
                                     "balancer")
    return ctx.result(Status.WARNING, f"rolled back: {url} removed again because {why}",
                      {**outcome.evidence(), "instance": url, "reason": why,
                       "rolled_back": True}, "read the findings above before trying again")


# -- registering -------------------------------------------------------------------------------

_TABLE = re.compile(r"^\s*\[\s*(?P<name>[^\]]+?)\s*\]\s*(#.*)?$")


def _header_names(target: str) -> set[str]:
    return {f"targets.{target}", f'targets."{target}"', f"targets.'{target}'"}


def _bracket_depth(line: str) -> int:
    """[ minus ] outside strings and comments (for a multi-line `instances = [...]`)."""
    depth, quote = 0, ""
    for char in line:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
    return depth


def with_instances(text: str, target: str, urls: list[str]) -> str:
    """The inventory `text` with target's `instances` set to `urls` and nothing else
    changed (comments kept): the existing assignment replaced, or one added under the
    target's table. Checked by parsing both; a layout this cannot edit is a ValueError."""
    lines = text.splitlines(keepends=True)
    value = "instances = [" + ", ".join(f'"{u}"' for u in urls) + "]\n"
    start = next((i for i, ln in enumerate(lines) if (m := _TABLE.match(ln))
                  and m.group("name").replace(" ", "") in _header_names(target)), None)
    if start is None:
        raise ValueError(f"no [targets.{target}] table to edit")
    end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])
                or lines[i].lstrip().startswith("[[")), len(lines))
    at = next((i for i in range(start + 1, end)
               if re.match(r"^\s*instances\s*=", lines[i])), None)
    if at is None:
        edited = lines[:start + 1] + [value] + lines[start + 1:]
    else:
        stop, depth = at, _bracket_depth(lines[at])
        while depth > 0 and stop + 1 < end:
            stop += 1
            depth += _bracket_depth(lines[stop])
        edited = lines[:at] + [value] + lines[stop + 1:]
    result = "".join(edited)
    before = tomllib.loads(text)
    after = tomllib.loads(result)
    old = before.get("targets", {}).get(target, {})
    new = after.get("targets", {}).get(target, {})
    if (new.get("instances") != urls or {k: v for k, v in new.items() if k != "instances"}
            != {k: v for k, v in old.items() if k != "instances"}
            or {k: v for k, v in after.items() if k != "targets"}
            != {k: v for k, v in before.items() if k != "targets"}
            or {k for k in after.get("targets", {})} != {k for k in before.get("targets", {})}):
        raise ValueError("the edited inventory does not read back as the original with only "
                         "the instances changed")
    return result


def copy_path(original: Path, moment: datetime | None = None) -> Path:
    """Where the updated copy goes: beside the inventory (see the module docstring)."""
    stamp = (moment or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = _COPY.sub("", original.name)  # a copy of a copy is named after the original
    path = original.with_name(f"{base}{INVENTORY_SUFFIX}{stamp}.toml")
    count = 1
    while path.exists():  # two runs in one second: never overwrite the first one's copy
        count += 1
        path = original.with_name(f"{base}{INVENTORY_SUFFIX}{stamp}-{count}.toml")
    return path


@check("scale.register")
def register(ctx: RunContext, direction: str) -> Finding:
    """§6.1 step 3 (or 5): the inventory copy with the new list of instances, and the
    load-balancer step a person runs (recorded, not executed)."""
    url = changed_url(ctx)
    rolled = ctx.latest(rollback.check_name)  # type: ignore[attr-defined]
    failed = (not _change_ok(ctx) or verification_failed(ctx)
              or (rolled is not None and rolled.evidence.get("rolled_back")))
    original = inventory.locate(ctx.inventory_path)
    planned = (f"write a copy of {original.name} beside it with the target's instances "
               f"{'+' if direction == 'out' else '-'} the {'new' if direction == 'out' else ''}"
               " instance")
    if url is None or failed:
        if not change.allowed(ctx):
            ctx.action("register_inventory", planned, executed=False)
            if direction == "out":
                ctx.action("load_balancer", LB_ADD.format(name="<new instance>",
                                                         url="<its URL>"), executed=False)
        return ctx.skip("nothing to register: " + ("no change ran" if url is None else
                                                   "the change did not verify"))
    urls = instances_after(ctx, direction)
    path = copy_path(original)
    try:
        path.write_text(with_instances(original.read_text(), ctx.target_name, urls))
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        ctx.action("register_inventory", planned, executed=True,
                   result={"error": describe_error(exc)})
        return ctx.result(Status.CRITICAL, f"the inventory copy could not be written: "
                          f"{describe_error(exc)}", {"instances": urls},
                          f"add instances = {urls} to [targets.{ctx.target_name}] by hand")
    ctx.action("register_inventory", f"wrote {path}", executed=True,
               result={"instances": urls})
    evidence = {"inventory_copy": str(path), "instances": urls, "original": str(original)}
    if direction == "out":
        lb = LB_ADD.format(name=shlex.quote(backend_name(url)), url=shlex.quote(url))
        ctx.action("load_balancer", lb, executed=False)
        return ctx.result(Status.INFO, f"registered {url}: {path.name} lists {len(urls)} "
                          f"instances; manual step: add it to the load balancer: {lb}",
                          evidence | {"load_balancer": lb},
                          f"run `{lb}`, watch the balancer's stats (§6.1 step 4), then move "
                          f"{path.name} over {original.name}")
    return ctx.result(Status.INFO, f"{url} removed: {path.name} lists {len(urls)} "
                      f"instance(s)", evidence, f"move {path.name} over {original.name}")


# -- the change record ---------------------------------------------------------------------------

def outcome(ctx: RunContext) -> str:
    """The change record's outcome (checks/change.py OUTCOMES) from what this run did."""
    decided = change.gate_outcome(ctx) or "refused"
    if decided != "applied":
        return decided
    rolled = ctx.latest(rollback.check_name)  # type: ignore[attr-defined]
    if rolled is not None and rolled.evidence.get("rolled_back"):
        return "rolled-back"
    if rolled is not None and rolled.status is Status.CRITICAL:
        return "rollback-failed"
    registered = ctx.latest(register.check_name)  # type: ignore[attr-defined]
    if (not _change_ok(ctx) or verification_failed(ctx) or registered is None
            or registered.status is Status.CRITICAL):
        return "failed"
    return "applied"


def change_record(ctx: RunContext, direction: str, **parameters: Any) -> Finding:
    """The change record (checks/change.py) with this run's outcome."""
    url = changed_url(ctx) or to_remove(ctx)
    what = (f"scale out {ctx.target_name}: one more instance" if direction == "out" else
            f"scale in {ctx.target_name}: remove {url or 'no instance'}")
    return change.record(ctx, what, {"direction": direction, **parameters}, outcome(ctx))
