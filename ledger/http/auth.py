"""Authentication and authorisation: bearer API keys, roles, and the write context of a request."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import Actor, WriteContext
from ledger.core.errors import Forbidden, Unauthorized
from ledger.core.roles import PERMISSIONS, Permission, Role
from ledger.http.state import services_of

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


class RoleGuard:
    """The guard `requires(permission)` returns. It keeps its permission so that the OpenAPI
    document can name each operation's roles from the guards that really check them."""

    def __init__(self, permission: Permission, check: Guard) -> None:
        self.permission = permission
        self.roles: frozenset[Role] = PERMISSIONS[permission]
        self._check = check

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        await self._check(connection, handler)


def requires(permission: Permission) -> RoleGuard:
    allowed = PERMISSIONS[permission]

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        header = connection.headers.get("authorization", "")
        scheme, _sep, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("send Authorization: Bearer <API key secret>")
        services = services_of(connection)
        # The cache's own key: a digest, so no secret sits in the process's memory longer than
        # the request that carried it.
        cache_key = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
        actor = services.key_cache.get(cache_key)
        if actor is None:

            async def lookup(session: AsyncSession) -> Actor | None:
                return await services.authenticate(session, secret)

            actor = await services.run(lookup)
            if actor is None:
                raise Unauthorized("unknown or revoked API key")
            services.key_cache.put(cache_key, actor)
        connection.state.actor = actor
        structlog.contextvars.bind_contextvars(actor_id=str(actor.id))
        if actor.role not in allowed:
            raise Forbidden(f"role {actor.role} may not do this")

    return RoleGuard(permission, guard)


def write_context(request: Request[Any, Any, Any]) -> WriteContext:
    bound = structlog.contextvars.get_contextvars()
    client = request.client.host if request.client else None
    return WriteContext(
        actor=request.state.actor,
        request_id=bound.get("request_id"),
        trace_id=bound.get("trace_id"),
        traceparent=bound.get("traceparent"),
        client_addr=client,
    )
