"""Redis pre-flight (runbook §1.1 Caching): the CSRF state store and rate-limit backend.

Redis is optional for one instance and needed for several (shared CSRF state, rate limits).
FraiseQL's Redis rate limiter fails open: while Redis is down, nothing is rate limited, so an
unreachable Redis is a security finding as well as an availability one.
"""

from __future__ import annotations

from typing import Any

import redis

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status

FAIL_OPEN = ("FraiseQL's Redis-backed rate limiting fails open: while Redis is down, "
             "requests are not rate limited")


def connect(ctx: RunContext, timeout_s: float = thresholds.HTTP_TIMEOUT_S) -> redis.Redis:
    url = str(ctx.target.require("redis_url"))
    password = ctx.target.secret("redis_password")
    return redis.Redis.from_url(url, password=password, socket_timeout=timeout_s,
                                socket_connect_timeout=timeout_s, decode_responses=True)


def server_facts(client: redis.Redis) -> dict[str, Any]:
    client.ping()
    server = client.info("server")
    cluster = client.info("cluster")
    return {"version": server.get("redis_version"), "mode": server.get("redis_mode"),
            "cluster_enabled": bool(int(cluster.get("cluster_enabled", 0))),
            "uptime_s": server.get("uptime_in_seconds")}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


@check("redis.preflight")
def check_redis(ctx: RunContext) -> list[Finding]:
    """Reachable, version >= 6.0, cluster mode when several instances share it."""
    instances = len(ctx.target.instances)
    if not ctx.target.get("redis_url"):
        if instances > 1:
            return [ctx.record("redis.configured", Status.WARNING,
                               f"{instances} instances and no Redis: CSRF state and rate "
                               "limits are per instance", {"instances": instances},
                               "add a Redis (cluster mode for failover, §1.1) and redis_url")]
        return [ctx.record("redis.configured", Status.INFO,
                           "no Redis configured: optional for a single instance (§1.1), "
                           "which keeps CSRF state in memory", {"instances": instances})]
    findings = []
    try:
        with connect(ctx) as client:
            facts = server_facts(client)
    except (redis.RedisError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [
            ctx.record("redis.reachable", Status.CRITICAL, f"Redis unreachable: {message}",
                       {"error": type(exc).__name__},
                       "restore Redis; meanwhile rate limiting is not enforced"),
            ctx.record("redis.rate_limit_fail_open", Status.WARNING, FAIL_OPEN + " (now)",
                       {}, "watch request rates by IP until Redis is back"),
        ]
    findings.append(ctx.record("redis.reachable", Status.OK,
                               f"Redis {facts['version']} answers ({facts['mode']} mode)",
                               facts))
    minimum = ".".join(map(str, thresholds.REDIS_MIN_VERSION))
    if _version_tuple(str(facts["version"])) < thresholds.REDIS_MIN_VERSION:
        findings.append(ctx.record("redis.version", Status.CRITICAL,
                                   f"Redis {facts['version']} is below {minimum} (§1.1)",
                                   facts, f"upgrade Redis to {minimum} or later"))
    else:
        findings.append(ctx.record("redis.version", Status.OK,
                                   f"Redis {facts['version']} >= {minimum}", facts))
    if instances > 1 and not facts["cluster_enabled"]:
        findings.append(ctx.record("redis.cluster_mode", Status.WARNING,
                                   f"{instances} instances share a standalone Redis: it is a "
                                   "single point of failure", facts | {"instances": instances},
                                   "use Redis cluster mode (or Sentinel) for failover (§1.1)"))
    findings.append(ctx.record("redis.rate_limit_fail_open", Status.INFO, FAIL_OPEN,
                               {}, None))
    return findings
