"""Thin HTTP layer for accounts: typed bodies and checked parameters in, the service's domain
results out, the status code and ETag chosen here."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, get_args

import msgspec
from litestar import Controller, Request, Response
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import service
from accounts.schemas import (
    AccountCreate,
    AccountOut,
    AccountPage,
    AccountPatch,
    BalanceAsOf,
    EntryOut,
    EntryPage,
    Status,
    account_out,
)
from ledger.core.context import WriteContext
from ledger.core.errors import (
    AccountClosed,
    AccountCodeExists,
    AccountExistsWithDifferentFields,
    AccountNotEmpty,
    AccountNotFound,
    InvalidMetadataFilter,
    MinBalanceViolated,
)
from ledger.core.schemas import ACCOUNT_CODE_PATTERN, CURRENCY_PATTERN
from ledger.http import params
from ledger.http.auth import requires, write_context
from ledger.http.bodies import get, patch, post, typed
from ledger.http.idempotent import idempotent_post
from ledger.http.metadata_filters import MetadataFilterOperation, metadata_filters
from ledger.http.pagination import (
    Limit,
    SequenceCursor,
    UuidCursor,
    decode_int_cursor,
    decode_uuid_cursor,
    page,
)
from ledger.http.responses import json_response
from ledger.http.state import services_of

FILTERS: dict[str, params.FilterRule] = {
    "code": re.compile(ACCOUNT_CODE_PATTERN),
    "currency": re.compile(CURRENCY_PATTERN),
    "status": get_args(Status),
}

# Where an account answer leads: the routes that take its id.
BY_ID = {"account_id": "$response.body#/id"}

# Filters take the shapes of the fields they filter: Litestar checks and documents the pattern.
CodeFilter = Annotated[str | None, Parameter(pattern=ACCOUNT_CODE_PATTERN)]
CurrencyFilter = Annotated[str | None, Parameter(pattern=CURRENCY_PATTERN)]
# A string, not the Literal: Litestar reads `?status=null` as None for an optional Literal.
StatusFilter = Annotated[str | None, Parameter(schema_extra={"enum": list(get_args(Status))})]

# Documented here; required by the `require_if_match` guard, read in the handler.
IfMatch = Annotated[
    str | None,
    Parameter(header="If-Match", required=False, description="The account's ETag"),
]


class AccountController(Controller):
    path = "/v1/accounts"
    tags = ["accounts"]

    @post(
        "/",
        guards=[requires("write")],
        operation_id="createAccount",
        status_code=201,
        responses={200: ResponseSpec(AccountOut, description="this id exists with these fields")},
        problems=(AccountCodeExists, AccountExistsWithDifferentFields, MinBalanceViolated),
        links={"getAccount": BY_ID, "listEntries": BY_ID, "getBalanceAsOf": BY_ID},
        example={
            "code": "customer:42:wallet",
            "currency": "USD",
            "normal_balance": "credit",
            "min_balance": 0,
            "metadata": {"customer": "42"},
        },
    )
    async def create(
        self, request: Request[Any, Any, Any], data: AccountCreate
    ) -> Response[AccountOut]:
        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            result = await service.create_account(session, data, ctx)
            return (201 if result.created else 200), account_out(result.account)

        return typed(await idempotent_post(request, effect), AccountOut)

    @get(
        "/{account_id:uuid}",
        guards=[requires("read")],
        operation_id="getAccount",
        problems=(AccountNotFound,),
        answers_etag=True,
        links={"patchAccount": {**BY_ID, "header.If-Match": "$response.header.ETag"}},
    )
    async def get_one(
        self, request: Request[Any, Any, Any], account_id: uuid.UUID
    ) -> Response[AccountOut]:
        account = await services_of(request).run(lambda s: service.get_account(s, account_id))
        headers = {"ETag": params.etag(account.version)}
        return typed(json_response(account_out(account), headers=headers), AccountOut)

    @get(
        "/",
        guards=[requires("read")],
        operation_id="listAccounts",
        operation_class=MetadataFilterOperation,
        problems=(InvalidMetadataFilter,),
    )
    async def list_(
        self,
        request: Request[Any, Any, Any],
        code: CodeFilter = None,
        currency: CurrencyFilter = None,
        status: StatusFilter = None,
        cursor: UuidCursor = None,
        limit: Limit = 100,
    ) -> Response[AccountPage]:
        params.list_limit(limit)
        params.check_filters({"code": code, "currency": currency, "status": status}, FILTERS)
        after = decode_uuid_cursor("account", cursor)
        metadata = metadata_filters(request)

        async def work(session: AsyncSession) -> list[AccountOut]:
            found = await service.list_accounts(
                session,
                code=code,
                currency=currency,
                status=status,
                after=after,
                limit=limit,
                metadata=metadata,
            )
            return [account_out(a) for a in found]

        items = await services_of(request).read(work)
        return typed(json_response(page(items, limit, lambda a: str(a.id), "account")), AccountPage)

    @patch(
        "/{account_id:uuid}",
        guards=[requires("write"), params.require_if_match],
        operation_id="patchAccount",
        problems=(AccountNotFound, AccountClosed, AccountNotEmpty, MinBalanceViolated),
        answers_etag=True,
    )
    async def patch_one(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID,
        data: AccountPatch,
        if_match: IfMatch = None,
    ) -> Response[AccountOut]:
        expected = params.if_match_version(if_match)
        ctx = write_context(request)

        async def work(session: AsyncSession) -> AccountOut:
            account = await service.patch_account(session, account_id, data, expected, ctx.at_now())
            return account_out(account)

        out = await services_of(request).run(work)
        return typed(json_response(out, headers={"ETag": params.etag(out.version)}), AccountOut)

    @get(
        "/{account_id:uuid}/entries",
        guards=[requires("read")],
        operation_id="listEntries",
        problems=(AccountNotFound,),
    )
    async def entries(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID,
        from_: str | None = params.timestamp("from"),
        to: str | None = params.timestamp(),
        cursor: SequenceCursor = None,
        limit: Limit = 100,
    ) -> Response[EntryPage]:
        params.list_limit(limit)
        after = decode_int_cursor("entry", cursor)
        start = params.optional_utc(from_)
        end = params.optional_utc(to)

        async def work(session: AsyncSession) -> list[EntryOut]:
            rows = await service.list_entries(
                session, account_id, start=start, end=end, after_sequence=after, limit=limit
            )
            return [msgspec.convert(r, EntryOut) for r in rows]

        items = await services_of(request).read(work)
        return typed(
            json_response(page(items, limit, lambda e: str(e.sequence), "entry")), EntryPage
        )

    @get(
        "/{account_id:uuid}/balance",
        guards=[requires("read")],
        operation_id="getBalanceAsOf",
        problems=(AccountNotFound,),
    )
    async def balance(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID,
        as_of: str | None = params.timestamp(),
    ) -> Response[BalanceAsOf]:
        when = params.utc(as_of) if as_of is not None else dt.datetime.now(dt.UTC)

        async def work(session: AsyncSession) -> BalanceAsOf:
            posted, sequence = await service.balance_as_of(session, account_id, when)
            return BalanceAsOf(account_id=account_id, as_of=when, posted=posted, sequence=sequence)

        return typed(json_response(await services_of(request).read(work)), BalanceAsOf)
