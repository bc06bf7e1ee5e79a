"""Balance monitor bodies: what comes in and what goes out."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from ledger.core import limits
from ledger.core.schemas import Strict
from ledger.posting.monitors import MonitorState

MonitorField = Literal["posted", "available"]
MonitorOperator = Literal["lt", "lte", "gt", "gte"]
MonitorValue = Annotated[int, msgspec.Meta(ge=limits.BALANCE_MIN, le=limits.AMOUNT_MAX)]


class MonitorCreate(Strict):
    field: MonitorField
    operator: MonitorOperator
    value: MonitorValue


class MonitorOut(msgspec.Struct):
    id: uuid.UUID
    account_id: uuid.UUID
    field: MonitorField
    operator: MonitorOperator
    value: int
    trigger_count: int  # how many times it fired (the sequence of its last event)
    created_at: dt.datetime


class MonitorPage(msgspec.Struct):
    data: list[MonitorOut]
    next_cursor: str | None


def monitor_out(m: MonitorState) -> MonitorOut:
    return MonitorOut(
        id=m.id,
        account_id=m.account_id,
        field=m.field,  # type: ignore[arg-type]
        operator=m.operator,  # type: ignore[arg-type]
        value=m.value,
        trigger_count=m.trigger_count,
        created_at=m.created_at,
    )
