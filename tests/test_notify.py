"""`fraiseql-rb run --notify` (issue 14 part 2): one message per run through apprise, posted
to a real local HTTP receiver with apprise's `json://` plugin, by a real `fraiseql-rb run`
process. A failed send is a finding and a stderr line, never a different exit code; the
token in the URL appears nowhere."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from drill_helpers import write_runbook
from test_cli import assert_one_line_error, cli

from fraiseql_rb.core import inventory, secrets
from fraiseql_rb.core.errors import InventoryError, SecretError
from fraiseql_rb.targets import notify as channels

TOKEN = "SECRETTOKEN4711"


class Receiver:
    """A webhook on 127.0.0.1 that keeps what it was sent and answers `code`."""

    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                receiver.received.append({"path": self.path, "json": json.loads(body),
                                          "auth": self.headers.get("Authorization")})
                self.send_response(receiver.code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://ops:{TOKEN}@127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def books(tmp_path: Path) -> Path:
    """A runbook whose verdict is a parameter: `ok` records an ok check; anything else a
    diagnosis with a root cause and next step, as the incident playbooks do."""
    return write_runbook(
        tmp_path, "incidents", "verdict", "# Verdict\nRecords the verdict it is given.",
        'target = "sandbox"\nincident_id = None\nverdict = "ok"  # ok, warning or critical',
        "from fraiseql_rb.core import context\n"
        "run = context.start('verdict', target, incident_id=incident_id)\n"
        "if verdict == 'ok':\n"
        "    run.record('probe', 'ok', 'all good')\n"
        "else:\n"
        "    run.record('diagnosis', verdict, 'root cause: disk_full — the WAL disk is "
        "full', {'root_cause': 'disk_full'}, 'free space on /var/lib/postgresql')\n")


def inventory_file(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "inv.toml"
    path.write_text('[targets.prod]\nfraiseql_url = "http://127.0.0.1:9"\n' + extra)
    return path


def run(tmp_path: Path, books: Path, inv: Path, *args: str,
        env: dict[str, str] | None = None) -> tuple[Any, Path]:
    out = tmp_path / "reports"
    result = cli("run", "verdict", "--inventory", str(inv), "--target", "prod",
                 "--output-dir", str(out), "--quiet", *args,
                 env={"FRAISEQL_RB_NOTEBOOKS": str(books), **(env or {})})
    assert "Traceback" not in result.stderr, result.stderr
    return result, Path(result.stdout.strip().splitlines()[-1])


def artifacts_text(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(run_dir.rglob("*"))
                     if p.is_file())


def test_problems_sends_one_message_with_verdict_cause_step_and_site_link(
        tmp_path, books, receiver):
    inv = inventory_file(tmp_path, f'notify = ["{receiver.url()}"]\n'
                         'site_url = "https://reports.example.test/ops/"\n')
    result, run_dir = run(tmp_path, books, inv, "--notify", "problems", "-p", "verdict",
                          "critical", "--incident-id", "INC-7")
    assert result.returncode == 2, result.stderr
    assert len(receiver.received) == 1
    sent = receiver.received[0]
    assert sent["path"] == "/hook"
    message = sent["json"]
    assert message["title"] == "fraiseql-rb: verdict on prod [INC-7]: CRITICAL"
    assert message["type"] == "failure"  # apprise's notify type: chat services colour it
    lines = message["message"].splitlines()
    relative = run_dir.relative_to(tmp_path / "reports").as_posix()
    assert lines == [
        "runbook: verdict", "target: prod", "incident: INC-7", "verdict: critical",
        "root cause: disk_full — the WAL disk is full",
        "next step: free space on /var/lib/postgresql",
        f"report: https://reports.example.test/ops/{relative}/verdict.html",
    ]
    assert relative.startswith(run_dir.parent.parent.name + "/verdict/")
    assert run_dir.name.endswith("_INC-7")
    findings = json.loads((run_dir / "findings.json").read_text())
    sent_finding = findings["findings"][-1]
    assert sent_finding["check"] == "notify.sent" and sent_finding["status"] == "info"
    assert sent_finding["evidence"]["sent"] == 1
    assert findings["status"] == "critical" and findings["finished_at"]
    assert oct((run_dir / "findings.json").stat().st_mode & 0o777) == "0o640"
    # the token: not in what was sent, nor in any artifact, stdout or stderr
    everything = artifacts_text(run_dir) + result.stdout + result.stderr + json.dumps(message)
    assert TOKEN not in everything
    assert "ops:***@127.0.0.1" in json.dumps(sent_finding)


def test_problems_sends_nothing_for_an_ok_run_and_always_does(tmp_path, books, receiver):
    token_file = tmp_path / "notify.secret"
    token_file.write_text(f"# the ops channel\n{receiver.url('a')}\n\n")
    inv = inventory_file(tmp_path, f'notify_file = "{token_file.name}"\n'
                         f'notify_env = "OPS_NOTIFY"\n')
    env = {"OPS_NOTIFY": f"{receiver.url('b')}  {receiver.url('c')}"}
    quiet, quiet_dir = run(tmp_path, books, inv, "--notify", "problems", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert receiver.received == []
    assert "notify.sent" not in (quiet_dir / "findings.json").read_text()
    loud, loud_dir = run(tmp_path, books, inv, "--notify", "always", env=env)
    assert loud.returncode == 0, loud.stderr
    assert sorted(r["path"] for r in receiver.received) == ["/a", "/b", "/c"]
    body = receiver.received[0]["json"]["message"]
    assert "verdict: ok" in body and "incident: none" in body
    assert receiver.received[0]["json"]["type"] == "success"
    assert "root cause: none recorded" in body and "next step: none" in body
    # no site_url: the local HTML report
    assert f"report: {(loud_dir / 'verdict.html').resolve()}" in body
    assert loud.stderr == ""
    assert TOKEN not in artifacts_text(loud_dir) + loud.stdout + loud.stderr


@pytest.mark.parametrize("broken", ["answers-500", "closed"])
def test_a_failed_notification_is_a_finding_and_one_stderr_line(tmp_path, books, broken):
    receiver = Receiver(code=500)
    if broken == "closed":
        receiver.close()
    try:
        inv = inventory_file(tmp_path, f'notify = ["{receiver.url()}"]\n')
        result, run_dir = run(tmp_path, books, inv, "--notify", "always", "-p", "verdict",
                              "ok")
    finally:
        if broken != "closed":
            receiver.close()
    assert result.returncode == 0, result.stderr  # the run's own verdict, unchanged
    assert result.stdout.splitlines()[0] == "status: ok"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fraiseql-rb: notification failed for 1 of 1 URL(s): ")
    why = "500" if broken == "answers-500" else "Connection error"
    assert why in lines[0]
    findings = json.loads((run_dir / "findings.json").read_text())
    last = findings["findings"][-1]
    assert (last["check"], last["status"]) == ("notify.sent", "info")  # never fails the run
    assert last["evidence"]["failed"] == 1 and why in last["summary"]
    assert findings["status"] == "ok" and findings["finished_at"]  # as the exit code says
    assert len(receiver.received) == (1 if broken == "answers-500" else 0)
    assert TOKEN not in artifacts_text(run_dir) + result.stdout + result.stderr


@pytest.mark.parametrize(("extra", "expected"), [
    (f'notify = ["jsno://ops:{TOKEN}@127.0.0.1/x"]\n',
     "targets.prod.notify[0] must be an apprise URL that apprise can parse"),
    (f'notify = ["slack://{TOKEN}"]\n',
     "targets.prod.notify[0] must be an apprise URL that apprise can parse"),
    ('notify = "json://127.0.0.1/"\n', "targets.prod.notify must be a list of apprise URL"),
])
def test_a_bad_notify_url_in_the_inventory_exits_64_before_anything_runs(
        tmp_path, books, extra, expected):
    inv = inventory_file(tmp_path, extra)
    out = tmp_path / "reports"
    result = cli("run", "verdict", "--inventory", str(inv), "--target", "prod", "--output-dir",
                 str(out), "--notify", "always", env={"FRAISEQL_RB_NOTEBOOKS": str(books)})
    line = assert_one_line_error(result, 64)
    assert expected in line
    assert TOKEN not in line
    assert not out.exists()


def test_urls_from_env_and_file_are_checked_with_apprise_and_masked(tmp_path, monkeypatch):
    secret_file = tmp_path / "hooks"
    secret_file.write_text(f"json://127.0.0.1:1/ok\nnotaservice://{TOKEN}\n")
    inv = inventory_file(tmp_path, f'notify_file = "{secret_file}"\nnotify_env = "HOOKS"\n')
    target = inventory.load(inv).target("prod")
    monkeypatch.delenv("HOOKS", raising=False)
    with pytest.raises(SecretError, match=r"notify_env names \$HOOKS, which is not set"):
        channels.check(target)
    monkeypatch.setenv("HOOKS", f"slack://T1/B2/{TOKEN}x")
    with pytest.raises(InventoryError) as caught:
        channels.check(target)
    message = str(caught.value)
    assert "notify_file" in message and "URL 2" in message and "notaservice://" in message
    assert TOKEN not in message
    # slack's token (a path part, not a URL password) is now a registered secret
    assert TOKEN not in secrets.mask(f"posting to slack://T1/B2/{TOKEN}x failed")


@pytest.mark.parametrize("promoted", [True, False])
def test_the_failover_notification_is_sent_only_after_a_promotion(tmp_path, receiver, promoted):
    """§5.2 step 6 through apprise: sent once the replica was promoted, recorded (not sent)
    in a dry run."""
    from fraiseql_rb.core.context import RunContext
    from fraiseql_rb.dr import failover

    inv = inventory_file(tmp_path, 'replica_database_url = "postgresql://app@127.0.0.1:5433/db"\n'
                         f'notify = ["{receiver.url()}"]\n')
    ctx = RunContext.adhoc("database-failover", inventory.load(inv).target("prod"),
                           findings_path=tmp_path / "findings.json", execute=promoted,
                           confirm="prod" if promoted else None)
    ctx.record("failover.primary", "critical", "the primary does not answer",
               {"answers": False, "endpoint": "127.0.0.1:5432"})
    ctx.record("failover.replica", "ok", "the replica is fit", {"fit": True})
    ctx.record("failover.promote", "ok" if promoted else "info", "promoted",
               {"promoted": promoted})
    finding = failover.notification(ctx)
    assert finding.check == "failover.notification"
    if promoted:
        assert finding.status == "info" and finding.evidence["sent"] is True
        assert [r["json"]["title"] for r in receiver.received] == [
            "fraiseql-rb: failover on prod"]
        assert receiver.received[0]["json"]["message"].startswith(
            "Failover complete: replica 127.0.0.1:5433 promoted")
    else:
        assert receiver.received == [] and finding.evidence["sent"] is False
        assert "not sent here" in finding.summary
    assert TOKEN not in (tmp_path / "findings.json").read_text()


def test_a_bad_url_in_notify_file_stops_the_run_before_it_starts(tmp_path, books):
    secret_file = tmp_path / "prod.notify"
    secret_file.write_text(f"jsno://ops:{TOKEN}@127.0.0.1:9/hook\n")
    inv = inventory_file(tmp_path, f'notify_file = "{secret_file}"\n')
    result = cli("run", "verdict", "--inventory", str(inv), "--target", "prod",
                 "--output-dir", str(tmp_path / "reports"), "--notify", "problems",
                 env={"FRAISEQL_RB_NOTEBOOKS": str(books)})
    assert result.returncode == 64, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "notify_file" in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert not list((tmp_path / "reports").rglob("*.json"))  # nothing ran, no run directory
