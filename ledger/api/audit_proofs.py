"""Thin HTTP layer of the verifiable audit: signed checkpoints and Merkle proofs (auditor, admin).

Proofs follow RFC 9162 2.1.3 (inclusion) and 2.1.4 (consistency); `ledger audit verify-proof`
checks one offline against a signed checkpoint."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import checkpoints as service
from ledger.audit.schemas import (
    CheckpointOut,
    CheckpointPage,
    ConsistencyProofOut,
    InclusionProofOut,
)
from ledger.audit.signing import Checkpoint
from ledger.http import params
from ledger.http.auth import requires
from ledger.http.bodies import get, typed
from ledger.http.pagination import decode_int_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import services_of


def _out(checkpoint: Checkpoint) -> CheckpointOut:
    return CheckpointOut(**checkpoint.as_dict())


class AuditProofController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [requires("audit")]

    @get("/checkpoints", operation_id="listAuditCheckpoints")
    async def list_checkpoints(
        self, request: Request[Any, Any, Any], cursor: str | None = None, limit: int = 100
    ) -> Response[CheckpointPage]:
        """Signed checkpoints, newest first."""
        params.list_limit(limit)
        before = decode_int_cursor("checkpoints", cursor)

        async def work(session: AsyncSession) -> list[Checkpoint]:
            return await service.list_checkpoints(session, before_size=before, limit=limit)

        items = [_out(c) for c in await services_of(request).run(work)]
        body = page(items, limit, lambda c: str(c.tree_size), "checkpoints")
        return typed(json_response(body), CheckpointPage)

    @get("/checkpoints/latest", operation_id="getLatestAuditCheckpoint")
    async def latest_checkpoint(self, request: Request[Any, Any, Any]) -> Response[CheckpointOut]:
        """The newest signed checkpoint; 404 `audit_checkpoint_not_found` before the first."""
        checkpoint = await services_of(request).run(service.latest)
        return typed(json_response(_out(checkpoint)), CheckpointOut)

    @get("/records/{record_id:uuid}/proof", operation_id="getAuditInclusionProof")
    async def inclusion_proof(
        self, request: Request[Any, Any, Any], record_id: uuid.UUID, tree_size: int | None = None
    ) -> Response[InclusionProofOut]:
        """The record's audit path in the tree of `tree_size` leaves (default: the latest
        checkpoint's size)."""

        async def work(session: AsyncSession) -> service.InclusionProof:
            return await service.inclusion_proof(session, record_id, tree_size)

        proof = await services_of(request).run(work)
        body = InclusionProofOut(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            leaf_hash=proof.leaf_hash,
            audit_path=proof.audit_path,
        )
        return typed(json_response(body), InclusionProofOut)

    @get("/consistency", operation_id="getAuditConsistencyProof")
    async def consistency_proof(
        self, request: Request[Any, Any, Any], first: int, second: int
    ) -> Response[ConsistencyProofOut]:
        """The proof that the tree of `first` leaves is a prefix of the tree of `second`."""

        async def work(session: AsyncSession) -> service.ConsistencyProof:
            return await service.consistency_proof(session, first, second)

        proof = await services_of(request).run(work)
        body = ConsistencyProofOut(first=proof.first, second=proof.second, proof=proof.proof)
        return typed(json_response(body), ConsistencyProofOut)
