"""Property test of the reports against a small model: random trees of categories with random
memberships, random transfers (posted and held) between random accounts; after them, and as of
the instant of every transfer, each category's balance is the signed sum of the balances of the
distinct accounts in it and below it, and the trial balance matches every account with equal
totals. Runs through the service layer on one real database; each example has a currency of its
own, so its trial balance sees only its own accounts."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import service as accounts
from accounts.categories import service as categories
from accounts.categories.schemas import CategoryCreate
from accounts.reports import service as reports
from accounts.schemas import AccountCreate
from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from ledger.posting.commands import TransferCommand
from transfers import service as transfers

ACCOUNTS_MAX = 6
CATEGORIES_MAX = 6
TRANSFERS_MAX = 12
_currencies = itertools.count(1)

normals = st.sampled_from(["debit", "credit"])


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, Any]:
    account_normals = draw(st.lists(normals, min_size=2, max_size=ACCOUNTS_MAX))
    n_accounts = len(account_normals)
    n_categories = draw(st.integers(min_value=1, max_value=CATEGORIES_MAX))
    # category i's parent is one made before it (or none): every tree, no cycles to begin with
    parents = [draw(st.none() | st.integers(0, i - 1)) if i else None for i in range(n_categories)]
    category_normals = draw(st.lists(normals, min_size=n_categories, max_size=n_categories))
    members = draw(
        st.sets(st.tuples(st.integers(0, n_categories - 1), st.integers(0, n_accounts - 1)))
    )
    moves = draw(
        st.lists(
            st.tuples(
                st.integers(0, n_accounts - 1),
                st.integers(1, n_accounts - 1),  # credit = debit + offset: never the same
                st.integers(1, 1_000),
                st.booleans(),  # held (pending) instead of posted
            ),
            max_size=TRANSFERS_MAX,
        )
    )
    return {
        "account_normals": account_normals,
        "parents": parents,
        "category_normals": category_normals,
        "members": members,
        "moves": [(d, (d + o) % n_accounts, amount, held) for d, o, amount, held in moves],
    }


@dataclass
class Balances:
    normal: str
    posted_debits: int = 0
    posted_credits: int = 0
    pending_debits: int = 0
    pending_credits: int = 0

    @property
    def posted(self) -> int:
        if self.normal == "credit":
            return self.posted_credits - self.posted_debits
        return self.posted_debits - self.posted_credits

    @property
    def available(self) -> int:
        held = self.pending_debits if self.normal == "credit" else self.pending_credits
        return self.posted - held


@dataclass
class Model:
    accounts: list[Balances]
    parents: list[int | None]
    normals: list[str]
    members: set[tuple[int, int]]
    history: list[list[int]] = field(default_factory=list)  # posted of every account per step

    def subtree(self, root: int) -> set[int]:
        found = {root}
        grew = True
        while grew:
            more = {i for i, p in enumerate(self.parents) if p in found} - found
            found |= more
            grew = bool(more)
        return found

    def accounts_of(self, category: int) -> set[int]:
        tree = self.subtree(category)
        return {a for c, a in self.members if c in tree}

    def sign(self, category: int, account: int) -> int:
        return 1 if self.accounts[account].normal == self.normals[category] else -1


def ctx() -> WriteContext:
    return WriteContext(actor=Actor.cli())


async def build(session: AsyncSession, ledger: dict[str, Any], currency: str) -> tuple[Any, Any]:
    account_ids = []
    for i, normal in enumerate(ledger["account_normals"]):
        created = await accounts.create_account(
            session,
            AccountCreate(
                code=f"m:{currency}:{i}", currency=currency, normal_balance=normal, min_balance=None
            ),
            ctx(),
        )
        account_ids.append(created.account.id)
    category_ids: list[uuid.UUID] = []
    for i, (parent, normal) in enumerate(
        zip(ledger["parents"], ledger["category_normals"], strict=True)
    ):
        body = CategoryCreate(
            code=f"m:{currency}:c{i}",
            currency=currency,
            normal_balance=normal,
            parent_id=None if parent is None else category_ids[parent],
        )
        category_ids.append((await categories.create_category(session, body, ctx())).category.id)
    for category, account in sorted(ledger["members"]):
        await categories.change_membership(
            session, category_ids[category], account_ids[account], add=True, ctx=ctx()
        )
    return account_ids, category_ids


def check_category(model: Model, index: int, answer: Any, posted_of: list[int] | None) -> None:
    members = model.accounts_of(index)
    assert answer.accounts == len(members)
    if posted_of is not None:  # as of a past instant: posted only
        assert answer.posted == sum(model.sign(index, a) * posted_of[a] for a in members)
        return
    sign = model.sign
    assert answer.posted == sum(sign(index, a) * model.accounts[a].posted for a in members)
    assert answer.available == sum(sign(index, a) * model.accounts[a].available for a in members)
    for name in ("posted_debits", "posted_credits", "pending_debits", "pending_credits"):
        assert getattr(answer, name) == sum(getattr(model.accounts[a], name) for a in members)


def check_trial_balance(report: Any, account_ids: list[uuid.UUID], posted_of: list[int]) -> None:
    assert report.total_debit == report.total_credit
    lines = {line.account_id: line for line in report.accounts}
    assert set(lines) == set(account_ids)
    for index, account_id in enumerate(account_ids):
        line = lines[account_id]
        side = line.debit if line.normal_balance == "debit" else line.credit
        other = line.credit if line.normal_balance == "debit" else line.debit
        assert (side, other) == (posted_of[index], 0)


def run_example(loop: asyncio.AbstractEventLoop, sessions: Any, ledger: dict[str, Any]) -> None:
    currency = f"M{next(_currencies):09d}"

    def run(work: Any) -> Any:
        return loop.run_until_complete(run_in_transaction(sessions, work))

    account_ids, category_ids = run(lambda s: build(s, ledger, currency))
    model = Model(
        accounts=[Balances(n) for n in ledger["account_normals"]],
        parents=ledger["parents"],
        normals=ledger["category_normals"],
        members=ledger["members"],
    )
    instants: list[tuple[dt.datetime, list[int]]] = []
    for debit, credit, amount, held in ledger["moves"]:
        command = TransferCommand(
            debit_account_id=account_ids[debit],
            credit_account_id=account_ids[credit],
            amount=amount,
            pending=held,
        )
        result = run(lambda s, c=command: transfers.create_transfer(s, c, ctx()))
        if held:
            model.accounts[debit].pending_debits += amount
            model.accounts[credit].pending_credits += amount
        else:
            model.accounts[debit].posted_debits += amount
            model.accounts[credit].posted_credits += amount
        instants.append((result.transfer.created_at, [a.posted for a in model.accounts]))

    now_posted = [a.posted for a in model.accounts]
    for index, category_id in enumerate(category_ids):
        _, answer = run(lambda s, c=category_id: categories.balance(s, c, None))
        check_category(model, index, answer, None)
        for instant, posted_of in instants:
            _, past = run(lambda s, c=category_id, t=instant: categories.balance(s, c, t))
            check_category(model, index, past, posted_of)
    now = dt.datetime.now(dt.UTC)
    check_trial_balance(
        run(lambda s: reports.trial_balance(s, currency, None, now)), account_ids, now_posted
    )
    for instant, posted_of in instants:
        report = run(lambda s, t=instant: reports.trial_balance(s, currency, t, now))
        check_trial_balance(report, account_ids, posted_of)


def test_category_balances_and_trial_balance_match_the_model(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = create_engine(Settings(database_url=db_url), pool_size=2)
    sessions = create_sessionmaker(engine)

    @settings(
        max_examples=25,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ledger=ledgers())
    def example(ledger: dict[str, Any]) -> None:
        run_example(loop, sessions, ledger)

    try:
        example()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
