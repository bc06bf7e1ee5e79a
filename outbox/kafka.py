"""Every Kafka client the ledger builds, in one place, with every option spelled out.

The relay's producer, the consumer kit's consumer and the admin client that creates the topic
are made here and nowhere else, so the delivery guarantees (acks, timeouts, batch sizes) can be
read in one screen. The W3C trace context travels as a `traceparent` record header: the relay
copies the one stored with the outbox row, the consumer continues it (`consumer_span`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ledger.core import limits
from ledger.core.settings import Settings

log = structlog.get_logger("outbox.kafka")

# CloudEvents structured mode over Kafka: the value is the whole envelope.
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
TOPIC_EXISTS_ERROR_CODE = 36  # Kafka's TOPIC_ALREADY_EXISTS

_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Client options; the defaults come from ledger/core/limits.py. Tests shorten the timeouts."""

    request_timeout_ms: int = limits.KAFKA_REQUEST_TIMEOUT_MS
    retry_backoff_ms: int = limits.KAFKA_RETRY_BACKOFF_MS
    linger_ms: int = limits.KAFKA_LINGER_MS
    batch_bytes_max: int = limits.KAFKA_BATCH_BYTES_MAX
    request_bytes_max: int = limits.KAFKA_REQUEST_BYTES_MAX
    topic_partitions: int = limits.KAFKA_TOPIC_PARTITIONS
    session_timeout_ms: int = limits.KAFKA_CONSUMER_SESSION_TIMEOUT_MS
    heartbeat_interval_ms: int = limits.KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS
    max_poll_records: int = limits.KAFKA_CONSUMER_MAX_POLL_RECORDS


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap_servers is None:
        from ledger.core.errors import ConfigurationError

        raise ConfigurationError("LEDGER_KAFKA_BOOTSTRAP_SERVERS is not set")
    return settings.kafka_bootstrap_servers


def make_producer(settings: Settings, options: KafkaOptions | None = None) -> AIOKafkaProducer:
    """The relay's producer. `acks="all"`: a record counts as published only once every in-sync
    replica has it. The relay sends one batch per partition at a time and aiokafka keeps a
    partition muted while its batch is in flight, so a retry can never overtake what follows.
    Idempotence is a setting: real Kafka wants it, the embedded tansu broker lacks
    InitProducerId."""
    opts = options or KafkaOptions()
    return AIOKafkaProducer(
        bootstrap_servers=_bootstrap(settings),
        client_id="ledger-relay",
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=opts.request_timeout_ms,
        retry_backoff_ms=opts.retry_backoff_ms,
        linger_ms=opts.linger_ms,
        max_batch_size=opts.batch_bytes_max,
        max_request_size=opts.request_bytes_max,
        compression_type=None,
    )


def make_consumer(
    settings: Settings, group: str, topic: str, options: KafkaOptions | None = None
) -> AIOKafkaConsumer:
    """A consumer-group member that never commits by itself: the kit commits offsets only after
    its own database transaction has committed (at least once, never at most once)."""
    opts = options or KafkaOptions()
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=_bootstrap(settings),
        client_id=f"ledger-consumer-{group}",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",  # the relay uses no Kafka transactions
        request_timeout_ms=max(opts.request_timeout_ms, opts.session_timeout_ms + 5_000),
        retry_backoff_ms=opts.retry_backoff_ms,
        session_timeout_ms=opts.session_timeout_ms,
        heartbeat_interval_ms=opts.heartbeat_interval_ms,
        max_poll_records=opts.max_poll_records,
    )


async def ensure_topic(settings: Settings, options: KafkaOptions | None = None) -> None:
    """Create the events topic when it is missing (a convenience for `ledger dev` and a fresh
    cluster; production topics are usually provisioned). Failure here is only logged: the topic
    may exist already, or the broker may create it on first use."""
    opts = options or KafkaOptions()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=_bootstrap(settings),
        client_id="ledger-admin",
        request_timeout_ms=opts.request_timeout_ms,
    )
    try:
        await admin.start()
        if settings.kafka_topic in await admin.list_topics():
            return
        cluster = await admin.describe_cluster()
        brokers = len(cluster.get("brokers", [])) or 1
        topic = NewTopic(
            settings.kafka_topic,
            num_partitions=opts.topic_partitions,
            replication_factor=min(brokers, limits.KAFKA_TOPIC_REPLICATION_MAX),
        )
        response = await admin.create_topics([topic])
        for _name, code, *_rest in response.topic_errors:
            if code not in (0, TOPIC_EXISTS_ERROR_CODE):
                log.warning("kafka.topic_not_created", topic=settings.kafka_topic, error=code)
                return
        log.info("kafka.topic_created", topic=settings.kafka_topic, partitions=topic.num_partitions)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("kafka.topic_check_failed", topic=settings.kafka_topic, error=repr(exc))
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def start_producer(
    settings: Settings, options: KafkaOptions | None = None
) -> AIOKafkaProducer:
    """A started producer for `settings.kafka_topic`, the topic ensured first; a producer that
    fails to start is stopped again (its connections and tasks released) before the error."""
    await ensure_topic(settings, options)
    producer = make_producer(settings, options)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """Kafka's default partitioner (murmur2 of the key), so every client, in any language, puts
    one subject on one partition."""
    ordered = sorted(partitions)
    index = int(murmur2(key)) & 0x7FFFFFFF
    return ordered[index % len(ordered)]


def record_headers(traceparent: str | None) -> list[tuple[str, bytes]]:
    headers = [("content-type", CONTENT_TYPE.encode())]
    if traceparent:
        headers.append(("traceparent", traceparent.encode("ascii")))
    return headers


def header_value(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key.lower() == name and value is not None:
            with contextlib.suppress(UnicodeDecodeError):
                return value.decode("ascii")
    return None


@contextlib.contextmanager
def consumer_span(name: str, traceparent: str | None, **attributes: str) -> Iterator[Span]:
    """A CONSUMER span that continues the trace of the request that made the change."""
    carrier = {"traceparent": traceparent} if traceparent else {}
    parent = _propagator.extract(carrier)
    tracer = trace.get_tracer("ledger.outbox")
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span
