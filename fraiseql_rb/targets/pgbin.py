"""Locate PostgreSQL's binaries on this machine (initdb, pg_ctl, pg_restore, ...): the
sandbox runs the server ones, the backup check runs pg_restore.

The sandbox needs *server* binaries, which a client-only machine lacks, so the search looks in
the places they are usually installed and finally in the ``pgserver`` wheel, which bundles a
complete PostgreSQL build. Search order (first directory holding initdb, pg_ctl and postgres):

1. ``$FRAISEQL_RB_PG_BIN`` (an explicit choice: if it is wrong we fail instead of guessing);
2. ``pg_config --bindir`` of the ``pg_config`` on PATH;
3. the highest ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu layout);
4. ``initdb`` on PATH, symlinks resolved (``/usr/local/bin/initdb -> .../15/bin/initdb``);
5. ``pgserver/pginstall/bin`` inside the installed ``pgserver`` package.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from fraiseql_rb.core import thresholds

ENV_VAR = "FRAISEQL_RB_PG_BIN"
REQUIRED = ("initdb", "pg_ctl", "postgres")
TOOLS = ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "pg_basebackup", "psql")
_TIMEOUT = thresholds.TOOL_PROBE_TIMEOUT_S


class PgBinariesNotFound(RuntimeError):
    """No usable PostgreSQL server binaries were found (message is one line)."""


def server_log_tail(text: str, lines: int = 5, limit: int = 600) -> str:
    """The last lines of a server log, joined with ' | ', for a one-line error. A server
    that fails after it was ready writes its reason (FATAL or PANIC) and then five lines of
    shutdown, so that reason is kept first when the tail alone would lose it."""
    every = [ln.strip() for ln in text.splitlines() if ln.strip()]
    kept = every[-lines:]
    reasons = [ln for ln in every if re.search(r"\b(FATAL|PANIC):", ln)]
    if reasons and reasons[-1] not in kept:
        kept = [reasons[-1], *kept]
    out = " | ".join(kept)
    return out if len(out) <= limit else out[:limit // 2] + " ... " + out[-limit // 2:]


def _is_exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _qualifies(bindir: Path) -> bool:
    return all(_is_exe(bindir / name) for name in REQUIRED)


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<ver>/bin: numeric, so 15 sorts above 9.6."""
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def _pg_config_bindir() -> Path | None:
    exe = shutil.which("pg_config")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--bindir"], capture_output=True, text=True, timeout=_TIMEOUT, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def pgserver_bindir() -> Path | None:
    """Where the ``pgserver`` wheel keeps its binaries, found without importing the package."""
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _candidates() -> Iterator[tuple[str, Path]]:
    found = _pg_config_bindir()
    if found:
        yield "pg_config --bindir", found
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for path in debian:
        yield "/usr/lib/postgresql", path
    initdb = shutil.which("initdb")
    if initdb:
        yield "initdb on PATH", Path(initdb).resolve().parent
    wheel = pgserver_bindir()
    if wheel:
        yield "pgserver wheel", wheel


@functools.cache
def pg_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres (see the module docstring)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not _qualifies(path):
            missing = ", ".join(n for n in REQUIRED if not _is_exe(path / n))
            raise PgBinariesNotFound(f"{ENV_VAR}={explicit} lacks executable {missing}")
        return path.resolve()
    for _source, path in _candidates():
        if _qualifies(path):
            return path.resolve()
    raise PgBinariesNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the "
        f"postgresql server package or the pgserver wheel, or set {ENV_VAR}"
    )


@functools.cache
def pg_bin(name: str) -> Path:
    """Absolute path of one PostgreSQL program from :func:`pg_bindir`."""
    path = pg_bindir() / name
    if not _is_exe(path):
        raise PgBinariesNotFound(f"{name} not found in {pg_bindir()}")
    return path


def _pg_config_text(option: str) -> str | None:
    """Ask the pg_config that sits next to the server binaries (never another install's)."""
    exe = pg_bindir() / "pg_config"
    if not _is_exe(exe):
        return None
    try:
        return subprocess.run(
            [str(exe), option], capture_output=True, text=True, timeout=_TIMEOUT, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _pg_config(option: str) -> Path | None:
    out = _pg_config_text(option)
    return Path(out) if out else None


@functools.cache
def has_ssl() -> bool:
    """Whether the server was built with OpenSSL (the pgserver wheel's build is not).

    Without a pg_config to ask we assume yes; a server without it then fails to start with
    "SSL is not supported by this build" in its log.
    """
    configure = _pg_config_text("--configure")
    if configure is None:
        return True
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


@functools.cache
def pg_major_version() -> int:
    """Major version of the server binaries, from ``postgres --version``."""
    try:
        out = subprocess.run(
            [str(pg_bin("postgres")), "--version"],
            capture_output=True, text=True, timeout=_TIMEOUT, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgBinariesNotFound(f"cannot run {pg_bin('postgres')} --version: {exc}") from None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise PgBinariesNotFound(f"unexpected output from postgres --version: {out.strip()!r}")
    return int(match.group(1))


@functools.cache
def pg_sharedir() -> Path:
    """The share directory (extension control files live in ``extension/`` under it)."""
    found = _pg_config("--sharedir")
    if found and found.is_dir():
        return found
    bindir = pg_bindir()
    for guess in (
        bindir.parent / "share" / "postgresql",
        bindir.parent / "share",
        Path("/usr/share/postgresql") / str(pg_major_version()),
    ):
        if (guess / "extension").is_dir():
            return guess
    return bindir.parent / "share"


@functools.cache
def has_extension(name: str) -> bool:
    """True when the install ships extension ``name`` (control file, and library if known)."""
    if not (pg_sharedir() / "extension" / f"{name}.control").is_file():
        return False
    libdir = _pg_config("--pkglibdir")
    if libdir and libdir.is_dir():
        return (libdir / f"{name}.so").is_file() or (libdir / f"{name}.dylib").is_file()
    return True


def clear_cache() -> None:
    """Forget every cached lookup (tests that change ``$FRAISEQL_RB_PG_BIN`` call this)."""
    for fn in (pg_bindir, pg_bin, pg_major_version, pg_sharedir, has_extension, has_ssl):
        fn.cache_clear()
