"""The chain-state panel every console page shows: the latest signed checkpoint, whether the
trail still reproduces it (its signature with the configured key and the stored root at its
size, O(log n) reads), and how many records are sealed and how many wait for the sealer."""

from __future__ import annotations

from ledger.audit.checkpoints import ChainState, chain_state

__all__ = ["ChainState", "chain_state"]
