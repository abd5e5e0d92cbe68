"""Our papermill engine: nbclient's, plus a hook when each cell starts.

papermill keeps engines swappable; this one only adds the observer the runner's progress
display needs (which step is running), and leaves execution itself to nbclient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from papermill.engines import NBClientEngine, papermill_engines

NAME = "fraiseql-rb"
CellObserver = Callable[[Any, int], None]  # (notebook, index of the cell about to run)


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
