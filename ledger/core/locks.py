"""Every advisory lock of the service, each in a class of its own.

PostgreSQL keeps advisory locks taken with one bigint key and those taken with two int4 keys
apart, and two-key locks with different first keys never meet. So the service's own locks use
the two-key form `(class, key)` with one class per purpose, and the one-bigint space belongs to
ids a client chooses alone: no value a client picks can ever name the relay's or the sealer's
lock.

A client id's lock key is a keyed hash of the whole id (contract 9.1, "no chosen id shares a
lock"): the first 64 bits of SHA-256(secret || kind || the id's 16 bytes), computed by
PostgreSQL itself with the secret of the `lock_key_secret` row, which migration 0016 drew from
the server's strong random source and which never leaves the database (no process reads it, no
response or log carries it). Truncated bits of the id itself (the low 32, as before) let a
client pick an id that collides with another client's transfer and make every request for it
wait out the first one's row-lock wait; with a keyed hash nobody can pick a collision, and an
accidental one is a 1-in-2**64 chance per pair of ids in flight at once. Every process computes
the same keys from the same row, so the same id always meets itself, whatever process asks.
"""

from __future__ import annotations

import enum


class LockClass(enum.IntEnum):
    TRANSFER_ID = 1  # retired: transfer ids now lock in the keyed one-bigint space (below)
    OUTBOX_RELAY = 2  # the one active relay, held by its session
    AUDIT_SEALER = 3  # the one active sealer, held by its session
    API_KEY_BOOTSTRAP = 4  # LEDGER_ADMIN_KEY's idempotent creation, per transaction
    # Every posting transaction holds it shared (taken first); moving the period lock holds it
    # exclusively, so no posting whose time was read before the move can commit after it.
    PERIOD_LOCK = 16
    CATEGORY_TREE = 15  # moves of categories in their tree (cycle checks), per transaction
    AUDIT_CHECKPOINT_DELIVERY = 14  # one delivery of checkpoints per target, per transaction
    WEBHOOK_DISPATCHER = 26  # the one active webhook dispatcher, held by its session
    WEBHOOK_ENDPOINTS = 27  # creations of webhook endpoints (their bound), per transaction
    VERIFY_RUN = 40  # the one `ledger verify` that records its run, held by its session


# A class whose lock is one lock: its second key is always this.
SINGLETON_KEY = 0


class ClientIdKind(enum.IntEnum):
    """What a client id names, hashed with it: a transfer and an exchange that share an id
    never share a lock."""

    TRANSFER = 1  # every operation on one transfer id (create, post, void, reverse, expire)
    EXCHANGE = 2  # one exchange id, around the creation of its two legs
    ACCOUNT_MEMBERSHIPS = 3  # one account's category memberships, while one is added


def client_id_locks_sql(ids_param: str, kind: ClientIdKind) -> str:
    """SQL that takes the transaction-scoped lock of every id in the `uuid[]` parameter
    `ids_param` (a placeholder, `%s` or `:ids`), each once, in key order (two transactions never
    wait on each other's ids in a cycle)."""
    key = (
        "('x' || encode(substr(sha256(s.secret || "
        f"'\\x{int(kind):02x}'::bytea || uuid_send(i)), 1, 8), 'hex'))::bit(64)::bigint"
    )
    ids = f"unnest(CAST({ids_param} AS uuid[])) AS i"
    return (
        "SELECT pg_advisory_xact_lock(k.key) FROM ("
        f"SELECT DISTINCT {key} AS key FROM {ids}, lock_key_secret s ORDER BY 1) AS k"
    )
