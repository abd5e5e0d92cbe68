"""A realistic reports tree for the site tests: bench/site.py's generator, loaded by path
(bench/ is not a package, and its module name would shadow the standard `site`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "bench" / "site.py"
_spec = importlib.util.spec_from_file_location("fraiseql_rb_bench_site", _PATH)
assert _spec is not None and _spec.loader is not None
bench_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_site)
