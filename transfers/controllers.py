"""Thin HTTP layer for transfers."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import WriteContext
from ledger.core.errors import ValidationFailed
from ledger.core.schemas import decode_body
from ledger.http.auth import requires, write_context
from ledger.http.idempotent import claim_of, idempotent_post
from ledger.http.pagination import check_limit, decode_uuid_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of
from ledger.posting.engine import transfer_out
from transfers import repository as repo
from transfers import service
from transfers.group_commit import group_committer_of
from transfers.schemas import AmountBody, BatchCreate, EmptyBody, TransferCreate

STATES = ("pending", "posted", "voided", "expired")


async def _optional_amount(request: Request[Any, Any, Any]) -> int | None:
    raw = await request.body()
    if not raw.strip():
        return None
    return decode_body(raw, AmountBody).amount


class TransferController(Controller):
    path = "/v1/transfers"
    tags = ["transfers"]

    @post("/", guards=[requires("write")], operation_id="createTransfer", status_code=201)
    async def create(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body()
        command = service.to_command(decode_body(body, TransferCreate))

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return await service.create_transfer(session, command, ctx)

        committer = group_committer_of(services_of(request))
        if committer is None:
            return await idempotent_post(request, effect)
        stored = await committer.submit(command, write_context(request), claim_of(request, body))
        if stored is None:  # the key exists already: wait for it and replay, one request alone
            return await idempotent_post(request, effect)
        return Response(
            content=stored.body, status_code=stored.status, media_type=stored.media_type
        )

    @post("/batch", guards=[requires("write")], operation_id="createTransferBatch", status_code=200)
    async def batch(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        body = decode_body(await request.body(), BatchCreate)
        commands = service.batch_commands(body)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return await service.create_batch(session, commands, body.atomic, ctx)

        return await idempotent_post(request, effect)

    @post(
        "/{transfer_id:uuid}/post",
        guards=[requires("write")],
        operation_id="postTransfer",
        status_code=200,
    )
    async def post_pending(
        self, request: Request[Any, Any, Any], transfer_id: uuid.UUID
    ) -> Response[bytes]:
        amount = await _optional_amount(request)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return await service.post_transfer(session, transfer_id, amount, ctx)

        return await idempotent_post(request, effect)

    @post(
        "/{transfer_id:uuid}/void",
        guards=[requires("write")],
        operation_id="voidTransfer",
        status_code=200,
    )
    async def void(
        self, request: Request[Any, Any, Any], transfer_id: uuid.UUID
    ) -> Response[bytes]:
        raw = await request.body()
        if raw.strip():
            decode_body(raw, EmptyBody)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return await service.void_transfer(session, transfer_id, ctx)

        return await idempotent_post(request, effect)

    @post(
        "/{transfer_id:uuid}/reverse",
        guards=[requires("write")],
        operation_id="reverseTransfer",
        status_code=201,
    )
    async def reverse(
        self, request: Request[Any, Any, Any], transfer_id: uuid.UUID
    ) -> Response[bytes]:
        amount = await _optional_amount(request)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return await service.reverse_transfer(session, transfer_id, amount, ctx)

        return await idempotent_post(request, effect)

    @get("/{transfer_id:uuid}", guards=[requires("read")], operation_id="getTransfer")
    async def get_one(
        self, request: Request[Any, Any, Any], transfer_id: uuid.UUID
    ) -> Response[bytes]:
        return json_response(
            await services_of(request).run(lambda s: service.get_transfer(s, transfer_id))
        )

    @get("/", guards=[requires("read")], operation_id="listTransfers")
    async def list_(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID | None = None,
        state_: str | None = Parameter(query="state", default=None),
        cursor: str | None = None,
        limit: int = 100,
    ) -> Response[bytes]:
        check_limit(limit)
        state = state_
        if state is not None and state not in STATES:
            raise ValidationFailed(
                f"state must be one of {', '.join(STATES)}",
                errors=[{"field": "state", "message": "unknown state"}],
            )
        after = decode_uuid_cursor("transfer", cursor)

        async def work(session: AsyncSession) -> list[Any]:
            rows = await repo.list_transfers(
                session, account_id=account_id, state=state, after=after, limit=limit
            )
            return [transfer_out(t) for t in rows]

        items = await services_of(request).run(work)
        return json_response(page(items, limit, lambda t: str(t.id), "transfer"))
