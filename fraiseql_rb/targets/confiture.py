"""FraiseQL's migration tool, `fraiseql-confiture` (CLI `confiture`), run as a subprocess.

There is no `fraiseql-migrate`: FraiseQL's deploy tool calls `confiture migrate up|down`. We
call it the same way, always with `-f json`, and read what it prints; what its exit codes
mean is the data below (`EXIT_MEANINGS`, with the subcommands that give a code a meaning of
their own), so a finding can say it in words.

What was measured with confiture 1.29 (and shapes the runbook):
- `-d URL` must be a URL (a libpq key=value string exits 5). The URL we pass carries no
  password: confiture gets it as PGPASSWORD in its own environment, so neither `ps` nor a
  recorded action shows it. `--no-config` keeps a stray confiture config in the working
  directory from being read.
- confiture's `--lock-timeout` bounds the wait for its own advisory lock (another migration
  run: exit 6, LOCK_1300), not for table locks. A migration's DDL queued behind a long
  transaction waits for ever unless `lock_timeout` is set, so every session confiture opens
  gets PostgreSQL's lock_timeout through PGOPTIONS; a statement that hits it fails the
  migration with exit 3 ("canceling statement due to lock timeout"), transactionally.
  PostgreSQL's lock_timeout also bounds confiture's wait for its advisory lock, and if it
  fired first confiture would report a generic error (exit 1) instead of lock contention, so
  the advisory wait is given half of it (`advisory_wait_ms`).
- `status` exits 2 (tracking table absent) in JSON mode where the table mode exits 1, and it
  is not read-only: on a database without the tracking table it creates it (tb_confiture and
  tb_confiture_steps) while reporting it absent, and in a read-only session it fails. So a
  pre-check asks PostgreSQL whether the table exists (`tracking_table_exists`) and runs
  `status` only where it does (its CREATE TABLE IF NOT EXISTS is then a no-op).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

from fraiseql_rb.core import secrets, thresholds
from fraiseql_rb.targets import postgres

TRACKING_TABLE = "tb_confiture"  # confiture's ledger when no config names another
# The tables confiture keeps for itself in the target database: the migration tool's, not
# the application's (the application role needs no privilege on them).
LEDGER_TABLES = (TRACKING_TABLE, "tb_confiture_steps")

# confiture's documented exit codes (`confiture --help`, confiture.error_codes): the class
# name it gives each, and what it means for a migration run.
EXIT_MEANINGS: dict[int, tuple[str, str]] = {
    0: ("ok", "success"),
    1: ("internal_error", "generic failure: a SQL or hook error"),
    2: ("precondition_failed", "the tracking table is absent: confiture has not run on this "
        "database yet"),
    3: ("db_unreachable", "the database connection failed (host, authentication or network)"),
    4: ("schema_error", "a schema, DDL or build error"),
    5: ("invalid_config", "invalid configuration, or a validation or precondition failure"),
    6: ("lock_contention", "lock contention: another migration run holds confiture's "
        "migration lock"),
    7: ("git_error", "a git, pgGit or grant-accompaniment error"),
    8: ("irreversible_rollback", "irreversible rollback: a migration to roll back has no "
        ".down.sql, so nothing was rolled back"),
}
# Where a subcommand gives an exit code a meaning of its own (its --help, and measured).
COMMAND_EXIT_MEANINGS: dict[str, dict[int, tuple[str, str]]] = {
    "status": {1: ("pending", "migrations are pending (not a failure)")},
    "up": {1: ("halted", "halted at a requires_superuser migration (apply it with `confiture "
               "migrate apply-as`), or a generic error"),
           2: ("invalid", "a validation or configuration error (bad flags, missing config)"),
           3: ("migration_failed", "a migration failed (its SQL, a missing .down.sql, or "
               "duplicate versions) or the connection did: the failed migration was rolled "
               "back, the ones before it stay applied")},
    "down": {3: ("migration_failed", "a rollback failed (its .down.sql's SQL, or no .down.sql "
                 "at all) or the connection did; the failed one stays applied")},
    "down-to": {3: ("bad_revision", "the revision is unknown or newer than the current one, "
                    "or the connection failed")},
    "preflight": {7: ("preflight_errors", "preflight found error-severity issues")},
}
# confiture's symbolic codes (the JSON error envelope) the runbook names
LOCK_CODE = "LOCK_1300"  # its advisory lock not acquired in time
IRREVERSIBLE_CODES = frozenset({"ROLLBACK_600", "ROLLBACK_001"})
NO_DOWN_CODE = "MIGR_001"  # an .up.sql without its .down.sql
LOCK_TIMEOUT_TEXT = "canceling statement due to lock timeout"  # PostgreSQL's message


# Is confiture's ledger there, where confiture looks for it (the role's search_path)?
TRACKING_TABLE_SQL = "SELECT to_regclass(%s)::text AS found"


def tracking_table(url: str, table: str = TRACKING_TABLE) -> str | None:
    """The tracking table's qualified name, or None where confiture has not run yet (read
    in a read-only session: `confiture migrate status` would create it)."""
    with postgres.connect(url) as conn:
        return postgres.one(conn, TRACKING_TABLE_SQL, (table,)).get("found")


def meaning(command: str, code: int | None) -> tuple[str, str]:
    """(class, words) for `confiture migrate <command>` exiting `code`."""
    if code is None:
        return "timeout", "did not finish in time and was stopped"
    special = COMMAND_EXIT_MEANINGS.get(command, {})
    if code in special:
        return special[code]
    return EXIT_MEANINGS.get(code, ("unknown", f"exit code {code}, which confiture does not "
                                    "document"))


def executable() -> Path | None:
    """The `confiture` console script installed beside this Python (a kernel's PATH may not
    hold it), else the one on PATH."""
    beside = Path(sys.executable).parent / "confiture"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("confiture")
    return Path(found) if found else None


def split_url(url: str) -> tuple[str, str | None]:
    """A postgresql:// URL without its password (libpq URL or key=value string in), and the
    password. The URL is what confiture's `-d` is given and what an action shows."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    password = params.pop("password", None)
    user = params.pop("user", None)
    host = params.pop("host", None)
    port = params.pop("port", None)
    dbname = params.pop("dbname", None)
    netloc = quote(user, safe="") + "@" if user else ""
    if host and not host.startswith("/") and "," not in host:
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    else:  # a unix socket directory (or a host list) goes in the query string
        if host:
            params["host"] = host
        if port:
            params["port"] = port
    path = "/" + quote(dbname, safe="") if dbname else "/"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}{path}{query}", password


def advisory_wait_ms(lock_timeout_ms: int) -> int:
    """confiture's `--lock-timeout` (its advisory lock) under PostgreSQL's lock_timeout:
    half of it, so that contention is reported as such (exit 6), not as a generic error."""
    return max(1, lock_timeout_ms // 2)


@dataclass(frozen=True)
class Run:
    """One `confiture migrate <command>` run: its exit code (None: stopped at its timeout,
    or `missing`: it could not start), the JSON it printed, and its last output lines."""

    command: str
    shown: str  # the command line as recorded: no password in it
    returncode: int | None
    payload: dict[str, Any] | None = None
    output: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    timeout_s: float = 0.0
    missing: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def meaning(self) -> tuple[str, str]:
        if self.missing:
            return "missing", self.missing
        return meaning(self.command, self.returncode)

    @property
    def error(self) -> dict[str, Any]:
        """confiture's JSON error envelope ({code, message, actionable, ...}), or {}."""
        error = (self.payload or {}).get("error")
        return error if isinstance(error, dict) else {}

    @property
    def error_code(self) -> str | None:
        code = self.error.get("code")
        return str(code) if code else None

    def messages(self) -> list[str]:
        """Every error and warning confiture printed in its JSON, masked."""
        found: list[str] = []
        payload = self.payload or {}
        if self.error.get("message"):
            found.append(str(self.error["message"]))
        for key in ("errors", "warnings"):
            items = payload.get(key)
            if isinstance(items, list):
                found += [str(i) for i in items if i]
        if isinstance(payload.get("warning"), str):
            found.append(payload["warning"])
        return [secrets.mask(m) for m in found]

    def lock_timed_out(self) -> bool:
        """A migration statement gave up waiting for a table lock (PostgreSQL lock_timeout)."""
        return any(LOCK_TIMEOUT_TEXT in m for m in self.messages() + list(self.output))

    def describe(self) -> str:
        """One line: how it ended, in confiture's words and ours."""
        if self.missing:
            return f"confiture could not run: {self.missing}"
        if self.returncode is None:
            return f"`confiture migrate {self.command}` did not finish within " \
                   f"{self.timeout_s:g} s and was stopped"
        klass, words = self.meaning
        code = f", {self.error_code}" if self.error_code else ""
        first = self.messages()[:1] or [line for line in self.output if line.strip()][-1:]
        said = f": {first[0].splitlines()[0]}" if first else ""
        return (f"`confiture migrate {self.command}` exited {self.returncode} ({klass}{code}: "
                f"{words}){said}")

    def evidence(self) -> dict[str, Any]:
        klass, words = self.meaning
        return {"command": self.shown, "returncode": self.returncode, "class": klass,
                "meaning": words, "error_code": self.error_code,
                "messages": self.messages()[:5], "output": list(self.output),
                "elapsed_s": self.elapsed_s, "timed_out": self.returncode is None
                and not self.missing, "missing": self.missing}


def _environment(password: str | None, lock_timeout_ms: int | None) -> dict[str, str]:
    """confiture's environment: none of our secrets but its own password, no DSN variable
    that could win over `-d`, PostgreSQL's lock_timeout for every session, plain output."""
    env = {k: v for k, v in secrets.clean_environment().items()
           if k not in ("DATABASE_URL", "CONFITURE_DATABASE_URL", "PGPASSWORD")}
    if password:
        env["PGPASSWORD"] = password
    if lock_timeout_ms is not None:
        options = f"-c lock_timeout={int(lock_timeout_ms)}"
        env["PGOPTIONS"] = f"{env['PGOPTIONS']} {options}" if env.get("PGOPTIONS") else options
    env |= {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    return env


def parse_json(text: str) -> dict[str, Any] | None:
    """The JSON object confiture printed (it may print a line of prose before it)."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError:
            start = text.find("\n{", start + 1)
            start = start + 1 if start != -1 else -1
            continue
        return value if isinstance(value, dict) else None
    return None


def command_line(command: str, *args: str, migrations_dir: Path | None = None,
                 database_url: str | None = None,
                 lock_timeout_ms: int | None = None) -> tuple[list[str], str, str | None]:
    """(argv, the command as shown, the password) of `confiture migrate <command> <args> -f
    json`: the line an action records, run or not, with no password in it."""
    argv = ["confiture", "migrate", command, *args, "-f", "json"]
    if migrations_dir is not None:
        argv += ["--migrations-dir", str(migrations_dir)]
    password = None
    if database_url is not None:
        shown_url, password = split_url(database_url)
        argv += ["-d", shown_url, "--no-config"]
    prefix = (f"PGOPTIONS={shlex.quote(f'-c lock_timeout={int(lock_timeout_ms)}')} "
              if lock_timeout_ms is not None else "")
    return argv, secrets.mask(prefix + shlex.join(argv)), password


def run(command: str, *args: str, migrations_dir: Path | None = None,
        database_url: str | None = None, timeout_s: float,
        lock_timeout_ms: int | None = None) -> Run:
    """`confiture migrate <command> <args> -f json` against `database_url` (its password
    goes to PGPASSWORD only), with the migrations in `migrations_dir`. Stopped at
    `timeout_s`. Never raises for what confiture does: a missing tool, a timeout and every
    exit code come back in the Run."""
    argv, shown, password = command_line(command, *args, migrations_dir=migrations_dir,
                                         database_url=database_url,
                                         lock_timeout_ms=lock_timeout_ms)
    env = _environment(password, lock_timeout_ms)
    exe = executable()
    if exe is None:
        return Run(command, shown, None, missing="the `confiture` command is not installed "
                   "(pip install fraiseql-confiture)")
    cwd = migrations_dir.parent if migrations_dir is not None and \
        migrations_dir.parent.is_dir() else None
    began = time.monotonic()
    try:
        done = subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True,
                              timeout=timeout_s, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              start_new_session=True)
        returncode: int | None = done.returncode
        stdout, stderr = done.stdout or "", done.stderr or ""
    except subprocess.TimeoutExpired as exc:
        returncode = None
        stdout, stderr = (part.decode(errors="replace") if isinstance(part, bytes) else
                          (part or "") for part in (exc.stdout, exc.stderr))
    except OSError as exc:
        return Run(command, shown, None, missing=f"confiture could not start: {exc.strerror}")
    elapsed = round(time.monotonic() - began, 2)
    payload = parse_json(stdout)
    lines = [line for line in (stderr + "\n" + ("" if payload else stdout)).splitlines()
             if line.strip()]
    output = tuple(secrets.mask(line) for line in lines[-thresholds.COMMAND_OUTPUT_LINES:])
    return Run(command, shown, returncode, secrets.mask_data(payload) if payload else None,
               output, elapsed, timeout_s)
