"""The static report site (issue 14 §1): index, incident timelines, trends, incremental
rebuilds, damaged runs and bad input, over a generated tree shaped like real runs."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from fraiseql_rb.core import thresholds
from fraiseql_rb.site import build, pages
from tests.site_tree import bench_site

END = datetime(2026, 11, 30, 18, 0, 0, tzinfo=UTC)


class Links(HTMLParser):
    """Every href/src and every index row's data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])
        if tag == "tr" and "data-date" in a:
            self.rows.append(a)


def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text())
    return parser


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    reports = tmp_path / "reports"
    bench_site.generate(reports, runs=150, days=30, end=END, seed=3)
    rng = random.Random(5)
    bench_site.write_run(reports, rng, "service-health", "prod-eu", END - timedelta(days=2),
                         damage="truncated")
    bench_site.write_run(reports, rng, "service-health", "prod-us", END - timedelta(days=3),
                         damage="missing")
    bench_site.write_run(reports, rng, "service-health", "staging", END - timedelta(days=4),
                         damage="interrupted")
    bench_site.write_run(reports, rng, "monthly-security-report", "prod-eu",
                         END - timedelta(days=1))
    return reports


def run_dirs(reports: Path) -> list[Path]:
    return [p for p in reports.glob("????-??-??/*/*") if p.is_dir()]


def test_index_lists_every_run_newest_first_with_working_relative_links(tree: Path) -> None:
    stats = build.build(tree)
    site = tree / "site"
    assert stats.runs == stats.read == len(run_dirs(tree))
    index = parse(site / "index.html")
    assert len(index.rows) == stats.runs
    dates = [r["data-date"] for r in index.rows]
    assert dates == sorted(dates, reverse=True)
    for page in site.glob("*.html"):
        for link in parse(page).links:
            if link == "data:,":  # the empty favicon: no request for /favicon.ico
                continue
            assert not link.startswith(("http:", "https:", "//", "/")), (page, link)
            assert (site / unquote(link)).resolve().exists(), (page.name, link)
    text = (site / "index.html").read_text()
    assert "damaged: findings.json does not parse" in text
    assert "damaged: no findings.json" in text
    assert 'class="mark interrupted"' in text
    # a root cause from a diagnosis finding is shown beside its run
    assert re.search(r"<td>(process_down|database_unreachable|pool_too_small)</td>", text)
    pdfs = [link for link in index.links if link.endswith(".pdf")]
    assert len(pdfs) == len(list(tree.glob("*/*/*/*.pdf"))) >= 1
    assert {oct(p.stat().st_mode & 0o777) for p in site.iterdir()} == {"0o640"}


def test_the_index_lists_the_newest_runs_and_every_run_is_on_its_months_page(
        tree: Path, monkeypatch) -> None:
    """A year of a fleet's daily runs would make one index page of 100 MB: the index keeps
    the newest SITE_INDEX_RUNS, and one page per month holds every run once."""
    monkeypatch.setattr(thresholds, "SITE_INDEX_RUNS", 40)
    stats = build.build(tree)
    site = tree / "site"
    index = parse(site / "index.html")
    assert len(index.rows) == 40
    assert f"The newest 40 of {stats.runs} runs" in (site / "index.html").read_text()
    months = sorted(p.name for p in site.glob("runs-*.html"))
    assert months == ["runs-2026-10.html", "runs-2026-11.html"]
    assert set(months) <= set(index.links)
    seen = []
    for name in months:
        rows = parse(site / name).rows
        assert {r["data-date"][:7] for r in rows} == {name[5:12]}
        seen += [(r["data-date"], r["data-runbook"], r["data-target"]) for r in rows]
    assert len(seen) == stats.runs  # each run once, on its month's page
    newest = parse(site / "runs-2026-11.html").rows[:40]
    assert [r["data-date"] for r in index.rows] == [r["data-date"] for r in newest]
    # a month whose reports were removed loses its page at the next build
    for day in tree.glob("2026-10-*"):
        shutil.rmtree(day)
    build.build(tree)
    assert sorted(p.name for p in site.glob("runs-*.html")) == ["runs-2026-11.html"]


def test_incident_page_merges_every_run_into_one_timeline(tree: Path) -> None:
    build.build(tree)
    site = tree / "site"
    runs: dict[str, list[dict]] = {}
    for f in tree.glob("*/*/*/findings.json"):
        try:
            data = json.loads(f.read_text())
        except ValueError:
            continue
        if data["incident_id"]:
            runs.setdefault(data["incident_id"], []).append(data)
    incident, members = max(runs.items(), key=lambda kv: len(kv[1]))
    assert len({m["runbook"] for m in members}) >= 1 and len(members) >= 2
    text = (site / pages.incident_file(incident)).read_text()
    timeline = text.split('id="timeline"')[1]
    times = re.findall(r"<tr(?: class=\"action\")?><td>([0-9: -]+Z)</td>", timeline)
    expected = sorted(x["at"].replace("T", " ") for m in members
                      for x in m["findings"] + m["actions"])
    assert times == expected  # one merged, ordered timeline of findings and actions
    for m in members:
        cause = next(f["evidence"]["root_cause"] for f in m["findings"]
                     if f["check"] == "diagnosis")
        assert f"<td>{cause}</td>" in text
        for a in m["actions"]:
            assert a["command"] in timeline
            if a["executed"]:
                assert a["result"] in timeline
    assert incident in (site / "incidents.html").read_text()


def test_trends_show_security_totals_backup_age_and_heat_strips(tree: Path) -> None:
    build.build(tree)
    text = (tree / "site" / "trends.html").read_text()
    for kind in bench_site.KINDS:
        for target in bench_site.FLEET:
            assert f"<h3>{kind} on {target}</h3><svg" in text
    assert text.count('<polygon class="band"') == len(bench_site.KINDS) * len(bench_site.FLEET)
    for target in bench_site.FLEET:
        assert f"<h3>{target}: newest dump age (hours)</h3><svg" in text
        assert f"<h3>{target}: current RPO (seconds)</h3><svg" in text
    strip = text.split("<h3>backup-verification</h3>")[1].split("</table>")[0]
    rows = re.findall(r"<tr><th>([^<]+)</th>", strip)
    # "?": a damaged run whose findings.json is gone still counts, under an unknown target
    assert set(bench_site.FLEET) <= set(rows) <= {*bench_site.FLEET, "?"}
    assert strip.count("<td") == 90 * len(rows)  # one cell per day of 90
    assert strip.count('<td class="h-none">') >= 60 * len(rows)  # 30 days of runs


def test_rebuild_reads_only_what_changed(tree: Path) -> None:
    first = build.build(tree)
    again = build.build(tree)
    assert (again.read, again.written) == (0, 0)
    new = bench_site.write_run(tree, random.Random(9), "service-health", "prod-eu",
                               END + timedelta(minutes=5))
    third = build.build(tree)
    assert (third.runs, third.read) == (first.runs + 1, 1)
    assert new.name in (tree / "site" / "index.html").read_text()
    # a run whose findings.json is rewritten (a run that finished later) is read again
    old = sorted(run_dirs(tree))[0] / "findings.json"
    time.sleep(0.01)
    old.write_text(json.dumps({**json.loads(old.read_text()), "status": "critical"}))
    fourth = build.build(tree)
    assert fourth.read == 1
    # a deleted run disappears
    for f in new.iterdir():
        f.unlink()
    new.rmdir()
    fifth = build.build(tree)
    assert (fifth.runs, fifth.read) == (first.runs, 0)
    assert new.name not in (tree / "site" / "index.html").read_text()


def test_a_damaged_cache_means_a_full_read_not_a_failure(tree: Path) -> None:
    first = build.build(tree)
    (tree / "site" / ".scan-cache.json").write_text("{not json")
    assert build.build(tree).read == first.runs


def test_everything_from_a_report_is_escaped(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = reports / "2026-11-30" / "service-down" / "120000Z_INC-9"
    run.mkdir(parents=True)
    evil = "<script>alert(1)</script>"
    (run / "findings.json").write_text(json.dumps({
        "runbook": "service-down", "target": "t<b>", "incident_id": "INC/../<x>",
        "started_at": "2026-11-30T12:00:00Z", "status": "critical",
        "findings": [{"check": "diagnosis", "status": "critical", "at": "2026-11-30T12:00:01Z",
                      "summary": evil, "evidence": {"root_cause": '"><img src=x onerror=1>'},
                      "remediation": evil}],
        "actions": [{"action": "restart", "command": evil, "executed": True,
                     "at": "2026-11-30T12:00:02Z", "result": evil}]}))
    build.build(reports)
    site = reports / "site"
    pages_written = list(site.glob("*.html"))
    assert {p.name for p in pages_written} >= {"index.html", "trends.html", "incidents.html"}
    incident = [p for p in pages_written if p.name.startswith("incident-INC")]
    assert len(incident) == 1 and "/" not in incident[0].name[9:]
    for p in pages_written:
        text = p.read_text()
        assert "<script>alert" not in text and "<img" not in text and "<b>" not in text


def test_site_dir_elsewhere_links_back_to_the_reports(tree: Path, tmp_path: Path) -> None:
    site = tmp_path / "published" / "site"
    build.build(tree, site)
    links = [x for x in parse(site / "index.html").links if x.endswith("findings.json")]
    assert links and all(x.startswith("../../reports/") for x in links)
    assert all((site / unquote(x)).resolve().is_file() for x in links)
    assert not (tree / "site").exists()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraiseql_rb", "site", *args],
                          capture_output=True, text=True, timeout=60)


def test_no_reports_is_one_line_and_exit_64(tmp_path: Path) -> None:
    (tmp_path / "empty" / "site").mkdir(parents=True)  # a site alone is not a report
    for directory in (tmp_path / "empty", tmp_path / "missing"):
        done = cli("--output-dir", str(directory))
        assert done.returncode == 64, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "no reports" in done.stderr
        assert "Traceback" not in done.stderr


def test_serve_previews_the_site_and_its_reports_until_ctrl_c(tree: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fraiseql_rb", "site", "--output-dir",
                             str(tree), "--serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for _ in range(3):
            line = proc.stderr.readline()
            if "serving" in line:
                break
        url = re.search(r"http://\S+", line).group(0)
        index = urllib.request.urlopen(url, timeout=5).read().decode()
        report = re.search(r'href="(\.\./[^"]+\.html)"', index).group(1)
        base = url.rsplit("/", 1)[0] + "/"
        page = urllib.request.urlopen(urllib.parse.urljoin(base, report), timeout=5).read()
        assert b"<h1>" in page
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
    assert code == 0
