"""Account categories: a tree of named groups of accounts, with balances rolled up at read time."""
