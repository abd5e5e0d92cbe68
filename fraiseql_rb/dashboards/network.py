"""Network dashboard (runbook §9.2): the request rate and HTTP request duration the server
measures, and what the network between here and the server and its database looks like
now: TCP connect round trips and TLS handshake times, several probes each.

A TCP connect time is one network round trip (SYN, SYN-ACK) plus the peer's accept; a TLS
handshake adds one or two more round trips and the server's key exchange, so a slow handshake
with a fast connect points at the server's CPU or its certificate chain rather than the path.
Probes measure from the machine running the runbook: run it next to the clients that matter.
The runbook gives no network limit; HTTP duration is judged against §6.1 (P95 > 2 s) and
§3.2 (P99 > 5 s), like query latency.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from matplotlib.figure import Figure

from fraiseql_rb.checks import tls
from fraiseql_rb.core import plots, reachability, thresholds
from fraiseql_rb.core.findings import Finding, Status

from .board import (
    LATENCY_CRITICAL_S,
    LATENCY_WARNING_S,
    Board,
    Quantile,
    Rate,
    Verdicts,
    board_check,
    judge_latency,
    safe_figure,
)

PROBES = thresholds.NETWORK_PROBES  # samples per destination
PROBE_TIMEOUT_S = thresholds.TCP_PROBE_TIMEOUT_S
DEFAULT_PORTS = {"https": 443, "http": 80, "postgresql": 5432, "postgres": 5432}

REQUESTS = {"HTTP requests": Rate("http_requests"), "4xx": Rate("http_4xx"),
            "5xx": Rate("http_5xx")}
DURATION = {f"p{round(q * 100)}": Quantile("http_request_duration", q)
            for q in (0.5, 0.95, 0.99)}


@safe_figure("request rate")
def request_rate_figure(board: Board) -> Figure:
    return board.figure(board.panel(REQUESTS), title="HTTP request rate", ylabel="requests/s")


@safe_figure("HTTP duration")
def duration_figure(board: Board, warning_s: float = LATENCY_WARNING_S,
                    critical_s: float = LATENCY_CRITICAL_S) -> Figure:
    """HTTP request duration p50/p95/p99 as the server measures it (log scale)."""
    return board.figure(board.panel(DURATION), title="HTTP request duration",
                        ylabel="duration (s)",
                        thresholds=plots.latency_lines(warning_s, critical_s),
                        si_unit="s", log=True)


@board_check("dashboard.http_latency")
def check_duration(board: Board, warning_s: float = LATENCY_WARNING_S,
                   critical_s: float = LATENCY_CRITICAL_S) -> list[Finding]:
    """`dashboard.http_latency_p95` and `dashboard.http_latency_p99`."""
    return judge_latency(board, board.panel(DURATION), "dashboard.http_latency", "HTTP request",
                         warning_s, critical_s)


# -- probes --------------------------------------------------------------------------------

@dataclass
class Probe:
    """Several timings of one kind of exchange with one destination."""

    name: str  # "TCP connect: server"
    host: str
    port: int
    samples_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""

    def row(self) -> dict[str, Any]:
        s = self.samples_ms
        return {"probe": self.name, "destination": f"{self.host}:{self.port}",
                "samples": len(s), "failed": len(self.errors),
                "min_ms": round(min(s), 2) if s else None,
                "median_ms": round(statistics.median(s), 2) if s else None,
                "max_ms": round(max(s), 2) if s else None,
                "error": self.errors[0] if self.errors else None, "note": self.note or None}


def _endpoint(url: str) -> tuple[str | None, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme, 0)


def tcp_connect_ms(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> float:
    """One `socket.create_connection`, timed: a round trip plus the peer's accept."""
    began = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout_s):
        return (time.perf_counter() - began) * 1000


def _verifying_context(ca_bundle: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else (
        ssl.create_default_context())


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_handshake_ms(host: str, port: int, context: ssl.SSLContext, *,
                     postgres: bool = False, timeout_s: float = PROBE_TIMEOUT_S) -> float:
    """The TLS handshake alone (the TCP connect before it is not counted). PostgreSQL is
    reached as libpq does: an SSLRequest first, answered 'S' before the handshake."""
    scheme = "postgresql" if postgres else "https"
    with reachability.socket_probe(reachability.endpoint(scheme, host, port),
                                   f"TLS handshake timeout {timeout_s:g} s"), \
            socket.create_connection((host, port), timeout=timeout_s) as raw:
        if postgres:
            raw.sendall(struct.pack("!ii", 8, tls.SSL_REQUEST_CODE))
            answer = raw.recv(1)
            if answer != b"S":
                raise tls.TlsNotOffered(f"PostgreSQL at {host}:{port} does not offer TLS")
        began = time.perf_counter()  # ssl sends no SNI for an address, still matches it
        with context.wrap_socket(raw, server_hostname=host):
            return (time.perf_counter() - began) * 1000


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _sample(probe: Probe, count: int, measure: Any) -> Probe:
    for _ in range(count):
        try:
            probe.samples_ms.append(measure())
        except (OSError, tls.TlsNotOffered) as exc:
            probe.errors.append(_one_line(exc))
    return probe


def probes(board: Board, count: int = PROBES) -> list[Probe]:
    """TCP connect to the server and the database, TLS handshake with each, `count` each;
    measured once per run."""

    def measure() -> list[Probe]:
        target = board.run.target
        server_url = target.fraiseql_url
        out: list[Probe] = []
        host, port = _endpoint(server_url)
        db_host, db_port = _endpoint(target.get("database_url") or "")
        if host:
            out.append(_sample(Probe("TCP connect: server", host, port), count,
                               lambda: tcp_connect_ms(host, port)))
        if db_host and not db_host.startswith("/"):
            out.append(_sample(Probe("TCP connect: database", db_host, db_port), count,
                               lambda: tcp_connect_ms(db_host, db_port)))
        if host and urlsplit(server_url).scheme == "https":
            out.append(_server_tls(host, port, count, target.get("ca_bundle")))
        if db_host and not db_host.startswith("/"):
            out.append(_sample(Probe("TLS handshake: database", db_host, db_port,
                                     note="not verified, as libpq's sslmode=require"), count,
                               lambda: tls_handshake_ms(db_host, db_port,
                                                        _unverified_context(),
                                                        postgres=True)))
        return out

    return board.memo(f"probes-{count}", measure)


def _server_tls(host: str, port: int, count: int, ca_bundle: str | None) -> Probe:
    """The server's handshake as a client makes it (certificate verified with the target's
    CA); if verification fails, timed again without it and the failure kept as a note."""
    probe = Probe("TLS handshake: server", host, port)
    verifying = _verifying_context(ca_bundle)
    try:
        probe.samples_ms.append(tls_handshake_ms(host, port, verifying))
    except ssl.SSLCertVerificationError as exc:
        probe.note = f"certificate did not verify ({exc.verify_message}); timed without"
        return _sample(probe, count, lambda: tls_handshake_ms(host, port,
                                                              _unverified_context()))
    except OSError as exc:
        probe.errors.append(_one_line(exc))
    return _sample(probe, count - 1, lambda: tls_handshake_ms(host, port, verifying))


def probes_table(board: Board, count: int = PROBES) -> pd.DataFrame:
    return pd.DataFrame([p.row() for p in probes(board, count)])


@safe_figure("network probes")
def probes_figure(board: Board, count: int = PROBES) -> Figure:
    """Every probe's samples in order, one line per probe."""
    found = probes(board, count)
    wide = pd.DataFrame({p.name: pd.Series(p.samples_ms, dtype=float) for p in found})
    wide.index = pd.RangeIndex(1, len(wide) + 1, name="probe")
    return plots.timeseries(wide, title=f"TCP connect and TLS handshake times ({count} probes "
                                        "each, measured from here)",
                            ylabel="time (ms)", xlabel="probe number")


@board_check("dashboard.network_probes")
def check_probes(board: Board, count: int = PROBES) -> list[Finding]:
    """`dashboard.tcp_server`, `dashboard.tcp_database`, `dashboard.tls_server`,
    `dashboard.tls_database`: critical when no probe got through, warning when some failed
    or the server's certificate did not verify; the median time otherwise (ok)."""
    out = Verdicts()
    for probe in probes(board, count):
        kind, where = probe.name.split(": ")
        check = f"dashboard.{'tcp' if kind.startswith('TCP') else 'tls'}_{where}"
        row = probe.row()
        if not probe.samples_ms:
            if any("TlsNotOffered" in e for e in probe.errors):
                out.append(board.run.record(check, Status.INFO,
                                            f"{probe.name}: TLS not offered at "
                                            f"{row['destination']}", row))
                continue
            out.append(board.run.record(
                check, Status.CRITICAL,
                f"{probe.name}: none of {count} probes to {row['destination']} got through "
                f"({row['error']})", row,
                "check the host, port and firewall; run service-down or database-unavailable"))
            continue
        status = Status.WARNING if probe.errors or probe.note.startswith("certificate") else (
            Status.OK)
        summary = (f"{probe.name} to {row['destination']}: median {row['median_ms']} ms "
                   f"(min {row['min_ms']}, max {row['max_ms']}) over {row['samples']} probes")
        if probe.errors:
            summary += f"; {len(probe.errors)} failed ({row['error']})"
        if probe.note:
            summary += f"; {probe.note}"
        remediation = None if status is Status.OK else (
            "run the tls-certificate checks (certificate) or look for packet loss (failures)")
        out.append(board.run.record(check, status, summary, row, remediation))
    return out
