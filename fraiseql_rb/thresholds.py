"""Default thresholds, each with the runbook section it comes from.

Checks read their limits from here (or from a notebook parameter that defaults to these),
never from literals in code, so a reviewer can see and argue with every number in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    warning: float
    critical: float
    unit: str
    source: str


RESPONSE_TIME_MS = Threshold(
    warning=2000, critical=5000, unit="ms",
    source="§6.1 scale up when P95 > 2 s; §3.2 HighQueryLatency at P99 > 5 s",
)
POOL_OF_MAX_CONNECTIONS = Threshold(
    warning=0.80, critical=1.0, unit="fraction of max_connections",
    source="§6.1 scale up above 80 % of capacity; beyond 100 % connections are refused",
)
POSTGRES_MIN_VERSION = Threshold(
    warning=11, critical=10, unit="major version",
    source="§1.1 PostgreSQL 10+ (SCRAM-SHA-256), 11+ recommended (SCRAM-SHA-256-PLUS)",
)

# Timeouts for diagnostics: a check must end even when its target hangs.
HTTP_TIMEOUT_S = 5.0
DB_CONNECT_TIMEOUT_S = 5
DB_STATEMENT_TIMEOUT_MS = 10_000
# A request that timed out is re-tried as a bare hello (a malformed HTTP request line, an
# SSLRequest) that any live server answers at once; silence for this long means the endpoint
# is hung, and the run skips it from then on (fraiseql_rb.reachability).
HUNG_CONFIRM_S = 2.0
# FraiseQL v2's pool_max_size when neither the admin API nor the config says otherwise.
V2_DEFAULT_POOL_MAX = 20

# §1.1 compute: "Minimum: 2 vCPU, 4GB RAM", "Recommended: 4 vCPU, 8GB RAM" (critical below the
# minimum, warning below the recommendation; warning and critical read as lower bounds here).
HOST_CPUS = Threshold(warning=4, critical=2, unit="vCPU", source="§1.1 compute")
HOST_MEMORY_GB = Threshold(warning=8, critical=4, unit="GB", source="§1.1 compute")
DISK_USED = Threshold(warning=0.80, critical=0.90, unit="fraction used",
                      source="§6.1 scale up when disk > 80 % used; 90 % leaves no room")
# §1.1 Caching: Redis 6.0+
REDIS_MIN_VERSION = (6, 0)

# TLS (fraiseql_rb.tls).
CERT_EXPIRY_DAYS = Threshold(
    warning=21, critical=7, unit="days",
    source="§8.1 weekly certificate-expiry review: warn three reviews ahead; critical when the "
           "next weekly review would come too late",
)
# §1.1 load balancer "TLS 1.2+"; §1.2 `min_tls_version = "1.2"`.
TLS_MIN_VERSION = "TLSv1.2"
# Smallest keys current TLS clients accept (OpenSSL security level 2, CA/Browser Forum).
RSA_MIN_BITS = 2048
EC_MIN_BITS = 256
# §5.1 "Full backup (daily, 02:00 UTC)": a day plus slack for a slow dump.
BACKUP_MAX_AGE_HOURS = 26.0

# §6.1 "When to Scale Up" (capacity planning, fraiseql_rb.capacity). Latency (P95 > 2 s) is
# RESPONSE_TIME_MS, connections (> 80 % of pool capacity) POOL_OF_MAX_CONNECTIONS and disk
# (> 80 % used) DISK_USED above. The runbook gives one number each; critical is where no
# headroom is left for a spike while the new instance starts.
CPU_USED = Threshold(warning=0.70, critical=0.90, unit="fraction of CPU",
                     source="§6.1 scale up when CPU > 70 % sustained for 10 min")
CPU_SUSTAINED_MIN = 10  # §6.1 "sustained for 10min": shorter bursts are not a reason to scale
MEMORY_USED = Threshold(warning=0.75, critical=0.90, unit="fraction of memory",
                        source="§6.1 scale up when memory > 75 % used")
# The five §6.1 signals by name, for dashboards that walk all of them.
SCALE_UP = {
    "cpu": CPU_USED,
    "memory": MEMORY_USED,
    "connections": POOL_OF_MAX_CONNECTIONS,
    "latency_p95": RESPONSE_TIME_MS,
    "disk": DISK_USED,
}

# §3.2 alert thresholds the dashboards draw (the shipped rules file holds the same numbers).
CACHE_HIT_RATIO_MIN = 0.7  # LowCacheHitRatio: fraiseql_cache_hit_ratio < 0.7 for 10m
POOL_ACTIVE_SHARE_MAX = 0.9  # ConnectionPoolNearCapacity: 45 active of a 50-connection pool
DB_ERRORS_PER_S_MAX = 10.0  # HighDatabaseErrorRate: more than 10 errors/s for 5m
