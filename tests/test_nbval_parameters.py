"""nbval's kernels run the notebooks with short sampling windows, bound right after the
parameters cell; a cell that does not assign a parameter keeps what the notebook said."""

from __future__ import annotations

import os

import nbval_parameters
from jupyter_client.manager import start_new_kernel


def _run(client, code: str) -> str:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("ERROR " + msg["content"]["ename"])

    client.execute_interactive(code, output_hook=hook, timeout=60)
    return "".join(out).strip()


def test_the_parameters_cell_gets_the_short_windows(tmp_path, monkeypatch):
    for key, value in nbval_parameters.install(tmp_path / "ipython").items():
        monkeypatch.setenv(key, value)
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        assert _run(client, 'target = "sandbox"\nwindow_s = 15.0  # sampling [1..3600]\n'
                            "interval_s = 2.0\nunrelated = 7") == ""
        assert _run(client, "print(window_s, interval_s, unrelated)") == "3.0 0.5 7"
        # a later cell that uses the name without assigning it keeps the short value
        assert _run(client, "print(window_s * 2)") == "6.0"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_without_the_environment_a_kernel_keeps_the_notebooks_values(tmp_path, monkeypatch):
    nbval_parameters.install(tmp_path / "ipython")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("FRAISEQL_RB_NBVAL_PARAMETERS", raising=False)
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        _run(client, "window_s = 15.0")
        assert _run(client, "print(window_s)") == "15.0"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
