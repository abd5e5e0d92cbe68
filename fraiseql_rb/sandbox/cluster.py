"""A disposable, real PostgreSQL cluster for the drill sandbox, made with initdb and pg_ctl.

It is configured like the production database the runbook describes (SCRAM over TLS, the
``fraiseql`` database and ``fraiseql_user`` role with the grants of section 2.1 step 1, WAL
archiving and ``pg_dump -Fc`` backups as in section 5.1) so that playbooks and fault drills act
on the same mechanisms they will meet in production.

Layout under ``base_dir``::

    pgdata/                 the data directory
    run/                    unix socket directory (private: mode 0700)
    logs/postgresql.log     server log (pg_ctl -l)
    wal_archive/            archive_command target
    backups/                dumps, base backups, config and audit archives (see `backups`)
    certs/                  ca.crt, ca.key, server.crt, server.key

PostgreSQL refuses to run as root, so as root the server programs run as ``postgres`` (or
``nobody``) and the directories they use are handed to that user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from psycopg import sql

from fraiseql_rb.targets.pgbin import (
    has_extension,
    has_ssl,
    pg_bindir,
    pgserver_bindir,
    server_log_tail,
)

from . import audit_data

log = logging.getLogger(__name__)

APP_DB = "fraiseql"
APP_USER = "fraiseql_user"
SUPERUSER = "postgres"
CONF_FILE = "fraiseql_rb_sandbox.conf"  # included from postgresql.conf; ALTER SYSTEM still wins
UNIX_SOCKET_MAX = 107  # sun_path limit on Linux, including the ".s.PGSQL.NNNNN" file name
DEFAULT_HOST_RULES = [
    "host    all             all             127.0.0.1/32    scram-sha-256",
    "host    all             all             ::1/128         scram-sha-256",
    "host    replication     all             127.0.0.1/32    scram-sha-256",
]
_CMD_TIMEOUT = 120  # initdb, dumps: generous but finite


class ClusterError(RuntimeError):
    """A sandbox cluster operation failed; the message is one line and holds no secret."""


# --------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conf_value(value: object) -> str:
    """Render a postgresql.conf value: booleans as on/off, numbers bare, strings quoted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root but neither a 'postgres' nor a 'nobody' user exists")


def _can_traverse(path: Path, account: pwd.struct_passwd) -> bool:
    st = path.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {account.pw_gid} | set(os.getgrouplist(account.pw_name, account.pw_gid))
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _blocking_parent(target: Path, account: pwd.struct_passwd) -> Path | None:
    """The first ancestor of ``target`` that ``account`` cannot traverse, if any."""
    for parent in reversed(target.parents):
        if parent.exists() and not _can_traverse(parent, account):
            return parent
    return None


def _check_reachable(target: Path, account: pwd.struct_passwd, what: str, hint: str) -> None:
    """Fail clearly when ``account`` cannot reach ``target`` (e.g. it lies under /root)."""
    parent = _blocking_parent(target, account)
    if parent is not None:
        mode = stat.S_IMODE(parent.stat().st_mode)
        raise ClusterError(f"{what} {target} is not reachable by user {account.pw_name}: "
                           f"{parent} has mode {mode:04o}; {hint}")


# --------------------------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the sandbox's TLS material."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def tls_files(certs_dir: Path) -> TlsFiles:
    return TlsFiles(certs_dir / "ca.crt", certs_dir / "ca.key",
                    certs_dir / "server.crt", certs_dir / "server.key")


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file that is 0600 from the moment it exists."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_ca(certs_dir: Path, *, days: int = 3650) -> TlsFiles:
    """Create the sandbox CA (EC P-256) once; later server certificates are signed by it."""
    files = tls_files(certs_dir)
    if files.ca_cert.exists() and files.ca_key.exists():
        return files
    certs_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fraiseql-rb sandbox CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _pem_key(key))
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def issue_server_cert(
    certs_dir: Path, *, days: float = 365, not_before: dt.datetime | None = None,
    out_dir: Path | None = None,
) -> TlsFiles:
    """(Re)issue server.crt/server.key for localhost and 127.0.0.1, signed by the sandbox CA.

    ``not_before`` in the past with a small ``days`` makes an expired certificate for drills.
    ``out_dir`` writes the pair elsewhere (the stand-in's own certificate), same CA.
    """
    ca_files = ensure_ca(certs_dir)
    files = ca_files if out_dir is None else TlsFiles(
        ca_files.ca_cert, ca_files.ca_key, out_dir / "server.crt", out_dir / "server.key")
    if out_dir is not None:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ClusterError(f"unexpected CA key type in {files.ca_key}")
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.server_key, _pem_key(key))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def _scale_rows(conn: psycopg.Connection[Any], scale: int) -> None:
    """Add scale - 1 copies of every generated user and post (`sandbox up --scale N`), each
    with its own id and e-mail, posts pointing at their own copy of their author."""
    copies = {"copies": scale - 1}
    conn.execute(
        "INSERT INTO tb_user (id, email, name, created_at) "
        "SELECT md5(u.id::text || '-' || k)::uuid, 'copy' || k || '.' || u.email, u.name, "
        "u.created_at FROM tb_user AS u CROSS JOIN generate_series(1, %(copies)s) AS k "
        "ORDER BY k, u.pk_user", copies)
    conn.execute(
        "INSERT INTO tb_post (id, fk_user, title, body, published_at) "
        "SELECT md5(p.id::text || '-' || k)::uuid, c.pk_user, p.title, p.body, p.published_at "
        "FROM tb_post AS p JOIN tb_user AS u ON u.pk_user = p.fk_user "
        "CROSS JOIN generate_series(1, %(copies)s) AS k "
        "JOIN tb_user AS c ON c.id = md5(u.id::text || '-' || k)::uuid "
        "ORDER BY k, p.pk_post", copies)


# --------------------------------------------------------------------------------------------
# the cluster


class Cluster:
    """One sandbox PostgreSQL cluster rooted at ``base_dir``.

    ``port=None`` picks a free port, unless the cluster was initialised before, in which case the
    port recorded in its configuration is reused (so another process can manage it).
    """

    def __init__(self, base_dir: Path | str, port: int | None = None) -> None:
        self.base_dir = Path(base_dir).expanduser().absolute()
        self.pgdata = self.base_dir / "pgdata"
        self.run_dir = self.base_dir / "run"
        self.log_dir = self.base_dir / "logs"
        self.logfile = self.log_dir / "postgresql.log"
        self.wal_archive_dir = self.base_dir / "wal_archive"
        self.backup_dir = self.base_dir / "backups"
        self.certs_dir = self.base_dir / "certs"
        self.private_bin_dir = self.base_dir / "pgbin"
        self._account = _server_account()
        self.port = port or self._recorded_port() or free_port()

    def __repr__(self) -> str:
        return f"Cluster(base_dir={str(self.base_dir)!r}, port={self.port})"

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def run_as(self) -> str:
        """Name of the OS user the server runs as."""
        if self._account:
            return self._account.pw_name
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def tls(self) -> TlsFiles:
        return tls_files(self.certs_dir)

    @property
    def bindir(self) -> Path:
        """Directory of the programs this cluster runs (its private copy when it has one)."""
        private = self.private_bin_dir / "pgserver" / "pginstall" / "bin"
        return private if private.is_dir() else pg_bindir()

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _ensure_reachable_binaries(self) -> None:
        """As root, make sure the server account can execute the binaries.

        The pgserver wheel often sits under a 0700 home (``/root/.pyenv/...``); rather than
        loosening permissions there, copy its install (~30 MB) into the cluster directory.
        """
        if self._account is None:
            return
        source = pg_bindir()
        if _blocking_parent(source / "postgres", self._account) is None:
            return
        wheel = pgserver_bindir()
        if wheel is None or source != wheel.resolve():
            _check_reachable(source / "postgres", self._account, "PostgreSQL binary",
                             "install the postgresql server package or set FRAISEQL_RB_PG_BIN")
            return
        package = source.parent.parent  # .../site-packages/pgserver
        target = self.private_bin_dir / "pgserver"
        log.info("copying pgserver binaries to %s (server user cannot reach %s)", target, source)
        for part in ("bin", "lib", "share"):
            shutil.copytree(package / "pginstall" / part, target / "pginstall" / part,
                            symlinks=True, dirs_exist_ok=True)
        libs = package.parent / "pgserver.libs"  # auditwheel's copy of libpq, found via RUNPATH
        if libs.is_dir():
            shutil.copytree(libs, self.private_bin_dir / "pgserver.libs", symlinks=True,
                            dirs_exist_ok=True)
        for root, dirs, files in os.walk(self.private_bin_dir):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    executable = os.stat(path).st_mode & stat.S_IXUSR
                    os.chmod(path, 0o755 if executable else 0o644)
        self.private_bin_dir.chmod(0o755)

    def _recorded(self, name: str) -> str | None:
        """A setting as written to our include file at init (None before init)."""
        conf = self.pgdata / CONF_FILE
        with contextlib.suppress(OSError):
            match = re.search(rf"^{name}\s*=\s*'?([^'\n]*)'?$", conf.read_text(), re.MULTILINE)
            if match:
                return match.group(1).strip()
        return None

    def _recorded_port(self) -> int | None:
        port = self._recorded("port")
        return int(port) if port and port.isdigit() else None

    @property
    def ssl_enabled(self) -> bool:
        """Whether init() configured TLS (ssl = on)."""
        return self._recorded("ssl") == "on"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.base_dir))
        return env

    def _run(
        self, what: str, args: list[str], *, timeout: float = _CMD_TIMEOUT,
        as_server: bool = True, log_tail: bool = False, new_session: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run one PostgreSQL program; failures become a one-line ClusterError."""
        kwargs: dict[str, Any] = {}
        if as_server and self._account:
            kwargs.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, env=self._env(),
                cwd=self.base_dir, stdin=subprocess.DEVNULL, start_new_session=new_session,
                check=False, **kwargs,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{what} timed out after {timeout:g}s{self._log_hint()}") from None
        except OSError as exc:
            raise ClusterError(f"{what} could not run: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            detail = self._log_tail() if log_tail else ""
            detail = detail or server_log_tail(proc.stderr + "\n" + proc.stdout)
            raise ClusterError(f"{what} failed (exit {proc.returncode}): {detail}")
        return proc

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return server_log_tail(self.logfile.read_text(errors="replace"))
        return ""

    def _log_hint(self) -> str:
        tail = self._log_tail()
        return f": {tail}" if tail else ""

    def _give_to_server(self, *paths: Path) -> None:
        """As root, hand ``paths`` (recursively) to the server account."""
        if not self._account:
            return
        uid, gid = self._account.pw_uid, self._account.pw_gid
        for top in paths:
            if not top.exists():
                continue
            os.chown(top, uid, gid)
            if top.is_dir():
                for root, dirs, files in os.walk(top):
                    for name in dirs + files:
                        os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)

    # -- creation -----------------------------------------------------------------------------

    def init(
        self,
        superuser_password: str,
        *,
        ssl: bool = True,
        hba_rules: list[str] | None = None,
        password_encryption: str = "scram-sha-256",
        extra_conf: dict[str, object] | None = None,
    ) -> None:
        """initdb a new cluster and write its configuration; the server is not started.

        ``ssl=True`` on binaries built without OpenSSL (the pgserver wheel) logs a warning and
        configures the server without TLS; :attr:`ssl_enabled` tells which one you got.
        """
        if (self.pgdata / "PG_VERSION").exists():
            raise ClusterError(f"{self.pgdata} is already initialised")
        socket_path = self.run_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path)) > UNIX_SOCKET_MAX:
            raise ClusterError(f"base_dir {self.base_dir} is too long for a unix socket path")
        if not superuser_password:
            raise ClusterError("superuser_password must not be empty")
        if self._account:
            _check_reachable(self.base_dir, self._account, "base_dir",
                             "use a directory under /tmp")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._account:
            # mkdtemp makes 0700 dirs; the server user only needs to traverse ours
            mode = stat.S_IMODE(self.base_dir.stat().st_mode)
            if not _can_traverse(self.base_dir, self._account):
                self.base_dir.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)
            self._ensure_reachable_binaries()
        private = (self.pgdata, self.run_dir, self.log_dir, self.wal_archive_dir,
                   self.backup_dir, self.certs_dir)
        for path in private:
            path.mkdir(mode=0o700, exist_ok=True)
            path.chmod(0o700)
        if ssl and not has_ssl():
            log.warning("PostgreSQL in %s was built without OpenSSL: the sandbox cluster runs "
                        "without TLS", pg_bindir())
            ssl = False
        if ssl:
            issue_server_cert(self.certs_dir)
        pwfile = self.base_dir / ".initdb-pwfile"
        _write_private(pwfile, superuser_password.encode() + b"\n")
        self._give_to_server(*private, pwfile)
        try:
            self._run("initdb", [
                self._bin("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        self._write_conf(ssl=ssl, password_encryption=password_encryption,
                         extra_conf=extra_conf or {})
        self.write_hba(hba_rules)
        log.info("initialised PostgreSQL cluster in %s (port %d)", self.pgdata, self.port)

    def _write_conf(self, *, ssl: bool, password_encryption: str,
                    extra_conf: dict[str, object]) -> None:
        archive = self.wal_archive_dir
        quoted = "'" + str(archive).replace("'", "'\\''") + "'"  # shell-quoted directory
        settings: dict[str, object] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.run_dir),
            "password_encryption": password_encryption,
            "ssl": ssl,
            "wal_level": "replica",
            "max_wal_senders": 5,
            "archive_mode": True,
            "archive_command": f"test ! -f {quoted}/%f && cp %p {quoted}/%f",
            "logging_collector": False,  # pg_ctl -l writes logs/postgresql.log
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_timezone": "UTC",
            "timezone": "UTC",
            "log_min_duration_statement": 1000,  # the "slow query log" of runbook 4.1
            "log_lock_waits": True,
            # Disposable sandbox, rebuilt on every `sandbox up`: fsync only protects against an
            # OS crash or power loss, which we never recover from anyway. A killed postmaster
            # (the crash drills) still recovers normally because the kernel keeps the data.
            "fsync": False,
            "synchronous_commit": False,
        }
        if ssl:
            files = self.tls
            settings.update(ssl_cert_file=str(files.server_cert),
                            ssl_key_file=str(files.server_key),
                            ssl_min_protocol_version="TLSv1.2")
        if has_extension("pg_stat_statements"):
            settings["shared_preload_libraries"] = "pg_stat_statements"
        settings.update(extra_conf)
        lines = ["# Written by fraiseql_rb.sandbox.cluster; ALTER SYSTEM overrides these.\n"]
        lines += [f"{key} = {_conf_value(val)}\n" for key, val in settings.items()]
        conf = self.pgdata / CONF_FILE
        conf.write_text("".join(lines))
        main = self.pgdata / "postgresql.conf"
        with main.open("a") as fh:
            fh.write(f"\ninclude = '{CONF_FILE}'\n")
        self._give_to_server(conf, self.certs_dir)

    def write_hba(self, host_rules: list[str] | None = None) -> None:
        """Write pg_hba.conf; ``host_rules`` replaces the TCP lines (reload() to apply).

        Socket connections are trusted: the socket lives in a 0700 directory that only the
        server account (and root) can enter, which is what provisioning and drills use.
        """
        rules = DEFAULT_HOST_RULES if host_rules is None else host_rules
        text = (
            "# Written by fraiseql_rb.sandbox.cluster\n"
            "# TYPE  DATABASE        USER            ADDRESS         METHOD\n"
            "local   all             all                             trust\n"
            "local   replication     all                             trust\n"
            + "".join(rule.rstrip("\n") + "\n" for rule in rules)
        )
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(text)
        hba.chmod(0o600)
        self._give_to_server(hba)

    def reissue_server_cert(self, *, days: int = 365, not_before: dt.datetime | None = None,
                            reload: bool = True) -> TlsFiles:
        """Replace the server certificate (e.g. an expired one for a drill) and reload."""
        files = issue_server_cert(self.certs_dir, days=days, not_before=not_before)
        self._give_to_server(self.certs_dir)
        if reload and self.is_running():
            self.reload()
        return files

    # -- lifecycle ----------------------------------------------------------------------------

    def _pg_ctl(self, *args: str) -> list[str]:
        return [self._bin("pg_ctl"), "-D", str(self.pgdata), *args]

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections."""
        if self.is_running():
            return
        if not (self.pgdata / "PG_VERSION").exists():
            raise ClusterError(f"{self.pgdata} is not initialised; call init() first")
        self._run("pg_ctl start", self._pg_ctl("-l", str(self.logfile), "-w", "-t",
                                               str(int(timeout)), "start"),
                  timeout=timeout + 10, log_tail=True, new_session=True)

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Stop the server (mode: smart, fast or immediate); no-op when it is not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self.is_running():
            return
        self._run(f"pg_ctl stop -m {mode}",
                  self._pg_ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop"),
                  timeout=timeout + 10, log_tail=True)

    def restart(self, timeout: float = 30) -> None:
        """Fast restart (a stopped server is simply started)."""
        self.stop("fast", timeout)
        self.start(timeout)

    def reload(self) -> None:
        """Make the server re-read postgresql.conf, pg_hba.conf and its certificates."""
        self._run("pg_ctl reload", self._pg_ctl("reload"), timeout=30)

    def is_running(self) -> bool:
        """True when pg_ctl status finds a live postmaster for this data directory."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        try:
            self._run("pg_ctl status", self._pg_ctl("status"), timeout=15)
        except ClusterError:
            return False
        return True

    def pid(self) -> int | None:
        """PID of the postmaster from postmaster.pid, if that process is alive."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first.strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def destroy(self) -> None:
        """Stop the server (immediately if a fast stop fails) and delete base_dir."""
        try:
            self.stop("fast", timeout=20)
        except ClusterError:
            self.stop("immediate", timeout=20)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- connections --------------------------------------------------------------------------

    def superuser_conninfo(self, dbname: str = "postgres") -> dict[str, Any]:
        """psycopg keyword arguments for the superuser over the unix socket (no password)."""
        return {"host": str(self.run_dir), "port": self.port, "user": SUPERUSER,
                "dbname": dbname, "connect_timeout": 10}

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True,
                ) -> psycopg.Connection[Any]:
        """A superuser connection over the socket, for provisioning and fault injection."""
        try:
            return psycopg.connect(**self.superuser_conninfo(dbname), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            raise ClusterError(f"cannot connect to {dbname} over {self.run_dir}: "
                               f"{server_log_tail(str(exc), 2)}") from None

    def dsn(self, user: str, password: str, dbname: str = APP_DB, sslmode: str | None = None,
            **params: str | int) -> str:
        """``postgresql://`` URL over TCP 127.0.0.1 (user and password percent-encoded).

        ``sslmode`` defaults to ``require``, or ``disable`` on a cluster without TLS.
        """
        if sslmode is None:
            sslmode = "require" if self.ssl_enabled else "disable"
        cred = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
        query = urllib.parse.urlencode({"sslmode": sslmode, **params})
        return f"postgresql://{cred}@127.0.0.1:{self.port}/{urllib.parse.quote(dbname)}?{query}"

    # -- content ------------------------------------------------------------------------------

    def provision(
        self,
        app_password: str,
        *,
        audit_events: int = 20000,
        seed: int = 42,
        days: int = 30,
        now: dt.datetime | None = None,
        scale: int = 1,
    ) -> dict[str, float]:
        """Create the fraiseql database, role, grants, schema and audit history.

        Follows runbook section 2.1 step 1. ``scale`` N makes N times the schema's users and
        posts (copies of the generated rows with their own ids; the audit history still names
        the first 200 users). Returns the seconds each phase took.
        """
        if scale < 1:
            raise ClusterError("scale must be 1 or more")
        if not app_password:
            raise ClusterError("app_password must not be empty")
        timings: dict[str, float] = {}
        began = time.perf_counter()
        with self.connect("postgres") as conn:
            # Utility statements are recorded verbatim by pg_stat_statements and in error
            # logs; send a SCRAM verifier computed here, never the password itself.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SET pg_stat_statements.track_utility = off")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (APP_DB,)).fetchone()
            if exists:
                raise ClusterError(f"database {APP_DB} already exists; provision a fresh cluster")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(APP_DB)))
            verifier = conn.pgconn.encrypt_password(app_password.encode(), APP_USER.encode())
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_USER), sql.Literal(verifier.decode())))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(APP_DB), sql.Identifier(APP_USER)))
        timings["database_and_role"] = time.perf_counter() - began

        began = time.perf_counter()
        schema = resources.files("fraiseql_rb.sandbox").joinpath("schema.sql").read_text()
        with self.connect(APP_DB) as conn:
            preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
            if preloaded and "pg_stat_statements" in str(preloaded[0]):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            with conn.transaction():
                conn.execute(schema)
                if scale > 1:
                    _scale_rows(conn, scale)
                user = sql.Identifier(APP_USER)
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(user))
                conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}")
                             .format(user))
            timings["schema"] = time.perf_counter() - began
            timings["audit_events"] = audit_data.populate_audit_logs(
                conn, audit_events, seed=seed, days=days, now=now)
            began = time.perf_counter()
            conn.execute("ANALYZE fraiseql_audit_logs")
            timings["analyze"] = time.perf_counter() - began
        return timings

    def dump(self, timeout: float = _CMD_TIMEOUT, *, path: Path | None = None,
             plain: bool = False, exclude_table_data: tuple[str, ...] = ()) -> Path:
        """``pg_dump`` of fraiseql, by default ``-Fc`` into backups/fraiseql-YYYYMMDD.dump.

        The custom format is checked by ``pg_restore --list``; ``plain`` writes the runbook's
        ``pg_dump fraiseql > x.sql`` (SQL text, which that verification step cannot read).
        ``exclude_table_data`` keeps those tables' definitions but not their rows. Written to
        ``path`` (mode 0600) through a ``.partial`` file, so a failed dump leaves nothing.
        """
        self.backup_dir.mkdir(mode=0o700, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        target = path or self.backup_dir / f"fraiseql-{stamp}.{'sql' if plain else 'dump'}"
        partial = target.with_name(target.name + ".partial")
        excluded = [f"--exclude-table-data={table}" for table in exclude_table_data]
        try:
            self._run("pg_dump", [
                self._bin("pg_dump"), "-Fp" if plain else "-Fc", *excluded,
                "-h", str(self.run_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", APP_DB,
                "-f", str(partial),
            ], timeout=timeout, as_server=False)
            if not plain:
                listing = self._run("pg_restore --list",
                                    [self._bin("pg_restore"), "--list", str(partial)],
                                    timeout=timeout, as_server=False).stdout
                if "TABLE public tb_user" not in listing:
                    raise ClusterError(f"dump {partial} does not list table tb_user")
            partial.chmod(0o600)  # a dump holds all the data: private like the rest
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def ready_segments(self) -> list[str]:
        """WAL segments waiting for archive_command (pg_wal/archive_status/*.ready)."""
        status = self.pgdata / "pg_wal" / "archive_status"
        with contextlib.suppress(OSError):
            return sorted(p.name.removesuffix(".ready") for p in status.iterdir()
                          if p.name.endswith(".ready"))
        return []

    def switch_wal(self) -> str:
        """Close the current WAL segment (made non-empty first); returns its file name."""
        with self.connect("postgres") as conn:
            # make sure the segment is not empty, or pg_switch_wal() would be a no-op
            conn.execute("SELECT pg_logical_emit_message(false, 'fraiseql_rb', 'switch')")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        return str(row[0]) if row else ""

    def break_archiving(self, segments: int = 2, timeout: float = 30) -> None:
        """archive-broken drill: the archive destination stops accepting files (mode 0500,
        as a full or read-only mount does), archive_command fails and `.ready` files pile
        up. archive_command itself is untouched: what a responder sees is the failure."""
        with self.connect("postgres") as conn:
            row = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
            failed_before = int(row[0]) if row else 0
            self.wal_archive_dir.chmod(0o500)
            for _ in range(segments):
                self.switch_wal()
            deadline = time.monotonic() + timeout
            while True:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
                if row and int(row[0]) > failed_before:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"archive_command has not failed after {timeout:g} s")
                time.sleep(0.2)
        if not self.ready_segments():
            raise ClusterError("no WAL segment is waiting for the archive after the switch")

    def restore_archiving(self, timeout: float = 60) -> None:
        """Heal archive-broken: the destination writable again; one more switch wakes the
        archiver, which then archives the backlog. Waits until no `.ready` file is left."""
        self.wal_archive_dir.chmod(0o700)
        if not self.is_running():
            return
        self.switch_wal()
        deadline = time.monotonic() + timeout
        while self.ready_segments():
            if time.monotonic() > deadline:
                raise ClusterError(f"{len(self.ready_segments())} WAL segments still not "
                                   f"archived after {timeout:g} s")
            time.sleep(0.2)

    def wait_archived(self, timeout: float = 30) -> int:
        """Close the current WAL segment and wait until it is in wal_archive/.

        Returns how many WAL files the archive holds. Raises if it does not arrive in time
        (archive_command broken, archiving off), quoting pg_stat_archiver.
        """
        with self.connect("postgres") as conn:
            # make sure the segment is not empty, or pg_switch_wal() would be a no-op
            conn.execute("SELECT pg_logical_emit_message(false, 'fraiseql_rb', 'switch')")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            segment = str(row[0]) if row else ""
            deadline = time.monotonic() + timeout
            while not (self.wal_archive_dir / segment).exists():
                if time.monotonic() > deadline:
                    stats = conn.execute(
                        "SELECT archived_count, failed_count, last_failed_wal "
                        "FROM pg_stat_archiver").fetchone()
                    raise ClusterError(
                        f"WAL segment {segment} not archived after {timeout:g}s "
                        f"(archived_count, failed_count, last_failed_wal = {stats})")
                time.sleep(0.1)
        return sum(1 for p in self.wal_archive_dir.iterdir() if re.fullmatch(r"[0-9A-F]{24}",
                                                                             p.name))
