"""An Airflow DAG factory for fraiseql-rb fleets: one task per (runbook, target), each running
the runbook's notebook with the papermill provider's PapermillOperator
(apache-airflow-providers-papermill).

Proven by `examples/airflow/prove.sh`, which .ci/run runs: Airflow and the provider in a
virtual environment of their own, `airflow dags test` of a DAG this factory builds, against
the sandbox, and the dated artifacts it must leave.

Run this way, a notebook writes findings.json into its own dated directory under
$FRAISEQL_RB_OUTPUT_DIR (the worker's environment must also set $FRAISEQL_RB_INVENTORY); the
executed notebook is `output_nb`, no HTML is rendered, and a task fails only when a cell
raises, not on a critical verdict. For the full artifacts, the exit codes and a fleet summary,
run `fraiseql-rb run RUNBOOK --all-targets ...` from a BashOperator instead (see README,
"Fleets").

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

NOTEBOOKS = "/srv/fraiseql-rb/notebooks"
OUTPUT = "/var/reports/fraiseql/airflow"


def task_id(runbook: str, target: str) -> str:
    """Airflow task ids allow letters, digits, '-', '_' and '.'."""
    return f"{runbook}.{target}".replace("/", "_")


def fleet_dag(dag_id: str, runbooks: Mapping[str, str], targets: Sequence[str], *,
              schedule: str | None = None, parameters: Mapping[str, Mapping[str, Any]] | None
              = None, notebooks: str = NOTEBOOKS, output: str = OUTPUT,
              start_date: datetime = datetime(2026, 1, 1)) -> DAG:
    """A DAG with one PapermillOperator per runbook and target, independent of each other
    (Airflow's pool and parallelism decide how many run at once). `runbooks` maps a runbook
    name to its notebook path under `notebooks`; `parameters` gives a runbook's parameters
    besides target and incident_id (papermill does not check them: use the names and types
    `fraiseql-rb list` prints)."""
    Path(output).mkdir(parents=True, exist_ok=True)
    with DAG(dag_id, schedule=schedule, start_date=start_date, catchup=False,
             tags=["fraiseql-rb"]) as dag:
        for runbook, notebook in runbooks.items():
            for target in targets:
                PapermillOperator(
                    task_id=task_id(runbook, target),
                    input_nb=f"{notebooks}/{notebook}",
                    # one executed notebook per run, target and runbook, side by side:
                    # papermill refuses an output folder that does not exist
                    output_nb=f"{output}/{runbook}.{target}." + "{{ ts_nodash }}.ipynb",
                    parameters={"target": target, "incident_id": None,
                                **(parameters or {}).get(runbook, {})},
                    kernel_name="python3",
                )
    return dag
