"""Every advisory lock of the service, each in a class of its own.

PostgreSQL keeps advisory locks taken with one bigint key and those taken with two int4 keys
apart, and two-key locks with different first keys never meet. So every lock here uses the
two-key form `(class, key)` with one class per purpose: no value a client chooses (a transfer id)
can ever name the relay's or the sealer's lock, and a client id shares a lock only with requests
for that same id (or, one time in 2**32, another id of the same class: a short wait, never an
error).
"""

from __future__ import annotations

import enum
import uuid


class LockClass(enum.IntEnum):
    TRANSFER_ID = 1  # every operation on one transfer id, taken per transaction
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


# A class whose lock is one lock: its second key is always this.
SINGLETON_KEY = 0


def int4_key(value: uuid.UUID) -> int:
    """A signed 32-bit key from the id's random low bits (UUIDv7 and v4 alike)."""
    key = value.int & 0xFFFF_FFFF
    return key - (1 << 32) if key >= (1 << 31) else key
