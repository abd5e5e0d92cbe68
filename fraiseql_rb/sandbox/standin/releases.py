"""The FraiseQL releases the stand-in can emulate, and what differs between them: the one
table the routes consult (``app.release``), so no route carries a version test of its own.

Deployments run different releases, and a runbook must judge each by what it really serves
(shared/reference/fraiseql-v2-interface.md, "Releases"). Each fact was read in the real
server's history (repository fraiseql/fraiseql, tags v2.9.0 and v2.14.1, and main):

- root ``{ __typename }``: before v2.10.0 the query matcher looks the root field up among
  the schema's queries and fails with ``FraiseQLError::Validation`` "Query '__typename' not
  found in schema" (crates/fraiseql-core/src/runtime/matcher.rs), which error.rs turns into
  ``VALIDATION_ERROR`` with HTTP 200 and the message "Validation error: ..."; v2.10.0 resolves
  it to the root type's name (runtime/executor/execution.rs).
- execution timeout (``FraiseQLError::Timeout``, "Query timeout after {ms}ms"): ``ErrorCode::
  Timeout`` answers 408 up to v2.14.1 and 504 on main (error.rs, #731). A 408 is a 4xx, so
  those releases count a timeout in ``fraiseql_http_responses_4xx``, not ``_5xx``.
- ``fraiseql_graphql_queries_cost_total``: only on main (no tag exports it).
- ``GET /api/v1/admin/cache/stats``: up to v2.14.1 the flat ``{entries_count, cache_enabled,
  ttl_secs, message}``; main answers ``{caches: [{cache, configured, entries_count, hits,
  misses, ttl_secs, max_entries}], message}`` (routes/api/admin.rs, #941).
- ``/health`` ``version`` is the crate version (``CARGO_PKG_VERSION``): 2.9.0, 2.14.1; main
  was 2.15.0 on its way out, which the stand-in reports as ``2.15.0-standin``
  (so an upgrade or a rollback to ``2.15.0`` or ``2.15.0-standin`` names main). ``degraded``
  with an ``observers`` block exists in all three (routes/health.rs).

``foreign`` is no FraiseQL release: a server that is not v2, or v2 behind a proxy that
answers for it. ``/health`` says only ``{"status": "ok"}`` (503 ``{"status": "unavailable"}``
without its database), there is no ``/readiness``, no admin API and no ``/metrics/json``, and
``/metrics`` carries generic ``http_*`` names instead of ``fraiseql_*``. GraphQL still works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

VERSION = "2.15.0-standin"  # what /health and the admin API report on main


class UnknownRelease(ValueError):
    """A release name the stand-in cannot emulate; the message lists the ones it can."""


@dataclass(frozen=True)
class Release:
    """What one emulated release serves, where releases differ."""

    name: str                  # canonical name: "2.9", "2.14.1", "main", "foreign"
    description: str
    version: str | None        # /health `version` (None: the field is absent)
    root_typename: bool        # `{ __typename }` answers {"__typename": "Query"}
    timeout_status: int        # HTTP status of an execution timeout (TIMEOUT error)
    cost_metric: bool          # exports fraiseql_graphql_queries_cost_total
    cache_stats: Literal["flat", "list"]  # /api/v1/admin/cache/stats shape
    v2_surface: bool = True    # False: foreign /health, no /readiness, admin, /metrics/json,
                               # generic metric names

    def show(self) -> str:
        """One line for `sandbox status` and the stand-in's log."""
        return f"{self.name} ({self.description})"


RELEASES: dict[str, Release] = {r.name: r for r in (
    Release("2.9", "the v2.9 line: no root __typename, timeouts 408, flat cache stats",
            version="2.9.0", root_typename=False, timeout_status=408, cost_metric=False,
            cache_stats="flat"),
    Release("2.14.1", "v2.14.1: timeouts 408, flat cache stats, no cost metric",
            version="2.14.1", root_typename=True, timeout_status=408, cost_metric=False,
            cache_stats="flat"),
    Release("main", "current main: timeouts 504, cost metric, cache stats per cache",
            version=VERSION, root_typename=True, timeout_status=504, cost_metric=True,
            cache_stats="list"),
    Release("foreign", "not a v2 server, or one behind a proxy: minimal /health, "
            "no /readiness, generic metric names", version=None, root_typename=True,
            timeout_status=504, cost_metric=False, cache_stats="list", v2_surface=False),
)}
DEFAULT = "main"

# "2.9", "2.9.x", "2.9.0", "v2.9" name the v2.9 line; "2.14.1" / "v2.14.1" that release
_LINE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(x|\d+))?$", re.IGNORECASE)


def resolve(text: str | None) -> Release:
    """The release `text` names (None: the default, main); UnknownRelease otherwise."""
    name = (text or DEFAULT).strip()
    if name.lower() in RELEASES:
        return RELEASES[name.lower()]
    match = _LINE.match(name)
    if match:
        major, minor, patch = match.groups()
        line = f"{int(major)}.{int(minor)}"
        if line == "2.9" and patch in (None, "x", "X", "0"):
            return RELEASES["2.9"]
        if patch is not None and f"{line}.{patch}" in RELEASES:
            return RELEASES[f"{line}.{patch}"]
    by_version = _by_version(name)
    if by_version is not None:
        return by_version
    raise UnknownRelease(f"unknown FraiseQL release {name!r}: the stand-in emulates "
                         f"{', '.join(RELEASES)} (2.9 also as 2.9.x or 2.9.0)")


def _by_version(text: str) -> Release | None:
    """The release whose /health `version` `text` names, as an upgrade or a rollback is told
    it: exactly (``2.15.0-standin``), or its release number alone (``2.15.0`` names main)."""
    wanted = text.removeprefix("v")
    for release in RELEASES.values():
        if release.version and wanted in (release.version, release.version.split("-")[0]):
            return release
    return None
