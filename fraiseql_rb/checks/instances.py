"""Every instance of a target (runbook §2.2 deployment verification, §10 checklist): each one
healthy, all on one build and one schema, and their pools together within PostgreSQL's
max_connections."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fraiseql_rb.checks import config
from fraiseql_rb.core import thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import postgres
from fraiseql_rb.targets.service import client, health_verdict, probe


def instance_table(ctx: RunContext) -> pd.DataFrame:
    """One /health (and, with the admin token, /admin/v1/health/detailed) per instance."""
    token = ctx.target.admin_token()
    rows = []
    with client(ctx) as http:
        for url in ctx.target.instances:
            health = probe(http, "GET", f"{url}/health")
            status, summary = health_verdict(health)
            body = health.body if isinstance(health.body, dict) else {}
            detail: dict[str, Any] = {}
            if token and health.reachable:
                admin = probe(http, "GET", f"{url}/admin/v1/health/detailed", token=token)
                if admin.status_code == 200 and isinstance(admin.body, dict):
                    detail = admin.body
            rows.append({
                "instance": url, "verdict": status.value, "health": body.get("status"),
                "http_status": health.status_code, "version": body.get("version"),
                "schema_hash": body.get("schema_hash"), "pool_max": detail.get("pool_max"),
                "uptime_secs": detail.get("uptime_secs"), "elapsed_ms": health.elapsed_ms,
                "detail": summary,
            })
    return pd.DataFrame(rows)


@check("deploy.instances")
def check_instances(ctx: RunContext, table: pd.DataFrame) -> Finding:
    """Every instance behind the load balancer answers healthy."""
    bad = table[table["verdict"] != "ok"]
    evidence = {"instances": len(table), "unhealthy": bad["instance"].tolist()}
    if len(bad) == 0:
        return ctx.result(Status.OK,
                          f"all {len(table)} instances healthy", evidence, table=table)
    return ctx.result(Status.CRITICAL,
                      f"{len(bad)} of {len(table)} instances not healthy: "
                      + "; ".join(f"{r.instance}: {r.detail}" for r in bad.itertuples()),
                      evidence, "keep them out of the load balancer; run service-down on each",
                      table=table)


@check("deploy.consistency")
def check_consistency(ctx: RunContext, table: pd.DataFrame) -> Finding:
    """All instances on one version and one schema_hash (a mixed fleet serves two APIs).

    Each is compared only where instances report it: an older or foreign server may answer
    /health without `version` or `schema_hash`, which is not a disagreement."""
    answered = table[table["http_status"].notna()] if "http_status" in table else table
    versioned = answered[answered["version"].notna()]
    versions = sorted({str(v) for v in versioned["version"]})
    hashes = sorted({h for h in answered["schema_hash"] if isinstance(h, str) and h})
    hashed = int(sum(isinstance(h, str) and bool(h) for h in answered["schema_hash"]))
    evidence = {"versions": versions, "schema_hashes": hashes, "answering": len(answered),
                "reporting_version": len(versioned), "reporting_schema_hash": hashed}
    if answered.empty:
        return ctx.result(Status.UNKNOWN,
                          "no instance answered, so versions cannot be compared", evidence,
                          "run service-down on the instances")
    if len(hashes) > 1:
        return ctx.result(Status.CRITICAL,
                          f"instances serve {len(hashes)} different schemas", evidence,
                          "finish or roll back the deployment so every instance has one schema")
    if len(versions) > 1:
        return ctx.result(Status.WARNING,
                          f"instances run {len(versions)} versions: {', '.join(versions)}",
                          evidence, "finish the rollout (or roll back) to a single version")
    schema = (f", schema {hashes[0][:12]}… on the {hashed} reporting one"
              if hashes else "")
    if versioned.empty:
        return ctx.result(Status.INFO,
                          f"all {len(answered)} answering instance(s) do not report a version "
                          f"in /health, so versions cannot be compared{schema}", evidence,
                          "compare the builds by hand (image tag, package version) or upgrade "
                          "to a release whose /health reports its version")
    missing = len(answered) - len(versioned)
    partly = f" ({missing} more answer without a version)" if missing else ""
    return ctx.result(Status.OK,
                      f"{len(versioned)} instances on version {versions[0]}{partly}"
                      + (f", schema {hashes[0][:12]}…" if hashes else ""), evidence)


@check("database.pool_capacity")
def check_pool_capacity(ctx: RunContext, table: pd.DataFrame,
                        warning_fraction: float = thresholds.POOL_OF_MAX_CONNECTIONS.warning
                        ) -> Finding:
    """Σ pool_max over instances against max_connections less the superuser reserve."""
    info = postgres.server_info(ctx.target.database_url())
    available = info.max_connections - info.reserved_connections
    from_config, config_source = config.pool_max(ctx.target.get("config_path"))
    sizes, sources = [], []
    for row in table.itertuples():
        if pd.notna(row.pool_max):
            sizes.append(int(row.pool_max))
            sources.append("admin API")
        elif from_config is not None:
            sizes.append(from_config)
            sources.append(config_source)
        else:
            sizes.append(thresholds.V2_DEFAULT_POOL_MAX)
            sources.append("v2 default (assumed)")
    total = sum(sizes)
    evidence = {"instances": len(sizes), "pool_sizes": sizes, "sources": sorted(set(sources)),
                "total_pool": total, "max_connections": info.max_connections,
                "reserved_connections": info.reserved_connections,
                "available": available, "in_use_now": info.connections}
    summary = (f"{len(sizes)} instance(s) × pool = {total} connections against "
               f"{available} available (max_connections {info.max_connections} less "
               f"{info.reserved_connections} reserved)")
    if total > available:
        return ctx.result(Status.CRITICAL, summary, evidence,
                          "lower pool_max_size or raise max_connections: at full load "
                          "connections will be refused")
    if total > warning_fraction * available:
        return ctx.result(Status.WARNING, summary, evidence,
                          f"pools exceed {warning_fraction:.0%} of capacity (§6.1); leave "
                          "headroom for maintenance and other clients")
    return ctx.result(Status.OK, summary, evidence)
