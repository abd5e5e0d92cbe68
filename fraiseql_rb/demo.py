"""`fraiseql-rb demo`: the sandbox up, every runbook run against it, the reports listed.

This is the quick start's first command, so on a fresh machine it must work unattended and
say plainly where the reports are and what each runbook concluded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fraiseql_rb.core import paths, runbooks
from fraiseql_rb.core.errors import RunbookError
from fraiseql_rb.core.findings import Status
from fraiseql_rb.runner import execute as runner

from .sandbox import manager

# Runbooks that need a live incident (parameters or faults) still run: on a healthy
# sandbox their verdict is that nothing is wrong, which is the demo's point.


def main(sandbox_dir: Path, output_dir: Path, *, keep: bool = False) -> int:
    was_up = manager.status(sandbox_dir).healthy
    result = manager.up(sandbox_dir)
    inventory_path = str(paths.sandbox_inventory(sandbox_dir))
    outcomes: list[tuple[str, str, Path | None]] = []
    try:
        for name in sorted(runbooks.discover()):
            try:
                request = runner.prepare(name, target="sandbox", inventory_path=inventory_path,
                                         output_dir=output_dir)
                run = runner.execute(request)
                outcomes.append((name, run.status.value, run.artifact_dir))
            except RunbookError as exc:
                outcomes.append((name, f"error: {exc}", None))
    finally:
        if not keep and not was_up:
            manager.down(sandbox_dir)
    width = max(len(name) for name, _, _ in outcomes) if outcomes else 10
    print(f"\nsandbox inventory: {result.inventory}"
          + ("" if keep or was_up else " (sandbox stopped; `fraiseql-rb sandbox up` restarts)"))
    for name, verdict, where in outcomes:
        print(f"  {name:<{width}}  {verdict:<8}  {where or ''}")
    reports = Path(output_dir).resolve()
    print(f"\nreports: {reports}")
    failed = [n for n, v, _ in outcomes if v not in (Status.OK.value, Status.WARNING.value,
                                                       Status.INFO.value)]
    if failed:
        print(f"demo: {len(failed)} runbook(s) did not pass on the healthy sandbox: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    print(reports)
    return 0
