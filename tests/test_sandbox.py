"""The sandbox lifecycle: up writes a usable inventory without secrets, service control
behaves like systemctl, down leaves nothing running."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import httpx
import psycopg
import pytest

from fraiseql_rb.core import inventory
from fraiseql_rb.sandbox import manager


def test_inventory_names_secrets_by_file_only(sandbox):
    text = sandbox.inventory.read_text()
    target = tomllib.loads(text)["targets"]["sandbox"]
    for name in manager.SECRET_NAMES:
        path = sandbox.root / "secrets" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() not in text
    assert target["metrics_token_file"] == "secrets/metrics_token"
    assert "@" in target["database_url"] and ":" not in target["database_url"].split("@")[0][13:]


def test_inventory_target_reaches_database_and_server(sandbox):
    target = inventory.load(sandbox.inventory).target("sandbox")
    with psycopg.connect(target.database_url(), connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM fraiseql_audit_logs").fetchone()[0] == 5000
        assert conn.execute("SHOW ssl").fetchone()[0] == "on"
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                            ).fetchone()[0] is True
    assert target.fraiseql_url.startswith("https://")
    verify = ssl.create_default_context(cafile=target.get("ca_bundle"))
    response = httpx.get(f"{target.fraiseql_url}/metrics", timeout=5, verify=verify,
                         headers={"Authorization": f"Bearer {target.metrics_token()}"})
    assert response.status_code == 200
    assert "fraiseql_graphql_queries_total" in response.text
    assert "process_resident_memory_bytes" not in response.text


def test_backup_and_wal_archive_exist(sandbox):
    assert list((sandbox.root / "backups").glob("fraiseql-*.dump"))
    assert any((sandbox.root / "wal_archive").iterdir())


def test_service_commands_work_like_systemctl(healthy_sandbox):
    target = inventory.load(healthy_sandbox.inventory).target("sandbox")
    status = subprocess.run(target.get("status_command"), shell=True, capture_output=True,
                            text=True, timeout=30)
    assert status.returncode == 0 and "Active: active (running)" in status.stdout
    pid = int(status.stdout.split("Main PID: ")[1].split()[0])
    restart = subprocess.run(target.get("restart_command"), shell=True, capture_output=True,
                             text=True, timeout=60)
    assert restart.returncode == 0
    status = subprocess.run(target.get("status_command"), shell=True, capture_output=True,
                            text=True, timeout=30)
    assert int(status.stdout.split("Main PID: ")[1].split()[0]) != pid
    logs = subprocess.run(target.get("logs_command"), shell=True, capture_output=True,
                          text=True, timeout=30)
    assert "listening on" in logs.stdout
    secrets = [p.read_text().strip() for p in (healthy_sandbox.root / "secrets").iterdir()]
    assert not any(s in logs.stdout for s in secrets)


def test_unknown_fault_is_a_usage_error(sandbox):
    result = sandbox.cli("sandbox", "--dir", str(sandbox.root), "fault", "meteor")
    assert result.returncode == 64 and "unknown fault 'meteor'" in result.stderr


def _processes_under(root) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.slow
def test_up_down_leaves_nothing_running():
    # not pytest's tmp_path: it sits under a 0700 directory the postgres user cannot enter
    root = Path(tempfile.mkdtemp(prefix="fraiseql-rb-life-", dir="/tmp")) / "sandbox"
    root.parent.chmod(0o755)
    run = [sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir", str(root)]
    up = subprocess.run([*run, "up", "--audit-events", "100"], capture_output=True,
                        text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip().splitlines()[-1] == str(root / "inventory.toml")
        assert _processes_under(root), "nothing started?"
        status = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and "server     running" in status.stdout
        again = subprocess.run([*run, "up"], capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, "up on a running sandbox is idempotent"
    finally:
        down = subprocess.run([*run, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0
    assert _processes_under(root) == []
    status = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=30)
    assert status.returncode == 1 and "stopped" in status.stdout
    subprocess.run([*run, "down", "--purge"], capture_output=True, timeout=60)
    assert not root.exists()
    root.parent.rmdir()


def _operation_errors(target, operation: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    verify = ssl.create_default_context(cafile=target.get("ca_bundle"))
    text = httpx.get(f"{target.fraiseql_url}/metrics", timeout=5, verify=verify,
                     headers={"Authorization": f"Bearer {target.metrics_token()}"}).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name.startswith("fraiseql_query_errors_total")
                    and sample.labels.get("operation") == operation):
                total += sample.value
    return total


def test_error_spike_moves_the_error_counters_under_background_traffic(healthy_sandbox):
    """The sandbox's own traffic calls `posts`; with the fault on, its errors climb."""
    import time

    assert "traffic    running" in "\n".join(manager.status(healthy_sandbox.root).lines())
    target = inventory.load(healthy_sandbox.inventory).target("sandbox")
    before = _operation_errors(target, "posts")
    healthy_sandbox.fault("error-spike")
    try:
        time.sleep(3)
        during = _operation_errors(target, "posts")
    finally:
        healthy_sandbox.heal("error-spike")
    assert during > before
    time.sleep(1)
    settled = _operation_errors(target, "posts")
    time.sleep(2)
    assert _operation_errors(target, "posts") == settled, "healed: no new errors"
