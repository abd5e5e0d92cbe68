"""Runbook §6.2 "Database Scaling", horizontal: a read replica (a hot standby of the primary)
made with `pg_basebackup -R`, started, and proven to stream and to serve reads only.

§6.2's recipe is `pg_basebackup -h primary -D /var/lib/postgresql/data -U postgres -v`, then
`standby_mode = 'on'`, `primary_conninfo = 'host=primary port=5432'` and
`recovery_target_timeline = 'latest'`. Since PostgreSQL 12 `recovery.conf` and
`standby_mode` no longer exist (a server refuses to start with a recovery.conf): `-R` writes
an empty `standby.signal` and `primary_conninfo` into `postgresql.auto.conf`, and
`recovery_target_timeline = 'latest'` is the default. So here:

- **pre-checks** on the primary, through the admin role (`admin_database_url`, else
  `database_url`): `wal_level` replica or logical, a free WAL sender (`max_wal_senders`), a
  free replication slot when one is asked for, the role has REPLICATION (or is superuser),
  the pg_hba.conf lines that admit replication connections (readable by a superuser only;
  whether one matches this host only pg_basebackup itself proves); on this machine:
  pg_basebackup and pg_ctl of the primary's major version (a standby runs the same major
  version), the directory new or empty with room for the primary's databases ×
  `REPLICA_SPACE_FACTOR`, the port free.
- **the change** (execute=True; with a slot also confirm = the target's name, because a slot
  whose standby goes away keeps WAL on the primary until its disk fills):
  `pg_basebackup -d '<conninfo>' -D DIR -X stream -R -c fast|spread [-S slot -C]`, the
  password in PGPASSWORD only (never on the command line or in an action; `-R` writes it
  into primary_conninfo, in DIR's postgresql.auto.conf, mode 0600 in a 0700 directory owned
  by the server's account, as PostgreSQL does for every standby made this way). Then
  `port = N` appended to DIR/postgresql.auto.conf (read last, so it wins over the copied
  postgresql.conf) and `pg_ctl -D DIR -l DIR/standby.log -w start`. As root, PostgreSQL's
  programs run as the `postgres` account (`nobody` without one), which is given DIR.
  Nothing changes on the primary but a WAL sender for the copy and the stream (and the slot).
- **verification**: the standby is in recovery, its WAL receiver streams, the primary's
  pg_stat_replication shows it (by the application_name given to it) with its lag in bytes
  and replay delay below the catalogue's limits, and as the application role a read works
  on it while a write is refused as read-only (SQLSTATE 25006).
- **no automatic rollback**: a standby that fails its verification is stopped and its
  directory left for inspection (the safer choice: it holds the log that says why); the
  result says how to remove it, and, when it works, the `replica_database_url` line for the
  inventory and how to stop and remove it later.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fraiseql_rb.checks import change
from fraiseql_rb.core import runbooks, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import pgbin, postgres

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")  # PostgreSQL's rule for replication slot names
LOG_NAME = "standby.log"  # pg_ctl -l, inside the data directory: one directory to remove
WRITE_CHECK_TABLE = "fraiseql_rb_replica_write_check"  # never created: the write must fail
READ_ONLY = "25006"  # read_only_sql_transaction
CHECKPOINTS = ("fast", "spread")
POLL_S = 1.0

PRIMARY_SQL = """
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('wal_level') AS wal_level,
       current_setting('max_wal_senders')::int AS max_wal_senders,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')
           AS wal_senders_used,
       current_setting('max_replication_slots')::int AS max_replication_slots,
       (SELECT count(*) FROM pg_replication_slots) AS slots_used,
       (SELECT count(*) FROM pg_replication_slots WHERE slot_name = %(slot)s) AS slot_taken,
       current_user AS role, r.rolsuper AS superuser, r.rolreplication AS replication,
       (SELECT sum(pg_database_size(d.oid)) FROM pg_database d
         WHERE has_database_privilege(d.oid, 'CONNECT'))::bigint AS databases_bytes,
       (SELECT count(*) FROM pg_database d
         WHERE NOT has_database_privilege(d.oid, 'CONNECT')) AS databases_unseen
FROM pg_roles r
WHERE r.rolname = current_user
"""
HBA_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules
WHERE 'replication' = ANY(database) OR error IS NOT NULL
ORDER BY line_number
"""
STANDBY_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       current_setting('port')::int AS port
"""
REPLICATION_SQL = """
SELECT state, sync_state, client_addr::text AS client_addr,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,
       EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag_s
FROM pg_stat_replication
WHERE application_name = %(name)s
"""
TABLES_SQL = "SELECT count(*) AS tables FROM pg_tables WHERE schemaname = 'public'"


# -- where things are -------------------------------------------------------------------------

def primary_url(ctx: RunContext) -> tuple[str, str]:
    """The primary's URL for replication (the admin role's when the inventory has one) with
    its password, and as written (no password)."""
    kind = "admin_database" if ctx.target.get("admin_database_url") else "database"
    return ctx.target.database_url(kind), str(ctx.target.get(f"{kind}_url"))


def standby_name(port: int) -> str:
    """The application_name the standby streams under (how the primary's
    pg_stat_replication names it)."""
    return f"fraiseql_rb_standby_{port}"


def standby_url(url: str, port: int) -> str:
    """`url` (with or without its password) pointed at the standby on this machine."""
    params = conninfo_to_dict(url)
    params.update(host="127.0.0.1", port=str(port))
    params.pop("hostaddr", None)
    return make_conninfo(**params)


def replication_conninfo(url: str, port: int) -> str:
    """What pg_basebackup connects with: the primary's URL without its password (that goes
    in PGPASSWORD) and the standby's application_name (kept by -R in primary_conninfo)."""
    params = conninfo_to_dict(url)
    params.pop("password", None)
    params["application_name"] = standby_name(port)
    return make_conninfo(**params)


def server_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL's programs run as when this runs as root (PostgreSQL refuses
    root): `postgres`, else `nobody`; None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' account "
                       "exists for PostgreSQL to run as")


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _traversable(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to `path` that `account` cannot enter, if any."""
    groups = {account.pw_gid, *os.getgrouplist(account.pw_name, account.pw_gid)}
    for part in (*reversed(path.parents), path):
        if not part.exists():
            break
        st = part.stat()
        bit = (stat.S_IXUSR if st.st_uid == account.pw_uid else
               stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH)
        if not st.st_mode & bit:
            return part
    return None


def port_free(port: int) -> bool:
    """Can a server listen on `port` here (on loopback and on every address)?"""
    for address in ("127.0.0.1", "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def _params_given(data_dir: str | None, port: int | None) -> bool:
    return bool(data_dir) and port is not None


# -- pre-checks ------------------------------------------------------------------------------

def judge_primary(row: dict[str, Any], slot_name: str | None) -> list[dict[str, Any]]:
    """Each condition the primary must meet for a new standby, with its value and verdict."""
    senders_free = row["max_wal_senders"] - row["wal_senders_used"]
    rows = [
        {"condition": "wal_level is replica or logical", "value": row["wal_level"],
         "ok": row["wal_level"] in ("replica", "logical"),
         "fix": "set wal_level = replica and restart the primary"},
        {"condition": "a WAL sender is free", "value": f"{row['wal_senders_used']} of "
         f"max_wal_senders {row['max_wal_senders']} in use", "ok": senders_free >= 1,
         "fix": "raise max_wal_senders (a restart) or end an unused base backup"},
        {"condition": f"role {row['role']} may replicate",
         "value": "superuser" if row["superuser"] else
         ("REPLICATION" if row["replication"] else "no REPLICATION"),
         "ok": bool(row["superuser"] or row["replication"]),
         "fix": f"ALTER ROLE {row['role']} REPLICATION, or use a role that has it "
                "(admin_database_url)"},
    ]
    if slot_name:
        rows.append({"condition": f"slot name {slot_name!r} is valid and unused",
                     "value": "taken" if row["slot_taken"] else
                     ("valid" if SLOT_NAME.fullmatch(slot_name) else "invalid"),
                     "ok": bool(SLOT_NAME.fullmatch(slot_name)) and not row["slot_taken"],
                     "fix": "choose another name: lower-case letters, digits and "
                            "underscores, at most 63"})
        rows.append({"condition": "a replication slot is free",
                     "value": f"{row['slots_used']} of max_replication_slots "
                              f"{row['max_replication_slots']} in use",
                     "ok": row["max_replication_slots"] - row["slots_used"] >= 1,
                     "fix": "raise max_replication_slots (a restart) or drop an unused slot"})
    return rows


@check("replica.primary")
def check_primary(ctx: RunContext, slot_name: str | None = None) -> Finding:
    """Start the pre-checks: does the primary allow one more standby (wal_level, a WAL
    sender, a slot, the role)?"""
    change.phase(ctx, "pre-checks", "the primary, the programs here, the directory and port")
    url, shown = primary_url(ctx)
    with postgres.connect(url) as conn:
        row = postgres.one(conn, PRIMARY_SQL, {"slot": slot_name})
    conditions = judge_primary(row, slot_name)
    failed = [c for c in conditions if not c["ok"]]
    evidence = {"primary": secrets.mask(shown), "major": row["version_num"] // 10000,
                "databases_bytes": row["databases_bytes"],
                "databases_unseen": row["databases_unseen"], "conditions": conditions}
    table = pd.DataFrame(conditions, columns=["condition", "value", "ok", "fix"])
    if failed:
        return ctx.result(Status.CRITICAL, "the primary cannot take another standby now: "
                          + "; ".join(f"{c['condition']}: {c['value']}" for c in failed),
                          evidence, "; ".join(c["fix"] for c in failed), table=table)
    return ctx.result(Status.OK, f"the primary (PostgreSQL {row['version_num'] // 10000}) "
                      "allows another standby: " + "; ".join(f"{c['condition']} "
                                                            f"({c['value']})"
                                                            for c in conditions),
                      evidence, table=table)


@check("replica.hba")
def check_hba(ctx: RunContext) -> Finding:
    """pg_hba.conf's lines that admit replication connections (superusers only may read
    them). Whether one matches this host and role is decided at connect time: pg_basebackup
    itself is the proof, so an unreadable file is information, not a failure."""
    url, _ = primary_url(ctx)
    try:
        with postgres.connect(url) as conn:
            rules = postgres.rows(conn, HBA_SQL)
    except psycopg.Error as exc:
        return ctx.result(Status.INFO, f"pg_hba.conf's rules are not readable here "
                          f"({postgres.first_line(exc)}): pg_basebackup will show whether "
                          "this host may replicate", {"readable": False})
    errors = [r for r in rules if r.get("error")]
    replication = [r for r in rules if not r.get("error")]
    lines = [f"line {r['line_number']}: {r['type']} {','.join(r['database'] or [])} "
             f"{','.join(r['user_name'] or [])} {r['address'] or ''} {r['auth_method']}"
             for r in replication]
    evidence = {"readable": True, "replication_lines": lines,
                "errors": [f"line {r['line_number']}: {r['error']}" for r in errors]}
    if not replication:
        return ctx.result(Status.CRITICAL, "no pg_hba.conf line admits replication "
                          "connections: pg_basebackup would be refused", evidence,
                          "add `host replication <role> <this host>/32 scram-sha-256` to "
                          "the primary's pg_hba.conf and reload it (SELECT pg_reload_conf())")
    return ctx.result(Status.OK, f"{len(lines)} pg_hba.conf line(s) admit replication: "
                      f"{'; '.join(lines)} (whether one matches this host pg_basebackup "
                      "shows)", evidence)


@check("replica.tools")
def check_tools(ctx: RunContext) -> Finding:
    """pg_basebackup and pg_ctl here, of the primary's major version: a standby replays the
    primary's WAL and reads its files, which only the same major version can."""
    found = ctx.latest(check_primary.check_name)  # type: ignore[attr-defined]
    server = found.evidence.get("major") if found is not None else None
    try:
        tools = {name: str(pgbin.pg_bin(name)) for name in ("pg_basebackup", "pg_ctl")}
        local = pgbin.pg_major_version()
    except pgbin.PgBinariesNotFound as exc:
        return ctx.result(Status.CRITICAL, f"PostgreSQL's programs are not here: {exc}",
                          {"error": str(exc)}, "install the PostgreSQL server package of "
                          "the primary's major version, or set FRAISEQL_RB_PG_BIN")
    evidence = {**tools, "local_major": local, "server_major": server,
                "bindir": str(pgbin.pg_bindir())}
    if server is None:
        return ctx.result(Status.UNKNOWN, f"PostgreSQL {local}'s programs are here, but the "
                          "primary's version is unknown (its check did not run)", evidence)
    if local != server:
        return ctx.result(Status.CRITICAL, f"the programs here are PostgreSQL {local}, the "
                          f"primary runs {server}: a standby must run the primary's major "
                          "version", evidence, f"install PostgreSQL {server}'s server "
                          "package, or point FRAISEQL_RB_PG_BIN at its bin directory")
    return ctx.result(Status.OK, f"pg_basebackup and pg_ctl of PostgreSQL {local}, as the "
                      "primary", evidence)


@check("replica.destination")
def check_destination(ctx: RunContext, data_dir: str | None, port: int | None,
                      space_factor: float = thresholds.REPLICA_SPACE_FACTOR) -> Finding:
    """The new standby's directory (absolute, new or empty, reachable by the server's
    account, room for the primary's databases × `space_factor`) and port (free here)."""
    if not _params_given(data_dir, port):
        missing = [n for n, v in (("data_dir", data_dir), ("port", port)) if v in (None, "")]
        return ctx.result(Status.INFO, f"no standby to check: {' and '.join(missing)} not "
                          "given. To make one, rerun with -p data_dir /absolute/new/dir "
                          "-p port N (and -p execute true)", {"given": False,
                                                              "missing": missing})
    assert data_dir is not None and port is not None
    problems: list[str] = []
    try:
        path = runbooks.new_directory(str(data_dir))
    except UsageError as exc:
        path = Path(str(data_dir))
        problems.append(str(exc))
    account = server_account()
    if account is not None and path.parent.is_dir():
        blocked = _traversable(path.parent, account)
        if blocked is not None:
            problems.append(f"{blocked} cannot be entered by {account.pw_name}, who runs "
                            "PostgreSQL here")
    primary = ctx.latest(check_primary.check_name)  # type: ignore[attr-defined]
    size = primary.evidence.get("databases_bytes") if primary is not None else None
    free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else None
    needed = int(size * space_factor) if size else None
    if needed is not None and free is not None and free < needed:
        problems.append(f"{free / 2**30:.1f} GiB free under {path.parent}, "
                        f"{needed / 2**30:.1f} GiB needed ({space_factor:g} × the primary's "
                        f"{size / 2**30:.2f} GiB)")
    if not port_free(int(port)):
        problems.append(f"port {port} is in use here")
    evidence = {"given": True, "data_dir": str(path), "port": int(port),
                "free_bytes": free, "needed_bytes": needed, "primary_bytes": size,
                "space_factor": space_factor,
                "run_as": account.pw_name if account is not None else None,
                "problems": problems}
    if problems:
        return ctx.result(Status.CRITICAL, "the new standby cannot go there: "
                          + "; ".join(problems), evidence,
                          "choose a new or empty absolute directory with room, and a free "
                          "port")
    room = (f", {free / 2**30:.1f} GiB free for {needed / 2**30:.2f} GiB" if needed else
            ", the primary's size unknown")
    return ctx.result(Status.OK, f"{path} is new or empty{room}; port {port} is free",
                      evidence)


def authorize(ctx: RunContext, data_dir: str | None, port: int | None,
              slot_name: str | None = None) -> Finding:
    """The gate (checks/change.py): every pre-check passed, both data_dir and port given,
    execute=True, and with a slot also confirm (module docstring)."""
    return change.gate(ctx, ["replica.primary", "replica.hba", "replica.tools",
                             "replica.destination"], dangerous=bool(slot_name),
                       needed=_params_given(data_dir, port),
                       nothing_to_do="no data_dir and port given: the pre-checks ran; pass "
                                     "-p data_dir and -p port to make a standby")


# -- the change ------------------------------------------------------------------------------

def basebackup_argv(data_dir: str, conninfo: str, checkpoint: str = "fast",
                    slot_name: str | None = None) -> list[str]:
    """pg_basebackup's command line (no password: PGPASSWORD carries it)."""
    argv = [str(pgbin.pg_bin("pg_basebackup")), "-d", conninfo, "-D", data_dir, "-X",
            "stream", "-R", "-c", checkpoint, "-w"]
    if slot_name:
        argv += ["-S", slot_name, "-C"]
    return argv


def start_argv(data_dir: str) -> list[str]:
    return [str(pgbin.pg_bin("pg_ctl")), "-D", data_dir, "-l",
            str(Path(data_dir) / LOG_NAME), "-w", "-t",
            str(int(thresholds.REPLICA_START_TIMEOUT_S)), "start"]


def stop_argv(data_dir: str) -> list[str]:
    return [str(pgbin.pg_bin("pg_ctl")), "-D", data_dir, "-m", "fast", "-w", "stop"]


def _tool(ctx: RunContext, action: str, argv: list[str], *, timeout_s: float,
          env: dict[str, str], account: pwd.struct_passwd | None) -> change.CommandOutcome:
    """Run one PostgreSQL program (as the server's account when root) with a timeout; its
    action carries the exit code and last lines of output, masked."""
    command = shlex.join(argv)
    began = time.monotonic()
    print(f"running {argv[0].rsplit('/', 1)[-1]}: {secrets.mask(command)}", flush=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              env=env, stdin=subprocess.DEVNULL, cwd="/",
                              start_new_session=True, check=False, **_as_account(account))
        returncode: int | None = done.returncode
        text = (done.stdout or "") + (done.stderr or "")
    except subprocess.TimeoutExpired as exc:
        returncode = None
        text = "".join(p.decode(errors="replace") if isinstance(p, bytes) else (p or "")
                       for p in (exc.stdout, exc.stderr))
    except OSError as exc:
        returncode, text = 127, f"could not run: {exc.strerror or exc}"
    elapsed = round(time.monotonic() - began, 2)
    output = tuple(secrets.mask(line) for line in
                   text.strip().splitlines()[-thresholds.COMMAND_OUTPUT_LINES:])
    outcome = change.CommandOutcome(action, command, True, returncode, elapsed, output,
                                    timeout_s=timeout_s)
    ctx.action(action, command, executed=True,
               result={"returncode": returncode, "timed_out": outcome.timed_out,
                       "elapsed_s": elapsed, "output": list(output[-5:])})
    return outcome


def _env(home: str, password: str | None = None) -> dict[str, str]:
    """A clean environment for PostgreSQL's programs: no secrets (the server outlives the
    run), none of the caller's PG* settings; PGPASSWORD only where given."""
    env = {k: v for k, v in secrets.clean_environment().items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", HOME=home)
    if password:
        env["PGPASSWORD"] = password
    return env


def _prepare(path: Path, account: pwd.struct_passwd | None) -> None:
    """The directory exists, mode 0700, owned by the server's account."""
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


@check("replica.basebackup")
def basebackup(ctx: RunContext, data_dir: str | None, port: int | None,
               slot_name: str | None = None, checkpoint: str = "fast",
               timeout_s: float = thresholds.REPLICA_BASEBACKUP_TIMEOUT_S) -> Finding:
    """§6.2 `pg_basebackup`, with -R (standby.signal and primary_conninfo), -X stream (the
    WAL of the copy streamed beside it) and the checkpoint mode: `fast` makes the primary
    checkpoint at once (an I/O burst), `spread` waits for a paced one (up to
    checkpoint_timeout × checkpoint_completion_target, minutes by default)."""
    if not _params_given(data_dir, port):
        return ctx.skip("no data_dir and port given: nothing to make")
    allowed = change.allowed(ctx)
    change.phase(ctx, "change", "pg_basebackup -R, the port, pg_ctl start"
                 + ("" if allowed else ": recorded only, nothing runs"))
    assert data_dir is not None and port is not None
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}")
    url, shown = primary_url(ctx)
    argv = basebackup_argv(str(data_dir), replication_conninfo(shown, int(port)), checkpoint,
                           slot_name)
    if not allowed:
        ctx.action("pg_basebackup", shlex.join(argv), executed=False)
        return ctx.result(Status.INFO, f"not run ({change.gate_outcome(ctx)}): "
                          f"{shlex.join(argv)} (PGPASSWORD from the inventory's secret)",
                          {"executed": False, "command": shlex.join(argv)})
    account = server_account()
    _prepare(Path(str(data_dir)), account)
    password = conninfo_to_dict(url).get("password")
    outcome = _tool(ctx, "pg_basebackup", argv, timeout_s=timeout_s,
                    env=_env(str(data_dir), password), account=account)
    if not outcome.ok:
        return change.command_failed(ctx, outcome, "pg_basebackup",
                                     "read its last lines: a pg_hba.conf refusal names the "
                                     "line to add; a failed copy leaves the directory empty")
    signal = (Path(str(data_dir)) / "standby.signal").exists()
    return ctx.result(Status.OK, f"copied the primary into {data_dir} in "
                      f"{outcome.elapsed_s:g} s; standby.signal "
                      f"{'written' if signal else 'MISSING'}, primary_conninfo in "
                      "postgresql.auto.conf", {**outcome.evidence(), "standby_signal": signal})


def _step_ok(ctx: RunContext, name: str) -> bool:
    found = ctx.latest(name)
    return found is not None and found.status is Status.OK


@check("replica.start")
def start(ctx: RunContext, data_dir: str | None, port: int | None) -> Finding:
    """`port = N` appended to the copy's postgresql.auto.conf (read last, so it wins over the
    primary's copied settings), then `pg_ctl -D DIR -l DIR/standby.log -w start`."""
    if not _params_given(data_dir, port):
        return ctx.skip("no data_dir and port given: nothing to start")
    assert data_dir is not None and port is not None
    auto = Path(str(data_dir)) / "postgresql.auto.conf"
    configure = f"append port = {int(port)} to {auto}"
    argv = start_argv(str(data_dir))
    if not change.allowed(ctx):
        ctx.action("configure_port", configure, executed=False)
        ctx.action("pg_ctl_start", shlex.join(argv), executed=False)
        return ctx.result(Status.INFO, f"not run ({change.gate_outcome(ctx)}): {configure}; "
                          f"{shlex.join(argv)}", {"executed": False})
    if not _step_ok(ctx, "replica.basebackup"):
        return ctx.skip("pg_basebackup did not succeed: nothing to start")
    with auto.open("a") as handle:
        handle.write(f"# fraiseql-rb read-replica: this standby's own port\nport = {int(port)}\n")
    ctx.action("configure_port", configure, executed=True, result={"port": int(port)})
    outcome = _tool(ctx, "pg_ctl_start", argv, timeout_s=thresholds.REPLICA_START_TIMEOUT_S + 10,
                    env=_env(str(data_dir)), account=server_account())
    if not outcome.ok:
        log = Path(str(data_dir)) / LOG_NAME
        tail = []
        with contextlib.suppress(OSError):
            tail = [secrets.mask(ln) for ln in
                    log.read_text(errors="replace").strip().splitlines()[-5:]]
        evidence_outcome = change.CommandOutcome(
            outcome.key, outcome.command, True, outcome.returncode, outcome.elapsed_s,
            outcome.output + tuple(tail), timeout_s=outcome.timeout_s)
        return change.command_failed(ctx, evidence_outcome, "pg_ctl start",
                                     f"read {log}; the directory is left as it is")
    return ctx.result(Status.OK, f"the standby runs on port {port} (log {data_dir}/{LOG_NAME})",
                      {**outcome.evidence(), "port": int(port)})


# -- verification ----------------------------------------------------------------------------

def judge_stream(standby: dict[str, Any], replication: dict[str, Any] | None,
                 caught_up_bytes: int = thresholds.REPLICA_CAUGHT_UP_BYTES,
                 delay: thresholds.Threshold = thresholds.REPLICA_DELAY_S
                 ) -> tuple[Status, list[str]]:
    """A new standby's state: critical unless it is in recovery, its WAL receiver streams
    and the primary lists it; its lag judged by bytes (`caught_up_bytes`) and by replay
    delay (`delay`, warning and critical)."""
    problems: list[str] = []
    if not standby.get("in_recovery"):
        problems.append("it is not in recovery (not a standby)")
    if standby.get("receiver_status") != "streaming":
        problems.append(f"its WAL receiver is {standby.get('receiver_status') or 'not running'}")
    if replication is None:
        problems.append("the primary's pg_stat_replication does not list it")
    if problems:
        return Status.CRITICAL, problems
    assert replication is not None
    lag_s = replication.get("replay_lag_s") or 0.0
    lag_bytes = replication.get("lag_bytes") or 0
    if lag_s > delay.critical:
        return Status.CRITICAL, [f"replay delay {lag_s:.0f} s (critical above "
                                 f"{delay.critical:g} s)"]
    if lag_s > delay.warning or lag_bytes > caught_up_bytes:
        return Status.WARNING, [f"{lag_bytes} bytes and {lag_s:.1f} s behind (caught up: "
                                f"{caught_up_bytes} bytes, {delay.warning:g} s)"]
    return Status.OK, []


def _read_state(ctx: RunContext, port: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    url, _ = primary_url(ctx)
    with postgres.connect(standby_url(url, port)) as conn:
        standby = postgres.one(conn, STANDBY_SQL)
    with postgres.connect(url) as conn:
        replication = postgres.one(conn, REPLICATION_SQL, {"name": standby_name(port)})
    return standby, replication or None


@check("replica.streaming")
def check_streaming(ctx: RunContext, port: int | None,
                    wait_s: float = thresholds.REPLICA_STREAMING_WAIT_S) -> Finding:
    """Wait up to `wait_s` for the standby to stream and catch up, then judge it
    (judge_stream): in recovery, WAL receiver streaming, listed by the primary, lag below
    the catalogue's limits."""
    if not _step_ok(ctx, "replica.start") or port is None:
        return ctx.skip("no standby was started")
    change.phase(ctx, "verification", f"the standby on port {port} streams and serves reads")
    began = time.monotonic()
    while True:
        try:
            standby, replication = _read_state(ctx, int(port))
            error = None
        except postgres.ConnectionFailed as exc:
            standby, replication, error = {}, None, str(exc)
        status, problems = judge_stream(standby, replication)
        elapsed = round(time.monotonic() - began, 1)
        if status is Status.OK or elapsed + POLL_S > wait_s:
            break
        time.sleep(POLL_S)
    if error:
        problems.insert(0, f"no connection to it: {error}")
    evidence = {"standby": standby, "primary_view": replication, "waited_s": elapsed,
                "application_name": standby_name(int(port)), "problems": problems,
                "caught_up_bytes": thresholds.REPLICA_CAUGHT_UP_BYTES,
                "delay_warning_s": thresholds.REPLICA_DELAY_S.warning}
    if status is Status.OK:
        lag = replication or {}
        return ctx.result(Status.OK, f"the standby streams (primary: {lag.get('state')}, "
                          f"{lag.get('sync_state')}), {lag.get('lag_bytes')} bytes behind, "
                          f"after {elapsed:g} s", evidence)
    return ctx.result(status, f"the standby after {elapsed:g} s: " + "; ".join(problems),
                      evidence, f"read {LOG_NAME} in its data directory")


@check("replica.read_only")
def check_read_only(ctx: RunContext, port: int | None) -> Finding:
    """As the application role on the standby: a read works (and sees the primary's public
    tables), a write is refused as read-only (SQLSTATE 25006). The write is a CREATE TABLE
    in a transaction that is rolled back whatever happens."""
    if not _step_ok(ctx, "replica.start") or port is None:
        return ctx.skip("no standby was started")
    app = standby_url(ctx.target.database_url(), int(port))
    with postgres.connect(ctx.target.database_url()) as conn:
        expected = postgres.one(conn, TABLES_SQL).get("tables")
    with postgres.connect(app) as conn:
        read = postgres.one(conn, TABLES_SQL).get("tables")
    write_error: str | None = None
    refused = False
    table = sql.Identifier("public", WRITE_CHECK_TABLE)
    with postgres.connect(app, read_only=False) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(table))
        except psycopg.Error as exc:
            write_error = postgres.first_line(exc)
            refused = exc.sqlstate == READ_ONLY
    evidence = {"tables_on_standby": read, "tables_on_primary": expected,
                "write_refused": refused, "write_error": write_error,
                "role": postgres.url_user(str(ctx.target.get("database_url")))}
    if not refused:
        how = f"it failed otherwise ({write_error})" if write_error else "it succeeded " \
            "(rolled back)"
        return ctx.result(Status.CRITICAL, f"a write on the standby was not refused as "
                          f"read-only: {how}", evidence,
                          "this node is not a hot standby: stop it and find out why")
    if read != expected:
        return ctx.result(Status.WARNING, f"reads work but see {read} public tables against "
                          f"{expected} on the primary", evidence,
                          "let it catch up and rerun the verification")
    return ctx.result(Status.OK, f"as {evidence['role']}: a read works ({read} public "
                      f"tables, as on the primary); a write is refused ({write_error})",
                      evidence)


def verified(ctx: RunContext) -> bool:
    return _step_ok(ctx, "replica.streaming") and _step_ok(ctx, "replica.read_only")


# -- the result: next steps, or stop the failed standby -------------------------------------------

def _host_for(shown: str) -> str:
    host = conninfo_to_dict(shown).get("host") or ""
    return "127.0.0.1" if host in ("127.0.0.1", "localhost", "::1") else socket.gethostname()


def inventory_line(ctx: RunContext, port: int) -> str:
    """The `replica_database_url` line for this target: the application's URL pointed at
    the standby (host: this machine)."""
    shown = str(ctx.target.get("database_url"))
    params = conninfo_to_dict(shown)
    params.pop("password", None)
    user = params.get("user", "")
    query = "&".join(f"{k}={v}" for k, v in params.items()
                     if k not in ("user", "host", "port", "dbname", "hostaddr"))
    url = (f"postgresql://{user}@{_host_for(shown)}:{port}/{params.get('dbname', '')}"
           + (f"?{query}" if query else ""))
    return f'replica_database_url = "{url}"'


@check("replica.result")
def result(ctx: RunContext, data_dir: str | None, port: int | None,
           slot_name: str | None = None) -> Finding:
    """What to do next: a verified standby's inventory line and how to stop and remove it;
    a failed one is stopped (pg_ctl stop -m fast) and its directory left for inspection."""
    if not change.allowed(ctx) or not _params_given(data_dir, port):
        return ctx.skip("no standby was made")
    assert data_dir is not None and port is not None
    account = server_account()
    who = f"sudo -u {account.pw_name} " if account is not None else ""
    stop = who + shlex.join(stop_argv(str(data_dir)))
    remove = f"{stop} && rm -rf {shlex.quote(str(data_dir))}"
    if slot_name:
        remove += f"; on the primary: SELECT pg_drop_replication_slot('{slot_name}')"
    evidence = {"data_dir": str(data_dir), "port": int(port), "stop": stop, "remove": remove}
    if verified(ctx):
        line = inventory_line(ctx, int(port))
        return ctx.result(Status.INFO, f"a streaming read replica on port {port}: add "
                          f"`{line}` (with replica_database_password_file) to "
                          f"[targets.{ctx.target_name}]; stop it with `{stop}`; remove it "
                          f"with `{remove}`", evidence | {"inventory_line": line},
                          "add the line to the inventory so the replica is monitored "
                          "(database-unavailable, failover read it)")
    ran = _step_ok(ctx, "replica.start")
    if ran:
        outcome = _tool(ctx, "pg_ctl_stop", stop_argv(str(data_dir)),
                        timeout_s=thresholds.REPLICA_START_TIMEOUT_S,
                        env=_env(str(data_dir)), account=account)
        stopped = "stopped" if outcome.ok else f"could not be stopped ({outcome.describe()})"
    else:
        stopped = "was not running"
    return ctx.result(Status.WARNING, f"the standby failed (see above) and {stopped}; "
                      f"{data_dir} is left for inspection ({LOG_NAME} in it); remove it "
                      f"with `{remove}`", evidence | {"stopped": stopped},
                      "read the failed step's finding and the log, fix, remove the "
                      "directory, and rerun")


def outcome(ctx: RunContext) -> str:
    """The change record's outcome (checks/change.py OUTCOMES)."""
    decided = change.gate_outcome(ctx) or "refused"
    if decided != "applied":
        return decided
    return "applied" if verified(ctx) else "failed"


def change_record(ctx: RunContext, data_dir: str | None, port: int | None,
                  **parameters: Any) -> Finding:
    """The change record (checks/change.py) with this run's outcome."""
    what = (f"a read replica of {ctx.target_name} in {data_dir} on port {port}"
            if _params_given(data_dir, port) else
            f"a read replica of {ctx.target_name} (no data_dir/port given)")
    return change.record(ctx, what, {"data_dir": data_dir, "port": port, **parameters},
                         outcome(ctx))
