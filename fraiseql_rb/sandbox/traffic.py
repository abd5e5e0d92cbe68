"""Background GraphQL traffic for the sandbox, so its metrics move as a live server's do.

A drill needs requests: an error spike only shows in the error counters when someone calls
the failing operation. The loop is bounded in rate and in time (it stops by itself), and it
only ever talks to the sandbox's own loopback address.

    python -m fraiseql_rb.sandbox.traffic --url https://127.0.0.1:PORT --ca CA [--rps 4]

"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import random
import signal
import ssl
import sys
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import httpx

from . import processes
from .standin.releases import resolve
from .state import Sandbox

# The mix of operations a small FraiseQL app sees; names are the stand-in's root fields.
# Most requests repeat a few popular queries (the result cache answers them); a share asks
# for something new each time, as real clients do, so a database outage shows as errors
# rather than hiding behind the cache.
QUERIES = (
    ("users", "query users {{ users(limit: 5, offset: {offset}) {{ id name }} }}", 4),
    ("posts", "query posts {{ posts(limit: 5, offset: {offset}) {{ id title }} }}", 4),
    ("typename", "{{ __typename }}", 1),
)
POPULAR_OFFSETS = (0, 5, 10)
UNCACHED_SHARE = 0.15
MAX_SECONDS = 12 * 3600  # a forgotten sandbox stops its traffic by itself
MODULE = "fraiseql_rb.sandbox.traffic"
DEFAULT_RPS = 4.0


def start(sb: Sandbox, rps: float = DEFAULT_RPS) -> int:
    """Start the generator for this sandbox (idempotent)."""
    if processes.alive(sb.state.get("traffic_pid"), str(sb.root)):
        return int(sb.state["traffic_pid"])
    command = [sys.executable, "-m", MODULE, "--url", sb.server_url, "--ca", str(sb.ca_cert),
               "--rps", str(rps), "--tag", str(sb.root)]
    if not resolve(sb.server_release).root_typename:
        # clients of a release that refuses a root `{ __typename }` do not send one; the
        # refusals would be an error rate nobody real sees
        command.append("--no-typename")
    proc = processes.spawn(command, sb.logs_dir / "traffic.log")
    sb.state["traffic_pid"] = proc.pid
    sb.save()
    return proc.pid


def stop(sb: Sandbox) -> None:
    processes.terminate(sb.state.get("traffic_pid"), str(sb.root))
    sb.state["traffic_pid"] = None


def restart(sb: Sandbox) -> None:
    """After the server changed release, so the mix of queries matches what it accepts."""
    if processes.alive(sb.state.get("traffic_pid"), str(sb.root)):
        stop(sb)
        start(sb)


def running(sb: Sandbox) -> bool:
    return processes.alive(sb.state.get("traffic_pid"), MODULE)


def mix(queries: Sequence[tuple[str, str, int]]) -> Iterator[tuple[str, str, int]]:
    """The queries in their weights' proportions, evenly interleaved (smooth weighted
    round-robin): any window of requests carries the declared mix to within one request, so
    a drill's short window judges the fault it injected, not the luck of a random draw."""
    total = sum(weight for _, _, weight in queries)
    credit = [0] * len(queries)
    while True:
        for i, (_, _, weight) in enumerate(queries):
            credit[i] += weight
        pick = max(range(len(queries)), key=credit.__getitem__)
        credit[pick] -= total
        yield queries[pick]


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"traffic: refusing non-loopback target {host}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True, help="CA bundle for the sandbox's HTTPS")
    parser.add_argument("--rps", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tag", help="the sandbox directory, so it can find its generator")
    parser.add_argument("--no-typename", action="store_true",
                        help="never send a root { __typename } (releases before v2.10.0)")
    args = parser.parse_args(argv)
    _loopback_only(args.url)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(args.seed)
    queries = [q for q in QUERIES if not (args.no_typename and q[0] == "typename")]
    order = mix(queries)
    deadline = time.monotonic() + args.max_seconds
    interval = 1.0 / args.rps
    verify = ssl.create_default_context(cafile=args.ca)
    with httpx.Client(base_url=args.url, verify=verify, timeout=5) as client:
        while not stop and time.monotonic() < deadline:
            began = time.monotonic()
            name, template, _ = next(order)
            offset = (rng.randrange(15, 10_000) if rng.random() < UNCACHED_SHARE
                      else rng.choice(POPULAR_OFFSETS))
            query = template.format(offset=offset)
            # the server may be down on purpose: keep going, quietly
            with contextlib.suppress(httpx.HTTPError):
                client.post("/graphql", json={"query": query, "operationName":
                                              None if name == "typename" else name})
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
