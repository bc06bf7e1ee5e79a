"""`ledger verify`'s checks of money movement, each returning violations only."""

from __future__ import annotations

MOVEMENT_CHECKS: list[tuple[str, str]] = [
    (
        # Entries written before a lock move may lie inside the period (they are its history);
        # none written after it may.
        "entry posted inside the locked period after it was locked",
        """
        SELECT e.id::text, format('entry of account %s posted at %s; locked until %s since %s',
               e.account_id, e.posted_at, p.locked_until, p.created_at)
          FROM period_locks p
          JOIN entries e ON e.id > p.entries_watermark AND e.posted_at <= p.locked_until
        """,
    ),
    (
        "exchange without both of its legs, or legs that are not one exchange",
        """
        SELECT x.id::text, format('debit leg %s (%s %s), credit leg %s (%s %s), rate %s',
               x.debit_transfer_id, d.currency, d.amount,
               x.credit_transfer_id, c.currency, c.amount, x.rate)
          FROM exchanges x
          LEFT JOIN transfers d ON d.id = x.debit_transfer_id
          LEFT JOIN transfers c ON c.id = x.credit_transfer_id
         WHERE d.id IS NULL OR c.id IS NULL
            OR d.currency = c.currency
            OR d.created_at <> c.created_at
            OR d.posted_amount <> d.amount OR c.posted_amount <> c.amount
            OR abs(x.rate::numeric * d.amount - c.amount) >= 0.000001
        """,
    ),
    (
        "monitor events have a gap or do not reach its trigger count",
        """
        SELECT m.id::text, format('trigger_count %s, events %s..%s (%s distinct)',
               m.trigger_count, o.lo, o.hi, o.n)
          FROM account_monitors m
          JOIN (SELECT subject, min(sequence) AS lo, max(sequence) AS hi,
                       count(DISTINCT sequence) AS n
                  FROM outbox_events
                 WHERE type = 'ledger.account.monitor_triggered'
                 GROUP BY subject) o ON o.subject = m.id::text
         WHERE o.hi <> m.trigger_count OR o.n <> o.hi - o.lo + 1
        """,
    ),
]
