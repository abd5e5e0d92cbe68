"""Redis pre-flight against a real redis-server started on a free port."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from fraiseql_rb.checks import cache
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.sandbox.cluster import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed")
PASSWORD = "redis-test-password-4321"


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    port = free_port()
    conf = tmp_path_factory.mktemp("redis") / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
                    f"requirepass {PASSWORD}\n")
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, password=PASSWORD, socket_timeout=1).ping()
            break
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def ctx_with(monkeypatch, **raw) -> RunContext:
    monkeypatch.setenv("T_REDIS_PW", PASSWORD)
    base = {"fraiseql_url": "http://127.0.0.1:9", "redis_password_env": "T_REDIS_PW"}
    return RunContext.adhoc(target=inventory.Target("t", {**base, **raw}))


def by_check(findings):
    return {f.check: f for f in findings}


def test_reachable_redis_passes(redis_port, monkeypatch):
    found = by_check(cache.check_redis(ctx_with(
        monkeypatch, redis_url=f"redis://127.0.0.1:{redis_port}/0")))
    assert found["redis.reachable"].status is Status.OK
    assert found["redis.version"].status is Status.OK
    assert found["redis.rate_limit_fail_open"].status is Status.INFO
    assert "redis.cluster_mode" not in found


def test_standalone_redis_behind_several_instances_warns(redis_port, monkeypatch):
    found = by_check(cache.check_redis(ctx_with(
        monkeypatch, redis_url=f"redis://127.0.0.1:{redis_port}/0",
        instances=["http://127.0.0.1:1", "http://127.0.0.1:2"])))
    assert found["redis.cluster_mode"].status is Status.WARNING


def test_wrong_password_and_unreachable_are_critical_and_fail_open(redis_port, monkeypatch):
    ctx = ctx_with(monkeypatch, redis_url=f"redis://127.0.0.1:{redis_port}/0")
    monkeypatch.setenv("T_REDIS_PW", "wrong-password-000")
    found = by_check(cache.check_redis(ctx))
    assert found["redis.reachable"].status is Status.CRITICAL
    assert "wrong-password-000" not in found["redis.reachable"].summary
    found = by_check(cache.check_redis(ctx_with(
        monkeypatch, redis_url=f"redis://127.0.0.1:{free_port()}/0")))
    assert found["redis.reachable"].status is Status.CRITICAL
    assert found["redis.rate_limit_fail_open"].status is Status.WARNING


def test_no_redis_is_fine_for_one_instance_not_for_several(monkeypatch):
    one = cache.check_redis(ctx_with(monkeypatch))
    assert [f.status for f in one] == [Status.INFO]
    several = cache.check_redis(ctx_with(monkeypatch, instances=["http://a:1", "http://b:1"]))
    assert [f.status for f in several] == [Status.WARNING]
