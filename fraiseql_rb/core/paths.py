"""Where things live by default: notebooks, reports, the sandbox, the inventory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
INVENTORY_ENV = "FRAISEQL_RB_INVENTORY"
INVENTORY_FILE = "fraiseql-rb.toml"
DEFAULT_OUTPUT_DIR = Path("reports")


def notebooks_dir() -> Path:
    """The runbook notebooks: `$FRAISEQL_RB_NOTEBOOKS`, else the checkout's `notebooks/`."""
    override = os.environ.get("FRAISEQL_RB_NOTEBOOKS")
    if override:
        return Path(override)
    return PACKAGE_DIR.parent / "notebooks"


def sandbox_dir() -> Path:
    """The default sandbox directory.

    Under /tmp rather than $HOME: when we run as root the PostgreSQL server runs as an
    unprivileged user, which must be able to traverse every parent directory.
    """
    override = os.environ.get("FRAISEQL_RB_SANDBOX_DIR")
    if override:
        return Path(override)
    return Path("/tmp") / f"fraiseql-rb-sandbox-{os.getuid()}"


def sandbox_inventory(directory: Path | None = None) -> Path:
    return (directory or sandbox_dir()) / "inventory.toml"
