"""A hung target: it accepts TCP and never answers (issue 9, point 11).

A real black hole (a listening socket that accepts every connection and never writes) stands
in for the FraiseQL server or for PostgreSQL. Once an endpoint has timed out in a run, later
probes of it are skipped, each recorded as `unknown` with the reason, and the verdict is
critical or unknown, never ok. A refused connection answers at once and is never remembered;
a server that is only slow on one request is not mistaken for a hung one.

No wall times are asserted here (bench/hung_target.py measures them).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraiseql_rb.checks import database
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import inventory, reachability
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.sandbox.cluster import free_port
from fraiseql_rb.targets import postgres, service

LIFETIME_S = 300.0  # a black hole never outlives this, even if a test forgets to stop it


class BlackHole:
    """Accepts TCP connections on 127.0.0.1, never reads or writes, closes all on stop()."""

    def __init__(self, lifetime_s: float = LIFETIME_S) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime_s
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self._held.append(conn)
        for conn in self._held:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.stop()


def _target(fraiseql_url: str, database_url: str) -> inventory.Target:
    return inventory.Target("hung", {"fraiseql_url": fraiseql_url,
                                     "database_url": database_url})


def _db_url(port: int) -> str:
    return f"postgresql://fraiseql_user@127.0.0.1:{port}/fraiseql"


# -- in process: the memo ---------------------------------------------------------------------

def test_http_probes_after_a_timeout_are_skipped_as_unknown(black_hole):
    ctx = RunContext.adhoc("t", _target(f"http://127.0.0.1:{black_hole.port}",
                                        _db_url(free_port())))
    first = service_checks.check_health(ctx)
    assert first.status is Status.CRITICAL and "timed out" in first.summary
    endpoint = f"http://127.0.0.1:{black_hole.port}"
    for check in (service_checks.check_readiness, service_checks.check_graphql,
                  service_checks.check_metrics_endpoint, service_checks.check_response_times):
        finding = check(ctx)
        assert finding.status is Status.UNKNOWN, finding
        assert finding.summary.startswith(f"skipped: {endpoint} timed out at ")
        assert "in this run (read timeout" in finding.summary
        assert finding.evidence["skipped"] is True and finding.evidence["endpoint"] == endpoint
    assert [t.endpoint for t in ctx.unresponsive.timeouts()] == [endpoint]


def test_a_database_connect_timeout_is_remembered_and_skipped(black_hole):
    ctx = RunContext.adhoc("t", _target(f"http://127.0.0.1:{free_port()}",
                                        _db_url(black_hole.port)))
    with pytest.raises(postgres.ConnectionFailed, match="timeout"):
        postgres.connect(ctx.target.database_url(), connect_timeout_s=1)
    # libpq waits 2 s at least, whatever connect_timeout says
    with pytest.raises(postgres.ConnectionSkipped, match="connect timeout 2 s"):
        postgres.connect(ctx.target.database_url())
    later = database.check_reachable(ctx)
    assert later.status is Status.UNKNOWN
    assert later.summary.startswith(f"skipped: postgresql://127.0.0.1:{black_hole.port} ")


def test_refusals_are_never_remembered():
    port = free_port()  # nothing listens: refused at once
    ctx = RunContext.adhoc("t", _target(f"http://127.0.0.1:{port}", _db_url(port)))
    for _ in range(2):
        health = service_checks.check_health(ctx)
        assert health.status is Status.CRITICAL and "refused" in health.summary
        reach = database.check_reachable(ctx)
        assert reach.status is Status.CRITICAL and "skipped" not in reach.summary
    assert ctx.unresponsive.timeouts() == []


class _SlowOnOnePath(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/slow":
            time.sleep(1.5)
        body = b'{"status": "healthy"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_slow_on_one_request_is_not_taken_for_hung():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowOnOnePath)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        ctx = RunContext.adhoc("t", _target(base, _db_url(free_port())))
        with service.client(ctx, timeout_s=0.5) as http_client:
            slow = service.probe(http_client, "GET", f"{base}/slow")
            fast = service.probe(http_client, "GET", f"{base}/health")
        assert slow.error == "timed out" and slow.skipped is None
        assert fast.status_code == 200, "a live server answers its bare hello: not hung"
        assert ctx.unresponsive.timeouts() == []
    finally:
        server.shutdown()
        server.server_close()


def test_each_run_has_its_own_memo(black_hole):
    target = _target(f"http://127.0.0.1:{black_hole.port}", _db_url(free_port()))
    first = RunContext.adhoc("t", target)
    service_checks.check_health(first)
    assert len(first.unresponsive) == 1
    second = RunContext.adhoc("t", target)
    assert reachability.active() is second.unresponsive and len(second.unresponsive) == 0


# -- through the CLI ---------------------------------------------------------------------------

def _run(runbook: str, inventory_path: Path, out: Path, *params: str
         ) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "FRAISEQL_RB_INVENTORY"}
    result = subprocess.run(
        [sys.executable, "-m", "fraiseql_rb", "run", runbook, "--inventory",
         str(inventory_path), "--target", "hung", "--output-dir", str(out), *params],
        capture_output=True, text=True, timeout=300, env=env)
    artifact = Path(result.stdout.strip().splitlines()[-1])
    return result, json.loads((artifact / "findings.json").read_text())


RUNBOOKS = {"service-health": ("-p", "samples", "2"), "service-down": (),
            "high-error-rate": ("-p", "window_s", "2")}


@pytest.mark.parametrize("hung", ["fraiseql_url", "database_url"])
@pytest.mark.parametrize("runbook", list(RUNBOOKS))
def test_runbooks_against_a_hung_endpoint(black_hole, tmp_path, runbook, hung):
    """One URL black-holed, the other refused: exit 2 or 3, the hung endpoint probed once
    and then skipped with a finding saying so, the refused one never skipped."""
    refused = free_port()
    urls = {"fraiseql_url": f"http://127.0.0.1:{refused}", "database_url": _db_url(refused)}
    if hung == "fraiseql_url":
        urls[hung] = f"http://127.0.0.1:{black_hole.port}"
        endpoint, other = f"http://127.0.0.1:{black_hole.port}", "postgresql://"
    else:
        urls[hung] = _db_url(black_hole.port)
        endpoint, other = f"postgresql://127.0.0.1:{black_hole.port}", "http://"
    path = tmp_path / "inventory.toml"
    path.write_text("[targets.hung]\n" + "".join(f'{k} = "{v}"\n' for k, v in urls.items()))
    result, data = _run(runbook, path, tmp_path / "reports", *RUNBOOKS[runbook])

    assert result.returncode in (2, 3), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert data["status"] in ("critical", "unknown")
    findings = data["findings"]
    assert not [f for f in findings if f["check"] == "notebook.error"], findings
    assert not [f for f in findings if f["status"] == "ok"], "nothing was seen to be ok"
    skips = [f for f in findings if f"skipped: {endpoint} timed out at " in f["summary"]]
    if runbook == "service-down" and hung == "database_url":
        # the playbook opens one database session only: nothing later to skip
        reach = next(f for f in findings if f["check"] == "database.reachable")
        assert reach["status"] == "critical" and "timeout" in reach["summary"]
    else:
        assert skips, [f["summary"] for f in findings]
        assert all(f["status"] == "unknown" for f in skips)
        assert "in this run (" in skips[0]["summary"]
    assert not [f for f in findings if f"skipped: {other}" in f["summary"]], \
        "a refused endpoint must not be remembered"
