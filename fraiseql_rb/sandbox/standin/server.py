"""HTTP: a threading server, optional TLS with certificate hot-swap, one log line per request."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .app import App
from .config import TlsSettings
from .guard import Request, Response
from .logs import first_line

_log = logging.getLogger("fraiseql_standin")


class TlsContexts:
    """The server's SSL context, rebuilt when the certificate or key file changes on disk.

    Drills swap the certificate (expired, wrong host) under a running server; new connections
    get the new certificate without a restart. A file that fails to load keeps the old context.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp = self._files_stamp()
        self._ctx = self._build()

    def _files_stamp(self) -> tuple[int, ...]:
        stamps: list[int] = []
        for path in (self._tls.cert_path, self._tls.key_path):
            try:
                stamps.append(path.stat().st_mtime_ns if path else 0)
            except OSError:
                stamps.append(0)
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        tls = self._tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
        ctx.load_cert_chain(str(tls.cert_path), str(tls.key_path))
        if tls.require_client_cert and tls.client_ca_path:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(tls.client_ca_path))
        return ctx

    def get(self) -> ssl.SSLContext:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= 1.0:
                self._checked = now
                stamp = self._files_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._ctx = self._build()
                        _log.info("TLS certificate reloaded from %s", self._tls.cert_path)
                    except (OSError, ssl.SSLError) as exc:
                        _log.warning("TLS certificate reload failed (%s); keeping the old one",
                                     first_line(exc))
            return self._ctx


class StandinHTTPServer(ThreadingHTTPServer):
    """Threading HTTP(S) server whose handler threads never keep the process alive."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: App, tls: TlsContexts | None) -> None:
        self.app = app
        self.tls = tls
        host = app.settings.bind_host
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, app.settings.bind_port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.get().wrap_socket(sock, server_side=True,
                                              do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:  # the handshake runs in the handler thread, never in the accept loop
                request.settimeout(10)
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                _log.info("TLS handshake failed from %s: %s", client_address[0],
                          first_line(exc))
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        _log.warning("connection error from %s: %s", client_address[0],
                     type(exc).__name__ if exc else "unknown")


class _Handler(BaseHTTPRequestHandler):
    """Adapts http.server to App.dispatch, counting and logging every request."""

    server: StandinHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "fraiseql-server"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY the client's delayed ACK
        # adds ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence http.server's own access log: it would print the raw request line."""

    def _serve(self) -> None:
        t0 = time.perf_counter()
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path or "/"
        status = 500
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > app.settings.max_request_body_bytes > 0:
                resp = Response.text(413, "length limit exceeded")
                self.close_connection = True
            else:
                body = self.rfile.read(length) if length > 0 else b""
                req = Request(self.command, path, split.query, self.headers, body,
                              self.client_address[0])
                resp = app.dispatch(req)
        except ValueError:
            resp = Response.text(400, "invalid Content-Length")
            self.close_connection = True
        except Exception as exc:  # a bug in a route must not kill the connection thread
            _log.error("unhandled %s on %s %s", type(exc).__name__, self.command, path)
            resp = Response(500)
        status = resp.status
        try:
            self.send_response(resp.status)
            if resp.content_type:
                self.send_header("Content-Type", resp.content_type)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD" and resp.body:
                self.wfile.write(resp.body)
        finally:
            elapsed = time.perf_counter() - t0
            app.metrics.http_finished(status, int(elapsed * 1_000_000))
            _log.info("request method=%s path=%s status=%s duration_ms=%.1f peer=%s",
                      self.command, path, status, elapsed * 1000, self.client_address[0])
            app.after_request()

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve
