"""Every mapped table, imported in one place so Alembic and tests see the whole schema."""

from __future__ import annotations

from accounts.categories.models import Category, CategoryAccount
from ledger.apikeys.models import ApiKey
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.audit.tree_models import (
    AuditCheckpoint,
    AuditCheckpointRefused,
    AuditCheckpointTarget,
    AuditTreeNode,
)
from ledger.console.models import ConsoleSecret, ConsoleSession
from ledger.core.db import Base
from ledger.core.lock_models import LockKeySecret
from ledger.idempotency.models import IdempotencyRecord
from ledger.posting.models import Account, Entry, Transfer, VoidedTransferId
from ledger.posting.movement_models import AccountMonitor, Exchange, PeriodLock
from ledger.posting.verify_models import VerifyAccountMark, VerifyMonitorMark, VerifyRun
from ledger.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookSecret
from outbox.models import ConsumerBalance, ConsumerInbox, OutboxEvent

__all__ = [
    "Account",
    "AccountMonitor",
    "ApiKey",
    "AuditCheckpoint",
    "AuditCheckpointRefused",
    "AuditCheckpointTarget",
    "AuditRecord",
    "AuditSeal",
    "AuditTreeNode",
    "Base",
    "Category",
    "CategoryAccount",
    "ConsoleSecret",
    "ConsoleSession",
    "ConsumerBalance",
    "ConsumerInbox",
    "Entry",
    "Exchange",
    "IdempotencyRecord",
    "LockKeySecret",
    "OutboxEvent",
    "PeriodLock",
    "Transfer",
    "VerifyAccountMark",
    "VerifyMonitorMark",
    "VerifyRun",
    "VoidedTransferId",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
]
