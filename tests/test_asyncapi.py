"""`GET /schema/asyncapi.json`: a valid AsyncAPI 3.0 document, and every event the ledger
publishes (read back from the HTTP feed and from a real Kafka topic) validates against it.

The whole document is checked against the official AsyncAPI 3.0.0 JSON Schema from the npm
package `@asyncapi/specs`, which `make install` / `make test` fetch into .venv/specs (a pinned
version, its sha256 checked here): no PyPI package ships that schema, and the model packages there
refuse valid documents (pydantic-asyncapi 0.3.2 wants a licence URL and knows no Kafka message
binding). LEDGER_TEST_ASYNCAPI_SPEC may name the file elsewhere."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT7

from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedBroker
from ledger.worker.jobs import expire_step
from outbox.relay import Relay
from tests.helpers import app_client, create_account, funded_pair, transfer
from tests.test_events import DEADLINE_SECONDS, TRACEPARENT, drain, kafka_settings, read_topic

ASYNCAPI_SPEC = Path(
    os.environ.get(
        "LEDGER_TEST_ASYNCAPI_SPEC",
        Path(__file__).resolve().parent.parent / ".venv" / "specs" / "asyncapi-3.0.0.json",
    )
)
# schemas/3.0.0-without-$id.json of @asyncapi/specs 6.11.1 (the Makefile's version).
ASYNCAPI_SPEC_SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"
DOC_URI = "urn:ledger:asyncapi"  # where the served document is registered for `$ref`s
# Section 5 of the contract: the document must describe exactly these.
CONTRACT_TYPES = {
    "ledger.account.created",
    "ledger.account.updated",
    "ledger.account.balance_changed",
    "ledger.transfer.pending",
    "ledger.transfer.posted",
    "ledger.transfer.voided",
    "ledger.transfer.expired",
    "ledger.transfer.reversed",
    "ledger.account.monitor_triggered",
    # Reporting (categories): subject the category, sequence its version.
    "ledger.category.created",
    "ledger.category.updated",
    "ledger.category.account_added",
    "ledger.category.account_removed",
}
# Free-form metadata as clients send it: non-ASCII, a float, nesting, every JSON kind.
METADATA = {
    "note": "café ☕ \u2013 ünïcode",
    "ratio": 1.5,
    "tags": ["a", 1, None, True],
    "n": {"x": -1},
}
FORMATS = FormatChecker()


# -- reading the document -------------------------------------------------------------------------


async def fetch_document(client: httpx.AsyncClient) -> dict[str, Any]:
    # Unauthenticated, like /schema/openapi.json.
    response = await client.get("/schema/asyncapi.json", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


class Schemas:
    """Validators for the payload, headers and key of each message of a served document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            DOC_URI, DRAFT7.create_resource(document)
        )
        self.messages: dict[str, dict[str, Any]] = document["components"]["messages"]

    def resolve(self, ref: str) -> Any:
        return self.registry.resolver().lookup(f"{DOC_URI}{ref}").contents

    def validator(self, pointer: str) -> Draft7Validator:
        return Draft7Validator(
            {"$ref": f"{DOC_URI}#{pointer}"}, registry=self.registry, format_checker=FORMATS
        )

    def payload(self, event_type: str) -> Draft7Validator:
        assert event_type in self.messages, f"no message for {event_type}"
        return self.validator(f"/components/messages/{event_type}/payload")

    def headers(self, event_type: str) -> Draft7Validator:
        return self.validator(f"/components/messages/{event_type}/headers")

    def key(self, event_type: str) -> Draft7Validator:
        return self.validator(f"/components/messages/{event_type}/bindings/kafka/key")


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def errors(validator: Draft7Validator, instance: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


# -- the document ---------------------------------------------------------------------------------


async def test_the_document_is_valid_asyncapi_3_with_a_json_schema_for_every_part(
    settings: Settings,
) -> None:
    topic = f"ledger.events.doc.{uuid.uuid4().hex[:8]}"
    async with app_client(settings.with_(kafka_topic=topic)) as client:
        document = await fetch_document(client)

    raw = await asyncio.to_thread(ASYNCAPI_SPEC.read_bytes)  # missing: run `make install`
    assert hashlib.sha256(raw).hexdigest() == ASYNCAPI_SPEC_SHA256, "another AsyncAPI schema"
    spec = json.loads(raw)
    Draft7Validator.check_schema(spec)
    assert errors(Draft7Validator(spec), document) == []
    assert document["asyncapi"] == "3.0.0"
    assert "servers" not in document  # no host names in a published document

    # One channel, the configured topic, and one `send` operation naming every message.
    [(channel_name, channel)] = document["channels"].items()
    assert channel["address"] == topic
    assert channel["bindings"]["kafka"]["topic"] == topic
    [operation] = document["operations"].values()
    assert operation["action"] == "send"
    assert operation["channel"] == {"$ref": f"#/channels/{channel_name}"}
    assert set(channel["messages"]) == set(document["components"]["messages"]) == CONTRACT_TYPES
    assert sorted(m["$ref"] for m in operation["messages"]) == sorted(
        f"#/channels/{channel_name}/messages/{t}" for t in CONTRACT_TYPES
    )

    schemas = Schemas(document)
    for ref in set(refs(document)):  # every reference resolves inside the document
        assert schemas.resolve(ref) is not None, ref
    for schema in document["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)
    for event_type, message in schemas.messages.items():
        assert message["contentType"] == "application/cloudevents+json; charset=UTF-8"
        payload = message["payload"]
        for schema in (payload, schemas.resolve(message["headers"]["$ref"])):
            Draft7Validator.check_schema(schema)
        Draft7Validator.check_schema(message["bindings"]["kafka"]["key"])
        properties = payload["properties"]
        assert properties["type"] == {"const": event_type}
        assert payload["additionalProperties"] is False
        assert {"id", "type", "subject", "time", "data"} <= set(payload["required"])
        sequenced = event_type.startswith(("ledger.account.", "ledger.category."))
        assert ("sequence" in payload["required"]) is sequenced, event_type
        if sequenced:
            assert properties["sequence"]["pattern"] == "^[0-9]{20}$"
        else:
            assert "sequence" not in properties, event_type


async def test_nothing_a_request_carries_changes_the_document_or_breaks_the_route(
    client: httpx.AsyncClient,
) -> None:
    plain = await fetch_document(client)
    hostile = await client.get(
        "/schema/asyncapi.json",
        params={"topic": "other\x00\u2028", "address": "x\n"},
        headers={"Authorization": "Bearer \u00e9\u00e9".encode(), "Accept": "application/yaml"},
    )
    assert hostile.status_code == 200 and hostile.json() == plain  # the topic is the server's
    # The route lives beside Litestar's /schema routes: those still answer, the rest is a 404.
    assert (await client.get("/schema/openapi.json")).status_code == 200
    for path in ("/schema/asyncapi.yaml", "/schema/asyncapi.json/x"):
        assert (await client.get(path)).status_code == 404, path
    refused = await client.post("/schema/asyncapi.json", json={})
    assert refused.status_code == 405


# -- every published event validates ---------------------------------------------------------------


async def representative_run(client: httpx.AsyncClient) -> set[str]:
    """Every kind of change the ledger makes; returns the id of the hold left to expire."""
    timed = await create_account(client, metadata=METADATA)
    source, a, b = await funded_pair(client, 10_000)
    # A hold with a short timeout first, so that it is due by the time the rest is done.
    expiring = await transfer(client, a["id"], b["id"], 5, pending=True, timeout_seconds=1)
    assert expiring.status_code == 201, expiring.text

    account = await client.get(f"/v1/accounts/{timed['id']}")
    patched = await client.patch(
        f"/v1/accounts/{timed['id']}",
        json={"metadata": {**METADATA, "changed": True}},
        headers={"If-Match": account.headers["etag"]},
    )
    assert patched.status_code == 200, patched.text
    monitor = await client.post(
        f"/v1/accounts/{a['id']}/monitors",
        json={"field": "available", "operator": "lt", "value": 9_500},
    )
    assert monitor.status_code == 201, monitor.text
    history = await create_account(client, normal_balance="debit", min_balance=None)
    imported = await transfer(
        client, history["id"], timed["id"], 2, imported_at="2020-01-01T00:00:00Z"
    )
    assert imported.status_code == 201, imported.text

    traced = await client.post(
        "/v1/transfers",
        json={
            "debit_account_id": a["id"],
            "credit_account_id": b["id"],
            "amount": 700,
            "reference": "order-1",
            "metadata": METADATA,
        },
        headers={"traceparent": TRACEPARENT},
    )
    assert traced.status_code == 201, traced.text
    held = (await transfer(client, a["id"], b["id"], 300, pending=True)).json()
    posted = await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": 200})
    assert posted.status_code == 200, posted.text
    released = (await transfer(client, a["id"], b["id"], 50, pending=True)).json()
    voided = await client.post(f"/v1/transfers/{released['id']}/void")
    assert voided.status_code == 200, voided.text
    reversed_ = await client.post(
        f"/v1/transfers/{traced.json()['id']}/reverse", json={"amount": 1}
    )
    assert reversed_.status_code == 201, reversed_.text
    batch = await client.post(
        "/v1/transfers/batch",
        json={
            "atomic": True,
            "transfers": [
                {"debit_account_id": source["id"], "credit_account_id": b["id"], "amount": 9},
                {"debit_account_id": b["id"], "credit_account_id": a["id"], "amount": 4},
                {
                    "debit_account_id": a["id"],
                    "credit_account_id": timed["id"],
                    "amount": 3,
                    "pending": True,
                },
            ],
        },
    )
    assert batch.status_code == 200, batch.text
    assert all(r["status"] == 201 for r in batch.json()["results"]), batch.text
    await category_changes(client, a, b)
    return {expiring.json()["id"]}


async def category_changes(client: httpx.AsyncClient, a: dict[str, Any], b: dict[str, Any]) -> None:
    """Every kind of category change: create (a root and a child), move, metadata, membership."""
    root = await client.post(
        "/v1/categories", json={"code": "cat:root", "currency": "USD", "normal_balance": "credit"}
    )
    assert root.status_code == 201, root.text
    child = await client.post(
        "/v1/categories",
        json={
            "code": "cat:child",
            "currency": "USD",
            "normal_balance": "debit",
            "parent_id": root.json()["id"],
            "metadata": METADATA,
        },
    )
    assert child.status_code == 201, child.text
    child_id = child.json()["id"]
    moved = await client.patch(f"/v1/categories/{child_id}", json={"parent_id": None})
    assert moved.status_code == 200, moved.text
    for account in (a, b):
        added = await client.put(f"/v1/categories/{child_id}/accounts/{account['id']}")
        assert added.status_code == 201, added.text
    removed = await client.delete(f"/v1/categories/{child_id}/accounts/{b['id']}")
    assert removed.status_code == 200, removed.text


async def expire_due_holds(settings: Settings, due: set[str]) -> None:
    """The worker's expiry job, run until the due holds have expired (they are due within 1 s)."""
    engine = create_engine(settings, pool_size=1)
    try:
        sessionmaker = create_sessionmaker(engine)
        expired = 0
        stop_at = time.monotonic() + DEADLINE_SECONDS
        while expired < len(due):
            if time.monotonic() > stop_at:
                raise AssertionError("the holds never expired")
            expired += await expire_step(sessionmaker)
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


async def walk_feed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1_000):
        params: dict[str, Any] = {"limit": 100, **({"after": cursor} if cursor else {})}
        response = await client.get("/v1/events", params=params)
        assert response.status_code == 200, response.text
        seen.extend(response.json()["data"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk never ended")


def mutations(envelope: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Envelopes that are wrong in one way each, all of which the document must refuse."""
    # Account and category events carry their subject's version as `sequence`.
    account = envelope["type"].startswith(("ledger.account.", "ledger.category."))
    for what, change in (
        ("unknown envelope field", lambda e: e.update(extra=1)),
        ("unknown data field", lambda e: e["data"].update(extra=1)),
        ("missing data field", lambda e: e["data"].pop(next(iter(e["data"])))),
        ("naive time", lambda e: e.update(time="2026-01-01T00:00:00")),
        ("subject not a uuid", lambda e: e.update(subject="acct-1")),
        ("another source", lambda e: e.update(source="elsewhere")),
        ("bad traceparent", lambda e: e.update(traceparent="00-xyz")),
        (
            "sequence not 20 digits" if account else "a sequence on a transfer event",
            lambda e: e.update(sequence="7" if account else "00000000000000000001"),
        ),
    ):
        wrong = copy.deepcopy(envelope)
        change(wrong)
        yield what, wrong
    if account:
        unsequenced = copy.deepcopy(envelope)
        del unsequenced["sequence"]
        yield "no sequence on an account event", unsequenced
    elif envelope["type"].startswith("ledger.transfer."):
        wrong_state = copy.deepcopy(envelope)
        wrong_state["data"]["state"] = "voided" if envelope["data"]["state"] != "voided" else "x"
        yield "a state its type does not announce", wrong_state


async def test_every_published_event_validates_against_its_message(
    client: httpx.AsyncClient, settings: Settings, broker: EmbeddedBroker
) -> None:
    ksettings = kafka_settings(settings, broker)
    due = await representative_run(client)
    await expire_due_holds(settings, due)
    relay = Relay(ksettings)
    try:
        assert await drain(relay) > 0
    finally:
        await relay.close()
    async with app_client(ksettings) as kclient:
        schemas = Schemas(await fetch_document(kclient))
    [channel] = schemas.document["channels"].values()
    assert channel["address"] == ksettings.kafka_topic

    feed = await walk_feed(client)
    records = await read_topic(ksettings)
    assert sorted(e["id"] for e in feed) == sorted(json.loads(r.value)["id"] for r in records)

    for envelope in feed:
        assert errors(schemas.payload(envelope["type"]), envelope) == [], envelope
    for record in records:
        envelope = json.loads(record.value)
        where = (envelope["type"], envelope["id"])
        assert errors(schemas.payload(envelope["type"]), envelope) == [], where
        headers = {name: value.decode() for name, value in record.headers}
        assert errors(schemas.headers(envelope["type"]), headers) == [], where
        assert errors(schemas.key(envelope["type"]), record.key.decode()) == [], where
        assert record.key.decode() == envelope["subject"]

    # Every message of the document was seen, so none is described without being tested.
    assert {e["type"] for e in feed} == set(schemas.messages) == CONTRACT_TYPES
    assert any("traceparent" in dict(r.headers) for r in records)

    # The schemas are strict enough to notice a wrong event of every type.
    for envelope in {e["type"]: e for e in feed}.values():
        validator = schemas.payload(envelope["type"])
        for what, wrong in mutations(envelope):
            assert errors(validator, wrong), (envelope["type"], what)
    bad_headers = {"content-type": "application/json", "traceparent": TRACEPARENT}
    assert errors(schemas.headers("ledger.transfer.posted"), bad_headers)
    assert errors(schemas.key("ledger.transfer.posted"), "not-a-uuid")


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00", "yesterday"])
def test_the_date_time_format_is_really_checked(value: str) -> None:
    # jsonschema skips a format it has no checker for: without rfc3339-validator installed a
    # naive or malformed time would pass every schema above unnoticed.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, {"format": "date-time"}, format_checker=FORMATS)
