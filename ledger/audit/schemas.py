"""What the audit endpoints answer (msgspec Structs)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

# What `GET /v1/audit/verify` names when it fails (docs/audit.md): the hash chain, or the tree
# and checkpoints recomputed from the records (ledger/audit/tree_walk.py).
VerifyProblem = Literal[
    "chain", "tree_node", "tree_beyond_head", "checkpoint_signature", "checkpoint_root"
]


class AuditActor(msgspec.Struct):
    """The API key's id and name; `id` is null for the CLI (`cli`) and the worker's own jobs."""

    id: uuid.UUID | None
    name: str


class AuditRecordOut(msgspec.Struct):
    id: uuid.UUID
    seq: int
    at: dt.datetime
    actor: AuditActor
    action: str
    object_type: str
    object_id: str
    request_id: str | None
    trace_id: str | None
    client_addr: str | None
    data: dict[str, Any]


class AuditVerifyOut(msgspec.Struct, omit_defaults=True):
    """`problem`, `first_invalid_id` and `reason` appear only when `ok` is false."""

    ok: bool
    checked: int
    unsealed: int
    head_seq: int
    head_hash: str
    first_invalid_id: uuid.UUID | None = None
    reason: str | None = None
    problem: VerifyProblem | None = None


class AuditPage(msgspec.Struct):
    data: list[AuditRecordOut]
    next_cursor: str | None


# -- verifiable audit (contract 8.3) ----------------------------------------------------------


class CheckpointOut(msgspec.Struct, omit_defaults=True):
    """A signed checkpoint: `signature` is base64 Ed25519 over the RFC 8785 bytes of the other
    members (`note` among them); `key_id` is the hex SHA-256 of the signing public key's DER.
    `note` is the same tree head as a C2SP signed note (c2sp.org/tlog-checkpoint) by the same
    key; a checkpoint signed before notes existed has none."""

    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str
    note: str | None = None


class CheckpointPage(msgspec.Struct):
    data: list[CheckpointOut]
    next_cursor: str | None


class InclusionProofOut(msgspec.Struct):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]


class ConsistencyProofOut(msgspec.Struct):
    first: int
    second: int
    proof: list[str]
