"""Which FraiseQL release has what a check needs, and the server's version as /health says.

Deployments run different releases (shared/reference/fraiseql-v2-interface.md, "Releases"). A
check that needs something a release lacks records `info` "not available before vX.Y.Z (this
server reports vA.B.C)", never a failure. A server that reports no version (an older or
foreign one, a proxy) is not known to lack anything: the check tries and judges what it sees.

`FEATURES` is the one place these facts live; checks name a feature, never a version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+]([0-9A-Za-z.+-]+))?\s*$")


@dataclass(frozen=True)
class Version:
    """A release number as a server reports it: `2.14.1`, `2.15.0-dev`, `v2.3`.

    Ordering uses the numbers only: a pre-release (`2.15.0-dev`) is a build of main on its
    way to that release, so it already has what the release will have."""

    major: int
    minor: int
    patch: int = 0
    pre: str = ""  # "dev", "standin", "rc1"; kept for display only

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{self.pre}" if self.pre else text


def parse_version(text: Any) -> Version | None:
    """The version in a /health `version` field; None when missing or not a version."""
    if not isinstance(text, str):
        return None
    match = _VERSION.match(text)
    if not match:
        return None
    major, minor, patch, pre = match.groups()
    return Version(int(major), int(minor), int(patch or 0), pre or "")


@dataclass(frozen=True)
class Feature:
    """Something a check needs, with the first release that has it.

    `after` True means the first release is not out yet: every release up to and including
    `since` lacks it, builds of main after it have it."""

    name: str
    what: str
    since: Version
    after: bool = False
    used_by: str = ""  # the checks that need it, and what they do on a release without it

    def first(self) -> str:
        """The first release that has it, as a person reads it."""
        return f"the release after v{self.since} (main only)" if self.after else f"v{self.since}"

    def available(self, version: Version | None) -> bool | None:
        """True or False by the catalogue; None when the server's version is not known."""
        if version is None:
            return None
        if self.after:
            return version.core > self.since.core
        return version.core >= self.since.core


def _v(text: str) -> Version:
    parsed = parse_version(text)
    assert parsed is not None, text
    return parsed


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("root_typename", "the root `{ __typename }` query", _v("2.10.0"),
            used_by="`graphql.probe` (service-health, service-down): info, liveness rests on "
            "`/health` and `graphql.data_path`"),
    Feature("duration_histograms", "GraphQL and database duration histograms", _v("2.1.0"),
            used_by="`latency.*` (high-query-latency), performance-dashboard, "
            "HighQueryLatency: unavailable, naming the series looked for"),
    Feature("pool_requests_waiting", "the fraiseql_db_pool_requests_waiting gauge", _v("2.1.0"),
            used_by="connection-pool-exhaustion, high-query-latency's in-flight count: "
            "judged on PostgreSQL's sessions alone"),
    Feature("admin_health_detailed", "/admin/v1/health/detailed (pool_max, cache_entries)",
            _v("2.3.0"), used_by="`database.pool_capacity` (deployment-verification): the "
            "pool size from the config instead; memory-leak: cache growth not measured"),
    Feature("query_cost_metric", "the fraiseql_graphql_queries_cost_total counter",
            _v("2.14.1"), after=True,
            used_by="`latency.complexity` (high-query-latency): info, not measured"),
    Feature("timeout_504", "request timeouts answered 504 (earlier releases answer 408)",
            _v("2.14.1"), after=True,
            used_by="high-error-rate: before it, timeouts count among client errors (408)"),
    Feature("cache_stats_list", "/api/v1/admin/cache/stats as {caches: [...]}", _v("2.14.1"),
            after=True, used_by="no check reads it yet; the stand-in serves both shapes"),
)}

# metric concepts (targets.metrics) that only some releases export
CONCEPT_FEATURES: dict[str, str] = {
    "query_duration": "duration_histograms",
    "db_query_duration": "duration_histograms",
    "pool_waiting": "pool_requests_waiting",
    "query_cost": "query_cost_metric",
}


def feature(name: str | Feature) -> Feature:
    """A feature by name (KeyError naming the known ones otherwise)."""
    if isinstance(name, Feature):
        return name
    try:
        return FEATURES[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}") from None


def available(name: str | Feature, version: Version | None) -> bool | None:
    """Does a server at `version` have the feature? None: not known (no version reported)."""
    return feature(name).available(version)


def lacks(name: str | Feature, version: Version | None) -> bool:
    """Known to lack it: only a reported version older than the feature's first release."""
    return feature(name).available(version) is False


def not_available(name: str | Feature, version: Version | None) -> str:
    """The info finding's text for a feature this server lacks."""
    f = feature(name)
    reports = f"v{version}" if version is not None else "no version"
    return f"{f.what} is not available before {f.first()} (this server reports {reports})"


def describe(version: Version | None, reported: Any = None) -> str:
    """The server's version as evidence reads it."""
    if version is not None:
        return f"v{version}"
    if reported in (None, ""):
        return "no version reported"
    return f"an unrecognised version {str(reported)[:40]!r}"


def table() -> list[dict[str, str]]:
    """The catalogue as rows (feature, what, first release), for README and notebooks."""
    return [{"feature": f.name, "what": f.what, "first release": f.first(),
             "used by": f.used_by} for f in FEATURES.values()]


def markdown_table() -> str:
    """README's table of what each check needs from the server's release."""
    lines = ["| needs | first release | checks, and what they do on an older release |",
             "|---|---|---|"]
    lines += [f"| {f.what} | {f.first()} | {f.used_by} |" for f in FEATURES.values()]
    return "\n".join(lines)
