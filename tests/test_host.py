"""Host sizing on this very machine, against thresholds placed either side of it."""

from __future__ import annotations

from fraiseql_rb.checks import host
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status


def local_ctx(**raw) -> RunContext:
    return RunContext.adhoc(target=inventory.Target(
        "t", {"fraiseql_url": "http://127.0.0.1:8000", **raw}))


def test_facts_are_plausible():
    facts = host.facts()
    assert facts.cpus >= 1 and facts.memory_bytes > 2**28


def test_sizing_against_thresholds_around_this_machine():
    facts = host.facts()
    mem_gb = facts.memory_bytes / 2**30
    ok = host.check_sizing(local_ctx(), min_cpus=0.5, recommended_cpus=facts.cpus,
                           min_memory_gb=0.1, recommended_memory_gb=mem_gb * 0.9)
    assert ok.status is Status.OK
    warn = host.check_sizing(local_ctx(), min_cpus=0.5, recommended_cpus=facts.cpus + 1,
                             min_memory_gb=0.1, recommended_memory_gb=0.2)
    assert warn.status is Status.WARNING
    crit = host.check_sizing(local_ctx(), min_cpus=facts.cpus + 1)
    assert crit.status is Status.CRITICAL and "below the §1.1 minimum" in crit.summary


def test_remote_host_is_unknown_not_ok():
    finding = host.check_sizing(local_ctx(fraiseql_url="http://192.0.2.10:8000"))
    assert finding.status is Status.UNKNOWN


def test_disk_thresholds(tmp_path):
    ok = host.check_disk(local_ctx(), [str(tmp_path)], warning_fraction=0.999,
                         critical_fraction=0.9999)
    assert ok.status is Status.OK
    crit = host.check_disk(local_ctx(), [str(tmp_path)], warning_fraction=0.0,
                           critical_fraction=0.0)
    assert crit.status is Status.CRITICAL
