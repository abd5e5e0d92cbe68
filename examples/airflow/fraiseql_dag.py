"""An Airflow DAG factory for fraiseql-rb fleets: one task per (runbook, target), each running
the runbook's notebook with the papermill provider's PapermillOperator
(apache-airflow-providers-papermill), followed by a `verdict` task.

Proven by `examples/airflow/prove.sh`, which .ci/run runs: Airflow and the provider in a
virtual environment of their own, `airflow dags test` of a DAG this factory builds, against
the sandbox, and the dated artifacts it must leave.

Run this way, the notebook writes findings.json into its own dated directory under
$FRAISEQL_RB_OUTPUT_DIR (the worker's environment must also set $FRAISEQL_RB_INVENTORY) and
papermill writes the executed notebook to `output`. The `verdict` task then runs
`fraiseql_rb.runner.external.finish` in `python` (the interpreter that has fraiseql-rb, the
notebooks' kernel): the masked notebook and its HTML go beside findings.json, as
`fraiseql-rb run` leaves them, and the task fails when the verdict is in `fail_on` (critical
and unknown by default), so a critical security review fails its DAG run instead of passing
quietly. For the exit codes and a fleet summary in one command, run
`fraiseql-rb run RUNBOOK --all-targets ...` from a BashOperator instead (see README, "Fleets").

Usage, in the DAGs folder:

    from fraiseql_dag import fleet_dag
    dag = fleet_dag("fraiseql_service_health", {"service-health": "deploy/service_health.ipynb"},
                    ["prod-eu", "prod-us"], schedule="*/15 * * * *")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow import DAG
from airflow.providers.papermill.operators.papermill import PapermillOperator
from airflow.providers.standard.operators.python import ExternalPythonOperator

NOTEBOOKS = "/srv/fraiseql-rb/notebooks"
OUTPUT = "/var/reports/fraiseql/airflow"
PYTHON = "/srv/fraiseql-rb/venv/bin/python"  # the interpreter where fraiseql-rb is installed
FAIL_ON = ("critical", "unknown")


def finish_run(executed: str, fail_on: list[str]) -> str:
    """The `verdict` task, run in the interpreter that has fraiseql-rb (so it imports there):
    complete the run's artifacts and fail the task on a verdict in `fail_on`."""
    from fraiseql_rb.runner import external

    directory, findings = external.finish(executed)
    status = findings.get("status")
    print(f"{findings.get('runbook')} on {findings.get('target')}: {status}; {directory}")
    if status in fail_on:
        raise RuntimeError(f"the verdict is {status}: read {directory}")
    return str(directory)


def task_id(runbook: str, target: str) -> str:
    """Airflow task ids allow letters, digits, '-', '_' and '.'."""
    return f"{runbook}.{target}".replace("/", "_")


def fleet_dag(dag_id: str, runbooks: Mapping[str, str], targets: Sequence[str], *,
              schedule: str | None = None, parameters: Mapping[str, Mapping[str, Any]] | None
              = None, notebooks: str = NOTEBOOKS, output: str = OUTPUT,
              python: str = PYTHON, fail_on: Sequence[str] = FAIL_ON,
              start_date: datetime = datetime(2026, 1, 1)) -> DAG:
    """A DAG with one PapermillOperator, then its verdict task, per runbook and target, the
    pairs independent of each other (Airflow's pool and parallelism decide how many run at
    once). `runbooks` maps a runbook name to its notebook path under `notebooks`;
    `parameters` gives a runbook's parameters besides target and incident_id (papermill does
    not check them: use the names and types `fraiseql-rb list` prints); `python` is the
    interpreter where fraiseql-rb is installed, and a verdict in `fail_on` fails the verdict
    task."""
    Path(output).mkdir(parents=True, exist_ok=True)
    with DAG(dag_id, schedule=schedule, start_date=start_date, catchup=False,
             tags=["fraiseql-rb"]) as dag:
        for runbook, notebook in runbooks.items():
            for target in targets:
                # one executed notebook per run, target and runbook, side by side:
                # papermill refuses an output folder that does not exist
                executed = f"{output}/{runbook}.{target}." + "{{ ts_nodash }}.ipynb"
                run = PapermillOperator(
                    task_id=task_id(runbook, target),
                    input_nb=f"{notebooks}/{notebook}",
                    output_nb=executed,
                    parameters={"target": target, "incident_id": None,
                                **(parameters or {}).get(runbook, {})},
                    kernel_name="python3",
                )
                verdict = ExternalPythonOperator(
                    task_id=task_id(runbook, target) + ".verdict",
                    python=python, python_callable=finish_run, expect_airflow=False,
                    op_kwargs={"executed": executed, "fail_on": list(fail_on)},
                )
                run >> verdict
    return dag
