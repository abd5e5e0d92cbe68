"""The two stores the GraphQL route keeps between requests: the query result cache (read and
cleared by the admin API too) and the automatic persisted queries (APQ) registry.

Shared state of the application, so each has its own lock: requests are served by threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from fnmatch import fnmatchcase
from typing import Any

CACHE_TTL_SECS = 60  # routes/api/admin.rs: cache_stats reports the QueryCache's 60-second TTL
CACHE_MAX_ENTRIES = 1000
APQ_MAX_ENTRIES = 10_000


class QueryCache:
    """Query results by request (query, variables, operation name), least recently used first.

    Each entry remembers the views it read, so an entity-scoped clear drops exactly the
    results that could be stale. Expired entries are dropped when read or counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, dict[str, Any], frozenset[str]]] = (
            OrderedDict())

    def get(self, key: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key: str, data: dict[str, Any], views: frozenset[str]) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + CACHE_TTL_SECS, data, views)
            while len(self._entries) > CACHE_MAX_ENTRIES:
                self._entries.popitem(last=False)

    def entries(self) -> int:
        """How many live entries there are (expired ones are dropped first)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, v in self._entries.items() if v[0] <= now]:
                del self._entries[key]
            return len(self._entries)

    def clear(self) -> int:
        """Drop everything; returns how many entries were held, expired ones included."""
        with self._lock:
            cleared = len(self._entries)
            self._entries.clear()
            return cleared

    def clear_view(self, view: str) -> int:
        """Drop the results that read `view` (schema-qualified or not); returns how many."""
        with self._lock:
            keys = [k for k, v in self._entries.items()
                    if any(x.split(".")[-1] == view for x in v[2])]
            for k in keys:
                del self._entries[k]
            return len(keys)

    def clear_matching(self, pattern: str) -> int:
        """Drop the entries whose key matches the glob `pattern`; returns how many."""
        with self._lock:
            keys = [k for k in self._entries if fnmatchcase(k, pattern)]
            for k in keys:
                del self._entries[k]
            return len(keys)


class PersistedQueries:
    """APQ: query text by lower-case SHA-256 hex, the oldest registration dropped first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, str] = OrderedDict()

    def register(self, digest: str, query: str) -> None:
        with self._lock:
            self._queries[digest] = query
            while len(self._queries) > APQ_MAX_ENTRIES:
                self._queries.popitem(last=False)

    def lookup(self, digest: str) -> str | None:
        with self._lock:
            return self._queries.get(digest)
