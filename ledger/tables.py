"""Every mapped table, imported in one place so Alembic and tests see the whole schema."""

from __future__ import annotations

from ledger.apikeys.models import ApiKey
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.audit.tree_models import AuditCheckpoint, AuditCheckpointDelivery, AuditTreeNode
from ledger.core.db import Base
from ledger.idempotency.models import IdempotencyRecord
from ledger.posting.models import Account, Entry, Transfer, VoidedTransferId
from outbox.models import ConsumerBalance, ConsumerInbox, OutboxEvent

__all__ = [
    "Account",
    "ApiKey",
    "AuditCheckpoint",
    "AuditCheckpointDelivery",
    "AuditRecord",
    "AuditSeal",
    "AuditTreeNode",
    "Base",
    "ConsumerBalance",
    "ConsumerInbox",
    "Entry",
    "IdempotencyRecord",
    "OutboxEvent",
    "Transfer",
    "VoidedTransferId",
]
