"""The trial balance's one statement: every account of a currency with its posted balance, now
or as of an instant, read in one snapshot."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class PostedBalance:
    account_id: uuid.UUID
    code: str
    normal_balance: str
    posted: int


_NOW = sa.text(
    """
    SELECT id, code, normal_balance,
           CASE normal_balance WHEN 'credit' THEN posted_credits::numeric - posted_debits
                               ELSE posted_debits::numeric - posted_credits END AS posted
      FROM accounts
     WHERE currency = :currency
     ORDER BY code
    """
)
# Each account that existed at the instant, with the posted balance after its last entry at or
# before it (posted_at never decreases as sequence grows: that entry is the last by both).
_AS_OF = sa.text(
    """
    SELECT a.id, a.code, a.normal_balance, coalesce(e.balance_after, 0) AS posted
      FROM accounts a
      LEFT JOIN LATERAL (
           SELECT balance_after FROM entries
            WHERE account_id = a.id AND posted_at <= :as_of
            ORDER BY posted_at DESC, sequence DESC
            LIMIT 1
      ) e ON true
     WHERE a.currency = :currency AND a.created_at <= :as_of
     ORDER BY a.code
    """
)


async def posted_balances(
    session: AsyncSession, currency: str, as_of: dt.datetime | None
) -> list[PostedBalance]:
    if as_of is None:
        rows = await session.execute(_NOW, {"currency": currency})
    else:
        rows = await session.execute(_AS_OF, {"currency": currency, "as_of": as_of})
    return [
        PostedBalance(
            account_id=r.id, code=r.code, normal_balance=r.normal_balance, posted=int(r.posted)
        )
        for r in rows
    ]
