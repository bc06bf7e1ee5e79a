"""Thin HTTP layer of the verifiable audit: signed checkpoints and Merkle proofs (auditor, admin).

Proofs follow RFC 9162 2.1.3 (inclusion) and 2.1.4 (consistency); `ledger audit verify-proof`
checks one offline against a signed checkpoint."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import checkpoints as service
from ledger.audit.keys import Keyring, keyring_for
from ledger.audit.schemas import (
    CheckpointOut,
    CheckpointPage,
    ConsistencyProofOut,
    InclusionProofOut,
)
from ledger.audit.signing import Checkpoint
from ledger.core import limits
from ledger.core.errors import (
    AuditCheckpointNotFound,
    AuditRecordNotFound,
    AuditRecordNotSealed,
    AuditTreeSizeUnavailable,
)
from ledger.http import params
from ledger.http.auth import requires
from ledger.http.bodies import get, typed
from ledger.http.pagination import Limit, SequenceCursor, decode_int_cursor, encode_cursor
from ledger.http.responses import json_response
from ledger.http.state import Services, services_of

JSON = "application/json"
TEXT = "text/plain"


def _out(checkpoint: Checkpoint) -> CheckpointOut:
    return CheckpointOut(**checkpoint.as_dict())


def _keys(services: Services) -> Keyring:
    """The configured public keys (the signing key's own among them): only a checkpoint whose
    signatures hold under them is answered."""
    return keyring_for(services.settings)


TREE_SIZE = Parameter(
    ge=1, le=limits.AUDIT_PROOF_TREE_SIZE_MAX, description="a number of leaves of the tree"
)
# Optional, so a string with the number's pattern: Litestar reads `?tree_size=null` for an
# optional integer as "absent", which the document does not admit.
TreeSize = Annotated[
    str | None,
    Parameter(
        pattern=params.positive_decimal_pattern(limits.AUDIT_PROOF_TREE_SIZE_MAX),
        description="a number of leaves of the tree (default: the latest checkpoint's)",
    ),
]


class AuditProofController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [requires("audit")]

    @get("/checkpoints", operation_id="listAuditCheckpoints")
    async def list_checkpoints(
        self, request: Request[Any, Any, Any], cursor: SequenceCursor = None, limit: Limit = 100
    ) -> Response[CheckpointPage]:
        """Signed checkpoints, newest first: only rows whose signatures hold under the
        configured public keys (a page may come back short, with a cursor, past rows that do
        not)."""
        params.list_limit(limit)
        before = decode_int_cursor("checkpoints", cursor)
        services = services_of(request)
        keys = _keys(services)

        async def work(session: AsyncSession) -> service.CheckpointPage:
            return await service.list_checkpoints(session, keys, before_size=before, limit=limit)

        found = await services.run(work)
        next_before = found.next_before
        if next_before is None and len(found.items) == limit:
            next_before = found.items[-1].tree_size
        body = {
            "data": [_out(c) for c in found.items],
            "next_cursor": None
            if next_before is None
            else encode_cursor("checkpoints", str(next_before)),
        }
        return typed(json_response(body), CheckpointPage)

    @get(
        "/checkpoints/latest",
        operation_id="getLatestAuditCheckpoint",
        problems=(AuditCheckpointNotFound,),
        answers_text="the checkpoint as a C2SP signed note (c2sp.org/tlog-checkpoint)",
    )
    async def latest_checkpoint(self, request: Request[Any, Any, Any]) -> Response[CheckpointOut]:
        """The newest signed checkpoint; 404 `audit_checkpoint_not_found` before the first. With
        `Accept: text/plain`, its C2SP signed note (origin, size, root, signature line)."""
        services = services_of(request)
        keys = _keys(services)

        async def work(session: AsyncSession) -> Checkpoint:
            return await service.latest(session, keys)

        checkpoint = await services.run(work)
        note = keys.with_note(checkpoint).note  # one signed before notes gets it now
        if note is not None and request.accept.best_match([JSON, TEXT], default=JSON) == TEXT:
            text = Response(content=note.encode(), media_type="text/plain; charset=utf-8")
            return typed(text, CheckpointOut)
        return typed(json_response(_out(checkpoint)), CheckpointOut)

    @get(
        "/records/{record_id:uuid}/proof",
        operation_id="getAuditInclusionProof",
        problems=(
            AuditRecordNotFound,
            AuditRecordNotSealed,
            AuditCheckpointNotFound,
            AuditTreeSizeUnavailable,
        ),
    )
    async def inclusion_proof(
        self, request: Request[Any, Any, Any], record_id: uuid.UUID, tree_size: TreeSize = None
    ) -> Response[InclusionProofOut]:
        """The record's audit path in the tree of `tree_size` leaves (default: the latest
        checkpoint's size)."""

        size = None if tree_size is None else int(tree_size)

        services = services_of(request)
        keys = _keys(services)

        async def work(session: AsyncSession) -> service.InclusionProof:
            return await service.inclusion_proof(session, keys, record_id, size)

        proof = await services.run(work)
        body = InclusionProofOut(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            leaf_hash=proof.leaf_hash,
            audit_path=proof.audit_path,
        )
        return typed(json_response(body), InclusionProofOut)

    @get(
        "/consistency",
        operation_id="getAuditConsistencyProof",
        problems=(AuditTreeSizeUnavailable,),
    )
    async def consistency_proof(
        self,
        request: Request[Any, Any, Any],
        first: Annotated[int, TREE_SIZE],
        second: Annotated[int, TREE_SIZE],
    ) -> Response[ConsistencyProofOut]:
        """The proof that the tree of `first` leaves is a prefix of the tree of `second`."""

        services = services_of(request)
        keys = _keys(services)

        async def work(session: AsyncSession) -> service.ConsistencyProof:
            return await service.consistency_proof(session, keys, first, second)

        proof = await services.run(work)
        body = ConsistencyProofOut(first=proof.first, second=proof.second, proof=proof.proof)
        return typed(json_response(body), ConsistencyProofOut)
