"""fraiseql_rb.checks.audit against real PostgreSQL: known events at exact timestamps, counted
in the one vocabulary from the runbook's table, the v2 `audit_log` table and JSON-lines files; the
half-open window edges, an empty window, the preceding and same-hours baselines, and the
missing-index warning with its exact statement (which, run, makes the warning go away)."""

from __future__ import annotations

import gzip
import json
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from fraiseql_rb.checks import audit
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status
from fraiseql_rb.sandbox.cluster import APP_DB, APP_USER

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday noon; the window is [T0, T0 + 3h)
END = T0 + timedelta(hours=3)
US = timedelta(microseconds=1)
M = timedelta(minutes=1)
D = timedelta(days=1)

# (timestamp, event_type, user_id, ip, reason) in the runbook's table.
RUNBOOK_EVENTS = [
    (T0 - US, "authentication_failed", "alice", "203.0.113.9", "invalid_password"),  # before
    (T0, "authentication_failed", "alice", "203.0.113.1", "invalid_password"),  # first in
    (T0 + 5 * M, "authentication_failed", "bob", "203.0.113.1", "invalid_password"),
    (T0 + 65 * M, "authentication_failed", "carol", "203.0.113.1", "unknown_user"),
    (T0 + 66 * M, "authentication_failed", "alice", "203.0.113.2", "invalid_password"),
    (T0 + 130 * M, "authentication_failed", None, "203.0.113.2", "expired_token"),
    (END - US, "sql_injection_attempt", None, "198.51.100.7", None),  # last in
    (END, "authentication_failed", "alice", "203.0.113.1", "invalid_password"),  # after
    (T0 + 20 * M, "csrf_failure", None, "198.51.100.8", "state_mismatch"),
    (T0 + 150 * M, "csrf_failure", "bob", "198.51.100.8", "state_expired"),
    (T0 + 1 * M, "authentication_succeeded", "alice", "203.0.113.1", None),  # benign
    (T0 + 2 * M, "query_executed", "alice", "203.0.113.1", None),
    # history for the baselines: the same hours on earlier days ...
    (T0 - D + 10 * M, "authentication_failed", "dave", "192.0.2.1", "invalid_password"),
    *[(T0 - 2 * D + 10 * M + i * US, "authentication_failed", "dave", "192.0.2.1",
       "invalid_password") for i in range(3)],
    (T0 - 2 * D + 70 * M, "csrf_failure", None, "192.0.2.2", "state_mismatch"),
    # ... and just outside the same-hours windows (day 1 ends at END - 1 day, excluded)
    (END - D, "authentication_failed", "dave", "192.0.2.1", "invalid_password"),
]


def _ctx(target_raw: dict) -> RunContext:
    return RunContext.adhoc("audit-test", target=inventory.Target("t", target_raw,
                                                                  base_dir=Path("/")))


@pytest.fixture
def audit_cluster(make_cluster, pg_passwords):
    """A provisioned cluster with an empty audit table, and a context reading it."""
    cluster = make_cluster(provision=True, audit_events=0)
    url = cluster.dsn(APP_USER, pg_passwords.app)
    return cluster, {"fraiseql_url": "http://127.0.0.1:9", "database_url": url}


def _insert_runbook(cluster, events) -> None:
    with cluster.connect(APP_DB) as conn:
        for ts, event_type, user, ip, reason in events:
            conn.execute(
                'INSERT INTO fraiseql_audit_logs ("timestamp", event_type, user_id, '
                "ip_address, details) VALUES (%s, %s, %s, %s, %s)",
                (ts, event_type, user, ip, json.dumps({"reason": reason} if reason else {})))


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    return dict(zip(frame["kind"], frame["count"], strict=True))


def test_runbook_table_counts_windows_baselines_and_index(audit_cluster):
    cluster, raw = audit_cluster
    _insert_runbook(cluster, RUNBOOK_EVENTS)
    ctx = _ctx(raw)

    # exact counts per kind; [T0, END) keeps T0 and END - 1 µs, drops T0 - 1 µs and END
    counts = audit.counts(ctx, T0, END)
    assert list(counts["kind"]) == list(audit.KINDS)
    assert _counts(counts) == {"auth_failure": 5, "sql_injection": 1, "csrf_failure": 2,
                               "rate_limited": 0, "authorization_denied": 0}
    assert _counts(audit.counts(ctx, T0 + US, END))["auth_failure"] == 4
    assert _counts(audit.counts(ctx, T0, END + US))["auth_failure"] == 6
    assert _counts(audit.counts(ctx, T0, END - US))["sql_injection"] == 0
    only = audit.counts(ctx, T0, END, kinds=["csrf_failure"])
    assert only.to_dict("records") == [{"kind": "csrf_failure", "count": 2}]

    # an empty window is zeros, never an error; so is a window of no length
    empty = audit.counts(ctx, T0 + 10 * D, T0 + 10 * D + timedelta(hours=1))
    assert empty["count"].tolist() == [0] * len(audit.KINDS)
    assert audit.counts(ctx, T0, T0)["count"].sum() == 0
    assert audit.top(ctx, T0 + 10 * D, T0 + 11 * D, "auth_failure").empty
    quiet = audit.hourly(ctx, T0 + 10 * D, T0 + 10 * D + timedelta(hours=2), ["auth_failure"])
    assert quiet["count"].tolist() == [0, 0]
    assert audit.hourly(ctx, T0, T0).empty

    # hour buckets start at `start`, every hour and kind present
    hourly = audit.hourly(ctx, T0, END, ["auth_failure", "sql_injection", "rate_limited"])
    assert len(hourly) == 9
    assert hourly["hour"].iloc[0] == pd.Timestamp(T0)
    pivot = hourly.pivot(index="hour", columns="kind", values="count")
    assert pivot["auth_failure"].tolist() == [2, 2, 1]
    assert pivot["sql_injection"].tolist() == [0, 0, 1]
    assert pivot["rate_limited"].tolist() == [0, 0, 0]
    shifted = audit.hourly(ctx, T0 + 30 * M, END, ["auth_failure"])  # the last one partial
    assert shifted["count"].tolist() == [2, 1, 0]

    # top sources, largest first, ties by value, None last
    by_ip = audit.top(ctx, T0, END, "auth_failure", by="ip")
    assert by_ip[["ip", "count", "users"]].to_dict("records") == [
        {"ip": "203.0.113.1", "count": 3, "users": 3},
        {"ip": "203.0.113.2", "count": 2, "users": 1}]
    assert by_ip["first_seen"].iloc[0] == pd.Timestamp(T0)
    assert by_ip["last_seen"].iloc[0] == pd.Timestamp(T0 + 65 * M)
    by_user = audit.top(ctx, T0, END, "auth_failure", by="user")
    assert by_user[["user", "count", "ips"]].to_dict("records") == [
        {"user": "alice", "count": 2, "ips": 2}, {"user": "bob", "count": 1, "ips": 1},
        {"user": "carol", "count": 1, "ips": 1}, {"user": None, "count": 1, "ips": 1}]
    assert audit.top(ctx, T0, END, "auth_failure", by="user", limit=1)["user"].tolist() == [
        "alice"]
    by_reason = audit.top(ctx, T0, END, "auth_failure", by="reason")
    assert dict(zip(by_reason["reason"], by_reason["count"], strict=True)) == {
        "invalid_password": 3, "unknown_user": 1, "expired_token": 1}
    assert by_reason["reason"].tolist()[0] == "invalid_password"

    # the same hours on each of 3 earlier days: auth 1, 3, 0; csrf 0, 1, 0
    base = audit.baseline(ctx, T0, END, ["auth_failure", "csrf_failure", "sql_injection"],
                          windows=3, step=D).set_index("kind")
    assert base.loc["auth_failure", "windows"] == 3
    assert base.loc["auth_failure", "mean"] == pytest.approx(4 / 3)
    assert base.loc["auth_failure", "stddev"] == pytest.approx(statistics.stdev([1, 3, 0]))
    assert (base.loc["auth_failure", "min"], base.loc["auth_failure", "max"]) == (0, 3)
    assert base.loc["auth_failure", "total"] == 4
    assert base.loc["csrf_failure", "mean"] == pytest.approx(1 / 3)
    assert base.loc["sql_injection", "mean"] == 0 and base.loc["sql_injection", "stddev"] == 0
    # back-to-back windows before [T0, END): only T0 - 1 µs, in the first
    preceding = audit.baseline(ctx, T0, END, ["auth_failure"], windows=2).iloc[0]
    assert (preceding["min"], preceding["max"], preceding["mean"]) == (0, 1, 0.5)

    # per hour of the window, the same hour on earlier days
    hb = audit.hourly_baseline(ctx, T0, END, ["auth_failure"], days=3)
    assert hb["hour"].tolist() == [pd.Timestamp(T0 + timedelta(hours=h)) for h in range(3)]
    assert hb["mean"].tolist() == pytest.approx([4 / 3, 0, 0])
    assert hb["stddev"].iloc[0] == pytest.approx(statistics.stdev([1, 3, 0]))

    # the index the queries need is there (schema.sql makes it) ...
    assert audit.index_check(ctx).status is Status.OK
    # ... and when it is not, the warning carries the exact statement, which works
    with cluster.connect(APP_DB) as conn:
        conn.execute("DROP INDEX ix_fraiseql_audit_logs_event_type_timestamp")
    missing = audit.index_check(ctx)
    statement = ('CREATE INDEX CONCURRENTLY ix_fraiseql_audit_logs_event_type_timestamp '
                 'ON fraiseql_audit_logs (event_type, "timestamp");')
    assert missing.status is Status.WARNING
    assert missing.evidence["statement"] == statement
    assert statement in missing.remediation
    assert _counts(audit.counts(ctx, T0, END))["auth_failure"] == 5  # slower, still right
    with cluster.connect(APP_DB) as conn:
        conn.execute(statement)
    assert audit.index_check(ctx).status is Status.OK

    source = audit.check_source(ctx)
    assert [f.check for f in source] == ["audit.source"]
    assert source[0].status is Status.OK


def test_sessions_are_read_only(audit_cluster):
    _, raw = audit_cluster
    with audit.connect(_ctx(raw)) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    assert row["default_transaction_read_only"] == "on"


V2_DDL = """
CREATE TABLE audit_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "timestamp" timestamptz NOT NULL,
    event_type text NOT NULL,
    user_id uuid,
    username text,
    ip_address inet,
    resource_type text,
    resource_id text,
    action text,
    before_state jsonb,
    after_state jsonb,
    status text NOT NULL CHECK (status IN ('success', 'failure', 'denied')),
    error_message text,
    tenant_id uuid,
    metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON audit_log TO fraiseql_user;
"""
# (timestamp, event_type, username, ip, status, error_message)
V2_EVENTS = [
    (T0 + 1 * M, "auth_failure", "mallory", "192.0.2.10", "failure", "invalid credentials"),
    (T0 + 2 * M, "jwt_validation", "mallory", "192.0.2.10", "failure", "invalid signature"),
    (T0 + 3 * M, "jwt_validation", "alice", "192.0.2.20", "success", None),
    (T0 + 4 * M, "csrf_state_validated", None, "192.0.2.30", "failure", "state mismatch"),
    (T0 + 5 * M, "csrf_state_validated", "alice", "192.0.2.20", "success", None),
    (T0 + 6 * M, "authorization_denied", "eve", "192.0.2.40", "denied", "missing scope"),
    (T0 + 7 * M, "auth_success", "alice", "192.0.2.20", "success", None),
    (T0 + 61 * M, "auth_failure", "trent", "192.0.2.11", "failure", "invalid credentials"),
    (END, "auth_failure", "mallory", "192.0.2.10", "failure", "invalid credentials"),
]
V2_EXPECTED = {"auth_failure": 3, "sql_injection": 0, "csrf_failure": 1, "rate_limited": 0,
               "authorization_denied": 1}


def test_v2_audit_log_table_maps_to_the_same_vocabulary(audit_cluster):
    cluster, raw = audit_cluster
    ctx = _ctx({**raw, "audit_source": "v2_table"})
    # before the table exists: the source check says so, counting cannot run
    assert audit.check_source(ctx)[0].status is Status.CRITICAL
    assert audit.index_check(ctx).status is Status.UNKNOWN
    with cluster.connect(APP_DB) as conn:
        conn.execute(V2_DDL)
        for ts, event_type, user, ip, status, error in V2_EVENTS:
            conn.execute('INSERT INTO audit_log ("timestamp", event_type, username, '
                         "ip_address, status, error_message) VALUES (%s, %s, %s, %s, %s, %s)",
                         (ts, event_type, user, ip, status, error))
    assert _counts(audit.counts(ctx, T0, END)) == V2_EXPECTED
    pivot = audit.hourly(ctx, T0, END, ["auth_failure"])
    assert pivot["count"].tolist() == [2, 1, 0]
    by_ip = audit.top(ctx, T0, END, "auth_failure", by="ip")
    assert by_ip[["ip", "count"]].to_dict("records") == [
        {"ip": "192.0.2.10", "count": 2}, {"ip": "192.0.2.11", "count": 1}]
    assert audit.top(ctx, T0, END, "auth_failure", by="user")["user"].tolist() == [
        "mallory", "trent"]
    assert audit.top(ctx, T0, END, "csrf_failure", by="reason")["reason"].tolist() == [
        "state mismatch"]

    findings = audit.check_source(ctx)
    by_check = {f.check: f for f in findings}
    assert by_check["audit.source"].status is Status.OK
    note = by_check["audit.coverage.sql_injection"]
    assert note.status is Status.INFO
    assert "no SQL-injection event" in note.summary
    assert by_check["audit.coverage.rate_limited"].status is Status.INFO

    missing = audit.index_check(ctx)
    assert missing.status is Status.WARNING
    assert missing.evidence["statement"] == (
        'CREATE INDEX CONCURRENTLY ix_audit_log_event_type_timestamp '
        'ON audit_log (event_type, "timestamp");')


def _tracing_line(ts: datetime, event_type: str, subject: str | None, ok: bool,
                  error: str | None = None, **extra) -> str:
    """A line as StructuredAuditLogger writes it through tracing's JSON formatter."""
    fields = {"message": f"Security event: {'successful' if ok else 'failed'} operation",
              "event_type": event_type, "secret_type": "jwt_token",
              "subject": f'Some("{subject}")' if subject else "None",
              "operation": "validate", "context": "None", **extra}
    if not ok:
        fields["error"] = f'Some("{error or "failed"}")'
    return json.dumps({"timestamp": ts.isoformat().replace("+00:00", "Z"),
                       "level": "INFO" if ok else "WARN", "fields": fields,
                       "target": "fraiseql_server::auth::audit_logger"})


def test_jsonl_files_are_streamed_into_the_same_vocabulary(tmp_path):
    old = [
        _tracing_line(T0 - US, "auth_failure", "mallory", False, ip="192.0.2.10"),
        _tracing_line(T0, "auth_failure", "mallory", False, "invalid credentials",
                      ip="192.0.2.10"),
        _tracing_line(T0 - D + 10 * M, "auth_failure", "mallory", False, ip="192.0.2.10"),
    ]
    current = [
        _tracing_line(T0 + 2 * M, "jwt_validation", "mallory", False, "invalid signature",
                      ip="192.0.2.10:51234"),
        _tracing_line(T0 + 3 * M, "jwt_validation", "alice", True, ip="192.0.2.20"),
        # the serialised AuditEntry shape: outcome in `success`
        json.dumps({"timestamp": (T0 + 4 * M).isoformat(), "event_type":
                    "csrf_state_validated", "secret_type": "state_token", "subject": None,
                    "operation": "validate", "success": False, "error_message": "mismatch",
                    "ip_address": "192.0.2.30"}),
        json.dumps({"timestamp": (T0 + 5 * M).isoformat(), "event_type":
                    "csrf_state_validated", "success": True}),
        _tracing_line(T0 + 6 * M, "authorization_denied", "eve", False, ip="192.0.2.40"),
        _tracing_line(T0 + 7 * M, "auth_success", "alice", True),
        "not json at all",
        '{"event_type": "auth_failure"}',  # no timestamp: skipped
        _tracing_line(T0 + 61 * M, "auth_failure", "trent", False, ip="192.0.2.11"),
        _tracing_line(END, "auth_failure", "mallory", False, ip="192.0.2.10"),
    ]
    with gzip.open(tmp_path / "audit.1.jsonl.gz", "wt") as handle:
        handle.write("\n".join(old) + "\n")
    (tmp_path / "audit.jsonl").write_text("\n".join(current) + "\n")
    ctx = _ctx({"fraiseql_url": "http://127.0.0.1:9",
                "audit_source": f"jsonl:{tmp_path}/audit*.jsonl*"})

    assert _counts(audit.counts(ctx, T0, END)) == V2_EXPECTED
    assert audit.hourly(ctx, T0, END, ["auth_failure"])["count"].tolist() == [2, 1, 0]
    by_ip = audit.top(ctx, T0, END, "auth_failure", by="ip")
    assert by_ip[["ip", "count", "users"]].to_dict("records") == [
        {"ip": "192.0.2.10", "count": 2, "users": 1}, {"ip": "192.0.2.11", "count": 1,
                                                       "users": 1}]
    assert audit.top(ctx, T0, END, "auth_failure", by="user")["user"].tolist() == [
        "mallory", "trent"]
    reasons = audit.top(ctx, T0, END, "auth_failure", by="reason")
    assert dict(zip(reasons["reason"], reasons["count"], strict=True)) == {
        "failed": 1, "invalid credentials": 1, "invalid signature": 1}
    base = audit.baseline(ctx, T0, END, ["auth_failure"], windows=2, step=D).iloc[0]
    assert (base["min"], base["max"], base["mean"]) == (0, 1, 0.5)
    preceding = audit.baseline(ctx, T0, END, ["auth_failure"], windows=1).iloc[0]
    assert preceding["total"] == 1  # T0 - 1 µs
    hb = audit.hourly_baseline(ctx, T0, END, ["auth_failure"], days=2)
    assert hb["mean"].tolist() == pytest.approx([0.5, 0, 0])
    assert audit.counts(ctx, T0 + 10 * D, T0 + 11 * D)["count"].sum() == 0

    findings = {f.check: f for f in audit.check_source(ctx)}
    assert findings["audit.source"].evidence["file_count"] == 2
    assert findings["audit.coverage.sql_injection"].status is Status.INFO
    assert audit.index_check(ctx).status is Status.INFO

    nothing = _ctx({"fraiseql_url": "http://x", "audit_source": f"jsonl:{tmp_path}/none*"})
    assert audit.check_source(nothing)[0].status is Status.CRITICAL


def test_source_parsing_and_bad_input():
    assert audit.parse_source(None) == audit.Source("table", table="fraiseql_audit_logs")
    assert audit.parse_source("v2_table").table == "audit_log"
    assert audit.parse_source("table:audit.Events").table == "audit.Events"
    assert audit.create_index_statement(audit.parse_source("table:audit.Events")) == (
        'CREATE INDEX CONCURRENTLY "ix_Events_event_type_timestamp" ON audit."Events" '
        '(event_type, "timestamp");')
    assert audit.parse_source("jsonl:logs/a.jsonl", Path("/srv")).pattern == "/srv/logs/a.jsonl"
    for bad in ("syslog", "jsonl:", "table:x; DROP TABLE y"):
        with pytest.raises(audit.AuditSourceError):
            audit.parse_source(bad)
    ctx = _ctx({"fraiseql_url": "http://x"})
    with pytest.raises(ValueError, match="vocabulary"):
        audit.counts(ctx, T0, END, kinds=["logins"])
    with pytest.raises(ValueError, match="timezone"):
        audit.counts(ctx, T0.replace(tzinfo=None), END)
    with pytest.raises(ValueError, match="by must be"):
        audit.top(ctx, T0, END, "auth_failure", by="country")
