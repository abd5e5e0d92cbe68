"""The application: the shared state every route reads (settings, schema, pool, metrics,
caches, fault flags, identity provider), the routing table from URL to handler, and the
bearer guards in front of the protected routes. The handlers live in ``routes/``, one module
per route family (routes/health.rs, routes/graphql/, routes/metrics.rs, routes/api/admin.rs),
so a URL in the table below leads straight to its code.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .cache import PersistedQueries, QueryCache
from .config import Settings
from .database import Database
from .faults import FaultFlags, MemoryLeak, int_setting
from .guard import BearerGuard, Request, Response
from .logs import first_line
from .metrics import Metrics
from .oidc import DISCOVERY_PATH, JWKS_PATH, IdentityProvider
from .releases import Release, resolve
from .routes import admin, graphql, health, metrics, oidc
from .schema import SchemaModel, builtin_schema, schema_from_compiled

__all__ = ["App", "Handler", "Request", "Response"]

FAULT_TICK_SECS = 0.5  # how often faults that need no request (leaks, their release) are applied

_log = logging.getLogger("fraiseql_standin")

Handler = Callable[["App", Request], Response]


class App:
    """Everything behind the HTTP layer: shared state, the routing table, dispatch."""

    def __init__(self, settings: Settings, state_dir: Path | None,
                 release: Release | None = None) -> None:
        self.settings = settings
        self.release = release or resolve(None)  # what differs between releases (releases.py)
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.db = Database(settings)
        self.faults = FaultFlags(state_dir)
        self.schema = self._initial_schema()
        self.schema_lock = threading.Lock()  # held while the admin API swaps the schema
        self.cache = QueryCache()
        self.apq = PersistedQueries()
        self.leak = MemoryLeak()
        self.idp = IdentityProvider(settings)
        self.routes: dict[str, dict[str, Handler]] = self._build_routes()

    def _initial_schema(self) -> SchemaModel:
        """The compiled schema at ``schema_path`` if usable, else the built-in one."""
        path = self.settings.schema_path
        if path.is_file():
            try:
                raw = path.read_bytes()
                return schema_from_compiled(json.loads(raw), raw, str(path))
            except (OSError, ValueError) as exc:
                _log.warning("schema %s not usable (%s); serving the built-in schema", path, exc)
        elif self.settings.schema_path_explicit:
            _log.warning("schema file %s not found; serving the built-in schema", path)
        return builtin_schema()

    # ---- routing ---------------------------------------------------------------------------

    def _build_routes(self) -> dict[str, dict[str, Handler]]:
        """URL -> method -> handler. Metrics and admin routes exist only when enabled with a
        token (otherwise 404, as the real server leaves them unmounted); a `foreign` release
        serves no /readiness, /metrics/json or admin API."""
        s = self.settings
        v2 = self.release.v2_surface
        routes: dict[str, dict[str, Handler]] = {
            s.health_path: {"GET": health.health},
            **({s.readiness_path: {"GET": health.readiness}} if v2 else {}),
            s.graphql_path: {"GET": graphql.get, "POST": graphql.post},
            DISCOVERY_PATH: {"GET": oidc.discovery},
            JWKS_PATH: {"GET": oidc.jwks},
        }
        if s.routes_metrics():
            assert s.metrics_token is not None
            scrape = BearerGuard(s.metrics_token, s.admin_auth_max_failures)
            routes[s.metrics_path] = {"GET": _guarded(scrape, metrics.text)}
            if v2:
                routes[s.metrics_json_path] = {"GET": _guarded(scrape, metrics.json)}
        if s.routes_admin() and v2:
            assert s.admin_token is not None
            write = BearerGuard(s.admin_token, s.admin_auth_max_failures)
            read = (BearerGuard(s.admin_readonly_token, s.admin_auth_max_failures)
                    if s.admin_readonly_token else write)
            studio = BearerGuard(s.admin_token, s.admin_auth_max_failures)
            routes["/api/v1/admin/reload-schema"] = {"POST": _guarded(write, admin.reload_schema)}
            routes["/api/v1/admin/cache/clear"] = {"POST": _guarded(write, admin.cache_clear)}
            routes["/api/v1/admin/cache/stats"] = {"GET": _guarded(read, admin.cache_stats)}
            routes["/api/v1/admin/config"] = {"GET": _guarded(read, admin.config)}
            routes["/admin/v1/health/detailed"] = {"GET": _guarded(studio, admin.health_detailed)}
            routes["/admin/v1/metrics/summary"] = {"GET": _guarded(studio, admin.metrics_summary)}
        return routes

    def dispatch(self, req: Request) -> Response:
        """404 for an unknown path, 405 (with Allow) for a known path's other methods."""
        methods = self.routes.get(req.path)
        if methods is None:
            return Response(404)
        method = "GET" if req.method == "HEAD" and "GET" in methods else req.method
        handler = methods.get(method)
        if handler is None:
            return Response(405, headers={"Allow": ", ".join(sorted(methods))})
        return handler(self, req)

    # ---- behaviour faults that act outside a route ------------------------------------------

    def after_request(self) -> None:
        """Called once per request served: the memory-leak drill grows while its flag is set."""
        leak = self.faults.current().get("memory-leak")
        if isinstance(leak, dict):
            self.leak.grow(leak)
        else:
            self.leak.release()

    def apply_background_faults(self) -> None:
        """Faults that must act without a request: the connection leak, and releasing leaks."""
        flags = self.faults.current()
        leak = flags.get("leak-connections")
        count = (int_setting(leak, "count", self.settings.pool_max_size, 0,
                             self.settings.pool_max_size) if isinstance(leak, dict) else 0)
        if count != self.db.leak.count:
            self.db.leak.hold(count)
        if not isinstance(flags.get("memory-leak"), dict):
            self.leak.release()

    def watch_faults(self, stop: threading.Event) -> None:
        """Run `apply_background_faults` every FAULT_TICK_SECS until `stop` is set."""
        while not stop.wait(FAULT_TICK_SECS):
            try:
                self.apply_background_faults()
            except Exception as exc:  # noqa: BLE001 - a fault must never end the watcher
                _log.warning("applying fault flags failed: %s", first_line(exc))


def _guarded(guard: BearerGuard, handler: Handler) -> Handler:
    """`handler` behind a bearer token: the guard's 401/403/429 refusal, or the handler.
    The wrapper keeps the handler's name and module, so it still says where its code is."""

    @functools.wraps(handler)
    def run(app: App, req: Request) -> Response:
        refusal = guard.check(req.headers.get("Authorization"), req.peer)
        return refusal if refusal is not None else handler(app, req)

    return run
