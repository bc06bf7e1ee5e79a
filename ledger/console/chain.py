"""The chain-state panel every console page shows.

Signed checkpoints come with the verifiable audit trail; until they are here this answers with
the same fields and no checkpoint (`latest=None`, `latest_verified=None`), and counts sealed and
unsealed records for real."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.console import repository as repo
from ledger.core.settings import Settings


@dataclass(frozen=True, slots=True)
class ChainState:
    latest: Any | None  # the latest signed checkpoint, when there is one
    latest_verified: bool | None  # its signature and root checked against the trail
    sealed: int
    unsealed: int


async def chain_state(session: AsyncSession, settings: Settings) -> ChainState:
    del settings  # the checkpoint's verification key comes from the settings
    sealed, unsealed = await repo.chain_counts(session)
    return ChainState(latest=None, latest_verified=None, sealed=sealed, unsealed=unsealed)
