"""pytest fixtures giving tests real, disposable PostgreSQL clusters (no mocks of PostgreSQL).

Registered by the root conftest.py with ``from pg_fixtures import *`` (or
``pytest_plugins = ["pg_fixtures"]``). Clusters live in short directories under /tmp (unix
socket paths are limited to 107 bytes) on free ports, and are stopped and deleted at teardown.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.sandbox.cluster import APP_USER, SUPERUSER, Cluster
from fraiseql_rb.targets import scratch
from fraiseql_rb.targets.pgbin import PgBinariesNotFound, pg_bindir

__all__ = [
    "AuditSpec",
    "PgPasswords",
    "ctx_for",
    "make_cluster",
    "pg_app_dsn",
    "pg_audit_spec",
    "pg_cluster",
    "pg_passwords",
    "scratch_root",
]


@dataclass(frozen=True)
class AuditSpec:
    """How pg_cluster's audit history was generated (tests compare against it)."""

    events: int = 20_000
    seed: int = 42
    days: int = 30
    # the moment the history ends: [now - days, now). A session's tests may run long after
    # the cluster was provisioned, so they judge the history against this, not the clock.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class PgPasswords:
    """Per-session random passwords; hidden from repr so failures never print them."""

    superuser: str = field(repr=False)
    app: str = field(repr=False)


def _new_password() -> str:
    # characters that need URL encoding and SQL quoting, to prove both are done right
    return secrets.token_urlsafe(18) + "'@:/%"


def _require_binaries() -> None:
    try:
        pg_bindir()
    except PgBinariesNotFound as exc:
        pytest.skip(str(exc))


def _new_base_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="frb-pg-", dir="/tmp"))


@pytest.fixture(scope="session")
def pg_passwords() -> PgPasswords:
    return PgPasswords(superuser=_new_password(), app=_new_password())


@pytest.fixture(scope="session")
def pg_audit_spec() -> AuditSpec:
    return AuditSpec()


@pytest.fixture(scope="session")
def pg_cluster(pg_passwords: PgPasswords, pg_audit_spec: AuditSpec) -> Iterator[Cluster]:
    """A started cluster provisioned like the sandbox: fraiseql db, app role, 20k audit events."""
    _require_binaries()
    cluster = Cluster(_new_base_dir())
    try:
        cluster.init(pg_passwords.superuser)
        cluster.start()
        cluster.provision(pg_passwords.app, audit_events=pg_audit_spec.events,
                          seed=pg_audit_spec.seed, days=pg_audit_spec.days,
                          now=pg_audit_spec.now)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_app_dsn(pg_cluster: Cluster, pg_passwords: PgPasswords) -> str:
    """TCP URL for fraiseql_user on the fraiseql database, SCRAM over TLS (sslmode=require)."""
    return pg_cluster.dsn(APP_USER, pg_passwords.app, connect_timeout=10)


@pytest.fixture
def make_cluster(pg_passwords: PgPasswords) -> Iterator[Callable[..., Cluster]]:
    """Factory for clusters with configuration variants; all are destroyed after the test.

    ``make_cluster(start=True, provision=False, audit_events=1000, port=None, **init_kwargs)``
    where ``init_kwargs`` go to :meth:`Cluster.init` (``ssl``, ``hba_rules``,
    ``password_encryption``, ``extra_conf``). Passwords are those of ``pg_passwords``.
    """
    _require_binaries()
    made: list[Cluster] = []

    def factory(
        *, start: bool = True, provision: bool = False, audit_events: int = 1000,
        port: int | None = None, **init_kwargs: Any,
    ) -> Cluster:
        cluster = Cluster(_new_base_dir(), port=port)
        made.append(cluster)
        cluster.init(pg_passwords.superuser, **init_kwargs)
        if start:
            cluster.start()
        if provision:
            cluster.provision(pg_passwords.app, audit_events=audit_events)
        return cluster

    yield factory
    for cluster in made:
        cluster.destroy()


def _no_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1@", url, count=1)


@pytest.fixture
def ctx_for(monkeypatch, pg_passwords):
    """A RunContext whose target points at given clusters (primary, admin URL, replica);
    passwords come from the environment, as an operator's inventory names them."""
    monkeypatch.setenv("T_APP_PW", pg_passwords.app)
    monkeypatch.setenv("T_SU_PW", pg_passwords.superuser)

    def build(cluster: Cluster, *, password_env: str = "T_APP_PW", dbname: str = "fraiseql",
              sslmode: str | None = None, admin_dbname: str | None = "fraiseql",
              replica: Cluster | None = None, url_params: dict | None = None,
              runbook: str = "database-unavailable", **extra) -> RunContext:
        raw = {"fraiseql_url": "http://127.0.0.1:9",
               "database_url": _no_password(cluster.dsn(APP_USER, "x", dbname=dbname,
                                                        sslmode=sslmode,
                                                        **(url_params or {}))),
               "database_password_env": password_env, **extra}
        if admin_dbname:
            raw["admin_database_url"] = _no_password(cluster.dsn(SUPERUSER, "x",
                                                                 dbname=admin_dbname))
            raw["admin_database_password_env"] = "T_SU_PW"
        if replica is not None:
            raw["replica_database_url"] = _no_password(replica.dsn(APP_USER, "x"))
            raw["replica_database_password_env"] = "T_APP_PW"
        return RunContext.adhoc(runbook, target=inventory.Target("t", raw))

    return build


@pytest.fixture
def scratch_root(monkeypatch) -> Iterator[Path]:
    """A test's own scratch root (targets/scratch.py), short (unix socket paths are limited)
    and under /tmp (as root, the postgres account must reach it: pytest's tmp_path is 0700);
    the test fails if a scratch directory is left behind in it."""
    base = Path(tempfile.mkdtemp(prefix="frb-s-", dir="/tmp"))
    base.chmod(0o755)
    monkeypatch.setenv(scratch.ENV_VAR, str(base))
    yield base
    left = sorted(p.name for p in base.iterdir())
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"scratch left behind: {left}"
