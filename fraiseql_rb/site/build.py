"""`fraiseql-rb site`: build the static report site from OUTPUT_DIR, incrementally.

Only runs whose findings.json (or directory) changed are re-read (scan.py's cache); pages
are rewritten only when their text changes, so a rebuild after one run is quick and a site
synced to a web server moves only what changed.
"""

from __future__ import annotations

import http.server
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fraiseql_rb.core import thresholds
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import ARTIFACT_DIR_MODE, ARTIFACT_FILE_MODE
from fraiseql_rb.site import pages, scan


@dataclass
class BuildStats:
    """What a build did: how many runs it knows, read afresh, and pages it wrote."""

    runs: int
    read: int
    damaged: int
    incidents: int
    written: int
    seconds: float


def _write(path: Path, text: str) -> int:
    """Write only when different; 1 if written."""
    try:
        if path.read_text() == text:
            return 0
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, ARTIFACT_FILE_MODE)  # the same readers as the artifacts it summarises
    os.replace(tmp, path)
    return 1


def build(output_dir: Path, site_dir: Path | None = None) -> BuildStats:
    """Build (or update) the site; a UsageError when OUTPUT_DIR holds no run at all."""
    start = time.perf_counter()
    output_dir = Path(output_dir)
    site_dir = Path(site_dir) if site_dir is not None else output_dir / "site"
    if not output_dir.is_dir():
        raise UsageError(f"no reports: {output_dir} is not a directory")
    if not scan.run_dirs(output_dir, site_dir):
        raise UsageError(f"no reports under {output_dir} (expected YYYY-MM-DD/RUNBOOK/"
                         "HHMMSSZ[_INCIDENT]/ directories)")
    try:
        site_dir.mkdir(parents=True, exist_ok=True, mode=ARTIFACT_DIR_MODE)
    except OSError as exc:
        raise UsageError(f"cannot create the site directory {site_dir}: "
                         f"{exc.strerror or exc}") from None
    result = scan.scan(output_dir, site_dir)
    prefix = os.path.relpath(output_dir.resolve(), site_dir.resolve()).replace(os.sep, "/")
    prefix = "" if prefix == "." else prefix + "/"
    by_incident: dict[str, list[dict]] = {}
    for run in result.runs:
        if run["incident_id"]:
            by_incident.setdefault(run["incident_id"], []).append(run)
    written = _write(site_dir / "site.css", pages.CSS)
    written += _write(site_dir / "filter.js", pages.FILTER_JS)
    by_month: dict[str, list[dict]] = {}
    for run in result.runs:  # newest first, as scan returns them
        by_month.setdefault(run["started_at"][:7], []).append(run)
    counts = {month: len(runs) for month, runs in by_month.items()}
    written += _write(site_dir / "index.html",
                      pages.index(result.runs[:thresholds.SITE_INDEX_RUNS], prefix,
                                  months=counts, total=len(result.runs)))
    for month, runs in by_month.items():
        written += _write(site_dir / pages.month_file(month),
                          pages.index(runs, prefix, title=f"Runs of {month}", months=counts))
    for stale in site_dir.glob(pages.month_file("*")):  # a month whose reports were removed
        if stale.name not in {pages.month_file(m) for m in by_month}:
            stale.unlink()
    written += _write(site_dir / "incidents.html", pages.incidents_list(by_incident))
    written += _write(site_dir / "trends.html", pages.trends_page(result.runs))
    for incident_id, runs in by_incident.items():
        written += _write(site_dir / pages.incident_file(incident_id),
                          pages.incident(incident_id, runs, prefix))
    return BuildStats(len(result.runs), result.read, len(result.damaged), len(by_incident),
                      written, time.perf_counter() - start)


def main(output_dir: Path, site_dir: Path | None, *, serve: bool = False,
         port: int = 8765) -> int:
    """The CLI entry: build, say what was built, optionally serve until Ctrl-C."""
    site = Path(site_dir) if site_dir is not None else Path(output_dir) / "site"
    if serve and not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port")
    stats = build(Path(output_dir), site)
    damaged = f", {stats.damaged} damaged" if stats.damaged else ""
    print(f"site: {stats.runs} runs ({stats.read} read{damaged}), {stats.incidents} incidents, "
          f"{stats.written} pages written in {stats.seconds:.2f} s", file=sys.stderr)
    print(site / "index.html")
    if serve:
        return _serve(Path(output_dir), site, port)
    return 0


def _serve(output_dir: Path, site: Path, port: int) -> int:
    """Serve the directory holding both the site and the reports, so the site's relative
    links to artifacts resolve; loopback only, a preview and not a publication."""
    root = Path(os.path.commonpath([output_dir.resolve(), site.resolve()]))
    handler = partial(_QuietHandler, directory=str(root))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise UsageError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    rel = site.resolve().relative_to(root).as_posix()
    print(f"site: serving http://127.0.0.1:{server.server_address[1]}/"
          f"{'' if rel == '.' else rel + '/'}index.html (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("site: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """No per-request log lines on the terminal."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
