"""Runbook §4.1 "Issue: Authentication Failures": a spike in failed logins, and why.

The runbook lists four root causes (PostgreSQL user issues, certificate expiration, OIDC
provider down, rate limit triggered) and five steps (check PostgreSQL logs, verify the TLS
certificate, check the OIDC provider, monitor rate limiting, scale up if under attack). The
cause step 5 assumes but does not list is somebody guessing passwords. Here each step is a
check and the diagnosis picks from this vocabulary:

- `credential_attack`: failures far above the preceding baseline, concentrated on a few
  client addresses (a distributed spike scores lower: it may also be a broken client);
- `postgres_auth`: the application role cannot log in to PostgreSQL (SQLSTATE 28P01, or the
  role is missing, NOLOGIN or past its VALID UNTIL);
- `certificate_expired`: the server's certificate (or the identity provider's, or
  PostgreSQL's) has expired, so verifying clients refuse the handshake;
- `oidc_provider_down`: the discovery document or the JWKS cannot be fetched over verified
  HTTPS, or publishes no keys, so no token can be validated once the cached keys age out;
- `rate_limit_triggered`: the rate limiter is refusing requests (rate_limit_exceeded events
  above baseline, or 429s counted by an exact metric);
- `none`: nothing above.

Failures are counted from the target's audit source (`fraiseql_rb.checks.audit`: the runbook's
table, the v2 table or JSON-lines) in [now - window_hours, now), against `baseline_windows`
windows of the same length just before it. Nothing here changes the system: blocking
addresses and scaling are recommendations (§4.1 step 5) for a person.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pandas as pd
from matplotlib.figure import Figure
from psycopg.conninfo import conninfo_to_dict

from fraiseql_rb.checks import audit, config, tls
from fraiseql_rb.core import plots, progress, reachability, thresholds
from fraiseql_rb.core.context import RunContext, check, describe_error
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import Finding, Status, isoformat, utcnow
from fraiseql_rb.targets import metrics, postgres

# Defaults of the notebook's parameters: defined (value, unit, why) in thresholds.CATALOGUE.
WINDOW_HOURS = thresholds.AUTH_WINDOW_HOURS  # "spike": the last hour
BASELINE_WINDOWS = thresholds.AUTH_BASELINE_WINDOWS  # the preceding day, window by window
SPIKE_FACTOR = thresholds.AUTH_SPIKE_FACTOR  # far above: times the baseline's mean ...
MIN_FAILURES = thresholds.AUTH_MIN_FAILURES  # ... and at least this many
IP_MIN_FAILURES = thresholds.AUTH_IP_MIN_FAILURES  # an address with this many is a source
FEW_IPS = thresholds.AUTH_FEW_IPS  # "concentrated": at most this many such addresses ...
CONCENTRATION = thresholds.AUTH_CONCENTRATION  # ... make at least this share of the failures
RATE_SAMPLE_S = thresholds.AUTH_RATE_SAMPLE_S  # between two /metrics scrapes
OIDC_DEFAULT_TTL_S = thresholds.OIDC_DEFAULT_TTL_S  # v2 jwks_cache_ttl_secs when not set
ROLE_EXPIRY_WARNING_DAYS = thresholds.CERT_EXPIRY_DAYS.warning  # VALID UNTIL approaching

VOCABULARY = Vocabulary("auth-failures", {
    "none": "no cause found: failures are at their usual level and PostgreSQL, the "
            "certificate, the identity provider and the rate limiter are fine; if users still "
            "report failures, read the server log for their request ids",
    "credential_attack": "block the attacking addresses at the load balancer or WAF, keep "
                         "rate limiting on (its Redis backend fails open), reset or lock the "
                         "targeted accounts, and tell the security team (see the "
                         "manual.attack_response finding for the exact list)",
    "postgres_auth": "fix the application role: compare its password with the secret the "
                     "server uses (DATABASE_URL), check VALID UNTIL and LOGIN "
                     "(ALTER ROLE ... ), and pg_hba.conf; the PostgreSQL log names the "
                     "refusal (§4.1 step 1)",
    "certificate_expired": "renew the expired certificate and reload what serves it "
                           f"(§4.1 step 2); {tls.RENEWAL_RUNBOOK}",
    "oidc_provider_down": "the identity provider is unreachable or publishes no keys: check "
                          "its status page and the network path to it; tokens fail once the "
                          "server's cached keys expire (jwks_cache_ttl_secs); escalate to its "
                          "owner (§4.1 step 3)",
    "rate_limit_triggered": "the rate limiter refuses clients: find who from the top "
                            "addresses and users; raise rps_per_ip/rps_per_user only for "
                            "legitimate traffic, and block abusive addresses instead "
                            "(§4.1 step 4)",
}, fallback="none", severity={"rate_limit_triggered": Status.WARNING})


def _num(value: float | None, digits: int = 1) -> str:
    return "?" if value is None else f"{value:,.{digits}f}".rstrip("0").rstrip(".")


# ---- 1. failures against the baseline -----------------------------------------------------

@dataclass(frozen=True)
class Spike:
    """A window's count against the windows before it."""

    count: int
    mean: float
    stddev: float
    max: int
    windows: int
    ratio: float | None  # count / mean; None when the baseline is 0
    spike: bool


def judge(count: int, mean: float, stddev: float, maximum: int, windows: int, *,
          spike_factor: float = SPIKE_FACTOR, min_count: int = MIN_FAILURES) -> Spike:
    """Far above baseline: at least `min_count` and at least `spike_factor` × the mean."""
    ratio = count / mean if mean > 0 else None
    spike = count >= min_count and count >= spike_factor * mean
    return Spike(count, mean, stddev, maximum, windows, ratio, spike)


def compare(ctx: RunContext, start: datetime, end: datetime, kinds: list[str],
            baseline_windows: int, spike_factor: float, min_count: int) -> dict[str, Spike]:
    """Each kind's count in [start, end) judged against `baseline_windows` windows before."""
    now = audit.counts(ctx, start, end, kinds).set_index("kind")["count"]
    base = audit.baseline(ctx, start, end, kinds, windows=baseline_windows).set_index("kind")
    return {k: judge(int(now[k]), float(base.loc[k, "mean"]), float(base.loc[k, "stddev"]),
                     int(base.loc[k, "max"]), int(base.loc[k, "windows"]),
                     spike_factor=spike_factor, min_count=min_count) for k in kinds}


def _table(spikes: dict[str, Spike]) -> pd.DataFrame:
    return pd.DataFrame([{"kind": k, "in window": s.count, "baseline mean": round(s.mean, 2),
                          "baseline stddev": round(s.stddev, 2), "baseline max": s.max,
                          "× mean": None if s.ratio is None else round(s.ratio, 1),
                          "spike": s.spike} for k, s in spikes.items()])


@check("auth.failures")
def check_failures(ctx: RunContext, start: datetime, end: datetime, *,
                   baseline_windows: int = BASELINE_WINDOWS,
                   spike_factor: float = SPIKE_FACTOR,
                   min_failures: int = MIN_FAILURES) -> Finding:
    """Failed authentications in the window against the `baseline_windows` windows before
    it (the runbook's "spike in auth failures"). Other kinds are shown alongside."""
    kinds = ["auth_failure", "rate_limited", "authorization_denied", "csrf_failure"]
    spikes = compare(ctx, start, end, kinds, baseline_windows, spike_factor, min_failures)
    s = spikes["auth_failure"]
    hours = (end - start).total_seconds() / 3600
    evidence = {"window": [isoformat(start), isoformat(end)], "window_hours": hours,
                "source": audit.source(ctx).label, "count": s.count,
                "baseline_windows": s.windows, "baseline_mean": round(s.mean, 3),
                "baseline_stddev": round(s.stddev, 3), "baseline_max": s.max,
                "ratio": None if s.ratio is None else round(s.ratio, 2), "spike": s.spike,
                "spike_factor": spike_factor, "min_failures": min_failures,
                "others": {k: {"count": v.count, "baseline_mean": round(v.mean, 3),
                               "spike": v.spike} for k, v in spikes.items()
                           if k != "auth_failure"}}
    baseline = (f"baseline mean of {_num(s.mean, 2)} per {_num(hours, 2)} h (max {s.max} in "
                f"the {s.windows} windows before)")
    if s.spike:
        times = (f"{s.ratio:.0f}× the {baseline}" if s.ratio
                 else f"against a {baseline}")
        return ctx.result(Status.CRITICAL,
                          f"{s.count} failed authentications in the last {_num(hours, 2)} h: "
                          f"{times}", evidence,
                          "see where they come from (next step) before acting",
                          table=_table(spikes))
    return ctx.result(Status.OK,
                      f"{s.count} failed authentications in the last {_num(hours, 2)} h "
                      f"against a {baseline}: no spike (needs ≥ {min_failures} and ≥ "
                      f"{spike_factor:g}× the mean)", evidence, table=_table(spikes))


def failures_plot(ctx: RunContext, start: datetime, end: datetime, *,
                  baseline_windows: int = BASELINE_WINDOWS,
                  spike_factor: float = SPIKE_FACTOR,
                  min_failures: int = MIN_FAILURES) -> Figure | Finding:
    """Failures and rate-limit events per hour over the baseline and the window, with the
    spike threshold (per hour). A failure to draw is an `unknown` finding, not a crash."""
    try:
        span = end - start
        first = start - baseline_windows * span
        frame = audit.hourly(ctx, first, end, ["auth_failure", "rate_limited"])
        wide = frame.pivot(index="hour", columns="kind", values="count")
        base = audit.baseline(ctx, start, end, ["auth_failure"], windows=baseline_windows)
        per_hour = span.total_seconds() / 3600
        bar = max(min_failures, spike_factor * float(base["mean"].iloc[0])) / per_hour
        fig = plots.timeseries(
            wide.rename(columns={"auth_failure": "failed authentications",
                                 "rate_limited": "rate-limit events"}),
            title="Authentication failures per hour (audit log)", ylabel="events per hour",
            thresholds=[plots.ThresholdLine(bar, f"spike ≥ {bar:.0f}/h", "critical")])
        fig.axes[0].axvspan(_naive(start), _naive(end), color="#cf222e", alpha=0.08,
                            label="window")
        return fig
    except Exception as exc:  # noqa: BLE001 - a plot never stops the playbook
        return ctx.record("auth.plot", Status.UNKNOWN,
                          f"could not draw the failures: {describe_error(exc)}",
                          {"error": type(exc).__name__})


def _naive(moment: datetime) -> datetime:
    """UTC without tzinfo, as the plot helpers draw times."""
    return pd.Timestamp(moment).tz_convert("UTC").tz_localize(None).to_pydatetime()


# ---- 2. where they come from --------------------------------------------------------------

@check("auth.sources")
def check_sources(ctx: RunContext, start: datetime, end: datetime, *,
                  top_n: int = thresholds.TOP_N,
                  ip_min_failures: int = IP_MIN_FAILURES, few_ips: int = FEW_IPS,
                  concentration: float = CONCENTRATION) -> Finding:
    """Failures by reason, client address and user: a few addresses with many failures is an
    attack; many addresses with a few each, a broken client or a systemic cause."""
    total = int(audit.counts(ctx, start, end, ["auth_failure"])["count"].iloc[0])
    by = {b: audit.top(ctx, start, end, "auth_failure", by=b, limit=top_n)
          for b in ("ip", "user", "reason")}
    ips = by["ip"]
    heavy = ips[ips["count"] >= ip_min_failures]
    share = float(heavy["count"].sum()) / total if total else 0.0
    concentrated = 0 < len(heavy) <= few_ips and share >= concentration
    attackers = [{"ip": r["ip"], "count": int(r["count"]), "users": int(r["users"]),
                  "first_seen": r["first_seen"], "last_seen": r["last_seen"]}
                 for r in heavy.to_dict("records")]
    parts = [f.rename(columns={b: "value"}).assign(by=b) for b, f in by.items() if not f.empty]
    table = pd.concat(parts, ignore_index=True)[
        ["by", "value", "count", "ips", "users", "first_seen", "last_seen"]] if parts else None
    evidence = {"total": total, "attacking_ips": attackers, "share_of_failures": round(share, 3),
                "concentrated": concentrated, "ip_min_failures": ip_min_failures,
                "few_ips": few_ips, "concentration": concentration,
                "top_ips": _records(by["ip"], "ip"), "top_users": _records(by["user"], "user"),
                "top_reasons": _records(by["reason"], "reason")}
    if total == 0:
        return ctx.result(Status.OK, "no failed authentication in the window",
                          evidence)
    reasons = ", ".join(f"{r['reason'] or '(none)'} {r['count']}"
                        for r in evidence["top_reasons"][:3])
    if concentrated:
        named = ", ".join(f"{a['ip']} ({a['count']})" for a in attackers)
        return ctx.result(Status.CRITICAL,
                          f"{share:.0%} of the {total} failures come from {len(attackers)} "
                          f"address(es): {named}; reasons: {reasons}", evidence,
                          "block these addresses at the load balancer (step 7 lists how)",
                          table=table)
    spread = len(ips)
    failures = ctx.latest("auth.failures")
    spiking = bool(failures and failures.evidence.get("spike"))
    status = Status.WARNING if spiking else Status.OK  # a spread-out spike: a shared cause
    return ctx.result(status,
                      f"{total} failures spread over {spread}{'+' if spread >= top_n else ''} "
                      f"address(es), none dominant; reasons: {reasons}", evidence,
                      "many sources failing at once points at a shared cause (certificate, "
                      "identity provider, a client release): see the next steps"
                      if status is Status.WARNING else None, table=table)


def _records(frame: pd.DataFrame, key: str) -> list[dict[str, Any]]:
    return [{key: r[key], "count": int(r["count"]), "ips": int(r["ips"]),
             "users": int(r["users"])} for r in frame.to_dict("records")]


# ---- 3. PostgreSQL authentication of the application role ---------------------------------

ROLE_SQL = """
SELECT r.rolname AS role, r.rolcanlogin AS can_login, r.rolvaliduntil AS valid_until,
       r.rolconnlimit AS connection_limit,
       (SELECT count(*) FROM pg_stat_activity AS a WHERE a.usename = r.rolname) AS connections
FROM pg_roles AS r
WHERE r.rolname = %(role)s
"""


@check("postgres.auth")
def check_postgres_auth(ctx: RunContext,
                        connect_timeout_s: float = thresholds.DB_CONNECT_TIMEOUT_S) -> Finding:
    """§4.1 step 1: can the application role log in with the target's URL? A refusal is
    classified (28P01 wrong password, 28000 pg_hba or unknown role); the role's LOGIN,
    VALID UNTIL and connection limit are read from pg_roles (through the admin URL when the
    role itself is refused)."""
    url = ctx.target.database_url()
    result = postgres.attempt(url, connect_timeout_s)
    user = conninfo_to_dict(url).get("user")
    evidence: dict[str, Any] = {"user": user, "failure": result.failure.code,
                                "sqlstate": result.failure.sqlstate, "error": result.error,
                                "connect_ms": result.connect_ms, "ssl": result.ssl}
    role = _role(ctx, url if result.failure.code == "none" else None, user)
    if role is not None:
        evidence["role"] = role
    problem = _role_problem(role, user)
    if result.failure.code == "none":
        expiring = _expires_soon(role)
        if expiring:
            return ctx.result(Status.WARNING,
                              f"{user} logs in, but its password expires {expiring}", evidence,
                              f"renew it before then: ALTER ROLE {user} VALID UNTIL ...")
        return ctx.result(Status.OK,
                          f"{user} logs in to PostgreSQL in {result.connect_ms} ms"
                          f"{' over TLS' if result.ssl else ''}", evidence)
    code = result.failure.code
    evidence["cause"] = problem
    if code == "auth_rejected":
        why = f"; {problem}" if problem else ""
        return ctx.result(Status.CRITICAL,
                          f"PostgreSQL refuses the application role {user} "
                          f"(SQLSTATE {result.failure.sqlstate}): "
                          f"{result.failure.explanation}{why}", evidence,
                          VOCABULARY.remediation["postgres_auth"])
    if code == "tls_error" and "expired" in (result.error or ""):
        evidence["certificate_expired"] = True
        return ctx.result(Status.CRITICAL,
                          f"PostgreSQL's certificate has expired: {result.failure.explanation}",
                          evidence, VOCABULARY.remediation["certificate_expired"])
    return ctx.result(Status.CRITICAL,
                      f"the database cannot be reached ({code}): {result.failure.explanation}",
                      evidence, "run the database-unavailable playbook")


def _role(ctx: RunContext, url: str | None, user: str | None) -> dict[str, Any] | None:
    """The role's row of pg_roles, through `url` or else the admin URL; None if unreadable."""
    if not user:
        return None
    url = url or ctx.target.admin_database_url()
    if url is None:
        return None
    try:
        with postgres.connect(url) as conn:
            row = postgres.one(conn, ROLE_SQL, {"role": user})
    except Exception:  # noqa: BLE001 - the role's row is a detail; the attempt is the check
        return None
    return row or {"role": user, "exists": False}


def _role_problem(role: dict[str, Any] | None, user: str | None) -> str | None:
    if role is None:
        return None
    if role.get("exists") is False:
        return f"the role {user} does not exist"
    if not role.get("can_login"):
        return f"the role {user} is NOLOGIN"
    until = role.get("valid_until")
    if until is not None and until <= utcnow():
        return f"the role's password expired on {isoformat(until)} (VALID UNTIL)"
    limit, connections = role.get("connection_limit"), role.get("connections")
    if limit is not None and limit >= 0 and connections is not None and connections >= limit:
        return f"the role is at its connection limit ({connections} of {limit})"
    return None


def _expires_soon(role: dict[str, Any] | None) -> str | None:
    until = (role or {}).get("valid_until")
    if until is None:
        return None
    days = (until - utcnow()).total_seconds() / 86400
    if days <= ROLE_EXPIRY_WARNING_DAYS:
        return f"on {isoformat(until)} (in {days:.1f} days)"
    return None


# ---- 4. the server's certificate ---------------------------------------------------------

def check_certificate(ctx: RunContext) -> list[Finding]:
    """§4.1 step 2 `openssl x509 -text`: the certificate `fraiseql_url` serves, its expiry,
    host name and chain (against the target's CA bundle)."""
    try:
        url = ctx.target.fraiseql_url
    except Exception as exc:  # noqa: BLE001
        return [ctx.record("tls.fraiseql.protocol", Status.UNKNOWN,
                           f"could not run the check: {describe_error(exc)}",
                           {"error": type(exc).__name__})]
    return tls.check_endpoint_tls(ctx, url, name="fraiseql",
                                  ca_bundle=ctx.target.get("ca_bundle"))


# ---- 5. the OIDC provider ----------------------------------------------------------------

@dataclass(frozen=True)
class OidcSettings:
    issuer: str | None
    jwks_uri: str | None
    ttl_s: int | None
    ttl_source: str
    issuer_source: str


def oidc_settings(ctx: RunContext) -> OidcSettings:
    """Issuer and JWKS cache TTL: inventory `oidc_issuer`, else the server config's
    `[auth] issuer` (v2) and `jwks_cache_ttl_secs` (the runbook's file: `[oidc]
    cache_ttl_secs`)."""
    data: dict[str, Any] = {}
    path = ctx.target.get("config_path")
    if path:
        try:
            doc = config.load(path)
            data = doc.data if doc.error is None else {}
        except UsageError:
            data = {}
    auth = data.get("auth") if isinstance(data.get("auth"), dict) else {}
    oidc = data.get("oidc") if isinstance(data.get("oidc"), dict) else {}
    issuer, issuer_source = ctx.target.get("oidc_issuer"), "inventory oidc_issuer"
    if not issuer and auth.get("issuer"):
        issuer, issuer_source = auth["issuer"], f"[auth] issuer in {path}"
    ttl: int | None = None
    ttl_source = "no config_path" if not path else "not set"
    if isinstance(auth.get("jwks_cache_ttl_secs"), int):
        ttl, ttl_source = auth["jwks_cache_ttl_secs"], f"[auth] jwks_cache_ttl_secs in {path}"
    elif auth:
        ttl, ttl_source = OIDC_DEFAULT_TTL_S, "v2 default (jwks_cache_ttl_secs not set)"
    elif isinstance(oidc.get("cache_ttl_secs"), int):
        ttl, ttl_source = oidc["cache_ttl_secs"], f"[oidc] cache_ttl_secs in {path}"
    jwks_uri = auth.get("jwks_uri") if isinstance(auth.get("jwks_uri"), str) else None
    return OidcSettings(str(issuer).rstrip("/") if issuer else None, jwks_uri, ttl,
                        ttl_source, issuer_source if issuer else "none")


@dataclass(frozen=True)
class Fetch:
    url: str
    status_code: int | None
    body: Any
    error: str | None
    tls_problem: str | None  # "expired", "untrusted", ... when verification failed
    elapsed_ms: float | None


def fetch_json(http: httpx.Client, url: str) -> Fetch:
    started = time.perf_counter()
    try:
        response = http.get(url)
    except httpx.HTTPError as exc:
        text = str(exc)
        problem = None
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            problem = "expired" if "expired" in text else (
                "not yet valid" if "not yet valid" in text else "untrusted")
        error = (f"TLS verification failed ({problem})" if problem
                 else "timed out" if isinstance(exc, httpx.TimeoutException)
                 else "connection refused or host unreachable"
                 if isinstance(exc, httpx.ConnectError) else type(exc).__name__)
        return Fetch(url, None, None, error, problem, None)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    try:
        body = response.json()
    except ValueError:
        body = None
    return Fetch(url, response.status_code, body, None, None, elapsed)


def oidc_client(ctx: RunContext) -> httpx.Client:
    """HTTPS to the identity provider, verified against the system's roots *and* the target's
    CA bundle: a private CA for the server must not make a public provider untrusted."""
    verify = ssl.create_default_context()
    bundle = ctx.target.get("ca_bundle")
    if bundle:
        verify.load_verify_locations(cafile=bundle)
    return reachability.Client(timeout=thresholds.HTTP_TIMEOUT_S, verify=verify,
                               follow_redirects=True, memo=ctx.unresponsive)


def _fetch_summary(f: Fetch) -> str:
    if f.status_code is None:
        return f"{f.url}: {f.error}"
    return f"{f.url} answered HTTP {f.status_code}"


@check("oidc.provider")
def check_oidc(ctx: RunContext) -> list[Finding]:
    """§4.1 step 3: the identity provider's discovery document and JWKS, fetched over HTTPS
    verified with the system's roots and the target's CA bundle, and how many signing keys
    it publishes; then how long the server keeps using cached keys (`jwks_cache_ttl_secs`)."""
    st = oidc_settings(ctx)
    ttl_note = (f"the server caches the keys for {st.ttl_s} s ({st.ttl_source})"
                if st.ttl_s else f"the JWKS cache TTL is unknown ({st.ttl_source})")
    if not st.issuer:
        return [ctx.result(Status.INFO,
                           "no OIDC provider configured for this target (no oidc_issuer in the "
                           "inventory, no [auth] issuer in the server config): tokens are not "
                           "validated against one", {"configured": False})]
    evidence: dict[str, Any] = {"configured": True, "issuer": st.issuer,
                                "issuer_source": st.issuer_source, "jwks_cache_ttl_s": st.ttl_s,
                                "ttl_source": st.ttl_source}
    with oidc_client(ctx) as http:
        disco = fetch_json(http, f"{st.issuer}/.well-known/openid-configuration")
        evidence["discovery"] = {"url": disco.url, "http_status": disco.status_code,
                                 "error": disco.error, "elapsed_ms": disco.elapsed_ms}
        jwks_uri = st.jwks_uri or (disco.body.get("jwks_uri")
                                   if isinstance(disco.body, dict) else None)
        keys = None
        if jwks_uri:
            jwks = fetch_json(http, jwks_uri)
            body = jwks.body if isinstance(jwks.body, dict) else {}
            keys = len(body.get("keys") or []) if jwks.status_code == 200 else None
            evidence["jwks"] = {"url": jwks_uri, "http_status": jwks.status_code,
                                "error": jwks.error, "keys": keys,
                                "kids": [k.get("kid") for k in body.get("keys") or []
                                         if isinstance(k, dict)][:10]}
        else:
            jwks = None
    failed = [f for f in (disco, jwks) if f is not None and (f.status_code != 200)]
    tls_failure = next((f for f in failed if f.tls_problem), None)
    if tls_failure is not None:
        evidence["tls_problem"] = tls_failure.tls_problem
        fix = (VOCABULARY.remediation["certificate_expired"]
               if tls_failure.tls_problem == "expired" else
               "make the provider's certificate verify against ca_bundle (chain, host name)")
        return [ctx.result(Status.CRITICAL,
                           f"the identity provider's certificate does not verify "
                           f"({tls_failure.tls_problem}): {_fetch_summary(tls_failure)}; "
                           f"{ttl_note}", evidence, fix)]
    if failed:
        down = failed[0]
        evidence["down"] = True
        what = "discovery document" if down is disco else "JWKS"
        return [ctx.result(Status.CRITICAL,
                           f"the identity provider's {what} cannot be fetched: "
                           f"{_fetch_summary(down)}; once the cached keys age out every token "
                           f"fails — {ttl_note}", evidence,
                           VOCABULARY.remediation["oidc_provider_down"])]
    if not jwks_uri:
        evidence["down"] = True
        return [ctx.result(Status.CRITICAL,
                           f"the discovery document at {disco.url} names no jwks_uri: no key "
                           "can be fetched to validate tokens", evidence,
                           VOCABULARY.remediation["oidc_provider_down"])]
    if not keys:
        evidence["down"] = True
        return [ctx.result(Status.CRITICAL,
                           f"the provider's JWKS ({jwks_uri}) publishes no keys: no token can "
                           "be validated", evidence, VOCABULARY.remediation["oidc_provider_down"])]
    issuer_ok = isinstance(disco.body, dict) and str(disco.body.get("issuer", "")).rstrip(
        "/") == st.issuer
    evidence["issuer_matches"] = issuer_ok
    if not issuer_ok:
        return [ctx.result(Status.WARNING,
                           f"the discovery document names issuer "
                           f"{disco.body.get('issuer') if isinstance(disco.body, dict) else '?'}"
                           f", not {st.issuer}: tokens are rejected for an issuer mismatch",
                           evidence, "set [auth] issuer to exactly the provider's issuer URL")]
    return [ctx.result(Status.OK,
                       f"the identity provider answers: discovery and JWKS reachable over "
                       f"verified HTTPS, {keys} signing key(s); {ttl_note}", evidence)]


# ---- 6. rate limiting --------------------------------------------------------------------

@check("rate_limit")
def check_rate_limiting(ctx: RunContext, start: datetime, end: datetime, *,
                        baseline_windows: int = BASELINE_WINDOWS,
                        spike_factor: float = SPIKE_FACTOR, min_events: int = MIN_FAILURES,
                        sample_s: float = RATE_SAMPLE_S) -> list[Finding]:
    """§4.1 step 4 "Monitor rate limiting metrics": rate_limit_exceeded events against their
    baseline, 429s counted by the server over a short sample (two /metrics scrapes
    `sample_s` apart), the limiter's Redis failing open, and the configured limits."""
    out = [_rate_events(ctx, start, end, baseline_windows, spike_factor, min_events),
           _rate_metrics(ctx, sample_s)]
    configured = _rate_config(ctx)
    if configured is not None:
        out.append(configured)
    return out


def _rate_events(ctx: RunContext, start: datetime, end: datetime, baseline_windows: int,
                 spike_factor: float, min_events: int) -> Finding:
    try:
        s = compare(ctx, start, end, ["rate_limited"], baseline_windows, spike_factor,
                    min_events)["rate_limited"]
        src = audit.source(ctx)
    except Exception as exc:  # noqa: BLE001
        return ctx.record("rate_limit.events", Status.UNKNOWN,
                          f"could not count rate-limit events: {describe_error(exc)}",
                          {"error": type(exc).__name__})
    coverage = audit.COVERAGE[src.vocabulary]["rate_limited"][0]
    evidence = {"count": s.count, "baseline_mean": round(s.mean, 3), "spike": s.spike,
                "coverage": coverage, "source": src.label}
    if s.spike:
        top = audit.top(ctx, start, end, "rate_limited", by="ip", limit=5)
        evidence["top_ips"] = _records(top, "ip")
        return ctx.record("rate_limit.events", Status.WARNING,
                          f"{s.count} rate_limit_exceeded events in the window, against a "
                          f"baseline of {_num(s.mean, 2)}: the limiter is refusing clients "
                          f"(top: {', '.join(r['ip'] or '?' for r in evidence['top_ips'])})",
                          evidence, VOCABULARY.remediation["rate_limit_triggered"])
    return ctx.record("rate_limit.events", Status.OK,
                      f"{s.count} rate_limit_exceeded events in the window (baseline "
                      f"{_num(s.mean, 2)})" + (" — v2 logs none: see the 429 metric"
                                                if coverage != "exact" else ""), evidence)


def _rate_metrics(ctx: RunContext, sample_s: float) -> Finding:
    try:
        first = metrics.scrape(ctx)
        progress.pause(sample_s, "between the two /metrics scrapes")
        second = metrics.scrape(ctx)
    except Exception as exc:  # noqa: BLE001
        return ctx.record("rate_limit.metrics", Status.UNKNOWN,
                          f"could not read the server's metrics: {describe_error(exc)}",
                          {"error": type(exc).__name__},
                          "fix the metrics scrape (token, TLS) and rerun this step")
    res = metrics.resolve(second, "rate_limited")
    rate = metrics.rate(first, second, "rate_limited") if res else None
    fail_open = metrics.rate(first, second, "rate_limit_fail_open") \
        if metrics.resolve(second, "rate_limit_fail_open") else None
    total_4xx = metrics.value(second, "http_4xx")
    requests = metrics.value(second, "http_requests")
    evidence = {"sample_s": sample_s, "series": str(res.ref) if res else None,
                "approximate": res.approximate if res else None,
                "per_second": None if rate is None else round(rate, 3),
                "http_4xx_since_start": total_4xx, "http_requests_since_start": requests,
                "fail_open_per_second": fail_open,
                "note": res.note if res and res.approximate else None}
    if fail_open:
        return ctx.record("rate_limit.metrics", Status.WARNING,
                          f"the rate limiter is failing open ({fail_open:.2f}/s Redis errors): "
                          "nothing limits requests now", evidence,
                          "restore the limiter's Redis (v2 fails open when it is down)")
    if res is None:
        return ctx.record("rate_limit.metrics", Status.INFO,
                          "the server exports no metric for refused (429) requests", evidence)
    where = (f"{res.name} (any 4xx answer: an approximation of 429s)" if res.approximate
             else res.name)
    lifetime = (f"; {total_4xx:.0f} 4xx of {requests:.0f} requests since the server started"
                if total_4xx is not None and requests else "")
    if rate and not res.approximate:
        return ctx.record("rate_limit.metrics", Status.WARNING,
                          f"the server is refusing {rate:.2f} requests/s as rate limited "
                          f"({where}, over {sample_s:g} s)", evidence,
                          VOCABULARY.remediation["rate_limit_triggered"])
    return ctx.record("rate_limit.metrics", Status.OK if not rate else Status.INFO,
                      f"{_num(rate or 0.0, 2)} per s over {sample_s:g} s from {where}"
                      f"{lifetime}", evidence)


def _rate_config(ctx: RunContext) -> Finding | None:
    path = ctx.target.get("config_path")
    if not path:
        return None
    try:
        roles = config.settings_by_role(path)
    except Exception:  # noqa: BLE001 - the config step of other runbooks reports bad files
        return None
    evidence = {"enabled": roles.get("rate_enabled"), "rps_per_ip": roles.get("rate_rps_ip"),
                "burst_size": roles.get("rate_burst"), "config_path": str(path)}
    if roles.get("rate_enabled") is False:
        return ctx.record("rate_limit.config", Status.WARNING,
                          "rate limiting is disabled in the server config: an attack is not "
                          "slowed down", evidence,
                          "enable [rate_limiting] (enabled = true, rps_per_ip = 100)")
    return ctx.record("rate_limit.config", Status.INFO,
                      f"rate limiting configured: enabled={evidence['enabled']}, rps_per_ip="
                      f"{evidence['rps_per_ip']}, burst_size={evidence['burst_size']}", evidence)


# ---- 7. under attack (§4.1 step 5) -------------------------------------------------------

@check("manual.attack_response")
def attack_response(ctx: RunContext) -> Finding:
    """§4.1 step 5 "Scale up if under attack", made concrete: what a person does now."""
    sources = ctx.latest("auth.sources")
    failures = ctx.latest("auth.failures")
    attackers = (sources.evidence.get("attacking_ips") or []) if sources else []
    spike = bool(failures and failures.evidence.get("spike"))
    if not spike or not attackers:
        return ctx.result(Status.INFO,
                          "no attack pattern (no spike from a few addresses): nothing to "
                          "block, no scaling needed", {"needed": False})
    ips = [a["ip"] for a in attackers if a.get("ip")]
    users = [u["user"] for u in (sources.evidence.get("top_users") or [])
             if u.get("user")][:5] if sources else []
    steps = [
        f"1. Block at the load balancer / WAF: {', '.join(ips)} (nginx: "
        + " ".join(f"deny {ip};" for ip in ips) + "; or a security-group / firewall rule); "
        "the FraiseQL server itself has no deny list.",
        "2. Keep rate limiting on and its Redis reachable ([rate_limiting] fails open "
        "without it); lower rps_per_ip only if legitimate clients stay under it.",
        ("3. Protect the targeted accounts: " + ", ".join(users) +
         " — force a password reset or lock them; require MFA at the identity provider.")
        if users else "3. Check the identity provider for locked or compromised accounts.",
        "4. Scale out (§6.1) only if legitimate traffic suffers (P95 > 2 s or CPU > 70 %): "
        "more instances absorb an attack, they do not stop it.",
        "5. Tell the security team; this report's findings.json is the evidence (addresses, "
        "counts, first and last seen).",
    ]
    return ctx.result(Status.INFO,
                      f"under attack from {len(ips)} address(es): block them, protect the "
                      "targeted accounts, scale only if real users suffer",
                      {"needed": True, "block_ips": ips, "targeted_users": users,
                       "steps": steps}, " ".join(steps))


# ---- the diagnosis -----------------------------------------------------------------------

def candidates(ctx: RunContext) -> list[Candidate]:
    """The root causes the recorded steps support, for `diagnosis.conclude`."""
    out: list[Candidate] = []
    failures, sources = ctx.latest("auth.failures"), ctx.latest("auth.sources")
    spike = bool(failures and failures.evidence.get("spike"))
    if spike and sources is not None:
        ev = sources.evidence
        keep = {"failures": failures.evidence.get("count"),
                "baseline_mean": failures.evidence.get("baseline_mean"),
                "attacking_ips": [a["ip"] for a in ev.get("attacking_ips") or []],
                "share_of_failures": ev.get("share_of_failures")}
        if ev.get("concentrated"):
            out.append(Candidate("credential_attack", 0.9,
                                 f"{failures.summary}; {sources.summary}", keep))
        else:
            out.append(Candidate("credential_attack", 0.55,
                                 f"{failures.summary}, spread over many addresses (a "
                                 "distributed attack, or a broken client)", keep))
    pg = ctx.latest("postgres.auth")
    if pg is not None and pg.evidence.get("failure") == "auth_rejected":
        out.append(Candidate("postgres_auth", 0.95, pg.summary,
                             {k: pg.evidence.get(k) for k in ("user", "sqlstate", "cause")}))
    if pg is not None and pg.evidence.get("certificate_expired"):
        out.append(Candidate("certificate_expired", 0.9, pg.summary, {"where": "postgresql"}))
    expiry = ctx.latest("tls.fraiseql.expiry")
    if expiry is not None and (expiry.evidence.get("days_left") or 0) < 0:
        out.append(Candidate("certificate_expired", 0.95, expiry.summary,
                             {k: expiry.evidence.get(k) for k in
                              ("source", "subject_cn", "not_after", "days_left")}))
    oidc = ctx.latest("oidc.provider")
    if oidc is not None:
        ev = oidc.evidence
        if ev.get("tls_problem") == "expired":
            out.append(Candidate("certificate_expired", 0.9, oidc.summary,
                                 {"where": "identity provider", "issuer": ev.get("issuer")}))
        elif ev.get("tls_problem") or ev.get("down"):
            score = 0.7 if ev.get("tls_problem") else 0.9
            out.append(Candidate("oidc_provider_down", score, oidc.summary,
                                 {"issuer": ev.get("issuer"), "discovery": ev.get("discovery"),
                                  "jwks": ev.get("jwks"),
                                  "jwks_cache_ttl_s": ev.get("jwks_cache_ttl_s")}))
    events, rate = ctx.latest("rate_limit.events"), ctx.latest("rate_limit.metrics")
    if events is not None and events.evidence.get("spike"):
        out.append(Candidate("rate_limit_triggered", 0.8, events.summary,
                             {"count": events.evidence.get("count")}))
    if rate is not None and rate.evidence.get("per_second"):
        exact = rate.evidence.get("approximate") is False
        out.append(Candidate("rate_limit_triggered", 0.75 if exact else 0.35, rate.summary,
                             {"per_second": rate.evidence.get("per_second"),
                              "series": rate.evidence.get("series")}))
    if not any(c.score >= VOCABULARY.threshold for c in out):
        if failures is not None and failures.status is Status.OK:
            out.append(Candidate("none", 0.5, failures.summary,
                                 {"failures": failures.evidence.get("count")}))
        else:
            out.append(Candidate("none", 0.5, "no cause found by the checks that ran, but the "
                                 "failures could not be counted (see auth.failures): the "
                                 "verdict is incomplete", {"failures": None}))
    return out


def verdict_status(ctx: RunContext) -> Status | None:
    """The diagnosis' status when the evidence is incomplete: `unknown` when no cause was
    found and the failures themselves could not be counted (a `none` from checks that did
    not run is no all-clear); otherwise None, and `diagnosis.conclude` decides."""
    if any(c.score >= VOCABULARY.threshold and c.code != "none" for c in candidates(ctx)):
        return None
    failures = ctx.latest("auth.failures")
    return None if failures is not None and failures.status is not Status.UNKNOWN \
        else Status.UNKNOWN


def window(hours: float = WINDOW_HOURS, end: datetime | None = None
           ) -> tuple[datetime, datetime]:
    """[now - hours, now): the window the notebook investigates."""
    return audit.last_hours(hours, end)


def baseline_span(start: datetime, end: datetime, baseline_windows: int) -> timedelta:
    return (end - start) * baseline_windows


def describe(start: datetime, end: datetime, baseline_windows: int) -> str:
    """One line for the notebook: the window and its baseline."""
    first = start - baseline_span(start, end, baseline_windows)
    return (f"window {audit.describe_window(start, end)}; baseline "
            f"{audit.describe_window(first, start)} in {baseline_windows} windows")

