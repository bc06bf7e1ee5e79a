"""`/v1/accounts/{id}/monitors`: balance monitors. Thin: typed bodies in, the service's
results out."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import monitor_service as service
from accounts.monitor_schemas import MonitorCreate, MonitorOut, MonitorPage, monitor_out
from ledger.core.context import WriteContext
from ledger.core.errors import AccountNotFound, MonitorLimitReached, MonitorNotFound
from ledger.http import params
from ledger.http.auth import requires, write_context
from ledger.http.bodies import delete, get, post, typed
from ledger.http.idempotent import idempotent_post
from ledger.http.pagination import Limit, UuidCursor, decode_uuid_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of


class MonitorController(Controller):
    path = "/v1/accounts/{account_id:uuid}/monitors"
    tags = ["accounts"]

    @post(
        "/",
        guards=[requires("write")],
        operation_id="createMonitor",
        status_code=201,
        problems=(AccountNotFound, MonitorLimitReached),
    )
    async def create(
        self, request: Request[Any, Any, Any], account_id: uuid.UUID, data: MonitorCreate
    ) -> Response[MonitorOut]:
        """A balance monitor: event `ledger.account.monitor_triggered` each time a change makes
        its condition true. Monitors per account are bounded (`monitor_limit_reached`)."""

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            return 201, monitor_out(await service.create_monitor(session, account_id, data, ctx))

        return typed(await idempotent_post(request, effect), MonitorOut)

    @get("/", guards=[requires("read")], operation_id="listMonitors", problems=(AccountNotFound,))
    async def list_(
        self,
        request: Request[Any, Any, Any],
        account_id: uuid.UUID,
        cursor: UuidCursor = None,
        limit: Limit = 100,
    ) -> Response[MonitorPage]:
        params.list_limit(limit)
        after = decode_uuid_cursor("monitor", cursor)

        async def work(session: AsyncSession) -> list[MonitorOut]:
            found = await service.list_monitors(session, account_id, after, limit)
            return [monitor_out(m) for m in found]

        items = await services_of(request).read(work)
        return typed(json_response(page(items, limit, lambda m: str(m.id), "monitor")), MonitorPage)

    @delete(
        "/{monitor_id:uuid}",
        guards=[requires("write")],
        operation_id="deleteMonitor",
        status_code=200,
        problems=(AccountNotFound, MonitorNotFound),
    )
    async def delete_one(
        self, request: Request[Any, Any, Any], account_id: uuid.UUID, monitor_id: uuid.UUID
    ) -> Response[MonitorOut]:
        ctx = write_context(request)

        async def work(session: AsyncSession) -> MonitorOut:
            deleted = await service.delete_monitor(session, account_id, monitor_id, ctx.at_now())
            return monitor_out(deleted)

        return typed(json_response(await services_of(request).run(work)), MonitorOut)
