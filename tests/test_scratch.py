"""targets/scratch.py: a throwaway cluster that is really gone afterwards, whatever happens."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fraiseql_rb.targets import pgbin, scratch


@pytest.fixture(autouse=True)
def _own_root(scratch_root):
    """Each test gets its own scratch root (pg_fixtures.scratch_root), which fails the test
    if anything is left behind in it."""
    try:
        pgbin.pg_bindir()
    except pgbin.PgBinariesNotFound as exc:
        pytest.skip(str(exc))
    return scratch_root


def postgres_running_on(pgdata: Path) -> bool:
    """Is any postgres process running with this data directory (ps, not our bookkeeping)?"""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"postgres") and str(pgdata).encode() in args:
            return True
    return False


def test_cluster_starts_serves_and_is_gone_after():
    with scratch.cluster("unit test") as sc:
        pgdata, directory = sc.pgdata, sc.directory
        assert directory.name.startswith(scratch.PREFIX + "unit-test-")
        assert directory.parent == scratch.root()
        with sc.connect() as conn:
            conn.execute("CREATE DATABASE restored")
        with sc.connect("restored") as conn:
            conn.execute("CREATE TABLE t AS SELECT generate_series(1, 10) AS n")
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 10
            assert conn.execute("SHOW fsync").fetchone()[0] == "off"
            assert conn.execute("SHOW port").fetchone()[0] == str(sc.port)
        psql = subprocess.run([sc.bin("psql"), "-XAtc", "SELECT 1", sc.dsn("restored")],
                              capture_output=True, text=True, timeout=30)
        assert psql.stdout.strip() == "1", psql.stderr
        assert postgres_running_on(pgdata)
    assert not directory.exists()
    assert not postgres_running_on(pgdata)


def test_an_exception_inside_stops_and_removes_it():
    seen = {}
    with pytest.raises(RuntimeError, match="half-way"), scratch.cluster("failing step") as sc:
        seen.update(pgdata=sc.pgdata, directory=sc.directory)
        raise RuntimeError("a restore failed half-way")
    assert not seen["directory"].exists()
    assert not postgres_running_on(seen["pgdata"])
    assert list(scratch.root().glob(scratch.PREFIX + "*")) == []


def test_keyboard_interrupt_inside_stops_and_removes_it():
    seen = {}
    with pytest.raises(KeyboardInterrupt), scratch.cluster("interrupted") as sc:
        seen.update(pgdata=sc.pgdata, directory=sc.directory)
        raise KeyboardInterrupt
    assert not seen["directory"].exists()
    assert not postgres_running_on(seen["pgdata"])


def test_a_cluster_that_cannot_start_says_why_from_its_log_and_leaves_nothing(monkeypatch):
    monkeypatch.setattr(scratch.ScratchCluster, "_start", _start_with_bad_setting)
    with pytest.raises(scratch.ScratchError) as failed, scratch.cluster("bad start"):
        pass
    message = str(failed.value)
    assert "pg_ctl start failed" in message
    assert "shared_buffers" in message  # PostgreSQL's own complaint, from its log
    assert list(scratch.root().glob(scratch.PREFIX + "*")) == []


_real_start = scratch.ScratchCluster._start


def _start_with_bad_setting(self, timeout):
    """The real start, with a setting the server refuses (as a corrupt config would be)."""
    conf = self.pgdata / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write("\nshared_buffers = 'not a size'\n")
    return _real_start(self, timeout)


def test_data_dir_outside_a_scratch_space_is_refused(tmp_path):
    (tmp_path / "PG_VERSION").write_text("15\n")
    with pytest.raises(scratch.ScratchError, match="refusing"), \
            scratch.cluster("drill", data_dir=tmp_path):
        pass
    assert (tmp_path / "PG_VERSION").exists()  # never touched


def test_a_data_dir_restored_in_a_space_starts_and_is_removed():
    """The DR drill's way: restore (here: copy a stopped cluster's files) into a space."""
    with scratch.space("drill") as room:
        with scratch.cluster("source") as source:
            with source.connect() as conn:
                conn.execute("CREATE TABLE marker AS SELECT 'restored' AS word")
                conn.execute("CHECKPOINT")  # synchronous_commit is off; stop is immediate
            source.stop()
            shutil.copytree(source.pgdata, room / "pgdata", symlinks=True)
            (room / "pgdata" / "postmaster.pid").unlink(missing_ok=True)
        with scratch.cluster("drill", data_dir=room / "pgdata") as sc, sc.connect() as conn:
            assert conn.execute("SELECT word FROM marker").fetchone()[0] == "restored"
        assert not (room / "pgdata").exists()
        assert not postgres_running_on(room / "pgdata")
    assert not room.exists()


def test_stale_directories_of_dead_processes_are_swept():
    stale = scratch.root() / f"{scratch.PREFIX}stale-x"
    stale.mkdir()
    (stale / scratch.MARKER).write_text("999999999\n")  # no such pid
    foreign = scratch.root() / f"{scratch.PREFIX}foreign"
    foreign.mkdir()  # no marker: not ours, never removed
    assert scratch.sweep_stale() == [stale]
    assert not stale.exists() and foreign.exists()
    foreign.rmdir()


def test_the_servers_reason_survives_the_shutdown_lines_after_it(tmp_path):
    # a recovery that fails after the server was ready: FATAL, then five lines of shutdown
    sc = scratch.ScratchCluster("log", tmp_path, tmp_path / "pgdata", 5432)
    sc.logfile.parent.mkdir(parents=True)
    sc.logfile.write_text(
        "LOG:  database system is ready to accept read-only connections\n"
        "FATAL:  recovery ended before configured recovery target was reached\n"
        "LOG:  startup process (PID 8203) exited with exit code 1\n"
        "LOG:  terminating any other active server processes\n"
        "LOG:  shutting down due to startup process failure\n"
        "LOG:  database system is shut down\n"
        "LOG:  one more line\n")
    tail = sc.log_tail()
    assert "FATAL:  recovery ended before configured recovery target" in tail
    assert tail.endswith("one more line")
    assert "ready to accept" not in tail  # still the last lines, not the whole log
