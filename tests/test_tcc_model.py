"""A hypothesis state machine mixing holds, posts (full and partial), voids, expiries, reversals
and plain transfers through the posting kernel, compared step by step with a simple model."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import service as accounts
from accounts.schemas import AccountCreate
from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.errors import LedgerError
from ledger.core.settings import Settings
from ledger.posting import engine
from ledger.posting.commands import TransferCommand
from ledger.posting.engine import OutcomeKind
from ledger.posting.invariants import find_violations
from tests.conftest import new_database

CUSTOMERS = 3
amounts = st.integers(min_value=1, max_value=500)


@dataclass
class ModelTransfer:
    debit: int
    credit: int
    amount: int
    state: str
    posted: int = 0
    reversed: int = 0
    has_timeout: bool = False


class HoldsMachine(RuleBasedStateMachine):
    transfers = Bundle("transfers")

    def __init__(self, server_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(Settings(database_url=new_database(server_url)), pool_size=2)
        self.sessions = create_sessionmaker(self.engine)
        self.ids: list[uuid.UUID] = []
        # model: per account [posted_debits, posted_credits, pending_debits, pending_credits]
        self.model: list[list[int]] = []
        self.model_transfers: dict[uuid.UUID, ModelTransfer] = {}
        self.clock = dt.datetime.now(dt.UTC)
        self.counter = 0
        self.run(self._setup())
        for index in range(1, CUSTOMERS + 1):
            self._create(0, index, 1_000, pending=False, timeout=False)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def ctx(self) -> WriteContext:
        self.clock += dt.timedelta(milliseconds=1)
        return WriteContext(actor=Actor.cli(), now=self.clock)

    async def _setup(self) -> None:
        # index 0: a debit-normal source with no floor; 1..CUSTOMERS: credit-normal, floor 0
        for index in range(CUSTOMERS + 1):
            body = AccountCreate(
                code=f"m{index}",
                currency="EUR",
                normal_balance="debit" if index == 0 else "credit",
                min_balance=None if index == 0 else 0,
            )

            async def create(session: AsyncSession, body: AccountCreate = body) -> Any:
                return await accounts.create_account(session, body, self.ctx())

            result = await run_in_transaction(self.sessions, create)
            self.ids.append(result.account.id)
            self.model.append([0, 0, 0, 0])

    def teardown(self) -> None:
        async def check(session: AsyncSession) -> list[str]:
            return await find_violations(session)

        try:
            assert self.run(run_in_transaction(self.sessions, check)) == []
        finally:
            self.run(self.engine.dispose())
            self.loop.close()

    # -- model helpers -------------------------------------------------------------------------

    def available(self, index: int) -> int:
        pd, pc, qd, qc = self.model[index]
        if index == 0:
            return pd - pc - qc
        return pc - pd - qd

    def floor_ok(self, index: int) -> bool:
        return index == 0 or self.available(index) >= 0

    def apply(self, debit: int, credit: int, deltas: tuple[int, int, int, int]) -> bool:
        """Apply (posted_debit, posted_credit, pending_debit, pending_credit) to the pair; roll
        back and report False if a floor breaks."""
        pd, pc, qd, qc = deltas
        before = ([*self.model[debit]], [*self.model[credit]])
        self.model[debit][0] += pd
        self.model[debit][2] += qd
        self.model[credit][1] += pc
        self.model[credit][3] += qc
        worse = [
            i
            for i, old in ((debit, before[0]), (credit, before[1]))
            if not self.floor_ok(i) and self._available_of(i, old) > self.available(i)
        ]
        if worse:
            self.model[debit], self.model[credit] = before
            return False
        return True

    def _available_of(self, index: int, values: list[int]) -> int:
        pd, pc, qd, qc = values
        return pd - pc - qc if index == 0 else pc - pd - qd

    def call(self, work: Any) -> tuple[Any, LedgerError | None]:
        try:
            return self.run(run_in_transaction(self.sessions, work)), None
        except LedgerError as error:
            return None, error

    # -- rules ---------------------------------------------------------------------------------

    @rule(target=transfers, to=st.integers(1, CUSTOMERS), amount=amounts)
    def fund(self, to: int, amount: int) -> uuid.UUID:
        return self._create(0, to, amount, pending=False, timeout=False)

    @rule(target=transfers, pair=st.permutations(range(1, CUSTOMERS + 1)), amount=amounts)
    def pay(self, pair: list[int], amount: int) -> uuid.UUID:
        return self._create(pair[0], pair[1], amount, pending=False, timeout=False)

    @rule(
        target=transfers,
        pair=st.permutations(range(1, CUSTOMERS + 1)),
        amount=amounts,
        timeout=st.booleans(),
    )
    def hold(self, pair: list[int], amount: int, timeout: bool) -> uuid.UUID:
        return self._create(pair[0], pair[1], amount, pending=True, timeout=timeout)

    def _create(
        self, debit: int, credit: int, amount: int, *, pending: bool, timeout: bool
    ) -> uuid.UUID:
        self.counter += 1
        transfer_id = uuid.UUID(int=self.counter)
        command = TransferCommand(
            id=transfer_id,
            debit_account_id=self.ids[debit],
            credit_account_id=self.ids[credit],
            amount=amount,
            pending=pending,
            timeout_seconds=3600 if timeout else None,
        )
        ctx = self.ctx()

        async def work(session: AsyncSession) -> Any:
            return await engine.create_transfers(session, [command], atomic=False, ctx=ctx)

        [outcome], _ = self.call(work)
        deltas = (0, 0, amount, amount) if pending else (amount, amount, 0, 0)
        allowed = self.apply(debit, credit, deltas)
        if allowed:
            assert outcome.kind is OutcomeKind.CREATED, outcome.error
            self.model_transfers[transfer_id] = ModelTransfer(
                debit,
                credit,
                amount,
                "pending" if pending else "posted",
                posted=0 if pending else amount,
                has_timeout=timeout,
            )
        else:
            assert outcome.error is not None and outcome.error.code == "insufficient_funds"
        return transfer_id

    @rule(transfer=transfers, partial=st.one_of(st.none(), amounts))
    def post(self, transfer: uuid.UUID, partial: int | None) -> None:
        ctx = self.ctx()

        async def work(session: AsyncSession) -> Any:
            return await engine.post_transfer(session, transfer, partial, ctx)

        outcome, error = self.call(work)
        m = self.model_transfers.get(transfer)
        if m is None:
            assert error is not None and error.code == "transfer_not_found"
            return
        if m.state == "posted" and (partial is None or partial == m.posted):
            assert error is None and outcome.kind is OutcomeKind.UNCHANGED
            return
        if m.state != "pending":
            assert error is not None and error.code == "transfer_not_pending"
            return
        amount = m.amount if partial is None else partial
        if amount > m.amount:
            assert error is not None and error.code == "post_exceeds_pending"
            return
        assert self.apply(m.debit, m.credit, (amount, amount, -m.amount, -m.amount))
        assert error is None, error
        m.state, m.posted = "posted", amount

    @rule(transfer=transfers)
    def void(self, transfer: uuid.UUID) -> None:
        ctx = self.ctx()

        async def work(session: AsyncSession) -> Any:
            return await engine.void_transfer(session, transfer, ctx)

        outcome, error = self.call(work)
        m = self.model_transfers.get(transfer)
        if m is None:
            assert error is None and outcome is None  # refused create: an empty cancel now
            self.model_transfers[transfer] = ModelTransfer(0, 0, 0, "tombstone")
            return
        if m.state in ("voided", "tombstone"):
            assert error is None
            return
        if m.state != "pending":
            assert error is not None and error.code == "transfer_not_pending"
            return
        assert error is None
        assert self.apply(m.debit, m.credit, (0, 0, -m.amount, -m.amount))
        m.state = "voided"

    @precondition(
        lambda self: any(
            m.state == "pending" and m.has_timeout for m in self.model_transfers.values()
        )
    )
    @rule()
    def time_passes_and_holds_expire(self) -> None:
        self.clock += dt.timedelta(hours=2)
        ctx = self.ctx()
        due = [t for t, m in self.model_transfers.items() if m.state == "pending" and m.has_timeout]

        # The engine decides on the database clock, which a test cannot move forward: the
        # holds' timeouts move back instead, to just after their creation, so they are due.
        async def come_due(session: AsyncSession) -> None:
            await session.execute(
                sa.text(
                    "UPDATE transfers SET timeout_at = created_at + interval '1 microsecond' "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": due},
            )

        self.run(run_in_transaction(self.sessions, come_due))
        for transfer_id in due:

            async def work(session: AsyncSession, tid: uuid.UUID = transfer_id) -> Any:
                return await engine.expire_transfer(session, tid, ctx)

            outcome, error = self.call(work)
            assert error is None and outcome.transfer.state == "expired"
            m = self.model_transfers[transfer_id]
            assert self.apply(m.debit, m.credit, (0, 0, -m.amount, -m.amount))
            m.state = "expired"

    @rule(transfer=transfers, partial=st.one_of(st.none(), amounts))
    def reverse(self, transfer: uuid.UUID, partial: int | None) -> None:
        ctx = self.ctx()

        async def work(session: AsyncSession) -> Any:
            return await engine.reverse_transfer(session, transfer, partial, ctx)

        outcome, error = self.call(work)
        m = self.model_transfers.get(transfer)
        if m is None or m.state == "tombstone":
            assert error is not None and error.code == "transfer_not_found"
            return
        if m.state != "posted":
            assert error is not None and error.code == "transfer_not_posted"
            return
        remaining = m.posted - m.reversed
        amount = remaining if partial is None else partial
        if amount > remaining or amount <= 0:
            assert error is not None and error.code == "reversal_exceeds_posted"
            return
        if not self.apply(m.credit, m.debit, (amount, amount, 0, 0)):
            assert error is not None and error.code == "insufficient_funds"
            return
        assert error is None and outcome.kind is OutcomeKind.CREATED
        m.reversed += amount
        self.model_transfers[outcome.transfer.id] = ModelTransfer(
            m.credit, m.debit, amount, "posted", posted=amount
        )

    def _in_state(self, state: str) -> list[uuid.UUID]:
        # Insertion order, never sorted ids: the kernel makes time-based ids, and a replayed
        # example must see the same list to draw the same transfer.
        return [t for t, m in self.model_transfers.items() if m.state == state]

    @precondition(lambda self: bool(self._in_state("pending")))
    @rule(data=st.data(), partial=st.one_of(st.none(), amounts))
    def post_a_hold(self, data: st.DataObject, partial: int | None) -> None:
        self.post(data.draw(st.sampled_from(self._in_state("pending"))), partial)

    @precondition(lambda self: bool(self._in_state("pending")))
    @rule(data=st.data())
    def void_a_hold(self, data: st.DataObject) -> None:
        self.void(data.draw(st.sampled_from(self._in_state("pending"))))

    @precondition(lambda self: bool(self._in_state("posted")))
    @rule(data=st.data(), partial=st.one_of(st.none(), amounts))
    def reverse_a_posted(self, data: st.DataObject, partial: int | None) -> None:
        self.reverse(data.draw(st.sampled_from(self._in_state("posted"))), partial)

    @invariant()
    def balances_match(self) -> None:
        async def read(session: AsyncSession) -> list[list[int]]:
            rows = []
            for account_id in self.ids:
                a = await accounts.get_account(session, account_id)
                rows.append(
                    [a.posted_debits, a.posted_credits, a.pending_debits, a.pending_credits]
                )
            return rows

        if self.ids:
            assert self.run(run_in_transaction(self.sessions, read)) == self.model


def test_holds_state_machine(pg_server: str, template_db: str) -> None:
    run_state_machine_as_test(
        lambda: HoldsMachine(pg_server),
        settings=settings(
            max_examples=12,
            derandomize=True,
            database=None,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
