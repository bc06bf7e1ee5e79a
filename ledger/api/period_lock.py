"""`GET`/`PUT /v1/settings/period-lock`: the instant at or before which nothing may be posted.

PUT is admin only and only moves the lock forward (an earlier time: 409 period_lock_backwards;
later than now: 422 period_lock_in_future; the same time again: 200, nothing written). Each
move is audited (`period_lock.set`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.errors import PeriodLockBackwards, PeriodLockInFuture, ValidationFailed
from ledger.core.schemas import Strict
from ledger.http.auth import requires, write_context
from ledger.http.bodies import get, put, typed
from ledger.http.responses import json_response
from ledger.http.state import services_of
from ledger.posting import periods

LockedUntil = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class PeriodLockPut(Strict):
    locked_until: LockedUntil


class PeriodLockOut(msgspec.Struct):
    locked_until: dt.datetime | None  # null: no period is locked
    updated_at: dt.datetime | None


def _out(state: periods.PeriodLockState) -> PeriodLockOut:
    return PeriodLockOut(locked_until=state.locked_until, updated_at=state.updated_at)


class PeriodLockController(Controller):
    path = "/v1/settings/period-lock"
    tags = ["settings"]

    @get("/", guards=[requires("read")], operation_id="getPeriodLock")
    async def get_lock(self, request: Request[Any, Any, Any]) -> Response[PeriodLockOut]:
        state = await services_of(request).run(periods.get_period_lock)
        return typed(json_response(_out(state)), PeriodLockOut)

    @put(
        "/",
        guards=[requires("settings")],
        operation_id="putPeriodLock",
        status_code=200,
        problems=(PeriodLockBackwards, PeriodLockInFuture),
    )
    async def put_lock(
        self, request: Request[Any, Any, Any], data: PeriodLockPut
    ) -> Response[PeriodLockOut]:
        """Move the period lock forward (admin)."""
        try:
            locked_until = data.locked_until.astimezone(dt.UTC)
        except OverflowError as exc:
            raise ValidationFailed(
                "locked_until is out of range",
                errors=[{"field": "locked_until", "message": "out of range"}],
            ) from exc
        ctx = write_context(request)

        async def work(session: AsyncSession) -> PeriodLockOut:
            state, _ = await periods.set_period_lock(session, locked_until, ctx.at_now())
            return _out(state)

        return typed(json_response(await services_of(request).run(work)), PeriodLockOut)
