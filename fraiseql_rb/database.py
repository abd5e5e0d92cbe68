"""Database checks over the target's `database_url`, read-only (see `postgres`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import postgres, thresholds
from .context import RunContext, check
from .findings import Finding, Status


@check("database.reachable")
def check_reachable(ctx: RunContext) -> Finding:
    """§1.2 `psql ... -c "SELECT 1"`, as the application role the server uses."""
    url = ctx.target.database_url()
    try:
        info = postgres.server_info(url)
    except postgres.ConnectionFailed as exc:
        return ctx.record("database.reachable", Status.CRITICAL,
                          f"cannot connect to PostgreSQL as the application role: {exc}",
                          {"database": postgres.url_database(url), "error": str(exc)},
                          "run the database-unavailable playbook")
    evidence = {"database": info.database, "user": info.user, "connect_ms": info.connect_ms,
                "ssl": info.ssl, "connections": info.connections,
                "max_connections": info.max_connections}
    return ctx.record("database.reachable", Status.OK,
                      f"connected to {info.database} as {info.user} in {info.connect_ms} ms"
                      f"{' over TLS' if info.ssl else ''}", evidence)


@check("database.version")
def check_version(ctx: RunContext,
                  minimum: int = int(thresholds.POSTGRES_MIN_VERSION.critical),
                  recommended: int = int(thresholds.POSTGRES_MIN_VERSION.warning)) -> Finding:
    """§1.1: PostgreSQL 10+ for SCRAM-SHA-256, 11+ for SCRAM-SHA-256-PLUS."""
    info = postgres.server_info(ctx.target.database_url())
    evidence = {"version": info.version, "major": info.major, "minimum": minimum,
                "recommended": recommended}
    if info.major < minimum:
        return ctx.record("database.version", Status.CRITICAL,
                          f"PostgreSQL {info.major} is below the supported {minimum}", evidence,
                          "upgrade PostgreSQL before deploying FraiseQL")
    if info.major < recommended:
        return ctx.record("database.version", Status.WARNING,
                          f"PostgreSQL {info.major}: SCRAM-SHA-256-PLUS needs {recommended}+",
                          evidence, "plan an upgrade to PostgreSQL 11 or later")
    return ctx.record("database.version", Status.OK, f"PostgreSQL {info.major}", evidence)


@check("database.role_grants")
def check_role_grants(ctx: RunContext) -> Finding:
    """§2.1 step 1: CONNECT on the database, USAGE on public, ALL on its tables."""
    url = ctx.target.database_url()
    role = postgres.url_user(url)
    with postgres.connect(url) as conn:
        grants = postgres.role_grants(conn, role)
    missing = grants["missing_table_privileges"]
    table = pd.DataFrame(missing) if missing else None
    evidence: dict[str, Any] = {
        "role": role, "connect": grants["can_connect"], "schema_usage": grants["schema_usage"],
        "tables": grants["tables"], "missing_table_privileges": len(missing),
    }
    if not grants["can_connect"] or not grants["schema_usage"]:
        lacking = [name for name, ok in (("CONNECT on the database", grants["can_connect"]),
                                         ("USAGE on schema public", grants["schema_usage"]))
                   if not ok]
        return ctx.record("database.role_grants", Status.CRITICAL,
                          f"role {role} lacks {' and '.join(lacking)}", evidence,
                          "apply the grants of runbook §2.1 step 1", table=table)
    if missing:
        tables = sorted({m["table"] for m in missing})
        return ctx.record("database.role_grants", Status.WARNING,
                          f"role {role} lacks {len(missing)} table privileges on "
                          f"{len(tables)} tables", evidence | {"tables_affected": tables[:20]},
                          "GRANT ALL ON ALL TABLES IN SCHEMA public TO the role (§2.1 step 1)",
                          table=table)
    return ctx.record("database.role_grants", Status.OK,
                      f"role {role} has CONNECT, USAGE on public and ALL on "
                      f"{grants['tables']} tables", evidence)
