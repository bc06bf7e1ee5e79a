"""`ledger verify`: recompute every money invariant from the entries, independently of the code
that wrote them. Each query returns violations only; an empty result means the rule holds."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.core import limits
from ledger.posting.movement_invariants import MOVEMENT_CHECKS
from ledger.posting.reporting_invariants import REPORTING_CHECKS

# One sweep over all entries, in each account's order, for every rule about an account's entries:
# its balance columns against their sums, each entry's running balance and time against the one
# before it, its last sequence against the version, and per currency debits against credits.
# (Five queries before, each reading every entry again; one read of the (account_id, sequence)
# index now, its per-account result kept for the five answers.)
ACCOUNT_ENTRIES_SWEEP = """
WITH per_account AS MATERIALIZED (
    SELECT a.id, a.currency, a.version, a.posted_debits, a.posted_credits,
           coalesce(x.debits, 0) AS debits, coalesce(x.credits, 0) AS credits, x.last,
           x.running_broken, x.time_broken
      FROM accounts a
      LEFT JOIN (
            SELECT w.account_id,
                   sum(w.amount) FILTER (WHERE w.direction = 'debit') AS debits,
                   sum(w.amount) FILTER (WHERE w.direction = 'credit') AS credits,
                   max(w.sequence) AS last,
                   array_agg(format('entry sequence %s: balance_after %s, running sum %s',
                                    w.sequence, w.balance_after, w.running) ORDER BY w.sequence)
                       FILTER (WHERE w.balance_after <> w.running) AS running_broken,
                   array_agg(format('entry sequence %s: posted_at %s, sequence %s: %s',
                                    w.sequence, w.posted_at, w.previous_sequence, w.previous_at)
                             ORDER BY w.sequence)
                       FILTER (WHERE w.posted_at < w.previous_at) AS time_broken
              FROM (SELECT e.account_id, e.sequence, e.amount, e.direction, e.balance_after,
                           e.posted_at,
                           sum(CASE WHEN (e.direction = 'debit') = (n.normal_balance = 'debit')
                                    THEN e.amount ELSE -e.amount END) OVER w AS running,
                           lag(e.sequence) OVER w AS previous_sequence,
                           lag(e.posted_at) OVER w AS previous_at
                      FROM entries e JOIN accounts n ON n.id = e.account_id
                    WINDOW w AS (PARTITION BY e.account_id ORDER BY e.sequence)) w
             GROUP BY w.account_id) x ON x.account_id = a.id
)
SELECT 'posted balance differs from its entries', id::text,
       format('posted_debits %s (entries %s), posted_credits %s (entries %s)',
              posted_debits, debits, posted_credits, credits)
  FROM per_account WHERE posted_debits <> debits OR posted_credits <> credits
UNION ALL
SELECT 'debits and credits differ in a currency', currency,
       format('debits %s, credits %s', sum(debits), sum(credits))
  FROM per_account GROUP BY currency HAVING sum(debits) <> sum(credits)
UNION ALL
SELECT 'statement running balance is broken', id::text, unnest(running_broken)
  FROM per_account WHERE running_broken IS NOT NULL
UNION ALL
SELECT 'entry posted_at earlier than the entry before it', id::text, unnest(time_broken)
  FROM per_account WHERE time_broken IS NOT NULL
UNION ALL
SELECT 'entry sequence beyond the account''s version', id::text,
       format('version %s, last entry sequence %s', version, last)
  FROM per_account WHERE last > version
"""

CHECKS: list[tuple[str, str]] = [
    (
        "pending balance differs from its open holds",
        """
        SELECT a.id::text,
               format('pending_debits %s (holds %s), pending_credits %s (holds %s)',
                      a.pending_debits, coalesce(d.held, 0), a.pending_credits, coalesce(c.held, 0))
          FROM accounts a
          LEFT JOIN (SELECT debit_account_id AS id, sum(amount) AS held FROM transfers
                      WHERE state = 'pending' GROUP BY debit_account_id) d ON d.id = a.id
          LEFT JOIN (SELECT credit_account_id AS id, sum(amount) AS held FROM transfers
                      WHERE state = 'pending' GROUP BY credit_account_id) c ON c.id = a.id
         WHERE a.pending_debits <> coalesce(d.held, 0) OR a.pending_credits <> coalesce(c.held, 0)
        """,
    ),
    (
        "available balance below the floor",
        """
        SELECT id::text, format('available %s < min_balance %s',
               CASE normal_balance
                    WHEN 'credit' THEN posted_credits::numeric - posted_debits - pending_debits
                    ELSE posted_debits::numeric - posted_credits - pending_credits END,
               min_balance)
          FROM accounts
         WHERE min_balance IS NOT NULL AND (CASE normal_balance
                    WHEN 'credit' THEN posted_credits::numeric - posted_debits - pending_debits
                    ELSE posted_debits::numeric - posted_credits - pending_credits END)
               < min_balance
        """,
    ),
    (
        "transfer entries do not match its posted amount",
        """
        SELECT t.id::text, format('posted_amount %s, debits %s, credits %s, legs %s',
               t.posted_amount, coalesce(e.debits, 0), coalesce(e.credits, 0), coalesce(e.legs, 0))
          FROM transfers t
          LEFT JOIN (SELECT transfer_id,
                            sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                            sum(amount) FILTER (WHERE direction = 'credit') AS credits,
                            count(*) AS legs
                       FROM entries GROUP BY transfer_id) e ON e.transfer_id = t.id
         WHERE coalesce(e.debits, 0) <> t.posted_amount OR coalesce(e.credits, 0) <> t.posted_amount
            OR (t.posted_amount > 0 AND e.legs <> 2)
        """,
    ),
    (
        "entry on the wrong account or currency of its transfer",
        """
        SELECT e.id::text, format('transfer %s, account %s', e.transfer_id, e.account_id)
          FROM entries e JOIN transfers t ON t.id = e.transfer_id
          JOIN accounts a ON a.id = e.account_id
         WHERE a.currency <> t.currency
            OR (e.direction = 'debit' AND e.account_id <> t.debit_account_id)
            OR (e.direction = 'credit' AND e.account_id <> t.credit_account_id)
        """,
    ),
    (
        "transfer currency differs from its accounts'",
        """
        SELECT t.id::text, format('transfer %s, debit account %s, credit account %s',
               t.currency, d.currency, c.currency)
          FROM transfers t
          JOIN accounts d ON d.id = t.debit_account_id
          JOIN accounts c ON c.id = t.credit_account_id
         WHERE t.currency <> d.currency OR t.currency <> c.currency
        """,
    ),
    (
        "reversals exceed what was posted",
        """
        SELECT t.id::text, format('reversed_amount %s, reversals %s, posted %s',
               t.reversed_amount, coalesce(r.total, 0), t.posted_amount)
          FROM transfers t
          LEFT JOIN (SELECT reversal_of, sum(amount) AS total FROM transfers
                      WHERE reversal_of IS NOT NULL GROUP BY reversal_of) r ON r.reversal_of = t.id
         WHERE t.reversed_amount <> coalesce(r.total, 0) OR coalesce(r.total, 0) > t.posted_amount
        """,
    ),
    (
        "account event sequence has a gap or does not reach the version",
        """
        SELECT a.id::text, format('version %s, events %s..%s (%s distinct)',
               a.version, o.lo, o.hi, o.n)
          FROM accounts a
          JOIN (SELECT subject, min(sequence) AS lo, max(sequence) AS hi,
                       count(DISTINCT sequence) AS n
                  FROM outbox_events WHERE sequence IS NOT NULL GROUP BY subject) o
            ON o.subject = a.id::text
         WHERE o.hi <> a.version OR o.n <> o.hi - o.lo + 1
        """,
    ),
    *MOVEMENT_CHECKS,  # exchanges, the period lock, monitors
]

CHECKS_BY_RULE: dict[str, tuple[str, str]] = {rule: (rule, query) for rule, query in CHECKS}


# Queries that answer (rule, subject, detail) for several rules at once.
FULL_SWEEPS: list[str] = [ACCOUNT_ENTRIES_SWEEP]

# The sweep reads every entry: one sequential read and a sort in memory cost a third of walking
# the (account_id, sequence) index, whose every step is a random read of the heap (1,000,000
# transfers, docs/performance.md). Set for the sweep only, and reset after it: the other checks
# join through indexes that serve them well.
SWEEP_SETTINGS = (
    f"SET LOCAL work_mem = '{limits.VERIFY_SORT_MEMORY_MB}MB'",
    "SET LOCAL enable_indexscan = off",
    "SET LOCAL enable_bitmapscan = off",
)
SWEEP_RESET = ("RESET work_mem", "RESET enable_indexscan", "RESET enable_bitmapscan")


async def find_violations(session: AsyncSession | AsyncConnection) -> list[str]:
    """Every violation of the whole ledger, one line each (`ledger verify`'s full run). Call it
    in a transaction: the sweep's settings are local to it."""
    lines: list[str] = []
    for query in FULL_SWEEPS:
        for setting in SWEEP_SETTINGS:
            await session.execute(sa.text(setting))
        for rule, subject, detail in (await session.execute(sa.text(query))).all():
            lines.append(f"{rule}: {subject}: {detail}")
        for setting in SWEEP_RESET:
            await session.execute(sa.text(setting))
    for rule, query in CHECKS + REPORTING_CHECKS:
        for subject, detail in (await session.execute(sa.text(query))).all():
            lines.append(f"{rule}: {subject}: {detail}")
    return lines
