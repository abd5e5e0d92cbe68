"""Host sizing (runbook §1.1 compute, §6.1 disk) of the machine this runbook runs on.

Container limits win over the machine's totals: a 64-core host with `cpu.max` of two CPUs
gives FraiseQL two, so we read cgroup v2 limits before /proc.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status

CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class HostFacts:
    cpus: float
    cpu_source: str
    memory_bytes: int
    memory_source: str


def cpu_count() -> tuple[float, str]:
    """CPUs available to this process: cgroup quota, else affinity, else the machine."""
    quota = CGROUP / "cpu.max"
    try:
        limit, period = quota.read_text().split()
        if limit != "max":
            return round(int(limit) / int(period), 2), "cgroup cpu.max"
    except (OSError, ValueError):
        pass
    try:
        return float(len(os.sched_getaffinity(0))), "sched_getaffinity"
    except AttributeError:  # pragma: no cover - not Linux
        return float(os.cpu_count() or 1), "os.cpu_count"


def memory_total() -> tuple[int, str]:
    """Memory available: cgroup memory.max when set, else MemTotal from /proc/meminfo."""
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
            break
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max" and 0 < int(limit) < total:
            return int(limit), "cgroup memory.max"
    except (OSError, ValueError):
        pass
    return total, "/proc/meminfo MemTotal"


def process_memory(pid: int) -> dict[str, int]:
    """VmRSS and its split (RssAnon = heap and stacks, RssFile, RssShmem), VmHWM, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM") and rest.strip():
            out[key] = int(rest.split()[0]) * 1024
    if "VmRSS" not in out:
        raise RuntimeError(f"/proc/{pid}/status has no VmRSS (a kernel thread?)")
    return out


def facts() -> HostFacts:
    cpus, cpu_source = cpu_count()
    memory, memory_source = memory_total()
    return HostFacts(cpus, cpu_source, memory, memory_source)


def is_local(url: str) -> bool:
    """Does `url` point at this machine? Host sizing only means something there."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    local = {"127.0.0.1", "::1"}
    with contextlib.suppress(socket.gaierror):
        local |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in local
               for a in addresses)


@check("host.sizing")
def check_sizing(ctx: RunContext, *, min_cpus: float = thresholds.HOST_CPUS.critical,
                 recommended_cpus: float = thresholds.HOST_CPUS.warning,
                 min_memory_gb: float = thresholds.HOST_MEMORY_GB.critical,
                 recommended_memory_gb: float = thresholds.HOST_MEMORY_GB.warning) -> Finding:
    """§1.1: minimum 2 vCPU / 4 GB (critical below), recommended 4 vCPU / 8 GB."""
    url = ctx.target.fraiseql_url
    if not is_local(url):
        return ctx.result(Status.UNKNOWN,
                          f"the FraiseQL host ({urlsplit(url).hostname}) is not this machine, "
                          "so its CPUs and memory cannot be read from here",
                          {"fraiseql_url": url},
                          "run this runbook on the FraiseQL host, or read node_exporter's "
                          "node_cpu_seconds_total and node_memory_MemTotal_bytes")
    host = facts()
    memory_gb = host.memory_bytes / 2**30
    evidence = {"cpus": host.cpus, "cpu_source": host.cpu_source,
                "memory_gb": round(memory_gb, 1), "memory_source": host.memory_source,
                "minimum": f"{min_cpus:g} vCPU / {min_memory_gb:g} GB",
                "recommended": f"{recommended_cpus:g} vCPU / {recommended_memory_gb:g} GB"}
    summary = f"{host.cpus:g} vCPU and {memory_gb:.1f} GB"
    if host.cpus < min_cpus or memory_gb < min_memory_gb:
        return ctx.result(Status.CRITICAL,
                          f"{summary}: below the §1.1 minimum of {min_cpus:g} vCPU / "
                          f"{min_memory_gb:g} GB", evidence, "move to a larger instance")
    if host.cpus < recommended_cpus or memory_gb < recommended_memory_gb:
        return ctx.result(Status.WARNING,
                          f"{summary}: meets the minimum, below the recommended "
                          f"{recommended_cpus:g} vCPU / {recommended_memory_gb:g} GB", evidence,
                          "size up for production load (§1.1 recommended)")
    return ctx.result(Status.OK, f"{summary}: at or above the recommended size",
                      evidence)


@check("host.disk")
def check_disk(ctx: RunContext, paths: list[str] | None = None, *,
               warning_fraction: float = thresholds.DISK_USED.warning,
               critical_fraction: float = thresholds.DISK_USED.critical) -> Finding:
    """§6.1: scale when a disk is more than 80 % used. Checks the paths the target uses."""
    wanted = list(paths or [])
    for key in ("backup_dir", "wal_archive_dir", "config_path"):
        if ctx.target.get(key):
            wanted.append(ctx.target.get(key))
    wanted = wanted or ["/"]
    rows, seen = [], set()
    for raw in wanted:
        path = Path(raw)
        while not path.exists() and path != path.parent:
            path = path.parent
        device = path.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        rows.append({"path": str(raw), "used_fraction": round(usage.used / usage.total, 3),
                     "free_gb": round(usage.free / 2**30, 1),
                     "total_gb": round(usage.total / 2**30, 1)})
    table = pd.DataFrame(rows)
    worst = max(rows, key=lambda r: r["used_fraction"])
    evidence = {"filesystems": rows, "warning_fraction": warning_fraction,
                "critical_fraction": critical_fraction}
    summary = (f"fullest filesystem ({worst['path']}) is {worst['used_fraction']:.0%} used, "
               f"{worst['free_gb']} GB free")
    if worst["used_fraction"] > critical_fraction:
        return ctx.result(Status.CRITICAL, summary, evidence,
                          "free space now: old backups, WAL archive, logs", table=table)
    if worst["used_fraction"] > warning_fraction:
        return ctx.result(Status.WARNING, summary, evidence,
                          "plan more disk (§6.1: > 80 % used)", table=table)
    return ctx.result(Status.OK, summary, evidence, table=table)
