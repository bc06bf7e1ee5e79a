"""Prometheus metrics. Labels are bounded: route templates and states, never raw paths or ids.

`ledger serve --workers N` runs N processes, each with its own counters. With N > 1 the command
sets PROMETHEUS_MULTIPROC_DIR (before the workers start, so prometheus_client keeps its values in
files there) and /metrics sums the files of every worker (`exposition`). Gauges say how to merge
(`multiprocess_mode`): the ones set when scraped take the most recent value."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "HTTP request duration by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TRANSFERS = Counter(
    "ledger_transfers",
    "Transfers by resulting state",
    ["state"],
)
TRANSFER_DURATION = Histogram(
    "ledger_transfer_post_duration_seconds",
    "Time to post one batch of transfers: from taking the locks to the writes sent "
    "(to the commit, for a group-commit batch)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TX_RETRIES = Counter(
    "ledger_transaction_retries",
    "Transactions retried after a serialization failure or deadlock",
)
IDEMPOTENT_REPLAYS = Counter(
    "ledger_idempotent_replays",
    "Responses replayed for a repeated Idempotency-Key",
)
OUTBOX_BACKLOG = Gauge(
    "ledger_outbox_backlog",
    "Events committed but not yet published (read when scraped)",
    multiprocess_mode="mostrecent",
)
CONSUMER_SEQUENCE_GAPS = Counter(
    "ledger_consumer_sequence_gaps",
    "Gaps seen by the reference consumer in an account's event sequence",
)
OUTBOX_OLDEST_UNPUBLISHED_AGE = Gauge(
    "ledger_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest event committed but not yet published, 0 when none (read when scraped)",
    multiprocess_mode="mostrecent",
)
OUTBOX_PUBLISHED = Counter(
    "ledger_outbox_published",
    "Outbox events published by the relay (to Kafka, or to the HTTP feed alone without Kafka)",
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "ledger_outbox_publish_failures",
    "Relay steps whose publish to Kafka failed and will be retried",
)
CONSUMER_EVENTS = Counter(
    "ledger_consumer_events",
    "Events seen by the consumer kit, by outcome (applied, duplicate, stale, invalid)",
    ["outcome"],
)
AUDIT_SEALED = Counter(
    "ledger_audit_sealed",
    "Audit records sealed into the hash chain by this process's sealer",
)
AUDIT_SEALED_LATE = Counter(
    "ledger_audit_sealed_late",
    "Audit records whose transaction began long after their own time (verify names them)",
)
# The audit's alarms (docs/operations.md): what the database held disagreed with the records or
# with the public keys. `problem`: tree_node, tree_beyond_head, checkpoint_signature,
# checkpoint_root (ledger/audit/tree_walk.py).
AUDIT_TREE_DISAGREEMENTS = Counter(
    "ledger_audit_tree_disagreements",
    "Disagreements the sealer found between the stored tree or checkpoints and the records",
    ["problem"],
)
AUDIT_SIGNING_HALTED = Gauge(
    "ledger_audit_signing_halted",
    "1 while this process's sealer signs no checkpoint because of a disagreement, else 0",
    multiprocess_mode="livemax",
)
# `where`: file, kafka (delivery), sealer (a row in the place of its next checkpoint).
AUDIT_CHECKPOINTS_REFUSED = Counter(
    "ledger_audit_checkpoints_refused",
    "Checkpoint rows whose signatures did not hold under the configured public keys",
    ["where"],
)


GROUP_COMMIT_BATCH_SIZE = Histogram(
    "ledger_group_commit_batch_size",
    "Transfer requests posted together in one group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
)
GROUP_COMMIT_QUEUED = Gauge(
    "ledger_group_commit_queued",
    "Transfer requests queued in group commit, not started yet (single transfers, and batch "
    "requests waiting for their accounts)",
    multiprocess_mode="livesum",
)
# Work refused under overload before it started (503 with Retry-After; nothing of it ran):
# queue_full, deadline (queued past its wait budget), cancelled (its client went away while
# queued: no answer was sent), pool_timeout (no database connection within the wait budget).
REQUESTS_SHED = Counter(
    "ledger_requests_shed",
    "Requests shed under overload before they started, by reason",
    ["reason"],
)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text for /metrics: this process's registry, or every worker's values when
    `ledger serve --workers N` runs them in multiprocess mode."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


@contextmanager
def multiprocess_dir(workers: int) -> Iterator[str | None]:
    """For `ledger serve --workers N`: a fresh PROMETHEUS_MULTIPROC_DIR for the worker processes
    when N > 1 (removed afterwards), so /metrics on any worker reports all of them.

    A directory the operator set is used as it is (prometheus_client wants it emptied between
    runs: that is then theirs to do). Must run before the workers start: prometheus_client
    chooses where values live when it is imported."""
    if workers <= 1 or os.environ.get(MULTIPROC_DIR_ENV):
        yield os.environ.get(MULTIPROC_DIR_ENV)
        return
    path = tempfile.mkdtemp(prefix="ledger-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def serve_metrics(host: str, port: int) -> None:
    """/metrics of a process without the HTTP API (`ledger worker`, `ledger consume`), served by
    prometheus_client on a daemon thread, so the relay's and the consumer's counters can be
    scraped where they are counted."""
    start_http_server(port, addr=host)


# The expiry worker (ledger/worker/expiry.py): holds it could not expire are retried apart.
EXPIRY_FAILURES = Counter(
    "ledger_expiry_failures",
    "Expiries of a due pending transfer that failed (each logged with the transfer id as "
    "transfer.expiry_failed) and will be retried after a backoff",
)
EXPIRY_RETRIES_WAITING = Gauge(
    "ledger_expiry_retries_waiting",
    "Due pending transfers whose expiry failed and waits for its retry, in this worker",
    multiprocess_mode="mostrecent",
)


# Webhooks (ledger/webhooks/delivery/): per endpoint, labelled by its id. The label set is
# bounded: at most WEBHOOK_ENDPOINTS_MAX live endpoints, and a deleted one's series are removed.
WEBHOOK_DELIVERIES = Counter(
    "ledger_webhook_deliveries",
    "Webhook attempts by outcome: delivered (a 2xx), retrying (an attempt failed, another will "
    "follow), failed (given up after 72 h)",
    ["endpoint", "outcome"],
)
WEBHOOK_RETRYING = Gauge(
    "ledger_webhook_retrying",
    "Pending deliveries of an endpoint (waiting for a retry or behind one), counted up to 10,000",
    ["endpoint"],
    multiprocess_mode="mostrecent",
)
WEBHOOK_LAG = Histogram(
    "ledger_webhook_lag_seconds",
    "From an event's commit (its `time`) to its delivery to an endpoint",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
# Reads that may lag (LEDGER_DATABASE_READ_URL, ledger/core/replica.py): where each one ran.
# standby; primary_standby_behind (the standby had not replayed what the primary had flushed
# when the read arrived, within its short wait); primary_standby_away (no answer from it).
DB_READS = Counter(
    "ledger_db_reads",
    "Reads routed by LEDGER_DATABASE_READ_URL, by where they ran",
    ["target"],
)
