"""Thin HTTP layer for accounts: decode, call the service, encode."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import repository as repo
from accounts import service
from accounts.schemas import AccountCreate, AccountPatch, BalanceAsOf, EntryOut, account_out
from ledger.core.context import WriteContext
from ledger.core.errors import PreconditionFailed, PreconditionRequired, ValidationFailed
from ledger.core.schemas import decode_body
from ledger.http.auth import requires, write_context
from ledger.http.idempotent import idempotent_post
from ledger.http.pagination import check_limit, decode_int_cursor, decode_uuid_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of

CODE = re.compile(r"[A-Za-z0-9:._-]{1,128}")
CURRENCY = re.compile(r"[A-Z0-9]{3,12}")
STATUSES = ("active", "frozen", "closed")


def etag(version: int) -> str:
    return f'"{version}"'


class AccountController(Controller):
    path = "/v1/accounts"
    tags = ["accounts"]

    @post("/", guards=[requires("write")], operation_id="createAccount", status_code=201)
    async def create(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        body = decode_body(await request.body(), AccountCreate)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return await service.create_account(session, body, ctx)

        return await idempotent_post(request, effect)

    @get("/{account_id:uuid}", guards=[requires("read")], operation_id="getAccount")
    async def get_one(
        self, request: Request[Any, Any, Any], account_id: uuid.UUID
    ) -> Response[bytes]:
        account = await services_of(request).run(lambda s: service.get_account(s, account_id))
        return json_response(account_out(account), headers={"ETag": etag(account.version)})

    @get("/", guards=[requires("read")], operation_id="listAccounts")
    async def list_(
        self,
        request: Request[Any, Any, Any],
        code: str | None = None,
        currency: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Response[bytes]:
        check_limit(limit)
        check_filters(code=code, currency=currency, status=status)
        after = decode_uuid_cursor("account", cursor)

        async def work(session: AsyncSession) -> list[Any]:
            found = await repo.list_accounts(
                session, code=code, currency=currency, status=status, after=after, limit=limit
            )
            return [account_out(a) for a in found]

        items = await services_of(request).run(work)
        return json_response(page(items, limit, lambda a: str(a.id), "account"))

    @patch("/{account_id:uuid}", guards=[requires("write")], operation_id="patchAccount")
    async def patch_one(
        self, request: Request[Any, Any, Any], account_id: uuid.UUID
    ) -> Response[bytes]:
        if_match = request.headers.get("if-match")
        if if_match is None:
            raise PreconditionRequired('send If-Match: "<version>" from the account\'s ETag')
        expected = _parse_etag(if_match)
        body = decode_body(await request.body(), AccountPatch)
        ctx = write_context(request)

        async def work(session: AsyncSession) -> Any:
            return await service.patch_account(session, account_id, body, expected, ctx.at_now())

        out = await services_of(request).run(work)
        return json_response(out, headers={"ETag": etag(out.version)})

    @get("/{account_id:uuid}/entries", guards=[requires("read")], operation_id="listEntries")
    async def entries(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID,
        from_: dt.datetime | None = Parameter(query="from", default=None),
        to: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Response[bytes]:
        check_limit(limit)
        after = decode_int_cursor("entry", cursor)
        start = service.utc(from_) if from_ is not None else None
        end = service.utc(to) if to is not None else None

        async def work(session: AsyncSession) -> list[EntryOut]:
            await service.get_account(session, account_id)
            rows = await repo.list_entries(
                session, account_id, start=start, end=end, after_sequence=after, limit=limit
            )
            return [msgspec.convert(r, EntryOut) for r in rows]

        items = await services_of(request).run(work)
        return json_response(page(items, limit, lambda e: str(e.sequence), "entry"))

    @get("/{account_id:uuid}/balance", guards=[requires("read")], operation_id="getBalanceAsOf")
    async def balance(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID,
        as_of: dt.datetime | None = None,
    ) -> Response[bytes]:
        when = service.utc(as_of) if as_of is not None else dt.datetime.now(dt.UTC)

        async def work(session: AsyncSession) -> BalanceAsOf:
            await service.get_account(session, account_id)
            found = await repo.balance_as_of(session, account_id, when)
            posted, sequence = found if found is not None else (0, 0)
            return BalanceAsOf(account_id=account_id, as_of=when, posted=posted, sequence=sequence)

        return json_response(await services_of(request).run(work))


def check_filters(*, code: str | None, currency: str | None, status: str | None) -> None:
    """Filters take the shapes the fields have: anything else (a NUL, a 10 kB string) is a
    validation error, not a query."""
    wrong = [
        name
        for name, value, pattern in (("code", code, CODE), ("currency", currency, CURRENCY))
        if value is not None and not pattern.fullmatch(value)
    ]
    if status is not None and status not in STATUSES:
        wrong.append("status")
    if wrong:
        raise ValidationFailed(
            f"invalid filter: {', '.join(wrong)}",
            errors=[{"field": name, "message": "invalid value"} for name in wrong],
        )


def _parse_etag(value: str) -> int:
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 19:
        raise PreconditionFailed("If-Match must be the account's ETag, a quoted version")
    return int(text)
