"""Checkpoints leave the database: to the Kafka topic and to the append-only file, through their
own outbox. A paused broker delays them and loses none; a real `ledger worker` signs and
delivers them within the contract's 10 s."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.errors import ServiceUnavailable
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedBroker
from ledger.worker.checkpoints import KafkaCheckpoints, deliver_step, kafka_target
from outbox.kafka import KafkaOptions
from tests.audit_helpers import LEDGER, cli_env
from tests.audit_merkle_helpers import (
    batch_of_transfers,
    deliver_to_file,
    funded_accounts,
    line_count,
    seal_and_checkpoint,
    session_keys,
)
from tests.test_events import read_topic

DEADLINE_SECONDS = 60
FAST = KafkaOptions(request_timeout_ms=1_500, retry_backoff_ms=100)


def _checkpoint_settings(settings: Settings, broker: EmbeddedBroker) -> Settings:
    return settings.with_(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_checkpoint_topic=f"ledger.audit.checkpoints.test.{uuid.uuid4().hex[:10]}",
    )


async def _topic_sizes(settings: Settings) -> list[int]:
    """Tree sizes on the checkpoint topic, in topic order."""
    records = await read_topic(settings.with_(kafka_topic=settings.kafka_checkpoint_topic))
    return [json.loads(r.value)["tree_size"] for r in records]


def _db_sizes(sync_db: psycopg.Connection[Any]) -> list[int]:
    rows = sync_db.execute("SELECT tree_size FROM audit_checkpoints ORDER BY tree_size").fetchall()
    return [int(r[0]) for r in rows]


async def test_checkpoints_made_while_the_broker_is_paused_reach_the_topic_after(
    client: httpx.AsyncClient,
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    ksettings = _checkpoint_settings(settings, broker)
    kafka = KafkaCheckpoints(ksettings, options=FAST)
    to_kafka, keys = kafka_target(ksettings.kafka_checkpoint_topic), session_keys()
    engine = create_engine(settings, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    file = tmp_path / "checkpoints.jsonl"
    try:
        source, target = await funded_accounts(client)
        await seal_and_checkpoint(settings)
        await deliver_step(sessionmaker, to_kafka, kafka.send, keys)
        assert await _topic_sizes(ksettings) == _db_sizes(sync_db)  # connected, topic made

        broker.pause()
        try:
            for count in (2, 3, 4):  # the sealer keeps signing; the file keeps taking them
                await batch_of_transfers(client, source, target, count)
                await seal_and_checkpoint(settings)
                with pytest.raises(ServiceUnavailable):
                    await deliver_step(sessionmaker, to_kafka, kafka.send, keys)
                assert await deliver_to_file(settings, file) == len(_db_sizes(sync_db))
            position = sync_db.execute(
                "SELECT delivered_size FROM audit_checkpoint_targets WHERE target = %s",
                (to_kafka.name,),
            ).fetchone()
            assert position == (_db_sizes(sync_db)[0],)  # three behind it wait for the broker
        finally:
            broker.resume()

        stop_at = time.monotonic() + DEADLINE_SECONDS
        while True:
            try:
                await deliver_step(sessionmaker, to_kafka, kafka.send, keys)
                break
            except ServiceUnavailable:  # the broker takes a moment to answer again
                assert time.monotonic() < stop_at, "the broker never came back"
                await asyncio.sleep(0.2)
        made = _db_sizes(sync_db)
        assert len(made) == 4
        on_topic = await _topic_sizes(ksettings)
        first_seen = list(dict.fromkeys(on_topic))  # at least once: duplicates dropped
        assert first_seen == made  # every checkpoint, in order
        in_file = [json.loads(line)["tree_size"] for line in file.read_text().splitlines()]
        assert in_file == made  # the file never repeats a line
    finally:
        await kafka.close()
        await engine.dispose()


async def test_a_real_worker_signs_and_delivers_checkpoints(
    client: httpx.AsyncClient,
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    ksettings = _checkpoint_settings(settings, broker)
    file = tmp_path / "checkpoints.jsonl"
    env = cli_env(
        settings.database_url or "",
        LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        LEDGER_KAFKA_TOPIC=f"ledger.events.test.{uuid.uuid4().hex[:10]}",
        LEDGER_KAFKA_CHECKPOINT_TOPIC=ksettings.kafka_checkpoint_topic,
        LEDGER_AUDIT_CHECKPOINT_FILE=str(file),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = await asyncio.create_subprocess_exec(
            LEDGER, "worker", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
    try:
        source, target = await funded_accounts(client)
        await batch_of_transfers(client, source, target, 5)
        records = sync_db.execute("SELECT count(*) FROM audit_records").fetchone()
        assert records is not None
        stop_at = time.monotonic() + DEADLINE_SECONDS
        while not (line_count(file) and _last_size(file) == records[0]):
            assert worker.returncode is None, _tail(log_path)
            assert time.monotonic() < stop_at, "no checkpoint of every record reached the file"
            await asyncio.sleep(0.2)
        while records[0] not in await _topic_sizes(ksettings):
            assert time.monotonic() < stop_at, "no checkpoint of every record reached Kafka"
            await asyncio.sleep(0.2)
        latest = (await client.get("/v1/audit/checkpoints/latest")).json()
        assert latest["tree_size"] == records[0]
        assert json.loads(file.read_text().splitlines()[-1]) == latest
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), DEADLINE_SECONDS)


def _tail(path: Path) -> str:
    return path.read_text()[-2000:]


def _last_size(path: Path) -> int:
    return int(json.loads(path.read_text().splitlines()[-1])["tree_size"])
