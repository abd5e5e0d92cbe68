"""Runbook §9.1 "Connection Pool Exhaustion" (with §3.2 ConnectionPoolNearCapacity and §4.1
"Verify connection pool: SHOW max_connections"): who holds PostgreSQL's connections, what the
server's pool reports, and which of the vocabulary's causes explains it.

Steps: `pg_stat_activity` grouped by state, application and client address (through
`admin_database_url` when the inventory has one, which sees every role's sessions); the
sessions idle in transaction with their age, read twice `observe_s` apart; long-running
statements; the pool gauges (active, idle, waiting, the admin API's `pool_max`, the tuner's
`fraiseql_pool_recommended_size`) against `max_connections` less the reserved slots; and the
one change this playbook can make: `pg_terminate_backend` on the sessions idle in transaction
longer than `idle_threshold_s`. That runs only with `execute=True` **and** `confirm` equal to
the target's name, in its own non-read-only session on the privileged connection, opened only
then; otherwise the exact SQL, pids written in, is recorded as an action not executed.

Diagnosis (codes: `idle_in_transaction`, `long_running_queries`, `pool_too_small`,
`connection_leak`, `connections_outside_pool`, `unexplained`, `none`). The rule between the
two idle-in-transaction causes:

* `connection_leak` — the sessions idle in transaction longer than `idle_threshold_s` belong
  to the server itself (the role of `database_url`, our own `fraiseql-rb` sessions excluded),
  the pool counts them as checked out (`pool_active` >= their number: connections lent out
  that do nothing), and they accumulate: their number grew between the two readings, or they
  already fill the pool (>= `pool_max`; a leak that has used up the pool cannot grow further).
  The fix is in the server (a code path that never returns its connection); terminating the
  sessions frees PostgreSQL's slots, but the server's pool recovers only if it notices (the
  step re-reads `pool_active` and says so), else a restart buys time.
* `idle_in_transaction` — sessions idle in transaction longer than the threshold that fail that
  rule: another client (a psql session, a batch job), or the server's own but a stable number
  below the pool size (a slow client code path, not an accumulation). Terminating them and
  `idle_in_transaction_session_timeout` are the fix.

`long_running_queries`: statements active longer than `long_query_s`. `pool_too_small`: requests
wait (`pool_waiting` > 0) with every pool connection in use (`pool_active` >= `pool_max`), and
neither idle-in-transaction sessions nor long statements explain it: the pool is busy with real
work. `none`: no candidate reaches 0.5.

A pool full of the server's own sessions idle in transaction (as many as `pool_max`, counted
active) is `connection_leak` at any age: `idle_threshold_s` decides what is terminated, not
whether a pool that can run nothing is leaking. `connections_outside_pool`: the slots are
(nearly) used up (`pool.connections` warning or critical) and without the connections of
clients other than the server they would be below the warning share. `unexplained`: a step
recorded a critical finding that no cause explains (the diagnosis never says `none` then).

Partial views (issue 11 §3): without `admin_database_url` (or pg_read_all_stats) the other
roles' sessions show no state; a session step that finds nothing among the sessions it can see
is `unknown` with how many it could not see and how to grant the view, never `ok`.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from fraiseql_rb.core import plots, progress, report, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.diagnosis import Candidate, Vocabulary
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.targets import metrics, pgstats, postgres, service

VERIFY_GONE_S = thresholds.TERMINATE_VERIFY_S  # for terminated sessions to leave the view

VOCABULARY = Vocabulary("connection-pool-exhaustion", {
    "none": "nothing holds the pool: no session idle in transaction or long-running, and no "
            "request waits for a connection; if the alert fired, compare pool_active with "
            "pool_max over the alert's window in Prometheus",
    "idle_in_transaction": "sessions sit idle inside open transactions and hold connections: "
                           "terminate them (rerun with execute=True and confirm=<target>, or "
                           "run the recorded SQL as a superuser), find their client from the "
                           "application and address above, and set "
                           "idle_in_transaction_session_timeout on the role or database",
    "long_running_queries": "long statements hold the pool's connections: read them in the "
                            "table above (EXPLAIN ANALYZE on a copy, §4.1), cancel the worst "
                            "with pg_cancel_backend(pid), and set statement_timeout for the "
                            "application role",
    "pool_too_small": "the pool is busy with real work and requests queue for it: raise "
                      "pool_max_size (keep pool_max_size × instances below max_connections "
                      "less the reserved slots), follow fraiseql_pool_recommended_size when "
                      "[pool_tuning] exports it, or add instances (§6.1)",
    "connection_leak": "the server checks out pool connections and never returns them (each "
                       "left idle in transaction): restart the server to get its pool back "
                       "(terminating the sessions, execute=True and confirm=<target>, frees "
                       "PostgreSQL's slots, but a pool that never gets the connections back "
                       "stays full), then report the leak with this evidence; set "
                       "idle_in_transaction_session_timeout so PostgreSQL ends leaked "
                       "transactions by itself",
    "connections_outside_pool": "clients other than the FraiseQL server (other roles or "
                                "applications, listed under holders) hold PostgreSQL's "
                                "connection slots, so the server's pool cannot open "
                                "connections: find those clients in the table above, close or "
                                "terminate the idle ones (pg_terminate_backend(pid) as a "
                                "superuser), cap them (ALTER ROLE ... CONNECTION LIMIT n, or a "
                                "pooler such as PgBouncer in front of them), and keep "
                                "pool_max_size × instances plus their share below "
                                "max_connections less the reserved slots",
    "unexplained": "a step found a critical problem that none of the causes above explains: "
                   "read the critical finding(s) above and escalate with this evidence",
}, fallback="none", unexplained="unexplained")


def grant_advice(role: str | None) -> str:
    """How to let the role see every session (issue 11 §3: never `ok` for what is hidden)."""
    return (f"GRANT pg_read_all_stats TO {role or '<role>'}; (as a superuser), or set "
            "admin_database_url (with admin_database_password_env or _file) in the inventory")


def invisible(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sessions whose state this role may not read (another role's, without
    pg_read_all_stats): they could be idle in transaction or running for hours."""
    return [s for s in found if s.get("state") == "not visible"]


def visibility_url(ctx: RunContext) -> tuple[str, str]:
    """The URL to read pg_stat_activity with, and what it can see: the privileged connection
    sees every role's sessions; the application role sees its own fully, others' in part."""
    admin = ctx.target.admin_database_url()
    if admin is not None:
        return admin, "every session (admin_database_url)"
    return (ctx.target.database_url(),
            "the application role's own sessions fully, other roles' without state or query "
            "(no admin_database_url)")


def app_role(ctx: RunContext) -> str | None:
    """The role the FraiseQL server connects as: the user of `database_url`."""
    return postgres.url_user(ctx.target.database_url())


# -- sessions (read with postgres.sessions) ---------------------------------------------------

def _r(value: Any, digits: int = 1) -> Any:
    return round(float(value), digits) if value is not None else None


def _session_row(s: dict[str, Any]) -> dict[str, Any]:
    return {"pid": s["pid"], "user": s["user"], "application": s["application"],
            "client_addr": s["client_addr"], "state": s["state"],
            "idle_s": _r(s["state_s"]), "xact_s": _r(s["xact_s"]), "query_s": _r(s["query_s"]),
            "wait": f"{s['wait_event_type']}:{s['wait_event']}" if s.get("wait_event") else None,
            "query": s["query"]}


# -- step 1: who holds the connections -------------------------------------------------------

@check("pool.connections")
def connections_by_state(ctx: RunContext) -> Finding:
    """pg_stat_activity by state, application_name and client address, against
    max_connections less the superuser-reserved slots (§4.1 "SHOW max_connections")."""
    url, sees = visibility_url(ctx)
    frame = pgstats.connections(url)
    max_conn = int(frame["max_connections"].iloc[0])
    reserved = int(frame["reserved_connections"].iloc[0])
    available = max_conn - reserved
    total = int(frame["connections"].sum())
    share = total / available if available > 0 else 1.0
    by_state = frame.groupby("state")["connections"].sum().astype(int).to_dict()
    by_app = frame.groupby("application")["connections"].sum().astype(int).to_dict()
    role = app_role(ctx)
    ours = frame["application"] == postgres.APPLICATION_NAME
    server = (frame["user"] == role) & ~ours if role is not None else ours & False
    outside = frame[~server & ~ours]
    holders = (outside.groupby(["user", "application", "state"], dropna=False)["connections"]
               .sum().astype(int).sort_values(ascending=False).head(thresholds.TOP_N))
    table = frame.drop(columns=["max_connections", "reserved_connections"]).assign(
        longest_in_state_s=lambda f: f["longest_in_state_s"].clip(lower=0).round(1))
    pivot = frame.pivot_table(index="state", columns="application", values="connections",
                              aggfunc="sum", fill_value=0)
    report.show(plots.bar(pivot, title="Client connections by state and application",
                          xlabel="state", ylabel="connections"))
    evidence = {"connections": total, "max_connections": max_conn, "reserved": reserved,
                "available": available, "share_of_available": round(share, 3),
                "by_state": by_state, "by_application": by_app, "visibility": sees,
                "server_role": role, "server_connections": int(frame.loc[server,
                                                                         "connections"].sum()),
                "own_connections": int(frame.loc[ours, "connections"].sum()),
                "outside_pool": int(outside["connections"].sum()),
                "holders": [{"user": u, "application": a, "state": st, "connections": n}
                            for (u, a, st), n in holders.items()],
                "not_visible": int(frame.loc[frame["state"] == "not visible",
                                             "connections"].sum())}
    summary = (f"{total} client connections of {available} available (max_connections "
               f"{max_conn} less {reserved} reserved): "
               + ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
               + f"; {evidence['server_connections']} the server's (role {role}), "
                 f"{evidence['outside_pool']} held by other clients")
    limit = thresholds.POOL_OF_MAX_CONNECTIONS
    if share >= limit.critical:
        return ctx.result(Status.CRITICAL, summary + " — no slot left",
                          evidence, "new connections are refused: find the holders below",
                          table=table)
    if share >= limit.warning:
        return ctx.result(Status.WARNING,
                          summary + f" — above {limit.warning:.0%} ({limit.source})", evidence,
                          "find the holders below before the slots run out", table=table)
    return ctx.result(Status.OK, summary, evidence, table=table)


# -- step 2: idle in transaction ---------------------------------------------------------------

@check("pool.idle_in_transaction")
def idle_in_transaction(ctx: RunContext,
                        idle_threshold_s: float = thresholds.IDLE_IN_TRANSACTION_S,
                        observe_s: float = thresholds.POOL_OBSERVE_S) -> Finding:
    """Sessions idle inside an open transaction, with their age; read twice `observe_s` apart
    so that an accumulating leak can be told from a stable holder."""
    url, sees = visibility_url(ctx)
    role = app_role(ctx)
    with postgres.connect(url) as conn:
        first = postgres.sessions(conn)
        progress.pause(observe_s, "between the two readings of the sessions")
        second = postgres.sessions(conn)

    def server_idle(found: list[dict[str, Any]]) -> int:
        return sum(1 for s in found
                   if postgres.is_idle_in_transaction(s) and postgres.is_server_session(s, role))

    idle = [s for s in second if postgres.is_idle_in_transaction(s)]
    old = [s for s in idle if (s["state_s"] or 0) > idle_threshold_s]
    old_server = [s for s in old if postgres.is_server_session(s, role)]
    rows = [{**_session_row(s), "over_threshold": s in old} for s in idle]
    table = pd.DataFrame(rows) if rows else None
    evidence = {
        "pids": [s["pid"] for s in old], "server_pids": [s["pid"] for s in old_server],
        "idle_in_transaction": len(idle), "over_threshold": len(old),
        "server_over_threshold": len(old_server), "idle_threshold_s": idle_threshold_s,
        "server_role": role, "server_idle_first": server_idle(first),
        "server_idle_second": len([s for s in idle if postgres.is_server_session(s, role)]),
        "observe_s": observe_s, "oldest_idle_s": _r(max((s["state_s"] or 0 for s in idle),
                                                        default=None)),
        "sessions": rows[:50], "visibility": sees, "not_visible": len(invisible(second)),
    }
    hidden = (f"; {evidence['not_visible']} session(s) of other roles are not visible to "
              f"{postgres.url_user(url)} (their state is hidden)" if evidence["not_visible"]
              else "")
    if not old:
        young = f" ({len(idle)} younger than {idle_threshold_s:g} s)" if idle else ""
        text = (f"no session idle in transaction longer than {idle_threshold_s:g} s"
                f"{young}")
        if hidden:  # what it could not see is not `ok` (issue 11 §3)
            return ctx.result(Status.UNKNOWN, f"{text} among the sessions this role can see"
                              f"{hidden}", evidence, grant_advice(postgres.url_user(url)),
                              table=table)
        return ctx.result(Status.OK, text, evidence, table=table)
    grew = evidence["server_idle_second"] - evidence["server_idle_first"]
    trend = (f"; the server's count went {evidence['server_idle_first']} -> "
             f"{evidence['server_idle_second']} in {observe_s:g} s" if old_server else "")
    return ctx.result(Status.WARNING,
        f"{len(old)} session(s) idle in transaction longer than {idle_threshold_s:g} s "
        f"(oldest {evidence['oldest_idle_s']} s), {len(old_server)} of them the server's own "
        f"(role {role}){trend}; pids {', '.join(map(str, evidence['pids'][:20]))}{hidden}",
        evidence | {"server_growth": grew},
        "they hold connections doing nothing: see the termination step and the diagnosis"
        + (f"; to see every session: {grant_advice(postgres.url_user(url))}" if hidden else ""),
        table=table)


# -- step 3: long-running statements ---------------------------------------------------------

@check("pool.long_running")
def long_running(ctx: RunContext, long_query_s: float = thresholds.LONG_QUERY_S) -> Finding:
    """Statements active for longer than `long_query_s` (they keep a pool connection busy)."""
    url, sees = visibility_url(ctx)
    role = app_role(ctx)
    with postgres.connect(url) as conn:
        found = postgres.sessions(conn)
    slow = sorted((s for s in found if s["state"] == "active"
                   and (s["query_s"] or 0) > long_query_s),
                  key=lambda s: -(s["query_s"] or 0))
    rows = [_session_row(s) for s in slow]
    evidence = {"pids": [s["pid"] for s in slow], "count": len(slow),
                "server_count": sum(1 for s in slow if postgres.is_server_session(s, role)),
                "longest_s": _r(slow[0]["query_s"]) if slow else None,
                "long_query_s": long_query_s, "sessions": rows[:50], "visibility": sees,
                "not_visible": len(invisible(found))}
    if not slow:
        text = f"no statement has run longer than {long_query_s:g} s"
        if evidence["not_visible"]:  # what it could not see is not `ok` (issue 11 §3)
            return ctx.result(Status.UNKNOWN,
                              f"{text} among the sessions this role can see; "
                              f"{evidence['not_visible']} session(s) of other roles are not "
                              f"visible to {postgres.url_user(url)}", evidence,
                              grant_advice(postgres.url_user(url)))
        return ctx.result(Status.OK, text, evidence)
    return ctx.result(Status.WARNING,
                      f"{len(slow)} statement(s) running longer than {long_query_s:g} s "
                      f"(longest {evidence['longest_s']} s, {evidence['server_count']} from "
                      f"the server's role)", evidence,
                      "read them below: EXPLAIN ANALYZE on a copy, pg_cancel_backend(pid) for "
                      "the worst", table=pd.DataFrame(rows))


# -- step 4: the pool's own gauges -------------------------------------------------------------

GAUGES = ("pool_active", "pool_idle", "pool_total", "pool_waiting", "pool_recommended_size")


@check("pool.gauges")
def pool_gauges(ctx: RunContext, readings: int = 3, pause_s: float = 1.0) -> Finding:
    """The server's pool gauges over a few scrapes (worst reading kept), `pool_max` from the
    admin API, and pool_max × instances against max_connections less reserved slots."""
    seen: dict[str, list[float]] = {name: [] for name in GAUGES}
    scrape_error = None
    for i in range(max(1, readings)):
        if i:
            time.sleep(pause_s)
        try:
            page = metrics.scrape(ctx)
        except Exception as exc:  # noqa: BLE001 - recorded; the admin API may still answer
            scrape_error = str(exc)
            break
        for name in GAUGES:
            value = metrics.value(page, name)
            if value is not None:
                seen[name].append(value)
    try:
        admin, admin_error = service.admin_detail(ctx), None
    except Exception as exc:  # noqa: BLE001
        admin, admin_error = {}, secrets.mask(str(exc))
    if not any(seen.values()) and not admin:
        metrics_said = (f"/metrics did not answer ({scrape_error})" if scrape_error else
                        f"/metrics answered without the pool gauges: "
                        f"{metrics.unavailable(*GAUGES)}")
        raise RuntimeError(f"{metrics_said}; the admin API gave no pool figures "
                           f"({admin_error or 'no pool_max in its answer'})")
    worst = {"pool_active": max, "pool_idle": min, "pool_total": max, "pool_waiting": max,
             "pool_recommended_size": max}
    g = {name: (int(worst[name](v)) if v else None) for name, v in seen.items()}
    active = g["pool_active"] if g["pool_active"] is not None else admin.get("pool_active")
    idle = g["pool_idle"] if g["pool_idle"] is not None else admin.get("pool_idle")
    waiting = g["pool_waiting"]
    pool_max = admin.get("pool_max")
    try:
        info, db_error = postgres.server_info(ctx.target.database_url()), None
    except postgres.ConnectionFailed as exc:
        info, db_error = None, str(exc)
    max_conn = info.max_connections if info else None
    reserved = info.reserved_connections if info else None
    available = max_conn - reserved if max_conn is not None and reserved is not None else None
    instances = len(ctx.target.instances)
    evidence = {"pool_active": active, "pool_idle": idle, "pool_total": g["pool_total"],
                "pool_waiting": waiting, "pool_max": pool_max,
                "pool_recommended_size": g["pool_recommended_size"], "readings": len(
                    seen["pool_active"]), "instances": instances,
                "max_connections": max_conn, "reserved_connections": reserved,
                "available": available, "scrape_error": scrape_error,
                "admin_error": admin_error, "database_error": db_error}
    table = pd.DataFrame([
        {"gauge": "active", "value": active, "source": "fraiseql_db_pool_connections_active"},
        {"gauge": "idle", "value": idle, "source": "fraiseql_db_pool_connections_idle"},
        {"gauge": "waiting", "value": waiting, "source": "fraiseql_db_pool_requests_waiting"},
        {"gauge": "pool_max", "value": pool_max, "source": "/admin/v1/health/detailed"},
        {"gauge": "recommended", "value": g["pool_recommended_size"],
         "source": "fraiseql_pool_recommended_size ([pool_tuning])"},
        {"gauge": "max_connections - reserved", "value": available, "source": "PostgreSQL"},
    ])
    parts = [f"pool {active}/{pool_max if pool_max is not None else '?'} active, {idle} idle, "
             f"{waiting if waiting is not None else '?'} waiting"]
    notes = []
    if pool_max is not None and available is not None and pool_max * instances > available:
        notes.append(f"pool_max {pool_max} × {instances} instance(s) = {pool_max * instances} "
                     f"exceeds the {available} connections PostgreSQL allows")
    recommended = g["pool_recommended_size"]
    if recommended is not None:
        parts.append(f"the tuner recommends {recommended}")
    else:
        parts.append("no recommended size exported ([pool_tuning] off)")
    exhausted = (pool_max is not None and active is not None and active >= pool_max
                 and bool(waiting))
    evidence["exhausted"] = exhausted
    summary = "; ".join(parts + notes)
    if exhausted:
        return ctx.result(Status.CRITICAL,
                          f"pool exhausted: {summary}", evidence,
                          "requests wait for a connection and fail at pool_timeout_secs: the "
                          "diagnosis names what holds the connections", table=table)
    share = active / pool_max if pool_max and active is not None else 0.0
    near = share >= thresholds.POOL_OF_MAX_CONNECTIONS.warning
    if waiting or near or notes:
        return ctx.result(Status.WARNING, summary, evidence,
                          "watch pool_active against pool_max; keep pool_max × instances below "
                          "max_connections less reserved", table=table)
    return ctx.result(Status.OK, summary, evidence, table=table)


# -- step 5: terminate sessions idle in transaction (execute=True and confirm=<target>) ------

# Run on the privileged connection; the state and age are checked again at execution, so a
# pid that became active (or was reused) since it was listed is spared.
VICTIMS_SQL = """
SELECT pid, usename AS "user", coalesce(NULLIF(application_name, ''), '(none)') AS application,
       EXTRACT(EPOCH FROM now() - state_change)::float8 AS idle_s
FROM pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND now() - state_change > make_interval(secs => %(idle_s)s)
  AND pid <> pg_backend_pid()
ORDER BY state_change
"""
TERMINATE_SQL = """SELECT pid, pg_terminate_backend(pid) AS terminated
FROM pg_stat_activity
WHERE pid = ANY({pids})
  AND state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND now() - state_change > make_interval(secs => {idle_s})"""
STILL_THERE_SQL = "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%(pids)s)"


def terminate_statement(pids: list[int], idle_threshold_s: float) -> str:
    """The exact statement, values written in, as it is recorded and as a person would run it
    (pids are integers from pg_stat_activity; the threshold is rendered as a float)."""
    array = "ARRAY[" + ", ".join(str(int(p)) for p in pids) + "]::int[]"
    return TERMINATE_SQL.format(pids=array, idle_s=repr(float(idle_threshold_s))) + ";"


def _refusal(ctx: RunContext) -> str:
    if not ctx.execute:
        return "execute=False"
    return (f"confirm is {ctx.confirm!r}, not the target's name {ctx.target_name!r}"
            if ctx.confirm is not None else
            f"confirm is not set (it must be the target's name, {ctx.target_name!r})")


@check("pool.terminate")
def terminate_idle_in_transaction(ctx: RunContext,
                                  idle_threshold_s: float = thresholds.IDLE_IN_TRANSACTION_S
                                  ) -> Finding:
    """`pg_terminate_backend` on sessions idle in transaction longer than `idle_threshold_s`:
    only with execute=True and confirm=<target>, on the privileged connection."""
    url = ctx.target.admin_database_url()
    if url is None:
        listed = ctx.latest("pool.idle_in_transaction")
        pids = list(listed.evidence.get("pids") or []) if listed is not None else []
        evidence: dict[str, Any] = {"pids": pids, "executed": False,
                                    "idle_threshold_s": idle_threshold_s}
        if not pids and listed is not None and listed.status is not Status.UNKNOWN:
            return ctx.result(Status.INFO,
                              "nothing to terminate among the sessions this role can see (no "
                              "admin_database_url: other roles' sessions are not visible, and "
                              "terminating would need it)", evidence)
        if pids:
            statement = terminate_statement(pids, idle_threshold_s)
            ctx.action("terminate_idle_in_transaction", statement, executed=False)
            evidence["sql"] = statement
        return ctx.result(Status.UNKNOWN,
                          "cannot terminate sessions: pg_terminate_backend needs a privileged "
                          "connection and the target has no admin_database_url"
                          + (f"; {len(pids)} session(s) would qualify" if pids else ""),
                          evidence, "add admin_database_url (with admin_database_password_env "
                          "or _file), or run the recorded SQL as a superuser")
    with postgres.connect(url) as conn:  # read-only: listing changes nothing
        victims = postgres.rows(conn, VICTIMS_SQL, {"idle_s": float(idle_threshold_s)})
    pids = [int(v["pid"]) for v in victims]
    table = pd.DataFrame(victims).round({"idle_s": 1}) if victims else None
    evidence = {"pids": pids, "idle_threshold_s": idle_threshold_s, "executed": False,
                "sessions": [{**v, "idle_s": _r(v["idle_s"])} for v in victims]}
    if not pids:
        return ctx.result(Status.INFO,
                          f"nothing to terminate: no session idle in transaction longer than "
                          f"{idle_threshold_s:g} s", evidence)
    statement = terminate_statement(pids, idle_threshold_s)
    evidence["sql"] = statement
    if not ctx.may_execute(dangerous=True):
        why = _refusal(ctx)
        ctx.action("terminate_idle_in_transaction", statement, executed=False)
        return ctx.result(Status.INFO,
                          f"dry run ({why}): would terminate {len(pids)} session(s) idle in "
                          f"transaction, pids {', '.join(map(str, pids[:20]))}",
                          evidence | {"refused_because": why},
                          f"rerun with execute=True and confirm={ctx.target_name!r}, or run "
                          "the recorded SQL as a superuser", table=table)
    print(f"terminating {len(pids)} session(s): {statement}", flush=True)
    # a session that may change things (not read-only), opened only now the run may act
    with postgres.connect(url, read_only=False) as conn:
        done = postgres.rows(conn, TERMINATE_SQL.format(pids="%(pids)s",
                                                        idle_s="%(idle_s)s"),
                             {"pids": pids, "idle_s": float(idle_threshold_s)})
        terminated = sorted(int(r["pid"]) for r in done if r["terminated"])
        deadline = time.monotonic() + VERIFY_GONE_S
        still = pids
        while still and time.monotonic() < deadline:
            still = [int(r["pid"]) for r in postgres.rows(conn, STILL_THERE_SQL,
                                                          {"pids": terminated})]
            if still:
                time.sleep(0.2)
    spared = sorted(set(pids) - set(terminated))
    result = {"terminated": terminated, "spared": spared, "still_present": still}
    ctx.action("terminate_idle_in_transaction", statement, executed=True, result=result)
    after = pool_after(ctx)
    evidence.update({"executed": True, **result, **after})
    if still:
        return ctx.result(Status.WARNING,
                          f"terminated {len(terminated)} session(s) but {len(still)} are still "
                          f"listed after {VERIFY_GONE_S:g} s: {still}", evidence,
                          "check them again; a backend stuck in I/O ends when the I/O does",
                          table=table)
    extra = f"; spared {spared} (no longer idle in transaction)" if spared else ""
    done_text = (f"terminated {len(terminated)} session(s) idle in transaction: "
                 f"{', '.join(map(str, terminated[:20]))}; they are gone{extra}")
    active, pool_max = after.get("pool_active_after"), after.get("pool_max_after")
    if active is not None and pool_max is not None and active >= pool_max:
        return ctx.result(Status.WARNING,
                          f"{done_text}; but the server's pool still counts {active} of "
                          f"{pool_max} in use: it has not noticed (a leaked connection is never "
                          "returned, so the pool cannot replace it)", evidence,
                          "restart the server (its restart_command) to get the pool back; "
                          "PostgreSQL's slots are free already", table=table)
    return ctx.result(Status.OK, done_text, evidence,
                      "watch pool_active fall; the cause still needs its fix (see the "
                      "diagnosis)", table=table)


def pool_after(ctx: RunContext, wait_s: float = 2.0) -> dict[str, Any]:
    """The pool as the server reports it `wait_s` after a termination: did it notice?"""
    progress.pause(wait_s, "for the pool to notice the termination")
    try:
        detail = service.admin_detail(ctx)
    except Exception as exc:  # noqa: BLE001 - the termination stands either way
        return {"pool_after_error": secrets.mask(str(exc))}
    return {"pool_active_after": detail.get("pool_active"),
            "pool_max_after": detail.get("pool_max")}


# -- the diagnosis -----------------------------------------------------------------------------

def _usable(found: Finding | None) -> bool:
    """Did the step read the sessions (all of them, or those this role may see)?"""
    return found is not None and (found.status is not Status.UNKNOWN
                                  or "not_visible" in found.evidence)


def hidden_sessions(ctx: RunContext) -> int:
    """How many sessions the session steps could not see (0 with a full view)."""
    found = [ctx.latest(name) for name in ("pool.idle_in_transaction", "pool.long_running")]
    return max((f.evidence.get("not_visible") or 0 for f in found if f is not None), default=0)


def unreadable(ctx: RunContext) -> str | None:
    """Why the sessions could not be judged (neither session step ran), or None."""
    found = [ctx.latest(name) for name in ("pool.idle_in_transaction", "pool.long_running")]
    usable = [f for f in found if _usable(f)]
    if usable:
        return None
    failed = [f.summary for f in found if f is not None]
    return failed[0] if failed else "the session steps did not run"


def candidates(ctx: RunContext) -> list[Candidate]:
    """The vocabulary's causes the recorded steps support (rules in the module docstring)."""
    iit = ctx.latest("pool.idle_in_transaction")
    slow = ctx.latest("pool.long_running")
    gauges = ctx.latest("pool.gauges")
    iev = iit.evidence if _usable(iit) else None
    sev = slow.evidence if _usable(slow) else None
    gev = gauges.evidence if gauges is not None and gauges.status is not Status.UNKNOWN else {}
    why = unreadable(ctx)
    if why is not None:
        return [Candidate("none", 0.5, "pg_stat_activity could not be read, so no cause can "
                          f"be confirmed or ruled out: {why}", {})]
    active, pool_max = gev.get("pool_active"), gev.get("pool_max")
    waiting = gev.get("pool_waiting")
    full = active is not None and pool_max is not None and active >= pool_max
    out: list[Candidate] = outside_pool(ctx)
    old = iev.get("over_threshold", 0) if iev else 0
    server_old = iev.get("server_over_threshold", 0) if iev else 0
    server_any = iev.get("server_idle_second", 0) if iev else 0
    if server_any and not server_old and pool_max is not None and server_any >= pool_max \
            and active is not None and active >= server_any:
        # a pool full of its own idle transactions is a leak at any age: nothing else can
        # run, so waiting for them to age past the threshold only prolongs the outage
        out.append(Candidate(
            "connection_leak", 0.9,
            f"all {server_any} of the server's pool connections (pool_max {pool_max}, "
            f"{active} counted active) sit idle in transaction, though younger than "
            f"{iev['idle_threshold_s']:g} s: the pool is full of transactions nobody finishes",
            {"count": server_any, "first": iev["server_idle_first"],
             "second": server_any, "pool_active": active, "pool_max": pool_max,
             "pool_waiting": waiting}))
    if server_old:
        grew = iev["server_idle_second"] > iev["server_idle_first"]
        fills = pool_max is not None and server_old >= pool_max
        counted = None if active is None else active >= server_old
        ev = {"server_pids": iev.get("server_pids"), "count": server_old,
              "first": iev["server_idle_first"], "second": iev["server_idle_second"],
              "pool_active": active, "pool_max": pool_max, "pool_waiting": waiting}
        if (grew or fills) and counted is not False:
            how = (f"grew {iev['server_idle_first']} -> {iev['server_idle_second']} in "
                   f"{iev['observe_s']:g} s" if grew else f"fill the pool ({server_old} >= "
                   f"pool_max {pool_max})")
            score = 0.9 if counted else 0.65
            out.append(Candidate(
                "connection_leak", score,
                f"{server_old} of the server's own sessions (role {iev['server_role']}) sit idle "
                f"in transaction longer than {iev['idle_threshold_s']:g} s and {how}"
                + (f"; the pool counts {active} active of {pool_max}" if counted else
                   "; pool gauges unavailable to confirm they are checked out"), ev))
        else:
            why = ("stable below the pool size" if counted is not False else
                   f"the pool counts only {active} active, so they are not its connections")
            out.append(Candidate("idle_in_transaction", 0.8,
                                 f"{server_old} of the server's sessions idle in transaction "
                                 f"longer than {iev['idle_threshold_s']:g} s, {why}", ev))
    others = old - server_old
    if others:
        out.append(Candidate("idle_in_transaction", 0.85 if not server_old else 0.7,
                             f"{others} session(s) of other clients idle in transaction longer "
                             f"than {iev['idle_threshold_s']:g} s",
                             {"pids": [p for p in iev.get("pids", [])
                                       if p not in (iev.get("server_pids") or [])]}))
    if sev and sev.get("count"):
        score = 0.85 if full or waiting else 0.6
        out.append(Candidate("long_running_queries", score,
                             f"{sev['count']} statement(s) running longer than "
                             f"{sev['long_query_s']:g} s (longest {sev['longest_s']} s)",
                             {"pids": sev.get("pids"), "longest_s": sev.get("longest_s")}))
    if waiting and full:
        leaked = bool(server_any and pool_max is not None and server_any >= pool_max)
        explained = bool(old or leaked or (sev and sev.get("count")))
        out.append(Candidate("pool_too_small", 0.3 if explained else 0.8,
                             f"{waiting} request(s) wait with all {pool_max} pool connections "
                             "in use" + ("; the sessions above explain it first" if explained
                                         else " doing real work (none idle in transaction, no "
                                              "long statement)"),
                             {"pool_active": active, "pool_max": pool_max,
                              "pool_waiting": waiting,
                              "recommended": gev.get("pool_recommended_size")}))
    hidden = hidden_sessions(ctx)
    if hidden and not any(c.score >= VOCABULARY.threshold for c in out):
        out.append(Candidate("none", VOCABULARY.threshold,
                             f"nothing found among the sessions this role can see, but {hidden} "
                             "session(s) of other roles are not visible: no cause can be ruled "
                             f"out ({grant_advice((iev or {}).get('server_role'))})",
                             {"not_visible": hidden}))
    return out


def outside_pool(ctx: RunContext) -> list[Candidate]:
    """`connections_outside_pool`: the slots are (nearly) used up and without the other
    clients' connections they would not be: the server's pool is not what fills them."""
    conns = ctx.latest("pool.connections")
    if conns is None or conns.status not in (Status.WARNING, Status.CRITICAL):
        return []
    ev = conns.evidence
    available, outside = ev.get("available") or 0, ev.get("outside_pool") or 0
    rest = (ev.get("connections", 0) - outside) / available if available > 0 else 1.0
    if not outside or rest >= thresholds.POOL_OF_MAX_CONNECTIONS.warning:
        return []
    top = ", ".join(f"{h['connections']} {h['user']}/{h['application']} ({h['state']})"
                    for h in (ev.get("holders") or [])[:3])
    score = 0.9 if conns.status is Status.CRITICAL else 0.75
    return [Candidate("connections_outside_pool", score,
                      f"{outside} of the {ev.get('connections')} connections "
                      f"({available} available) belong to clients other than the server "
                      f"(role {ev.get('server_role')}), which holds "
                      f"{ev.get('server_connections')}: {top}",
                      {"outside_pool": outside, "available": available,
                       "server_connections": ev.get("server_connections"),
                       "holders": ev.get("holders")})]


def verdict_status(ctx: RunContext) -> Status | None:
    """The diagnosis' status, for `diagnosis.conclude(..., status=...)`: unknown when
    pg_stat_activity could not be read; for a cause, critical while requests wait or the pool
    is exhausted and a warning otherwise; None (the default, ok) for `none`."""
    if unreadable(ctx) is not None:
        return Status.UNKNOWN
    top = max(candidates(ctx), key=lambda c: c.score, default=None)
    if top is None or top.score < VOCABULARY.threshold or top.code == "none":
        # a partial view that found nothing has not seen everything: never `ok`
        return Status.UNKNOWN if hidden_sessions(ctx) else None
    gauges = ctx.latest("pool.gauges")
    gev = gauges.evidence if gauges is not None else {}
    conns = ctx.latest("pool.connections")
    no_slot = conns is not None and conns.status is Status.CRITICAL
    pressing = bool(gev.get("exhausted") or gev.get("pool_waiting") or no_slot)
    return Status.CRITICAL if pressing else Status.WARNING
