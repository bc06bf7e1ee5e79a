"""`ledger verify`: recompute every money invariant from the entries, independently of the code
that wrote them. Each query returns violations only; an empty result means the rule holds."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.posting.movement_invariants import MOVEMENT_CHECKS
from ledger.posting.reporting_invariants import REPORTING_CHECKS

CHECKS: list[tuple[str, str]] = [
    (
        "posted balance differs from its entries",
        """
        SELECT a.id::text AS subject,
               format('posted_debits %s (entries %s), posted_credits %s (entries %s)',
                      a.posted_debits, coalesce(e.debits, 0),
                      a.posted_credits, coalesce(e.credits, 0))
          FROM accounts a
          LEFT JOIN (SELECT account_id,
                            sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                            sum(amount) FILTER (WHERE direction = 'credit') AS credits
                       FROM entries GROUP BY account_id) e ON e.account_id = a.id
         WHERE a.posted_debits <> coalesce(e.debits, 0)
            OR a.posted_credits <> coalesce(e.credits, 0)
        """,
    ),
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
        "debits and credits differ in a currency",
        """
        SELECT a.currency, format('debits %s, credits %s',
               sum(e.amount) FILTER (WHERE e.direction = 'debit'),
               sum(e.amount) FILTER (WHERE e.direction = 'credit'))
          FROM entries e JOIN accounts a ON a.id = e.account_id
         GROUP BY a.currency
        HAVING coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit'), 0)
            <> coalesce(sum(e.amount) FILTER (WHERE e.direction = 'credit'), 0)
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
        "statement running balance is broken",
        """
        SELECT x.account_id::text, format('entry sequence %s: balance_after %s, running sum %s',
               x.sequence, x.balance_after, x.running)
          FROM (SELECT e.account_id, e.sequence, e.balance_after,
                       sum(CASE WHEN (e.direction = 'debit') = (a.normal_balance = 'debit')
                                THEN e.amount::numeric ELSE -e.amount::numeric END)
                           OVER (PARTITION BY e.account_id ORDER BY e.sequence) AS running
                  FROM entries e JOIN accounts a ON a.id = e.account_id) x
         WHERE x.balance_after <> x.running
        """,
    ),
    (
        # Time follows sequence on an account, or `balance?as_of` of a past instant would change
        # when a later sequence lands before it.
        "entry posted_at earlier than the entry before it",
        """
        SELECT x.account_id::text, format('entry sequence %s: posted_at %s, sequence %s: %s',
               x.sequence, x.posted_at, x.previous_sequence, x.previous_at)
          FROM (SELECT account_id, sequence, posted_at,
                       lag(sequence) OVER w AS previous_sequence,
                       lag(posted_at) OVER w AS previous_at
                  FROM entries WINDOW w AS (PARTITION BY account_id ORDER BY sequence)) x
         WHERE x.posted_at < x.previous_at
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
        "entry sequence beyond the account's version",
        """
        SELECT a.id::text, format('version %s, last entry sequence %s', a.version, e.last)
          FROM accounts a
          JOIN (SELECT account_id, max(sequence) AS last FROM entries GROUP BY account_id) e
            ON e.account_id = a.id
         WHERE e.last > a.version
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


async def find_violations(session: AsyncSession) -> list[str]:
    lines: list[str] = []
    for rule, query in CHECKS + REPORTING_CHECKS:
        for subject, detail in (await session.execute(sa.text(query))).all():
            lines.append(f"{rule}: {subject}: {detail}")
    return lines
