"""One sandbox directory: its paths, its persisted state (`sandbox.json`) and its secrets.

Layout (besides the cluster's own, see `cluster`):

    sandbox.json                 ports, pids, active faults, the emulated FraiseQL release
                                 (`server_release`; what every command reads)
    inventory.toml               target `sandbox`, secrets by *_file reference only
    secrets/                     0700; one 0600 file per secret
    server/fraiseql-server.toml  the stand-in's config, in the real v2 server format
    server/certs/                the stand-in's TLS certificate (sandbox CA)
    server/faults.json           behaviour faults the stand-in reads (error-spike, ...)
    logs/                        fraiseql-server.log, postgresql.log, redis.log, traffic.log
    .backup-stale/ .backup-corrupt/   what the backup faults hold aside (see `backups`)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraiseql_rb.core import paths, secrets
from fraiseql_rb.core.errors import RunbookError, UsageError

from . import cluster as pgcluster
from . import processes

STATE_FILE = "sandbox.json"
SECRET_NAMES = ("superuser_password", "database_password", "metrics_token", "admin_token",
                "redis_password")


class SandboxError(RunbookError):
    """The sandbox could not do what was asked; one line says why."""


def progress(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


@dataclass
class Sandbox:
    """Paths and state of one sandbox directory."""

    root: Path
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path) -> Sandbox:
        root = Path(root).absolute()
        path = root / STATE_FILE
        state = json.loads(path.read_text()) if path.is_file() else {}
        return cls(root=root, state=state)

    @property
    def exists(self) -> bool:
        return bool(self.state)

    def require(self) -> None:
        if not self.exists:
            raise UsageError(f"no sandbox in {self.root}: run `fraiseql-rb sandbox up` first")

    def save(self) -> None:
        tmp = self.root / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.root / STATE_FILE)

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.toml"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def server_config(self) -> Path:
        return self.server_dir / "fraiseql-server.toml"

    @property
    def server_certs(self) -> Path:
        return self.server_dir / "certs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "fraiseql-server.log"

    @property
    def ca_cert(self) -> Path:
        return self.cluster.tls.ca_cert

    @property
    def cluster(self) -> pgcluster.Cluster:
        return pgcluster.Cluster(self.root, port=self.state.get("pg_port"))

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.state['server_port']}"

    def secret(self, name: str) -> str:
        value = (self.secrets_dir / name).read_text().strip()
        secrets.register(value)
        return value

    def write_secret(self, name: str, value: str) -> None:
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.secrets_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")

    def app_database_url(self, with_password: bool = True) -> str:
        password = self.secret("database_password") if with_password else None
        url = self.cluster.dsn(pgcluster.APP_USER, password or "x")
        return url if with_password else url.replace(":x@", "@", 1)

    def faults(self) -> list[str]:
        return list(self.state.get("faults", []))

    @property
    def server_release(self) -> str:
        """The FraiseQL release the stand-in emulates (standin/releases.py); a property of
        its process, recorded here so that restarts keep it. Sandboxes older than the
        option emulate main."""
        return str(self.state.get("server_release") or "main")

    def cli_command(self, *args: str) -> str:
        """A shell command running our CLI with this interpreter (no reliance on PATH)."""
        words = [sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir", str(self.root),
                 *args]
        return " ".join(shlex.quote(w) for w in words)


# ---- staleness: is an inventory in a sandbox directory still backed by a running sandbox? ----


def running_pids(root: Path) -> list[int]:
    """The sandbox's recorded processes that are alive: every `*_pid` of its state and the
    postmaster of `pgdata/postmaster.pid`. Pid checks only (no network, no pg_ctl): cheap
    enough for every `run`.

    After a reboot a recorded pid may belong to an unrelated process, so a live pid counts
    only when its command line names a path inside `root` (compared with symlinks resolved,
    as the server's --config, the postmaster's -D, traffic's --tag and the holders' --dir
    do), or, for Redis, which rewrites its title to `redis-server ADDR:PORT`, the sandbox's
    Redis port."""
    root = Path(root).absolute()
    state = _read_state(root)
    recorded = [value for key, value in state.items() if key.endswith("_pid")]
    with contextlib.suppress(OSError, ValueError):
        recorded.append(int((root / "pgdata" / "postmaster.pid").read_text().split("\n")[0]))
    real_root = os.path.realpath(root)
    port = state.get("redis_port")
    redis = re.compile(rf"redis-server \S*:{port}\b") if isinstance(port, int) else None
    found = []
    for pid in recorded:
        if type(pid) is not int or not processes.alive(pid, ""):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        words = [word for word in cmdline.split("\0") if word]
        if (any(_names_path_in(word, real_root) for word in words)
                or (redis is not None and redis.search(" ".join(words)))):
            found.append(pid)
    return found


def _read_state(root: Path) -> dict[str, Any]:
    """The state file as a dict; empty when it is missing, unreadable or not ours."""
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _names_path_in(word: str, real_root: str) -> bool:
    """Is `word` (or the value of `--option=word`) a path inside `real_root`?"""
    value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
    if not value.startswith("/"):
        return False
    real = os.path.realpath(value)
    return real == real_root or real.startswith(real_root + os.sep)


def stale_inventory(inventory_path: str | Path) -> Path | None:
    """The sandbox directory holding `inventory_path` when that sandbox runs nothing at all
    (after `sandbox down` or a reboot), else None.

    An inventory is a sandbox's when the sandbox's state file lies beside it. A sandbox with
    some processes stopped on purpose (the db-down or server-down drill) is not stale."""
    root = Path(inventory_path).absolute().parent
    if not _read_state(root):
        return None  # not a sandbox (or not one we can read): nothing to say
    return None if running_pids(root) else root


def refuse_stale_inventory(inventory_path: str | Path) -> None:
    """Raise UsageError (exit 64) for a stale sandbox inventory: running against it would
    report every check CRITICAL, which says "the sandbox is down" in the costliest way."""
    root = stale_inventory(inventory_path)
    if root is None:
        return
    default = os.path.realpath(paths.sandbox_dir()) == os.path.realpath(root)
    start = ("fraiseql-rb sandbox up" if default
             else f"fraiseql-rb sandbox --dir {shlex.quote(str(root))} up")
    raise UsageError(f"the sandbox in {root} is not running (inventory "
                     f"{root / Path(inventory_path).name} is stale): start it with {start}")
