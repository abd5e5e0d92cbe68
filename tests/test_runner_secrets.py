"""No secret outside the kernel (issue 9, points 1-3), proven with sentinel values.

A run may read secrets; nothing it leaves or starts may hold them: not the artifacts (the
executed notebook's metadata included), not stdout or stderr, and not the environment of any
process a runbook starts (status, logs and restart commands, and the server a restart leaves
running for weeks).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from drill_helpers import findings_of

from fraiseql_rb.core import secrets
from fraiseql_rb.sandbox import server
from fraiseql_rb.sandbox.state import Sandbox

drill = pytest.mark.drill

SENTINEL_ENV = "RB_SENTINEL_API_TOKEN"  # a secret-named variable of the runner's environment
SENTINEL = "sentinel-7f3a9c1e-never-leaves"
TOKEN_ENV = "RB_METRICS"  # an innocently named variable the inventory reads a token from


def _secret_values(sandbox) -> dict[str, str]:
    return {path.name: path.read_text().strip()
            for path in (sandbox.root / "secrets").iterdir() if path.is_file()}


def _dumping_inventory(sandbox, dumps: Path) -> Path:
    """The sandbox's inventory, secrets by absolute path, the metrics token from an
    environment variable, and each target command writing its environment first."""
    raw = tomllib.loads(sandbox.inventory.read_text())["targets"]["sandbox"]
    lines = ["[targets.sandbox]"]
    for key, value in raw.items():
        if key == "metrics_token_file":
            key, value = "metrics_token_env", TOKEN_ENV
        elif key.endswith("_file") and not str(value).startswith("/"):
            value = str(sandbox.root / value)
        elif key.endswith("_command"):
            code = (f"import json, os; json.dump(dict(os.environ), "
                    f"open({str(dumps / f'{key}.env')!r}, 'w'))")
            value = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} && {value}"
        lines.append(f"{key} = {json.dumps(value)}")
    path = dumps / "inventory.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _leaks(text: str, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value and value in text]


@drill
def test_no_secret_in_artifacts_output_or_child_environments(healthy_sandbox, tmp_path):
    values = _secret_values(healthy_sandbox)
    values["sentinel"] = SENTINEL
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    inventory = _dumping_inventory(healthy_sandbox, dumps)
    out = tmp_path / "reports"
    env = {"FRAISEQL_RB_INVENTORY": str(inventory), SENTINEL_ENV: SENTINEL,
           TOKEN_ENV: values["metrics_token"]}
    healthy_sandbox.fault("server-down")
    try:
        restart = healthy_sandbox.cli(
            "run", "service-down", "--target", "sandbox", "--output-dir", str(out),
            "-p", "execute", "true", "-p", "restart_wait_s", "20", env=env)
        sb = Sandbox.open(healthy_sandbox.root)
        restarted = server.pid(sb)
        server_env = Path(f"/proc/{restarted}/environ").read_bytes().decode(errors="replace")
    finally:
        healthy_sandbox.heal("server-down")
    # a token typed into a parameter is masked too (it is a known secret)
    typed = healthy_sandbox.cli(
        "run", "high-query-latency", "--target", "sandbox", "--output-dir", str(out),
        "-p", "window_s", "2", "-p", "explain_query", f"SELECT '{values['admin_token']}'",
        env=env)
    assert restart.returncode in (0, 1, 2), restart.stderr
    assert typed.returncode in (0, 1, 2, 3), typed.stderr
    assert findings_of(restart)["actions"][0]["executed"] is True

    for result in (restart, typed):
        assert not _leaks(result.stdout + result.stderr, values)
    artifacts = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in artifacts} >= {".json", ".ipynb", ".html"}
    for path in artifacts:
        assert not _leaks(path.read_text(errors="replace"), values), path
    notebook = json.loads(next(out.rglob("high-query-latency.ipynb")).read_text())
    assert notebook["metadata"]["papermill"]["parameters"]["explain_query"] == "SELECT '***'"

    # every target command ran (restart included) with none of the runner's secrets
    dumped = sorted(p.name for p in dumps.glob("*.env"))
    assert dumped == ["logs_command.env", "restart_command.env", "status_command.env"]
    for path in dumps.glob("*.env"):
        child = json.loads(path.read_text())
        assert not _leaks(json.dumps(child), values), (path.name, _leaks(json.dumps(child),
                                                                          values))
        assert SENTINEL_ENV not in child and TOKEN_ENV not in child
        assert not any(name.startswith(secrets.PRIVATE_ENV_PREFIX) for name in child)
    # the restarted server holds its own secrets (as the real one does, in DATABASE_URL and
    # FRAISEQL_*_TOKEN) and none of the runner's: no superuser password, no sentinel
    assert not _leaks(server_env, {k: values[k] for k in ("superuser_password", "sentinel")})
    assert secrets.PRIVATE_ENV_PREFIX not in server_env


def test_clean_environment_drops_every_kind_of_secret(monkeypatch):
    secrets.register("registered-secret-value")
    source = {"PATH": "/usr/bin", "HOME": "/root", "GITHUB_TOKEN": "abc123456",
              "INNOCENT": "prefix-registered-secret-value", "PGPASSWORD": "pw123456",
              "DSN": "postgresql://app:hunter22@db/x", "FRAISEQL_RB_RUN": "{}",
              "LANG": "C.UTF-8"}
    assert secrets.clean_environment(source) == {"PATH": "/usr/bin", "HOME": "/root",
                                                 "LANG": "C.UTF-8"}


def test_kernel_reads_the_secrets_file_and_deletes_it(tmp_path, monkeypatch):
    from fraiseql_rb.core import context

    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(["from-the-runner-file-only"]))
    os.chmod(path, 0o600)
    context._read_secrets(str(path))
    assert not path.exists()
    assert secrets.mask("x from-the-runner-file-only y") == "x *** y"
