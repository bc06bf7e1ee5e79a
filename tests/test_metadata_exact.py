"""`metadata` comes back exactly as it was sent: every number keeps its text (`1e308` stays four
characters, `1e23` is not reprinted as another number), every string keeps its escapes, in the
create response, reads, lists, batch items, the event feed (on Kafka too) and the audit trail;
a same-`id` retry with the same metadata is a replay (200), and metadata is never more than
16 KiB out.

Bodies are sent and read as bytes: a JSON parser on the test's side would itself change the
number text this file is about."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ledger.core import limits, migrate
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedBroker
from outbox.relay import Relay
from tests.audit_helpers import seal_all
from tests.helpers import app_client, balances, create_account, funded_pair
from tests.test_api_accounts import assert_problem
from tests.test_events import kafka_settings, read_topic

JSON = {"content-type": "application/json"}

# One object with every kind of number text a JSON float or double parser would reprint, and
# strings with escapes that a re-encoder would write otherwise.
EXACT = (
    b'{"huge":1e308,"inexact":1e23,"negative_zero":-0.0,"one":1.0,"tenth":0.1,'
    b'"big":123456789012345678901234567890,"upper":1E5,"plus":2.5e+3,"scaled":2.50,'
    b'"tiny":5e-324,"nested":{"list":[1,-1.5e-7,{"deeper":[null,true,false]}],"empty":{}},'
    b'"unicode":"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80",'
    b'"escapes":"tab\\t quote\\" slash\\/ e-acute\\u00e9 emoji\\ud83d\\ude00 nl\\n back\\\\"}'
)
OTHER = b'{"huge":-1.7976931348623157e308,"inexact":1e-7,"n":[0.30000000000000004]}'


class HasMetadata(msgspec.Struct):
    """Any object with a `metadata` member, read as the exact text it holds."""

    metadata: msgspec.Raw


class Page(msgspec.Struct):
    data: list[HasMetadata]


class BatchItem(msgspec.Struct):
    status: int
    transfer: HasMetadata | None = None


class Batch(msgspec.Struct):
    results: list[BatchItem]


class Envelope(msgspec.Struct):
    type: str
    subject: str
    data: dict[str, msgspec.Raw]


class Feed(msgspec.Struct):
    data: list[Envelope]


class AuditRecord(msgspec.Struct):
    action: str
    object_id: str
    data: dict[str, dict[str, msgspec.Raw]]


class BatchId(msgspec.Struct):
    id: str


class BatchIdItem(msgspec.Struct):
    transfer: BatchId


class BatchIds(msgspec.Struct):
    results: list[BatchIdItem]


class AuditPage(msgspec.Struct):
    data: list[AuditRecord]


def metadata_of(response: httpx.Response) -> bytes:
    return bytes(msgspec.json.decode(response.content, type=HasMetadata).metadata)


def account_body(metadata: bytes, account_id: str | None = None) -> bytes:
    head = {
        "code": f"exact:{uuid.uuid4().hex[:12]}",
        "currency": "USD",
        "normal_balance": "credit",
        **({"id": account_id} if account_id else {}),
    }
    return json.dumps(head)[:-1].encode() + b',"metadata":' + metadata + b"}"


def transfer_fields(debit: str, credit: str, amount: int, transfer_id: str | None = None) -> bytes:
    head: dict[str, Any] = {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
    }
    if transfer_id is not None:
        head["id"] = transfer_id
    return json.dumps(head)[:-1].encode()


def transfer_body(metadata: bytes, debit: str, credit: str, transfer_id: str) -> bytes:
    return transfer_fields(debit, credit, 7, transfer_id) + b',"metadata":' + metadata + b"}"


async def test_account_metadata_comes_back_as_sent(client: httpx.AsyncClient) -> None:
    account_id = str(uuid.uuid4())
    body = account_body(EXACT, account_id)
    created = await client.post("/v1/accounts", content=body, headers=JSON)
    assert created.status_code == 201, created.text
    assert metadata_of(created) == EXACT
    code = created.json()["code"]

    read = await client.get(f"/v1/accounts/{account_id}")
    assert metadata_of(read) == EXACT
    listed = await client.get("/v1/accounts", params={"code": code})
    assert [bytes(a.metadata) for a in msgspec.json.decode(listed.content, type=Page).data] == [
        EXACT
    ]

    # The same create again is a replay, not `account_exists_with_different_fields`.
    again = await client.post("/v1/accounts", content=body, headers=JSON)
    assert again.status_code == 200, again.text
    assert again.content == read.content

    patched = await client.patch(
        f"/v1/accounts/{account_id}",
        content=b'{"metadata":' + OTHER + b"}",
        headers={**JSON, "If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    assert metadata_of(patched) == OTHER
    assert metadata_of(await client.get(f"/v1/accounts/{account_id}")) == OTHER

    # A patch without metadata leaves it as it is; `null` clears it.
    url = f"/v1/accounts/{account_id}"
    frozen = await client.patch(url, json={"status": "frozen"}, headers={"If-Match": '"2"'})
    assert (frozen.status_code, metadata_of(frozen)) == (200, OTHER)
    cleared = await client.patch(url, json={"metadata": None}, headers={"If-Match": '"3"'})
    assert (cleared.status_code, metadata_of(cleared)) == (200, b"{}")


async def test_transfer_metadata_comes_back_as_sent(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 1_000)
    transfer_id = str(uuid.uuid4())
    body = transfer_body(EXACT, a["id"], b["id"], transfer_id)
    created = await client.post("/v1/transfers", content=body, headers=JSON)
    assert created.status_code == 201, created.text
    assert metadata_of(created) == EXACT

    read = await client.get(f"/v1/transfers/{transfer_id}")
    assert metadata_of(read) == EXACT
    listed = await client.get("/v1/transfers", params={"account_id": a["id"], "limit": 1000})
    texts = [bytes(t.metadata) for t in msgspec.json.decode(listed.content, type=Page).data]
    assert EXACT in texts

    # A retry, through group commit and with an Idempotency-Key (the one-request path), is a
    # replay: 200 with the transfer as stored, and no money moves twice.
    for headers in (JSON, {**JSON, "Idempotency-Key": f"exact-{uuid.uuid4()}"}):
        again = await client.post("/v1/transfers", content=body, headers=headers)
        assert again.status_code == 200, again.text
        assert metadata_of(again) == EXACT
    assert (await balances(client, b["id"]))["posted"] == 7

    items = [
        transfer_fields(a["id"], b["id"], 1) + b',"metadata":' + EXACT + b"}",
        transfer_fields(a["id"], b["id"], 7, transfer_id) + b',"metadata":' + EXACT + b"}",
    ]
    batch = await client.post(
        "/v1/transfers/batch",
        content=b'{"atomic":false,"transfers":[' + b",".join(items) + b"]}",
        headers=JSON,
    )
    assert batch.status_code == 200, batch.text
    results = msgspec.json.decode(batch.content, type=Batch).results
    assert [r.status for r in results] == [201, 200]
    assert [bytes(r.transfer.metadata) for r in results if r.transfer] == [EXACT, EXACT]


# 500 metadata texts, each a number text a parser would reprint: a batch this large is written
# with COPY (ledger/core/bulk.py), a different path to the same columns.
COPIED_TEXTS = [b'{"n":%d,"x":1e%d,"y":%d.50}' % (n, n % 300, n) for n in range(500)]


async def copied_batch(client: httpx.AsyncClient, debit: str, credit: str) -> httpx.Response:
    """One atomic batch of a transfer of 1 per text of COPIED_TEXTS, accepted."""
    items = [transfer_fields(debit, credit, 1) + b',"metadata":' + t + b"}" for t in COPIED_TEXTS]
    response = await client.post(
        "/v1/transfers/batch",
        content=b'{"atomic":true,"transfers":[' + b",".join(items) + b"]}",
        headers=JSON,
    )
    assert response.status_code == 200, response.text
    return response


async def test_a_copied_batch_keeps_metadata_text(client: httpx.AsyncClient) -> None:
    """From 500 rows a batch is written with COPY, a different path to the same columns."""
    _source, a, b = await funded_pair(client, 10_000)
    texts = COPIED_TEXTS
    response = await copied_batch(client, a["id"], b["id"])
    results = msgspec.json.decode(response.content, type=Batch).results
    assert [bytes(r.transfer.metadata) for r in results if r.transfer] == texts
    page = await client.get("/v1/transfers", params={"account_id": b["id"], "limit": 1000})
    stored = {bytes(t.metadata) for t in msgspec.json.decode(page.content, type=Page).data}
    assert set(texts) <= stored


async def test_whitespace_and_key_order_are_not_a_conflict_but_number_text_is(
    client: httpx.AsyncClient,
) -> None:
    """Metadata is kept without insignificant whitespace and with every token as sent. A retry
    with the same members in another order, other spacing or other string escapes is a replay;
    a number written otherwise (`1` for `1.0`) is other metadata: it would come back with a
    different text."""
    account_id = str(uuid.uuid4())
    first = b'{ "b" : [ 1.0 , "\\u00e9" ] ,\n "a" : { "x" : 1e5 } }'
    kept = b'{"b":[1.0,"\\u00e9"],"a":{"x":1e5}}'
    created = await client.post(
        "/v1/accounts", content=account_body(first, account_id), headers=JSON
    )
    assert created.status_code == 201, created.text
    assert metadata_of(created) == kept
    code = created.json()["code"]

    def same_account(metadata: bytes) -> bytes:
        head = {"id": account_id, "code": code, "currency": "USD", "normal_balance": "credit"}
        return json.dumps(head)[:-1].encode() + b',"metadata":' + metadata + b"}"

    for replay in (kept, b'{"a":{"x":1e5},"b":[1.0,"\xc3\xa9"]}'):
        again = await client.post("/v1/accounts", content=same_account(replay), headers=JSON)
        assert again.status_code == 200, again.text
        assert metadata_of(again) == kept
    for other in (
        b'{"a":{"x":1e5},"b":[1,"\\u00e9"]}',
        b'{"a":{"x":100000},"b":[1.0,"\\u00e9"]}',
        b'{"a":{"x":"1e5"},"b":[1.0,"\\u00e9"]}',
    ):
        conflict = await client.post("/v1/accounts", content=same_account(other), headers=JSON)
        assert_problem(conflict, 409, "account_exists_with_different_fields")

    _source, a, b = await funded_pair(client, 100)
    transfer_id = str(uuid.uuid4())
    created = await client.post(
        "/v1/transfers", content=transfer_body(first, a["id"], b["id"], transfer_id), headers=JSON
    )
    assert created.status_code == 201, created.text
    reordered = b'{"a":{"x":1e5},"b":[1.0,"\xc3\xa9"]}'
    again = await client.post(
        "/v1/transfers",
        content=transfer_body(reordered, a["id"], b["id"], transfer_id),
        headers=JSON,
    )
    assert again.status_code == 200, again.text
    assert metadata_of(again) == kept
    other = b'{"a":{"x":1E5},"b":[1.0,"\\u00e9"]}'
    conflict = await client.post(
        "/v1/transfers", content=transfer_body(other, a["id"], b["id"], transfer_id), headers=JSON
    )
    assert_problem(conflict, 409, "transfer_exists_with_different_fields")
    assert (await balances(client, b["id"]))["posted"] == 7


def filled(number: bytes, size_bytes: int) -> bytes:
    """An object of `"kN":<number>` members, as large as fits in `size_bytes`."""
    members: list[bytes] = []
    while True:
        member = b'"k%d":%s' % (len(members), number)
        if len(b"{" + b",".join([*members, member]) + b"}") > size_bytes:
            return b"{" + b",".join(members) + b"}"
        members.append(member)


async def test_16_kib_of_1e308_is_accepted_and_comes_back_under_16_kib(
    client: httpx.AsyncClient,
) -> None:
    big = filled(b"1e308", limits.METADATA_BYTES_MAX)
    assert limits.METADATA_BYTES_MAX - 10 < len(big) <= limits.METADATA_BYTES_MAX
    _source, a, b = await funded_pair(client, 100)
    created = await client.post(
        "/v1/transfers",
        content=transfer_body(big, a["id"], b["id"], str(uuid.uuid4())),
        headers=JSON,
    )
    assert created.status_code == 201, created.text
    read = await client.get(f"/v1/transfers/{created.json()['id']}")
    assert metadata_of(read) == big
    assert len(read.content) < limits.METADATA_BYTES_MAX + 1024

    # Past the bound is refused, and moves no money.
    over = big[:-1] + b',"overflow":1e308}'
    assert len(over) > limits.METADATA_BYTES_MAX
    refused = await client.post(
        "/v1/transfers",
        content=transfer_body(over, a["id"], b["id"], str(uuid.uuid4())),
        headers=JSON,
    )
    assert_problem(refused, 422, "validation_error")
    assert refused.json()["errors"][0]["field"] == "metadata"
    assert (await balances(client, b["id"]))["posted"] == 7


# Numbers the service cannot keep: out of a double's range (JSON consumers could not read them),
# or with more digits after the point than PostgreSQL's numeric holds (the queryable copy).
UNKEEPABLE = [
    b'{"n":1e400}',
    b'{"n":-1e400}',
    b'{"n":1e-20000}',
    b'{"n":4.' + b"9" * 16_100 + b"e-324}",
]


@pytest.mark.parametrize("metadata", UNKEEPABLE, ids=["1e400", "-1e400", "1e-20000", "scale"])
async def test_numbers_that_cannot_be_kept_are_refused_and_move_no_money(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any], metadata: bytes
) -> None:
    _source, a, b = await funded_pair(client, 100)
    body = transfer_body(metadata, a["id"], b["id"], str(uuid.uuid4()))
    response = await client.post("/v1/transfers", content=body, headers=JSON)
    assert_problem(response, 422, "validation_error")
    assert response.json()["errors"][0]["field"] == "metadata"
    account = await client.post("/v1/accounts", content=account_body(metadata), headers=JSON)
    assert_problem(account, 422, "validation_error")
    assert (await balances(client, b["id"]))["posted"] == 0
    row = sync_db.execute("SELECT count(*) FROM transfers").fetchone()
    assert row == (1,)  # the funding transfer only


class RawFeed(msgspec.Struct):
    data: list[msgspec.Raw]
    resume_cursor: str | None


async def feed_envelopes(client: httpx.AsyncClient) -> list[bytes]:
    """Every envelope of the feed, each as the bytes the feed answered."""
    envelopes: list[bytes] = []
    cursor: str | None = None
    while True:
        params = {"limit": 1000, **({"after": cursor} if cursor else {})}
        response = await client.get("/v1/events", params=params)
        assert response.status_code == 200, response.text
        page = msgspec.json.decode(response.content, type=RawFeed)
        if not page.data:
            return envelopes
        envelopes.extend(bytes(e) for e in page.data)
        cursor = page.resume_cursor


async def test_events_carry_metadata_as_sent(
    client: httpx.AsyncClient, settings: Settings, broker: EmbeddedBroker
) -> None:
    """On Kafka and in the feed, an event's metadata is the text the client sent, for events
    written one statement per table and for the COPY of a 600-transfer batch; the Kafka value
    and the feed's envelope are the same bytes, keys in the contract's order."""
    account = await client.post("/v1/accounts", content=account_body(EXACT), headers=JSON)
    assert account.status_code == 201, account.text
    _source, a, b = await funded_pair(client, 10_000)
    moved = await client.post(
        "/v1/transfers",
        content=transfer_body(EXACT, a["id"], b["id"], str(uuid.uuid4())),
        headers=JSON,
    )
    assert moved.status_code == 201, moved.text
    copied = [EXACT[:-1] + b',"n":%d,"x":1e%d}' % (n, n % 300) for n in range(600)]
    items = [transfer_fields(a["id"], b["id"], 1) + b',"metadata":' + t + b"}" for t in copied]
    batch = await client.post(
        "/v1/transfers/batch",
        content=b'{"atomic":true,"transfers":[' + b",".join(items) + b"]}",
        headers=JSON,
    )
    assert batch.status_code == 200, batch.text
    batch_ids = [r.transfer.id for r in msgspec.json.decode(batch.content, type=BatchIds).results]
    assert len(batch_ids) == 600

    ksettings = kafka_settings(settings, broker)
    relay = Relay(ksettings)
    try:
        while await relay.step():
            pass
    finally:
        await relay.close()

    feed = await feed_envelopes(client)
    on_kafka = [bytes(r.value) for r in await read_topic(ksettings)]
    assert sorted(on_kafka) == sorted(feed)
    assert all(e.startswith(b'{"specversion":"1.0","id":"') for e in feed)
    by_subject: dict[tuple[str, str], Envelope] = {}
    for raw in feed:
        event = msgspec.json.decode(raw, type=Envelope)
        by_subject[(event.type, event.subject)] = event
    created = by_subject[("ledger.account.created", account.json()["id"])]
    posted = by_subject[("ledger.transfer.posted", moved.json()["id"])]
    assert bytes(created.data["metadata"]) == EXACT
    assert bytes(posted.data["metadata"]) == EXACT
    assert [
        bytes(by_subject[("ledger.transfer.posted", i)].data["metadata"]) for i in batch_ids
    ] == copied


CONTRACT_KEY_ORDER = (
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "sequence",
    "traceparent",
    "data",
)


async def test_envelopes_written_before_0008_keep_their_events_in_contract_order(
    client: httpx.AsyncClient, db_url: str, sync_db: psycopg.Connection[Any]
) -> None:
    """Envelopes written while the column was jsonb keep jsonb's text (their original text is
    lost) with their keys back in the contract's order, values unchanged; the feed serves them
    as the migration left them."""
    await client.post("/v1/accounts", content=account_body(b'{"a":[1.5,"x"]}'), headers=JSON)
    await funded_pair(client, 100)
    migrate.downgrade(db_url, "0007")
    kind = sync_db.execute(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'outbox_events' AND column_name = 'envelope'"
    ).fetchone()
    assert kind == ("jsonb",)
    before = dict(sync_db.execute("SELECT id, envelope FROM outbox_events").fetchall())
    assert before
    migrate.upgrade(db_url)
    after = dict(sync_db.execute("SELECT id, envelope::text FROM outbox_events").fetchall())
    assert {i: json.loads(text) for i, text in after.items()} == before
    for text in after.values():
        assert text.startswith('{"specversion":"1.0","id":"'), text
        keys = list(json.loads(text))
        assert keys == [k for k in CONTRACT_KEY_ORDER if k in keys], keys
    # What the relay would record for them: one batch of the window they are in, finished.
    sync_db.execute(
        "INSERT INTO outbox_batches (first_position, event_ids, published_at, window_low, "
        "window_high, window_after_id) "
        "SELECT coalesce((SELECT max(first_position + cardinality(event_ids)) "
        "FROM outbox_batches), 1), array_agg(e.id ORDER BY e.id), now(), '2:2:', "
        "CAST(pg_current_snapshot() AS text), 9223372036854775807 FROM outbox_events e "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
    )
    feed = await feed_envelopes(client)
    assert sorted(feed) == sorted(text.encode() for text in after.values())


async def test_audit_records_carry_metadata_as_sent(client: httpx.AsyncClient) -> None:
    account = await client.post("/v1/accounts", content=account_body(EXACT), headers=JSON)
    assert account.status_code == 201, account.text
    _source, a, b = await funded_pair(client, 100)
    moved = await client.post(
        "/v1/transfers",
        content=transfer_body(EXACT, a["id"], b["id"], str(uuid.uuid4())),
        headers=JSON,
    )
    assert moved.status_code == 201, moved.text
    for object_id in (account.json()["id"], moved.json()["id"]):
        page = await client.get("/v1/audit", params={"object_id": object_id})
        [record] = msgspec.json.decode(page.content, type=AuditPage).data
        assert bytes(record.data["request"]["metadata"]) == EXACT, record.action
        assert bytes(record.data["result"]["metadata"]) == EXACT, record.action


async def test_audit_records_from_before_0009_answer_their_jsonb_text_and_seals_verify(
    client: httpx.AsyncClient, settings: Settings, db_url: str
) -> None:
    """Records written before `data_text` existed answer jsonb's text of `data` (their sent
    text is lost); seals made before and after the migration verify, new records answer the
    exact text."""
    old = await client.post("/v1/accounts", content=account_body(EXACT), headers=JSON)
    assert old.status_code == 201, old.text
    await seal_all(settings)
    migrate.downgrade(db_url, "0008")
    migrate.upgrade(db_url)
    async with app_client(settings) as fresh:  # a new pool: no plan cached before the migration
        new = await fresh.post("/v1/accounts", content=account_body(EXACT), headers=JSON)
        assert new.status_code == 201, new.text
        await seal_all(settings)
        verified = await fresh.get("/v1/audit/verify")
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.text
        texts = {}
        for account in (old, new):
            page = await fresh.get("/v1/audit", params={"object_id": account.json()["id"]})
            [record] = msgspec.json.decode(page.content, type=AuditPage).data
            texts[account.json()["id"]] = bytes(record.data["request"]["metadata"])
    assert texts[new.json()["id"]] == EXACT
    old_text = texts[old.json()["id"]]
    assert old_text != EXACT  # jsonb's reprint: `1e23` is `100000000000000000000000`
    assert json.loads(old_text, parse_int=float) == json.loads(EXACT, parse_int=float)


async def test_the_migration_keeps_what_jsonb_held_for_rows_written_before_it(
    client: httpx.AsyncClient, settings: Settings, db_url: str, sync_db: psycopg.Connection[Any]
) -> None:
    """Rows from before migration 0006 get their text from the jsonb column (the text they were
    sent with is lost), final transfers and closed accounts included; the guard triggers are
    back on afterwards."""
    plain = await create_account(client, metadata={"a": 1, "b": [1.5, "x"]})
    closed = await create_account(client, metadata={"c": "closed"})
    response = await client.patch(
        f"/v1/accounts/{closed['id']}", json={"status": "closed"}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200, response.text
    _source, a, b = await funded_pair(client, 100)
    held = await client.post(
        "/v1/transfers",
        content=transfer_fields(a["id"], b["id"], 5) + b',"pending":true,"metadata":{"t":2.50}}',
        headers=JSON,
    )
    assert held.status_code == 201, held.text
    voided = await client.post(f"/v1/transfers/{held.json()['id']}/void")
    assert voided.status_code == 200, voided.text
    before = {
        table: dict(sync_db.execute(f"SELECT id, metadata::text FROM {table}").fetchall())
        for table in ("accounts", "transfers")
    }

    migrate.downgrade(db_url, "0005")
    migrate.upgrade(db_url)

    for table, texts in before.items():
        after = dict(sync_db.execute(f"SELECT id, metadata_text FROM {table}").fetchall())
        assert after == texts
    assert before["transfers"][uuid.UUID(held.json()["id"])] == '{"t": 2.50}'
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sync_db.execute("UPDATE transfers SET updated_at = now() WHERE state = 'voided'")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sync_db.execute(
            "UPDATE accounts SET version = version + 1 WHERE id = %s", (uuid.UUID(closed["id"]),)
        )
    async with app_client(settings) as fresh:  # a new pool: no plan cached before the migration
        read = await fresh.get(f"/v1/accounts/{plain['id']}")
        assert metadata_of(read) == b'{"a": 1, "b": [1.5, "x"]}'


# -- any JSON object comes back as sent -------------------------------------------------------


def number_texts(value: float) -> list[str]:
    """Ways a client may write one double: Python's repr (the shortest that round-trips), 17
    significant digits, 7 with an upper-case exponent, a fixed point with a trailing zero."""
    texts = [repr(value), f"{value:.17g}", f"{value:E}".replace("E+", "E")]
    if math.isfinite(value) and abs(value) < 1e15:
        texts.append(f"{value:.3f}0")
    return texts


json_numbers = st.one_of(
    st.integers(-(2**100), 2**100).map(str),
    st.floats(allow_nan=False, allow_infinity=False).flatmap(
        lambda x: st.sampled_from(number_texts(x))
    ),
)
json_strings = st.tuples(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
    st.booleans(),
).map(lambda pair: json.dumps(pair[0], ensure_ascii=pair[1]))


def _name(member: tuple[str, str]) -> str:
    name: str = json.loads(member[0])
    return name


json_texts = st.recursive(
    st.one_of(json_numbers, json_strings, st.sampled_from(["true", "false", "null"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        # Each name once per object (as read, escapes aside): a name written twice is refused.
        st.lists(st.tuples(json_strings, inner), max_size=4, unique_by=_name).map(
            lambda members: "{" + ",".join(f"{k}:{v}" for k, v in members) + "}"
        ),
    ),
    max_leaves=12,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


json_objects = (
    st.lists(st.tuples(json_strings, json_texts), max_size=6, unique_by=_name)
    .map(lambda members: ("{" + ",".join(f"{k}:{v}" for k, v in members) + "}").encode())
    .filter(lambda text: depth(json.loads(text)) <= limits.METADATA_DEPTH_MAX)
)
EXAMPLES = hypothesis_settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_any_json_object_round_trips_exactly(db_url: str, settings: Settings) -> None:
    from ledger.cli.main import ensure_admin_key

    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        loop.run_until_complete(ensure_admin_key(settings))
        http = loop.run_until_complete(stack.enter_async_context(app_client(settings)))

        @EXAMPLES
        @given(metadata=json_objects)
        def check(metadata: bytes) -> None:
            created = loop.run_until_complete(
                http.post("/v1/accounts", content=account_body(metadata), headers=JSON)
            )
            assert created.status_code == 201, (metadata, created.text)
            assert metadata_of(created) == metadata
            read = loop.run_until_complete(http.get(f"/v1/accounts/{created.json()['id']}"))
            assert metadata_of(read) == metadata

        check()
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
