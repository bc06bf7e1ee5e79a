"""The secret of client-id lock keys (`ledger.core.locks`): one row, made by migration 0016."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base

LOCK_SECRET_BYTES = 32


class LockKeySecret(Base):
    """32 random bytes, drawn by the database once; read only by the lock statements' SQL."""

    __tablename__ = "lock_key_secret"

    id: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, autoincrement=False)
    secret: Mapped[bytes] = mapped_column(sa.LargeBinary())

    __table_args__ = (
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint(f"length(secret) = {LOCK_SECRET_BYTES}", name="length"),
    )
