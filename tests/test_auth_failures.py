"""auth-failures drills: inject each fault into the sandbox, run the playbook through the CLI,
assert the diagnosis (credential_attack naming the three attacking addresses,
oidc_provider_down, certificate_expired) and that a healthy sandbox is `none`. Then the
PostgreSQL cause on a real cluster: a wrong password (28P01) and an expired role."""

from __future__ import annotations

import pytest
from drill_helpers import by_check, diagnosis_of, findings_of

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.diagnosis import conclude
from fraiseql_rb.core.findings import Status
from fraiseql_rb.incidents import auth_failures as playbook
from fraiseql_rb.sandbox import faults, manager
from fraiseql_rb.sandbox.cluster import APP_DB, APP_USER, SUPERUSER

drill = pytest.mark.drill
RUNBOOK = "auth-failures"
FAST = ("-p", "rate_sample_s", "1")  # the two /metrics scrapes need not be 10 s apart here


def require_fault(name: str) -> None:
    if name not in manager.FAULTS:
        pytest.skip(f"the sandbox has no {name!r} fault yet (fraiseql_rb/sandbox/faults.py)")


def attack_ips(sandbox) -> list[str]:
    sb = manager.Sandbox.open(sandbox.root)
    recorded = (sb.state.get("auth_attack") or {}).get("ips")
    return recorded or faults.attack_ips(int(sb.state.get("seed", 42)))


@drill
def test_auth_attack_is_a_credential_attack_naming_the_three_addresses(healthy_sandbox):
    require_fault("auth-attack")
    healthy_sandbox.fault("auth-attack")
    ips = attack_ips(healthy_sandbox)
    assert len(ips) == 3
    result = healthy_sandbox.run(RUNBOOK, "--incident-id", "INC-AUTH-1", *FAST)
    assert result.returncode == 2, result.stderr
    data = findings_of(result)
    assert data["incident_id"] == "INC-AUTH-1"
    diag = diagnosis_of(data)
    assert diag["evidence"]["root_cause"] == "credential_attack"
    assert diag["status"] == "critical"
    for ip in ips:
        assert ip in diag["summary"]
    checks = by_check(data)
    assert checks["auth.failures"]["status"] == "critical"
    assert checks["auth.failures"]["evidence"]["spike"] is True
    sources = checks["auth.sources"]
    assert {a["ip"] for a in sources["evidence"]["attacking_ips"]} == set(ips)
    assert sources["evidence"]["concentrated"] is True
    response = checks["manual.attack_response"]
    assert response["status"] == "info"
    assert sorted(response["evidence"]["block_ips"]) == sorted(ips)
    assert all(f"deny {ip};" in response["remediation"] for ip in ips)
    # nothing else is wrong, and nothing was changed
    assert checks["postgres.auth"]["status"] == "ok"
    assert checks["tls.fraiseql.expiry"]["status"] == "ok"
    assert data["actions"] == []


@drill
def test_oidc_down_is_oidc_provider_down(healthy_sandbox):
    require_fault("oidc-down")
    healthy_sandbox.fault("oidc-down")
    result = healthy_sandbox.run(RUNBOOK, *FAST)
    data = findings_of(result)
    oidc = by_check(data)["oidc.provider"]
    if oidc["evidence"].get("configured") is False:
        pytest.skip("the sandbox configures no OIDC issuer (inventory oidc_issuer or the "
                    "server config's [auth] issuer)")
    assert result.returncode == 2, result.stderr
    assert oidc["status"] == "critical"
    assert oidc["evidence"]["discovery"]["http_status"] == 503
    assert oidc["evidence"]["jwks_cache_ttl_s"] is not None
    assert diagnosis_of(data)["evidence"]["root_cause"] == "oidc_provider_down"


@drill
def test_cert_expired_is_certificate_expired(healthy_sandbox):
    require_fault("cert-expired")
    healthy_sandbox.fault("cert-expired")
    result = healthy_sandbox.run(RUNBOOK, *FAST)
    assert result.returncode == 2, result.stderr
    data = findings_of(result)
    expiry = by_check(data)["tls.fraiseql.expiry"]
    assert expiry["status"] == "critical"
    assert expiry["evidence"]["days_left"] < 0
    diag = diagnosis_of(data)
    assert diag["evidence"]["root_cause"] == "certificate_expired"
    # the identity provider (the stand-in itself here) is not called "down" for it
    assert "oidc_provider_down" not in [c["code"] for c in diag["evidence"]["candidates"]]


@drill
def test_a_healthy_sandbox_is_none(healthy_sandbox):
    result = healthy_sandbox.run(RUNBOOK, *FAST)
    assert result.returncode == 0, (result.stderr, result.stdout)
    data = findings_of(result)
    diag = diagnosis_of(data)
    assert diag["evidence"]["root_cause"] == "none"
    assert diag["status"] == "ok"
    checks = by_check(data)
    assert checks["auth.failures"]["evidence"]["spike"] is False
    assert checks["manual.attack_response"]["evidence"]["needed"] is False
    assert checks["audit.index"]["status"] == "ok"


# -- the PostgreSQL cause, on a real cluster ---------------------------------------------------

@pytest.fixture
def pg_target(make_cluster, pg_passwords, monkeypatch):
    cluster = make_cluster(provision=True, audit_events=0)
    monkeypatch.setenv("T_APP_PW", pg_passwords.app)
    monkeypatch.setenv("T_SU_PW", pg_passwords.superuser)
    monkeypatch.setenv("T_WRONG_PW", "not-the-password")

    def target(password_env: str) -> RunContext:
        raw = {"fraiseql_url": "http://127.0.0.1:9",
               "database_url": cluster.dsn(APP_USER, "x").replace(":x@", "@", 1),
               "database_password_env": password_env,
               "admin_database_url": cluster.dsn(SUPERUSER, "x").replace(":x@", "@", 1),
               "admin_database_password_env": "T_SU_PW"}
        return RunContext.adhoc(RUNBOOK, target=inventory.Target("t", raw))

    return cluster, target


def test_a_wrong_password_is_postgres_auth(pg_target):
    cluster, target = pg_target
    assert playbook.check_postgres_auth(target("T_APP_PW")).status is Status.OK
    ctx = target("T_WRONG_PW")
    found = playbook.check_postgres_auth(ctx)
    assert found.status is Status.CRITICAL
    assert found.evidence["failure"] == "auth_rejected"
    assert found.evidence["sqlstate"] == "28P01"
    assert found.evidence["role"]["can_login"] is True  # read through the admin URL
    diag = conclude(ctx, playbook.VOCABULARY, playbook.candidates(ctx))
    assert diag.evidence["root_cause"] == "postgres_auth"


def test_an_expired_role_says_so(pg_target):
    cluster, target = pg_target
    with cluster.connect(APP_DB) as conn:
        conn.execute(f"ALTER ROLE {APP_USER} VALID UNTIL '2001-01-01 00:00:00+00'")
    ctx = target("T_APP_PW")
    found = playbook.check_postgres_auth(ctx)
    assert found.status is Status.CRITICAL
    assert "VALID UNTIL" in found.evidence["cause"]
    assert "expired" in found.summary
    diag = conclude(ctx, playbook.VOCABULARY, playbook.candidates(ctx))
    assert diag.evidence["root_cause"] == "postgres_auth"


def test_judge_needs_both_the_factor_and_the_minimum():
    assert playbook.judge(20, 4.0, 1.0, 6, 24).spike  # 5× and 20
    assert not playbook.judge(19, 0.0, 0.0, 0, 24).spike  # below the minimum
    assert not playbook.judge(100, 25.0, 3.0, 30, 24).spike  # only 4×
    assert playbook.judge(30, 0.0, 0.0, 0, 24).ratio is None
