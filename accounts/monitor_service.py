"""Balance monitors of an account: create, list, delete (the posting engine evaluates them).

Creating and deleting a monitor lock its account's row first, as a posting does: a monitor
appears or disappears between two postings on the account, never in the middle of one."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.monitor_schemas import MonitorCreate
from ledger.audit.writer import AuditEntry, write_audit
from ledger.core import limits
from ledger.core.context import WriteContext
from ledger.core.errors import AccountNotFound, MonitorLimitReached, MonitorNotFound
from ledger.core.ids import new_id
from ledger.posting import movement_repository as repo
from ledger.posting.events import monitor_data
from ledger.posting.monitors import MonitorState


async def _audit(session: AsyncSession, action: str, m: MonitorState, ctx: WriteContext) -> None:
    await write_audit(
        session,
        [
            AuditEntry(
                action=action,
                object_type="monitor",
                object_id=str(m.id),
                data={"result": monitor_data(m)},
            )
        ],
        ctx,
    )


async def create_monitor(
    session: AsyncSession, account_id: uuid.UUID, body: MonitorCreate, ctx: WriteContext
) -> MonitorState:
    if not await repo.lock_account(session, account_id):
        raise AccountNotFound(f"account {account_id} not found")
    # Counted under the account's row lock: two creates cannot both see room for one.
    limit = limits.MONITORS_PER_ACCOUNT_MAX
    if await repo.count_monitors(session, account_id, limit) >= limit:
        raise MonitorLimitReached(f"account {account_id} has {limit} monitors already")
    monitor = MonitorState(
        id=new_id(),
        account_id=account_id,
        field=body.field,
        operator=body.operator,
        value=body.value,
        trigger_count=0,
        created_at=ctx.now,
    )
    await repo.insert_monitor(session, monitor)
    await _audit(session, "monitor.create", monitor, ctx)
    return monitor


async def list_monitors(
    session: AsyncSession, account_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[MonitorState]:
    found = await repo.list_monitors(session, account_id, after, limit)
    if not found and after is None and not await repo.account_exists(session, account_id):
        raise AccountNotFound(f"account {account_id} not found")
    return found


async def delete_monitor(
    session: AsyncSession, account_id: uuid.UUID, monitor_id: uuid.UUID, ctx: WriteContext
) -> MonitorState:
    if not await repo.lock_account(session, account_id):
        raise AccountNotFound(f"account {account_id} not found")
    deleted = await repo.delete_monitor(session, account_id, monitor_id)
    if deleted is None:
        raise MonitorNotFound(f"monitor {monitor_id} not found on account {account_id}")
    await _audit(session, "monitor.delete", deleted, ctx)
    return deleted
