"""``GET /.well-known/openid-configuration`` and ``GET /.well-known/jwks.json``: the sandbox's
identity provider (``..oidc``), which in production is a separate service, not FraiseQL.
The ``oidc-down`` drill makes both answer 503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..guard import Request, Response

if TYPE_CHECKING:
    from ..app import App


def discovery(app: App, req: Request) -> Response:
    return _refusal(app) or Response.json(200, app.idp.discovery())


def jwks(app: App, req: Request) -> Response:
    return _refusal(app) or Response.json(200, app.idp.jwks())


def _refusal(app: App) -> Response | None:
    """The provider outage of the ``oidc-down`` drill, as a load balancer in front reports it."""
    if isinstance(app.faults.current().get("oidc-down"), dict):
        return Response.json(503, {"error": "temporarily_unavailable",
                                   "error_description": "identity provider unavailable"})
    return None
