"""/metrics: the contract's series exist, they move when transfers are made, labels are bounded."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import funded_pair, transfer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

REQUIRED_SERIES = (
    "http_server_request_duration_seconds_count",
    "http_server_request_duration_seconds_bucket",
    "ledger_transfers_total",
    "ledger_outbox_backlog",
    "ledger_consumer_sequence_gaps_total",
    "ledger_transfer_post_duration_seconds_count",
    "ledger_transaction_retries_total",
    "ledger_idempotent_replays_total",
)
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def scrape(client: AsyncTestClient[Any]) -> tuple[str, Samples]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_required_series_move_when_transfers_are_made(
    client: AsyncTestClient[Any], sync_db: psycopg.Connection[Any]
) -> None:
    _, before = await scrape(client)

    source, a, b = await funded_pair(client, 1_000)
    for amount in (10, 20, 30):
        response = await transfer(client, a["id"], b["id"], amount)
        assert response.status_code == 201, response.text
    pending = await transfer(client, a["id"], b["id"], 5, pending=True)
    assert pending.status_code == 201, pending.text
    key = {"Idempotency-Key": f"metrics-{uuid.uuid4().hex}"}
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 1}
    first = await client.post("/v1/transfers", json=body, headers=key)
    replay = await client.post("/v1/transfers", json=body, headers=key)
    assert first.status_code == 201 and replay.status_code == 201
    assert replay.headers.get("idempotent-replayed") == "true"

    text, after = await scrape(client)
    for series in REQUIRED_SERIES:
        assert any(name == series for name, _ in after), series

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ledger_transfers_total", state="posted") == 5  # funding, three, the keyed one
    assert moved("ledger_transfers_total", state="pending") == 1
    assert moved("ledger_idempotent_replays_total") == 1
    # One observation per kernel call at least (how a replay is served is the kernel's business).
    assert moved("ledger_transfer_post_duration_seconds_count") >= 6
    route = {"route": "/v1/transfers", "method": "POST", "status": "201"}
    assert moved("http_server_request_duration_seconds_count", **route) == 7
    assert moved("http_server_request_duration_seconds_bucket", le="+Inf", **route) == 7
    created = {"route": "/v1/accounts", "method": "POST", "status": "201"}
    assert moved("http_server_request_duration_seconds_count", **created) == 3

    # The backlog is read from the database when scraped: every event written, none relayed.
    row = sync_db.execute(
        "SELECT count(*) FROM outbox_events e "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
    ).fetchone()
    assert row is not None and row[0] > 0
    assert value(after, "ledger_outbox_backlog") == row[0]
    assert source["id"] not in text


async def test_route_labels_are_templates_never_raw_paths(client: AsyncTestClient[Any]) -> None:
    _, a, _ = await funded_pair(client, 0)
    assert (await client.get(f"/v1/accounts/{a['id']}")).status_code == 200
    assert (await client.get(f"/v1/accounts/{uuid.uuid4()}")).status_code == 404
    assert (await client.get(f"/v1/nowhere/{uuid.uuid4()}")).status_code == 404
    text, samples = await scrape(client)

    routes = {dict(labels).get("route") for name, labels in samples if "route" in dict(labels)}
    assert "/v1/accounts/{account_id:uuid}" in routes
    assert "unmatched" in routes
    assert not any(UUID_TEXT.search(route or "") for route in routes), routes
    assert not UUID_TEXT.search(text)
    found = {"route": "/v1/accounts/{account_id:uuid}", "method": "GET"}
    assert value(samples, "http_server_request_duration_seconds_count", status="200", **found) >= 1
    assert value(samples, "http_server_request_duration_seconds_count", status="404", **found) >= 1
