"""The six dashboards of runbook §9.2, one module each, on a shared `board`.

`service_health`, `performance`, `security`, `database`, `network` and `capacity_planning`
hold each dashboard's panels (figures) and checks (findings); `board` chooses the metric
source (Prometheus range queries, else direct samples of /metrics) and draws and judges
panels the same way for all six. Notebooks live in `notebooks/dashboards/`.
"""

from __future__ import annotations

from .board import DIRECT, JOB, PROMETHEUS, Board, open_board

__all__ = ["DIRECT", "JOB", "PROMETHEUS", "Board", "open_board"]
