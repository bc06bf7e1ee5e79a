"""Thin HTTP layer for transfers: typed bodies in, the service's domain results out, and the
status code chosen here (201 for a new transfer, 200 for an existing one)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from litestar import Controller, Request, Response
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import WriteContext
from ledger.core.errors import (
    AccountNotActive,
    AccountNotFound,
    AmountOverflow,
    CurrencyMismatch,
    ImportedInFuture,
    ImportedOutOfOrder,
    InsufficientFunds,
    InvalidMetadataFilter,
    LedgerError,
    NothingToMove,
    PeriodLocked,
    PostExceedsPending,
    ReversalExceedsPosted,
    SameAccount,
    TransferAlreadyVoided,
    TransferExistsWithDifferentFields,
    TransferNotFound,
    TransferNotPending,
    TransferNotPosted,
)
from ledger.http import params
from ledger.http.auth import requires, write_context
from ledger.http.bodies import get, post, typed
from ledger.http.idempotent import claim_of, idempotent_post, respond
from ledger.http.metadata_filters import MetadataFilterOperation, metadata_filters
from ledger.http.pagination import Limit, UuidCursor, UuidFilter, decode_uuid_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of
from ledger.posting.state import VoidedId
from transfers import service
from transfers.group_commit import group_committer_of
from transfers.schemas import (
    AmountBody,
    BatchCreate,
    BatchResult,
    EmptyBody,
    State,
    TransferCreate,
    TransferOut,
    TransferPage,
    batch_result,
    empty_cancel_out,
    transfer_out,
)
from transfers.service import TransferResult

STATES: tuple[str, ...] = get_args(State)
# What the posting rules may refuse when a transfer moves money (ledger/posting/rules.py).
# A string with the UUID pattern, not `uuid.UUID | None`: Litestar reads `?account_id=null` as
# None for an optional UUID, and the filter would silently list every transfer.
TRANSFER_REFUSALS: tuple[type[LedgerError], ...] = (
    AccountNotFound,
    SameAccount,
    CurrencyMismatch,
    AccountNotActive,
    InsufficientFunds,
    AmountOverflow,
    TransferExistsWithDifferentFields,
    TransferAlreadyVoided,
    NothingToMove,
    ImportedOutOfOrder,
    ImportedInFuture,
    PeriodLocked,
)


def _answer(result: TransferResult | VoidedId) -> tuple[int, TransferOut]:
    """(status, body) of one transfer operation, for idempotent_post to store and send."""
    if isinstance(result, VoidedId):
        return 200, empty_cancel_out(result)
    return (201 if result.created else 200), transfer_out(result.transfer)


async def _change(
    request: Request[Any, Any, Any],
    operation: Callable[[AsyncSession, WriteContext], Awaitable[TransferResult | VoidedId]],
) -> Response[TransferOut]:
    """Post, void or reverse one transfer: one idempotent write, answered with the transfer."""

    async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
        return _answer(await operation(session, ctx))

    return typed(await idempotent_post(request, effect), TransferOut)


async def _client_gone(request: Request[Any, Any, Any]) -> None:
    """Returns once the client has closed its connection. The body is read already, so the
    server's next message is `http.disconnect`, sent when the client goes away (or when the
    response is complete, by which time nobody watches any more)."""
    if (await request.receive())["type"] == "http.disconnect":
        return
    # Anything else was not expected after the body: stop watching, never report it gone.
    await asyncio.get_running_loop().create_future()


class TransferController(Controller):
    path = "/v1/transfers"
    tags = ["transfers"]

    @post(
        "/",
        guards=[requires("write")],
        operation_id="createTransfer",
        status_code=201,
        responses={200: ResponseSpec(TransferOut, description="this id exists with these fields")},
        problems=TRANSFER_REFUSALS,
        links={
            operation: {"transfer_id": "$response.body#/id"}
            for operation in ("getTransfer", "postTransfer", "voidTransfer", "reverseTransfer")
        },
        example={
            "debit_account_id": "0190f1a2-7c3e-7a51-9d2e-3b8f4c6a1e20",
            "credit_account_id": "0190f1a2-7c3e-7a51-9d2e-3b8f4c6a1e21",
            "amount": 2500,
            "currency": "USD",
            "pending": True,
            "timeout_seconds": 3600,
            "reference": "order 1001",
        },
    )
    async def create(
        self, request: Request[Any, Any, Any], data: TransferCreate
    ) -> Response[TransferOut]:
        command = service.to_command(data)
        service.check_import_allowed(write_context(request).actor, [command])

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return _answer(await service.create_transfer(session, command, ctx))

        committer = group_committer_of(services_of(request))
        if committer is None:
            return typed(await idempotent_post(request, effect), TransferOut)
        claim = claim_of(request, await request.body())
        stored = await committer.submit(
            command, write_context(request), claim, client_gone=lambda: _client_gone(request)
        )
        if stored is None:  # the key exists already: wait for it and replay, one request alone
            return typed(await idempotent_post(request, effect), TransferOut)
        return typed(respond(stored), TransferOut)

    @post("/batch", guards=[requires("write")], operation_id="createTransferBatch", status_code=200)
    async def batch(
        self, request: Request[Any, Any, Any], data: BatchCreate
    ) -> Response[BatchResult]:
        commands = service.batch_commands(data)
        service.check_import_allowed(write_context(request).actor, commands)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            outcomes = await service.create_batch(session, commands, data.atomic, ctx)
            return 200, batch_result(outcomes)

        committer = group_committer_of(services_of(request))
        if committer is None:
            return typed(await idempotent_post(request, effect), BatchResult)
        # Its turn on its accounts comes in this process's queue, after every request queued
        # before it on any of them (not in PostgreSQL's row-lock queues, holding a connection).
        accounts = {a for c in commands for a in (c.debit_account_id, c.credit_account_id)}
        async with committer.exclusive(accounts, client_gone=lambda: _client_gone(request)):
            return typed(await idempotent_post(request, effect), BatchResult)

    @post(
        "/{transfer_id:uuid}/post",
        guards=[requires("write")],
        operation_id="postTransfer",
        status_code=200,
        problems=(TransferNotFound, TransferNotPending, PostExceedsPending, AmountOverflow),
    )
    async def post_(
        self,
        request: Request[Any, Any, Any],
        transfer_id: uuid.UUID,
        data: AmountBody | None = None,
    ) -> Response[TransferOut]:
        """Post (confirm) a pending transfer; no body, or no amount: in full."""
        amount = None if data is None else data.amount
        return await _change(
            request, lambda s, ctx: service.post_transfer(s, transfer_id, amount, ctx)
        )

    @post(
        "/{transfer_id:uuid}/void",
        guards=[requires("write")],
        operation_id="voidTransfer",
        status_code=200,
        problems=(TransferNotPending,),
    )
    async def void(
        self,
        request: Request[Any, Any, Any],
        transfer_id: uuid.UUID,
        data: EmptyBody | None = None,  # no body, or `{}`: decoded only to refuse anything else
    ) -> Response[TransferOut]:
        return await _change(request, lambda s, ctx: service.void_transfer(s, transfer_id, ctx))

    @post(
        "/{transfer_id:uuid}/reverse",
        guards=[requires("write")],
        operation_id="reverseTransfer",
        status_code=201,
        problems=(TransferNotFound, TransferNotPosted, ReversalExceedsPosted, *TRANSFER_REFUSALS),
    )
    async def reverse(
        self,
        request: Request[Any, Any, Any],
        transfer_id: uuid.UUID,
        data: AmountBody | None = None,
    ) -> Response[TransferOut]:
        """Reverse a posted transfer; no body, or no amount: all that is left."""
        amount = None if data is None else data.amount
        return await _change(
            request, lambda s, ctx: service.reverse_transfer(s, transfer_id, amount, ctx)
        )

    @get(
        "/{transfer_id:uuid}",
        guards=[requires("read")],
        operation_id="getTransfer",
        problems=(TransferNotFound,),
    )
    async def get_one(
        self, request: Request[Any, Any, Any], transfer_id: uuid.UUID
    ) -> Response[TransferOut]:
        found = await services_of(request).run(lambda s: service.get_transfer(s, transfer_id))
        return typed(json_response(transfer_out(found)), TransferOut)

    @get(
        "/",
        guards=[requires("read")],
        operation_id="listTransfers",
        operation_class=MetadataFilterOperation,
        problems=(InvalidMetadataFilter,),
    )
    async def list_(
        self,
        request: Request[Any, Any, Any],
        account_id: UuidFilter = None,
        # A string, not the Literal: Litestar reads `?state=null` as None for an optional Literal.
        state_: str | None = Parameter(
            query="state", default=None, schema_extra={"enum": list(STATES)}
        ),
        cursor: UuidCursor = None,
        limit: Limit = 100,
    ) -> Response[TransferPage]:
        params.list_limit(limit)
        state = params.one_of("state", state_, STATES)
        after = decode_uuid_cursor("transfer", cursor)
        metadata = metadata_filters(request)
        account = None if account_id is None else uuid.UUID(account_id)

        async def work(session: AsyncSession) -> list[TransferOut]:
            found = await service.list_transfers(
                session,
                account_id=account,
                state=state,
                after=after,
                limit=limit,
                metadata=metadata,
            )
            return [transfer_out(t) for t in found]

        items = await services_of(request).read(work)
        return typed(
            json_response(page(items, limit, lambda t: str(t.id), "transfer")), TransferPage
        )
