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

REFERENCE_LENGTH_MAX = 255
METADATA_BYTES_MAX = 16 * 1024
METADATA_DEPTH_MAX = 8
API_KEY_NAME_LENGTH_MAX = 128
TIMEOUT_SECONDS_MAX = 365 * 24 * 60 * 60

# Waiting is not refusing (contract 8.2): a request that only waits for other requests (their
# row, key and advisory locks, a pooled connection, its turn in group commit) is not refused
# while that wait stays under this; each of those waits is bounded by it on its own.
REQUEST_WAIT_MAX_SECONDS = 30

# Database bounds: a transfer never waits forever on a lock or a query. One lock wait is refused
# only past the whole request's wait budget (a request waiting less in total never gets there).
DB_LOCK_TIMEOUT_MS = REQUEST_WAIT_MAX_SECONDS * 1000
# A statement's time includes its lock waits (a 1,000-transfer batch locks 2,000 rows in one
# statement): the wait budget, plus as long again for the work itself.
DB_STATEMENT_TIMEOUT_MS = 2 * REQUEST_WAIT_MAX_SECONDS * 1000
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
DB_POOL_SIZE = 20  # >= concurrent requests we expect per process: no connect churn
DB_POOL_OVERFLOW = 20
DB_POOL_TIMEOUT_SECONDS = REQUEST_WAIT_MAX_SECONDS  # waiting for a connection is waiting too
DB_CONNECT_TIMEOUT_SECONDS = 5

# Retries of serialization failures and deadlocks: capped, jittered exponential backoff.
TX_RETRY_ATTEMPTS_MAX = 8
TX_RETRY_BACKOFF_INITIAL_MS = 5
TX_RETRY_BACKOFF_MAX_MS = 500

RETRY_AFTER_SECONDS = 2  # sent with 503 while the database is unreachable

# Audit trail: the sealer chains new records within a second; verify reads the chain in pages.
AUDIT_SEAL_INTERVAL_SECONDS = 0.5  # idle wait between sealer passes (the contract asks <= 5 s)
AUDIT_SEAL_BATCH_SIZE = 2_000  # records sealed per transaction
# The sealer's own connection is closed by PostgreSQL after this long without a statement: a hung
# (not dead) sealer then loses its lock and the standby takes over. A live one idles 0.5 s.
AUDIT_SEALER_IDLE_SESSION_TIMEOUT_MS = 4_000
AUDIT_VERIFY_BATCH_SIZE = 2_000  # seals read per query by `audit verify`
AUDIT_SHOW_RECORDS_MAX = 10_000  # records one `ledger audit show` prints at most

# `ledger verify`: before its snapshot it waits for the transactions already open to end (then
# every id below its watermarks has committed or rolled back); a transfer's transaction ends
# within its statement budget, so twice that is ample. Polled every few milliseconds.
VERIFY_SETTLE_WAIT_MAX_SECONDS = 2 * DB_STATEMENT_TIMEOUT_MS // 1000
VERIFY_SETTLE_POLL_SECONDS = 0.005
# Memory for the full run's sort of every entry in account order (a bigger ledger spills to
# disk, still in sequential reads).
VERIFY_SORT_MEMORY_MB = 256

# Verifiable audit (issue 14): signed checkpoints of the Merkle tree over sealed records. The
# contract asks for one at least every 10 s while records are sealed; a pass runs every 0.5 s.
AUDIT_CHECKPOINT_INTERVAL_SECONDS = 5.0
# Records the console's "unsealed" looks at, at most (the newest since the sealer's horizon).
AUDIT_CONSOLE_WAITING_EXAMINE_MAX = 10_000
AUDIT_TREE_LEAVES_PER_TX_MAX = 5_000  # leaves added per transaction when catching up old seals
AUDIT_CHECKPOINT_DELIVERY_BATCH_MAX = 500  # checkpoints one delivery step sends to Kafka or file
AUDIT_CHECKPOINT_DELIVERY_INTERVAL_SECONDS = 1.0  # idle wait between delivery steps
AUDIT_CHECKPOINT_FILE_TAIL_BYTES = 4_096  # how much of the file's end a delivery re-reads
AUDIT_PROOF_TREE_SIZE_MAX = 2**62  # a tree_size/first/second parameter's upper bound
# Trust in what the database holds (issue 23): the sealer recomputes the tree from the records
# when it starts (and after any disagreement) in steps of this many leaves, sealing in between;
# afterwards it re-checks the stored tree against the records, a few leaves every few seconds,
# for ever (about 8 ms of Python CPU per 200 leaves: under 1 % of a core).
AUDIT_TREE_BUILD_LEAVES_PER_STEP = 50_000
AUDIT_TREE_RECHECK_LEAVES_PER_STEP = 200
AUDIT_TREE_RECHECK_INTERVAL_SECONDS = 2.0
# After the records stopped reproducing a signed checkpoint (a fork: nothing may be signed), the
# sealer looks again this long later.
AUDIT_TREE_FORK_RETRY_SECONDS = 60.0
AUDIT_LOG_NAME_LENGTH_MAX = 255  # LEDGER_AUDIT_LOG_NAME, the checkpoints' note origin
AUDIT_CHECKPOINT_SCAN_MAX = 1_000  # rows one checkpoint listing reads past refused ones
AUDIT_CLI_INPUT_BYTES_MAX = 64 * 1024 * 1024  # an input file of `ledger audit verify-proof`

# `ledger bench`, the load generator: every loop, list and wait it keeps is bounded.
BENCH_ACCOUNTS_MAX = 100_000
BENCH_CLIENTS_MAX = 1_000
BENCH_DURATION_SECONDS_MAX = 24 * 60 * 60
BENCH_SETUP_CONCURRENCY_MAX = 16  # parallel requests while creating and checking accounts
BENCH_CHECK_TRANSFERS_MAX = 10_000  # acknowledged transfers re-read with GET after the run
BENCH_CHECK_TRANSFERS_DEFAULT = 1_000
# Longer than the service may take over one request (a connection, its turn in group commit, an
# Idempotency-Key and the row locks: each up to REQUEST_WAIT_MAX_SECONDS; then the work), so the
# bench never gives up on a request the service is still running (an unknown outcome).
BENCH_REQUEST_TIMEOUT_SECONDS = 5 * REQUEST_WAIT_MAX_SECONDS
BENCH_PGBENCH_SCALE = 10  # `pgbench -i -s 10`: 1,000,000 pgbench_accounts rows
BENCH_PGBENCH_INIT_TIMEOUT_SECONDS = 600

# Events: the outbox relay, its Kafka clients, the HTTP feed's retention and the consumer kit.
OUTBOX_RELAY_BATCH_SIZE = 500  # outbox rows published and given feed positions per relay step
OUTBOX_POLL_INTERVAL_SECONDS = 0.5  # safety net behind LISTEN/NOTIFY; a standby retries the lock
# The API wakes the relay at most this often: each wake-up is one relay pass (a read, a Kafka
# batch, a mark), so 0.1 s (ten passes a second at most, not fifty) took the worker's CPU per
# transfer from 0.44 to 0.32 ms for about 80 ms more event lag at most (docs/performance.md).
OUTBOX_NOTIFY_INTERVAL_SECONDS = 0.1
OUTBOX_RELAY_BACKOFF_INITIAL_MS = 200  # after a failed publish, doubled up to the max
OUTBOX_RELAY_BACKOFF_MAX_MS = 5_000
OUTBOX_RELAY_FAILURES_BEFORE_RECONNECT = 3  # consecutive failures before the producer is rebuilt
OUTBOX_RETENTION_BATCH_SIZE = 1_000  # published rows deleted per statement by the cleanup job
OUTBOX_RETENTION_INTERVAL_SECONDS = 60.0
EVENT_RETENTION_HOURS_DEFAULT = 168  # LEDGER_EVENT_RETENTION_HOURS: the HTTP feed keeps a week
EVENT_RETENTION_HOURS_MAX = 10 * 365 * 24
KAFKA_REQUEST_TIMEOUT_MS = 10_000  # one produce attempt, retries inside it included
KAFKA_RETRY_BACKOFF_MS = 200
KAFKA_LINGER_MS = 5
KAFKA_BATCH_BYTES_MAX = 256 * 1024  # one record batch; the broker's default limit is 1 MiB
KAFKA_REQUEST_BYTES_MAX = 1024 * 1024
KAFKA_TOPIC_PARTITIONS = 3  # only when the relay has to create the topic
KAFKA_TOPIC_REPLICATION_MAX = 3
KAFKA_CONSUMER_SESSION_TIMEOUT_MS = 6_000  # Kafka's smallest default group.min.session.timeout
KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS = 2_000
KAFKA_CONSUMER_MAX_POLL_RECORDS = 500  # records applied per consumer database transaction
KAFKA_CONSUMER_POLL_TIMEOUT_MS = 500
CONSUMER_RETRY_BACKOFF_INITIAL_MS = 200
CONSUMER_RETRY_BACKOFF_MAX_MS = 5_000

# Group commit of single-transfer requests (transfers/group_commit.py).
GROUP_COMMIT_BATCH_SIZE_MAX = 500  # transfers per shared transaction
GROUP_COMMIT_INFLIGHT_MAX = 4  # shared transactions running at once per process
# A second shared transaction starts only once the youngest running one is this old: until
# then arrivals wait for it and join the next batch, which is larger (fewer commits, round trips
# and statements per transfer). A batch still running after this long is waiting (a row lock,
# a slow disk), and the next one may start beside it, up to GROUP_COMMIT_INFLIGHT_MAX.
GROUP_COMMIT_STAGGER_SECONDS = 0.03
# Requests queued and not started (single transfers, and batch requests waiting for their
# accounts), per process, past which a new one is shed (503, Retry-After): eight full batches,
# two rounds of every slot; they hold their bodies in memory meanwhile.
GROUP_COMMIT_QUEUE_MAX = 4_000
# A queued request not started by then is shed (503): waiting for its turn is waiting for other
# requests' locks, so it gets the whole wait budget, and no client waits longer than that.
GROUP_COMMIT_QUEUE_WAIT_MAX_SECONDS = float(REQUEST_WAIT_MAX_SECONDS)

# Authenticated API keys are remembered this long per process (a revocation made through this
# process applies at once; one made elsewhere within this many seconds).
API_KEY_CACHE_TTL_SECONDS = 1.0
API_KEY_CACHE_ENTRIES_MAX = 10_000

# Idempotency-Key retention: the worker deletes keys past IDEMPOTENCY_KEY_TTL_SECONDS, at most
# this many per transaction, again at once while there are more, else after the interval.
IDEMPOTENCY_DELETE_BATCH_MAX = 1_000
IDEMPOTENCY_RETENTION_INTERVAL_SECONDS = 60.0

# The expiry worker: due holds expired per step (each in its own transaction), and the holds
# whose expiry failed (a row locked elsewhere for long, a state that raises), retried apart from
# the others after a capped, jittered backoff. A hold pushed out of the full retry book is only
# tried sooner, by the main expiry step.
EXPIRY_BATCH_SIZE = 100
EXPIRY_INTERVAL_SECONDS = 1.0
EXPIRY_RETRY_INTERVAL_SECONDS = 1.0  # how often the retry job looks for holds whose wait is over
EXPIRY_RETRY_ENTRIES_MAX = 1_000  # failing holds remembered per worker process
EXPIRY_RETRY_BACKOFF_INITIAL_MS = 1_000
EXPIRY_RETRY_BACKOFF_MAX_MS = 60_000
# An expiry waits this long for a row or advisory lock, not a request's REQUEST_WAIT_MAX_SECONDS:
# past it the hold is retried later, and the holds after it are not kept waiting. Requests hold
# account rows for milliseconds (a 1,000-transfer batch: a few hundred), so this is rarely hit.
EXPIRY_LOCK_TIMEOUT_MS = 2_000

# Unauthenticated reads (/metrics, /ready): scrapes that arrive together share one query, and a
# process sends at most one such query per interval however many scrapes come. A scrape waits
# for the next query rather than take an older answer, so its value is never older than itself.
OUTBOX_STATUS_INTERVAL_SECONDS = 1.0
READY_CHECK_INTERVAL_SECONDS = 0.2  # well under a probe's usual 1 s timeout
# The backlog is counted up to this many unpublished rows (index entries of the partial index on
# unpublished ids): past it, /metrics reports this number, a floor.
OUTBOX_BACKLOG_COUNT_MAX = 100_000
# The status query's own lock and statement timeouts: a locked or slow table gives an unknown
# (NaN) backlog quickly instead of a scrape holding a connection for DB_LOCK_TIMEOUT_MS.
OUTBOX_STATUS_TIMEOUT_MS = 2_000

# Audit verification hashes the whole trail (CPU in a worker thread, one snapshot held open):
# an API process runs at most this many at once and answers another 503 (Retry-After) unstarted.
AUDIT_VERIFY_RUNNING_MAX = 1
# The longest a genuine write takes from its audit record's `at` to its transaction's id (taken
# with its first write or row lock): a pooled connection, an Idempotency-Key and a row lock, each
# waited for up to the request's wait budget, plus clock skew between API hosts and PostgreSQL.
# `audit verify` names a record whose transaction began later than this after its `at` as put in
# behind the service's back; how late it was sealed is no alarm (outages, backlogs, slow commits).
AUDIT_INSERTION_GRACE_SECONDS = 300

# -- the auditor console (/console) --
CONSOLE_SESSION_SECONDS = 8 * 60 * 60  # a signed-in browser's idle life; each page renews it
CONSOLE_SESSION_SWEEP_MAX = 100  # expired session rows deleted, at most, per sign-in
CONSOLE_PAGE_SIZE = 50  # rows per page: audit search, statement, timelines, account list
CONSOLE_CHART_POINTS_MAX = 500  # latest statement entries drawn in the balance chart
CONSOLE_EXPORT_PAGE_SIZE = LIST_LIMIT_MAX  # audit records read per transaction by the CSV export
CONSOLE_EXPORT_ROWS_MAX = 1_000_000  # rows one CSV export streams at most
CONSOLE_HISTORY_RECORDS_MAX = 1_000  # audit records a transfer's page shows at most

# -- reporting (metadata filters, categories, trial balance) ---------------------------------------
METADATA_FILTERS_MAX = 16  # `metadata[KEY]=VALUE` pairs on one list request
METADATA_FILTER_KEY_CHARS_MAX = 128
METADATA_FILTER_VALUE_CHARS_MAX = 1_024
# A category's ancestry: the tree walk of a patch, and the database trigger's own bound.
CATEGORY_DEPTH_MAX = 10_000

# -- what a client can grow (contract 9.1: every bound stated and enforced, 422 past it) --------
# Each monitor of an account is loaded, compared and may fire one event inside every posting's
# lock window on that account: a transfer touches two accounts, so twice this many at most.
# Balance alerts need a handful; 100 keeps the window's added work a few milliseconds
# (docs/api.md measures it).
MONITORS_PER_ACCOUNT_MAX = 100
# Levels of a category tree, root included: a create walks its parent's ancestry, a move also
# its own subtree, each at most this deep. Charts of accounts are under a dozen levels deep.
CATEGORY_LEVELS_MAX = 100
CATEGORY_CHILDREN_MAX = 1_000  # direct child categories of one category
CATEGORY_ACCOUNTS_MAX = 100_000  # accounts directly in one category
ACCOUNT_CATEGORIES_MAX = 100  # categories one account is directly in

# -- webhooks (contract 9.2) -------------------------------------------------------------------
WEBHOOK_ENDPOINTS_MAX = 100  # live endpoints per ledger; the 101st is 422
WEBHOOK_URL_LENGTH_MAX = 2_048
WEBHOOK_DESCRIPTION_LENGTH_MAX = 256
WEBHOOK_EVENT_TYPES_MAX = 32  # entries in one endpoint's `event_types`
WEBHOOK_EVENT_TYPE_LENGTH_MAX = 128
WEBHOOK_SECRET_BYTES = 32  # 256 random bits (the specification asks for 24 to 64 bytes)
WEBHOOK_SECRET_OVERLAP_SECONDS = 24 * 60 * 60  # a rotated secret keeps signing this long
# One attempt: connect, send, and a 2xx status within this; the response body is read within the
# same time, and at most WEBHOOK_RESPONSE_BYTES_MAX of it.
WEBHOOK_ATTEMPT_TIMEOUT_SECONDS = 10.0
WEBHOOK_RESPONSE_BYTES_MAX = 64 * 1024
WEBHOOK_RETRY_INITIAL_MS = 1_000  # the first retry after about 1 s, doubling ...
WEBHOOK_RETRY_MAX_MS = 60 * 60 * 1000  # ... to at most 1 h apart ...
WEBHOOK_RETRY_WINDOW_SECONDS = 72 * 60 * 60  # ... for 72 h from when the event was taken
# Requests in flight per endpoint (one connection each), so that a receiver far away (50 ms a
# round trip) still takes a few hundred events a second; all endpoints together hold at most
# WEBHOOK_ENDPOINTS_MAX times it. While an endpoint fails, it gets one request at a time: a
# hanging one holds one connection once its first attempts have timed out.
WEBHOOK_ENDPOINT_CONCURRENCY_MAX = 16
WEBHOOK_BATCH_EVENTS_MAX = 200  # events one lane takes from the feed per step
WEBHOOK_BATCH_BYTES_MAX = 1024 * 1024  # envelope bytes one lane holds at once (about)
WEBHOOK_RETRY_BATCH_MAX = 50  # due retries one lane sends per step
WEBHOOK_POLL_INTERVAL_SECONDS = 0.1  # how often the dispatcher looks for new feed positions
WEBHOOK_LANE_IDLE_SECONDS = 1.0  # an idle lane looks for due retries at least this often
WEBHOOK_ENDPOINTS_REFRESH_SECONDS = 1.0  # changes to endpoints and secrets reach the worker
# The delivery process, a child of `ledger worker` (ledger/worker/webhook_process.py): started
# again after it ends, from about 1 s doubling to a minute (starting over once a child has run
# for a minute); stopped with SIGTERM, then SIGKILL after the grace period; its metrics reach the
# worker's /metrics this often.
WEBHOOK_CHILD_POLL_SECONDS = 1.0
WEBHOOK_CHILD_RESTART_INITIAL_MS = 1_000
WEBHOOK_CHILD_RESTART_MAX_MS = 60_000
WEBHOOK_CHILD_STABLE_SECONDS = 60.0
WEBHOOK_CHILD_STOP_SECONDS = 15.0
WEBHOOK_METRICS_REPORT_SECONDS = 2.0
WEBHOOK_ERROR_LENGTH_MAX = 200  # characters of an attempt's error kept in the delivery log
WEBHOOK_PENDING_COUNT_MAX = 10_000  # the retrying gauge counts up to this (a floor past it)
WEBHOOK_RETENTION_BATCH_SIZE = 1_000  # delivery rows deleted per statement by the cleanup
WEBHOOK_RETENTION_INTERVAL_SECONDS = 60.0

# -- beyond one machine (docs/scaling.md) ----------------------------------------------------------
# A database host that vanishes without closing its sockets (power, network) must not leave a
# connection waiting forever: TCP keepalives find an idle peer gone within about
# IDLE + INTERVAL x COUNT seconds (a busy server's kernel still answers them), and data sent but
# never acknowledged fails after the user timeout.
DB_TCP_KEEPALIVES_IDLE_SECONDS = 5
DB_TCP_KEEPALIVES_INTERVAL_SECONDS = 2
DB_TCP_KEEPALIVES_COUNT = 3
DB_TCP_USER_TIMEOUT_MS = 10_000
# A job whose step found the database away waits before its next step: from its own interval,
# doubling (jittered) up to this, so a worker neither hammers a failing server nor sleeps long
# past a promotion.
JOB_UNAVAILABLE_BACKOFF_MAX_SECONDS = 2.0
# Reads on LEDGER_DATABASE_READ_URL: the primary's WAL position that a standby must have replayed
# before a read may be served there is asked at most this often per process (every read waits for
# one asked after it arrived); a standby behind it sends that read to the primary.
READ_FENCE_INTERVAL_SECONDS = 0.0
# How long a read waits, at most, for the standby to replay that far before it goes to the primary.
READ_FENCE_WAIT_MS = 50
