"""Short sampling windows for nbval's runs of the notebooks.

nbval executes each notebook as stored, with its production defaults (memory-leak samples for
20 s, the error-rate and latency playbooks for 15 s). It only asserts that every cell runs, so
the test suite gives those kernels shorter windows: an IPython startup file, installed in a
private IPYTHONDIR that conftest points the kernels at, rebinds the parameters below right
after the parameters cell has bound them (as papermill's injected cell would). The notebooks
on disk, and every run outside nbval, keep the catalogue's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

# name -> the value nbval's kernels use instead of the notebook's default
SHORT = {
    "window_s": 3.0,  # high-error-rate, high-query-latency, memory-leak, alert-review
    "interval_s": 0.5,  # memory-leak: six samples in its 3 s
    "rate_sample_s": 2.0,  # auth-failures
    "observe_s": 1.0,  # connection-pool-exhaustion
    "sample_interval_s": 1.0,  # dashboards without Prometheus
    "samples": 2,  # service-health
}

STARTUP = '''
import json as _json
import os as _os
import re as _re

def _fraiseql_rb_short_windows():
    short = _json.loads(_os.environ.get("FRAISEQL_RB_NBVAL_PARAMETERS", "{}"))
    ip = get_ipython()  # noqa: F821 - defined in IPython's startup namespace

    def rebind(result):
        cell = result.info.raw_cell or ""
        for name, value in short.items():
            if _re.search(rf"^{name}\\s*=", cell, _re.M) and name in ip.user_ns:
                ip.user_ns[name] = value

    ip.events.register("post_run_cell", rebind)

_fraiseql_rb_short_windows()
del _fraiseql_rb_short_windows
'''


def install(directory: Path) -> dict[str, str]:
    """Write the startup file under `directory`; the environment the kernels need."""
    startup = directory / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "50-fraiseql-rb-nbval.py").write_text(STARTUP)
    return {"IPYTHONDIR": str(directory), "FRAISEQL_RB_NBVAL_PARAMETERS": json.dumps(SHORT)}
