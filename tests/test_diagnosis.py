import pytest

from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary, conclude
from fraiseql_rb.core.findings import Status

VOCAB = Vocabulary("demo", {"none": "nothing to do", "disk_full": "free space",
                            "slow_disk": "move to SSD"}, fallback="none",
                   severity={"slow_disk": Status.WARNING})


def test_highest_score_wins_and_candidates_are_ranked():
    ctx = RunContext.adhoc()
    finding = conclude(ctx, VOCAB, [Candidate("slow_disk", 0.6, "p99 io 80 ms"),
                                    Candidate("disk_full", 0.9, "98 % used", {"used": 0.98})])
    assert finding.check == "diagnosis" and finding.status is Status.CRITICAL
    assert finding.evidence["root_cause"] == "disk_full"
    assert [c["code"] for c in finding.evidence["candidates"]] == ["disk_full", "slow_disk"]
    assert finding.remediation == "free space"


def test_weak_evidence_falls_back_and_severity_is_per_code():
    ctx = RunContext.adhoc()
    assert conclude(ctx, VOCAB, [Candidate("disk_full", 0.2, "hint")]).evidence[
        "root_cause"] == "none"
    assert conclude(ctx, VOCAB, []).status is Status.OK
    assert conclude(ctx, VOCAB, [Candidate("slow_disk", 0.7, "x")]).status is Status.WARNING


def test_codes_outside_the_vocabulary_are_a_programming_error():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        conclude(RunContext.adhoc(), VOCAB, [Candidate("cosmic_rays", 1.0, "?")])
