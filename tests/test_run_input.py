"""Bad input to `fraiseql-rb run` is stopped before a kernel starts (issue 9, points 7, 9, 10):
exit 64, one line on stderr, no traceback, nothing written. Through a real process, as
test_cli does; no sandbox is started (a sandbox directory is laid out by its own writer)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from drill_helpers import write_runbook
from test_cli import assert_one_line_error, cli

from fraiseql_rb.sandbox import manager, state

UNREACHABLE = """[targets.prod]
fraiseql_url = "http://127.0.0.1:9"
database_url = "postgresql://fraiseql_user@127.0.0.1:9/fraiseql"
"""


def run(inv: Path, out: Path, *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return cli("run", "service-health", "--inventory", str(inv), "--output-dir", str(out),
               *args, env=env, cwd=cwd)


# ---- point 7: the inventory's types ---------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (UNREACHABLE + "prometheus_url = 9090\n",
     "targets.prod.prometheus_url must be an http(s) URL string, got integer 9090"),
    (UNREACHABLE.replace('"http://127.0.0.1:9"', "1"),
     "targets.prod.fraiseql_url must be an http(s) URL string, got integer 1"),
    (UNREACHABLE + 'metrics_token_env = "$TOKEN"\n',
     "targets.prod.metrics_token_env must be a string naming an environment variable"),
    ('[targets]\nprod = "http://127.0.0.1:9"\n',
     "targets.prod must be a table ([targets.prod]), got string 'http://127.0.0.1:9'"),
    (UNREACHABLE + "[targets.prod\n", "is not valid TOML: "),
], ids=["prometheus_url", "fraiseql_url", "token_env", "not-a-table", "toml-syntax"])
def test_a_bad_inventory_exits_64_naming_file_target_and_key(tmp_path, content, message):
    inv = tmp_path / "inv.toml"
    inv.write_text(content)
    out = tmp_path / "reports"
    line = assert_one_line_error(run(inv, out, "--target", "prod"), 64)
    assert line.startswith(f"fraiseql-rb: inventory {inv}")
    assert message in line
    assert not out.exists(), "nothing may be written for refused input"


def test_a_non_utf8_inventory_exits_64_naming_the_file(tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_bytes(UNREACHABLE.encode() + "description = \"Zürich\"\n".encode("latin-1"))
    out = tmp_path / "reports"
    line = assert_one_line_error(run(inv, out, "--target", "prod"), 64)
    assert f"inventory {inv} is not UTF-8 text (byte 0xfc on line 4)" in line
    assert not out.exists()


# ---- point 9: an output directory that cannot be used ---------------------------------------


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "inv.toml"
    path.write_text(UNREACHABLE)
    return path


def test_output_dir_that_is_a_file_or_under_one_exits_64(tmp_path, inv):
    a_file = tmp_path / "reports.txt"
    a_file.write_text("not a directory\n")
    line = assert_one_line_error(run(inv, a_file, "--target", "prod"), 64)
    assert line == f"fraiseql-rb: the output directory {a_file} is a file, not a directory"
    line = assert_one_line_error(run(inv, a_file / "daily", "--target", "prod"), 64)
    assert line == (f"fraiseql-rb: cannot create the output directory {a_file / 'daily'}: "
                    f"{a_file} is a file, not a directory")
    assert a_file.read_text() == "not a directory\n"


def test_output_dir_that_cannot_be_created_exits_64(inv):
    # /proc refuses new entries even to root: a real failure, whatever our privileges
    out = Path("/proc/fraiseql-rb-test/reports")
    line = assert_one_line_error(run(inv, out, "--target", "prod"), 64)
    assert line.startswith(f"fraiseql-rb: cannot create the output directory {out}: ")
    assert "no such file or directory" in line


def test_an_immutable_output_dir_exits_64(tmp_path, inv):
    """Root ignores permission bits, but not the immutable attribute (chattr +i)."""
    out = tmp_path / "frozen"
    out.mkdir()
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and ext4/xfs/btrfs)")
    try:
        line = assert_one_line_error(run(inv, out, "--target", "prod"), 64)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert line.startswith(f"fraiseql-rb: cannot write to the output directory {out}: ")
    assert list(out.iterdir()) == []


def test_a_read_only_output_dir_exits_64(tmp_path, inv):
    """A read-only bind mount, in a private mount namespace so it vanishes with the process;
    as root this is the only way permission cannot be bypassed by the kernel."""
    out = tmp_path / "readonly"
    out.mkdir()
    mount = 'mount --bind -o ro "$0" "$0" && touch "$0/probe" 2>/dev/null; test ! -e "$0/probe"'
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", mount, str(out)],
                           capture_output=True, text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot make a read-only bind mount here (needs unshare and "
                    f"CAP_SYS_ADMIN): {probe.stderr.strip() if probe else 'no unshare'}")
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
         str(out), sys.executable, "-m", "fraiseql_rb", "run", "service-health",
         "--inventory", str(inv), "--target", "prod", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300)
    line = assert_one_line_error(result, 64)
    assert line == (f"fraiseql-rb: cannot write to the output directory {out}: "
                    "it is on a read-only file system")
    assert list(out.iterdir()) == []


# ---- point 10: which inventory, and a stale sandbox's ---------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _process_naming(*words: str) -> subprocess.Popen[bytes]:
    """A live process whose command line names `words`, as a sandbox process names its
    directory (the server's --config, the postmaster's -D)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", *words])


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory laid out as `sandbox up` leaves it (state file, secrets, inventory written
    by the sandbox's own writer), whose recorded processes are all gone: as after
    `sandbox down` or a reboot. A live pid that is not the sandbox's (reused after a reboot:
    here, this test's own) must not count."""
    sb = manager.Sandbox((tmp_path / "sb").absolute(), {
        "created_at": "2026-01-01T00:00:00Z", "pg_port": 5999, "server_port": 8999,
        "faults": [], "redis_port": 6999, "prometheus_port": None,
        "server_pid": _dead_pid(), "redis_pid": _dead_pid(), "traffic_pid": os.getpid(),
        "prometheus_pid": None,
    })
    sb.root.mkdir()
    for name in manager.SECRET_NAMES:
        sb.write_secret(name, f"{name}-value")
    (sb.root / "pgdata").mkdir()
    (sb.root / "pgdata" / "postmaster.pid").write_text(f"{_dead_pid()}\n{sb.root}/pgdata\n")
    sb.save()
    manager.write_inventory(sb)
    yield sb.root


def test_a_stale_sandbox_inventory_exits_64(sandbox_dir, tmp_path):
    out = tmp_path / "reports"
    inv = sandbox_dir / "inventory.toml"
    line = assert_one_line_error(run(inv, out), 64)
    assert line == (f"fraiseql-rb: the sandbox in {sandbox_dir} is not running (inventory "
                    f"{inv} is stale): start it with fraiseql-rb sandbox --dir {sandbox_dir} up")
    assert not out.exists()
    # the default sandbox, found without --inventory, gets the plain command
    result = subprocess.run([sys.executable, "-m", "fraiseql_rb", "run", "service-health",
                             "--output-dir", str(out)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path,
                            env={**os.environ, "FRAISEQL_RB_INVENTORY": "",
                                 "FRAISEQL_RB_SANDBOX_DIR": str(sandbox_dir)})
    line = assert_one_line_error(result, 64)
    assert line.endswith("is stale): start it with fraiseql-rb sandbox up")
    assert not out.exists()


@pytest.fixture
def tiny_runbook(tmp_path: Path) -> Path:
    """A one-cell runbook: a kernel that starts and ends at once."""
    return write_runbook(tmp_path, "preflight", "tiny", "# Tiny\nStarts a kernel and stops.",
                         'target = "sandbox"', "x = 1")


def test_run_names_the_inventory_and_target_it_used(tmp_path, tiny_runbook):
    inv = tmp_path / "fleet.toml"
    inv.write_text(UNREACHABLE)
    result = cli("run", "tiny", "--inventory", str(inv), "--target", "prod", "--output-dir",
                 str(tmp_path / "reports"), env={"FRAISEQL_RB_NOTEBOOKS": str(tiny_runbook)})
    assert result.returncode in (0, 1, 2, 3), result.stderr
    assert f"fraiseql-rb: inventory {inv.resolve()}, target prod" in result.stderr.splitlines()
    assert Path(result.stdout.strip().splitlines()[-1]).is_dir()


@pytest.mark.parametrize("alive", ["server", "postgres"])
def test_a_partly_stopped_sandbox_still_runs(sandbox_dir, tmp_path, tiny_runbook, alive):
    """db-down stops PostgreSQL and server-down the server on purpose: the sandbox is still
    there, the drill must run."""
    sb = manager.Sandbox.open(sandbox_dir)
    if alive == "server":
        proc = _process_naming("--config", str(sb.server_config))
        sb.state["server_pid"] = proc.pid
        sb.save()
    else:
        proc = _process_naming("-D", str(sb.root / "pgdata"))
        (sb.root / "pgdata" / "postmaster.pid").write_text(f"{proc.pid}\n")
    try:
        assert state.stale_inventory(sb.inventory) is None
        result = cli("run", "tiny", "--inventory", str(sb.inventory), "--output-dir",
                     str(tmp_path / "reports"), env={"FRAISEQL_RB_NOTEBOOKS": str(tiny_runbook)})
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode in (0, 1, 2, 3), result.stderr
    assert f"fraiseql-rb: inventory {sb.inventory}, target sandbox" in result.stderr
    assert state.stale_inventory(sb.inventory) == sb.root  # and once it is gone, stale


DIE_WHILE_STARTING = """
import os, pathlib
_count = pathlib.Path(os.environ["FRB_TEST_KERNEL_STARTS"])
_n = int(_count.read_text() or 0) + 1 if _count.exists() else 1
_count.write_text(str(_n))
if _n <= int(os.environ["FRB_TEST_KERNEL_DEATHS"]):
    os._exit(1)  # before the kernel ever answers kernel_info, as a starved start does
"""


@pytest.mark.parametrize(("deaths", "completed"), [(1, True), (5, False)])
def test_a_kernel_that_dies_while_starting_is_started_once_more(tmp_path, tiny_runbook,
                                                                 deaths, completed):
    """A kernel that dies before its first cell (seen on a loaded 2-core machine) did
    nothing, so the runner starts it once more; a second death is the run's error."""
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-die.py").write_text(DIE_WHILE_STARTING)
    count = tmp_path / "starts"
    inv = tmp_path / "fleet.toml"
    inv.write_text(UNREACHABLE)
    result = cli("run", "tiny", "--inventory", str(inv), "--target", "prod", "--output-dir",
                 str(tmp_path / "reports"),
                 env={"FRAISEQL_RB_NOTEBOOKS": str(tiny_runbook),
                      "IPYTHONDIR": str(tmp_path / "ipython"),
                      "FRB_TEST_KERNEL_STARTS": str(count),
                      "FRB_TEST_KERNEL_DEATHS": str(deaths)})
    assert int(count.read_text()) == 2  # never more than one more start
    assert "the kernel did not start" in result.stderr and "Traceback" not in result.stderr
    assert ("the runbook did not complete" not in result.stderr) is completed
    data = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "findings.json")
                      .read_text())
    assert any(f["check"] == "notebook.error" for f in data["findings"]) is not completed
