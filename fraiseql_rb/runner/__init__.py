"""The process side of `fraiseql-rb run`, as papermill is built: `execute` (parameters, the
kernel's environment, the artifacts), our `engine` (a hook when each cell starts, the kernel's
log) and `interruption` (SIGINT/SIGTERM). What the kernel side shares with it is in core/."""

import sys

# nbformat validates with jsonschema, whose optional IRI format checker builds rfc3987-syntax's
# grammar when imported: 1.6 s of CPU at the start of every run, for formats nbformat's schema
# never uses. The runner's process does without it (jsonschema skips the checker on
# ImportError); nothing changes for a kernel or for other programs.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
