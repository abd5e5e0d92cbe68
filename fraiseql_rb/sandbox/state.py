"""One sandbox directory: its paths, its persisted state (`sandbox.json`) and its secrets.

Layout (besides the cluster's own, see `cluster`):

    sandbox.json                 ports, pids, active faults (what every command reads)
    inventory.toml               target `sandbox`, secrets by *_file reference only
    secrets/                     0700; one 0600 file per secret
    server/fraiseql-server.toml  the stand-in's config, in the real v2 server format
    server/certs/                the stand-in's TLS certificate (sandbox CA)
    server/faults.json           behaviour faults the stand-in reads (error-spike, ...)
    logs/                        fraiseql-server.log, postgresql.log, redis.log, traffic.log
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import secrets
from ..errors import RunbookError, UsageError
from . import cluster as pgcluster

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

    def cli_command(self, *args: str) -> str:
        """A shell command running our CLI with this interpreter (no reliance on PATH)."""
        words = [sys.executable, "-m", "fraiseql_rb", "sandbox", "--dir", str(self.root),
                 *args]
        return " ".join(shlex.quote(w) for w in words)
