"""Entry point: parse the command line, load the config, serve until SIGTERM/SIGINT.

Exit status 0 after a clean shutdown, 1 on a bad config, an unloadable TLS certificate or an
address that cannot be bound (one ``Error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .app import App
from .config import ConfigError, load_settings
from .logs import first_line, setup_logging
from .releases import UnknownRelease, resolve
from .server import StandinHTTPServer, TlsContexts

_log = logging.getLogger("fraiseql_standin")


def _describe_database(url: str) -> str:
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "unparseable url"
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/" \
           f"{parts.get('dbname') or ''}"


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGTERM/SIGINT; 0 after a clean shutdown, 1 on a bad config."""
    parser = argparse.ArgumentParser(
        prog="python -m fraiseql_rb.sandbox.standin",
        description="Stand-in FraiseQL v2 server for the drill sandbox.")
    parser.add_argument("--config", type=Path, default=None,
                        help="fraiseql-server config TOML (default: $FRAISEQL_CONFIG)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="directory where the sandbox drops faults.json")
    parser.add_argument("--release", default=None,
                        help="the FraiseQL release to emulate: 2.9 (2.9.x), 2.14.1, main "
                        "(default) or foreign (see releases.py)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        release = resolve(args.release)
    except UnknownRelease as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    config_path = args.config or (Path(os.environ["FRAISEQL_CONFIG"])
                                  if os.environ.get("FRAISEQL_CONFIG") else None)
    try:
        settings = load_settings(config_path, os.environ)
        tls = TlsContexts(settings.tls) if settings.tls.enabled else None
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (OSError, ssl.SSLError) as exc:
        print(f"Error: cannot load TLS certificate: {first_line(exc)}", file=sys.stderr,
              flush=True)
        return 1

    app = App(settings, args.state_dir, release)
    try:
        server = StandinHTTPServer(app, tls)
    except OSError as exc:
        print(f"Error: cannot bind {settings.bind_addr}: {exc.strerror or exc}", file=sys.stderr,
              flush=True)
        return 1
    app.db.open()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheme = "https" if tls else "http"
    policy = ("disabled" if not settings.introspection_enabled
              else "auth required" if settings.introspection_require_auth else "allowed")
    _log.info(
        "fraiseql-server %s listening on %s://%s (release %s; database %s, pool %s-%s, "
        "metrics %s, admin api %s, introspection %s, schema %s)",
        release.version or "(no version reported)", scheme, settings.bind_addr, release.name,
        _describe_database(settings.database_url), settings.pool_min_size,
        settings.pool_max_size, "on" if settings.routes_metrics() else "off",
        "on" if settings.routes_admin() else "off", policy, app.schema.source)
    if settings.auth is not None:
        auth = settings.auth
        _log.info("OIDC auth: issuer %s, audience %s, jwks %s (cache %ss); discovery and JWKS "
                  "served at %s", auth.issuer, auth.audience or ",".join(auth.additional_audiences),
                  auth.jwks_uri or "from discovery", auth.jwks_cache_ttl_secs, app.idp.issuer)
        if auth.required:  # info, not warning: a log-scanning playbook must not count it
            _log.info("[auth] required = true is not enforced: the stand-in authenticates no "
                      "GraphQL request")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="http", daemon=True)
    thread.start()
    watcher = threading.Thread(target=app.watch_faults, args=(stop,), name="faults",
                               daemon=True)
    watcher.start()
    while not stop.wait(1.0):
        pass
    watcher.join(timeout=5.0)
    server.shutdown()
    server.server_close()
    app.db.close()
    _log.info("database pool closed; shutdown complete")
    return 0
