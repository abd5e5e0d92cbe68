"""``GET /health`` and ``GET /readiness`` (paths ``health_path``, ``readiness_path``):
routes/health.rs. Both probe the database; only its state decides the status code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import VERSION
from ..guard import Request, Response

if TYPE_CHECKING:
    from ..app import App

DATABASE_TYPE = "PostgreSQL"


def health(app: App, req: Request) -> Response:
    """200 ``healthy``, or 503 ``unhealthy`` when the database does not answer."""
    connected = app.db.reachable()
    pool = app.db.snapshot()
    body = {
        "status": "healthy" if connected else "unhealthy",
        "database": {
            "connected": connected,
            "database_type": DATABASE_TYPE,
            "active_connections": pool.active,
            "idle_connections": pool.idle,
        },
        "version": VERSION,
        "schema_hash": app.schema.content_hash,
    }
    return Response.json(200 if connected else 503, body)


def readiness(app: App, req: Request) -> Response:
    """200 ``ready``, or 503 ``not_ready`` with the reason a load balancer logs."""
    if app.db.reachable():
        return Response.json(200, {"status": "ready"})
    return Response.json(503, {"status": "not_ready",
                               "reason": "Database connection unavailable"})
