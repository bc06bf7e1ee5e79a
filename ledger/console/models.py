"""The console's own tables: browser sessions, and the secret every API process signs forms with."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base


class ConsoleSession(Base):
    """One signed-in browser. The cookie carries only `id` (random); `data` names the API key
    (its id, never its secret), so every API process sees the same sessions."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary())
    expires_at: Mapped[dt.datetime]

    __table_args__ = (sa.Index("ix_console_sessions_expires_at", "expires_at"),)


class ConsoleSecret(Base):
    """One row: the HMAC secret of the console's CSRF tokens, made by the migration, so that a
    form rendered by one API process is accepted by another."""

    __tablename__ = "console_secret"

    id: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, autoincrement=False)
    csrf_secret: Mapped[str] = mapped_column(sa.String(64))

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)
