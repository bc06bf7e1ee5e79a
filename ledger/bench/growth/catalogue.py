"""The reads of one size, with the answer each must give, from what the fill left behind.

Everything account-scoped is asked of the busy account (5 % of all transfers credit it), the
worst case for a statement or a per-account list. Expected counts come from the database
(read once per size, not timed), so that a page that is too short or too long is caught.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from ledger.bench.growth.reads import (
    PAGE,
    Read,
    body_of,
    expect_body,
    expect_html,
    expect_page,
    get,
    page_of,
)
from ledger.bench.growth.storage import Conn
from ledger.core.errors import BenchAborted

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')
FEED_TAIL = 50  # "near the end" of the feed: this many events before its last
AUDIT_ACTION = "transfer.create"
METADATA_FILTER = {"metadata[channel]": "web"}
# The feed's last position: each relay batch row holds its first position and its event ids.
FEED_LAST = (
    "SELECT coalesce(max(first_position + cardinality(event_ids) - 1), 0) FROM outbox_batches"
)


@dataclass(frozen=True, slots=True)
class Subject:
    """What the reads are about: the busy account, the category and what the fill recorded."""

    busy_id: str
    busy_code: str
    category_id: str
    members: int
    accounts: int
    currency: str


@dataclass(frozen=True, slots=True)
class Expected:
    busy_entries: int
    busy_entries_from_mid: int
    web_transfers: int
    feed_last: int


async def _scalar(conn: Conn, sql: str, params: dict[str, Any]) -> int:
    cursor = await conn.execute(sql, params)
    row = await cursor.fetchone()
    return int(row[0]) if row is not None and isinstance(row[0], int) else 0


async def expected(conn: Conn, busy_id: str, mid: dt.datetime) -> Expected:
    busy = uuid.UUID(busy_id)
    return Expected(
        busy_entries=await _scalar(
            conn, "SELECT count(*) FROM entries WHERE account_id = %(a)s", {"a": busy}
        ),
        busy_entries_from_mid=await _scalar(
            conn,
            "SELECT count(*) FROM entries WHERE account_id = %(a)s AND posted_at >= %(m)s",
            {"a": busy, "m": mid},
        ),
        web_transfers=await _scalar(
            conn,
            "SELECT count(*) FROM transfers WHERE metadata @> %(f)s::jsonb",
            {"f": '{"channel": "web"}'},
        ),
        feed_last=await _scalar(conn, FEED_LAST, {}),
    )


async def console_cookies(http: httpx.AsyncClient, key: str) -> str:
    """Sign in to the console through its form (CSRF token and all) and return the Cookie
    header its pages need. Its cookies are Secure: over plain loopback http a cookie jar would
    keep them back, so the header is built by hand."""
    form = await http.get("/console/sign-in")
    found = CSRF_FIELD.search(form.text)
    csrf = form.cookies.get("ledger_console_csrf")
    if form.status_code != 200 or found is None or csrf is None:
        raise BenchAborted(f"GET /console/sign-in answered {form.status_code} without a form")
    signed = await http.post(
        "/console/sign-in",
        data={"key": key, "_csrf_token": found.group(1)},
        headers={"cookie": f"ledger_console_csrf={csrf}"},
    )
    session = signed.cookies.get("ledger_console")
    if session is None:
        raise BenchAborted(f"the console refused the key at sign-in ({signed.status_code})")
    return f"ledger_console={session}; ledger_console_csrf={csrf}"


async def deep_cursor(http: httpx.AsyncClient, page: int) -> str | None:
    """The cursor of the metadata filter's page `page` (1 = the first), following next_cursor."""
    cursor: str | None = None
    for _ in range(page - 1):
        response = await http.get(
            "/v1/transfers",
            params={**METADATA_FILTER, "cursor": cursor} if cursor else METADATA_FILTER,
        )
        body = body_of(response)
        cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if not isinstance(cursor, str):
            raise BenchAborted(f"the metadata filter's pages ended before page {page}")
    return cursor


async def proof_record(http: httpx.AsyncClient, transfer_id: str) -> str:
    """The audit record that created `transfer_id` (its inclusion proof is the read)."""
    response = await http.get("/v1/audit", params={"object_id": transfer_id})
    data = page_of(response)
    if not data or not isinstance(data[0], dict) or not isinstance(data[0].get("id"), str):
        raise BenchAborted(
            f"GET /v1/audit?object_id= answered {response.status_code} without a record"
        )
    record_id: str = data[0]["id"]
    return record_id


def _within(entry: dict[str, Any], mid: dt.datetime) -> bool:
    posted = entry.get("posted_at")
    return isinstance(posted, str) and dt.datetime.fromisoformat(posted) >= mid


async def reads_for(
    http: httpx.AsyncClient,
    subject: Subject,
    counts: Expected,
    mid: dt.datetime,
    deep_page: int,
    record_id: str,
    cookies: str,
) -> tuple[list[Read], int]:
    """The catalogue at this size, and which page of the metadata filter is the deep one (the
    one asked, or the last there is on a ledger too small for it)."""
    busy, when = subject.busy_id, mid.isoformat()
    pages = max(1, math.ceil(counts.web_transfers / PAGE))
    deep = min(deep_page, pages)
    cursor = await deep_cursor(http, deep)
    deep_length = min(PAGE, counts.web_transfers - (deep - 1) * PAGE)
    near_end = max(counts.feed_last - FEED_TAIL, 0)

    def web(item: dict[str, Any]) -> bool:
        return isinstance(item.get("metadata"), dict) and item["metadata"].get("channel") == "web"

    async def console() -> httpx.Response:
        return await http.get(f"/console/accounts/{busy}", headers={"cookie": cookies})

    reads = [
        Read(
            "account",
            get(http, f"/v1/accounts/{busy}"),
            expect_body(lambda b: isinstance(b, dict) and b.get("id") == busy, "the account"),
        ),
        Read(
            "statement_first_page",
            get(http, f"/v1/accounts/{busy}/entries"),
            expect_page(min(PAGE, counts.busy_entries)),
        ),
        Read(
            "statement_from_mid_date",
            get(http, f"/v1/accounts/{busy}/entries", **{"from": when}),
            expect_page(min(PAGE, counts.busy_entries_from_mid), lambda e: _within(e, mid)),
        ),
        Read(
            "balance_as_of_mid_date",
            get(http, f"/v1/accounts/{busy}/balance", as_of=when),
            expect_body(
                lambda b: isinstance(b, dict) and isinstance(b.get("posted"), int), "a balance"
            ),
        ),
        Read(
            "transfers_of_account",
            get(http, "/v1/transfers", account_id=busy),
            expect_page(
                min(PAGE, counts.busy_entries),
                lambda t: busy in (t.get("debit_account_id"), t.get("credit_account_id")),
            ),
        ),
        Read(
            "metadata_filter_first_page",
            get(http, "/v1/transfers", **METADATA_FILTER),
            expect_page(min(PAGE, counts.web_transfers), web),
        ),
        Read(
            "metadata_filter_deep_page",
            get(http, "/v1/transfers", **METADATA_FILTER, cursor=cursor),
            expect_page(deep_length, web),
        ),
        Read(
            "trial_balance",
            get(http, "/v1/reports/trial-balance", currency=subject.currency),
            expect_body(
                lambda b: (
                    isinstance(b, dict)
                    and b.get("total_debit") == b.get("total_credit")
                    and len(b.get("accounts") or ()) >= subject.accounts
                ),
                "balanced over every account",
            ),
        ),
        Read(
            "category_balance",
            get(http, f"/v1/categories/{subject.category_id}/balance"),
            expect_body(
                lambda b: isinstance(b, dict) and b.get("accounts") == subject.members,
                f"a balance over {subject.members} accounts",
            ),
        ),
        Read(
            "audit_by_object",
            get(http, "/v1/audit", object_id=busy),
            expect_page(1, lambda r: r.get("object_id") == busy),
        ),
        Read(
            "audit_by_action",
            get(http, "/v1/audit", action=AUDIT_ACTION),
            expect_page(PAGE, lambda r: r.get("action") == AUDIT_ACTION),
        ),
        Read("feed_from_start", get(http, "/v1/events"), expect_page(PAGE)),
        Read(
            "feed_near_end",
            get(http, "/v1/events", after=str(near_end) if near_end else None),
            expect_page(min(PAGE, counts.feed_last - near_end)),
        ),
        Read(
            "inclusion_proof",
            get(http, f"/v1/audit/records/{record_id}/proof"),
            expect_body(
                lambda b: (
                    isinstance(b, dict)
                    and isinstance(b.get("leaf_index"), int)
                    and isinstance(b.get("audit_path"), list)
                ),
                "an inclusion proof",
            ),
        ),
        Read("console_account_page", console, expect_html(subject.busy_code)),
    ]
    return reads, deep
