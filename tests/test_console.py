"""The auditor console over HTTP: sign-in with CSRF, the session cookie and its end, roles,
pages, CSV export, bad input, and the JSON API left exactly as it was."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.audit.signing import generate_key
from ledger.core.settings import Settings
from tests.audit_merkle_helpers import seal_and_checkpoint
from tests.console_helpers import browser, csrf_token, make_key, sign_in
from tests.helpers import AUDIT_KEY_ENV, funded_pair, transfer


async def test_sign_in_sets_a_strict_session_cookie_and_never_echoes_the_key(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    auditor = await make_key(client, "auditor")
    async with browser(settings) as web:
        signed = await sign_in(web, auditor["secret"])
        assert signed.status_code == 303
        assert signed.headers["location"] == "/console/audit"
        cookies = signed.headers.get_list("set-cookie")
        [session] = [c for c in cookies if c.startswith("ledger_console=")]
        attributes = {part.strip().lower() for part in session.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/console"} <= attributes
        assert auditor["secret"] not in session
        page = await web.get("/console/audit")
        assert page.status_code == 200
        assert "auditor-key" in page.text
        assert auditor["secret"] not in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["cache-control"] == "no-store"


async def test_sign_in_without_csrf_token_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    auditor = await make_key(client, "auditor")
    async with browser(settings) as web:
        await web.get("/console/sign-in")
        refused = await web.post("/console/sign-in", data={"key": auditor["secret"]})
        assert refused.status_code == 403
        assert "ledger_console=" not in refused.headers.get("set-cookie", "")
        assert (await web.get("/console/audit")).status_code == 303


async def test_sign_in_never_keeps_a_session_id_the_browser_brought(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    first = await make_key(client, "reader")
    second = await make_key(client, "auditor")
    async with browser(settings) as web:
        await sign_in(web, first["secret"])
        planted = web.cookies.get("ledger_console")  # say, set by someone else beforehand
        assert planted
        await sign_in(web, second["secret"])
        fresh = web.cookies.get("ledger_console")
        assert fresh and fresh != planted
        ids = {r[0] for r in sync_db.execute("SELECT id FROM console_sessions").fetchall()}
        assert ids == {fresh}
        assert "auditor-key" in (await web.get("/console/audit")).text


async def test_sign_in_deletes_expired_sessions(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    sync_db.execute(
        "INSERT INTO console_sessions (id, data, expires_at) VALUES "
        "('old', '{}', now() - interval '1 minute'), ('live', '{}', now() + interval '1 hour')"
    )
    reader = await make_key(client, "reader")
    async with browser(settings) as web:
        assert (await sign_in(web, reader["secret"])).status_code == 303
    left = {r[0] for r in sync_db.execute("SELECT id FROM console_sessions").fetchall()}
    assert "old" not in left and "live" in left and len(left) == 2


async def test_unknown_and_operator_keys_cannot_sign_in(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    operator = await make_key(client, "operator")
    async with browser(settings) as web:
        for secret, says in (("lk_nope", "unknown or revoked"), (operator["secret"], "operator")):
            page = await sign_in(web, secret)
            assert page.status_code == 401
            assert says in page.text
            assert secret not in page.text
            assert "ledger_console=" not in page.headers.get("set-cookie", "")


async def test_pages_need_a_session(settings: Settings) -> None:
    async with browser(settings) as web:
        for url in ("/console", "/console/audit", "/console/audit.csv", "/console/accounts/x"):
            response = await web.get(url)
            assert response.status_code == 303, url
            assert response.headers["location"].startswith("/console/sign-in")


async def test_session_works_in_another_process_and_ends_when_the_key_is_revoked(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    auditor = await make_key(client, "auditor")
    async with browser(settings) as first, browser(settings) as second:
        await sign_in(first, auditor["secret"])
        session = first.cookies.get("ledger_console")
        assert session
        second.cookies.set("ledger_console", session, domain="console.test", path="/console")
        assert (await second.get("/console/audit")).status_code == 200  # another app, same DB

        revoked = await client.delete(f"/v1/api-keys/{auditor['id']}")
        assert revoked.status_code in (200, 204), revoked.text
        ended = await second.get("/console/audit")
        assert ended.status_code == 303
        assert ended.headers["location"] == "/console/sign-in?reason=key_revoked"
        rows = sync_db.execute("SELECT count(*) FROM console_sessions").fetchone()
        assert rows == (0,)  # the session itself is gone, not only this browser's cookie
        # The session row is gone too: the first "process" is signed out as well.
        assert (await first.get("/console/audit")).status_code == 303


async def test_sign_out_ends_the_session_everywhere(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    reader = await make_key(client, "reader")
    async with browser(settings) as web:
        await sign_in(web, reader["secret"])
        stolen = web.cookies.get("ledger_console")
        home = await web.get("/console")
        assert home.status_code == 200
        sessions = "SELECT count(*) FROM console_sessions"
        assert sync_db.execute(sessions).fetchone() == (1,)
        out = await web.post("/console/sign-out", data={"_csrf_token": csrf_token(home)})
        assert out.status_code == 303
        assert sync_db.execute(sessions).fetchone() == (0,)
        assert (await web.get("/console")).status_code == 303
    async with browser(settings) as replay:
        replay.cookies.set("ledger_console", stolen or "", domain="console.test", path="/console")
        assert (await replay.get("/console")).status_code == 303


async def test_reader_sees_balances_but_no_audit_records(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    _, a, b = await funded_pair(client, 1_000)
    moved = (await transfer(client, a["id"], b["id"], 250)).json()
    reader = await make_key(client, "reader")
    async with browser(settings) as web:
        signed = await sign_in(web, reader["secret"])
        assert signed.headers["location"] == "/console"
        page = await web.get(f"/console/accounts/{a['id']}")
        assert page.status_code == 200
        assert 'data-field="posted">750<' in page.text
        assert 'data-testid="no-audit-rights"' in page.text
        assert 'data-testid="audit-record"' not in page.text
        history = await web.get(f"/console/transfers/{moved['id']}")
        assert history.status_code == 200
        assert 'data-testid="no-audit-rights"' in history.text
        assert (await web.get("/console/audit")).status_code == 403
        assert (await web.get("/console/audit.csv")).status_code == 403


async def test_account_page_has_chart_statement_and_trail_with_diffs(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    _, a, b = await funded_pair(client, 1_000)
    for amount in (100, 200):
        assert (await transfer(client, a["id"], b["id"], amount)).status_code == 201
    held = (await transfer(client, a["id"], b["id"], 50, pending=True)).json()
    assert (await client.post(f"/v1/transfers/{held['id']}/post", json={})).status_code == 200
    current = (await client.get(f"/v1/accounts/{a['id']}")).json()
    patched = await client.patch(
        f"/v1/accounts/{a['id']}",
        json={"metadata": {"team": "payments"}},
        headers={"If-Match": f'"{current["version"]}"'},
    )
    assert patched.status_code == 200, patched.text
    auditor = await make_key(client, "auditor")
    async with browser(settings) as web:
        await sign_in(web, auditor["secret"])
        page = (await web.get(f"/console/accounts/{a['id']}")).text
        assert 'data-field="posted">650<' in page
        assert "<svg" in page and '<title id="chart-title">' in page
        assert "it starts at 1000 and ends at 650" in page  # the chart's description
        assert page.count("<circle") == 4  # funding and three movements
        trail = page.split('id="audit"', 1)[1]
        actions = [line for line in trail.split('class="action">')[1:]]
        assert [a.split("<", 1)[0] for a in actions][:2] == ["account.update", "transfer.post"]
        # the update's field-level diff, and the post's state change
        assert '<th scope="row">metadata</th>' in trail
        assert "<ins>{&#34;team&#34;:&#34;payments&#34;}</ins>" in trail
        assert "<del>pending</del>" in trail and "<ins>posted</ins>" in trail


async def test_transfer_page_shows_its_history_with_request_ids(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    _, a, b = await funded_pair(client, 1_000)
    made = (await transfer(client, a["id"], b["id"], 300)).json()
    reversed_ = await client.post(
        f"/v1/transfers/{made['id']}/reverse", json={}, headers={"X-Request-ID": "rev-req-1"}
    )
    assert reversed_.status_code == 201, reversed_.text
    auditor = await make_key(client, "auditor")
    async with browser(settings) as web:
        await sign_in(web, auditor["secret"])
        page = (await web.get(f"/console/transfers/{made['id']}")).text
        assert page.count('data-testid="audit-record"') == 2
        assert "transfer.create" in page and "transfer.reverse" in page
        assert "rev-req-1" in page
        assert f"by transfer {reversed_.json()['id']}" in page
        reversal = (await web.get(f"/console/transfers/{reversed_.json()['id']}")).text
        assert f"created by reversing transfer {made['id']}" in reversal


async def test_search_filters_pages_and_csv_export_match(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    _, a, b = await funded_pair(client, 1_000)
    for n in range(3):
        response = await transfer(client, a["id"], b["id"], 1 + n, reference=f"=cmd|{n}")
        assert response.status_code == 201
    auditor = await make_key(client, "auditor")
    async with browser(settings) as web:
        await sign_in(web, auditor["secret"])
        page = await web.get("/console/audit", params={"action": "transfer.create"})
        assert page.status_code == 200
        assert page.text.count('data-testid="audit-record"') == 4  # funding and three
        exported = await web.get("/console/audit.csv", params={"action": "transfer.create"})
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["action"] for r in rows] == ["transfer.create"] * 4
        assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)
        api = (await client.get("/v1/audit", params={"action": "transfer.create"})).json()
        assert [r["id"] for r in rows] == [r["id"] for r in api["data"]]
        assert all(r["data"].startswith("{") for r in rows)

        by_request = await web.get("/console/audit", params={"request_id": "no-such-request"})
        assert 'data-testid="audit-record"' not in by_request.text


async def test_bad_input_is_a_4xx_page_never_a_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    auditor = await make_key(client, "auditor")
    async with browser(settings) as web:
        await sign_in(web, auditor["secret"])
        cases: list[tuple[str, dict[str, Any], int]] = [
            ("/console/audit", {"from": "yesterday"}, 422),
            ("/console/audit", {"to": "9999-99-99"}, 422),
            ("/console/audit", {"after": "-1"}, 422),
            ("/console/audit", {"after": "١٢"}, 422),
            ("/console/audit", {"object_id": "x" * 300}, 422),
            ("/console/audit", {"actor": "a\x00b"}, 422),
            ("/console/audit.csv", {"from": "0000-01-01"}, 422),
            ("/console/accounts/not-a-uuid", {}, 404),
            ("/console/accounts/00000000-0000-0000-0000-000000000000", {}, 404),
            ("/console/transfers/00000000-0000-0000-0000-000000000000", {}, 404),
            ("/console/accounts/00000000-0000-0000-0000-000000000000", {"entries_after": "x"}, 422),
            ("/console/find", {"q": "nothing-like-this"}, 404),
            ("/console", {"after": "not-an-id"}, 422),
        ]
        for url, params, status in cases:
            # A browser asks for HTML and gets a page; another client gets the API's problem.
            page = await web.get(url, params=params, headers={"Accept": "text/html"})
            assert page.status_code == status, (url, params, page.text[:300])
            assert page.headers["content-type"].startswith("text/html")
            problem = await web.get(url, params=params)
            assert problem.status_code == status, (url, params)
            assert problem.headers["content-type"].startswith("application/problem+json")
            assert problem.json()["status"] == status and problem.json()["code"]


async def test_the_json_api_keeps_bearer_keys_and_sets_no_cookie(client: httpx.AsyncClient) -> None:
    made = await client.post(
        "/v1/accounts", json={"code": "console:api", "currency": "EUR", "normal_balance": "debit"}
    )
    assert made.status_code == 201
    assert "set-cookie" not in made.headers
    listed = await client.get("/v1/audit")
    assert listed.status_code == 200 and "set-cookie" not in listed.headers
    schema = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/console")]


async def test_the_chain_panel_shows_the_latest_signed_checkpoint_and_whether_it_holds(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    keyed = settings.with_(audit_signing_key=os.environ[AUDIT_KEY_ENV])
    auditor = await make_key(client, "auditor")
    async with browser(keyed) as web:
        await sign_in(web, auditor["secret"])
        before = _chain_panel((await web.get("/console/audit")).text)
        assert "no signed checkpoint yet" in before
    _, debit, credit = await funded_pair(client, 100)
    await transfer(client, debit["id"], credit["id"], 25)
    sealed = await seal_and_checkpoint(settings)
    assert sealed > 0
    async with browser(keyed) as web:
        await sign_in(web, auditor["secret"])
        panel = _chain_panel((await web.get("/console/audit")).text)
        size = int(re.search(r"size (\d+),", panel).group(1))  # type: ignore[union-attr]
        assert size >= sealed
        assert '<span class="ok">yes</span>' in panel
    other = tmp_path / "other.pem"
    generate_key(other)  # a checkpoint that this key did not sign does not hold for it
    async with browser(keyed.with_(audit_signing_key=str(other))) as web:
        await sign_in(web, auditor["secret"])
        panel = _chain_panel((await web.get("/console/audit")).text)
        assert f"size {size}," in panel
        assert '<span class="bad">' in panel and "yes" not in panel


def _chain_panel(page: str) -> str:
    found = re.search(r'data-testid="chain-state">(.*?)</section>', page, re.S)
    assert found, page[:500]
    return found.group(1)
