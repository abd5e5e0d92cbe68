"""Redis for the sandbox (only when `redis-server` is installed): the CSRF state store and
rate-limit backend of runbook §1.1."""

from __future__ import annotations

import os
import shutil
import time

import redis

from . import processes
from .state import Sandbox, SandboxError

MARKER = "redis-server"


def available() -> bool:
    return shutil.which("redis-server") is not None


def pid(sb: Sandbox) -> int | None:
    value = sb.state.get("redis_pid")
    return int(value) if processes.alive(value, MARKER) else None


def start(sb: Sandbox) -> int | None:
    """Start redis-server on the sandbox's port; the password sits in a 0600 config file,
    never on a command line where `ps` would show it."""
    binary = shutil.which("redis-server")
    if binary is None or not sb.state.get("redis_port"):
        return None
    if (running := pid(sb)) is not None:
        return running
    directory = sb.root / "redis"
    directory.mkdir(mode=0o700, exist_ok=True)
    sb.logs_dir.mkdir(parents=True, exist_ok=True)
    conf = directory / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"port {sb.state['redis_port']}\nbind 127.0.0.1\nsave \"\"\n"
                     f"appendonly no\ndir {directory}\nlogfile {sb.logs_dir / 'redis.log'}\n"
                     f"requirepass {sb.secret('redis_password')}\n")
    proc = processes.spawn([binary, str(conf)], None)
    sb.state["redis_pid"] = proc.pid
    sb.save()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"redis-server exited ({proc.returncode}); see logs/redis.log")
        try:
            redis.Redis(port=sb.state["redis_port"], password=sb.secret("redis_password"),
                        socket_timeout=1).ping()
            return proc.pid
        except (redis.RedisError, OSError):
            time.sleep(0.05)
    raise SandboxError("redis-server did not answer within 10 s")


def stop(sb: Sandbox) -> None:
    processes.terminate(sb.state.get("redis_pid"), MARKER)
    sb.state["redis_pid"] = None
