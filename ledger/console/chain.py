"""The chain-state panel every console page shows: the latest signed checkpoint whose signatures
hold (with the key its `key_id` names, among the configured ones: LEDGER_AUDIT_PUBLIC_KEYS and the
signing key's own, so a rotation leaves older checkpoints verified), whether the stored tree still
reproduces its root (O(log n) reads), and how many records are sealed and how many wait."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import checkpoints
from ledger.audit.checkpoints import ChainState
from ledger.audit.keys import keyring_for
from ledger.core.settings import Settings

__all__ = ["ChainState", "chain_state"]


async def chain_state(session: AsyncSession, settings: Settings) -> ChainState:
    return await checkpoints.chain_state(session, keyring_for(settings))
