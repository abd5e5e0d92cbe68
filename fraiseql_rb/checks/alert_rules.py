"""Lint Prometheus alert rules against what the server really exports.

The runbook's §3.2 rules were written for an idealised server: copied as they are, most never
fire (they name metrics v2 does not export), one does not even parse on the Prometheus we ship
(`7_000_000_000`), and one hands histogram_quantile a series that does not exist. Each of those
is silent in production, so each is a problem here, with the rule rewritten as a suggestion.

Every rule is checked on its own and every problem is reported; nothing stops at the first.
Parsing is promtool's when it is installed (the authority); otherwise a small lexer catches
what it can. Metric names come from a small PromQL tokenizer, not a full parser: it only has
to tell selectors from functions, keywords, label names, strings, numbers and durations.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TextIO

import yaml

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.core.errors import EXIT_CRITICAL, EXIT_OK, EXIT_UNKNOWN, EXIT_WARNING, UsageError
from fraiseql_rb.core.findings import Status, worst
from fraiseql_rb.targets import metrics

# Problem kinds.
YAML = "yaml"
INVALID_RULE = "invalid-rule"
UNPARSEABLE = "unparseable"
NEVER_EXPORTED = "never-exported"
HISTOGRAM_MISUSE = "histogram-misuse"
RATE_OF_GAUGE = "rate-of-gauge"
ROUTING = "routing"
RUNBOOK = "runbook"

ALERT_SEVERITIES = ("critical", "warning", "info")  # what Alertmanager routes in our setups
# Metric namespaces of exporters that sit beside FraiseQL (their default prefixes), for names
# the metric catalog does not list: such a name is another exporter's, not a typo of ours.
EXPORTER_PREFIXES = {"pg_": "postgres_exporter (PostgreSQL)"}
# The runbook an alert leads to must fix it: alert-review lists alerts, it repairs nothing.
NOT_A_FIX = frozenset({"alert-review"})
SERIES_QUERY = 'count by (__name__, job) ({__name__=~".+"})'  # every series now, by job
# One metric under two names across exporter releases; a rule written `a or b` fires where
# either exists, so the one this deployment lacks is no problem.
ALTERNATIVE_NAMES = {"pg_replication_lag": "pg_replication_lag_seconds",
                     "pg_replication_lag_seconds": "pg_replication_lag"}
ABSENCE_FUNCTIONS = frozenset({"absent", "absent_over_time"})  # missing series are the point
DEFAULT_WINDOW = "5m"  # rate window for a rewritten histogram_quantile, as in §3.2's rules
PROMTOOL_TIMEOUT_S = thresholds.PROMTOOL_TIMEOUT_S
_GAUGE_TREND = {"rate": "deriv", "irate": "deriv", "increase": "delta"}

AGGREGATORS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}


@dataclass(frozen=True)
class Problem:
    rule: str
    kind: str
    severity: Status
    message: str
    suggestion: str | None = None


# ---- PromQL tokenizer ----------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@,:(){}\[\]])
  | (?P<bad>.)
""", re.X)
_DURATION = re.compile(r"(?:\d+(?:ms|[smhdwy]))+")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_.]*")
_UNDERSCORED_NUMBER = re.compile(r"\d+(?:_\d+)+(?:\.\d+)?")


@dataclass(frozen=True)
class Token:
    kind: str  # ident, number, duration, string, op, error
    text: str
    start: int
    end: int


def tokenize(expr: str) -> list[Token]:
    """PromQL tokens; a number glued to letters that is not a duration is an `error` token
    (Prometheus 2.42 rejects `7_000_000_000` exactly so: "bad number or duration syntax")."""
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        assert match is not None  # `bad` matches any character
        kind, text, end = match.lastgroup or "bad", match.group(), match.end()
        if kind == "number" and end < len(expr) and re.match(r"[A-Za-z0-9_]", expr[end]):
            duration = _DURATION.match(expr, pos)
            tail = _WORD_CHAR.match(expr, pos)
            assert tail is not None
            if duration and duration.end() == tail.end():
                kind, end = "duration", duration.end()
            else:
                kind, end = "error", tail.end()
            text = expr[pos:end]
        if kind == "bad":
            kind = "error"
        if kind not in ("ws", "comment"):
            tokens.append(Token(kind, text, pos, end))
        pos = end
    return tokens


@dataclass
class Call:
    """A bracket pair: a function or aggregation call, a grouping list, or plain brackets."""

    kind: str  # func, agg, group, paren, range
    name: str | None
    open: int  # token index of the opening bracket
    close: int = -1
    grouping: tuple[str, tuple[str, ...]] | None = None  # aggregations: (by|without, labels)


@dataclass
class Selector:
    name: str
    token: int  # token index of the name (or of `{` for a bare selector)
    start: int  # character span of the whole selector in the expression
    end: int
    matchers: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {k: v for k, op, v in self.matchers if op == "="}


@dataclass
class Analysis:
    text: str
    tokens: list[Token]
    calls: list[Call]
    selectors: list[Selector]
    errors: list[str]

    def span(self, first: int, last: int) -> str:
        """Source text from token `first` through token `last`."""
        return self.text[self.tokens[first].start:self.tokens[last].end]

    def enclosing(self, token: int, within: Call | None = None) -> list[Call]:
        """Calls around a token, innermost last; only those inside `within` if given."""
        return [c for c in self.calls if c.open < token < c.close
                and (within is None or within.open < c.open)]


_CLOSERS = {")": "(", "]": "[", "}": "{"}


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body if text[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def analyse(expr: str) -> Analysis:
    """Tokens, bracket structure, selectors and lexical errors of one expression."""
    tokens = tokenize(expr)
    calls: list[Call] = []
    selectors: list[Selector] = []
    errors = [f"bad number or duration syntax: {t.text!r} at column {t.start + 1}"
              if t.text[:1].isdigit() else f"unexpected character {t.text!r} at column "
              f"{t.start + 1}" for t in tokens if t.kind == "error"]
    stack: list[Call] = []
    closed_at: dict[int, Call] = {}  # token index of a closing bracket -> its call

    def ident(i: int) -> str | None:
        return tokens[i].text if 0 <= i < len(tokens) and tokens[i].kind == "ident" else None

    def is_op(i: int, text: str) -> bool:
        return 0 <= i < len(tokens) and tokens[i].kind == "op" and tokens[i].text == text

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "op" and tok.text == "(":
            prev = ident(i - 1)
            call = Call("paren", None, i)
            if prev and prev.lower() in GROUPING:
                call = Call("group", prev.lower(), i)
            elif prev and prev.lower() not in KEYWORDS:
                call = Call("agg" if prev in AGGREGATORS else "func", prev, i)
            elif is_op(i - 1, ")") and (i - 1) in closed_at:
                group = closed_at[i - 1]  # `sum by (le) (` : grouping written first
                agg = ident(group.open - 2)
                if group.kind == "group" and agg in AGGREGATORS and group.name in (
                        "by", "without"):
                    call = Call("agg", agg, i, grouping=(group.name, _labels(tokens, group)))
            calls.append(call)
            stack.append(call)
        elif tok.kind == "op" and tok.text == "[":
            call = Call("range", None, i)
            calls.append(call)
            stack.append(call)
        elif tok.kind == "op" and tok.text in (")", "]", "}"):
            if not stack:
                errors.append(f"unexpected {tok.text!r} at column {tok.start + 1}")
            else:
                call = stack.pop()
                opener = tokens[call.open].text
                if opener != _CLOSERS[tok.text]:
                    errors.append(f"{opener!r} at column {tokens[call.open].start + 1} closed "
                                  f"by {tok.text!r} at column {tok.start + 1}")
                call.close = i
                closed_at[i] = call
                if call.kind == "agg" and call.grouping is None and ident(i + 1) in (
                        "by", "without") and is_op(i + 2, "("):
                    group_close = next((j for j in range(i + 3, len(tokens))
                                        if is_op(j, ")")), len(tokens))
                    labels = tuple(t.text for t in tokens[i + 3:group_close]
                                   if t.kind == "ident")
                    call.grouping = (str(ident(i + 1)), labels)
        elif tok.kind == "op" and tok.text == "{":
            i = _selector(tokens, i, selectors, errors)
            continue
        elif tok.kind == "ident":
            low = tok.text.lower()
            in_group = bool(stack) and stack[-1].kind == "group"
            call_follows = is_op(i + 1, "(")
            agg_grouping = tok.text in AGGREGATORS and (ident(i + 1) or "").lower() in (
                "by", "without")
            if not (in_group or call_follows or agg_grouping or low in KEYWORDS):
                selectors.append(Selector(tok.text, i, tok.start, tok.end))
                if is_op(i + 1, "{"):
                    i = _selector(tokens, i + 1, selectors, errors)
                    continue
        i += 1
    for call in stack:
        errors.append(f"unclosed {tokens[call.open].text!r} at column "
                      f"{tokens[call.open].start + 1}")
        call.close = len(tokens)
    return Analysis(expr, tokens, calls, selectors, errors)


def _labels(tokens: list[Token], group: Call) -> tuple[str, ...]:
    return tuple(t.text for t in tokens[group.open + 1:group.close] if t.kind == "ident")


def _selector(tokens: list[Token], brace: int, selectors: list[Selector],
              errors: list[str]) -> int:
    """Read `{label op "value", ...}` from `brace`; attach it to the selector named just
    before, or make a bare selector from `__name__="..."`. Returns the index after `}`."""
    matchers: list[tuple[str, str, str]] = []
    j = brace + 1
    while j < len(tokens) and not (tokens[j].kind == "op" and tokens[j].text == "}"):
        t = tokens[j]
        if (t.kind == "ident" and j + 2 < len(tokens) and tokens[j + 1].kind == "op"
                and tokens[j + 1].text in ("=", "!=", "=~", "!~")
                and tokens[j + 2].kind == "string"):
            matchers.append((t.text, tokens[j + 1].text, _unquote(tokens[j + 2].text)))
            j += 3
        else:
            j += 1
    if j >= len(tokens):
        errors.append(f"unclosed '{{' at column {tokens[brace].start + 1}")
        return j
    end = tokens[j].end
    named = selectors[-1] if selectors and selectors[-1].token == brace - 1 else None
    if named is not None:
        named.matchers, named.end = matchers, end
    else:
        name = next((v for k, op, v in matchers if k == "__name__" and op == "="), None)
        if name is not None:
            rest = [m for m in matchers if m[0] != "__name__"]
            selectors.append(Selector(name, brace, tokens[brace].start, end, rest))
    return j + 1


# ---- rule checks ---------------------------------------------------------------------------

@dataclass
class _RuleCheck:
    """Problems of one rule plus the edits that would fix them (for one corrected rule)."""

    name: str
    expr: str
    found: list[tuple[str, Status, str, str]] = field(default_factory=list)
    edits: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, kind: str, severity: Status, message: str, hint: str = "",
            edit: tuple[int, int, str] | None = None) -> None:
        self.found.append((kind, severity, message, hint))
        if edit is not None:
            self.edits.append(edit)

    def corrected(self) -> str | None:
        if not self.edits:
            return None
        out, pos = [], 0
        for start, end, text in sorted(self.edits):
            if start < pos:  # overlaps an accepted edit (e.g. inside a rewritten call)
                continue
            out += [self.expr[pos:start], text]
            pos = end
        return "".join(out + [self.expr[pos:]])

    def problems(self) -> list[Problem]:
        fixed = self.corrected()
        out = []
        for kind, severity, message, hint in self.found:
            parts = [hint] if hint else []
            if fixed is not None and kind not in (YAML, INVALID_RULE, ROUTING):
                parts.append(f"corrected: {fixed}")
            out.append(Problem(self.name, kind, severity, message, "; ".join(parts) or None))
        return out


def _promtool_errors(rule: dict[str, Any], promtool: str) -> list[str]:
    """promtool's complaints about one rule alone, without our temp file's name."""
    doc = {"groups": [{"name": "fraiseql-rb-lint", "rules": [rule]}]}
    with tempfile.TemporaryDirectory(prefix="fraiseql-rb-lint-") as tmp:
        path = Path(tmp) / "rule.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        try:
            done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                                  text=True, timeout=PROMTOOL_TIMEOUT_S, check=False,
                                  env=secrets.clean_environment())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [f"promtool could not run: {exc}"]
    if done.returncode == 0:
        return []
    lines = []
    for line in (done.stdout + done.stderr).splitlines():
        line = line.strip().replace(f"{path}: ", "").replace(str(path), "rule")
        if not line or line.startswith("Checking ") or line == "FAILED:":
            continue
        lines.append(re.sub(r'^\d+:\d+: group "[^"]*", rule \d+, "[^"]*": ', "", line))
    return lines or [f"promtool check rules failed (exit {done.returncode})"]


def _check_parse(check: _RuleCheck, rule: dict[str, Any], a: Analysis,
                 promtool: str | None) -> None:
    hints = []
    for tok in a.tokens:  # the fix is the same whoever spotted the error
        if tok.kind == "error" and _UNDERSCORED_NUMBER.fullmatch(tok.text):
            plain = tok.text.replace("_", "")
            check.edits.append((tok.start, tok.end, plain))
            hints.append(f"PromQL numbers take no underscores: write {plain}")
    hint = "; ".join(hints)
    if promtool:
        for error in _promtool_errors(rule, promtool):
            if "could not parse expression" in error or "parse error" in error:
                check.add(UNPARSEABLE, Status.CRITICAL,
                          f"expression does not parse (promtool): {error}", hint)
            else:
                check.add(INVALID_RULE, Status.CRITICAL, f"promtool rejects the rule: {error}")
    else:
        for error in a.errors:
            check.add(UNPARSEABLE, Status.CRITICAL,
                      f"expression does not parse (lexical check; promtool not found): {error}",
                      hint)


def _render_selector(name: str, matchers: Iterable[tuple[str, str, str]]) -> str:
    inner = ",".join(f'{k}{op}"{v}"' for k, op, v in matchers)
    return f"{name}{{{inner}}}" if inner else name


class LiveNames(set[str]):
    """The series names `--target` saw, and from where.

    With the target's Prometheus, `jobs` maps every name to the scrape jobs exporting it now
    (all scrape targets: FraiseQL, postgres_exporter, ...) and `fraiseql_jobs` are the jobs
    scraping FraiseQL itself. Without it only FraiseQL's /metrics was seen, and `unchecked`
    says why the other scrape targets could not be."""

    def __init__(self, names: set[str], *, jobs: dict[str, set[str]] | None = None,
                 fraiseql_jobs: set[str] | None = None, prometheus: str | None = None,
                 targets: int = 0, unchecked: str | None = None) -> None:
        super().__init__(names)
        self.jobs = jobs or {}
        self.fraiseql_jobs = fraiseql_jobs or set()
        self.prometheus = prometheus
        self.targets = targets
        self.unchecked = unchecked

    @property
    def where(self) -> str:
        if self.prometheus:
            return (f"the {self.targets} scrape target(s) of {self.prometheus} "
                    f"(jobs {', '.join(sorted({j for js in self.jobs.values() for j in js}))})")
        return "this target's /metrics"


def _foreign_only(sel: Selector, view: LiveNames | None) -> set[str] | None:
    """Jobs whose series a FraiseQL-vocabulary selector would watch instead of FraiseQL's:
    the name exists in Prometheus, but only from other processes (`process_*` from
    Prometheus or an exporter) or not from the job the selector names. None when fine."""
    if view is None or not view.prometheus or sel.name not in view.jobs:
        return None
    jobs = view.jobs[sel.name]
    wanted = {v for k, op, v in sel.matchers if k == "job" and op == "="}
    if wanted:
        return jobs if not jobs & wanted else None
    match = metrics.lookup(sel.name, sel.labels)
    if match is not None and match.vocabulary != "exporter" and view.fraiseql_jobs \
            and not jobs & view.fraiseql_jobs:
        return jobs
    return None


def _check_names(check: _RuleCheck, a: Analysis, known: set[str], covered: set[int],
                 live: bool, view: LiveNames | None = None) -> None:
    reported: set[str] = set()
    for sel in a.selectors:
        foreign = _foreign_only(sel, view)
        if sel.name in known and foreign is None:
            continue
        if any(call.name in ABSENCE_FUNCTIONS for call in a.enclosing(sel.token)):
            continue
        alternative = ALTERNATIVE_NAMES.get(sel.name)
        if alternative in known and any(s.name == alternative for s in a.selectors):
            continue
        if f"{sel.name}_bucket" in known:
            if sel.token not in covered:
                check.add(HISTOGRAM_MISUSE, Status.CRITICAL,
                          f"{sel.name} is a histogram: the bare name selects nothing "
                          "(its series are _bucket, _sum and _count)",
                          f"for a mean use rate({sel.name}_sum[{DEFAULT_WINDOW}]) / "
                          f"rate({sel.name}_count[{DEFAULT_WINDOW}]); for a percentile "
                          "histogram_quantile over its _bucket rate")
            continue
        key = _render_selector(sel.name, sel.matchers)
        if key in reported:
            continue
        reported.add(key)
        if foreign is not None:
            match = metrics.lookup(sel.name, sel.labels)
            check.add(NEVER_EXPORTED, Status.CRITICAL,
                      f"metric {sel.name} never exported by FraiseQL — this alert can never "
                      f"fire for it: in {view.prometheus if view else 'Prometheus'} {key} only "
                      f"matches series of job(s) {', '.join(sorted(foreign))}",
                      match.concept.note if match is not None else "")
            continue
        _never_exported(check, sel, known, live, view)


def _exporter_of(sel: Selector) -> tuple[str, str] | None:
    """(what, note) when the name belongs to another exporter than FraiseQL."""
    match = metrics.lookup(sel.name, sel.labels)
    if match is not None:
        if match.vocabulary == "exporter":
            return match.concept.description, match.concept.note
        return None
    for prefix, exporter in EXPORTER_PREFIXES.items():
        if sel.name.startswith(prefix):
            return exporter, f"exported by {exporter}, not by FraiseQL"
    return None


def _never_exported(check: _RuleCheck, sel: Selector, known: set[str], live: bool,
                    view: LiveNames | None = None) -> None:
    where = (view.where if view is not None else "this target's /metrics" if live
             else "FraiseQL v2's metrics")
    foreign = _exporter_of(sel)
    if live and view is not None and not view.prometheus and not sel.name.startswith(
            "fraiseql_"):
        # FraiseQL's /metrics alone: another scrape target may well export it
        check.add(NEVER_EXPORTED, Status.UNKNOWN,
                  f"metric {sel.name} is not in this target's /metrics and could not be "
                  f"checked against the other scrape targets: {view.unchecked}",
                  "set prometheus_url in the inventory (the Prometheus that evaluates these "
                  "rules), then lint --target again" + (f"; {foreign[1]}" if foreign else ""))
        return
    if foreign is not None:
        check.add(NEVER_EXPORTED, Status.WARNING,
                  f"metric {sel.name} is not in {where}: it is a {foreign[0]} metric that only "
                  "another exporter provides; the alert fires only where that exporter is "
                  "scraped", foreign[1])
        return
    message = f"metric {sel.name} never exported — this alert can never fire (not in {where})"
    match = metrics.lookup(sel.name, sel.labels)
    if match is None:
        close = get_close_matches(sel.name, sorted(known), n=1, cutoff=0.75)
        check.add(NEVER_EXPORTED, Status.CRITICAL, message,
                  f"did you mean {close[0]}?" if close else "")
        return
    concept = match.concept
    refs = concept.v2 + concept.exporter
    real = next((r for r in refs if f"{r.name}{match.suffix}" in known), concept.real())
    if real is None:
        check.add(NEVER_EXPORTED, Status.CRITICAL, message, concept.note)
        return
    aliased = {k for k, _, _ in match.ref.matchers}
    kept = [m for m in sel.matchers if m[0] not in aliased] + list(real.matchers)
    replacement = _render_selector(f"{real.name}{match.suffix}", kept)
    hint = f"use {replacement}"
    if concept.approximate and real in concept.v2:
        hint += f" (approximate: {concept.note})"
    elif real not in concept.v2:
        hint += f" (not from FraiseQL: {concept.note})"
    if real in concept.v2 and f"{real.name}{match.suffix}" not in known:
        hint += f"; note: {real.name} is not in {where} either ({concept.note or 'absent'})"
    check.add(NEVER_EXPORTED, Status.CRITICAL, message, hint, (sel.start, sel.end, replacement))


def _args(a: Analysis, call: Call) -> list[tuple[int, int]]:
    """Token ranges [first, last) of a call's top-level arguments."""
    out, depth, first = [], 0, call.open + 1
    for i in range(call.open + 1, call.close):
        tok = a.tokens[i]
        if tok.kind == "op" and tok.text in "([{":
            depth += 1
        elif tok.kind == "op" and tok.text in ")]}":
            depth -= 1
        elif depth == 0 and tok.kind == "op" and tok.text == ",":
            out.append((first, i))
            first = i + 1
    out.append((first, call.close))
    return [r for r in out if r[0] < r[1]]


def _keeps_le(call: Call) -> bool:
    if call.grouping is None:
        return False
    how, labels = call.grouping
    return ("le" in labels) == (how == "by")


def _check_histograms(check: _RuleCheck, a: Analysis, known: set[str], live: bool) -> set[int]:
    """histogram_quantile misuse; returns the selector tokens it has spoken for."""
    covered: set[int] = set()
    for call in a.calls:
        if call.kind != "func" or call.name != "histogram_quantile":
            continue
        args = _args(a, call)
        if len(args) != 2:
            continue  # promtool (or the lexer) reports the wrong arity
        first, last = args[1]
        inside = [s for s in a.selectors if first <= s.token < last]
        reasons: list[str] = []
        for sel in inside:
            covered.add(sel.token)
            enclosing = a.enclosing(sel.token, within=call)
            if "_bucket" not in sel.name:
                reasons.append(f"{sel.name} is not a _bucket series: histogram_quantile needs "
                               "the cumulative buckets with their le label")
                continue
            if ":" not in sel.name and not any(
                    c.kind == "func" and c.name in metrics.RATE_FUNCTIONS for c in enclosing):
                reasons.append(f"{sel.name} is not under rate()/irate()/increase(): raw bucket "
                               "counts give the quantile since the server started")
            for agg in (c for c in enclosing if c.kind == "agg" and not _keeps_le(c)):
                reasons.append(f"{agg.name}() drops the le label, leaving one bucket: the "
                               "quantile is NaN")
        if not reasons or not inside:
            continue
        check.add(HISTOGRAM_MISUSE, Status.CRITICAL,
                  "histogram_quantile misuse: " + "; ".join(reasons),
                  "quantiles come from bucket rates kept apart by le",
                  (a.tokens[call.open - 1].start, a.tokens[call.close].end,
                   _corrected_quantile(a, call, args, inside[0], known, live)))
    return covered


def _corrected_quantile(a: Analysis, call: Call, args: list[tuple[int, int]], sel: Selector,
                        known: set[str], live: bool) -> str:
    q = a.span(args[0][0], args[0][1] - 1).strip()
    first, last = args[1]
    base = sel.name[: -len("_bucket")] if sel.name.endswith("_bucket") else sel.name
    matchers = [m for m in sel.matchers if m[0] != "le"]
    if live and base in known and f"{base}_bucket" not in known:  # a summary on this page
        return f"max({_render_selector(base, [*matchers, ('quantile', '=', q)])})"
    real = metrics.real_name_for(f"{base}_bucket")  # the runbook's name → the real histogram
    if f"{base}_bucket" not in known and real and real.endswith("_bucket"):
        base = real[: -len("_bucket")]
    window = next((t.text for t in a.tokens[first:last] if t.kind == "duration"),
                  DEFAULT_WINDOW)
    keep = [lab for c in a.enclosing(sel.token, within=call) if c.kind == "agg" and c.grouping
            and c.grouping[0] == "by" for lab in c.grouping[1] if lab != "le"]
    by = ", ".join(dict.fromkeys([*keep, "le"]))
    bucket = _render_selector(f"{base}_bucket", matchers)
    return f"histogram_quantile({q}, sum by ({by}) (rate({bucket}[{window}])))"


def _check_gauge_rates(check: _RuleCheck, a: Analysis) -> None:
    for call in a.calls:
        if call.kind != "func" or call.name not in metrics.RATE_FUNCTIONS:
            continue
        for sel in (s for s in a.selectors if call.open < s.token < call.close):
            match = metrics.lookup(sel.name, sel.labels)
            if match is None or match.suffix or match.kind != "gauge":
                continue
            trend = _GAUGE_TREND[str(call.name)]
            name_tok = a.tokens[call.open - 1]
            check.add(RATE_OF_GAUGE, Status.WARNING,
                      f"{call.name}() over {sel.name}, a gauge ({match.concept.description}): "
                      "rate is defined for counters only, a falling gauge reads as a reset",
                      f"compare the gauge itself, or use {trend}() for its trend",
                      (name_tok.start, name_tok.end, trend))


def _check_routing(check: _RuleCheck, rule: dict[str, Any]) -> None:
    """Alertmanager routes on labels: a severity only in annotations pages nobody."""
    labels = rule.get("labels") or {}
    annotations = rule.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return
    severity = labels.get("severity", annotations.get("severity"))
    issues = []
    if "severity" in annotations and "severity" not in labels:
        issues.append("severity is an annotation: Alertmanager routes on labels, so this alert "
                      "goes to the default receiver")
    if severity is not None and str(severity) not in ALERT_SEVERITIES:
        issues.append(f"severity {severity!r} matches no route (expected one of "
                      f"{', '.join(ALERT_SEVERITIES)})")
    if issues:
        fixed = severity if str(severity) in ALERT_SEVERITIES else ALERT_SEVERITIES[0]
        check.add(ROUTING, Status.WARNING, "; ".join(issues),
                  f"put it under labels: severity: {fixed}")


@functools.cache
def _runbook_names() -> frozenset[str]:
    """Runbook names from the notebooks (empty when they cannot be read: nothing to hold
    an annotation to, rather than a false alarm)."""
    from fraiseql_rb.core import runbooks

    try:
        return frozenset(runbooks.discover())
    except Exception:  # noqa: BLE001 - a lint without the catalogue still lints the rest
        return frozenset()


def _check_runbook(check: _RuleCheck, rule: dict[str, Any]) -> None:
    """The runbook annotation must name a playbook that fixes the alert: a responder paged
    at 3 a.m. runs it next. alert-review lists alerts; it fixes none of them."""
    annotations = rule.get("annotations") or {}
    if not isinstance(annotations, dict) or "runbook" not in annotations:
        return
    name = str(annotations["runbook"]).strip()
    if "/" in name:
        return  # a link to a document (runbook_url style): not ours to resolve
    known = _runbook_names()
    if name in NOT_A_FIX:
        check.add(RUNBOOK, Status.WARNING,
                  f"runbook {name!r} reviews alerts; it does not fix this one",
                  "name the playbook a responder runs to fix it")
    elif known and name not in known:
        close = get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        check.add(RUNBOOK, Status.WARNING, f"runbook {name!r} is not a fraiseql-rb runbook",
                  f"did you mean {close[0]}?" if close else "see `fraiseql-rb list`")


def _check_rule(rule: Any, index: int, known: set[str], live: bool,
                promtool: str | None, view: LiveNames | None = None) -> list[Problem]:
    if not isinstance(rule, dict):
        return [Problem(f"rule {index}", INVALID_RULE, Status.CRITICAL,
                        f"rule {index} is not a mapping (got {type(rule).__name__})")]
    name = str(rule.get("alert") or rule.get("record") or f"rule {index}")
    expr = rule.get("expr")
    check = _RuleCheck(name, str(expr) if expr is not None else "")
    if not rule.get("alert") and not rule.get("record"):
        check.add(INVALID_RULE, Status.CRITICAL, "rule has neither `alert` nor `record`")
    if expr is None or not str(expr).strip():
        check.add(INVALID_RULE, Status.CRITICAL, "rule has no `expr`")
        return check.problems()
    a = analyse(check.expr)
    _check_parse(check, rule, a, promtool)
    covered = _check_histograms(check, a, known, live)
    _check_names(check, a, known, covered, live, view)
    _check_gauge_rates(check, a)
    if rule.get("alert"):
        _check_routing(check, rule)
        _check_runbook(check, rule)
    return check.problems()


def _rules(doc: Any, source: str) -> tuple[list[Any], list[Problem]]:
    """The rules of a Prometheus rules file, or of a bare list as the runbook prints them."""
    if isinstance(doc, list):
        return doc, []
    if isinstance(doc, dict) and isinstance(doc.get("groups"), list):
        rules, problems = [], []
        for n, group in enumerate(doc["groups"], 1):
            if isinstance(group, dict) and isinstance(group.get("rules"), list):
                rules.extend(group["rules"])
            else:
                problems.append(Problem(f"group {n}", INVALID_RULE, Status.CRITICAL,
                                        f"group {n} has no `rules:` list"))
        return rules, problems
    what = "empty" if doc is None else f"a {type(doc).__name__}"
    return [], [Problem(source, YAML, Status.CRITICAL,
                        f"{source} is {what}, not a rules file",
                        "expected `groups: [{name, rules: [...]}]` or a list of rules")]


def _load(rules_path: str | Path) -> tuple[Any, Problem | None, Path]:
    path = Path(rules_path)
    if not path.is_file():
        raise UsageError(f"rules file not found: {path}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text), None, path
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, Problem(path.name, YAML, Status.CRITICAL,
                             f"{path.name} is not valid YAML{where}: {reason}",
                             "fix the YAML (indentation, quoting) and lint again"), path


def _lint(rules_path: str | Path, exported: set[str] | None,
          promtool: str | None) -> tuple[int, list[Problem]]:
    doc, broken, path = _load(rules_path)
    if broken is not None:
        return 0, [broken]
    rules, problems = _rules(doc, path.name)
    records = {str(r["record"]) for r in rules if isinstance(r, dict) and r.get("record")}
    known = (set(exported) if exported is not None else metrics.reference_names())
    known |= metrics.PROMETHEUS_GENERATED | records
    view = exported if isinstance(exported, LiveNames) else None
    for index, rule in enumerate(rules, 1):
        problems += _check_rule(rule, index, known, exported is not None, promtool, view)
    return len(rules), problems


def lint(rules_path: str | Path, exported: set[str] | None = None, *,
         promtool: str | None = shutil.which("promtool")) -> list[Problem]:
    """Every problem of every rule in a rules file.

    `exported` is the set of series names a live scrape shows (`metrics.Scrape.names()`);
    None checks against the catalog's v2 names instead. A missing file is a UsageError.
    """
    return _lint(rules_path, exported, promtool)[1]


def format_problems(problems: list[Problem]) -> list[str]:
    """Lines for a terminal: one per problem, its suggestion indented under it."""
    lines = []
    for p in problems:
        lines.append(f"{p.severity.upper():8} {p.rule}: [{p.kind}] {p.message}")
        if p.suggestion:
            lines.append(f"         suggestion: {p.suggestion}")
    return lines


_EXIT = {Status.CRITICAL: EXIT_CRITICAL, Status.WARNING: EXIT_WARNING,
         Status.UNKNOWN: EXIT_UNKNOWN}


def main_lint(rules_path: str | Path, exported: set[str] | None, out: TextIO,
              *, promtool: str | None = shutil.which("promtool")) -> int:
    """`fraiseql-rb lint-alerts`: print the problems, return the exit code (0 when clean)."""
    count, problems = _lint(rules_path, exported, promtool)
    for line in format_problems(problems):
        print(line, file=out)
    against = (f"{exported.where} ({len(exported)} names)" if isinstance(exported, LiveNames)
               else f"a live scrape ({len(exported)} series)" if exported is not None
               else "the catalog of FraiseQL v2 metric names")
    parser = "promtool" if promtool else "a lexical check (promtool not found)"
    status = worst([p.severity for p in problems]) if problems else Status.OK
    print(f"{status.upper()}: {len(problems)} problem(s) in {count} rule(s) of {rules_path}, "
          f"names checked against {against}, expressions by {parser}", file=out)
    return _EXIT.get(status, EXIT_OK)


def exported_from_target(target: str, inventory_path: str | Path | None = None) -> LiveNames:
    """Series names the target exports now (the lint's `exported` for --target): FraiseQL's
    /metrics, and every scrape target of the target's Prometheus (the one that evaluates
    the rules, where postgres_exporter's pg_* names live). Without a Prometheus, the
    LiveNames say what could not be checked."""
    from fraiseql_rb.core.context import RunContext
    from fraiseql_rb.core.inventory import load_target
    from fraiseql_rb.targets import prometheus

    ctx = RunContext.adhoc(target=load_target(target, inventory_path))
    names = metrics.scrape(ctx).names()
    client = prometheus.from_target(ctx)
    if client is None:
        return LiveNames(names, unchecked="the inventory names no prometheus_url")
    try:
        with client:
            active = client.targets()
            samples = client.query(SERIES_QUERY)
    except prometheus.PrometheusError as exc:
        return LiveNames(names, unchecked=f"its Prometheus did not answer ({exc})")
    jobs: dict[str, set[str]] = {}
    for sample in samples:
        if sample.metric:
            jobs.setdefault(sample.metric, set()).add(sample.labels.get("job", ""))
    fraiseql_jobs = {job for name, js in jobs.items() if name.startswith("fraiseql_")
                     for job in js}
    return LiveNames(names | set(jobs), jobs=jobs, fraiseql_jobs=fraiseql_jobs,
                     prometheus=secrets.mask(client.base_url), targets=len(active))
