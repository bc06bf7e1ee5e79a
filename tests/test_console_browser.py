"""The console in a real browser: Playwright drives Debian's Chromium against a real
`ledger serve --workers 2` (so a session must hold across processes).

Playwright cannot download browsers here; it launches the system's Chromium by path. Without
/usr/bin/chromium these tests are skipped with the reason printed in pytest's summary; `make
test` installs it (`make system-tools`). Screenshots of each page go under .ledger/screenshots/
(not committed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import new_database
from tests.console_helpers import CONTRAST_SCRIPT
from tests.processes import ledger_env, stop, wait_until_ready

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="browser tests skipped: no Chromium at /usr/bin/chromium "
    "(apt-get install -y chromium; make test installs it)",
)

ADMIN_SECRET = "lk_console_browser_admin_0123456789"
SHOTS = Path(__file__).resolve().parents[1] / ".ledger" / "screenshots"


@dataclass
class Ledger:
    base_url: str
    stderr_path: Path
    auditor: str
    reader: str
    source: dict[str, Any]
    customer: dict[str, Any]
    other: dict[str, Any]
    moved: dict[str, Any]
    reversal: dict[str, Any]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _seed(api: httpx.Client) -> dict[str, Any]:
    def ok(response: httpx.Response) -> Any:
        assert response.status_code in (200, 201), response.text
        return response.json()

    def account(code: str, normal: str, floor: int | None = 0) -> Any:
        body = {"code": code, "currency": "EUR", "normal_balance": normal, "min_balance": floor}
        return ok(api.post("/v1/accounts", json=body))

    source = account("browser:source", "debit", None)
    customer = account("browser:customer", "credit")
    other = account("browser:other", "credit")

    def move(debit: str, credit: str, amount: int, **extra: Any) -> Any:
        body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
        return ok(api.post("/v1/transfers", json={**body, **extra}))

    move(source["id"], customer["id"], 10_000)
    moved = move(customer["id"], other["id"], 2_500, reference="invoice 17")
    held = move(customer["id"], other["id"], 700, pending=True)
    ok(api.post(f"/v1/transfers/{held['id']}/post", json={"amount": 600}))
    reversal = ok(api.post(f"/v1/transfers/{moved['id']}/reverse", json={"amount": 500}))
    version = ok(api.get(f"/v1/accounts/{customer['id']}"))["version"]
    ok(
        api.patch(
            f"/v1/accounts/{customer['id']}",
            json={"metadata": {"tier": "gold"}},
            headers={"If-Match": f'"{version}"'},
        )
    )
    keys = {
        role: ok(api.post("/v1/api-keys", json={"name": f"browser-{role}", "role": role}))
        for role in ("auditor", "reader")
    }
    # Webhook endpoints (no worker runs here: nothing is delivered), one of them disabled.
    hook = {"url": "https://hooks.example/browser", "description": "partner payouts"}
    ok(api.post("/v1/webhooks", json={**hook, "event_types": ["ledger.transfer.*"]}))
    ok(
        api.post(
            "/v1/webhooks", json={**hook, "url": "https://hooks.example/off", "enabled": False}
        )
    )
    return {
        "auditor": keys["auditor"]["secret"],
        "reader": keys["reader"]["secret"],
        "source": source,
        "customer": customer,
        "other": other,
        "moved": moved,
        "reversal": reversal,
    }


@pytest.fixture(scope="module")
def ledger(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ledger]:
    port = _free_port()
    env = ledger_env(
        new_database(pg_server),
        LEDGER_ADMIN_KEY=ADMIN_SECRET,
        LEDGER_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    stderr_path = tmp_path_factory.mktemp("console-serve") / "stderr.jsonl"
    command = [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port), "--workers", "2"]
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base_url, log=stderr_path)
        headers = {"Authorization": f"Bearer {ADMIN_SECRET}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as api:
            seeded = _seed(api)
        yield Ledger(base_url=base_url, stderr_path=stderr_path, **seeded)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI), Chromium's sandbox cannot start; the pages are our own.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Visit:
    page: Any
    requests: list[str]
    urls: list[str]


@pytest.fixture
def visit(chromium: Any, ledger: Ledger, request: pytest.FixtureRequest) -> Iterator[Visit]:
    """A fresh browser context (no cookies) recording every request it makes."""
    width = getattr(request, "param", 1280)
    context = chromium.new_context(
        viewport={"width": width, "height": 900}, accept_downloads=True, base_url=ledger.base_url
    )
    page = context.new_page()
    seen = Visit(page=page, requests=[], urls=[])
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("framenavigated", lambda frame: seen.urls.append(frame.url))
    try:
        yield seen
    finally:
        context.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _sign_in(page: Any, secret: str) -> None:
    page.goto("/console")
    assert "/console/sign-in" in page.url
    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_auditor_reviews_the_ledger_end_to_end(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    _sign_in(page, ledger.auditor)
    _shot(page, "01-audit-search-empty")
    assert page.url == f"{ledger.base_url}/console/audit"

    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["ledger_console"]
    assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True, "Strict")
    assert cookies["ledger_console_csrf"]["httpOnly"] is True

    # Search: by object id, the customer's account records.
    page.get_by_label("Object id").fill(ledger.customer["id"])
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    assert f"object_id={ledger.customer['id']}" in page.url
    records = page.get_by_test_id("audit-record")
    assert records.count() == 2  # created, then its metadata updated
    assert "account.update" in records.nth(1).inner_text()
    _shot(page, "02-audit-search-results")

    # Export the same search as CSV.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export as CSV").click()
    exported = Path(download_info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["action"] for r in rows] == ["account.create", "account.update"]
    assert {r["object_id"] for r in rows} == {ledger.customer["id"]}

    # Open the account: balances, the chart, the statement and the trail with a diff.
    page.get_by_role("link", name=f"account {ledger.customer['id']}").first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/console/accounts/{ledger.customer['id']}")
    posted = 10_000 - 2_500 - 600 + 500
    assert page.get_by_test_id("balances").locator('[data-field="posted"]').inner_text() == str(
        posted
    )
    chart = page.get_by_role("img", name=f"Posted balance of {ledger.customer['code']}")
    assert chart.is_visible()
    assert chart.locator("circle").count() == 4
    assert page.get_by_test_id("statement").locator("tbody tr").count() == 4
    trail = page.get_by_test_id("audit-record")
    assert trail.first.locator(".action").inner_text() == "account.update"
    assert trail.first.locator("ins").inner_text() == '{"tier":"gold"}'
    assert trail.count() == 7  # update, reverse, post, hold, move, funding, create
    _shot(page, "03-account")

    # Open a transfer from the statement: its history with who, when, request and trace ids.
    page.get_by_role("link", name=ledger.moved["id"]).first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/console/transfers/{ledger.moved['id']}")
    history = page.get_by_test_id("audit-record")
    assert [history.nth(i).locator(".action").inner_text() for i in range(history.count())] == [
        "transfer.create",
        "transfer.reverse",
    ]
    assert "request" in history.first.inner_text() and "trace" in history.first.inner_text()
    _shot(page, "04-transfer")

    # The chain panel is on every page.
    panel = page.get_by_test_id("chain-state")
    assert "no signed checkpoint yet" in panel.inner_text()

    # Sign out: the session is gone, pages send the browser to the sign-in form.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert "/console/sign-in" in page.url
    page.goto("/console/audit")
    assert "/console/sign-in" in page.url
    _shot(page, "05-signed-out")

    # No request left the service's origin; the key never was in an address or a page.
    assert visit.requests and all(u.startswith(ledger.base_url + "/") for u in visit.requests)
    assert not [u for u in visit.requests + visit.urls if ledger.auditor in u]
    assert ledger.auditor not in page.content()
    assert ledger.auditor not in ledger.stderr_path.read_text(encoding="utf-8")


def test_key_is_not_in_page_source_after_sign_in(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    _sign_in(page, ledger.auditor)
    for url in ("/console/audit", f"/console/accounts/{ledger.customer['id']}", "/console"):
        response = page.goto(url)
        assert response is not None and response.status == 200
        assert ledger.auditor not in response.text()
        assert ledger.auditor not in page.content()
    stored = json.dumps(page.context.storage_state())
    assert ledger.auditor not in stored


def test_reader_sees_balances_but_no_audit_records(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    _sign_in(page, ledger.reader)
    assert page.url == f"{ledger.base_url}/console"
    assert page.get_by_role("link", name="Audit search").count() == 0
    page.get_by_role("link", name=ledger.other["code"]).click()
    page.wait_for_load_state()
    assert page.get_by_test_id("balances").locator('[data-field="posted"]').inner_text() == str(
        2_500 + 600 - 500
    )
    assert page.get_by_test_id("no-audit-rights").is_visible()
    assert page.get_by_test_id("audit-record").count() == 0
    _shot(page, "06-reader-account")
    response = page.goto("/console/audit")
    assert response is not None and response.status == 403
    assert page.get_by_test_id("audit-record").count() == 0
    assert ledger.reader not in page.content()


def test_admin_sees_webhook_endpoints_and_their_health(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    _sign_in(page, ADMIN_SECRET)
    page.get_by_role("link", name="Webhooks").click()
    page.wait_for_load_state()
    assert page.url.endswith("/console/webhooks")
    rows = page.get_by_test_id("webhooks").locator("tbody tr")
    assert rows.count() == 2
    text = page.get_by_test_id("webhooks").inner_text()
    assert "https://hooks.example/browser" in text and "ledger.transfer.*" in text
    assert "healthy" in text and "disabled" in text
    assert "whsec_" not in page.content()  # a secret is never shown again
    assert page.evaluate(CONTRAST_SCRIPT) == []
    _shot(page, "08-admin-webhooks")


def test_auditor_sees_no_webhook_endpoints(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    _sign_in(page, ledger.auditor)
    assert page.get_by_role("link", name="Webhooks").count() == 0
    response = page.goto("/console/webhooks")
    assert response is not None and response.status == 403
    assert "hooks.example" not in page.content()


def test_keyboard_alone_signs_in_and_focus_is_visible(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    page.goto("/console/sign-in")
    for _ in range(10):  # skip link, then the key's field
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "key":
            break
    assert page.evaluate("document.activeElement.id") == "key"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.keyboard.type(ledger.auditor)
    with page.expect_navigation(url="**/console/audit"):
        page.keyboard.press("Enter")
    assert page.url.endswith("/console/audit")
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('input:not([type=hidden])'))"
        ".filter(i => !(i.labels && i.labels.length)).map(i => i.name)"
    )
    assert labels == []


def test_text_contrast_meets_wcag_aa_on_every_page(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    page.goto("/console/sign-in")
    assert page.evaluate(CONTRAST_SCRIPT) == []
    _sign_in(page, ledger.auditor)
    for url in (
        "/console",
        f"/console/audit?object_id={ledger.customer['id']}",
        f"/console/accounts/{ledger.customer['id']}",
        f"/console/transfers/{ledger.moved['id']}",
    ):
        page.goto(url)
        assert page.evaluate(CONTRAST_SCRIPT) == [], url


@pytest.mark.parametrize("visit", [375], indirect=True)
def test_pages_fit_375_px_without_horizontal_overflow(visit: Visit, ledger: Ledger) -> None:
    page = visit.page
    _sign_in(page, ledger.auditor)
    pages = {
        "audit": f"/console/audit?object_id={ledger.customer['id']}",
        "account": f"/console/accounts/{ledger.customer['id']}",
        "transfer": f"/console/transfers/{ledger.moved['id']}",
        "home": "/console",
    }
    for name, url in pages.items():
        page.goto(url)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (name, overflow)
        _shot(page, f"07-375px-{name}")
