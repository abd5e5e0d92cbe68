"""``python -m fraiseql_rb.sandbox.standin --config PATH [--state-dir DIR]``: run the stand-in."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
