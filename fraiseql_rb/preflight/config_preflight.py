"""Runbook §1 pre-flight, composed from the domain checks (config, tls, database, cache,
host) so that the config-preflight notebook stays one call per step."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fraiseql_rb.checks import config, tls
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import postgres


def config_path(ctx: RunContext, explicit: str | None = None) -> str | None:
    """The config file to check: the parameter, else the target's `config_path`."""
    return explicit or ctx.target.get("config_path")


def max_connections(ctx: RunContext) -> int | None:
    """PostgreSQL's usable connections, when the database answers; None otherwise."""
    try:
        info = postgres.server_info(ctx.target.database_url())
    except Exception:  # noqa: BLE001 - the pool rule then says it was not checked
        return None
    return info.max_connections


def check_config_file(ctx: RunContext, path: str | None = None) -> list[Finding]:
    """§1.2 "Verify configuration": the validator, with the pool checked against the live
    database's max_connections when it answers."""
    chosen = config_path(ctx, path)
    if not chosen:
        return [ctx.record("config.file", Status.UNKNOWN,
                           "no config file to check: pass config_path or set it in the "
                           "inventory", {}, "add config_path to the target")]
    return config.check_config(ctx, chosen, max_connections=max_connections(ctx))


def check_config_certificates(ctx: RunContext, path: str | None = None, *,
                              warning_days: float, critical_days: float) -> list[Finding]:
    """§1.2 `openssl x509 -in server.crt -text -noout`: the certificate and key the config
    names, for the host the inventory serves."""
    chosen = config_path(ctx, path)
    settings = config.settings_by_role(chosen) if chosen and Path(chosen).is_file() else {}
    if not settings.get("tls_enabled") or not settings.get("tls_cert"):
        return [ctx.record("tls.server.certificate", Status.INFO,
                           "the config does not enable TLS with a certificate; TLS may "
                           "terminate at the load balancer (check it there)",
                           {"config_path": chosen})]
    host = urlsplit(ctx.target.fraiseql_url).hostname
    return tls.check_certificate_file(
        ctx, settings["tls_cert"], settings.get("tls_key"), host=host,
        ca_bundle=ctx.target.get("ca_bundle"), warning_days=warning_days,
        critical_days=critical_days, name="server")


def check_served_tls(ctx: RunContext, path: str | None = None, *, warning_days: float,
                     critical_days: float) -> list[Finding]:
    """What clients get: the negotiated protocol against the configured minimum, and the
    certificate actually served (which may differ from the file after a botched renewal)."""
    chosen = config_path(ctx, path)
    settings = config.settings_by_role(chosen) if chosen and Path(chosen).is_file() else {}
    minimum = tls.normalise_protocol(str(settings.get("tls_min_version") or "1.2"))
    if tls.protocol_rank(minimum) < tls.protocol_rank("TLSv1.2"):
        minimum = "TLSv1.2"  # §1.1: the runbook's floor, whatever the config allows
    return tls.check_endpoint_tls(ctx, ctx.target.fraiseql_url, minimum=minimum,
                                  warning_days=warning_days, critical_days=critical_days,
                                  name="endpoint", ca_bundle=ctx.target.get("ca_bundle"))
