"""`POST /v1/transfers/exchange`: a cross-currency exchange, answered with its two legs."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response
from litestar.openapi import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import WriteContext
from ledger.core.errors import (
    ExchangeExistsWithDifferentFields,
    ExchangeSameCurrency,
    ExchangeViaInvalid,
)
from ledger.http.auth import requires
from ledger.http.bodies import post, typed
from ledger.http.idempotent import idempotent_post
from transfers import exchange
from transfers.controllers import TRANSFER_REFUSALS
from transfers.exchange_schemas import ExchangeCreate, ExchangeOut
from transfers.schemas import transfer_out


def exchange_out(result: exchange.ExchangeResult) -> ExchangeOut:
    return ExchangeOut(
        id=result.id, rate=result.rate, transfers=[transfer_out(leg) for leg in result.legs]
    )


class ExchangeController(Controller):
    path = "/v1/transfers/exchange"
    tags = ["transfers"]

    @post(
        "/",
        guards=[requires("write")],
        operation_id="createExchange",
        status_code=201,
        responses={200: ResponseSpec(ExchangeOut, description="this id exists with these fields")},
        problems=(
            *TRANSFER_REFUSALS,
            ExchangeViaInvalid,
            ExchangeSameCurrency,
            ExchangeExistsWithDifferentFields,
        ),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: ExchangeCreate
    ) -> Response[ExchangeOut]:
        """Two transfers, one per currency, through the named liquidity accounts, in one
        transaction: both or neither. 201 a new exchange, 200 the same `id` again."""
        command = exchange.to_exchange_command(data)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            result = await exchange.create_exchange(session, command, ctx)
            return (201 if result.created else 200), exchange_out(result)

        return typed(await idempotent_post(request, effect), ExchangeOut)
