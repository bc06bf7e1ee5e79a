"""The trial balance's one statement: every account of a currency with its posted balance on its
normal side, now or as of an instant, read in one snapshot.

Sent through the pipeline helper and answered as plain tuples: at 100,000 accounts, SQLAlchemy's
row objects and numeric-to-Decimal conversions cost more than the query itself
(docs/performance.md). A posted balance is a difference of two non-negative bigints, so it always
fits a bigint. Codes are ASCII (the accounts' CHECK), so byte order (`COLLATE "C"`) is their
order, and the cheapest sort.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import pipeline
from ledger.core.pipeline import Statement

# (account_id, code, normal_balance, debit, credit): the posted balance on the normal side.
Line = tuple[uuid.UUID, str, str, int, int]

_SIDES = """
    CASE a.normal_balance WHEN 'debit' THEN {posted} ELSE 0 END,
    CASE a.normal_balance WHEN 'credit' THEN {posted} ELSE 0 END
"""
_POSTED_NOW = (
    "CASE a.normal_balance WHEN 'credit' THEN a.posted_credits - a.posted_debits "
    "ELSE a.posted_debits - a.posted_credits END"
)
_NOW = f"""
    SELECT a.id, a.code, a.normal_balance, {_SIDES.format(posted=_POSTED_NOW)}
      FROM accounts a
     WHERE a.currency = %(currency)s
     ORDER BY a.code COLLATE "C"
"""
# Each account that existed at the instant or has an entry at or before it (history imported
# into an account created later counts at its own instants: contract 9.1), with the posted
# balance after its last entry at or before it (posted_at never decreases as sequence grows:
# that entry is the last by both). One probe of ix_entries_account_id_posted_at_sequence per
# account of the currency: the report reads its accounts, never the entries between.
_AS_OF = f"""
    SELECT a.id, a.code, a.normal_balance, {_SIDES.format(posted="coalesce(e.balance_after, 0)")}
      FROM accounts a
      LEFT JOIN LATERAL (
           SELECT balance_after FROM entries
            WHERE account_id = a.id AND posted_at <= %(as_of)s
            ORDER BY posted_at DESC, sequence DESC
            LIMIT 1
      ) e ON true
     WHERE a.currency = %(currency)s
       AND (a.created_at <= %(as_of)s OR e.balance_after IS NOT NULL)
     ORDER BY a.code COLLATE "C"
"""


async def trial_balance_lines(
    session: AsyncSession, currency: str, as_of: dt.datetime | None
) -> list[Line]:
    params: dict[str, Any] = {"currency": currency}
    if as_of is None:
        statement = Statement(_NOW, params, fetch=True)
    else:
        statement = Statement(_AS_OF, {**params, "as_of": as_of}, fetch=True)
    [rows] = await pipeline.run(session, [statement])
    return list(rows or ())
