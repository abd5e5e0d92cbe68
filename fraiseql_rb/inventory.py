"""The inventory of targets: a TOML file with one `[targets.NAME]` table per deployment.

Secrets never sit in the file. A secret value is named by `KEY_env` (an environment variable)
or `KEY_file` (a file holding it), or by `${VAR}` inside a URL, and is read when used, so a
rotated secret is picked up without editing the inventory. Every value read this way is
registered with `secrets` so that it is masked wherever it might be displayed.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from . import paths, secrets
from .errors import InventoryError, SecretError

# Keys DESIGN.md defines, plus those later runbooks read. Unknown keys are kept (forward
# compatible) but listed by `Inventory.unknown_keys` so a typo can be reported.
KNOWN_KEYS = {
    "fraiseql_url", "database_url", "prometheus_url", "redis_url", "config_path",
    "replica_database_url", "admin_database_url", "backup_dir", "wal_archive_dir",
    "restart_command", "status_command", "logs_command", "instances", "ha", "audit_source",
    "ca_bundle", "description", "oidc_issuer",
}
SECRET_NAMES = {
    "metrics_token", "admin_token", "database_password", "replica_database_password",
    "admin_database_password", "redis_password",
}
PATH_KEYS = {"config_path", "backup_dir", "wal_archive_dir", "ca_bundle"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def locate(explicit: str | Path | None = None) -> Path:
    """Find the inventory: --inventory, $FRAISEQL_RB_INVENTORY, ./fraiseql-rb.toml, then the
    sandbox's own inventory (the embedded default)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise InventoryError(f"inventory file not found: {path}")
        return path
    from_env = os.environ.get(paths.INVENTORY_ENV)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise InventoryError(f"inventory file not found: {path} (from ${paths.INVENTORY_ENV})")
        return path
    local = Path(paths.INVENTORY_FILE)
    if local.is_file():
        return local
    sandbox = paths.sandbox_inventory()
    if sandbox.is_file():
        return sandbox
    raise InventoryError(
        "no inventory: pass --inventory FILE, set $FRAISEQL_RB_INVENTORY, create "
        f"./{paths.INVENTORY_FILE}, or start the sandbox with `fraiseql-rb sandbox up`"
    )


def expand(value: str, where: str) -> str:
    """Replace `${VAR}` from the environment; an unset variable is an error, not a blank."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SecretError(f"{where} refers to ${{{name}}}, which is not set")
        value = os.environ[name]
        secrets.register(value)
        return value

    return _VAR.sub(repl, value)


def with_password(url: str, password: str | None) -> str:
    """Put `password` into a URL that has a user and no password of its own."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.username is None or parts.password is not None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(parts.username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Target:
    """One deployment. Values are read lazily so that secrets are read at use."""

    name: str
    raw: dict[str, Any]
    base_dir: Path = field(default=Path("."))

    def has(self, key: str) -> bool:
        return key in self.raw or f"{key}_env" in self.raw or f"{key}_file" in self.raw

    def get(self, key: str, default: Any = None) -> Any:
        """A plain value, with `${VAR}` expanded and relative paths taken from the inventory."""
        if key not in self.raw:
            return default
        value = self.raw[key]
        if isinstance(value, str):
            value = expand(value, f"targets.{self.name}.{key}")
            if key in PATH_KEYS:
                value = str((self.base_dir / value) if not Path(value).is_absolute() else value)
        return value

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value in (None, ""):
            raise InventoryError(f"target {self.name!r} has no {key} in the inventory")
        return value

    def secret(self, key: str) -> str | None:
        """Read the secret `key` from `key_env` or `key_file` (or, discouraged, `key`)."""
        where = f"targets.{self.name}"
        if f"{key}_env" in self.raw:
            var = str(self.raw[f"{key}_env"])
            value = os.environ.get(var)
            if value is None:
                raise SecretError(f"{where}.{key}_env names ${var}, which is not set")
        elif f"{key}_file" in self.raw:
            path = Path(expand(str(self.raw[f"{key}_file"]), f"{where}.{key}_file"))
            if not path.is_absolute():
                path = self.base_dir / path
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise SecretError(f"{where}.{key}_file: cannot read {path}: "
                                  f"{exc.strerror or exc}") from None
        elif key in self.raw:
            value = str(self.raw[key])
        else:
            return None
        secrets.register(value)
        return value

    # Convenience accessors for the keys every runbook uses.
    @property
    def fraiseql_url(self) -> str:
        return str(self.require("fraiseql_url")).rstrip("/")

    @property
    def instances(self) -> list[str]:
        """Every instance behind the load balancer; just `fraiseql_url` when none are listed."""
        listed = self.get("instances") or []
        if not isinstance(listed, list):
            raise InventoryError(f"targets.{self.name}.instances must be a list of URLs")
        return [str(u).rstrip("/") for u in listed] or [self.fraiseql_url]

    def database_url(self, kind: str = "database") -> str:
        """`database_url` (or `replica_database_url`, `admin_database_url`) with its password."""
        url = str(self.require(f"{kind}_url"))
        return with_password(url, self.secret(f"{kind}_password"))

    def metrics_token(self) -> str | None:
        return self.secret("metrics_token")

    def admin_token(self) -> str | None:
        return self.secret("admin_token")

    def describe(self) -> dict[str, Any]:
        """The target's settings for display: secret references by name, URLs masked."""
        out: dict[str, Any] = {}
        for key, value in self.raw.items():
            out[key] = secrets.mask(value) if isinstance(value, str) else value
        return out


@dataclass(frozen=True)
class Inventory:
    path: Path
    targets: dict[str, Target]

    def target(self, name: str) -> Target:
        if name not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise InventoryError(f"unknown target {name!r} in {self.path} (known: {known})")
        return self.targets[name]

    def unknown_keys(self) -> dict[str, list[str]]:
        out = {}
        for name, target in self.targets.items():
            odd = [k for k in target.raw if k not in KNOWN_KEYS and not _is_secret_ref(k)]
            if odd:
                out[name] = sorted(odd)
        return out


def _is_secret_ref(key: str) -> bool:
    for suffix in ("_env", "_file"):
        if key.endswith(suffix):
            return True
    return key in SECRET_NAMES


def load(path: str | Path | None = None) -> Inventory:
    """Parse the inventory; malformed TOML or a wrong shape is one clear error."""
    located = locate(path)
    try:
        data = tomllib.loads(located.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"inventory {located} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {located}: {exc.strerror or exc}") from None
    targets = data.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise InventoryError(f"inventory {located} has no [targets.NAME] table")
    base = located.resolve().parent
    built = {}
    for name, raw in targets.items():
        if not isinstance(raw, dict):
            raise InventoryError(f"inventory {located}: targets.{name} must be a table")
        built[name] = Target(name=name, raw=dict(raw), base_dir=base)
    return Inventory(path=located, targets=built)


def load_target(name: str, path: str | Path | None = None) -> Target:
    return load(path).target(name)
