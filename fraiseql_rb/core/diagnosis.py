"""The closing verdict of an incident playbook: one `diagnosis` finding.

DESIGN.md: `evidence.root_cause` is a code from the playbook's documented vocabulary and
`evidence.candidates` the ranked list, each with the evidence for it. Playbooks collect
`Candidate`s as their steps run and call `conclude` once; ranking, the status and the shape
are decided here, the same for every playbook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Finding, Status

# Codes that mean "nothing is wrong" in some vocabulary (`none`, `no_leak`).
HEALTHY_CODES = frozenset({"none", "no_leak"})


@dataclass
class Candidate:
    """One possible root cause. `score` in [0, 1]: how strongly the evidence points at it."""

    code: str
    score: float
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "score": round(self.score, 3), "reason": self.reason,
                "evidence": self.evidence}


@dataclass(frozen=True)
class Vocabulary:
    """A playbook's root-cause codes, each with what to do next. `fallback` is chosen when
    no candidate reaches `threshold` (e.g. `none`, `unknown`, `no_leak`)."""

    playbook: str
    remediation: dict[str, str]
    fallback: str
    threshold: float = 0.5
    severity: dict[str, Status] = field(default_factory=dict)  # default: critical
    # the code for a critical finding that no candidate explains (never the healthy fallback)
    unexplained: str | None = None

    def __post_init__(self) -> None:
        if self.fallback not in self.remediation:
            raise ValueError(f"{self.playbook}: fallback {self.fallback!r} not in vocabulary")
        if self.unexplained is not None and self.unexplained not in self.remediation:
            raise ValueError(f"{self.playbook}: unexplained {self.unexplained!r} not in "
                             "vocabulary")


def sampled_status(found: list[Candidate], *, sure: float) -> Status | None:
    """The status of a playbook that measures over a window, when the vocabulary's own would
    mislead: `unknown` when nothing, or not the leading cause, could be measured; `warning`
    when `none` leads with less than `sure` confidence (high readings, no cause standing out);
    otherwise None, and `conclude` decides."""
    if not found:
        return Status.UNKNOWN
    top = max(found, key=lambda c: c.score)
    if top.evidence.get("measured") is False:
        return Status.UNKNOWN
    if top.code == "none" and top.score < sure:
        return Status.WARNING
    return None


def contradicting(ctx: RunContext) -> list[Finding]:
    """The critical findings recorded so far: a diagnosis that says nothing is wrong would
    contradict them (a slot shortage nobody explained is still a slot shortage)."""
    return [f for f in ctx.log.findings
            if f.status is Status.CRITICAL and f.check != "diagnosis"]


def conclude(ctx: RunContext, vocabulary: Vocabulary, candidates: list[Candidate],
             *, status: Status | None = None) -> Finding:
    """Rank the candidates and record the `diagnosis` finding."""
    unknown = [c.code for c in candidates if c.code not in vocabulary.remediation]
    if unknown:
        raise ValueError(f"{vocabulary.playbook}: codes outside the vocabulary: {unknown}")
    ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
    top = ranked[0] if ranked and ranked[0].score >= vocabulary.threshold else None
    code = top.code if top else vocabulary.fallback
    if status is None:
        if code in HEALTHY_CODES:
            status = Status.OK
        elif code == "unknown":
            status = Status.UNKNOWN
        else:
            status = vocabulary.severity.get(code, Status.CRITICAL)
    reason = top.reason if top else (
        "no candidate cause is supported by the evidence" if code not in HEALTHY_CODES
        else "the checks found nothing wrong")
    remediation = vocabulary.remediation[code]
    critical = contradicting(ctx) if code in HEALTHY_CODES else []
    if critical:  # a healthy verdict may never contradict a critical finding
        code = vocabulary.unexplained or code
        status = Status.CRITICAL
        reason = ("no cause in this playbook's vocabulary explains the critical finding(s): "
                  + "; ".join(f"{f.check}: {f.summary}" for f in critical[:3]))
        # nor may its next step say there is nothing to do: the findings' own steps instead
        own = list(dict.fromkeys(f.remediation for f in critical if f.remediation))
        remediation = (vocabulary.remediation[code] if code not in HEALTHY_CODES
                       else "; ".join(own[:2]) or f"read the critical finding(s): "
                       f"{', '.join(f.check for f in critical[:3])}")
    table = pd.DataFrame([{"code": c.code, "score": round(c.score, 2), "reason": c.reason}
                          for c in ranked]) if ranked else None
    return ctx.record(
        "diagnosis", status, f"root cause: {code} — {reason}",
        {"root_cause": code, "candidates": [c.to_dict() for c in ranked],
         "vocabulary": sorted(vocabulary.remediation)},
        remediation, table=table)
