"""The sandbox's confiture migrations: copied into `<sandbox>/migrations` (the inventory's
`migrations_dir`) when the sandbox is built, so schema-migration has work to do.

Two migrations of the sandbox schema, pending from the start (confiture has not run on the
database, so there is no tb_confiture yet): 20260301000001 lower-cases every e-mail address
and adds a CHECK constraint (irreversible: its .down.sql declares so and refuses), and
20260301000002 adds the nullable column tb_post.updated_at (reversible). Neither touches what
the stand-in reads (the v_user and v_post views keep their columns). No confiture config is
written: the runbook passes the database URL with `-d` and its password in confiture's
environment, so no file holds it.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

SUFFIXES = (".up.sql", ".down.sql")


def install(root: Path) -> Path:
    """Copy the packaged migrations into `root / "migrations"` (created; files already there
    are left alone) and return the directory."""
    target = root / "migrations"
    target.mkdir(parents=True, exist_ok=True)
    source = resources.files("fraiseql_rb.sandbox").joinpath("migrations")
    for item in source.iterdir():
        if item.is_file() and item.name.endswith(SUFFIXES) and not (target / item.name).exists():
            with resources.as_file(item) as path:
                shutil.copyfile(path, target / item.name)
    return target
