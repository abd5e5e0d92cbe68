"""The apprise adapter: a target's notification URLs, checked with apprise's own parser and
sent one by one, with every token in them treated as a secret.

Apprise URLs carry their credentials in the URL itself (`slack://TokenA/TokenB/TokenC`,
`json://user:password@host/`), so each URL is registered with `secrets` as soon as it is read,
together with the parts apprise itself hides in its privacy form: whatever apprise or a
failing HTTP library says about a URL is masked before anyone sees it. We send through
apprise rather than our own HTTP posts so that every service apprise knows (Slack, Teams,
e-mail, PagerDuty, generic JSON webhooks) works the same way.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraiseql_rb.core import inventory, secrets
from fraiseql_rb.core.errors import InventoryError, SecretError

KEYS = ("notify", "notify_env", "notify_file")
# apprise's parts of a URL: secrets are the parts its privacy form replaces
_PARTS = re.compile(r"[/:@?&=,]+")
_URL_PASSWORD = re.compile(r"://[^/@\s]*:[^@\s]+@")  # user:password@, as secrets masks it


@dataclass(frozen=True)
class Delivery:
    """What happened to one URL: `channel` is a masked label, safe to show and record."""

    channel: str
    sent: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "sent": self.sent, "error": self.error}


def failures(deliveries: list[Delivery]) -> str:
    """The failed deliveries as one line: `channel: error; ...` ('' when none failed)."""
    return "; ".join(f"{d.channel}: {d.error}" for d in deliveries if not d.sent)


def configured(target: inventory.Target) -> list[str]:
    """The notification keys the target has (no values: they are secrets)."""
    return [key for key in KEYS if key in target.raw]


def _register(url: str, plugin: Any) -> None:
    """Register every part of `url` apprise considers private (what its privacy form hides),
    and the whole URL when it has such parts or apprise cannot read it: a URL with nothing
    private (json://host/path) stays readable in messages about it."""
    try:
        private = set(_PARTS.split(plugin.url(privacy=True)))
        hidden = [part for part in _PARTS.split(f"{plugin.url(privacy=False)}/{url}")
                  if part and part not in private]
    except Exception:  # noqa: BLE001 - no plugin, or one that cannot print itself
        hidden = None
    for part in hidden or []:
        secrets.register(part)
    if hidden is None or hidden or _URL_PASSWORD.search(url):
        secrets.register(url)


def _scheme(url: str) -> str:
    """The scheme only: the one part of an apprise URL that is never a secret."""
    head, sep, _ = url.partition("://")
    return f"{head[:20]}://" if sep and head.isascii() and head.isalnum() else "no scheme://"


def parse(url: str, where: str) -> Any:
    """Apprise's plugin for `url`; InventoryError (exit 64) naming `where` and the scheme
    (never the rest, a secret) when apprise cannot parse it."""
    plugin = inventory.apprise_plugin(url)
    _register(url, plugin)
    if plugin is None:
        raise InventoryError(f"{where} is not an apprise URL apprise can parse (scheme "
                             f"{_scheme(url)}; see https://github.com/caronc/apprise/wiki)")
    return plugin


def split_urls(text: str) -> list[str]:
    """URLs from a file or variable: one per line or whitespace separated; `#` lines are
    comments."""
    found: list[str] = []
    for line in text.splitlines():
        if not line.strip().startswith("#"):
            found.extend(line.split())
    return found


def urls(target: inventory.Target) -> list[tuple[str, str]]:
    """(where, url) for every URL of the target: `notify`, then `notify_env`, then
    `notify_file`. An unset variable, an unreadable file or a URL apprise cannot parse is a
    SecretError/InventoryError naming the key, never the value."""
    where = f"targets.{target.name}"
    found: list[tuple[str, str]] = []
    for index, value in enumerate(target.raw.get("notify") or []):
        found.append((f"{where}.notify[{index}]",
                      inventory.expand(str(value), f"{where}.notify[{index}]")))
    if "notify_env" in target.raw:
        var = str(target.raw["notify_env"])
        text = os.environ.get(var)
        if text is None:
            raise SecretError(f"{where}.notify_env names ${var}, which is not set")
        found += [(f"{where}.notify_env (${var}) URL {i}", url)
                  for i, url in enumerate(split_urls(text), 1)]
    if "notify_file" in target.raw:
        path = Path(inventory.expand(str(target.raw["notify_file"]), f"{where}.notify_file"))
        path = path if path.is_absolute() else target.base_dir / path
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise SecretError(f"{where}.notify_file: cannot read {path}: {why}") from None
        found += [(f"{where}.notify_file ({path}) URL {i}", url)
                  for i, url in enumerate(split_urls(text), 1)]
    for _, url in found:  # register all first, so an error about one masks the others too
        _register(url, inventory.apprise_plugin(url))
    return found


def check(target: inventory.Target) -> int:
    """Read and parse every URL of the target (before a run: a bad one is exit 64);
    returns how many there are."""
    listed = urls(target)
    for where, url in listed:
        parse(url, where)
    return len(listed)


def _label(plugin: Any, index: int) -> str:
    """`json://user:***@host:port/path` (apprise's privacy form without its query, masked)."""
    try:
        text = str(plugin.url(privacy=True)).split("?", 1)[0]
    except Exception:  # noqa: BLE001
        text = f"{getattr(plugin, 'service_name', 'apprise')} URL"
    return f"{index}: {secrets.mask(text)}"


def send(listed: list[tuple[str, str]], title: str, body: str,
         kind: str = "info") -> list[Delivery]:
    """Send `title`/`body` to each URL on its own, so one broken channel neither hides nor
    blocks the others; apprise's log lines about a failure become that URL's (masked)
    error. `kind` is apprise's notify type (info, success, warning, failure): the colour
    or icon a chat service shows."""
    import apprise

    out: list[Delivery] = []
    for index, (where, url) in enumerate(listed, 1):
        try:
            plugin = parse(url, where)
        except InventoryError as exc:
            out.append(Delivery(f"{index}: {where}", False, secrets.mask(str(exc))))
            continue
        label = _label(plugin, index)
        with apprise.LogCapture(level=logging.WARNING) as captured:
            try:
                ok = bool(plugin.notify(body=body, title=title, notify_type=kind))
                raised = None
            except Exception as exc:  # noqa: BLE001 - a plugin bug is this URL's failure
                ok, raised = False, f"{type(exc).__name__}: {exc}"
        said = [line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines()
                if line.strip()]
        error = None if ok else "; ".join(dict.fromkeys(
            [*said, *([raised] if raised else [])])) or "apprise reported a failure"
        out.append(Delivery(label, ok, secrets.mask(error) if error else None))
    return out
