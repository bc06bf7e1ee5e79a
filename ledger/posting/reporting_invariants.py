"""`ledger verify`'s checks of what reporting keeps: the balances a transfer answers agree with
its entries, and the category tree is a tree of one currency per branch. Each query returns
violations only (subject, detail), like the checks in `invariants.py`."""

from __future__ import annotations

from ledger.core import limits

REPORTING_CHECKS: list[tuple[str, str]] = [
    (
        "balances_after of a transfer differ from its entries",
        # positions 1 and 7 (SQL arrays count from 1): each account's posted balance
        """
        SELECT t.id::text,
               format('balances_after posted %s / %s, entries balance_after %s / %s',
                      t.balances_after[1], t.balances_after[7], d.balance_after, c.balance_after)
          FROM transfers t
          JOIN entries d ON d.transfer_id = t.id AND d.direction = 'debit'
          JOIN entries c ON c.transfer_id = t.id AND c.direction = 'credit'
         WHERE t.balances_after IS NOT NULL
           AND (d.balance_after <> t.balances_after[1] OR c.balance_after <> t.balances_after[7])
        """,
    ),
    (
        "category in another currency than its parent",
        """
        SELECT c.id::text, format('%s under %s (%s)', c.currency, p.id, p.currency)
          FROM categories c JOIN categories p ON p.id = c.parent_id
         WHERE c.currency <> p.currency
        """,
    ),
    (
        "account in a category of another currency",
        """
        SELECT m.category_id::text, format('account %s in %s, category in %s',
                                           a.id, a.currency, c.currency)
          FROM category_accounts m
          JOIN categories c ON c.id = m.category_id
          JOIN accounts a ON a.id = m.account_id
         WHERE a.currency <> c.currency
        """,
    ),
    (
        "category is its own ancestor",
        f"""
        WITH RECURSIVE up(start, node, depth) AS (
            SELECT id, parent_id, 1 FROM categories WHERE parent_id IS NOT NULL
            UNION ALL
            SELECT u.start, c.parent_id, u.depth + 1
              FROM up u JOIN categories c ON c.id = u.node
             WHERE c.parent_id IS NOT NULL AND u.node <> u.start
               AND u.depth < {limits.CATEGORY_DEPTH_MAX}
        )
        SELECT DISTINCT start::text, 'a cycle in the category tree' FROM up WHERE node = start
        """,
    ),
]
