"""The Request a route reads and the Response it returns, and bearer auth with the per-peer
brute-force guard (middleware/auth.rs: bearer_auth_middleware, FailureLimiter).
Missing/malformed header: 401; wrong token: 403 "Invalid token"; the max_failures-th wrong
token from one peer within 60 s and everything after it: 429.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AUTH_WINDOW_SECS = 60  # middleware/auth.rs: ADMIN_AUTH_WINDOW_SECS
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass
class Request:
    """The parts of an HTTP request the routes look at."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    peer: str


@dataclass
class Response:
    """What a route returns; the HTTP layer writes it."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(status: int, payload: Any) -> Response:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        return Response(status, body, JSON_TYPE)

    @staticmethod
    def text(status: int, message: str, **headers: str) -> Response:
        return Response(status, message.encode(), TEXT_TYPE, dict(headers))


class BearerGuard:
    """One protected route group: its token and its own failure limiter, like BearerAuthState."""

    def __init__(self, token: str, max_failures: int) -> None:
        self._token = token.encode("utf-8")
        self._max = max(1, max_failures)
        self._lock = threading.Lock()
        self._records: dict[str, tuple[int, float]] = {}

    def _blocked(self, peer: str, now: float) -> bool:
        rec = self._records.get(peer)
        return rec is not None and now < rec[1] + AUTH_WINDOW_SECS and rec[0] >= self._max

    def _record_failure(self, peer: str, now: float) -> bool:
        if len(self._records) >= 1024:  # sweep dead windows so rotating peers cannot grow it
            for key in [k for k, (_, t0) in self._records.items()
                        if now - t0 >= 2 * AUTH_WINDOW_SECS]:
                del self._records[key]
        count, start = self._records.get(peer, (0, now))
        if now >= start + AUTH_WINDOW_SECS:
            self._records[peer] = (1, now)
            return False
        self._records[peer] = (count + 1, start)
        return count + 1 >= self._max

    def check(self, authorization: str | None, peer: str) -> Response | None:
        """None when the request may proceed, else the refusal to send."""
        now = time.time()
        with self._lock:
            if self._blocked(peer, now):
                return Response.text(429, "Too many failed auth attempts")
            if authorization is None:
                return Response.text(401, "Missing Authorization header",
                                     **{"WWW-Authenticate": "Bearer"})
            if not authorization.startswith("Bearer "):
                return Response.text(
                    401, "Invalid Authorization header format. Expected: Bearer <token>",
                    **{"WWW-Authenticate": "Bearer"},
                )
            presented = authorization[7:].encode("latin-1", "replace")
            if not hmac.compare_digest(presented, self._token):
                if self._record_failure(peer, now):
                    return Response.text(429, "Too many failed auth attempts")
                return Response.text(403, "Invalid token")
            self._records.pop(peer, None)
        return None
