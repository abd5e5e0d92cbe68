"""``GET /health`` and ``GET /readiness`` (paths ``health_path``, ``readiness_path``):
routes/health.rs. Both probe the database; only its state decides the status code.

The ``observers`` block appears only while the ``observer-fail`` fault is set: the stand-in
runs no observer runtime, so the fault plays one that has stopped (``running: false``), which
makes the server ``degraded`` and still 200, as routes/health.rs ``determine_status`` does.
A ``foreign`` release (releases.py) answers only ``{"status": "ok"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..faults import int_setting
from ..guard import Request, Response

if TYPE_CHECKING:
    from ..app import App

DATABASE_TYPE = "PostgreSQL"
OBSERVER_EVENTS = 1284  # events the failed observer runtime reports having processed
OBSERVER_ERRORS = 3


def health(app: App, req: Request) -> Response:
    """200 ``healthy`` (``degraded`` with a failed observer), or 503 ``unhealthy`` when the
    database does not answer."""
    connected = app.db.reachable()
    if not app.release.v2_surface:
        return Response.json(200, {"status": "ok"}) if connected else Response.json(
            503, {"status": "unavailable"})
    pool = app.db.snapshot()
    observers = _failed_observers(app)
    status = "unhealthy" if not connected else "degraded" if observers else "healthy"
    body: dict[str, Any] = {
        "status": status,
        "database": {
            "connected": connected,
            "database_type": DATABASE_TYPE,
            "active_connections": pool.active,
            "idle_connections": pool.idle,
        },
        **({"observers": observers} if observers else {}),
        "version": app.release.version,
        "schema_hash": app.schema.content_hash,
    }
    return Response.json(200 if connected else 503, body)


def _failed_observers(app: App) -> dict[str, Any] | None:
    """The ``observers`` block of a stopped observer runtime while ``observer-fail`` is set."""
    flag = app.faults.current().get("observer-fail")
    if not isinstance(flag, dict):
        return None
    errors = int_setting(flag, "errors", OBSERVER_ERRORS, 1, 1_000_000)
    return {"running": False,
            "events_processed": int_setting(flag, "events_processed", OBSERVER_EVENTS, 0,
                                            1 << 40),
            "last_error": f"{errors} errors encountered"}


def readiness(app: App, req: Request) -> Response:
    """200 ``ready``, or 503 ``not_ready`` with the reason a load balancer logs."""
    if app.db.reachable():
        return Response.json(200, {"status": "ready"})
    return Response.json(503, {"status": "not_ready",
                               "reason": "Database connection unavailable"})
