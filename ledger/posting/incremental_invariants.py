"""`ledger verify --since-last`: the invariants of `invariants.py`, checked for what changed since
the last successful run, extending what that run recorded (`verify_models.py`).

Every query takes the last run's bounds as parameters: `:e_from` (entries at or below it had all
settled before that run's snapshot), `:e_seen` (the highest entry id that snapshot held) and
`:o_from` (the same settled bound for outbox events). New entries are those above `:e_from`;
the fresh ones among them lie beyond their account's checked entry sequence, and extend the
account's checked sums and running balance. Each query returns violations only, as
`(subject, detail)`, so its lines read like the full run's.

What the marks do not cover is read whole, as its cost does not grow with the ledger's history:
accounts (balance columns, floors), open holds, and the category tree."""

from __future__ import annotations

from ledger.posting.invariants import CHECKS_BY_RULE
from ledger.posting.reporting_invariants import REPORTING_CHECKS

FRESH_ENTRIES = """
    fresh AS (
        SELECT e.id, e.account_id, e.transfer_id, e.direction, e.amount, e.balance_after,
               e.sequence, e.posted_at
          FROM entries e
          LEFT JOIN verify_account_marks m ON m.account_id = e.account_id
         WHERE e.id > :e_from AND e.sequence > coalesce(m.entry_sequence, 0))
"""

# Transfers an entry above the watermark belongs to: created posted, posted from a hold, or a
# reversal (whose original transfer changed too).
TOUCHED_TRANSFERS = """
    touched AS (SELECT DISTINCT transfer_id AS id FROM entries WHERE id > :e_from)
"""

# The account's checked running balance, from its checked sums.
MARKED_BALANCE = """
    CASE a.normal_balance
         WHEN 'credit' THEN coalesce(m.posted_credits, 0)::numeric - coalesce(m.posted_debits, 0)
         ELSE coalesce(m.posted_debits, 0)::numeric - coalesce(m.posted_credits, 0) END
"""

# Outbox events may be trimmed (the feed's retention): when the oldest one left lies above the
# bound, events of the interval may be gone, so a start later than the mark is no gap.
EVENTS_TRIMMED = """
    (SELECT coalesce(min(id) > :o_from, true) AS trimmed FROM outbox_events) g
"""

INCREMENTAL_CHECKS: list[tuple[str, str]] = [
    (
        "entry inserted below the checked part of its account",
        """
        SELECT e.id::text, format('account %s, sequence %s, checked up to sequence %s',
               e.account_id, e.sequence, m.entry_sequence)
          FROM entries e JOIN verify_account_marks m ON m.account_id = e.account_id
         WHERE e.id > :e_seen AND e.sequence <= m.entry_sequence
        """,
    ),
    (
        "posted balance differs from its entries",
        f"""
        WITH {FRESH_ENTRIES},
        f AS (SELECT account_id,
                     sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                     sum(amount) FILTER (WHERE direction = 'credit') AS credits
                FROM fresh GROUP BY account_id)
        SELECT a.id::text,
               format('posted_debits %s (checked %s + new entries %s),'
                      ' posted_credits %s (checked %s + new entries %s)',
                      a.posted_debits, coalesce(m.posted_debits, 0), coalesce(f.debits, 0),
                      a.posted_credits, coalesce(m.posted_credits, 0), coalesce(f.credits, 0))
          FROM accounts a
          LEFT JOIN verify_account_marks m ON m.account_id = a.id
          LEFT JOIN f ON f.account_id = a.id
         WHERE a.posted_debits <> coalesce(m.posted_debits, 0) + coalesce(f.debits, 0)
            OR a.posted_credits <> coalesce(m.posted_credits, 0) + coalesce(f.credits, 0)
        """,
    ),
    CHECKS_BY_RULE["pending balance differs from its open holds"],
    CHECKS_BY_RULE["available balance below the floor"],
    (
        "debits and credits differ in a currency",
        f"""
        WITH {FRESH_ENTRIES}
        SELECT a.currency, format('new entries: debits %s, credits %s',
               sum(f.amount) FILTER (WHERE f.direction = 'debit'),
               sum(f.amount) FILTER (WHERE f.direction = 'credit'))
          FROM fresh f JOIN accounts a ON a.id = f.account_id
         GROUP BY a.currency
        HAVING coalesce(sum(f.amount) FILTER (WHERE f.direction = 'debit'), 0)
            <> coalesce(sum(f.amount) FILTER (WHERE f.direction = 'credit'), 0)
        """,
    ),
    (
        "transfer entries do not match its posted amount",
        f"""
        WITH {TOUCHED_TRANSFERS}
        SELECT t.id::text, format('posted_amount %s, debits %s, credits %s, legs %s',
               t.posted_amount, coalesce(e.debits, 0), coalesce(e.credits, 0), e.legs)
          FROM touched k JOIN transfers t ON t.id = k.id
          CROSS JOIN LATERAL (
                SELECT sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                       sum(amount) FILTER (WHERE direction = 'credit') AS credits,
                       count(*) AS legs
                  FROM entries WHERE transfer_id = t.id) e
         WHERE coalesce(e.debits, 0) <> t.posted_amount OR coalesce(e.credits, 0) <> t.posted_amount
            OR (t.posted_amount > 0 AND e.legs <> 2)
        """,
    ),
    (
        "entry on the wrong account or currency of its transfer",
        f"""
        WITH {TOUCHED_TRANSFERS}
        SELECT e.id::text, format('transfer %s, account %s', e.transfer_id, e.account_id)
          FROM touched k JOIN transfers t ON t.id = k.id
          JOIN entries e ON e.transfer_id = t.id
          JOIN accounts a ON a.id = e.account_id
         WHERE a.currency <> t.currency
            OR (e.direction = 'debit' AND e.account_id <> t.debit_account_id)
            OR (e.direction = 'credit' AND e.account_id <> t.credit_account_id)
        """,
    ),
    (
        "statement running balance is broken",
        f"""
        WITH {FRESH_ENTRIES}
        SELECT x.account_id::text, format('entry sequence %s: balance_after %s, running sum %s',
               x.sequence, x.balance_after, x.running)
          FROM (SELECT f.account_id, f.sequence, f.balance_after,
                       {MARKED_BALANCE}
                       + sum(CASE WHEN (f.direction = 'debit') = (a.normal_balance = 'debit')
                                  THEN f.amount::numeric ELSE -f.amount::numeric END)
                           OVER (PARTITION BY f.account_id ORDER BY f.sequence) AS running
                  FROM fresh f JOIN accounts a ON a.id = f.account_id
                  LEFT JOIN verify_account_marks m ON m.account_id = f.account_id) x
         WHERE x.balance_after <> x.running
        """,
    ),
    (
        "entry posted_at earlier than the entry before it",
        f"""
        WITH {FRESH_ENTRIES}
        SELECT x.account_id::text, format('entry sequence %s: posted_at %s, sequence %s: %s',
               x.sequence, x.posted_at, x.previous_sequence, x.previous_at)
          FROM (SELECT f.account_id, f.sequence, f.posted_at,
                       coalesce(lag(f.sequence) OVER w, m.entry_sequence) AS previous_sequence,
                       coalesce(lag(f.posted_at) OVER w, m.last_posted_at) AS previous_at
                  FROM fresh f LEFT JOIN verify_account_marks m ON m.account_id = f.account_id
                WINDOW w AS (PARTITION BY f.account_id ORDER BY f.sequence)) x
         WHERE x.posted_at < x.previous_at
        """,
    ),
    (
        "transfer currency differs from its accounts'",
        f"""
        WITH {TOUCHED_TRANSFERS},
        checked AS (SELECT id FROM touched
                     UNION SELECT id FROM transfers WHERE state = 'pending')
        SELECT t.id::text, format('transfer %s, debit account %s, credit account %s',
               t.currency, d.currency, c.currency)
          FROM checked k JOIN transfers t ON t.id = k.id
          JOIN accounts d ON d.id = t.debit_account_id
          JOIN accounts c ON c.id = t.credit_account_id
         WHERE t.currency <> d.currency OR t.currency <> c.currency
        """,
    ),
    (
        "entry sequence beyond the account's version",
        f"""
        WITH {FRESH_ENTRIES}
        SELECT a.id::text, format('version %s, last entry sequence %s', a.version, f.last)
          FROM accounts a
          JOIN (SELECT account_id, max(sequence) AS last FROM fresh GROUP BY account_id) f
            ON f.account_id = a.id
         WHERE f.last > a.version
        """,
    ),
    (
        "reversals exceed what was posted",
        f"""
        WITH {TOUCHED_TRANSFERS},
        checked AS (SELECT id FROM touched
                     UNION SELECT t.reversal_of FROM touched k JOIN transfers t ON t.id = k.id
                            WHERE t.reversal_of IS NOT NULL)
        SELECT t.id::text, format('reversed_amount %s, reversals %s, posted %s',
               t.reversed_amount, r.total, t.posted_amount)
          FROM checked k JOIN transfers t ON t.id = k.id
          CROSS JOIN LATERAL (SELECT coalesce(sum(amount), 0) AS total FROM transfers
                               WHERE reversal_of = t.id) r
         WHERE t.reversed_amount <> r.total OR r.total > t.posted_amount
        """,
    ),
    (
        "account event sequence has a gap or does not reach the version",
        f"""
        WITH o AS (SELECT subject, min(sequence) AS lo, max(sequence) AS hi,
                          count(DISTINCT sequence) AS n
                     FROM outbox_events WHERE id > :o_from AND sequence IS NOT NULL
                    GROUP BY subject)
        SELECT a.id::text, format('version %s (checked up to %s), new events %s..%s (%s distinct)',
               a.version, coalesce(m.version, 0), o.lo, o.hi, coalesce(o.n, 0))
          FROM accounts a
          LEFT JOIN verify_account_marks m ON m.account_id = a.id
          LEFT JOIN o ON o.subject = a.id::text
         CROSS JOIN {EVENTS_TRIMMED}
         WHERE (o.subject IS NOT NULL
                AND (o.hi <> a.version OR o.n <> o.hi - o.lo + 1
                     OR (o.lo > coalesce(m.version, 0) + 1 AND NOT g.trimmed)))
            OR (o.subject IS NULL AND a.version <> coalesce(m.version, 0) AND NOT g.trimmed)
        """,
    ),
    (
        "entry posted inside the locked period after it was locked",
        """
        SELECT e.id::text, format('entry of account %s posted at %s; locked until %s since %s',
               e.account_id, e.posted_at, p.locked_until, p.created_at)
          FROM entries e
          JOIN period_locks p ON e.id > p.entries_watermark AND e.posted_at <= p.locked_until
         WHERE e.id > :e_from
        """,
    ),
    (
        "exchange without both of its legs, or legs that are not one exchange",
        f"""
        WITH {TOUCHED_TRANSFERS},
        checked AS (SELECT x.id FROM exchanges x JOIN touched k ON k.id = x.debit_transfer_id
                     UNION SELECT x.id FROM exchanges x
                             JOIN touched k ON k.id = x.credit_transfer_id)
        SELECT x.id::text, format('debit leg %s (%s %s), credit leg %s (%s %s), rate %s',
               x.debit_transfer_id, d.currency, d.amount,
               x.credit_transfer_id, c.currency, c.amount, x.rate)
          FROM checked k JOIN exchanges x ON x.id = k.id
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
        f"""
        WITH o AS (SELECT subject, min(sequence) AS lo, max(sequence) AS hi,
                          count(DISTINCT sequence) AS n
                     FROM outbox_events
                    WHERE id > :o_from AND type = 'ledger.account.monitor_triggered'
                    GROUP BY subject)
        SELECT mo.id::text,
               format('trigger_count %s (checked up to %s), new events %s..%s (%s distinct)',
                      mo.trigger_count, coalesce(k.trigger_count, 0), o.lo, o.hi,
                      coalesce(o.n, 0))
          FROM account_monitors mo
          LEFT JOIN verify_monitor_marks k ON k.monitor_id = mo.id
          LEFT JOIN o ON o.subject = mo.id::text
         CROSS JOIN {EVENTS_TRIMMED}
         WHERE (o.subject IS NOT NULL
                AND (o.hi <> mo.trigger_count OR o.n <> o.hi - o.lo + 1
                     OR (o.lo > coalesce(k.trigger_count, 0) + 1 AND NOT g.trimmed)))
            OR (o.subject IS NULL AND mo.trigger_count <> coalesce(k.trigger_count, 0)
                AND NOT g.trimmed)
        """,
    ),
    (
        "balances_after of a transfer differ from its entries",
        f"""
        WITH {TOUCHED_TRANSFERS}
        SELECT t.id::text,
               format('balances_after posted %s / %s, entries balance_after %s / %s',
                      t.balances_after[1], t.balances_after[7], d.balance_after, c.balance_after)
          FROM touched k JOIN transfers t ON t.id = k.id
          JOIN entries d ON d.transfer_id = t.id AND d.direction = 'debit'
          JOIN entries c ON c.transfer_id = t.id AND c.direction = 'credit'
         WHERE t.balances_after IS NOT NULL
           AND (d.balance_after <> t.balances_after[1] OR c.balance_after <> t.balances_after[7])
        """,
    ),
    # The category tree is small and changes by hand: read whole.
    *REPORTING_CHECKS[1:],
]

# The marks themselves, checked against the data they describe before anything is read beyond
# them. Each returns (subject, detail) for a mark that cannot be true.
MARK_CHECKS: list[tuple[str, str]] = [
    (
        "account mark disagrees with the account's entries",
        f"""
        SELECT a.id::text,
               format('mark: version %s, entry sequence %s, debits %s, credits %s, posted_at %s,'
                      ' run %s; account version %s; entry at that sequence: id %s,'
                      ' balance_after %s, posted_at %s; next entry id %s; watermark %s',
                      m.version, m.entry_sequence, m.posted_debits, m.posted_credits,
                      m.last_posted_at, m.run_id, a.version, last.id, last.balance_after,
                      last.posted_at, nxt.id, :e_from)
          FROM accounts a
          LEFT JOIN verify_account_marks m ON m.account_id = a.id
          LEFT JOIN LATERAL (SELECT e.id, e.balance_after, e.posted_at FROM entries e
                              WHERE e.account_id = a.id AND e.sequence = m.entry_sequence) last
            ON true
          LEFT JOIN LATERAL (SELECT e.id FROM entries e
                              WHERE e.account_id = a.id
                                AND e.sequence > coalesce(m.entry_sequence, 0)
                              ORDER BY e.sequence LIMIT 1) nxt
            ON true
         WHERE nxt.id <= :e_from
            OR (m.account_id IS NOT NULL
                AND (m.version > a.version OR m.run_id > :run_id
                     OR (m.entry_sequence = 0
                         AND (m.posted_debits <> 0 OR m.posted_credits <> 0
                              OR m.last_posted_at IS NOT NULL))
                     OR (m.entry_sequence <> 0
                         AND (last.id IS NULL OR last.id > :e_seen
                              OR last.posted_at IS DISTINCT FROM m.last_posted_at
                              OR last.balance_after <> {MARKED_BALANCE}))))
        """,
    ),
    (
        "account marks do not balance in a currency",
        """
        SELECT a.currency, format('checked debits %s, credits %s',
               sum(m.posted_debits), sum(m.posted_credits))
          FROM verify_account_marks m JOIN accounts a ON a.id = m.account_id
         GROUP BY a.currency
        HAVING sum(m.posted_debits) <> sum(m.posted_credits)
        """,
    ),
    (
        "monitor mark ahead of its monitor",
        """
        SELECT k.monitor_id::text, format('mark trigger_count %s, run %s; monitor trigger_count %s',
               k.trigger_count, k.run_id, mo.trigger_count)
          FROM verify_monitor_marks k JOIN account_monitors mo ON mo.id = k.monitor_id
         WHERE k.trigger_count > mo.trigger_count OR k.run_id > :run_id
        """,
    ),
]
