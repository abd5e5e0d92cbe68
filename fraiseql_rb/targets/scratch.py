"""A throwaway PostgreSQL cluster on this machine, for test restores and DR drills.

Never the target's: a scratch cluster lives in its own directory, on a free loopback port,
and is stopped (``pg_ctl stop -m immediate``) and deleted when its ``with`` block ends, on an
exception and on KeyboardInterrupt alike::

    with scratch.cluster("backup-verification") as sc:      # a fresh initdb
        subprocess.run([sc.bin("pg_restore"), "-d", sc.dsn("fraiseql"), dump], ...)
        with sc.connect("fraiseql") as conn: ...

    with scratch.space("dr-drill") as room:                 # restore a base backup first
        data = room / "pgdata"; ...                         # (tar -x, recovery.signal)
        with scratch.cluster("dr-drill", data_dir=data) as sc: ...

``cluster(purpose, *, data_dir=None)`` initdb's a fresh cluster (superuser ``postgres``,
UTF8, locale C, fsync off) or, with ``data_dir``, starts from a data directory already
restored inside a ``space()`` (anything else is refused: a scratch cluster never starts on a
directory it did not make room for). The server listens on 127.0.0.1 on a free port and on a
unix socket in a private directory; connections over the socket are trusted (only this user
and the server's account can enter it), TCP connections need the role's own password
(``scram-sha-256``), so a restored application role can log in as its server would.
``sc.port``, ``sc.dsn(dbname)`` (libpq keywords, over the socket, as the superuser),
``sc.connect(dbname)`` (psycopg, autocommit), ``sc.bin(tool)`` (targets/pgbin.py's binaries)
and ``sc.directory`` are what callers use. A cluster that fails to start raises
:class:`ScratchError` carrying the last lines of PostgreSQL's own log, and leaves nothing.

Scratch space: ``$FRAISEQL_RB_SCRATCH`` or the system temp directory, one
``fraiseql-rb-scratch-<purpose>-*`` directory per cluster or space. It grows to about the
restored database's size plus its WAL (a fresh cluster is ~40 MB; a restore adds the
database, its indexes, and the WAL written while loading, up to ``max_wal_size``, 1 GB by
default). An ``atexit`` hook stops and deletes whatever a dying interpreter left, and the next
``cluster()`` or ``space()`` call removes directories whose owning process is gone (a kernel
killed with SIGKILL runs no hook).

As root, PostgreSQL refuses to run, so initdb, pg_ctl and the server run as the ``postgres``
system user (``nobody`` without one), which is handed the data and socket directories only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.targets import pgbin

ENV_VAR = "FRAISEQL_RB_SCRATCH"
PREFIX = "fraiseql-rb-scratch-"
MARKER = ".fraiseql-rb-scratch"  # holds the owning pid; a directory without it is not ours
SUPERUSER = "postgres"
_START_TIMEOUT_S = thresholds.SCRATCH_START_TIMEOUT_S


class ScratchError(RuntimeError):
    """A scratch cluster could not be made or started; the message ends with PostgreSQL's
    own last log lines when there are any, and holds no secret."""


def root() -> Path:
    """Where scratch directories are made: $FRAISEQL_RB_SCRATCH, else the temp directory."""
    return Path(os.environ.get(ENV_VAR) or tempfile.gettempdir()).expanduser().absolute()


def _account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when we are root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ScratchError("running as root, and neither a 'postgres' nor a 'nobody' user exists "
                       "for PostgreSQL to run as")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slug(purpose: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", purpose.lower()).strip("-")[:24] or "scratch"


# -- scratch directories, their owner and their removal --------------------------------------

_live: dict[Path, ScratchCluster | None] = {}  # every directory and cluster this process made
_lock = threading.Lock()


def _make_dir(purpose: str) -> Path:
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    sweep_stale()
    account = _account()
    if account is not None:
        _check_traversable(base, account)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{_slug(purpose)}-", dir=base))
    (path / MARKER).write_text(f"{os.getpid()}\n")
    if account is not None:  # the server account must traverse it (0711), never list it
        path.chmod(0o711)
    if len(str(path / "run" / ".s.PGSQL.65535")) > 107:  # sun_path on Linux
        shutil.rmtree(path, ignore_errors=True)
        raise ScratchError(f"scratch root {base} is too long for a unix socket path: set "
                           f"{ENV_VAR} to a short directory")
    with _lock:
        _live[path] = None
    return path


def _check_traversable(base: Path, account: pwd.struct_passwd) -> None:
    """As root: the server account must reach the scratch root (a 0700 home or pytest's
    0700 temp directory does not let it)."""
    groups = {account.pw_gid, *os.getgrouplist(account.pw_name, account.pw_gid)}
    for path in (*reversed(base.parents), base):
        st = path.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise ScratchError(f"scratch root {base} is not reachable by user "
                               f"{account.pw_name}, who runs PostgreSQL ({path} has mode "
                               f"{stat.S_IMODE(st.st_mode):04o}): set {ENV_VAR} to a "
                               "directory under /tmp")


def _remove_dir(path: Path) -> None:
    with _lock:
        _live.pop(path, None)
    shutil.rmtree(path, ignore_errors=True)


def _owner_alive(path: Path) -> bool:
    try:
        pid = int((path / MARKER).read_text().strip())
    except (OSError, ValueError):
        return True  # not ours to judge
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[Path]:
    """Stop and remove scratch directories whose owning process is gone; returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for path in root().glob(f"{PREFIX}*"):
            if not (path / MARKER).is_file() or _owner_alive(path):
                continue
            for pgdata in {p.parent for p in path.rglob("postmaster.pid")}:
                _pg_ctl_stop(pgdata, _account())
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def space(purpose: str) -> Iterator[Path]:
    """A scratch directory (removed on exit) to restore into before ``cluster(data_dir=)``."""
    path = _make_dir(purpose)
    try:
        yield path
    finally:
        _remove_dir(path)


def _in_space(data_dir: Path) -> bool:
    return any(parent.name.startswith(PREFIX) and (parent / MARKER).is_file()
               and parent.parent == root() for parent in data_dir.parents)


# -- the cluster --------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in secrets.clean_environment().items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", HOME=str(home))
    return env


def _as_server(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _pg_ctl_stop(pgdata: Path, account: pwd.struct_passwd | None) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError, pgbin.PgBinariesNotFound):
        subprocess.run([str(pgbin.pg_bin("pg_ctl")), "-D", str(pgdata), "-m", "immediate",
                        "-w", "-t", str(int(_START_TIMEOUT_S)), "stop"],
                       capture_output=True, timeout=_START_TIMEOUT_S + 10,
                       stdin=subprocess.DEVNULL, env=_env(pgdata.parent), cwd="/",
                       check=False, **_as_server(account))


def _give(account: pwd.struct_passwd | None, top: Path) -> None:
    if account is None:
        return
    os.chown(top, account.pw_uid, account.pw_gid)
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(base, name), account.pw_uid, account.pw_gid,
                     follow_symlinks=False)


def _log_tail(logfile: Path, lines: int = 5) -> str:  # the last lines an error carries
    with contextlib.suppress(OSError):
        return pgbin.server_log_tail(logfile.read_text(errors="replace"), lines)
    return ""


HBA = ("# fraiseql-rb scratch cluster: the socket directory is private\n"
       "local   all          all                  trust\n"
       "local   replication  all                  trust\n"
       "host    all          all   127.0.0.1/32   scram-sha-256\n")


@dataclass
class ScratchCluster:
    """One running scratch cluster (see the module docstring)."""

    purpose: str
    directory: Path  # its own scratch directory: socket, log, and pgdata when initdb'd here
    pgdata: Path
    port: int
    superuser: str = SUPERUSER
    account: pwd.struct_passwd | None = field(default=None, repr=False)

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def logfile(self) -> Path:
        return self.directory / "log" / "postgresql.log"

    def bin(self, tool: str) -> str:
        """Absolute path of a PostgreSQL program (pg_restore, psql, ...) of this install."""
        return str(pgbin.pg_bin(tool))

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string for the superuser over the unix socket (no password)."""
        return make_conninfo(host=str(self.socket_dir), port=self.port,
                              user=self.superuser, dbname=dbname, connect_timeout=10)

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection:
        """A psycopg connection (autocommit) as the superuser; kwargs go to psycopg."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.dsn(dbname), **kwargs)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, joined with ' | '."""
        return _log_tail(self.logfile, lines)

    # -- lifecycle (used by `cluster`) --------------------------------------------------------

    def _run(self, what: str, args: list[str], timeout: float) -> None:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                  env=_env(self.directory), cwd=self.directory,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  check=False, **_as_server(self.account))
        except subprocess.TimeoutExpired:
            raise ScratchError(f"{what} timed out after {timeout:g} s: "
                               f"{self.log_tail() or 'no log'}") from None
        except OSError as exc:
            raise ScratchError(f"{what} could not run: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            detail = self.log_tail() or " | ".join(
                ln.strip() for ln in (proc.stderr + proc.stdout).splitlines()
                if ln.strip())[-600:]
            raise ScratchError(f"{what} failed (exit {proc.returncode}): {detail}")

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700)
        _give(self.account, self.pgdata)
        self._run("initdb", [self.bin("initdb"), "-D", str(self.pgdata), "-U", self.superuser,
                             "--auth-local=trust", "--auth-host=scram-sha-256",
                             "--encoding=UTF8", "--locale=C", "--no-sync"],
                  timeout=thresholds.SCRATCH_START_TIMEOUT_S * 4)

    def _start(self, timeout: float) -> None:
        hba = self.directory / "pg_hba.conf"
        hba.write_text(HBA)
        self.socket_dir.mkdir(mode=0o700)
        self.logfile.parent.mkdir(mode=0o700)
        self.pgdata.chmod(0o700)
        for path in (self.socket_dir, self.logfile.parent, hba):
            _give(self.account, path)
        _give(self.account, self.pgdata)
        options = " ".join([
            f"-p {self.port}", f"-k {shlex.quote(str(self.socket_dir))}",
            "-c listen_addresses=127.0.0.1", f"-c hba_file={shlex.quote(str(hba))}",
            "-c fsync=off", "-c synchronous_commit=off",
            "-c full_page_writes=off", "-c archive_mode=off", "-c logging_collector=off",
            "-c ssl=off", "-c shared_preload_libraries=''", "-c log_timezone=UTC",
        ])
        self._run("pg_ctl start", [self.bin("pg_ctl"), "-D", str(self.pgdata), "-l",
                                   str(self.logfile), "-o", options, "-w", "-t",
                                   str(int(timeout)), "start"], timeout=timeout + 10)

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: the data is thrown away)."""
        if (self.pgdata / "postmaster.pid").exists():
            _pg_ctl_stop(self.pgdata, self.account)


def _cleanup_all() -> None:
    with _lock:
        leftovers = list(_live.items())
    for path, made in leftovers:
        if made is not None:
            made.stop()
        _remove_dir(path)


atexit.register(_cleanup_all)


@contextlib.contextmanager
def cluster(purpose: str, *, data_dir: Path | str | None = None,
            start_timeout_s: float = _START_TIMEOUT_S) -> Iterator[ScratchCluster]:
    """A started scratch cluster, stopped and removed on exit (see the module docstring).

    ``data_dir``: a data directory already restored inside a ``space()``; it is started as
    it is (its postgresql.conf applies, with port, socket, hba file and fsync set by us) and
    deleted with the cluster. Without it, a fresh cluster is initdb'd."""
    account = _account()
    adopted = Path(data_dir).absolute() if data_dir is not None else None
    if adopted is not None and not _in_space(adopted):
        raise ScratchError(f"refusing to start a scratch cluster on {adopted}: it does not "
                           f"lie in a scratch space under {root()} (scratch.space())")
    if adopted is not None and not (adopted / "PG_VERSION").is_file():
        raise ScratchError(f"{adopted} is not a PostgreSQL data directory (no PG_VERSION)")
    directory = _make_dir(purpose)
    made = ScratchCluster(purpose, directory, adopted or directory / "pgdata", _free_port(),
                          account=account)
    with _lock:
        _live[directory] = made
    try:
        if adopted is None:
            made._initdb()
        made._start(start_timeout_s)
        yield made
    finally:
        made.stop()
        if adopted is not None:
            shutil.rmtree(adopted, ignore_errors=True)
        _remove_dir(directory)
