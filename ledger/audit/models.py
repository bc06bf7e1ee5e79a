"""Audit records (insert-only) and their seals (an insert-only hash chain)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base


class AuditRecord(Base):
    """Who did what, from which request, and what changed. Insert-only (trigger-enforced)."""

    __tablename__ = "audit_records"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # Insert order inside PostgreSQL; the sealer chains by commit visibility, not by this alone.
    seq: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), unique=True)
    at: Mapped[dt.datetime]
    actor_id: Mapped[uuid.UUID | None]
    actor_name: Mapped[str]
    action: Mapped[str] = mapped_column(sa.String(64))
    object_type: Mapped[str] = mapped_column(sa.String(32))
    object_id: Mapped[str]
    request_id: Mapped[str | None]
    trace_id: Mapped[str | None]
    client_addr: Mapped[str | None]
    # The record's data, in one of two forms or both (never neither). `data_text`: as the
    # writer encoded it (since migration 0009), what the trail answers, numbers as sent (`json`
    # keeps text). `data` (jsonb): the only form of records older than 0009, and a second copy
    # in those written from 0009 until 0027_audit_one_copy. The seal chain hashes the jsonb
    # value, `data` or else `data_text` parsed (repository.record_data): the same value.
    data: Mapped[dict[str, Any] | None]
    data_text: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    # The writing transaction's id (migration 0003): lets the sealer find late commits exactly.
    xact_id: Mapped[int] = mapped_column(
        sa.BigInteger, server_default=sa.text("(pg_current_xact_id()::text)::bigint")
    )

    __table_args__ = (
        sa.Index("ix_audit_records_object_id_seq", "object_id", "seq"),
        sa.Index("ix_audit_records_xact_id", "xact_id"),
        sa.Index("ix_audit_records_actor_id_seq", "actor_id", "seq"),
        sa.Index("ix_audit_records_at", "at"),
        # The console's search by request id (migration 0014_console).
        sa.Index("ix_audit_records_request_id_seq", "request_id", "seq"),
        # The search by action, in seq order (migration 0021_growth_reads).
        sa.Index("ix_audit_records_action_seq", "action", "seq"),
        sa.CheckConstraint("data IS NOT NULL OR data_text IS NOT NULL", name="has_data"),
    )


class AuditSeal(Base):
    """One link of the hash chain: seal `seq` covers one record and the previous seal's hash."""

    __tablename__ = "audit_seals"

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    record_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))
    sealed_at: Mapped[dt.datetime]
    # What the sealing pass could prove about transaction ids (migration 0007; NULL on older
    # seals): verify tells a late commit from an insertion behind the service's back by them.
    horizon_xid: Mapped[int | None]
    next_xid: Mapped[int | None]

    __table_args__ = (
        # "The latest pass that ran before transaction X began": one index probe per question.
        sa.Index("ix_audit_seals_next_xid_seq", "next_xid", "seq"),
    )
