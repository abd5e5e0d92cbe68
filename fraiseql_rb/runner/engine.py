"""Our papermill engine: nbclient's, plus a hook when each cell starts, and a kernel whose
own log goes to a file.

papermill keeps engines swappable; this one only adds the observer the runner's progress
display needs (which step is running) and a kernel manager that gives the kernel process a
log file for stderr (ipykernel and zmq print there, e.g. a traceback while a Ctrl-C'd kernel
shuts down; that belongs to the run, not on the responder's terminal). Execution itself is
nbclient's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_path
from papermill.engines import NBClientEngine, papermill_engines

NAME = "fraiseql-rb"
CellObserver = Callable[[Any, int], None]  # (notebook, index of the cell about to run)


class _LoggingKernelManager(AsyncKernelManager):
    log_path = ""  # set on the per-run subclass made by `kernel_manager`

    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        # Jupyter's kernel directories, named here: the default list also asks IPython for
        # its profile directory, importing all of IPython (0.3 s of CPU) into the runner.
        return KernelSpecManager(data_dir=self.data_dir, kernel_dirs=jupyter_path("kernels"))

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            kw["stderr"] = log
            await super()._async_launch_kernel(kernel_cmd, **kw)


def kernel_manager(log_path: Path) -> type[AsyncKernelManager]:
    """A kernel manager class (nbclient wants a class) whose kernel logs to `log_path`."""
    return type("RunKernelManager", (_LoggingKernelManager,), {"log_path": str(log_path)})


def log_tail(log_path: Path, lines: int = 5) -> list[str]:
    """The kernel log's last lines, for a run whose kernel died."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


class ObservedEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str,
                                 observer: CellObserver | None = None, **kwargs: Any) -> Any:
        if observer is not None:
            started = nb_man.cell_start

            def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                if cell_index is not None:
                    observer(nb_man.nb, cell_index)
                return started(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register(NAME, ObservedEngine)
