"""Every mapped table, imported in one place so Alembic and tests see the whole schema."""

from __future__ import annotations

from accounts.models import Account
from ledger.apikeys.models import ApiKey
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.db import Base
from ledger.idempotency_models import IdempotencyRecord
from outbox.models import ConsumerBalance, ConsumerInbox, OutboxEvent
from transfers.models import Entry, Transfer, VoidedTransferId

__all__ = [
    "Account",
    "ApiKey",
    "AuditRecord",
    "AuditSeal",
    "Base",
    "ConsumerBalance",
    "ConsumerInbox",
    "Entry",
    "IdempotencyRecord",
    "OutboxEvent",
    "Transfer",
    "VoidedTransferId",
]
