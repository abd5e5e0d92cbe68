"""The drill sandbox: a disposable FraiseQL deployment on real PostgreSQL."""
