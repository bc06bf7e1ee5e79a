"""API keys: create (secret shown once), list, revoke, and authenticate a bearer secret."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.apikeys.models import ApiKey
from ledger.audit.writer import AuditEntry, write_audit
from ledger.core.context import Actor, WriteContext
from ledger.core.errors import ApiKeyNotFound
from ledger.core.ids import new_id
from ledger.core.locks import SINGLETON_KEY, LockClass

SECRET_PREFIX = "lk_"  # noqa: S105 - a public prefix, not a secret

keys_t = cast(sa.Table, ApiKey.__table__)


def hash_secret(secret: str) -> str:
    # Secrets are 256-bit random tokens, so one SHA-256 is enough (no password stretching).
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def make_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyView:
    id: uuid.UUID
    name: str
    role: str
    created_at: Any
    revoked_at: Any

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _view(row: Any) -> KeyView:
    return KeyView(row.id, row.name, row.role, row.created_at, row.revoked_at)


async def create_key(
    session: AsyncSession, *, name: str, role: str, ctx: WriteContext, secret: str | None = None
) -> tuple[KeyView, str]:
    secret = secret or make_secret()
    key_id = new_id()
    await session.execute(
        sa.insert(keys_t).values(
            id=key_id,
            name=name,
            role=role,
            secret_hash=hash_secret(secret),
            created_at=ctx.now,
            revoked_at=None,
        )
    )
    view = KeyView(key_id, name, role, ctx.now, None)
    await write_audit(
        session,
        [
            AuditEntry(
                action="api_key.create",
                object_type="api_key",
                object_id=str(key_id),
                data={"request": {"name": name, "role": role}, "result": view.public()},
            )
        ],
        ctx,
    )
    return view, secret


async def ensure_key(
    session: AsyncSession, *, name: str, role: str, secret: str, ctx: WriteContext
) -> KeyView:
    """Idempotent bootstrap (LEDGER_ADMIN_KEY): create the key unless its secret exists."""
    await session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(int(LockClass.API_KEY_BOOTSTRAP), SINGLETON_KEY))
    )
    row = (
        await session.execute(sa.select(keys_t).where(keys_t.c.secret_hash == hash_secret(secret)))
    ).first()
    if row is not None:
        return _view(row)
    view, _ = await create_key(session, name=name, role=role, ctx=ctx, secret=secret)
    return view


async def authenticate(session: AsyncSession, secret: str) -> Actor | None:
    """The actor a bearer secret stands for, or None when it is unknown or revoked."""
    row = (
        await session.execute(
            sa.select(keys_t)
            .where(keys_t.c.secret_hash == hash_secret(secret))
            .where(keys_t.c.revoked_at.is_(None))
        )
    ).first()
    return None if row is None else Actor(id=row.id, name=row.name, role=row.role)


async def list_keys(session: AsyncSession, *, after: uuid.UUID | None, limit: int) -> list[KeyView]:
    query = sa.select(keys_t).order_by(keys_t.c.id).limit(limit)
    if after is not None:
        query = query.where(keys_t.c.id > after)
    return [_view(r) for r in await session.execute(query)]


async def revoke_key(session: AsyncSession, key_id: uuid.UUID, ctx: WriteContext) -> KeyView:
    row = (
        await session.execute(sa.select(keys_t).where(keys_t.c.id == key_id).with_for_update())
    ).first()
    if row is None:
        raise ApiKeyNotFound(f"API key {key_id} not found")
    if row.revoked_at is not None:
        return _view(row)
    await session.execute(sa.update(keys_t).where(keys_t.c.id == key_id).values(revoked_at=ctx.now))
    view = KeyView(row.id, row.name, row.role, row.created_at, ctx.now)
    await write_audit(
        session,
        [
            AuditEntry(
                action="api_key.revoke",
                object_type="api_key",
                object_id=str(key_id),
                data={"result": view.public()},
            )
        ],
        ctx,
    )
    return view
