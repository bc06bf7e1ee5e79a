"""Ledger events end to end: the outbox relay, Kafka (a real tansu broker), the HTTP feed, the
consumer kit and the `ledger consume` / `ledger reconcile` / `ledger outbox status` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from accounts.schemas import AccountCreate
from accounts.service import create_account
from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedBroker
from outbox.consumer.kit import Event, EventConsumer
from outbox.kafka import CONTENT_TYPE, KafkaOptions
from outbox.relay import Relay, trim_published_step
from outbox.writer import NOTIFY_CHANNEL
from tests import processes
from tests.helpers import create_account as create_account_http
from tests.helpers import funded_pair, transfer

LEDGER = str(Path(sys.executable).parent / "ledger")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
QUICK_JOIN = KafkaOptions(session_timeout_ms=2_000, heartbeat_interval_ms=500)
DEADLINE_SECONDS = 60.0  # an upper bound for waits on real processes, never a timing assert


# -- helpers shared with test_events_faults.py ----------------------------------------------------


def kafka_settings(settings: Settings, broker: EmbeddedBroker) -> Settings:
    """The test's own topic on the session broker, so tests never read each other's events."""
    return settings.with_(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic=f"ledger.events.test.{uuid.uuid4().hex[:10]}",
    )


def ledger_env(settings: Settings) -> dict[str, str]:
    env = processes.ledger_env(
        settings.database_url or "", LEDGER_LOG_LEVEL="info", LEDGER_AUDIT_SEALER="off"
    )
    if settings.kafka_bootstrap_servers:
        env["LEDGER_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
        env["LEDGER_KAFKA_TOPIC"] = settings.kafka_topic
    return env


async def run_ledger(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    """`ledger ARGS` as a real process, off the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [LEDGER, *args],
        env=ledger_env(settings),
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        check=False,
    )


async def drain(relay: Relay) -> int:
    """Run relay steps until one finds nothing to publish."""
    total = 0
    for _ in range(1_000):
        done = await relay.step()
        if not done:
            return total
        total += done
    raise AssertionError("the relay never ran dry")


async def read_topic(settings: Settings) -> list[Any]:
    """Every record on the test's topic, up to its end offsets now, per partition in order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata for every topic
        partitions = consumer.partitions_for_topic(settings.kafka_topic) or set()
        tps = [TopicPartition(settings.kafka_topic, p) for p in sorted(partitions)]
        if not tps:  # the topic is not there yet: nothing on it (seeking none would raise)
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                fetched = await consumer.getmany(tp, timeout_ms=1_000)
                records.extend(fetched.get(tp, []))
        return records
    finally:
        await consumer.stop()


def outbox_rows(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(event_id, subject, sequence, position) of every outbox row, by insert id."""
    return db.execute(
        "SELECT e.event_id::text, e.subject, e.sequence, f.position FROM outbox_events e "
        "LEFT JOIN outbox_feed f ON f.id = e.id ORDER BY e.id"
    ).fetchall()


def first_deliveries(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """Per Kafka key, the envelopes in the order first seen (duplicates dropped by event id)."""
    seen: set[str] = set()
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        envelope = json.loads(record.value)
        if envelope["id"] in seen:
            continue
        seen.add(envelope["id"])
        by_key[record.key.decode()].append(envelope)
    return by_key


def assert_gapless_sequences(by_key: dict[str, list[dict[str, Any]]]) -> int:
    """Every account's sequences run 1, 2, 3, ... in delivery order; returns how many keys."""
    accounts = 0
    for key, envelopes in by_key.items():
        sequences = [int(e["sequence"]) for e in envelopes if "sequence" in e]
        if not sequences:
            continue
        accounts += 1
        assert sequences == list(range(1, len(sequences) + 1)), (key, sequences)
    return accounts


async def wait_until(predicate: Any, what: str, deadline_s: float = DEADLINE_SECONDS) -> None:
    stop_at = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > stop_at:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


# -- the HTTP feed --------------------------------------------------------------------------------


async def _walk(client: AsyncTestClient[Any], limit: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1_000):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["after"] = cursor
        response = await client.get("/v1/events", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk never ended")


async def test_feed_walk_sees_every_event_once_in_position_order(
    client: AsyncTestClient[Any], settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1_000)
    for amount in (1, 2, 3):
        assert (await transfer(client, a["id"], b["id"], amount)).status_code == 201
    relay = Relay(settings)  # no Kafka: positions are still handed out for the feed
    try:
        published = await drain(relay)
    finally:
        await relay.close()
    rows = outbox_rows(sync_db)
    assert published == len(rows) > 0
    assert sorted(r[3] for r in rows) == list(range(1, len(rows) + 1))  # gapless positions

    walked = await _walk(client, limit=4)
    ids_by_position = [r[0] for r in sorted(rows, key=lambda r: r[3])]
    assert [e["id"] for e in walked] == ids_by_position
    for envelope in walked:
        assert envelope["specversion"] == "1.0" and envelope["source"] == "ledger"
        assert envelope["datacontenttype"] == "application/json"
        if envelope["type"].startswith("ledger.account."):
            assert len(envelope["sequence"]) == 20
            assert int(envelope["sequence"]) == envelope["data"]["version"]

    # `resume_cursor` continues after the last event even when the page was not full.
    tail = await client.get("/v1/events", params={"limit": 1000})
    resume = tail.json()["resume_cursor"]
    assert tail.json()["next_cursor"] is None and resume is not None
    assert (await transfer(client, a["id"], b["id"], 4)).status_code == 201
    relay = Relay(settings)
    try:
        assert await drain(relay) == 3  # two balance changes and the transfer
    finally:
        await relay.close()
    newer = (await client.get("/v1/events", params={"after": resume})).json()["data"]
    assert [e["type"] for e in newer].count("ledger.transfer.posted") == 1
    assert len(newer) == 3


async def test_feed_refuses_bad_cursors_and_limits(client: AsyncTestClient[Any]) -> None:
    for params in ({"after": "not-a-cursor"}, {"limit": 0}, {"limit": 1001}, {"cursor": "x"}):
        response = await client.get("/v1/events", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["code"] == "validation_error"
    unauthenticated = await client.get("/v1/events", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401


async def test_retention_trims_old_events_and_the_feed_says_so(
    client: AsyncTestClient[Any], settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    await funded_pair(client, 10)  # 3 creations + 3 events for the funding transfer
    relay = Relay(settings)
    try:
        await drain(relay)  # one relay batch of 6 events
        first_page = (await client.get("/v1/events", params={"limit": 2})).json()
        stale_cursor = first_page["next_cursor"]
        total = len(outbox_rows(sync_db))
        await create_account_http(client)
        await drain(relay)  # and a second of 1
    finally:
        await relay.close()
    sync_db.execute("UPDATE outbox_batches SET published_at = published_at - interval '200 hours'")
    sessionmaker = create_sessionmaker(create_engine(settings, pool_size=1))
    deleted = await trim_published_step(settings, sessionmaker)
    # Whole batches go, and the newest one stays: positions never restart.
    assert deleted == total
    assert await trim_published_step(settings, sessionmaker) == 0
    response = await client.get("/v1/events", params={"after": stale_cursor})
    assert response.status_code == 410
    assert response.json()["code"] == "events_expired"
    from_start = (await client.get("/v1/events")).json()["data"]
    assert len(from_start) == 1


async def test_outbox_status_command_reports_backlog(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    await create_account_http(client)
    result = await run_ledger(["outbox", "status"], settings)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["backlog"] == 1 and status["last_position"] == 0
    assert status["oldest_age_seconds"] >= 0
    metrics_text = (await client.get("/metrics")).text
    assert "ledger_outbox_backlog 1.0" in metrics_text
    assert "ledger_outbox_oldest_unpublished_age_seconds" in metrics_text


# -- late commits ---------------------------------------------------------------------------------


async def test_a_late_commit_behind_a_higher_id_is_published_once(
    client: AsyncTestClient[Any],
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
) -> None:
    ksettings = kafka_settings(settings, broker)
    _source, a, b = await funded_pair(client, 1_000)
    engine = create_engine(settings, pool_size=1)
    relay = Relay(ksettings)
    try:
        held = create_sessionmaker(engine)()
        await held.begin()
        request = AccountCreate(
            code=f"late:{uuid.uuid4().hex[:8]}", currency="USD", normal_balance="credit"
        )
        late_account = (
            await create_account(held, request, WriteContext(actor=Actor.system("test")))
        ).account
        await held.flush()
        (late_id,) = (
            await held.execute(
                sa.text("SELECT max(id) FROM outbox_events WHERE subject = :s"),
                {"s": str(late_account.id)},
            )
        ).one()
        # Transfers commit meanwhile, their outbox rows get higher ids than the held one.
        for amount in (5, 6):
            assert (await transfer(client, a["id"], b["id"], amount)).status_code == 201
        assert sync_db.execute(
            "SELECT min(id) FROM outbox_events WHERE id > %s", (late_id,)
        ).fetchone()[0]
        await drain(relay)
        assert (
            sync_db.execute(
                "SELECT count(*) FROM outbox_events e "
                "WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
            ).fetchone()[0]
            == 0
        )
        await held.commit()
        await held.close()
        assert await drain(relay) == 1
    finally:
        await relay.close()
        await engine.dispose()

    walked = await _walk(client, limit=3)
    late = [e for e in walked if e["subject"] == str(late_account.id)]
    assert len(late) == 1 and late[0]["type"] == "ledger.account.created"
    assert walked[-1]["subject"] == str(late_account.id)  # fed after the rows that overtook it
    assert len({e["id"] for e in walked}) == len(walked) == len(outbox_rows(sync_db))
    on_kafka = [json.loads(r.value) for r in await read_topic(ksettings)]
    assert [e["id"] for e in on_kafka].count(late[0]["id"]) == 1


# -- Kafka end to end -----------------------------------------------------------------------------


async def test_transfers_reach_kafka_and_the_reference_consumer_reconciles(
    client: AsyncTestClient[Any],
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
) -> None:
    ksettings = kafka_settings(settings, broker)
    _source, a, b = await funded_pair(client, 1_000)
    traced = await client.post(
        "/v1/transfers",
        json={"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 7},
        headers={"traceparent": TRACEPARENT},
    )
    assert traced.status_code == 201, traced.text
    held = await transfer(client, b["id"], a["id"], 3, pending=True)
    assert held.status_code == 201
    posted = await client.post(f"/v1/transfers/{held.json()['id']}/post", json={"amount": 2})
    assert posted.status_code == 200, posted.text
    relay = Relay(ksettings)
    try:
        assert await drain(relay) == len(outbox_rows(sync_db))
    finally:
        await relay.close()

    records = await read_topic(ksettings)
    rows = outbox_rows(sync_db)
    assert sorted(json.loads(r.value)["id"] for r in records) == sorted(r[0] for r in rows)
    for record in records:
        envelope = json.loads(record.value)
        assert record.key.decode() == envelope["subject"]
        headers = dict(record.headers)
        assert headers["content-type"].decode() == CONTENT_TYPE
        assert headers["traceparent"].decode() == envelope["traceparent"]
        assert envelope["specversion"] == "1.0" and envelope["source"] == "ledger"
    traced_events = [
        json.loads(r.value)
        for r in records
        if dict(r.headers)["traceparent"].decode().split("-")[1] == TRACE_ID
    ]
    assert {e["type"] for e in traced_events} == {
        "ledger.account.balance_changed",
        "ledger.transfer.posted",
    }
    by_key = first_deliveries(records)
    assert assert_gapless_sequences(by_key) == 3
    assert [int(e["sequence"]) for e in by_key[a["id"]]] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in by_key[held.json()["id"]]] == [
        "ledger.transfer.pending",
        "ledger.transfer.posted",
    ]

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = await asyncio.create_subprocess_exec(
        LEDGER,
        "consume",
        "--group",
        group,
        env=ledger_env(ksettings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(
            lambda: (
                sync_db.execute(
                    "SELECT count(*) FROM consumer_inbox WHERE group_id = %s", (group,)
                ).fetchone()[0]
                == len(rows)
            ),
            "the consumer to apply every event",
        )
    finally:
        consumer.send_signal(signal.SIGTERM)  # a clean stop: offsets committed, group left
        _, err = await asyncio.wait_for(consumer.communicate(), DEADLINE_SECONDS)
    stderr = err.decode()
    assert consumer.returncode == 0, stderr
    assert '"consumer.stopped"' in stderr

    agreed = await run_ledger(["reconcile", "--group", group], ksettings)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert agreed.stdout == ""
    sync_db.execute(
        "UPDATE consumer_balances SET posted_credits = posted_credits + 1 "
        "WHERE group_id = %s AND account_id = %s",
        (group, b["id"]),
    )
    differs = await run_ledger(["reconcile", "--group", group], ksettings)
    assert differs.returncode == 1
    assert differs.stdout.splitlines() == [
        line for line in differs.stdout.splitlines() if b["id"] in line
    ]
    assert len(differs.stdout.splitlines()) == 1


# -- the consumer kit -----------------------------------------------------------------------------


def _envelope(subject: str, sequence: int | None, event_id: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "ledger",
        "type": "ledger.account.balance_changed" if sequence else "ledger.transfer.posted",
        "subject": subject,
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {},
    }
    if sequence is not None:
        body["sequence"] = f"{sequence:020d}"
    return msgspec.json.encode(body)


async def test_consumer_kit_drops_duplicates_and_reports_gaps(
    client: AsyncTestClient[Any],
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ksettings = kafka_settings(settings, broker)
    account, other, transfer_id = (str(uuid.uuid4()) for _ in range(3))
    first, second, posted = (str(uuid.uuid4()) for _ in range(3))
    crafted: list[tuple[str, bytes]] = [
        (account, _envelope(account, 1, first)),
        (account, _envelope(account, 2, second)),
        (account, _envelope(account, 2, second)),  # the relay published it twice
        (transfer_id, _envelope(transfer_id, None, posted)),
        (transfer_id, _envelope(transfer_id, None, posted)),
        (account, _envelope(account, 4)),  # sequence 3 was lost
        (other, b"not an envelope"),
        (other, _envelope(other, 1)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=ksettings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in crafted:
            headers = [
                ("content-type", CONTENT_TYPE.encode()),
                ("traceparent", TRACEPARENT.encode()),
            ]
            await producer.send_and_wait(
                ksettings.kafka_topic, value, key=key.encode(), headers=headers
            )
    finally:
        await producer.stop()

    provider = trace.get_tracer_provider()
    exporter = InMemorySpanExporter()
    assert isinstance(provider, TracerProvider)  # configure_tracing() ran in create_app
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    applied: list[Event] = []

    async def handler(session: Any, event: Event) -> None:
        applied.append(event)

    gaps_before = REGISTRY.get_sample_value("ledger_consumer_sequence_gaps_total") or 0.0
    group = f"kit-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(ksettings, group=group, handler=handler, options=QUICK_JOIN)
    caplog.set_level(logging.WARNING)
    await consumer.start()
    try:
        seen = 0
        stop_at = time.monotonic() + DEADLINE_SECONDS
        while seen < len(crafted) and time.monotonic() < stop_at:
            seen += (await consumer.poll_once()).records
    finally:
        await consumer.stop()

    assert seen == len(crafted)
    by_subject: dict[str, list[int | None]] = defaultdict(list)
    for event in applied:
        by_subject[event.subject].append(event.sequence)
    assert by_subject == {account: [1, 2, 4], transfer_id: [None], other: [1]}
    gaps_after = REGISTRY.get_sample_value("ledger_consumer_sequence_gaps_total") or 0.0
    assert gaps_after - gaps_before == 1
    gap_logs = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "consumer.sequence_gap"
    ]
    assert len(gap_logs) == 1 and gap_logs[0]["subject"] == account
    assert gap_logs[0]["expected"] == 3 and gap_logs[0]["got"] == 4
    assert any(
        isinstance(r.msg, dict) and r.msg.get("event") == "consumer.invalid_record"
        for r in caplog.records
    )
    inbox = sync_db.execute(
        "SELECT count(*) FROM consumer_inbox WHERE group_id = %s", (group,)
    ).fetchone()[0]
    assert inbox == 5
    last = sync_db.execute(
        "SELECT sequence FROM consumer_sequences WHERE group_id = %s AND subject = %s",
        (group, account),
    ).fetchone()[0]
    assert last == 4
    spans = [s for s in exporter.get_finished_spans() if s.name.endswith(" process")]
    assert len(spans) == 7  # one CONSUMER span per decoded record, duplicates included
    assert all(s.context.trace_id == int(TRACE_ID, 16) for s in spans)
    assert all(s.parent is not None and s.parent.span_id == 0xB7AD6B7169203331 for s in spans)

    # Offsets were committed after the database commit: a new member of the group starts after.
    again = EventConsumer(ksettings, group=group, handler=handler, options=QUICK_JOIN)
    await again.start()
    try:
        assert (await again.poll_once(timeout_ms=1_500)).records == 0
    finally:
        await again.stop()


async def test_the_api_wakes_the_relay_after_commits(
    client: AsyncTestClient[Any], settings: Settings, db_url: str
) -> None:
    """The API's notifier sends the wake-up the relay LISTENs for, after the commit, and many
    commits close together cost a handful of notifications, not one each."""
    _, a, b = await funded_pair(client, 1_000)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        responses = await asyncio.gather(
            *(transfer(client, a["id"], b["id"], 1) for _ in range(40))
        )
        assert {r.status_code for r in responses} == {201}
        received = 0
        gen = listener.notifies(timeout=2.0)
        async for notice in gen:
            assert notice.channel == NOTIFY_CHANNEL
            received += 1
    assert 1 <= received < 40
