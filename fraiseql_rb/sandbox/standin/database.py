"""The database side: a psycopg pool that recovers quickly after PostgreSQL comes back, a
single-flight liveness probe for /health and /readiness, and the connection leak of the
pool-exhaustion drill.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .config import Settings
from .metrics import PoolSnapshot

HEALTH_DB_TIMEOUT_SECS = 2.0
LEAK_CHECKOUT_TIMEOUT_SECS = 0.5  # per attempt: the fault watcher must stay responsive


def _make_pool_class() -> type[ConnectionPool]:
    """ConnectionPool retrying a lost server every ~1 s instead of backing off exponentially.

    psycopg_pool doubles the delay between reconnection attempts (1, 2, 4, 8 s, ...), so after a
    drill stops PostgreSQL for a minute the stand-in would stay broken long after the database is
    back. The real server's deadpool creates connections on demand, so it recovers at once; a
    steady one-second retry gets the stand-in close to that. Falls back to the stock pool if
    psycopg_pool's internals change.
    """
    try:
        from psycopg_pool.base import AttemptWithBackoff
    except ImportError:  # pragma: no cover - depends on the installed psycopg_pool
        return ConnectionPool

    class _SteadyRetry(AttemptWithBackoff):
        DELAY_BACKOFF = 1.0

    class _StandinPool(ConnectionPool):
        def _add_connection(self, attempt: Any, growing: bool = False) -> None:
            if attempt is None:
                attempt = _SteadyRetry(timeout=self.reconnect_timeout)
            super()._add_connection(attempt, growing)

    return _StandinPool


class Database:
    """The connection pool plus a single-flight liveness probe that answers within ~2 s."""

    def __init__(self, settings: Settings) -> None:
        statement_timeout_ms = 1000 * (settings.request_timeout_secs or 30)
        self.pool: ConnectionPool = _make_pool_class()(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=float(settings.pool_timeout_secs),
            open=False,
            name="fraiseql",
            check=ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": 5,
                "application_name": "fraiseql-standin",
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
        )
        self.max_size = settings.pool_max_size
        # the stand-in's execution timeout: a statement cancelled by it is a TIMEOUT error
        self.statement_timeout_ms = statement_timeout_ms
        self.leak = ConnectionLeak(self.pool)
        self._probe_lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._probe_result = False

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.leak.hold(0)
        self.pool.close(timeout=5.0)

    def snapshot(self) -> PoolSnapshot:
        stats = self.pool.get_stats()
        total = int(stats.get("pool_size", 0))
        idle = int(stats.get("pool_available", 0))
        return PoolSnapshot(total=total, idle=idle, active=max(0, total - idle),
                            waiting=int(stats.get("requests_waiting", 0)),
                            max_size=self.max_size)

    def _ping(self, timeout: float) -> None:
        ok = False
        try:
            with self.pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
            ok = True
        except (psycopg.Error, PoolTimeout, OSError):
            ok = False
        finally:
            with self._probe_lock:
                self._probe_result = ok

    def reachable(self, timeout: float = HEALTH_DB_TIMEOUT_SECS) -> bool:
        """Whether ``SELECT 1`` succeeds within ``timeout``.

        The ping runs in a helper thread so a hung server (SIGSTOPped, black-holed) still gives
        a fast answer; while one ping is stuck no second one is started.
        """
        with self._probe_lock:
            if self._probe is not None and self._probe.is_alive():
                return False
            self._probe_result = False
            self._probe = threading.Thread(target=self._ping, args=(timeout,), daemon=True,
                                           name="db-probe")
            self._probe.start()
            probe = self._probe
        probe.join(timeout + 0.5)
        with self._probe_lock:
            return (not probe.is_alive()) and self._probe_result


class ConnectionLeak:
    """Pool connections checked out and never returned: the bug behind pool exhaustion.

    Each leaked connection ran ``BEGIN; SELECT 1`` and then nothing, so PostgreSQL shows it
    *idle in transaction* under the server's own application_name, and the pool counts it as
    in use. `hold(n)` converges on n such connections (a bounded wait per checkout, so it is
    called again until it gets there); `hold(0)` rolls them all back and returns them.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._held: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._held)

    def hold(self, count: int) -> None:
        with self._lock:
            while len(self._held) > count:
                self._give_back(self._held.pop())
            while len(self._held) < count:
                try:
                    conn = self._pool.getconn(timeout=LEAK_CHECKOUT_TIMEOUT_SECS)
                except (PoolTimeout, psycopg.Error):
                    break  # the pool is busy or the database away: try again next time
                try:
                    conn.execute("BEGIN")
                    conn.execute("SELECT 1")
                except psycopg.Error:
                    self._pool.putconn(conn)
                    break
                self._held.append(conn)

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        self._pool.putconn(conn)
