"""Thin HTTP layer for categories: typed bodies in, the service's domain results out, statuses
chosen here. Writes need what account writes need (`write`), reads what account reads need."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response
from litestar.openapi import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.categories import service
from accounts.categories.schemas import (
    CategoryBalanceOut,
    CategoryBalances,
    CategoryCreate,
    CategoryOut,
    CategoryPage,
    CategoryPatch,
    MembershipOut,
    MembershipPut,
    category_out,
)
from ledger.core.context import WriteContext
from ledger.core.errors import (
    AccountCategoriesLimitReached,
    AccountNotFound,
    CategoryAccountsLimitReached,
    CategoryChildrenLimitReached,
    CategoryCodeExists,
    CategoryCycle,
    CategoryExistsWithDifferentFields,
    CategoryMembershipNotFound,
    CategoryNotFound,
    CategoryTooDeep,
    CurrencyMismatch,
)
from ledger.http import params
from ledger.http.auth import requires, write_context
from ledger.http.bodies import delete, get, patch, post, put, typed
from ledger.http.idempotent import idempotent_post
from ledger.http.pagination import Limit, UuidCursor, UuidFilter, decode_uuid_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of


class CategoryController(Controller):
    path = "/v1/categories"
    tags = ["categories"]

    @post(
        "/",
        guards=[requires("write")],
        operation_id="createCategory",
        status_code=201,
        responses={200: ResponseSpec(CategoryOut, description="this id exists with these fields")},
        problems=(
            CategoryNotFound,
            CategoryCodeExists,
            CategoryExistsWithDifferentFields,
            CurrencyMismatch,
            CategoryTooDeep,
            CategoryChildrenLimitReached,
        ),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: CategoryCreate
    ) -> Response[CategoryOut]:
        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            result = await service.create_category(session, data, ctx)
            return (201 if result.created else 200), category_out(result.category)

        return typed(await idempotent_post(request, effect), CategoryOut)

    @get(
        "/{category_id:uuid}",
        guards=[requires("read")],
        operation_id="getCategory",
        problems=(CategoryNotFound,),
    )
    async def get_one(
        self, request: Request[Any, Any, Any], category_id: uuid.UUID
    ) -> Response[CategoryOut]:
        found = await services_of(request).run(lambda s: service.get_category(s, category_id))
        return typed(json_response(category_out(found)), CategoryOut)

    @get("/", guards=[requires("read")], operation_id="listCategories")
    async def list_(
        self,
        request: Request[Any, Any, Any],
        parent_id: UuidFilter = None,
        cursor: UuidCursor = None,
        limit: Limit = 100,
    ) -> Response[CategoryPage]:
        params.list_limit(limit)
        after = decode_uuid_cursor("category", cursor)
        parent = None if parent_id is None else uuid.UUID(parent_id)

        async def work(session: AsyncSession) -> list[CategoryOut]:
            found = await service.list_categories(
                session, parent_id=parent, after=after, limit=limit
            )
            return [category_out(c) for c in found]

        items = await services_of(request).read(work)
        return typed(
            json_response(page(items, limit, lambda c: str(c.id), "category")), CategoryPage
        )

    @patch(
        "/{category_id:uuid}",
        guards=[requires("write")],
        operation_id="patchCategory",
        problems=(
            CategoryNotFound,
            CategoryCycle,
            CurrencyMismatch,
            CategoryTooDeep,
            CategoryChildrenLimitReached,
        ),
    )
    async def patch_one(
        self, request: Request[Any, Any, Any], category_id: uuid.UUID, data: CategoryPatch
    ) -> Response[CategoryOut]:
        ctx = write_context(request)

        async def work(session: AsyncSession) -> CategoryOut:
            return category_out(
                await service.patch_category(session, category_id, data, ctx.at_now())
            )

        return typed(json_response(await services_of(request).run(work)), CategoryOut)

    @put(
        "/{category_id:uuid}/accounts/{account_id:uuid}",
        guards=[requires("write")],
        operation_id="addCategoryAccount",
        status_code=201,
        responses={200: ResponseSpec(MembershipOut, description="the account was in already")},
        problems=(
            CategoryNotFound,
            AccountNotFound,
            CurrencyMismatch,
            CategoryAccountsLimitReached,
            AccountCategoriesLimitReached,
        ),
    )
    async def add_account(
        self,
        request: Request[Any, Any, Any],
        category_id: uuid.UUID,
        account_id: uuid.UUID,
        data: MembershipPut | None = None,  # no body, or `{}`: decoded only to refuse the rest
    ) -> Response[MembershipOut]:
        """201 when the account joined, 200 when it was a member already (nothing written)."""
        category, changed = await self._membership(request, category_id, account_id, add=True)
        body = MembershipOut(category.id, account_id, category.version)
        return typed(json_response(body, status=201 if changed else 200), MembershipOut)

    @delete(
        "/{category_id:uuid}/accounts/{account_id:uuid}",
        guards=[requires("write")],
        operation_id="removeCategoryAccount",
        status_code=200,
        problems=(CategoryNotFound, CategoryMembershipNotFound),
    )
    async def remove_account(
        self, request: Request[Any, Any, Any], category_id: uuid.UUID, account_id: uuid.UUID
    ) -> Response[MembershipOut]:
        """200 when the account left; 404 `category_membership_not_found` when it was not in."""
        category, _ = await self._membership(request, category_id, account_id, add=False)
        return typed(
            json_response(MembershipOut(category.id, account_id, category.version)), MembershipOut
        )

    @staticmethod
    async def _membership(
        request: Request[Any, Any, Any], category_id: uuid.UUID, account_id: uuid.UUID, add: bool
    ) -> tuple[Any, bool]:
        ctx = write_context(request)
        return await services_of(request).run(
            lambda s: service.change_membership(
                s, category_id, account_id, add=add, ctx=ctx.at_now()
            )
        )

    @get(
        "/{category_id:uuid}/balance",
        guards=[requires("read")],
        operation_id="getCategoryBalance",
        problems=(CategoryNotFound,),
    )
    async def balance(
        self,
        request: Request[Any, Any, Any],
        category_id: uuid.UUID,
        as_of: str | None = params.timestamp(),
    ) -> Response[CategoryBalanceOut]:
        when = params.optional_utc(as_of, "as_of")

        async def work(session: AsyncSession) -> CategoryBalanceOut:
            category, rollup = await service.balance(session, category_id, when)
            return CategoryBalanceOut(
                category_id=category.id,
                currency=category.currency,
                normal_balance=category.normal_balance,
                as_of=when,
                accounts=rollup.accounts,
                balances=CategoryBalances(
                    posted=rollup.posted,
                    available=rollup.available,
                    posted_debits=rollup.posted_debits,
                    posted_credits=rollup.posted_credits,
                    pending_debits=rollup.pending_debits,
                    pending_credits=rollup.pending_credits,
                ),
            )

        return typed(json_response(await services_of(request).read(work)), CategoryBalanceOut)
