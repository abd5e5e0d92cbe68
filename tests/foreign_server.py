"""A FraiseQL-like server nobody here wrote: routes configured per test (issue 11 §1).

Runbooks must hold on servers that are not our stand-in: an older release, a proxy in front,
an exporter with other metric names. `ForeignServer` is a threading http.server on a free
loopback port whose answers a test sets route by route:

    server.route("GET", "/health", 200, {"status": "healthy", "database": {...}})
    server.route("GET", "/readiness", 404)            # not served
    server.route("GET", "/metrics", 200, "other_metric 1\\n")
    server.graphql(lambda query: (200, {"data": {...}}))

Unconfigured routes answer 404, as a server without that endpoint does. `inventory()` writes
an inventory for the CLI naming this server and a real PostgreSQL (from pg_fixtures).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (HTTP status, body): a dict/list is sent as JSON, a str as text, None empty; a callable
# body is called for each request (counters that grow between scrapes)
Answer = tuple[int, Any]
GraphQLHandler = Callable[[str], Answer]

# what a v2.9 server's /health looks like (no schema_hash), database connected
HEALTHY = {"status": "healthy", "version": "2.9.0",
           "database": {"connected": True, "database_type": "PostgreSQL"}}


@dataclass
class ForeignServer:
    routes: dict[tuple[str, str], Answer] = field(default_factory=dict)
    graphql_handler: GraphQLHandler | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, method: str, path: str, status: int, body: Any = None) -> ForeignServer:
        self.routes[(method.upper(), path)] = (status, body)
        return self

    def graphql(self, handler: GraphQLHandler) -> ForeignServer:
        """Answer POST /graphql by the query text."""
        self.graphql_handler = handler
        return self

    def answer(self, method: str, path: str, payload: bytes) -> Answer:
        self.requests.append((method, path))
        if path == "/graphql" and method == "POST" and self.graphql_handler is not None:
            try:
                query = json.loads(payload or b"{}").get("query", "")
            except ValueError:
                return 400, {"errors": [{"message": "body is not JSON"}]}
            return self.graphql_handler(query)
        status, body = self.routes.get((method, path), (404, "Not Found"))
        return status, body() if callable(body) else body

    def inventory(self, directory: Path, database_url: str, password: str | None = None,
                  **extra: Any) -> Path:
        """An inventory with target `foreign`: this server, that database (password in a
        0600 file beside it), and `extra` keys."""
        entries: dict[str, Any] = {"fraiseql_url": self.url, "database_url": database_url}
        if password is not None:
            secret = directory / "database_password"
            secret.write_text(password)
            secret.chmod(0o600)
            entries["database_password_file"] = str(secret)
        entries.update(extra)
        path = directory / "inventory.toml"
        path.write_text("[targets.foreign]\n" + "".join(
            f"{key} = {json.dumps(value)}\n" for key, value in entries.items()))
        return path


def _handler(server: ForeignServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = self.rfile.read(length) if length else b""
            status, body = server.answer(self.command, self.path.split("?")[0], payload)
            if body is None:
                data, kind = b"", "text/plain"
            elif isinstance(body, str):
                data, kind = body.encode(), "text/plain; version=0.0.4"
            else:
                data, kind = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve  # noqa: N815 - http.server's names

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    return Handler


def start(server: ForeignServer | None = None) -> ForeignServer:
    server = server or ForeignServer()
    server.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.httpd.daemon_threads = True
    threading.Thread(target=server.httpd.serve_forever, daemon=True).start()
    return server


def stop(server: ForeignServer) -> None:
    if server.httpd is not None:
        server.httpd.shutdown()
        server.httpd.server_close()


@contextlib.contextmanager
def serving(server: ForeignServer | None = None) -> Iterator[ForeignServer]:
    """A started ForeignServer (no routes: everything 404), stopped on leaving; a test module
    makes it a fixture: `@pytest.fixture def server(): with serving() as s: yield s`."""
    started = start(server)
    try:
        yield started
    finally:
        stop(started)
