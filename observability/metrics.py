"""Prometheus metrics. Labels are bounded: route templates and states, never raw paths or ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "Time to post one batch of transfers in the kernel, lock to flush",
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
)
CONSUMER_SEQUENCE_GAPS = Counter(
    "ledger_consumer_sequence_gaps",
    "Gaps seen by the reference consumer in an account's event sequence",
)
