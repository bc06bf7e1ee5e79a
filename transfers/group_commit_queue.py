"""What waits in the group-commit queue: a single transfer (`Submission`) or a request that runs
its own transaction on some accounts (`Gate`, a transfer batch)."""

from __future__ import annotations

import asyncio
import contextvars
import math
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from opentelemetry import trace

from ledger.core.context import WriteContext
from ledger.idempotency.store import IdempotencyClaim, StoredResponse
from ledger.posting.commands import TransferCommand


@dataclass(slots=True, eq=False)  # compared by identity: the queue removes the very one
class Submission:
    command: TransferCommand
    ctx: WriteContext
    claim: IdempotencyClaim | None
    # The span of the request that submitted this transfer; the batch span links to it.
    span_context: trace.SpanContext | None = None
    context: contextvars.Context | None = None
    # None as a result: the key was taken, answer through the one-request path instead.
    future: asyncio.Future[StoredResponse | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    deadline: float = math.inf  # time.monotonic() by which it must have started
    started: bool = False  # taken into a batch: it runs to its outcome from here on

    @property
    def accounts(self) -> tuple[uuid.UUID, uuid.UUID]:
        return (self.command.debit_account_id, self.command.credit_account_id)


@dataclass(slots=True, eq=False)
class Gate:
    """A request that runs its own transaction (a transfer batch) on these accounts: it starts
    when no running batch and no earlier queued request holds any of them, and holds them until
    it leaves."""

    accounts: Collection[uuid.UUID]
    future: asyncio.Future[StoredResponse | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    deadline: float = math.inf
    started: bool = False


Queued = Submission | Gate
