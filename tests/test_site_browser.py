"""The report site in a real browser (issue 14 §1): Debian's chromium, headless, driven by
selenium through Debian's chromedriver. Selenium rather than playwright: playwright wants its
own browser build downloaded, selenium drives the distribution's chromium and chromedriver
(the pair `.ci/run` installs) with nothing fetched at test time.

Every page loads without console errors, every link resolves (over HTTP, as a reviewer's
browser fetches it), the index filters hide and show the right rows, and screenshots of the
index and an incident page are kept (the test's directory and docs/screenshots/)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from fraiseql_rb.site import build
from tests.site_tree import bench_site

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parent.parent
END = datetime(2026, 11, 30, 18, 0, 0, tzinfo=UTC)

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):  # .ci/run installs both
    pytest.fail(f"the browser tests need {CHROMIUM} and {CHROMEDRIVER} (apt-get install "
                "chromium chromium-driver)", pytrace=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A realistic reports tree (a quarter of a small fleet), its site, and a loopback HTTP
    server over the reports directory, as `fraiseql-rb site --serve` does."""
    reports = tmp_path_factory.mktemp("site-browser") / "reports"
    bench_site.generate(reports, runs=300, days=90, end=END, seed=14)
    build.build(reports)
    handler = functools.partial(_Quiet, directory=str(reports))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reports, f"http://127.0.0.1:{server.server_address[1]}/site/"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def severe(driver: webdriver.Chrome) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_every_page_loads_without_console_errors_and_every_link_resolves(
        served: tuple[Path, str], driver: webdriver.Chrome) -> None:
    reports, base = served
    site = reports / "site"
    names = sorted(p.name for p in site.glob("*.html"))
    assert {"index.html", "incidents.html", "trends.html"} <= set(names)
    checked: set[str] = set()
    for name in names:
        driver.get(base + name)
        assert driver.find_element(By.TAG_NAME, "h1").text
        links = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href],link[href],script[src]'))"
            ".map(e => e.href || e.src)")
        assert severe(driver) == [], name
        for url in links:
            if url.startswith("data:") or url in checked:
                continue
            assert url.startswith("http://127.0.0.1:"), (name, url)  # nothing external
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    assert answer.status == 200, (name, url)
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"{name}: {url} -> {exc.code}") from None
            checked.add(url)
    assert any(u.endswith("findings.json") for u in checked)
    assert any(u.endswith(".ipynb") for u in checked)


def visible_rows(driver: webdriver.Chrome) -> int:
    """Rows the browser lays out (offsetParent is null for a hidden row): one script call,
    since a WebDriver round trip per row is seconds over a thousand rows."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#runs tbody tr'))"
        ".filter(r => r.offsetParent !== null).length")


def test_filters_hide_and_show_the_right_rows(served: tuple[Path, str],
                                              driver: webdriver.Chrome) -> None:
    _, base = served
    driver.get(base + "index.html")
    data = driver.execute_script(
        "return Array.from(document.querySelectorAll('#runs tbody tr'))"
        ".map(r => Object.assign({}, r.dataset))")
    rows = data
    assert len(rows) > 500 and visible_rows(driver) == len(rows)

    def expect(predicate) -> None:
        want = sum(1 for d in data if predicate(d))
        assert want > 0
        assert visible_rows(driver) == want
        assert driver.find_element(By.ID, "shown").text == f"{want} of {len(rows)} runs"

    Select(driver.find_element(By.ID, "f-runbook")).select_by_value("backup-verification")
    expect(lambda d: d["runbook"] == "backup-verification")
    Select(driver.find_element(By.ID, "f-target")).select_by_value("staging")
    expect(lambda d: d["runbook"] == "backup-verification" and d["target"] == "staging")
    Select(driver.find_element(By.ID, "f-runbook")).select_by_value("")
    Select(driver.find_element(By.ID, "f-target")).select_by_value("")
    Select(driver.find_element(By.ID, "f-status")).select_by_value("damaged")
    expect(lambda d: "damaged" in d["status"].split())
    Select(driver.find_element(By.ID, "f-status")).select_by_value("critical")
    expect(lambda d: d["status"].split()[0] == "critical")
    Select(driver.find_element(By.ID, "f-status")).select_by_value("")
    incident = next(d["incident"] for d in data if d["incident"])
    Select(driver.find_element(By.ID, "f-incident")).select_by_value(incident)
    expect(lambda d: d["incident"] == incident)
    Select(driver.find_element(By.ID, "f-incident")).select_by_value("")
    # a date range: typed into the date inputs as a person would (set + input event)
    driver.execute_script(
        "for (const [id, v] of [['f-from', '2026-11-01'], ['f-to', '2026-11-07']]) {"
        " const e = document.getElementById(id); e.value = v;"
        " e.dispatchEvent(new Event('input')); }")
    expect(lambda d: "2026-11-01" <= d["date"] <= "2026-11-07")
    assert severe(driver) == []


def test_screenshots_of_the_index_and_an_incident(served: tuple[Path, str],
                                                  driver: webdriver.Chrome,
                                                  tmp_path: Path) -> None:
    reports, base = served
    docs = REPO / "docs" / "screenshots"
    docs.mkdir(parents=True, exist_ok=True)
    incidents = sorted((reports / "site").glob("incident-*.html"),
                       key=lambda p: p.stat().st_size)
    shots = {"site-index.png": "index.html", "site-incident.png": incidents[-1].name,
             "site-trends.png": "trends.html"}
    for shot, page in shots.items():
        driver.get(base + page)
        assert driver.save_screenshot(str(tmp_path / shot))
        assert (tmp_path / shot).stat().st_size > 10_000  # a page, not a blank
        shutil.copyfile(tmp_path / shot, docs / shot)
    assert severe(driver) == []
