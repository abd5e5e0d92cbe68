"""Issue #12: the disaster-recovery drill's measured RTO and restore throughput (MB/s) at the
sandbox's size and at a 10x larger database (`sandbox up --scale 10`), so README can say how
RTO grows with size.

For each scale a sandbox of its own is brought up (no replica: the drill reads the primary's
base backup and archive only), `fraiseql-rb run disaster-recovery-drill -p tier 4` runs
against it, and the figures come from its findings.json: the RTO (the recovery steps' time
until the restored database answered), the extract rate of the base backup, the restored
bytes and the RPO. The sandbox is taken down and purged afterwards, whatever happens.

Usage: python3 bench/dr.py [--scales 1,10] [--repeat N]. Reported, never asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = [sys.executable, "-m", "fraiseql_rb"]


def fraiseql_rb(*args: str, env: dict[str, str] | None = None,
                timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def drill(inventory: Path, reports: Path) -> dict[str, float | None]:
    result = fraiseql_rb("run", "disaster-recovery-drill", "--inventory", str(inventory),
                         "--target", "sandbox", "--output-dir", str(reports), "-p", "tier", "4",
                         "--quiet")
    artifacts = Path(result.stdout.strip().splitlines()[-1])
    found = {f["check"]: f for f in
             json.loads((artifacts / "findings.json").read_text())["findings"]}
    extract = found.get("dr.extract", {}).get("evidence", {})
    steps = found.get("dr.rto", {}).get("evidence", {}).get("steps_s", {})
    return {"exit": result.returncode,
            "rto_s": found.get("dr.rto", {}).get("evidence", {}).get("rto_s"),
            "restored_mb": round(extract.get("bytes", 0) / 1e6, 1),
            "extract_mb_per_s": extract.get("mb_per_s"),
            "recovery_s": steps.get("dr.recovery"),
            "rpo_s": found.get("dr.rpo", {}).get("evidence", {}).get("rpo_s")}


def measure(scale: int, repeat: int) -> dict[str, float | None]:
    root = Path(tempfile.mkdtemp(prefix=f"frb-bench-dr-{scale}-", dir="/tmp"))
    shutil.rmtree(root)  # `sandbox up` wants to create it
    reports = Path(tempfile.mkdtemp(prefix="frb-bench-dr-reports-"))
    try:
        up = fraiseql_rb("sandbox", "up", "--dir", str(root), "--no-replica", "--scale",
                         str(scale))
        if up.returncode != 0:
            raise SystemExit(f"sandbox up --scale {scale} failed: {up.stderr.strip()}")
        inventory = Path(up.stdout.strip().splitlines()[-1])
        runs = [drill(inventory, reports) for _ in range(repeat)]
    finally:
        fraiseql_rb("sandbox", "down", "--dir", str(root), "--purge")
        shutil.rmtree(reports, ignore_errors=True)
    out: dict[str, float | None] = {"scale": scale, "exit": max(r["exit"] for r in runs)}
    for key in ("rto_s", "restored_mb", "extract_mb_per_s", "recovery_s", "rpo_s"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = [measure(int(s), args.repeat) for s in args.scales.split(",")]
    columns = ["scale", "restored_mb", "rto_s", "recovery_s", "extract_mb_per_s", "rpo_s",
               "exit"]
    print(" | ".join(f"{c:>16}" for c in columns))
    for row in rows:
        print(" | ".join(f"{row[c] if row[c] is not None else '-'!s:>16}" for c in columns))
    if len(rows) > 1 and rows[0]["rto_s"] and rows[-1]["rto_s"]:
        print(f"RTO x{rows[-1]['rto_s'] / rows[0]['rto_s']:.2f} for data x"
              f"{rows[-1]['restored_mb'] / rows[0]['restored_mb']:.2f} "
              f"(scale {rows[0]['scale']} -> {rows[-1]['scale']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
