"""Webhook delivery end to end, in the test's loop: the real app, the relay, the dispatcher and
loopback receivers (real HTTP servers). Every event that matches goes to every endpoint, signed
as Standard Webhooks says (checked with the specification's own library), in feed order per
subject; failures are retried and hold their subject back; a hanging endpoint holds up no
other; a rotated secret signs beside the new one; replay and retry send again."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from ledger.core.settings import Settings
from ledger.webhooks.delivery.lane import LaneBounds
from ledger.webhooks.secrets import SecretBox
from tests.helpers import create_account, funded_pair, transfer
from tests.webhook_helpers import (
    create_endpoint,
    delivering,
    feed_envelopes,
    receiver_settings,
    unfed,
    wait_for,
)
from tests.webhook_receiver import Received, receiving


@pytest.fixture
def settings(db_url: str) -> Settings:
    return receiver_settings(db_url)


DOCS = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


def documented_receiver(secret: str) -> Any:
    """The `handle` of the receiver example in docs/webhooks.md, with `secret`."""
    text = DOCS.read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code.replace('"whsec_..."', repr(secret)), str(DOCS), "exec"), namespace)  # noqa: S102
    return namespace["handle"]


def metric(name: str, endpoint: str, **labels: str) -> float | None:
    value: float | None = REGISTRY.get_sample_value(name, {"endpoint": endpoint, **labels})
    return value


def verified(received: Received, secret: str) -> dict[str, Any]:
    """The body, once the signature holds under `secret` (raises otherwise)."""
    event: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return event


async def make_transfers(client: httpx.AsyncClient) -> list[str]:
    """Accounts, posted transfers, and a hold posted later (two events of one subject)."""
    _source, a, b = await funded_pair(client, 10_000)
    ids = []
    for amount in (5, 6, 7):
        response = await transfer(client, a["id"], b["id"], amount)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    hold = await transfer(client, a["id"], b["id"], 50, pending=True)
    assert hold.status_code == 201, hold.text
    posted = await client.post(f"/v1/transfers/{hold.json()['id']}/post")
    assert posted.status_code == 200, posted.text
    return [*ids, hold.json()["id"]]


async def test_every_matching_event_is_delivered_signed_in_feed_order(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    async with receiving() as everything, receiving() as transfers, delivering(settings):
        await create_account(client)  # before the endpoints: never sent to them
        await wait_for(lambda: unfed(sync_db) == 0, "the first events to be fed")
        head = feed_envelopes(sync_db)[-1][0]
        all_types = await create_endpoint(client, everything.url)
        only = await create_endpoint(client, transfers.url, event_types=["ledger.transfer.*"])
        await make_transfers(client)
        await wait_for(lambda: unfed(sync_db) == 0, "every event to be fed")
        fed = feed_envelopes(sync_db, head)
        wanted = [(p, e) for p, e in fed if json.loads(e)["type"].startswith("ledger.transfer.")]
        await wait_for(lambda: len(everything.requests) >= len(fed), "every event")
        await wait_for(lambda: len(transfers.requests) >= len(wanted), "every transfer event")
        # The worker's metrics, per endpoint: every delivery counted, each one's lag observed.
        await wait_for(
            lambda: (
                metric("ledger_webhook_deliveries_total", only["id"], outcome="delivered")
                == len(wanted)
            ),
            "the deliveries to be counted",
        )
        assert metric("ledger_webhook_lag_seconds_count", only["id"]) == len(wanted)
        assert metric("ledger_webhook_retrying", only["id"]) == 0
    # A lane that stops (here: the dispatcher closed) takes its series away: labels stay bounded.
    assert metric("ledger_webhook_deliveries_total", only["id"], outcome="delivered") is None
    for receiver, endpoint, expected in (
        (everything, all_types, fed),
        (transfers, only, wanted),
    ):
        # Exactly the events after the endpoint was made, each once (nothing failed here).
        assert sorted(receiver.event_ids()) == sorted(json.loads(e)["id"] for _, e in expected)
        by_id = {json.loads(e)["id"]: e for _, e in expected}
        for received in receiver.requests:
            event = verified(received, endpoint["secret"])
            assert received.headers["webhook-id"] == event["id"]
            assert received.body.decode() == by_id[event["id"]]  # the stored envelope's bytes
            assert received.headers["content-type"] == "application/json"
            assert received.headers["webhook-signature"].startswith("v1,")
        # Per subject, in feed order.
        order = {json.loads(e)["id"]: p for p, e in expected}
        by_subject: dict[str, list[int]] = {}
        for received in receiver.requests:
            by_subject.setdefault(received.event["subject"], []).append(order[received.event["id"]])
        assert all(positions == sorted(positions) for positions in by_subject.values())
    # Each body is what the OpenAPI document's `webhooks` section says for its type.
    document = (await client.get("/schema/openapi.json")).json()
    for received in everything.requests:
        operation = document["webhooks"][received.event["type"]]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(
            {**schema, "components": document["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        ).validate(received.event)
        assert {p["name"] for p in operation["parameters"]} <= set(received.headers)
    # The receiver example of docs/webhooks.md takes a real delivery, once, and refuses a forgery.
    handle = documented_receiver(all_types["secret"])
    sample = everything.requests[0]
    assert handle(sample.body, sample.headers) == 204
    assert handle(sample.body, sample.headers) == 204  # the duplicate, dropped
    assert handle(sample.body.replace(b'"ledger"', b'"forged"'), sample.headers) == 400
    log = await client.get(f"/v1/webhooks/{only['id']}/deliveries?status=delivered&limit=1000")
    assert log.status_code == 200
    assert len(log.json()["data"]) == len(wanted)
    assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in log.json()["data"])


async def test_failures_are_retried_and_hold_their_subject_back(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    failures = {"left": 2}
    hold_id: dict[str, str] = {}

    def flaky(received: Received) -> int:
        event = received.event
        if event["type"] == "ledger.transfer.pending" and failures["left"] > 0:
            failures["left"] -= 1
            return 503
        return 200

    async with receiving(flaky) as receiver, delivering(settings):
        endpoint = await create_endpoint(
            client, receiver.url, event_types=["ledger.transfer.pending", "ledger.transfer.posted"]
        )
        _source, a, b = await funded_pair(client, 1_000)
        hold = await transfer(client, a["id"], b["id"], 10, pending=True)
        hold_id["id"] = hold.json()["id"]
        assert (await client.post(f"/v1/transfers/{hold_id['id']}/post")).status_code == 200
        other = await transfer(client, a["id"], b["id"], 3)  # another subject: not held back
        assert other.status_code == 201
        await wait_for(lambda: unfed(sync_db) == 0, "every event to be fed")

        def delivered_both() -> bool:
            return any(
                r.event["type"] == "ledger.transfer.posted" and r.event["subject"] == hold_id["id"]
                for r in receiver.requests
            )

        await wait_for(delivered_both, "the hold's posted event after its retried pending one")
        assert metric("ledger_webhook_deliveries_total", endpoint["id"], outcome="retrying") == 2
    kinds = [(r.event["subject"], r.event["type"]) for r in receiver.requests]
    hold_events = [t for s, t in kinds if s == hold_id["id"]]
    # Two failed attempts, the delivery, and only then the later event of the same subject.
    assert hold_events == [
        "ledger.transfer.pending",
        "ledger.transfer.pending",
        "ledger.transfer.pending",
        "ledger.transfer.posted",
    ]
    log = (await client.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).json()["data"]
    first = next(d for d in log if d["subject"] == hold_id["id"])
    assert first["event_type"] == "ledger.transfer.pending"
    assert first["attempts"] == 3 and first["status"] == "delivered"
    assert first["last_status_code"] == 200 and first["last_error"] is None


async def test_a_hanging_endpoint_holds_up_no_other(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """One receiver accepts and never answers; the other gets every event while the first
    one's attempts are still open (their time limit is far beyond this wait)."""
    bounds = LaneBounds(attempt_timeout_seconds=300)
    async with (
        receiving(lambda _r: "hang") as hanging,
        receiving() as healthy,
        delivering(settings, bounds),
    ):
        # The events first, then both endpoints replay them from before: each one's first batch
        # holds them all (more subjects than the bound), whenever its lane first looks.
        await wait_for(lambda: unfed(sync_db) == 0, "earlier events to be fed")
        before = feed_envelopes(sync_db)
        head = before[-1][0] if before else 0
        for _ in range(3):
            await make_transfers(client)
        await wait_for(lambda: unfed(sync_db) == 0, "every event to be fed")
        expected = len(feed_envelopes(sync_db, head))
        for url in (hanging.url, healthy.url):
            endpoint = await create_endpoint(client, url)
            replay = await client.post(
                f"/v1/webhooks/{endpoint['id']}/replay", json={"after": str(head)}
            )
            assert replay.status_code == 202, replay.text
        await wait_for(lambda: len(healthy.requests) >= expected, "the healthy endpoint")
        # The hanging endpoint has as many requests open as its bound, no more, and none ended.
        await wait_for(lambda: hanging.open_requests >= bounds.concurrency, "the hanging lane")
        assert hanging.open_requests == bounds.concurrency
        assert len(hanging.requests) == bounds.concurrency
        # Requests are answered meanwhile.
        assert (await client.get("/v1/events?limit=1")).status_code == 200
    assert len(set(healthy.event_ids())) == expected


async def test_a_rotated_secret_signs_beside_the_new_one(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    async with receiving() as receiver, delivering(settings):
        endpoint = await create_endpoint(client, receiver.url)
        rotated = await client.post(f"/v1/webhooks/{endpoint['id']}/secret/rotate")
        new_secret = rotated.json()["secret"]
        await asyncio.sleep(1.2)  # past the dispatcher's refresh of secrets
        await create_account(client)
        await wait_for(lambda: len(receiver.requests) >= 1, "the event")
    received = receiver.requests[-1]
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert verified(received, endpoint["secret"]) == verified(received, new_secret)


async def test_replay_and_the_retry_of_a_failed_delivery(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    answer = {"status": 200}
    async with receiving(lambda _r: answer["status"]) as receiver, delivering(settings):
        await create_account(client)  # before the endpoint: sent only by the replay
        await wait_for(lambda: unfed(sync_db) == 0, "the first event to be fed")
        endpoint = await create_endpoint(client, receiver.url)
        url = f"/v1/webhooks/{endpoint['id']}"
        answer["status"] = 500
        await create_account(client)
        await wait_for(
            lambda: sync_db.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (1,),
            "a first attempt to be recorded",
        )
        # Past its 72 h: the next attempt (made due now) is its last, and it is marked failed.
        sync_db.execute(
            "UPDATE webhook_deliveries SET deadline_at = now(), next_attempt_at = now()"
        )
        await wait_for(
            lambda: (
                sync_db.execute(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'"
                ).fetchone()
                == (1,)
            ),
            "the delivery to fail",
        )
        failed = (await client.get(f"{url}/deliveries?status=failed")).json()["data"]
        assert len(failed) == 1 and failed[0]["last_status_code"] == 500
        answer["status"] = 200
        tries = len(receiver.requests)
        retried = await client.post(f"{url}/deliveries/{failed[0]['event_id']}/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "pending"
        again = await client.post(f"{url}/deliveries/{failed[0]['event_id']}/retry")
        assert again.status_code == 409 and again.json()["code"] == "webhook_delivery_not_failed"
        await wait_for(lambda: len(receiver.requests) > tries, "the retried delivery")
        await wait_for(
            lambda: (
                sync_db.execute(
                    "SELECT status FROM webhook_deliveries WHERE event_id = %s",
                    (failed[0]["event_id"],),
                ).fetchone()
                == ("delivered",)
            ),
            "the retry to be recorded",
        )
        # Replay from the start of the feed: every event again, the older one too.
        seen = len(receiver.requests)
        replay = await client.post(f"{url}/replay", json={"after": "0"})
        assert replay.status_code == 202, replay.text
        everything = [json.loads(e)["id"] for _, e in feed_envelopes(sync_db)]
        await wait_for(
            lambda: sorted(receiver.event_ids()[seen:]) == sorted(everything), "the replay"
        )


async def test_a_secret_sealed_under_another_key_holds_events_back_and_loses_none(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """A worker whose key does not open the secret sends nothing (it never signs with garbage);
    the events wait after the endpoint's cursor, and a worker with the right key sends them."""
    async with receiving() as receiver:
        async with delivering(settings, box=SecretBox(os.urandom(32))):
            endpoint = await create_endpoint(client, receiver.url)
            await create_account(client)
            await wait_for(lambda: unfed(sync_db) == 0, "the event to be fed")
            await asyncio.sleep(1.5)  # past a refresh and a lane step
            assert receiver.requests == []
        async with delivering(settings):
            await wait_for(lambda: len(receiver.requests) == 1, "the event, under the right key")
    verified(receiver.requests[0], endpoint["secret"])
