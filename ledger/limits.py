"""Every bound the service keeps, in one place, with units in the names (TigerStyle)."""

from __future__ import annotations

AMOUNT_MAX = 2**63 - 1  # largest amount and largest balance component, minor units
BALANCE_MIN = -(2**63 - 1)  # smallest signed balance we ever report

REQUEST_BODY_BYTES_MAX = 1024 * 1024
IDEMPOTENCY_KEY_LENGTH_MAX = 255
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 60 * 60 * 2  # the contract asks for at least 24 h; keep two days

LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
BATCH_TRANSFERS_MAX = 1000

ACCOUNT_CODE_LENGTH_MAX = 128
REFERENCE_LENGTH_MAX = 255
METADATA_BYTES_MAX = 16 * 1024
METADATA_DEPTH_MAX = 8
API_KEY_NAME_LENGTH_MAX = 128
TIMEOUT_SECONDS_MAX = 365 * 24 * 60 * 60

# Database bounds: a transfer never waits forever on a lock or a query.
DB_LOCK_TIMEOUT_MS = 5_000
DB_STATEMENT_TIMEOUT_MS = 30_000
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
DB_POOL_SIZE = 10
DB_POOL_OVERFLOW = 10
DB_POOL_TIMEOUT_SECONDS = 10
DB_CONNECT_TIMEOUT_SECONDS = 5

# Retries of serialization failures and deadlocks: capped, jittered exponential backoff.
TX_RETRY_ATTEMPTS_MAX = 8
TX_RETRY_BACKOFF_INITIAL_MS = 5
TX_RETRY_BACKOFF_MAX_MS = 500

RETRY_AFTER_SECONDS = 2  # sent with 503 while the database is unreachable

# Audit trail: the sealer chains new records within a second; verify reads the chain in pages.
AUDIT_SEAL_INTERVAL_SECONDS = 0.5  # idle wait between sealer passes (the contract asks <= 5 s)
AUDIT_SEAL_BATCH_SIZE = 2_000  # records sealed per transaction
AUDIT_SEAL_GRACE_SECONDS = 60  # longer than any write transaction runs; see docs/audit.md
AUDIT_VERIFY_BATCH_SIZE = 2_000  # seals read per query by `audit verify`
AUDIT_SHOW_RECORDS_MAX = 10_000  # records one `ledger audit show` prints at most
