"""The process side of `fraiseql-rb run`: execute a notebook through papermill (`execute`) with
our engine, watch it (`progress`), stop it cleanly (`interruption`) and render its artifacts."""
