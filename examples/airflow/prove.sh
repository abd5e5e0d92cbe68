#!/usr/bin/env bash
# Proves the DAG factory for real, as .ci/run does after the tests: Airflow and the papermill
# provider in a virtual environment of their own, a kernel that is this checkout's Python (so
# the notebooks import fraiseql_rb), a sandbox, one DAG built by fleet_dag() for one runbook
# and one target, `airflow dags test`, and the dated artifacts it must leave; then the same DAG
# against a sandbox whose server is down, whose verdict task must fail the DAG run.
# Usage: examples/airflow/prove.sh [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-}"
own=""
if [ -z "$work" ]; then work="$(mktemp -d /tmp/fraiseql-rb-airflow-XXXXXX)"; own=1; fi
mkdir -p "$work"
# mktemp makes it 0700: run as root, the sandbox's PostgreSQL (user postgres) must reach it
chmod 755 "$work"
python="${PYTHON:-python3}"
venv="$work/venv"
sandbox="$work/sandbox"
cleanup() {
    "$python" -m fraiseql_rb sandbox down --dir "$sandbox" --purge >/dev/null 2>&1 || true
    # a directory this script made goes too (the venv is about 600 MB), unless it failed
    if [ -n "$own" ] && [ "${1:-1}" -eq 0 ]; then rm -rf "$work"; fi
}
trap 'cleanup $?' EXIT

echo "airflow: installing apache-airflow and the papermill provider into $venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    'apache-airflow>=3,<4' 'apache-airflow-providers-papermill' >"$work/pip.log" 2>&1 \
    || { tail -20 "$work/pip.log"; exit 1; }
# the kernel papermill starts from inside Airflow is this checkout's interpreter
"$python" -m ipykernel install --prefix "$venv" --name python3 \
    --display-name "fraiseql-rb" >/dev/null

echo "airflow: a sandbox for the DAG to run against"
"$python" -m fraiseql_rb sandbox up --dir "$sandbox" --no-replica >/dev/null

export AIRFLOW_HOME="$work/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$AIRFLOW_HOME/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export FRAISEQL_RB_INVENTORY="$sandbox/inventory.toml"
export FRAISEQL_RB_OUTPUT_DIR="$work/reports"
mkdir -p "$AIRFLOW__CORE__DAGS_FOLDER"
kernel_python="$("$python" -c 'import sys; print(sys.executable)')"
cat >"$AIRFLOW__CORE__DAGS_FOLDER/fraiseql_proof.py" <<DAG
import sys

sys.path.insert(0, "$repo/examples/airflow")
from fraiseql_dag import fleet_dag  # noqa: E402

dag = fleet_dag("fraiseql_proof", {"service-health": "deploy/service_health.ipynb"},
                ["sandbox"], notebooks="$repo/notebooks", output="$work/executed",
                python="$kernel_python", parameters={"service-health": {"samples": 2}})
DAG
"$venv/bin/airflow" db migrate >"$work/airflow-db.log" 2>&1 || { tail -20 "$work/airflow-db.log"; exit 1; }

echo "airflow: dags test fraiseql_proof"
if ! "$venv/bin/airflow" dags test fraiseql_proof >"$work/airflow-test.log" 2>&1; then
    grep -iE 'error|exception' "$work/airflow-test.log" | tail -20
    exit 1
fi

# what it must leave: the dated findings.json of the run, ok on a healthy sandbox, with the
# masked notebook and its HTML the verdict task put beside it, and the executed notebook
"$python" - "$work" <<'PY'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
found = sorted((work / "reports").glob("*/service-health/*/findings.json"))
assert len(found) == 1, f"expected one dated service-health run, found {found}"
data = json.loads(found[0].read_text())
assert data["runbook"] == "service-health" and data["target"] == "sandbox", data
assert data["status"] == "ok", [(f["check"], f["status"]) for f in data["findings"]]
assert data["finished_at"], data
names = sorted(p.name for p in found[0].parent.iterdir())
assert names == ["findings.json", "service-health.html", "service-health.ipynb"], names
executed = sorted((work / "executed").glob("service-health.sandbox.*.ipynb"))
assert len(executed) == 1, executed
print(f"airflow: ok: {found[0].parent} ({len(data['findings'])} findings, {', '.join(names)})")
PY

echo "airflow: dags test fraiseql_proof with the server down: the verdict task must fail it"
"$python" -m fraiseql_rb sandbox fault server-down --dir "$sandbox" >/dev/null
if "$venv/bin/airflow" dags test fraiseql_proof >"$work/airflow-critical.log" 2>&1 \
        && ! grep -q "the verdict is critical" "$work/airflow-critical.log"; then
    echo "airflow: a critical verdict did not fail the DAG run"; exit 1
fi
grep -q "the verdict is critical" "$work/airflow-critical.log" \
    || { echo "airflow: the verdict task did not report the critical verdict"
         grep -iE 'error|exception' "$work/airflow-critical.log" | tail -20; exit 1; }
grep -q "DagRun Finished: dag_id=fraiseql_proof.* state=failed" "$work/airflow-critical.log" \
    || { echo "airflow: the DAG run with a critical verdict did not end failed"; exit 1; }
"$python" -m fraiseql_rb sandbox heal server-down --dir "$sandbox" >/dev/null
"$python" - "$work" <<'PY'
import json, sys
from pathlib import Path

runs = sorted(Path(sys.argv[1], "reports").glob("*/service-health/*/findings.json"))
assert len(runs) == 2, runs
critical = json.loads(runs[-1].read_text())
assert critical["status"] == "critical", critical["status"]
assert (runs[-1].parent / "service-health.html").is_file()
print(f"airflow: ok: the critical run ({runs[-1].parent}) failed its DAG run")
PY
