"""The process side of `fraiseql-rb run`, as papermill is built: `execute` (parameters, the
kernel's environment, the artifacts), our `engine` (a hook when each cell starts, the kernel's
log) and `interruption` (SIGINT/SIGTERM). What the kernel side shares with it is in core/."""
