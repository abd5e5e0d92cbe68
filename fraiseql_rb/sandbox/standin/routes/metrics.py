"""``GET /metrics`` and ``GET /metrics/json`` (paths ``metrics_path``, ``metrics_json_path``):
routes/metrics.rs. Mounted only with ``metrics_enabled`` and a ``metrics_token``; the bearer
check sits in front of them (see ``App``). The counters themselves live in ``..metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..guard import Request, Response
from ..metrics import PoolSnapshot

if TYPE_CHECKING:
    from ..app import App

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # routes/metrics.rs sends exactly this


def text(app: App, req: Request) -> Response:
    """The Prometheus exposition, pool gauges sampled now; the families the release has."""
    if not app.release.v2_surface:
        return Response(200, app.metrics.render_generic().encode(), PROMETHEUS_CONTENT_TYPE)
    pool = app.db.snapshot()
    body = app.metrics.render(pool, _recommended_pool_size(app, pool),
                              cost_metric=app.release.cost_metric)
    return Response(200, body.encode(), PROMETHEUS_CONTENT_TYPE)


def json(app: App, req: Request) -> Response:
    """The nine-key JSON summary."""
    return Response.json(200, app.metrics.json_summary(app.db.snapshot()))


def _recommended_pool_size(app: App, pool: PoolSnapshot) -> int | None:
    """``fraiseql_pool_recommended_size``, exported only when ``[pool_tuning]`` is enabled."""
    tuning = app.settings.pool_tuning
    if not tuning.get("enabled"):
        return None
    low = int(tuning.get("min_pool_size", app.settings.pool_min_size))
    high = int(tuning.get("max_pool_size", app.settings.pool_max_size))
    return max(low, min(high, pool.active + pool.waiting + 1))
