"""The worker's own SQL: settings of one transaction of a background job."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession


async def set_local_lock_timeout(session: AsyncSession, timeout_ms: int) -> None:
    """Wait at most `timeout_ms` for each lock until this transaction ends (then the engine's
    own lock timeout applies again)."""
    await session.execute(
        sa.text("SELECT set_config('lock_timeout', :timeout, true)"), {"timeout": str(timeout_ms)}
    )
