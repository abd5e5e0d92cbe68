"""sandbox/traffic.py: the generator's mix holds over any window a drill reads, so a drill
judges the fault it injected, not the luck of the draw."""

from __future__ import annotations

import itertools

import pytest

from fraiseql_rb.sandbox import traffic

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("no_typename", [False, True])
def test_every_window_of_requests_carries_the_declared_mix(no_typename):
    queries = [q for q in traffic.QUERIES if not (no_typename and q[0] == "typename")]
    total = sum(w for _, _, w in queries)
    picks = [name for name, _, _ in itertools.islice(traffic.mix(queries), 2000)]
    for size in (9, 40, 120):  # a short drill window at 4 requests/s is 40
        for start in range(0, len(picks) - size):
            window = picks[start:start + size]
            for name, _, weight in queries:
                expected = size * weight / total
                assert abs(window.count(name) - expected) <= 1.5, (name, size, start)


def test_the_mix_is_what_clients_of_the_release_send():
    names = {name for name, _, _ in itertools.islice(traffic.mix(traffic.QUERIES), 100)}
    assert names == {"users", "posts", "typename"}
