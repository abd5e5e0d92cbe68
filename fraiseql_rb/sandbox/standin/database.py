"""The database side: a psycopg pool that recovers quickly after PostgreSQL comes back, and
a single-flight liveness probe for /health and /readiness.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .config import Settings
from .metrics import PoolSnapshot

HEALTH_DB_TIMEOUT_SECS = 2.0


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
        self._probe_lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._probe_result = False

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
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
