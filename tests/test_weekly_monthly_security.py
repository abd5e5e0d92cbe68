"""Weekly and monthly security reviews (runbook §8.1), and the csrf-attack / sqli-attack drills.

First against a dedicated cluster holding known events at exact timestamps (exact counts:
rate limiting by user against the previous week, day buckets, the month's totals, the access
review with its working-hours split, the addresses first seen in the month, a month without
data, and the PDF's text); then through the CLI on the session sandbox: each attack fault makes
the daily review exit 2 naming its addresses (and healing brings back exit 0), the weekly
review reports both certificates and draws its trend, the monthly report writes a PDF whose
text holds the month's totals as a superuser counts them, a month without data still renders,
and a malformed month stops the run with one clear line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pypdf
import pytest

from fraiseql_rb.checks import audit
from fraiseql_rb.core import inventory, timespec
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.errors import UsageError
from fraiseql_rb.core.findings import Status
from fraiseql_rb.sandbox import faults, manager
from fraiseql_rb.sandbox.cluster import APP_DB, APP_USER
from fraiseql_rb.security import compliance, monthly_security_report, weekly_security_review

drill = pytest.mark.drill
US = timedelta(microseconds=1)

# ---- known events --------------------------------------------------------------------------

WEEK_END = datetime(2025, 12, 10, 6, 0, tzinfo=UTC)
WEEK_START = WEEK_END - timedelta(days=7)  # Dec 3 06:00; the previous week from Nov 26 06:00


def _at(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 2,
        year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _dec(day: int, hour: int, second: int = 0, month: int = 12) -> datetime:
    return _at(day, hour, 0, second, month=month, year=2025)


# (timestamp, event_type, user_id, ip): December 2025, apart from the month below
WEEK_EVENTS = [
    # user-a: 10 the previous week, 60 this week from two addresses
    *[(_dec(27, 10, i, month=11), "rate_limit_exceeded", "user-a", "198.51.100.20")
      for i in range(10)],
    *[(_dec(4, 10, i), "rate_limit_exceeded", "user-a",
       "198.51.100.20" if i % 2 else "198.51.100.21") for i in range(60)],
    # user-b: 5 and 5, plus one exactly at the week's start (this week)
    *[(_dec(28, 12, i, month=11), "rate_limit_exceeded", "user-b", "198.51.100.22")
      for i in range(5)],
    *[(_dec(9, 12, i), "rate_limit_exceeded", "user-b", "198.51.100.22") for i in range(5)],
    (WEEK_START, "rate_limit_exceeded", "user-b", "198.51.100.22"),
    # user-c: only the previous week; one a microsecond before it (in neither)
    *[(_dec(2, 12, i), "rate_limit_exceeded", "user-c", "198.51.100.23") for i in range(7)],
    (WEEK_START - timedelta(days=7) - US, "rate_limit_exceeded", "user-c", "198.51.100.23"),
    # keyed by address only, the last second of the week; and one at its end (excluded)
    *[(WEEK_END - timedelta(seconds=1), "rate_limit_exceeded", None, "192.0.2.3")] * 3,
    (WEEK_END, "rate_limit_exceeded", "user-a", "198.51.100.20"),
]

MONTH = "2026-02"  # Feb 1 is a Sunday; Feb 2 a Monday
MONTH_EVENTS = [
    # January: 192.0.2.1 is known before the month; 192.0.2.9 only then
    (_at(15, 10, month=1), "query_executed", "u1", "192.0.2.1"),
    (datetime(2026, 2, 1, tzinfo=UTC) - US, "authentication_failed", "u1", "192.0.2.1"),
    (_at(20, 10, month=1), "query_executed", "u9", "192.0.2.9"),
    # February
    *[(_at(2, 10, i), "query_executed", "u1", "192.0.2.1") for i in range(4)],  # Mon, work
    (_at(1, 0), "authentication_failed", "u2", "198.51.100.7"),  # Sunday, first instant
    *[(_at(7, 11, i), "authentication_failed", "u2", "198.51.100.7") for i in range(2)],  # Sat
    *[(_at(3, 20, i), "rate_limit_exceeded", "u2", "198.51.100.7") for i in range(3)],  # 20:00
    (_at(4, 9), "csrf_failure", None, "203.0.113.9"),  # Wednesday, working
    (_at(5, 17, 59, 59), "sql_injection_attempt", None, "203.0.113.9"),  # Thu, last work sec
    (_at(5, 18), "sql_injection_attempt", "u1", "203.0.113.9"),  # Thursday 18:00: outside
    (_at(27, 7, 59), "authentication_succeeded", "u1", "192.0.2.1"),  # Friday, before 08:00
    (datetime(2026, 3, 1, tzinfo=UTC) - US, "query_executed", "u3", "192.0.2.50"),  # last
    (datetime(2026, 3, 1, tzinfo=UTC), "query_executed", "u1", "192.0.2.77"),  # after
]
MONTH_TOTALS = {"auth_failure": 3, "sql_injection": 2, "csrf_failure": 1, "rate_limited": 3,
                "authorization_denied": 0}
MONTH_ALL = 15


@pytest.fixture
def known_db(make_cluster, pg_passwords, tmp_path):
    cluster = make_cluster(provision=True, audit_events=0)
    with cluster.connect(APP_DB) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO fraiseql_audit_logs ("timestamp", event_type, user_id, '
                        "ip_address) VALUES (%s, %s, %s, %s)", WEEK_EVENTS + MONTH_EVENTS)
    raw = {"fraiseql_url": "http://127.0.0.1:9",
           "database_url": cluster.dsn(APP_USER, pg_passwords.app)}

    def context(findings: Path | None = None) -> RunContext:
        return RunContext.adhoc("security-test", target=inventory.Target("t", raw),
                                findings_path=findings)

    return context


def _by_check(ctx: RunContext) -> dict[str, object]:
    return {f.check: f for f in ctx.log.findings}


# ---- weekly, exact ---------------------------------------------------------------------------

def test_rate_limited_by_user_against_the_previous_week(known_db):
    ctx = known_db()
    table, totals = weekly_security_review.rate_limited_by_user(ctx, WEEK_START, WEEK_END,
                                                                limit=3)
    assert totals == {"this_week": 69, "previous_week": 22, "users": 2, "previous_users": 3,
                      "without_user": 3}
    rows = table.to_dict("records")
    assert [(r["user"], r["this week"], r["previous week"], r["change"], r["ips"])
            for r in rows] == [("user-a", 60, 10, 50, 2), ("user-b", 6, 5, 1, 1),
                               (None, 3, 0, 3, 1)]
    rate = weekly_security_review.check_rate_limited(ctx, WEEK_START, WEEK_END, top_n=3)
    assert rate is _by_check(ctx)["security.rate_limited"]
    assert rate.table["user"].tolist() == ["user-a", "user-b", None]
    assert rate.status is Status.WARNING
    assert rate.evidence["rising_users"] == ["user-a"]
    assert "user-a (10 -> 60)" in rate.summary
    # a calmer week: user-a's burst gone, nothing rises
    ctx = known_db()
    weekly_security_review.check_rate_limited(ctx, WEEK_START - timedelta(days=7),
                                              WEEK_END - timedelta(days=7))
    assert _by_check(ctx)["security.rate_limited"].status is Status.OK


def test_day_buckets_weekly_counts_and_trend(known_db):
    ctx = known_db()
    days = audit.buckets(ctx, WEEK_START - timedelta(days=7), WEEK_END, ["rate_limited"])
    assert len(days) == 14
    assert days["bucket"].iloc[0] == WEEK_START - timedelta(days=7)
    by_slot = days["count"].tolist()
    assert by_slot == [0, 10, 5, 0, 0, 0, 7, 1, 60, 0, 0, 0, 0, 8]
    counts = weekly_security_review.weekly_counts(ctx, WEEK_START, WEEK_END).set_index("kind")
    assert counts.loc["rate_limited", "this week"] == 69
    assert counts.loc["rate_limited", "previous week"] == 22
    assert counts.loc["auth_failure", "this week"] == 0
    assert _by_check(ctx)["security.weekly_counts"].status is Status.INFO
    fig = weekly_security_review.weekly_trend(ctx, WEEK_START, WEEK_END)
    assert len(fig.axes) == len(weekly_security_review.WEEKLY_KINDS)
    assert all(ax.get_ylabel() == "events per day" for ax in fig.axes)
    assert fig.axes[-1].get_title(loc="left") == "Rate-limit events per day"


def test_weekly_queries_stream_a_json_lines_source(tmp_path):
    """The v2 JSON-lines source: the same rate-limit table and day buckets, streamed."""
    lines = [{"timestamp": ts.isoformat(), "event_type": event_type,
              **({"user_id": user} if user else {}), "ip_address": ip}
             for ts, event_type, user, ip in WEEK_EVENTS]
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    ctx = RunContext.adhoc("security-test", target=inventory.Target(
        "t", {"fraiseql_url": "http://127.0.0.1:9", "audit_source": f"jsonl:{path}"}))
    table, totals = weekly_security_review.rate_limited_by_user(ctx, WEEK_START, WEEK_END,
                                                                limit=3)
    assert totals == {"this_week": 69, "previous_week": 22, "users": 2, "previous_users": 3,
                      "without_user": 3}
    assert [(r["user"], r["this week"], r["previous week"]) for r in table.to_dict(
        "records")] == [("user-a", 60, 10), ("user-b", 6, 5), (None, 3, 0)]
    days = audit.buckets(ctx, WEEK_START - timedelta(days=7), WEEK_END, ["rate_limited"])
    assert days["count"].tolist() == [0, 10, 5, 0, 0, 0, 7, 1, 60, 0, 0, 0, 0, 8]
    label, start, end = timespec.month_window("2025-12")
    monthly_security_report.check_access_review(ctx, label, start, end,
                                                work=timespec.WorkHours())
    skipped = _by_check(ctx)["security.access_review"]
    assert skipped.status is Status.INFO and "needs the audit table" in skipped.summary


# ---- monthly, exact --------------------------------------------------------------------------

def test_month_window_and_working_hours():
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert timespec.month_window(None, now) == (
        "2026-02", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert timespec.month_window("2025-12", now)[1:] == (
        datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    assert timespec.month_window("2026-03", now)[2] == now  # to date
    assert timespec.month_window(None, datetime(2026, 1, 5, tzinfo=UTC))[
        0] == "2025-12"
    for bad in ("2026-13", "2026-00", "26-01", "2026/01", "March", "2026-1x"):
        with pytest.raises(UsageError, match="is not a calendar month: give it as YYYY-MM"):
            timespec.month_window(bad, now)
    with pytest.raises(UsageError, match="has not begun"):
        timespec.month_window("2026-04", now)
    assert timespec.parse_work_days("Mon-Fri") == (1, 2, 3, 4, 5)
    assert timespec.parse_work_days("Sun-Thu") == (1, 2, 3, 4, 7)
    assert timespec.parse_work_days("sat,sunday") == (6, 7)
    assert timespec.parse_work_days([1, 3]) == (1, 3)
    assert timespec.WorkHours.parse("Mon-Fri").describe() == (
        "Mon-Fri 08:00-18:00 UTC")
    with pytest.raises(UsageError, match="'Funday' is not a weekday"):
        timespec.parse_work_days("Mon,Funday")
    with pytest.raises(UsageError, match="work_start_hour < work_end_hour"):
        timespec.WorkHours.parse("Mon-Fri", 18, 8)


def test_month_totals_access_review_and_new_addresses(known_db):
    ctx = known_db()
    label, start, end = timespec.month_window(MONTH,
                                                             datetime(2026, 3, 10, tzinfo=UTC))
    found = monthly_security_report.check_month_totals(ctx, label, start, end)
    totals = found.table
    assert dict(zip(totals["kind"], totals["count"], strict=True)) == MONTH_TOTALS
    assert found.status is Status.INFO and found.evidence["all_events"] == MONTH_ALL
    assert found.evidence["no_data"] is False
    assert monthly_security_report.month_total(ctx, start, end) == MONTH_ALL

    work = timespec.WorkHours.parse("Mon-Fri", 8, 18)
    review = monthly_security_report.access_review(ctx, start, end, work=work, limit=2)
    t = review.totals
    assert (t["events"], t["outside_hours"], t["users"], t["ips"]) == (MONTH_ALL, 9, 3, 4)
    assert t["first_seen"] == datetime(2026, 2, 1, tzinfo=UTC)
    assert t["last_seen"] == datetime(2026, 3, 1, tzinfo=UTC) - US
    users = review.by_user.to_dict("records")
    assert [(r["user"], r["events"], r["outside_hours"], r["ips"]) for r in users] == [
        ("u1", 6, 2, 2), ("u2", 6, 6, 1)]
    assert [(r["ip"], r["events"], r["outside_hours"], r["users"])
            for r in review.by_ip.to_dict("records")] == [
        ("198.51.100.7", 6, 6, 1), ("192.0.2.1", 5, 1, 1)]
    assert review.outside_users["user"].tolist() == ["u2", "u1"]
    assert review.outside_users["outside_hours"].tolist() == [6, 2]
    assert review.outside_ips["ip"].tolist() == ["198.51.100.7", "192.0.2.1"]
    # all four users with limit 4: the address-only events are a user of None, ranked last
    everyone = monthly_security_report.access_review(ctx, start, end, work=work,
                                                     limit=4).by_user
    assert everyone["user"].tolist() == ["u1", "u2", None, "u3"]
    # working hours as a parameter: all week round the clock leaves nothing outside
    always = timespec.WorkHours.parse("Mon-Sun", 0, 24)
    assert monthly_security_report.access_review(ctx, start, end, work=always).totals[
        "outside_hours"] == 0

    new, count, seen = monthly_security_report.new_addresses(ctx, start, end, limit=2)
    assert (count, seen) == (3, 4)
    assert [(r["ip"], r["events"], r["users"]) for r in new.to_dict("records")] == [
        ("198.51.100.7", 6, 1), ("203.0.113.9", 3, 1)]
    monthly_security_report.check_new_addresses(ctx, label, start, end, top_n=2)
    assert _by_check(ctx)["security.new_addresses"].evidence["new_addresses"] == 3


V2_DDL = """
CREATE TABLE audit_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "timestamp" timestamptz NOT NULL,
    event_type text NOT NULL, user_id uuid, username text, ip_address inet,
    status text NOT NULL, error_message text);
GRANT SELECT ON audit_log TO fraiseql_user;
"""


def test_the_month_from_a_v2_audit_log_table(make_cluster, pg_passwords):
    """The v2 table: outcomes decide the kinds; the access review counts every row."""
    cluster = make_cluster(provision=True, audit_events=0)
    rows = [(_at(20, 10, month=1), "auth_success", "mallory", "192.0.2.10", "success"),
            (_at(2, 10), "auth_failure", "mallory", "192.0.2.10", "failure"),
            (_at(2, 11), "jwt_validation", "alice", "192.0.2.20", "success"),  # not a failure
            (_at(2, 12), "jwt_validation", "alice", "192.0.2.20", "failure"),
            (_at(7, 12), "csrf_state_validated", None, "192.0.2.30", "failure")]  # Saturday
    with cluster.connect(APP_DB) as conn:
        conn.execute(V2_DDL)
        for row in rows:
            conn.execute('INSERT INTO audit_log ("timestamp", event_type, username, '
                         "ip_address, status) VALUES (%s, %s, %s, %s, %s)", row)
    ctx = RunContext.adhoc("security-test", target=inventory.Target("t", {
        "fraiseql_url": "http://127.0.0.1:9", "audit_source": "v2_table",
        "database_url": cluster.dsn(APP_USER, pg_passwords.app)}))
    label, start, end = timespec.month_window(MONTH,
                                                             datetime(2026, 3, 10, tzinfo=UTC))
    found = monthly_security_report.check_month_totals(ctx, label, start, end)
    assert found.evidence["totals"]["auth_failure"] == 2
    assert found.evidence["totals"]["csrf_failure"] == 1
    assert found.evidence["all_events"] == 4
    review = monthly_security_report.access_review(ctx, start, end)
    assert (review.totals["events"], review.totals["users"], review.totals["ips"],
            review.totals["outside_hours"]) == (4, 2, 3, 1)  # users by username
    assert review.by_user["user"].tolist()[:1] == ["alice"]
    _, new, seen = monthly_security_report.new_addresses(ctx, start, end)
    assert (new, seen) == (2, 3)


def test_a_month_without_data_is_an_info_finding_not_a_crash(known_db):
    ctx = known_db()
    label, start, end = timespec.month_window("2001-01")
    monthly_security_report.check_month_totals(ctx, label, start, end)
    review = monthly_security_report.check_access_review(
        ctx, label, start, end, work=timespec.WorkHours())
    monthly_security_report.check_new_addresses(ctx, label, start, end)
    found = _by_check(ctx)
    assert found["security.monthly_totals"].status is Status.INFO
    assert found["security.monthly_totals"].evidence["no_data"] is True
    assert "no audit events at all in 2001-01" in found["security.monthly_totals"].summary
    assert review.totals["events"] == 0 and review.by_user.empty
    assert found["security.new_addresses"].evidence["new_addresses"] == 0
    assert all(f.status is Status.INFO for f in ctx.log.findings)


def _pdf_text(path: Path) -> str:
    reader = pypdf.PdfReader(str(path))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def test_the_pdf_holds_the_exact_totals_and_the_figures(known_db, tmp_path):
    ctx = known_db(tmp_path / "findings.json")
    report = monthly_security_report.begin(ctx, MONTH, top_n=3,
                                          now=datetime(2026, 3, 10, tzinfo=UTC))
    report.check_totals()
    report.type_plot()
    report.daily_plot()
    report.check_access()
    report.check_new_addresses()
    finding = report.write_pdf()
    assert finding.status is Status.OK, finding.summary
    path = tmp_path / "security-report-2026-02.pdf"
    assert Path(finding.evidence["path"]) == path
    reader = pypdf.PdfReader(str(path))
    assert reader.metadata.title == "Security report 2026-02: t"
    assert sum(len(page.images) for page in reader.pages) == 2  # the two figures, as PNG
    text = _pdf_text(path)
    assert "Security report 2026-02: t" in text
    for kind, count in MONTH_TOTALS.items():
        assert f"{kind} {count:,}" in text
    assert f"all audit events {MONTH_ALL:,}" in text
    assert "Addresses first seen this month: 3" in text
    assert "198.51.100.7" in text and "u2" in text
    # without an artifact directory there is no PDF, and the run says so
    ctx = known_db()
    report = monthly_security_report.begin(ctx, MONTH, now=datetime(2026, 3, 10, tzinfo=UTC))
    assert report.write_pdf().status is Status.INFO


# ---- through the CLI on the sandbox ----------------------------------------------------------

def findings_of(result: subprocess.CompletedProcess[str]) -> tuple[Path, dict]:
    artifact = Path(result.stdout.strip().splitlines()[-1])
    return artifact, json.loads((artifact / "findings.json").read_text())


def by_check(data: dict) -> dict[str, dict]:
    return {f["check"]: f for f in data["findings"]}


def superuser(sb) -> psycopg.Connection:
    """A superuser session of our own, independent of the package's connection code."""
    raw = tomllib.loads(sb.inventory.read_text())["targets"]["sandbox"]
    password = (sb.root / "secrets" / "superuser_password").read_text().strip()
    return psycopg.connect(raw["admin_database_url"], password=password, autocommit=True)


def burst_rows(sb, event_type: str, ips: list[str]) -> int:
    with superuser(sb) as conn:
        row = conn.execute("SELECT count(*) FROM fraiseql_audit_logs WHERE event_type = %s "
                           "AND ip_address = ANY(%s::inet[])", (event_type, ips)).fetchone()
    return int(row[0])


@drill
@pytest.mark.parametrize(("fault", "kind", "event_type", "events"), [
    ("csrf-attack", "csrf_failure", "csrf_failure", faults.CSRF_ATTACK_EVENTS),
    ("sqli-attack", "sql_injection", "sql_injection_attempt", faults.SQLI_ATTACK_EVENTS),
])
def test_attack_fault_makes_the_daily_review_exit_2_naming_the_addresses(
        healthy_sandbox, fault, kind, event_type, events):
    sb = healthy_sandbox
    with superuser(sb) as conn:
        before = conn.execute("SELECT count(*) FROM fraiseql_audit_logs").fetchone()[0]
    sb.fault(fault)
    state = manager.Sandbox.open(sb.root).state[fault.replace("-", "_")]
    ips = state["ips"]
    assert not set(ips) & set(faults.attack_ips(42))  # not auth-attack's addresses
    assert state["rows"] == events == burst_rows(sb, event_type, ips)

    result = sb.run("daily-security-review")
    assert result.returncode == 2, result.stderr
    _, data = findings_of(result)
    found = by_check(data)[f"security.{kind}"]
    assert found["status"] == "critical"
    assert sorted(found["evidence"]["attacking_ips"]) == sorted(ips)
    assert found["evidence"]["each_above_bar"] is True
    for ip in ips:
        assert ip in found["summary"]
    top = {r["ip"]: r["count"] for r in found["evidence"]["top_ips"]}
    assert sum(top[ip] for ip in ips) == events  # exactly the burst, nothing else from them

    sb.heal(fault)
    assert burst_rows(sb, event_type, ips) == 0
    with superuser(sb) as conn:
        assert conn.execute("SELECT count(*) FROM fraiseql_audit_logs").fetchone()[0] == before
    assert fault.replace("-", "_") not in manager.Sandbox.open(sb.root).state
    result = sb.run("daily-security-review")
    assert result.returncode == 0, (result.stderr, findings_of(result)[1]["status"])


@drill
def test_weekly_review_reports_both_certificates_and_draws_the_trend(healthy_sandbox):
    result = healthy_sandbox.run("weekly-security-review")
    assert result.returncode in (0, 1), result.stderr
    artifact, data = findings_of(result)
    checks = by_check(data)
    for name in ("tls.endpoint.expiry", "tls.postgres.expiry"):
        assert checks[name]["status"] == "ok", checks[name]["summary"]
        assert checks[name]["evidence"]["days_left"] > 300
    assert checks["security.rate_limited"]["status"] in ("ok", "warning")
    assert checks["audit.index"]["status"] == "ok"
    html = (artifact / "weekly-security-review.html").read_text()
    assert "<img" in html
    assert "certificate the endpoint serves" in html


def _month_counts(sb, month_start: datetime, month_end: datetime) -> tuple[dict, int]:
    kinds = {r.event_type: r.kind for r in audit.RULES["table"]}
    with superuser(sb) as conn:
        rows = conn.execute('SELECT event_type, count(*) FROM fraiseql_audit_logs WHERE '
                            '"timestamp" >= %s AND "timestamp" < %s GROUP BY 1',
                            (month_start, month_end)).fetchall()
    totals = dict.fromkeys(audit.KINDS, 0)
    for event_type, count in rows:
        if event_type in kinds:
            totals[kinds[event_type]] += int(count)
    return totals, sum(int(c) for _, c in rows)


@drill
def test_monthly_report_pdf_holds_the_months_totals(healthy_sandbox):
    now = datetime.now(UTC)
    month = f"{now:%Y-%m}"
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    totals, everything = _month_counts(healthy_sandbox, start, end)
    assert everything > 0

    result = healthy_sandbox.run("monthly-security-report", "-p", "month", month)
    assert result.returncode in (0, 1), result.stderr
    artifact, data = findings_of(result)
    checks = by_check(data)
    assert checks["security.monthly_totals"]["evidence"]["totals"] == totals
    assert checks["security.monthly_totals"]["evidence"]["all_events"] == everything
    for policy in compliance.POLICIES:
        assert checks[f"compliance.{policy.key}"]["status"] in ("ok", "info"), policy.key
    assert checks["compliance.error_redaction"]["status"] == "info"  # v2 server config
    assert checks["security.report_pdf"]["status"] == "ok"
    pdf = artifact / f"security-report-{month}.pdf"
    assert pdf.is_file()
    text = _pdf_text(pdf)
    assert f"Security report {month}: sandbox" in text
    for kind, count in totals.items():
        assert f"{kind} {count:,}" in text
    assert f"all audit events {everything:,}" in text
    for policy in compliance.POLICIES:
        assert policy.title in text
    html = (artifact / "monthly-security-report.html").read_text()
    assert html.count("<img") >= 2


@drill
def test_a_month_without_data_still_renders_its_report(healthy_sandbox):
    result = healthy_sandbox.run("monthly-security-report", "-p", "month", "2001-01")
    assert result.returncode in (0, 1), result.stderr
    artifact, data = findings_of(result)
    totals = by_check(data)["security.monthly_totals"]
    assert totals["status"] == "info" and totals["evidence"]["no_data"] is True
    assert "no audit events at all in 2001-01" in totals["summary"]
    text = _pdf_text(artifact / "security-report-2001-01.pdf")
    assert "No audit events were recorded in 2001-01" in text
    assert "auth_failure 0" in text and "all audit events 0" in text


@drill
def test_a_malformed_month_stops_the_run_with_one_clear_line(sandbox):
    """`month` is a declared format, checked by the report's own parser before a kernel
    starts: exit 64, one line, no artifact."""
    result = sandbox.run("monthly-security-report", "-p", "month", "2026-13")
    assert result.returncode == 64, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "month '2026-13' is not a calendar month" in line
    assert result.stdout == ""


@drill
def test_two_reports_started_in_the_same_second_never_share_a_directory(sandbox):
    """The runner's fresh dated directory per run: two monthly reports started together each
    keep their own notebook, HTML, findings and PDF."""
    cmd = [sys.executable, "-m", "fraiseql_rb", "run", "monthly-security-report", "--target",
           "sandbox", "--output-dir", str(sandbox.reports), "-p", "month", "2001-01"]
    env = {**os.environ, "FRAISEQL_RB_INVENTORY": str(sandbox.inventory)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    dirs = [Path(out.strip().splitlines()[-1]) for out, _ in outs]
    assert dirs[0] != dirs[1]
    assert re.fullmatch(r"\d{6}Z", dirs[0].name) and re.fullmatch(r"\d{6}Z", dirs[1].name)
    for d in dirs:
        assert {p.name for p in d.iterdir()} >= {
            "findings.json", "monthly-security-report.ipynb", "monthly-security-report.html",
            "security-report-2001-01.pdf"}
