"""API keys over HTTP (admin only). The secret is in the create response and nowhere else."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.apikeys import service
from ledger.apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ApiKeyPage
from ledger.core.context import WriteContext
from ledger.core.errors import ApiKeyNotFound
from ledger.http import params
from ledger.http.auth import requires, write_context
from ledger.http.bodies import delete, get, post, typed
from ledger.http.idempotent import idempotent_post
from ledger.http.pagination import Limit, UuidCursor, decode_uuid_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of


def without_secret(created: dict[str, Any]) -> dict[str, Any]:
    """A replayed key creation answers the same key, with `secret: null`: the secret is shown
    once and stored nowhere in the clear."""
    return {**created, "secret": None}


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api-keys"]
    guards = [requires("keys")]

    @post(
        "/",
        operation_id="createApiKey",
        status_code=201,
        example={"name": "payments-service", "role": "operator"},
    )
    async def create(
        self, request: Request[Any, Any, Any], data: ApiKeyCreate
    ) -> Response[ApiKeyCreated]:
        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            view, secret = await service.create_key(
                session, name=data.name, role=data.role, ctx=ctx
            )
            return 201, {**view.public(), "secret": secret}

        created = await idempotent_post(request, effect, redact=without_secret)
        return typed(created, ApiKeyCreated)

    @get("/", operation_id="listApiKeys")
    async def list_(
        self, request: Request[Any, Any, Any], cursor: UuidCursor = None, limit: Limit = 100
    ) -> Response[ApiKeyPage]:
        params.list_limit(limit)
        after = decode_uuid_cursor("api_key", cursor)

        async def work(session: AsyncSession) -> list[dict[str, Any]]:
            return [k.public() for k in await service.list_keys(session, after=after, limit=limit)]

        items = await services_of(request).run(work)
        return typed(
            json_response(page(items, limit, lambda k: str(k["id"]), "api_key")), ApiKeyPage
        )

    @delete(
        "/{key_id:uuid}", operation_id="revokeApiKey", status_code=200, problems=(ApiKeyNotFound,)
    )
    async def revoke(
        self, request: Request[Any, Any, Any], key_id: uuid.UUID
    ) -> Response[ApiKeyOut]:
        ctx = write_context(request)

        async def work(session: AsyncSession) -> dict[str, Any]:
            return (await service.revoke_key(session, key_id, ctx.at_now())).public()

        services = services_of(request)
        revoked = await services.run(work)
        services.key_cache.clear()  # the revoked key stops working here at once
        return typed(json_response(revoked), ApiKeyOut)
