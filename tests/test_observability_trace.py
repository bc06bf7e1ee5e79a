"""One trace from an HTTP request to the consumer of its events, checked on real spans.

The caller's `traceparent` starts it; the server span, the SQL of the request's transaction, the
outbox row's stored traceparent, the Kafka record's `traceparent` header (relayed by the real
relay to the real broker) and the consumer kit's processing span, with the consumer's own SQL
under it, all carry the same trace id, each linked to its parent."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ledger.core.settings import Settings
from ledger.embedded import EmbeddedBroker
from observability.tracing import add_span_processor, exporters_from_env
from outbox.consumer.kit import Event, EventConsumer
from outbox.kafka import header_value
from outbox.relay import Relay
from tests.helpers import funded_pair
from tests.stored_events import ENVELOPE_COLUMNS, envelope
from tests.test_events import QUICK_JOIN, drain, kafka_settings, read_topic

DEADLINE_SECONDS = 60.0  # a bound on waiting for the broker, never a timing assert


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes while the module runs (a processor cannot be removed
    from the provider, so there is one per module, cleared by each test)."""
    exporter = InMemorySpanExporter()
    add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def _is_sql(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return span.kind == SpanKind.CLIENT and attributes.get("db.system") == "postgresql"


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_http_request_to_consumer(
    client: AsyncTestClient[Any],
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
    spans: InMemorySpanExporter,
) -> None:
    _, a, b = await funded_pair(client, 100)
    spans.clear()
    trace_hex, caller_span_hex = secrets.token_hex(16), secrets.token_hex(8)
    trace_id = int(trace_hex, 16)
    response = await client.post(
        "/v1/transfers",
        json={"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 40},
        headers={"traceparent": f"00-{trace_hex}-{caller_span_hex}-01"},
    )
    assert response.status_code == 201, response.text
    transfer_id = response.json()["id"]

    # HTTP server span: continues the caller's span.
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.context.trace_id == trace_id
    assert _parent_id(server) == int(caller_span_hex, 16)
    assert server.name == "POST /v1/transfers"
    assert (server.attributes or {}).get("http.route") == "/v1/transfers"
    server_span_hex = format(server.context.span_id, "016x")

    # The database transaction: its statements are children of the server span.
    request_sql = [s for s in spans.get_finished_spans() if _is_sql(s)]
    assert request_sql
    assert all(s.context.trace_id == trace_id for s in request_sql)
    assert all(_parent_id(s) == server.context.span_id for s in request_sql)
    # The kernel's writes (the transfer, its entries, events and audit record) are one span.
    statements = [str((s.attributes or {}).get("db.statement", "")) for s in request_sql]
    assert any('INSERT INTO "outbox_events"' in text for text in statements)
    assert any('INSERT INTO "transfers"' in text for text in statements)

    # The outbox rows of the request store its traceparent in the envelope (the relay reads it
    # from there, and the consumer kit falls back on it without the record header).
    events = [
        envelope(text, packed)
        for text, packed in sync_db.execute(f"SELECT {ENVELOPE_COLUMNS} FROM outbox_events e")
    ]
    rows = [
        (e.get("traceparent"),)
        for e in events
        if e["data"].get("transfer_id") == transfer_id or e["subject"] == transfer_id
    ]
    assert len(rows) == 3  # the transfer and both accounts' balance changes
    expected_traceparent = f"00-{trace_hex}-{server_span_hex}-01"
    assert all(row == (expected_traceparent,) for row in rows)

    # The relay publishes them with a `traceparent` record header.
    ksettings = kafka_settings(settings, broker)
    relay = Relay(ksettings)
    try:
        assert await drain(relay) > 0
    finally:
        await relay.close()
    records = [r for r in await read_topic(ksettings) if r.key.decode() == transfer_id]
    assert len(records) == 1
    assert header_value(records[0].headers, "traceparent") == expected_traceparent
    assert json.loads(records[0].value)["type"] == "ledger.transfer.posted"

    # The consumer kit processes it in a CONSUMER span of the same trace, its SQL beneath.
    spans.clear()
    handled: list[Event] = []

    async def handler(session: Any, event: Event) -> None:
        handled.append(event)

    consumer = EventConsumer(
        ksettings, group=f"trace-{uuid.uuid4().hex[:8]}", handler=handler, options=QUICK_JOIN
    )
    await consumer.start()
    try:
        stop_at = time.monotonic() + DEADLINE_SECONDS
        while not any(e.subject == transfer_id for e in handled) and time.monotonic() < stop_at:
            await consumer.poll_once()
    finally:
        await consumer.stop()
    assert any(e.subject == transfer_id for e in handled)

    finished = spans.get_finished_spans()
    [processing] = [
        s
        for s in finished
        if s.kind == SpanKind.CONSUMER
        and s.name == "ledger.transfer.posted process"
        and s.context.trace_id == trace_id
    ]
    assert _parent_id(processing) == server.context.span_id
    consumer_sql = [
        s for s in finished if _is_sql(s) and _parent_id(s) == processing.context.span_id
    ]
    assert consumer_sql
    assert all(s.context.trace_id == trace_id for s in consumer_sql)


def test_exporters_follow_the_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert exporters_from_env() == []  # nothing leaves the process unless asked
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporters_from_env() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    [console] = exporters_from_env()
    assert isinstance(console, ConsoleSpanExporter)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-of-the-future")
    assert exporters_from_env() == []  # unknown: logged and ignored, never a crash
