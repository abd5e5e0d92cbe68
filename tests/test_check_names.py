"""A check's name is written once, in its @check decorator: the function records through
`ctx.result(...)`, which knows the running check (as Barman's running_check does); and each
check name belongs to exactly one function."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import Status

PACKAGE = Path(__file__).resolve().parent.parent / "fraiseql_rb"


def _checks() -> list[tuple[str, str, ast.FunctionDef]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sandbox" in path.parts:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for deco in fn.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "check"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    found.append((deco.args[0].value, f"{path.name}:{fn.name}", fn))
    return found


# ctx methods that take a check name, and what a check calls instead for its own name
REPEATS = {"record": "result", "record_skipped": "endpoint_hung", "could_not_run": "result"}


def test_no_check_writes_its_own_name_again():
    repeated = []
    for name, where, fn in _checks():
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in REPEATS and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value == name):
                repeated.append(f"{where} writes {name!r} again in {node.func.attr}(): use "
                                f"ctx.{REPEATS[node.func.attr]}(...)")
    assert not repeated


def test_each_check_name_belongs_to_one_function():
    owners: dict[str, list[str]] = defaultdict(list)
    for name, where, _ in _checks():
        owners[name].append(where)
    shared = {name: places for name, places in owners.items() if len(places) > 1}
    assert not shared, f"one check, one function: {shared}"
    assert len(owners) >= 70


def test_result_records_under_the_running_check_and_only_inside_one():
    @check("demo.outer")
    def outer(ctx: RunContext) -> None:
        inner(ctx)
        ctx.result(Status.OK, "outer done")

    @check("demo.inner")
    def inner(ctx: RunContext) -> None:
        ctx.result(Status.WARNING, "inner done")

    ctx = RunContext.adhoc()
    outer(ctx)
    assert [(f.check, f.status) for f in ctx.log.findings] == [
        ("demo.inner", Status.WARNING), ("demo.outer", Status.OK)]
    assert ctx.running == []
    with pytest.raises(RuntimeError, match="outside a @check"):
        ctx.result(Status.OK, "nobody's")


def test_a_caller_records_a_skip_under_the_checks_own_name():
    @check("demo.step")
    def step(ctx: RunContext) -> None:
        raise AssertionError("a skipped check does not run")

    ctx = RunContext.adhoc()
    skipped = step.skip(ctx, "an earlier step made it moot")
    assert (skipped.check, skipped.status, skipped.summary) == (
        "demo.step", Status.INFO, "skipped: an earlier step made it moot")
    assert skipped.evidence == {"skipped": True} and ctx.running == []
    assert step.check_name == "demo.step"
