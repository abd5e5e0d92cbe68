"""Scrape FraiseQL's /metrics and read it by *concept*, never by metric name.

The runbook (§3.1) was written against an idealised server whose metric names the real v2
server does not export (shared/reference/fraiseql-v2-interface.md). A notebook therefore asks
for "active pool connections" and `CATALOG` says where that lives: first the real v2 names,
then names a standard exporter provides, then the runbook's names (for deployments or
exporters that use them). Concepts the server lacks point at the nearest real metric, flagged
`approximate`, so a verdict built on them can say so. The table is the only place names live.

Counter naming is slippery: v2 exports `fraiseql_cache_hits` (no `_total`), while
prometheus_client's parser reports every counter sample as `<family>_total`. `Scrape` keeps the
names exactly as exposed (what Prometheus stores and what an alert must use), and lookups of
counters fall back to the `_total`-toggled spelling only after an exact match failed.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.reachability import Skipped

if TYPE_CHECKING:
    from fraiseql_rb.core.context import RunContext

Kind = Literal["counter", "gauge", "histogram", "summary"]
Vocabulary = Literal["v2", "exporter", "runbook"]
# Order in which vocabularies are tried: the real server first, the runbook's names last.
VOCABULARIES: tuple[Vocabulary, ...] = ("v2", "exporter", "runbook")
RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})
# Series Prometheus itself creates for every scrape target and for alerting; they always exist.
PROMETHEUS_GENERATED = frozenset({
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
    "ALERTS_FOR_STATE",
})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class ScrapeError(RunbookError):
    """/metrics could not be read or parsed; the message says what to fix."""


class ScrapeSkipped(ScrapeError, Skipped):
    """/metrics was not requested: the server's endpoint already hung in this run."""


# ---- the catalog ---------------------------------------------------------------------------

_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"\s*,?')
_SELECTOR = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.S)


@dataclass(frozen=True)
class Ref:
    """One place a concept can live: a series name, label matchers, and (rarely) its own kind.

    `kind` overrides the concept's kind where a vocabulary exposes the concept differently
    (the runbook's `fraiseql_query_duration_seconds` is a summary; v2's is a histogram).
    """

    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()  # (label, op, value), op in = != =~ !~
    kind: Kind | None = None

    @classmethod
    def parse(cls, text: str, kind: Kind | None = None) -> Ref:
        """`name` or `name{label="v", other=~"a|b"}` as written in PromQL."""
        match = _SELECTOR.match(text)
        if not match:
            raise ValueError(f"not a metric selector: {text!r}")
        return cls(match.group(1), tuple(parse_matchers(match.group(2) or "")), kind)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(_match(labels.get(k, ""), op, v) for k, op, v in self.matchers)

    @property
    def labels(self) -> dict[str, str]:
        """The equality matchers, i.e. labels a series must carry with these values."""
        return {k: v for k, op, v in self.matchers if op == "="}

    def __str__(self) -> str:
        if not self.matchers:
            return self.name
        inner = ",".join(f'{k}{op}"{v}"' for k, op, v in self.matchers)
        return f"{self.name}{{{inner}}}"


def parse_matchers(text: str) -> list[tuple[str, str, str]]:
    """`a="x", b=~"y"` → [(a, =, x), (b, =~, y)]; anything else is a ValueError."""
    out, pos = [], 0
    while pos < len(text.strip()):
        match = _MATCHER.match(text, pos)
        if not match:
            raise ValueError(f"bad label matchers: {text!r}")
        value = match.group(3).replace('\\"', '"').replace("\\\\", "\\")
        out.append((match.group(1), match.group(2), value))
        pos = match.end()
    return out


def _match(actual: str, op: str, expected: str) -> bool:
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    hit = re.fullmatch(expected, actual) is not None
    return hit if op == "=~" else not hit


@dataclass(frozen=True)
class Concept:
    """What a notebook asks for. Names in each vocabulary are ordered: first present wins."""

    name: str
    kind: Kind
    unit: str
    description: str
    v2: tuple[Ref, ...] = ()
    runbook: tuple[Ref, ...] = ()
    exporter: tuple[Ref, ...] = ()
    approximate: bool = False  # the v2 names only approximate the concept; `note` says how
    note: str = ""

    def refs(self, vocabulary: Vocabulary) -> tuple[Ref, ...]:
        return {"v2": self.v2, "exporter": self.exporter, "runbook": self.runbook}[vocabulary]

    def real(self) -> Ref | None:
        """The name to use against a real deployment: v2 first, else a standard exporter's."""
        for refs in (self.v2, self.exporter):
            if refs:
                return refs[0]
        return None


def _refs(items: Iterable[str | Ref]) -> tuple[Ref, ...]:
    return tuple(item if isinstance(item, Ref) else Ref.parse(item) for item in items)


def _concept(name: str, kind: Kind, unit: str, description: str, *,
             v2: Iterable[str | Ref] = (), runbook: Iterable[str | Ref] = (),
             exporter: Iterable[str | Ref] = (), approximate: bool = False,
             note: str = "") -> Concept:
    return Concept(name, kind, unit, description, _refs(v2), _refs(runbook), _refs(exporter),
                   approximate, note)


_4XX_NOTE = ("v2 has no dedicated metric; every 4xx answer (bad requests, 401/403, 404, 429) "
             "lands in fraiseql_http_responses_4xx, so a rise there is a lead, not proof")

CATALOG: tuple[Concept, ...] = (
    # -- GraphQL queries (§3.1 "Query metrics")
    _concept("queries_total", "counter", "queries", "GraphQL queries executed, any outcome",
             v2=["fraiseql_graphql_queries_total"], runbook=["fraiseql_queries_total"]),
    _concept("queries_success", "counter", "queries", "GraphQL queries that succeeded",
             v2=["fraiseql_graphql_queries_success"],
             runbook=['fraiseql_queries_total{status="success"}']),
    _concept("queries_error", "counter", "queries",
             "GraphQL queries that failed (parse, validation or execution)",
             v2=["fraiseql_graphql_queries_error"],
             runbook=['fraiseql_queries_total{status="error"}']),
    _concept("query_errors_by_operation", "counter", "queries",
             "failed queries per operation (label `operation`)",
             v2=["fraiseql_query_errors_total"],
             runbook=['fraiseql_queries_total{status="error"}'],
             note="v2 counts execution errors per operation; parse and validation errors "
                  "happen before an operation is known"),
    _concept("parse_errors", "counter", "errors", "queries rejected as unparseable GraphQL",
             v2=["fraiseql_parse_errors_total"]),
    _concept("validation_errors", "counter", "errors",
             "queries rejected by schema validation (parse errors included)",
             v2=["fraiseql_validation_errors_total"]),
    _concept("execution_errors", "counter", "errors", "queries that failed while executing",
             v2=["fraiseql_execution_errors_total"]),
    _concept("query_duration", "histogram", "seconds",
             "GraphQL query latency per operation (label `operation`)",
             v2=["fraiseql_query_duration_seconds"],
             runbook=[Ref("fraiseql_query_duration_seconds", kind="summary")],
             note="v2: histogram, buckets 0.001–5 s; the runbook's is a summary with "
                  "`quantile` labels"),
    _concept("query_duration_avg", "gauge", "ms",
             "average GraphQL query time since the server started",
             v2=["fraiseql_graphql_query_duration_ms"],
             note="a lifetime average: it hides a recent spike; prefer query_duration"),
    _concept("query_cost", "counter", "cost units", "query complexity / estimated cost",
             v2=["fraiseql_graphql_queries_cost_total"],
             runbook=[Ref.parse("fraiseql_query_complexity", kind="gauge")], approximate=True,
             note="v2 exports only a running sum of estimated cost (divide its rate by the "
                  "query rate for a mean); the runbook's is per-operation complexity"),
    # -- connection pool (§3.1 "Database metrics")
    _concept("pool_active", "gauge", "connections", "pool connections in use",
             v2=["fraiseql_db_pool_connections_active"],
             runbook=['fraiseql_db_connections{state="active"}']),
    _concept("pool_idle", "gauge", "connections", "pool connections open and idle",
             v2=["fraiseql_db_pool_connections_idle"],
             runbook=['fraiseql_db_connections{state="idle"}']),
    _concept("pool_total", "gauge", "connections", "pool connections open (active + idle)",
             v2=["fraiseql_db_pool_connections_total"], runbook=["fraiseql_db_connections"],
             note="the runbook's gauge summed over its `state` label"),
    _concept("pool_waiting", "gauge", "requests", "requests waiting for a pool connection",
             v2=["fraiseql_db_pool_requests_waiting"],
             note="the runbook names no waiting gauge"),
    _concept("pool_recommended_size", "gauge", "connections",
             "pool size the server's tuner recommends",
             v2=["fraiseql_pool_recommended_size"],
             note="exported only with [pool_tuning] enabled"),
    _concept("db_queries_total", "counter", "queries", "queries sent to PostgreSQL",
             v2=["fraiseql_database_queries_total"]),
    _concept("db_query_duration", "histogram", "seconds", "PostgreSQL query latency",
             v2=["fraiseql_database_query_duration_seconds"],
             runbook=[Ref("fraiseql_db_query_duration_seconds", kind="summary")]),
    _concept("db_query_duration_avg", "gauge", "ms",
             "average PostgreSQL query time since the server started",
             v2=["fraiseql_database_query_duration_ms"]),
    _concept("db_errors", "counter", "errors", "failed database operations",
             v2=["fraiseql_execution_errors_total"], runbook=["fraiseql_db_errors_total"],
             approximate=True,
             note="v2 has no database-error counter; execution errors (also per operation in "
                  "fraiseql_query_errors_total) are the nearest; the log says which were SQL"),
    # -- cache (§3.1 "Cache metrics")
    _concept("cache_hits", "counter", "lookups", "query-cache hits",
             v2=["fraiseql_cache_hits"], runbook=["fraiseql_cache_hits_total"],
             note="the v2 counter has no _total suffix"),
    _concept("cache_misses", "counter", "lookups", "query-cache misses",
             v2=["fraiseql_cache_misses"], runbook=["fraiseql_cache_misses_total"],
             note="the v2 counter has no _total suffix"),
    _concept("cache_hit_ratio", "gauge", "ratio", "cache hits / lookups since start (0–1)",
             v2=["fraiseql_cache_hit_ratio"],
             note="same name in the runbook; a lifetime ratio, 0 before the first lookup"),
    # -- security (§3.1 "Security metrics")
    _concept("auth_failures", "counter", "requests", "failed authentications",
             v2=["fraiseql_http_responses_4xx"], runbook=["fraiseql_auth_failures_total"],
             approximate=True,
             note=f"{_4XX_NOTE}; the auth_failure log events and audit log are exact"),
    _concept("rate_limited", "counter", "requests", "requests refused by the rate limiter (429)",
             v2=["fraiseql_http_responses_4xx"],
             runbook=["fraiseql_rate_limit_exceeded_total"], approximate=True, note=_4XX_NOTE),
    _concept("rate_limit_fail_open", "counter", "events",
             "rate-limiter checks that failed open because Redis was unreachable",
             v2=["fraiseql_rate_limit_redis_errors_total"]),
    _concept("sql_injection_attempts", "counter", "requests", "suspected SQL-injection attempts",
             v2=["fraiseql_validation_errors_total"],
             runbook=["fraiseql_sql_injection_attempts_total"], approximate=True,
             note="v2 has no injection detector (queries are parameterised); hostile payloads "
                  "surface as validation/parse errors; check the audit log"),
    _concept("csrf_failures", "counter", "requests", "failed CSRF / OAuth state checks",
             v2=["fraiseql_http_responses_4xx"], runbook=["fraiseql_csrf_failures_total"],
             approximate=True,
             note=f"{_4XX_NOTE}; failed csrf_state_validated log events are exact"),
    _concept("jwt_replays_rejected", "counter", "tokens", "JWTs rejected as replays",
             v2=["fraiseql_jwt_replay_rejected_total"]),
    # -- HTTP
    _concept("http_requests", "counter", "requests", "HTTP requests served",
             v2=["fraiseql_http_requests_total"]),
    _concept("http_2xx", "counter", "responses", "HTTP 2xx answers",
             v2=["fraiseql_http_responses_2xx"]),
    _concept("http_4xx", "counter", "responses", "HTTP 4xx answers",
             v2=["fraiseql_http_responses_4xx"]),
    _concept("http_5xx", "counter", "responses", "HTTP 5xx answers",
             v2=["fraiseql_http_responses_5xx"]),
    _concept("http_request_duration", "histogram", "seconds", "HTTP request latency",
             v2=["fraiseql_http_request_duration_seconds"]),
    # -- schema, APQ, subscriptions
    _concept("schema_reloads", "counter", "reloads", "successful schema reloads",
             v2=["fraiseql_schema_reloads_total"]),
    _concept("schema_reload_errors", "counter", "reloads", "failed schema reloads",
             v2=["fraiseql_schema_reload_errors_total"]),
    _concept("apq_hits", "counter", "lookups", "automatic persisted query hits",
             v2=["fraiseql_apq_hits_total"]),
    _concept("apq_misses", "counter", "lookups", "automatic persisted query misses",
             v2=["fraiseql_apq_misses_total"]),
    _concept("apq_stored", "counter", "queries", "automatic persisted queries stored",
             v2=["fraiseql_apq_stored_total"]),
    _concept("ws_connections", "counter", "connections",
             "WebSocket subscription connections (label `result`)",
             v2=["fraiseql_ws_connections_total"]),
    _concept("federation_breaker_state", "gauge", "state",
             "federation circuit breaker per entity (label `entity`)",
             v2=["fraiseql_federation_circuit_breaker_state"],
             note="exported only with federation configured"),
    # -- process and host (§3.1 "System metrics"): never exported by FraiseQL v2
    _concept("resident_memory", "gauge", "bytes", "server process resident memory (RSS)",
             runbook=["process_resident_memory_bytes"],
             exporter=['namedprocess_namegroup_memory_bytes{memtype="resident"}'],
             note="FraiseQL v2 exports no process_* metrics: in Prometheus that name only "
                  "comes from other processes; use process-exporter (groupname = the server) "
                  "or read /proc on the host"),
    _concept("virtual_memory", "gauge", "bytes", "server process virtual memory",
             runbook=["process_virtual_memory_bytes"],
             exporter=['namedprocess_namegroup_memory_bytes{memtype="virtual"}'],
             note="FraiseQL v2 exports no process_* metrics; see resident_memory"),
    _concept("host_cpu_seconds", "counter", "seconds", "host CPU time by mode (node_exporter)",
             exporter=["node_cpu_seconds_total"]),
    _concept("host_memory_available", "gauge", "bytes", "host memory available (node_exporter)",
             exporter=["node_memory_MemAvailable_bytes"], runbook=["node_memory_bytes"],
             note="node_exporter has no node_memory_bytes; it exports node_memory_<field>_bytes "
                  "from /proc/meminfo"),
    _concept("host_network_receive_bytes", "counter", "bytes", "host network bytes received",
             exporter=["node_network_receive_bytes_total"],
             runbook=["node_network_bytes_total"],
             note="node_exporter splits node_network_bytes_total into receive and transmit"),
    _concept("host_network_transmit_bytes", "counter", "bytes", "host network bytes sent",
             exporter=["node_network_transmit_bytes_total"]),
    _concept("host_disk_read_bytes", "counter", "bytes", "host disk bytes read",
             exporter=["node_disk_read_bytes_total"], runbook=["node_disk_io_bytes_total"],
             note="node_exporter splits node_disk_io_bytes_total into read and written"),
    _concept("host_disk_written_bytes", "counter", "bytes", "host disk bytes written",
             exporter=["node_disk_written_bytes_total"]),
)
CONCEPTS: dict[str, Concept] = {c.name: c for c in CATALOG}


def concept(which: Concept | str) -> Concept:
    """A concept by name (what notebooks pass) or as is."""
    if isinstance(which, Concept):
        return which
    try:
        return CONCEPTS[which]
    except KeyError:
        raise KeyError(f"unknown metric concept {which!r}; see metrics.catalog_table()") from None


def catalog_table() -> pd.DataFrame:
    """The catalog for a notebook: what each concept is and where it lives."""
    rows = [{
        "concept": c.name, "kind": c.kind, "unit": c.unit, "description": c.description,
        "v2 names": ", ".join(map(str, c.v2)), "exporter names": ", ".join(map(str, c.exporter)),
        "runbook names": ", ".join(map(str, c.runbook)), "approximate": c.approximate,
        "note": c.note,
    } for c in CATALOG]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Match:
    """A catalog entry a metric name belongs to (see `lookup`)."""

    concept: Concept
    ref: Ref
    vocabulary: Vocabulary
    suffix: str = ""  # "_bucket" etc. when the name was a histogram/summary series

    @property
    def kind(self) -> Kind:
        return self.ref.kind or self.concept.kind


def lookup(name: str, labels: Mapping[str, str] | None = None) -> Match | None:
    """The catalog entry for a metric name (as an alert rule or a dashboard writes it).

    `labels` are the equality matchers used with it: `fraiseql_db_connections{state="active"}`
    is pool_active, while bare `fraiseql_db_connections` is the whole pool. Real names win
    over runbook names, exact concepts over approximate ones, specific refs over general ones.
    """
    given = dict(labels or {})
    candidates: list[tuple[tuple[int, int, int], Match]] = []
    bases = [(name, "")] + [(name[: -len(s)], s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)]
    for base, suffix in bases:
        for c in CATALOG:
            for rank, vocab in enumerate(VOCABULARIES):
                for ref in c.refs(vocab):
                    # either the name's own kind or the concept's (a runbook summary maps to
                    # a v2 histogram) must have the series the suffix names
                    kinds = {ref.kind or c.kind, c.kind}
                    if ref.name != base or (suffix and not kinds & {"histogram", "summary"}):
                        continue
                    if suffix == "_bucket" and "histogram" not in kinds:
                        continue
                    if not ref.matches(given):
                        continue
                    approx = int(c.approximate and vocab == "v2")
                    candidates.append(((rank, approx, -len(ref.matchers)),
                                       Match(c, ref, vocab, suffix)))
        if candidates:
            break
    return min(candidates, key=lambda item: item[0])[1] if candidates else None


def real_name_for(name: str) -> str | None:
    """The real series for any name the runbook (or the server) uses, selector included.

    `fraiseql_db_connections{state="active"}` → `fraiseql_db_pool_connections_active`,
    `fraiseql_cache_hits_total` → `fraiseql_cache_hits`, a v2 name → itself; None when the
    catalog knows no real equivalent (the lint then suggests nothing).
    """
    ref = Ref.parse(name)
    found = lookup(ref.name, ref.labels)
    if found is None:
        return None
    if found.vocabulary != "runbook":
        return ref.name
    real = found.concept.real()
    return None if real is None else f"{real}{found.suffix}"


def reference_names() -> set[str]:
    """Series a v2 server can export (histograms as their _bucket/_sum/_count series) plus
    what Prometheus generates: the lint's reference when no live scrape is at hand."""
    names = set(PROMETHEUS_GENERATED)
    for c in CATALOG:
        for ref in c.v2:
            kind = ref.kind or c.kind
            if kind == "histogram":
                names.update(ref.name + s for s in HISTOGRAM_SUFFIXES)
            elif kind == "summary":
                names.update(ref.name + s for s in ("", "_sum", "_count"))
            else:
                names.add(ref.name)
    return names


# ---- scrapes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    name: str  # as exposed (and stored by Prometheus), not as prometheus_client renames it
    labels: Mapping[str, str]
    value: float


@dataclass
class Scrape:
    """One /metrics page, parsed. `monotonic` orders scrapes for rates; `wall` is for people."""

    series: dict[str, list[Sample]]
    families: dict[str, Any]  # prometheus_client Metric objects by family name
    monotonic: float
    wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str | None = None

    def names(self) -> set[str]:
        """Every series name on the page, as Prometheus stores it (an alert's vocabulary)."""
        return set(self.series)

    def samples(self, name: str, ref: Ref | None = None, **labels: str) -> list[Sample]:
        """Samples of one series name matching `ref`'s matchers and the given labels."""
        return [s for s in self.series.get(name, ())
                if (ref is None or ref.matches(s.labels))
                and all(s.labels.get(k) == v for k, v in labels.items())]

    def type_of(self, name: str) -> str | None:
        family = self.families.get(name)
        return None if family is None else family.type


_SAMPLE_LINE = re.compile(r"^[ \t]*([A-Za-z_:][A-Za-z0-9_:]*)", re.M)


def parse(text: str, taken_at: float | None = None, *, source: str | None = None) -> Scrape:
    """Parse Prometheus text exposition. `taken_at` is a time.monotonic() reading (default
    now); tests pass their own to make rates exact."""
    exposed = {m.group(1) for m in _SAMPLE_LINE.finditer(text)}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, TypeError) as exc:
        raise ScrapeError(f"metrics page is not Prometheus text: {exc}") from None
    series: dict[str, list[Sample]] = defaultdict(list)
    for family in families:
        for s in family.samples:
            name = s.name
            if name not in exposed and name.endswith("_total") and name[:-6] in exposed:
                name = name[:-6]  # the parser appended _total to a counter exposed without it
            series[name].append(Sample(name, dict(s.labels), float(s.value)))
    return Scrape(series=dict(series), families={f.name: f for f in families},
                  monotonic=time.monotonic() if taken_at is None else taken_at, source=source)


def scrape(ctx: RunContext, base_url: str | None = None) -> Scrape:
    """GET the target's /metrics (bearer token from the inventory) and parse it.

    Anything but a 200 raises ScrapeError naming the fix, so a `@check` records `unknown`.
    """
    from fraiseql_rb.targets import (
        service,  # service imports the context machinery; keep this module light
    )

    with service.client(ctx) as http:
        probe = service.scrape(ctx, http, base_url)
    if probe.skipped:
        raise ScrapeSkipped(probe.skipped)
    if not probe.reachable:
        raise ScrapeError(f"metrics endpoint {probe.url} unreachable: {probe.error}")
    hints = {
        401: "the endpoint needs a bearer token: set metrics_token_env or metrics_token_file",
        403: "the metrics token was rejected: check metrics_token for this target",
        404: "metrics are not mounted: the server needs metrics_enabled=true and a "
             "metrics_token",
        429: "the server refuses this address after failed token attempts: fix the token, "
             "wait, retry",
    }
    if probe.status_code != 200:
        hint = hints.get(probe.status_code or 0, "see the server log")
        raise ScrapeError(f"metrics endpoint {probe.url} answered HTTP {probe.status_code}: "
                          f"{hint}")
    return parse(str(probe.body), source=probe.url)


# ---- reading concepts ----------------------------------------------------------------------

@dataclass(frozen=True)
class Resolution:
    """Where a concept was found on a page, and how far to trust it."""

    concept: Concept
    ref: Ref
    name: str  # the series name present on the page (may be the _total-toggled spelling)
    vocabulary: Vocabulary
    approximate: bool

    @property
    def kind(self) -> Kind:
        return self.ref.kind or self.concept.kind

    @property
    def note(self) -> str:
        return self.concept.note


def _present(page: Scrape, name: str, ref: Ref, kind: Kind) -> bool:
    if kind == "histogram":
        return any("le" in s.labels for s in page.samples(f"{name}_bucket", ref))
    if kind == "summary":
        return (any("quantile" in s.labels for s in page.samples(name, ref))
                or bool(page.samples(f"{name}_count", ref)))
    return bool(page.samples(name, ref))


def _held(names: AbstractSet[str], name: str, kind: Kind) -> bool:
    """Is the series among the names Prometheus holds? (Names only: no labels to match.)"""
    if kind == "histogram":
        return f"{name}_bucket" in names
    if kind == "summary":
        return name in names or f"{name}_count" in names
    return name in names


def _toggle_total(name: str) -> str:
    return name[:-6] if name.endswith("_total") else f"{name}_total"


def resolve(page: Scrape | AbstractSet[str], which: Concept | str) -> Resolution | None:
    """The first name of the concept present on the page: v2, then exporter, then runbook.

    `page` is a scrape, or the set of series names Prometheus holds for a job (then a ref's
    label matchers are not checked here but go into the query, see `prometheus.Series.find`).
    An exact name beats a `_total`-toggled counter spelling in any vocabulary, so a runbook
    page's `fraiseql_cache_hits_total` resolves as the runbook's, not as v2's.
    """
    c = concept(which)
    for lenient in (False, True):
        for vocab in VOCABULARIES:
            for ref in c.refs(vocab):
                kind = ref.kind or c.kind
                if lenient and kind != "counter":
                    continue
                name = _toggle_total(ref.name) if lenient else ref.name
                present = (_present(page, name, ref, kind) if isinstance(page, Scrape)
                           else _held(page, name, kind))
                if present:
                    return Resolution(c, ref, name, vocab, c.approximate and vocab == "v2")
    return None


def looked_for(which: Concept | str) -> list[str]:
    """Every series name a concept is looked up under (v2, exporter, runbook), in order."""
    c = concept(which)
    return list(dict.fromkeys(str(ref) for vocab in VOCABULARIES for ref in c.refs(vocab)))


def unavailable(*which: Concept | str) -> str:
    """What a check says about concepts absent from a scrape that did answer: unavailable,
    with the names looked for (never "no /metrics page": the page was there)."""
    parts = [f"{concept(c).name} ({', '.join(looked_for(c)) or 'no known name'})"
             for c in which]
    return "not exported here (another release, a proxy or an exporter with other names); " \
           "looked for " + "; ".join(parts)


def missing(page: Scrape | AbstractSet[str], *which: Concept | str) -> list[str]:
    """The concepts among `which` that the page (or Prometheus' names) does not have."""
    return [concept(c).name for c in which if resolve(page, c) is None]


def _count_series(res: Resolution) -> str:
    """Histograms and summaries are counted through `_count`; others are their own series."""
    return f"{res.name}_count" if res.kind in ("histogram", "summary") else res.name


def value(page: Scrape, which: Concept | str, **labels: str) -> float | None:
    """The concept's value: the sum over matching series (observation count for histograms).
    None when the concept is absent or no series matches `labels`."""
    res = resolve(page, which)
    if res is None:
        return None
    samples = page.samples(_count_series(res), res.ref, **labels)
    return sum(s.value for s in samples) if samples else None


def by_label(page: Scrape, which: Concept | str, label: str) -> dict[str, float]:
    """The concept summed per value of one label (a missing label counts as "")."""
    res = resolve(page, which)
    out: dict[str, float] = defaultdict(float)
    if res is not None:
        for s in page.samples(_count_series(res), res.ref):
            out[s.labels.get(label, "")] += s.value
    return dict(out)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile on (upper bound, cumulative count) pairs.

    Same interpolation as promql/quantile.go (bucketQuantile): linear within the bucket, the
    lowest bucket starting at 0, a rank in the +Inf bucket answered with the highest finite
    bound. None where Prometheus answers NaN (no +Inf bucket, fewer than two buckets, or no
    observations).
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    merged: dict[float, float] = defaultdict(float)
    for bound, count in buckets:
        merged[bound] += count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    running, fixed = 0.0, []
    for bound, count in ordered:  # ensureMonotonic: scrapes racing observations can dip
        running = max(running, count)
        fixed.append((bound, running))
    observations = fixed[-1][1]
    if observations == 0:
        return None
    rank = q * observations
    b = next((i for i in range(len(fixed) - 1) if fixed[i][1] >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[b][0], fixed[b][1]
    if b > 0:
        start = fixed[b - 1][0]
        count -= fixed[b - 1][1]
        rank -= fixed[b - 1][1]
    return start + (end - start) * (rank / count)


def _bucket_counts(page: Scrape, res: Resolution, labels: Mapping[str, str]
                   ) -> dict[tuple[tuple[str, str], ...], float]:
    """Each matching bucket series by its full label set (le included)."""
    return {tuple(sorted(s.labels.items())): s.value
            for s in page.samples(f"{res.name}_bucket", res.ref, **labels)}


def _by_le(counts: Mapping[tuple[tuple[str, str], ...], float]) -> list[tuple[float, float]]:
    """sum by (le): the buckets of every selected series added up per bound."""
    return [(float(dict(key)["le"]), count) for key, count in counts.items()
            if "le" in dict(key)]


def _summary_quantile(page: Scrape, res: Resolution, q: float,
                      labels: Mapping[str, str]) -> float | None:
    """A summary's own quantile. Quantiles of several series cannot be combined; the worst
    (largest) is returned, the conservative reading for a latency check."""
    values = [s.value for s in page.samples(res.name, res.ref, **labels)
              if "quantile" in s.labels and math.isclose(float(s.labels["quantile"]), q)
              and not math.isnan(s.value)]
    return max(values) if values else None


def quantile(page: Scrape, which: Concept | str, q: float, **labels: str) -> float | None:
    """The q-quantile since the server started, over all series matching `labels`."""
    res = resolve(page, which)
    if res is None:
        return None
    if res.kind == "summary":
        return _summary_quantile(page, res, q, labels)
    if res.kind != "histogram":
        raise ValueError(f"{res.concept.name} is a {res.kind}; quantiles need a histogram")
    return histogram_quantile(q, _by_le(_bucket_counts(page, res, labels)))


def _increase(before: float | None, after: float) -> float:
    """Counter increase between two readings; a drop means the process restarted from 0."""
    if before is None or after < before:
        return after
    return after - before


def _elapsed(earlier: Scrape, later: Scrape) -> float:
    elapsed = later.monotonic - earlier.monotonic
    if elapsed <= 0:
        raise ValueError("the later scrape must be taken after the earlier one")
    return elapsed


def rate(earlier: Scrape, later: Scrape, which: Concept | str, **labels: str) -> float | None:
    """Per-second increase between two scrapes, counter resets handled per series (as
    Prometheus' rate() does). Histograms and summaries give their observation rate."""
    res = resolve(later, which)
    if res is None:
        return None
    if res.kind == "gauge":
        raise ValueError(f"{res.concept.name} is a gauge: rate() of a gauge is meaningless")
    elapsed = _elapsed(earlier, later)
    name = _count_series(res)
    before = {tuple(sorted(s.labels.items())): s.value
              for s in earlier.samples(name, res.ref, **labels)}
    after = later.samples(name, res.ref, **labels)
    if not after:
        return None
    total = sum(_increase(before.get(tuple(sorted(s.labels.items()))), s.value) for s in after)
    return total / elapsed


def quantile_between(earlier: Scrape, later: Scrape, which: Concept | str, q: float,
                     **labels: str) -> float | None:
    """The q-quantile of what was observed between two scrapes (latency "right now").

    Computed on bucket increases, as `histogram_quantile(q, sum by (le) (increase(..)))`.
    A summary cannot be differenced; its client already computes quantiles over a sliding
    window, so the later page's own quantile is the closest available answer.
    """
    res = resolve(later, which)
    if res is None:
        return None
    if res.kind == "summary":
        return _summary_quantile(later, res, q, labels)
    if res.kind != "histogram":
        raise ValueError(f"{res.concept.name} is a {res.kind}; quantiles need a histogram")
    _elapsed(earlier, later)
    before = _bucket_counts(earlier, res, labels)
    deltas = {key: _increase(before.get(key), count)
              for key, count in _bucket_counts(later, res, labels).items()}
    return histogram_quantile(q, _by_le(deltas))


def overview(page: Scrape) -> pd.DataFrame:
    """Every concept as this page reports it: value, the name it came from, how exact."""
    rows = []
    for c in CATALOG:
        res = resolve(page, c)
        rows.append({
            "concept": c.name, "value": value(page, c) if res else None, "unit": c.unit,
            "series": str(res.ref) if res else None,
            "vocabulary": res.vocabulary if res else None,
            "approximate": res.approximate if res else None,
            "note": c.note if res is None or res.approximate else "",
        })
    return pd.DataFrame(rows)
