"""The inventory of targets: a TOML file with one `[targets.NAME]` table per deployment.

Secrets never sit in the file. A secret value is named by `KEY_env` (an environment variable)
or `KEY_file` (a file holding it), or by `${VAR}` inside a URL, and is read when used, so a
rotated secret is picked up without editing the inventory. Every value read this way is
registered with `secrets` so that it is masked wherever it might be displayed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fraiseql_rb.core import paths, secrets
from fraiseql_rb.core.errors import InventoryError, SecretError

SECRET_NAMES = {
    "metrics_token", "admin_token", "database_password", "replica_database_password",
    "admin_database_password", "redis_password", "replica_admin_database_password",
}
PATH_KEYS = {"config_path", "backup_dir", "wal_archive_dir", "ca_bundle"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# libpq's other form, `host=db dbname=fraiseql user=app`, which psycopg accepts as well.
_CONNINFO = re.compile(r"^\s*[A-Za-z_]+\s*=")
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")


@dataclass(frozen=True)
class KeyType:
    """What one inventory key must hold, checked when the file is read: a typo is a usage
    error (exit 64) before any kernel starts, not a CRITICAL finding that pages someone."""

    expect: str  # finishes "targets.NAME.KEY must be ..."
    accepts: Callable[[Any], bool]
    item: KeyType | None = None  # for lists: what each element must be
    secret: bool = False  # never echo the value in an error


def _url(schemes: tuple[str, ...], *, host: bool = True) -> Callable[[Any], bool]:
    """A URL string with one of `schemes` and (unless `host` is False) a host.

    `${VAR}` parts are read at use, so they stand in for anything here; a value that is
    only a variable cannot be checked until then."""

    def accepts(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        if value.startswith("${"):
            return True
        try:
            parts = urlsplit(_VAR.sub("0", value.strip()))
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            return False
        return parts.scheme.lower() in schemes and (bool(parts.hostname) or not host)

    return accepts


def _postgres_url(value: Any) -> bool:
    # libpq allows no host (a Unix socket: postgresql:///fraiseql?host=/run/postgresql)
    return (_url(("postgres", "postgresql"), host=False)(value)
            or (isinstance(value, str) and bool(_CONNINFO.match(value))))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _list_of(item: KeyType, expect: str) -> KeyType:
    return KeyType(expect, lambda v: isinstance(v, list), item=item)


HTTP_URL = KeyType("an http(s) URL string", _url(("http", "https")))
POSTGRES_URL = KeyType("a postgres:// or postgresql:// URL string (or libpq "
                       "'host=... dbname=...')", _postgres_url)
REDIS_URL = KeyType("a redis:// or rediss:// URL string", _url(("redis", "rediss")))


def _apprise_url(value: Any) -> bool:
    """apprise's own parser decides (it knows each service's URL shape), so a URL it cannot
    send to is exit 64 when the inventory is read, not a lost page after the run. A URL with
    `${VAR}` parts is checked when it is read (targets/notify.py)."""
    if not isinstance(value, str):
        return False
    if _VAR.search(value):
        return "://" in value or value.startswith("${")
    return apprise_plugin(value) is not None


def apprise_plugin(url: str) -> Any:
    """apprise's plugin for `url`, or None when apprise cannot parse it."""
    import apprise  # here: only an inventory or target with `notify` loads apprise's plugins

    return apprise.Apprise.instantiate(url, suppress_exceptions=True)


APPRISE_URL = KeyType("an apprise URL that apprise can parse (scheme://..., see "
                      "https://github.com/caronc/apprise/wiki)", _apprise_url, secret=True)
STRING = KeyType("a string", lambda v: isinstance(v, str))
COMMAND = KeyType("a command string", lambda v: isinstance(v, str))
PATH = KeyType("a path string", _text)
FILE = KeyType("a file path string", _text)
ENV_NAME = KeyType("a string naming an environment variable (letters, digits and _, "
                   "without $)", lambda v: isinstance(v, str) and bool(_ENV_NAME.match(v)))
BOOLEAN = KeyType("true or false", lambda v: isinstance(v, bool))
SECRET = KeyType("a string (better: KEY_env or KEY_file)", lambda v: isinstance(v, str),
                 secret=True)

# Every key DESIGN.md defines, the ones runbooks read, and those later capabilities add, each
# with its type. Unknown keys are kept (forward compatible) but listed by
# `Inventory.unknown_keys` so a typo can be reported; see `key_type` for the key families.
SCHEMA: dict[str, KeyType] = {
    "fraiseql_url": HTTP_URL,
    "database_url": POSTGRES_URL,
    "replica_database_url": POSTGRES_URL,
    "admin_database_url": POSTGRES_URL,
    "prometheus_url": HTTP_URL,
    "redis_url": REDIS_URL,
    "instances": _list_of(HTTP_URL, "a list of http(s) URL strings"),
    "oidc_issuer": HTTP_URL,
    "site_url": HTTP_URL,
    "config_path": PATH,
    "backup_dir": PATH,
    "wal_archive_dir": PATH,
    "ca_bundle": PATH,
    "restart_command": COMMAND,
    "status_command": COMMAND,
    "logs_command": COMMAND,
    "upgrade_command": COMMAND,
    "rollback_command": COMMAND,
    "scale_command": COMMAND,
    # planned changes (§2.2 step 2, §7.1): confiture's migrations and where it runs from
    "migrations_dir": PATH,
    # the failover's nodes (the sandbox writes them; replica_*_url/_file follow key_type)
    "replica_data_dir": PATH,
    "replica_primary_data_dir": PATH,
    "replica_start_command": COMMAND,
    "replica_stop_command": COMMAND,
    "replica_primary_start_command": COMMAND,
    "replica_primary_stop_command": COMMAND,
    "probe_query": KeyType("a GraphQL query string", _text),
    "notify": _list_of(APPRISE_URL, "a list of apprise URL strings"),
    "notify_env": ENV_NAME,
    "notify_file": FILE,
    "ha": BOOLEAN,
    "audit_source": STRING,
    "description": STRING,
}
KNOWN_KEYS = frozenset(SCHEMA)


def key_type(key: str) -> KeyType | None:
    """The type of `key`, or None for a key we do not know (allowed, reported as unknown).

    Besides SCHEMA: `*_env` names an environment variable, `*_file` a file, a bare secret
    name holds the secret itself, and `replica_KEY` (the failover's replica) is typed as KEY.
    """
    if key in SCHEMA:
        return SCHEMA[key]
    if key.endswith("_env"):
        return ENV_NAME
    if key.endswith("_file"):
        return FILE
    if key in SECRET_NAMES:
        return SECRET
    if key.startswith("replica_"):
        return SCHEMA.get(key.removeprefix("replica_"))
    return None


_TOML_TYPES = ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
               (list, "array"), (dict, "table"), (dt.datetime, "date-time"),
               (dt.date, "date"), (dt.time, "time"))


def describe_value(value: Any, *, secret: bool = False) -> str:
    """`integer 1`, `string 'localhost:8000'`: the TOML type and (unless secret) the value,
    masked and short, so the error shows what was written."""
    kind = next((name for cls, name in _TOML_TYPES if isinstance(value, cls)),
                type(value).__name__)
    if secret:
        return kind
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, str):
        shown = repr(value)
    elif isinstance(value, (list, dict)):
        shown = json.dumps(value, default=str)
    else:
        shown = str(value)
    shown = _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + secrets.MASK, secrets.mask(shown))
    return f"{kind} {shown if len(shown) <= 80 else shown[:77] + '...'}"


def check_types(raw: dict[str, Any], where: str) -> None:
    """Raise InventoryError for the first known key holding the wrong type (`where` is
    "inventory FILE: targets.NAME")."""
    for key, value in raw.items():
        kind = key_type(key)
        if kind is None:
            continue
        if not kind.accepts(value):
            raise InventoryError(f"{where}.{key} must be {kind.expect}, got "
                                 f"{describe_value(value, secret=kind.secret)}")
        if kind.item is not None:
            for index, element in enumerate(value):
                if not kind.item.accepts(element):
                    raise InventoryError(f"{where}.{key}[{index}] must be "
                                         f"{kind.item.expect}, got "
                                         f"{describe_value(element, secret=kind.item.secret)}")


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
    """Put `password` into a URL that has a user and no password of its own (or into a
    libpq key=value string that has none)."""
    if not password:
        return url
    if "://" not in url and _CONNINFO.match(url):
        if _CONNINFO_PASSWORD.search(url):
            return url
        quoted = password.replace("\\", "\\\\").replace("'", "\\'")
        return f"{url.rstrip()} password='{quoted}'"
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

    def admin_database_url(self) -> str | None:
        """`admin_database_url` with its password, or None when the inventory has none: the
        role that sees every session and statement, and gets in when the application's
        cannot."""
        return self.database_url("admin_database") if self.get("admin_database_url") else None

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
            odd = [k for k in target.raw if key_type(k) is None]
            if odd:
                out[name] = sorted(odd)
        return out


def load(path: str | Path | None = None) -> Inventory:
    """Parse the inventory; malformed TOML or a wrong shape is one clear error."""
    located = locate(path)
    try:
        data = tomllib.loads(_read_text(located))
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
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
            raise InventoryError(f"inventory {located}: targets.{name} must be a table "
                                 f"([targets.{name}]), got {describe_value(raw)}")
        check_types(raw, f"inventory {located}: targets.{name}")
        built[name] = Target(name=name, raw=dict(raw), base_dir=base)
    return Inventory(path=located, targets=built)


def _read_text(path: Path) -> str:
    """The file as UTF-8 (a leading BOM, as some editors write, is dropped); any other
    encoding is one InventoryError naming the file and where, not a UnicodeDecodeError."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InventoryError(f"inventory {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} "
                             f"on line {line}): save it as UTF-8") from None


def load_target(name: str, path: str | Path | None = None) -> Target:
    return load(path).target(name)


def register_secrets(path: str | Path | None, names: list[str]) -> None:
    """Read these targets' secrets in this process too, so that what a child run said (its
    stderr, a root cause, an executed notebook) is masked before this process shows or
    writes it. An unreadable secret is the run's own finding, not an error here."""
    inv = load(path)
    for name in names:
        for key in sorted(SECRET_NAMES):
            with contextlib.suppress(Exception):
                inv.target(name).secret(key)
    secrets.register_environment()
