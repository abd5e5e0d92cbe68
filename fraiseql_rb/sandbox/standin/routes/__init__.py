"""The stand-in's routes, one module per route family as the real server's route files are.
Each handler is ``handler(app, request) -> Response``; ``App`` (``..app``) maps URLs to them.

| URL (default paths)                                      | module      |
|----------------------------------------------------------|-------------|
| ``/health``, ``/readiness``                              | ``health``  |
| ``/graphql`` (GET, POST)                                 | ``graphql`` |
| ``/metrics``, ``/metrics/json``                          | ``metrics`` |
| ``/api/v1/admin/...``, ``/admin/v1/...``                 | ``admin``   |
| ``/.well-known/openid-configuration``, ``/.well-known/jwks.json`` | ``oidc`` |
"""
