"""The console in a real browser (Debian's chromium, driven by Playwright), as people use it.

Each test keeps a screenshot of every page it saw; when the test fails they are written to
its pytest temporary directory (``screenshots/``) to show what the browser showed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook
from playwright.sync_api import Browser, Page, sync_playwright

from pbxguard.adapters.ledger import ApprovalBook
from pbxguard.adapters.ledger.console import SignOffBook
from pbxguard.domain.periods import month_of
from tests.support.agi_client import agi_request
from tests.support.console import PASSWORD, ConsoleRun, console_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# On CI (.ci/run installs chromium) a missing browser fails the tests instead of skipping them.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed: apt-get install chromium",
)


class Pages:
    """A browser page that keeps a screenshot of everything it showed."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.shots: list[tuple[str, bytes]] = []

    def shoot(self, name: str) -> None:
        self.shots.append((f"{len(self.shots):02d}-{name}", self.page.screenshot(full_page=True)))

    def goto(self, path: str, name: str = "") -> None:
        self.page.goto(f"{self.base_url}{path}")
        self.shoot(name or path.strip("/").replace("/", "-").split("?")[0] or "overview")

    def sign_in(self, username: str) -> None:
        self.goto("/login", f"login-{username}")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.base_url}/")
        self.shoot(f"signed-in-{username}")

    def sign_out(self) -> None:
        self.page.click("header form button")
        self.page.wait_for_url(f"{self.base_url}/login")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[ConsoleRun]:
    with console_in_thread(tmp_path) as found:
        yield found


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield found
        finally:
            found.close()


@contextmanager
def browsing(browser: Browser, run: ConsoleRun, tmp_path: Path) -> Iterator[Pages]:
    """Yield a fresh browser context; on failure write its screenshots under ``tmp_path``."""
    context = browser.new_context(accept_downloads=True, locale="zh-CN")
    pages = Pages(context.new_page(), run.base_url)
    try:
        yield pages
    except BaseException:
        folder = tmp_path / "screenshots"
        folder.mkdir(exist_ok=True)
        for name, data in pages.shots:
            (folder / f"{name}.png").write_bytes(data)
        with suppress(Exception):
            (folder / "last.png").write_bytes(pages.page.screenshot(full_page=True))
        raise
    finally:
        context.close()


def agi(run: ConsoleRun, callerid: str, number: str, uniqueid: str) -> str | None:
    """Ask for a verdict as Asterisk would (from a thread: Playwright holds this one's loop)."""
    host, port = run.agi

    def ask() -> str | None:
        found = asyncio.run(
            agi_request(host, port, callerid=callerid, extension=number, uniqueid=uniqueid)
        )
        return found.verdict

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ask).result(timeout=30)


def test_a_head_grants_an_approval_and_the_call_is_allowed_once(
    run: ConsoleRun, browser: Browser, tmp_path: Path
) -> None:
    assert agi(run, "2003", "01087654321", "1795400000.1") == "deny"
    with browsing(browser, run, tmp_path) as pages:
        pages.sign_in("head-eng")
        pages.goto("/approvals")
        page = pages.page
        page.select_option("#grant select[name=person]", "zhang-wei")
        page.select_option("#grant select[name=number_class]", "domestic_ld")
        page.fill("#grant input[name=calls]", "1")
        page.fill("#grant input[name=reason]", "与北京客户核对合同")
        page.click("#grant button[type=submit]")
        page.wait_for_url(f"{run.base_url}/approvals")
        pages.shoot("granted")
        row = page.locator("#grants tr[data-approval]")
        assert row.count() == 1
        assert "张伟" in row.inner_text()
        assert row.locator(".uses").inner_text() == "0/1"
        assert agi(run, "2003", "01087654321", "1795400000.2") == "allow"
        assert agi(run, "2003", "01087654321", "1795400000.3") == "deny"
        # The use reaches the ledger through the journal; the page shows it once written.
        assert run.parts.writer.wait_idle(10)
        pages.goto("/approvals?all=true")
        assert page.locator("#grants tr[data-approval] .uses").inner_text() == "1/1"
    [approval] = ApprovalBook(run.parts.database).all("zhang-wei")
    assert approval.granted_by == "head-9001"
    assert approval.used_calls == 1


def test_staff_request_an_approval_and_their_head_grants_it(
    run: ConsoleRun, browser: Browser, tmp_path: Path
) -> None:
    with browsing(browser, run, tmp_path) as pages:
        page = pages.page
        pages.sign_in("zhang")
        pages.goto("/approvals")
        page.select_option("#ask select[name=number_class]", "domestic_ld")
        page.fill("#ask input[name=reason]", "回复北京分公司报价")
        page.click("#ask button[type=submit]")
        page.wait_for_url(f"{run.base_url}/approvals")
        pages.shoot("requested")
        assert "待处理" in page.locator("#requests tr[data-request]").inner_text()
        pages.sign_out()

        pages.sign_in("head-mkt")
        pages.goto("/approvals")
        assert page.locator("#requests tr[data-request]").count() == 0
        pages.sign_out()

        pages.sign_in("head-eng")
        pages.goto("/approvals")
        page.click("#requests .grant-request")
        page.wait_for_url(f"{run.base_url}/approvals")
        pages.shoot("request-granted")
        assert "已批准" in page.locator("#requests tr[data-request]").inner_text()
        assert agi(run, "2003", "01087654321", "1795400001.1") == "allow"


def test_an_auditor_filters_and_exports_with_chinese_headers(
    run: ConsoleRun, browser: Browser, tmp_path: Path
) -> None:
    month = month_of(datetime.now(UTC), run.loaded.policy.timezone)
    with browsing(browser, run, tmp_path) as pages:
        page = pages.page
        pages.sign_in("auditor")
        pages.goto("/ledger")
        assert page.locator("#count").inner_text() == "2"
        page.fill("input[name=department]", "市场部")
        page.fill("input[name=month]", month)
        page.click("form.filters button")
        page.wait_for_load_state()
        pages.shoot("filtered")
        assert page.locator("#count").inner_text() == "1"
        assert "刘芳" in page.locator("#offences").inner_text()
        with page.expect_download() as csv_download:
            page.click("#export-csv")
        data = Path(csv_download.value.path()).read_bytes()
        assert data.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
        assert rows[0][:4] == ["编号 id", "时间 time", "规则 rule", "出处 source"]
        assert len(rows) == 2
        assert rows[1][4] == "刘芳"
        with page.expect_download() as xlsx_download:
            page.click("#export-xlsx")
        assert xlsx_download.value.suggested_filename == f"ledger-{month}.xlsx"
        workbook = io.BytesIO(Path(xlsx_download.value.path()).read_bytes())
        sheet = load_workbook(workbook, read_only=True).active
        values = list(sheet.iter_rows(values_only=True))
        assert values[1][0] == "编号 id"
        assert values[2][4] == "刘芳"
        # Read-only: no decision form for an auditor.
        pages.goto(f"/ledger/{run.offences['mkt'].id}")
        assert page.locator("form[action$='/decision']").count() == 0


def test_the_general_manager_signs_the_month(
    run: ConsoleRun, browser: Browser, tmp_path: Path
) -> None:
    month = month_of(datetime.now(UTC), run.loaded.policy.timezone)
    with browsing(browser, run, tmp_path) as pages:
        page = pages.page
        pages.sign_in("gm")
        pages.goto(f"/register?month={month}")
        assert page.locator("#unfilled").inner_text() == "2"
        page.fill("#sign-offs input[name=note]", "已核阅")
        page.click("#sign-register")
        page.wait_for_url(f"{run.base_url}/register?month={month}")
        pages.shoot("signed")
        assert "gm" in page.locator("#sign-offs .signed").inner_text()
        page.click("#sign-charges")
        page.wait_for_url(f"{run.base_url}/register?month={month}")
        assert page.locator("#sign-offs .signed").count() == 2
    signed = SignOffBook(run.parts.database).of_month(month)
    assert [(s.report.value, s.by, s.note) for s in signed] == [
        ("register", "gm", "已核阅"),
        ("charges", "gm", ""),
    ]
    assert signed[0].summary == "entries 2, filled 0, unfilled 2, overdue 0"


def test_a_head_of_another_department_can_neither_see_nor_change_it(
    run: ConsoleRun, browser: Browser, tmp_path: Path
) -> None:
    eng = run.offences["eng"].id
    with browsing(browser, run, tmp_path) as pages:
        page = pages.page
        pages.sign_in("head-mkt")
        pages.goto("/ledger")
        assert page.locator("#count").inner_text() == "1"
        assert "张伟" not in page.locator("main").inner_text()
        response = page.goto(f"{run.base_url}/ledger/{eng}")
        pages.shoot("foreign-offence")
        assert response is not None
        assert response.status == 404
        pages.goto("/register")
        assert "张伟" not in page.locator("#register").inner_text()
        # A forged form (the session's own token, someone else's offence) changes nothing.
        token = page.locator("header input[name=csrf]").get_attribute("value")
        answer = page.request.post(
            f"{run.base_url}/ledger/{eng}/decision",
            form={"kind": "waiver", "reason": "not mine", "csrf": token or ""},
        )
        assert answer.status == 404
    with browsing(browser, run, tmp_path) as pages:
        pages.sign_in("head-eng")
        pages.goto(f"/ledger/{eng}")
        assert pages.page.locator("#history tr").count() == 1  # the header row only


def test_every_page_renders_for_the_administrator_in_both_languages(
    run: ConsoleRun, browser: Browser, tmp_path: Path
) -> None:
    with browsing(browser, run, tmp_path) as pages:
        page = pages.page
        pages.sign_in("admin")
        for path in ("/", "/ledger", "/approvals", "/register", "/reports", "/rota", "/admin"):
            pages.goto(path)
            assert page.locator("h1").count() == 1
            assert "pbxguard" in page.locator("header").inner_text()
        pages.goto("/reports")
        assert page.locator("svg.chart").count() == 3
        pages.goto("/?lang=en")
        assert page.locator("h1").inner_text() == "Overview"
        pages.goto("/rota")
        assert page.locator("h1").inner_text().startswith("Duty rota")
        pages.goto("/admin")
        assert "login" in page.locator("#audit").inner_text()
