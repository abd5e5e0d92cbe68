"""Logging: one line per record on stderr, UTC timestamps, pool reconnection warnings
throttled so a database outage cannot flood the log; `first_line` keeps an exception to one.
"""

from __future__ import annotations

import logging
import sys
import time

_log = logging.getLogger("fraiseql_standin")


class _Throttle(logging.Filter):
    """Let one pool reconnection warning through per 10 s: an outage must not flood the log."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING or "error connecting" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self._last < 10.0:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.msg = f"{record.getMessage()} ({self._suppressed} similar suppressed)"
            record.args = None
        self._last, self._suppressed = now, 0
        return True


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").addFilter(_Throttle())
    _log.setLevel(logging.INFO)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): log lines and
    error messages stay one line even when psycopg or ssl explain at length."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
