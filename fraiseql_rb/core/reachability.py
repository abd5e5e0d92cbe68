"""Endpoints that hung in this run: probed once, then skipped, each skip recorded as such.

A hung target accepts TCP and never answers. Every probe of it waits out its whole timeout,
and a runbook probes the same server many times (health, readiness, GraphQL, /metrics, round
trips; one session per database check), so one black hole cost a runbook a minute or more.
The run therefore remembers each endpoint that timed out, and later probes of it raise
`Skipped` at once, which checks record as `unknown` with the reason (see `context.check`).

An endpoint is `scheme://host:port`: `https://api.example.com:443` for HTTP,
`postgresql://db:5432` for PostgreSQL. It is remembered when

- connecting to it timed out (TCP connect or TLS handshake: nothing answered at all), or
- a request timed out after connecting, *and* a bare hello on a fresh connection gets no
  answer within `thresholds.HUNG_CONFIRM_S` either. A live HTTP server answers a malformed
  request line at once (400, or a close) without reaching the application, and a live
  PostgreSQL answers an SSLRequest with one byte, so a server that is only slow on one path
  (a lock, an exhausted pool, a slow query) is not mistaken for a hung one.

A refused connection is never remembered: it answers at once and is cheap to try again. Any
answer from an endpoint forgets it.

The memo belongs to the run (`RunContext.unresponsive`). HTTP clients built for a context use
it (`Client`); code that has only a URL (`postgres.connect`, the raw TLS probes) finds it with
`active()`: the memo of the newest RunContext still alive (one kernel runs one runbook).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.errors import RunbookError

DEFAULT_PORTS = {"http": 80, "https": 443}
SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest: length 8, code
HTTP_HELLO = b"FRAISEQL-RB-HUNG-CHECK\r\n\r\n"  # not HTTP: any live server answers 400


@dataclass(frozen=True)
class Timeout:
    """The first time an endpoint hung in this run."""

    endpoint: str
    at: datetime
    what: str  # "read timeout 5 s", "connect timeout 5 s", ...
    confirmed: str = ""  # how the hang was confirmed, when it was

    def summary(self) -> str:
        return (f"skipped: {self.endpoint} timed out at {self.at:%H:%M:%S} UTC in this run "
                f"({self.what})")

    def evidence(self) -> dict[str, Any]:
        return {"skipped": True, "endpoint": self.endpoint,
                "timed_out_at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "timeout": self.what,
                "confirmed": self.confirmed or None}


class Skipped(RunbookError):
    """A probe not made: its endpoint already hung in this run."""

    def __init__(self, timeout: Timeout) -> None:
        super().__init__(timeout.summary())
        self.timeout = timeout


class SocketSkipped(Skipped, OSError):
    """`Skipped` for raw-socket probes, whose callers handle `OSError`."""


class Unresponsive:
    """The run's memo: endpoint -> the first time it hung. Safe to share between threads."""

    def __init__(self) -> None:
        self._timeouts: dict[str, Timeout] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Unresponsive({sorted(self._timeouts)})"

    def __len__(self) -> int:
        return len(self._timeouts)

    def get(self, endpoint: str) -> Timeout | None:
        with self._lock:
            return self._timeouts.get(endpoint)

    def timeouts(self) -> list[Timeout]:
        with self._lock:
            return list(self._timeouts.values())

    def check(self, endpoint: str, error: type[Skipped] = Skipped) -> None:
        """Raise `error` when `endpoint` already hung in this run."""
        found = self.get(endpoint)
        if found is not None:
            raise error(found)

    def remember(self, endpoint: str, what: str, confirmed: str = "",
                 at: datetime | None = None) -> Timeout:
        """Note that `endpoint` hung (`at`: when the timeout struck, default now)."""
        with self._lock:
            if endpoint not in self._timeouts:
                self._timeouts[endpoint] = Timeout(endpoint, at or datetime.now(UTC), what,
                                                   confirmed)
            return self._timeouts[endpoint]

    def forget(self, endpoint: str) -> None:
        with self._lock:
            self._timeouts.pop(endpoint, None)

    def hung(self, url: str) -> Timeout | None:
        """Whether the endpoint of `url` (http(s):// or a PostgreSQL URL or conninfo) hung
        in this run: a sampling loop need not wait for what it can no longer read."""
        if url.startswith(("http://", "https://")):
            try:
                key: str | None = http_endpoint(url)
            except httpx.InvalidURL:
                return None
        else:
            key = postgres_endpoint(url)
        return self.get(key) if key else None


_active: weakref.ref[Unresponsive] | None = None


def activate(memo: Unresponsive) -> None:
    """Make `memo` the one URL-only callers use (a new RunContext does this)."""
    global _active
    _active = weakref.ref(memo)


def active() -> Unresponsive | None:
    return _active() if _active is not None else None


# -- endpoints ----------------------------------------------------------------------------------

def endpoint(scheme: str, host: str, port: int) -> str:
    """The memo's key: `scheme://host:port`, an IPv6 address in brackets."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def http_endpoint(url: str | httpx.URL) -> str:
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(str(url))
    return endpoint(parsed.scheme, parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0))


def postgres_address(url: str) -> tuple[str | None, int]:
    """The first host (or socket directory) and port a URL or conninfo names; host None when
    it names none (libpq's default socket)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = str(params.get("hostaddr") or params.get("host") or "").split(",")[0] or None
    port = int(str(params.get("port") or "5432").split(",")[0] or 5432)
    return host, port


def postgres_endpoint(url: str) -> str | None:
    """`postgresql://host:port` for a URL or conninfo; None when it cannot be read (then
    psycopg reports the bad URL itself)."""
    try:
        host, port = postgres_address(url)
    except Exception:  # noqa: BLE001 - psycopg's own connect says what is wrong with it
        return None
    return endpoint("postgresql", host or "default-socket", port)


# -- confirming a hang --------------------------------------------------------------------------

def _answers(host: str, port: int, hello: bytes, *, tls: bool = False,
             timeout_s: float = thresholds.HUNG_CONFIRM_S) -> bool:
    """Say `hello` on a fresh connection: True when the peer answers anything (bytes, a
    close, a reset, a refusal), False when it stays silent for `timeout_s`."""
    try:
        if host.startswith("/"):  # a PostgreSQL socket directory
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        with sock:
            if tls:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                with context.wrap_socket(sock, server_hostname=None) as wrapped:
                    wrapped.sendall(hello)
                    wrapped.recv(1)
            else:
                sock.sendall(hello)
                sock.recv(1)
        return True
    except TimeoutError:
        return False
    except OSError:  # refused, reset, TLS alert: something answered
        return True


def _confirm_note(timeout_s: float) -> str:
    return f"a bare hello on a new connection got no answer within {timeout_s:g} s either"


def http_timed_out(memo: Unresponsive, request: httpx.Request,
                   exc: httpx.TimeoutException) -> Timeout | None:
    """Remember `request`'s endpoint after a timeout, if it is hung rather than slow."""
    if isinstance(exc, httpx.PoolTimeout):  # our own pool, not the endpoint
        return None
    kind = ("connect" if isinstance(exc, httpx.ConnectTimeout)
            else "write" if isinstance(exc, httpx.WriteTimeout) else "read")
    seconds = (request.extensions.get("timeout") or {}).get(kind)
    what = f"{kind} timeout {seconds:g} s" if seconds else f"{kind} timeout"
    endpoint, at = http_endpoint(request.url), datetime.now(UTC)
    if kind == "connect":
        return memo.remember(endpoint, what, at=at)
    url = request.url
    if _answers(url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0), HTTP_HELLO,
                tls=url.scheme == "https"):
        return None  # alive, only slow on this request
    return memo.remember(endpoint, what, _confirm_note(thresholds.HUNG_CONFIRM_S), at)


def postgres_timed_out(memo: Unresponsive, url: str, connect_timeout_s: float
                       ) -> Timeout | None:
    """Remember a database endpoint whose connection attempt timed out, if it is hung."""
    endpoint = postgres_endpoint(url)
    if endpoint is None:
        return None
    # libpq (and psycopg after it) waits at least 2 s, whatever connect_timeout says
    what, at = f"connect timeout {max(2, int(connect_timeout_s)):g} s", datetime.now(UTC)
    host, port = postgres_address(url)
    if host is not None and _answers(host, port, SSL_REQUEST):
        return None  # the postmaster answers: slow authentication or startup, not hung
    confirmed = _confirm_note(thresholds.HUNG_CONFIRM_S) if host is not None else ""
    return memo.remember(endpoint, what, confirmed, at)


@contextlib.contextmanager
def socket_probe(endpoint: str, what: str) -> Iterator[None]:
    """Guard a raw-socket exchange that is itself a protocol hello (a TLS handshake, an
    SSLRequest): skip a remembered endpoint (`SocketSkipped`, an OSError), and remember it
    when the exchange times out."""
    memo = active()
    if memo is None:
        yield
        return
    memo.check(endpoint, SocketSkipped)
    try:
        yield
    except TimeoutError:
        memo.remember(endpoint, what)
        raise


# -- the HTTP client ----------------------------------------------------------------------------

class Client(httpx.Client):
    """An httpx.Client that consults the run's memo on every request it sends.

    `memo` defaults to `active()`. With `skip=False` a remembered endpoint is still tried
    (a poll after a restart must see the server come back); a timeout is still remembered
    and an answer still forgets it.
    """

    def __init__(self, *args: Any, memo: Unresponsive | None = None, skip: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memo = memo
        self.skip = skip

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        memo = self.memo if self.memo is not None else active()
        if memo is None:
            return super().send(request, **kwargs)
        endpoint = http_endpoint(request.url)
        if self.skip:
            memo.check(endpoint)
        try:
            response = super().send(request, **kwargs)
        except httpx.TimeoutException as exc:
            http_timed_out(memo, request, exc)
            raise
        memo.forget(endpoint)
        return response
