"""A hypothesis state machine that drives accounts, posted transfers (single and batched, atomic
and not, with client ids), reversals and freezes through the service layer on one real
database, and compares every answer and every balance with a small in-memory model. At the end
of each run `ledger verify`'s checks must find nothing."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from accounts import service as accounts
from accounts.schemas import AccountCreate, AccountPatch, account_out
from ledger.core import limits
from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.errors import LedgerError
from ledger.core.settings import Settings
from ledger.posting.commands import TransferCommand
from ledger.posting.invariants import find_violations
from transfers import service as transfers
from transfers.schemas import batch_result

MAX = limits.AMOUNT_MAX
ACCOUNTS_MAX = 6

amounts = st.one_of(
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=MAX - 300, max_value=MAX),  # reaches the overflow edge now and then
)
floors = st.sampled_from([0, 0, None, -100])
# the credit account is `offset` places after the debit one; 0 (or a full turn) is the same account
offsets = st.sampled_from([1, 1, 1, 2, 2, 3, 0])
new_floors = st.sampled_from([0, None, -100, 50, 10**6])


class Refused(Exception):
    """The model's verdict: this command must fail with `code`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class ModelAccount:
    id: uuid.UUID
    normal: str
    currency: str
    floor: int | None
    status: str = "active"
    version: int = 1
    debits: int = 0
    credits: int = 0

    @property
    def posted(self) -> int:
        return self.credits - self.debits if self.normal == "credit" else self.debits - self.credits


@dataclass
class ModelTransfer:
    id: uuid.UUID
    debit: uuid.UUID
    credit: uuid.UUID
    amount: int
    reference: str | None
    reversed: int = 0
    reversal: bool = False


@dataclass
class Model:
    accounts: dict[uuid.UUID, ModelAccount] = field(default_factory=dict)
    transfers: dict[uuid.UUID, ModelTransfer] = field(default_factory=dict)

    def check_move(self, debit: ModelAccount, credit: ModelAccount, amount: int) -> None:
        """Mirror of the kernel's rules, debit side first, in the kernel's order."""
        for acc, side in ((debit, "debit"), (credit, "credit")):
            debits = acc.debits + (amount if side == "debit" else 0)
            credits = acc.credits + (amount if side == "credit" else 0)
            if max(debits, credits) > MAX:
                raise Refused("amount_overflow")
            after = credits - debits if acc.normal == "credit" else debits - credits
            if after < -MAX:
                raise Refused("amount_overflow")
            if acc.floor is not None and after < acc.floor and after < acc.posted:
                raise Refused("insufficient_funds")

    def apply_move(self, debit: ModelAccount, credit: ModelAccount, amount: int) -> None:
        debit.debits += amount
        credit.credits += amount
        debit.version += 1
        credit.version += 1

    def create(self, command: TransferCommand) -> int:
        if command.id is not None and command.id in self.transfers:
            existing = self.transfers[command.id]
            same = (
                not existing.reversal
                and existing.debit == command.debit_account_id
                and existing.credit == command.credit_account_id
                and existing.amount == command.amount
                and existing.reference == command.reference
            )
            if same:
                return 200
            raise Refused("transfer_exists_with_different_fields")
        if command.debit_account_id == command.credit_account_id:
            raise Refused("same_account")
        debit = self.accounts.get(command.debit_account_id)
        credit = self.accounts.get(command.credit_account_id)
        if debit is None or credit is None:
            raise Refused("account_not_found")
        if debit.currency != credit.currency:
            raise Refused("currency_mismatch")
        if debit.status != "active" or credit.status != "active":
            raise Refused("account_not_active")
        self.check_move(debit, credit, command.amount)
        self.apply_move(debit, credit, command.amount)
        return 201

    def record(self, transfer_id: uuid.UUID, command: TransferCommand) -> None:
        self.transfers.setdefault(
            transfer_id,
            ModelTransfer(
                transfer_id,
                command.debit_account_id,
                command.credit_account_id,
                command.amount,
                command.reference,
            ),
        )

    def reverse(self, original: ModelTransfer, amount: int | None) -> int:
        remaining = original.amount - original.reversed
        wanted = remaining if amount is None else amount
        if wanted > remaining or wanted <= 0:
            raise Refused("reversal_exceeds_posted")
        debit, credit = self.accounts[original.credit], self.accounts[original.debit]
        if debit.status != "active" or credit.status != "active":
            raise Refused("account_not_active")
        self.check_move(debit, credit, wanted)
        self.apply_move(debit, credit, wanted)
        original.reversed += wanted
        return wanted


class LedgerMachine(RuleBasedStateMachine):
    """One machine per example; all examples share one database (fresh accounts each time)."""

    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine

    def __init__(self) -> None:
        super().__init__()
        self.sessions = create_sessionmaker(self.engine)
        self.model = Model()
        self.order: list[uuid.UUID] = []
        self.transfer_ids: list[uuid.UUID] = []
        self.commands: dict[uuid.UUID, TransferCommand] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(run_in_transaction(self.sessions, work))

    def ctx(self) -> WriteContext:
        return WriteContext(actor=Actor.cli())

    def attempt(self, work: Any) -> tuple[str | None, Any]:
        try:
            return None, self.run(work)
        except LedgerError as error:
            return error.code, None

    # -- rules ---------------------------------------------------------------------------------

    @initialize(normal=st.sampled_from(["debit", "credit"]))
    def source(self, normal: str) -> None:
        """A floorless source so that money can enter, and two customers with a zero floor."""
        self._create_account(normal, "USD", None)
        self._create_account("credit", "USD", 0)
        self._create_account("credit", "USD", 0)

    @precondition(lambda self: len(self.order) < ACCOUNTS_MAX)
    @rule(
        normal=st.sampled_from(["debit", "credit"]),
        currency=st.sampled_from(["USD", "USD", "USD", "EUR"]),
        floor=floors,
    )
    def create_account(self, normal: str, currency: str, floor: int | None) -> None:
        self._create_account(normal, currency, floor)

    def _create_account(self, normal: str, currency: str, floor: int | None) -> None:
        body = AccountCreate(
            code=f"m:{uuid.uuid4().hex}",
            currency=currency,
            normal_balance=normal,  # type: ignore[arg-type]
            min_balance=floor,
        )
        code, result = self.attempt(lambda s: accounts.create_account(s, body, self.ctx()))
        if floor is not None and floor > 0:
            # a new account holds 0, so a positive floor would be broken at once
            assert code == "min_balance_violated"
            return
        assert code is None
        assert result.created  # answered 201
        out = account_out(result.account)
        assert out.balances.posted == 0 and out.version == 1
        self.model.accounts[out.id] = ModelAccount(out.id, normal, currency, floor)
        self.order.append(out.id)

    def _pick(self, index: int) -> uuid.UUID:
        return self.order[index % len(self.order)]

    def _command(
        self, debit: int, offset: int, amount: int, client_id: bool, reference: str | None
    ) -> TransferCommand:
        return TransferCommand(
            id=uuid.uuid4() if client_id else None,
            debit_account_id=self._pick(debit),
            credit_account_id=self._pick(debit + offset),
            amount=amount,
            reference=reference,
        )

    @rule(
        debit=st.integers(0, ACCOUNTS_MAX - 1),
        offset=offsets,
        amount=amounts,
        client_id=st.booleans(),
        reference=st.sampled_from([None, "ref", "x' OR 1=1 --"]),
    )
    def transfer(
        self, debit: int, offset: int, amount: int, client_id: bool, reference: str | None
    ) -> None:
        command = self._command(debit, offset, amount, client_id, reference)
        self._create_one(command)

    def _create_one(self, command: TransferCommand) -> None:
        expected: int | str
        try:
            expected = self.model.create(command)
        except Refused as refused:
            expected = refused.code
        code, result = self.attempt(lambda s: transfers.create_transfer(s, command, self.ctx()))
        if code is not None:
            assert code == expected, (code, expected)
            return
        status = 201 if result.created else 200  # as the controller answers
        out = result.transfer
        assert status == expected, (status, expected)
        assert out.state == "posted" and out.posted_amount == command.amount
        assert command.id is None or out.id == command.id
        self.model.record(out.id, command)
        self.commands[out.id] = command
        if out.id not in self.transfer_ids:
            self.transfer_ids.append(out.id)

    @precondition(lambda self: self.commands)
    @rule(index=st.integers(0, 1000), same=st.booleans())
    def repeat_client_id(self, index: int, same: bool) -> None:
        """A client retrying with its transfer id: `exists` (200) or different fields (409)."""
        created = list(self.commands)
        transfer_id = created[index % len(created)]
        original = self.commands[transfer_id]
        command = TransferCommand(
            id=transfer_id,
            debit_account_id=original.debit_account_id,
            credit_account_id=original.credit_account_id,
            amount=original.amount if same else original.amount + 1,
            reference=original.reference,
        )
        self._create_one(command)

    @rule(
        atomic=st.booleans(),
        items=st.lists(
            st.tuples(
                st.integers(0, ACCOUNTS_MAX - 1),
                offsets,
                amounts,
                st.booleans(),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def batch(self, atomic: bool, items: list[tuple[int, int, int, bool]]) -> None:
        commands = [self._command(d, c, a, cid, None) for d, c, a, cid in items]
        expected = self._expect_batch(commands, atomic)
        outcomes = self.run(lambda s: transfers.create_batch(s, commands, atomic, self.ctx()))
        assert len(outcomes) == len(commands)
        result = batch_result(outcomes)  # the body the controller answers (always 200)
        got = [(item.status, item.error["code"] if item.error else None) for item in result.results]
        assert got == expected, (got, expected)
        for command, item in zip(commands, result.results, strict=True):
            if item.transfer is not None:
                self.model.record(item.transfer.id, command)
                self.commands[item.transfer.id] = command
                self.transfer_ids.append(item.transfer.id)

    def _expect_batch(
        self, commands: list[TransferCommand], atomic: bool
    ) -> list[tuple[int, str | None]]:
        snapshot = {k: ModelAccount(**vars(v)) for k, v in self.model.accounts.items()}
        expected: list[tuple[int, str | None]] = []
        for index, command in enumerate(commands):
            try:
                expected.append((self.model.create(command), None))
            except Refused as refused:
                status = 404 if refused.code == "account_not_found" else 422
                if refused.code == "transfer_exists_with_different_fields":
                    status = 409
                if atomic:
                    self.model.accounts = snapshot
                    return [
                        (status, refused.code) if i == index else (422, "not_committed")
                        for i in range(len(commands))
                    ]
                expected.append((status, refused.code))
        return expected

    @precondition(lambda self: self.transfer_ids)
    @rule(index=st.integers(0, 1000), amount=st.one_of(st.none(), st.integers(1, 400)))
    def reverse(self, index: int, amount: int | None) -> None:
        transfer_id = self.transfer_ids[index % len(self.transfer_ids)]
        original = self.model.transfers[transfer_id]
        expected: str | int
        try:
            expected = self.model.reverse(original, amount)
        except Refused as refused:
            expected = refused.code
        code, result = self.attempt(
            lambda s: transfers.reverse_transfer(s, transfer_id, amount, self.ctx())
        )
        if code is not None:
            assert code == expected, (code, expected)
            return
        out = result.transfer
        assert result.created and out.amount == expected, (result, expected)
        assert out.reversal_of == transfer_id
        assert (out.debit_account_id, out.credit_account_id) == (original.credit, original.debit)
        self.model.transfers[out.id] = ModelTransfer(
            out.id, original.credit, original.debit, out.amount, original.reference, reversal=True
        )
        self.transfer_ids.append(out.id)

    @rule(index=st.integers(0, ACCOUNTS_MAX - 1), status=st.sampled_from(["frozen", "active"]))
    def set_status(self, index: int, status: Literal["frozen", "active"]) -> None:
        account = self.model.accounts[self._pick(index)]

        async def work(session: AsyncSession) -> Any:
            return await accounts.patch_account(
                session, account.id, AccountPatch(status=status), account.version, self.ctx()
            )

        out = self.run(work)
        if status != account.status:
            account.status = status
            account.version += 1
        assert (out.status, out.version) == (account.status, account.version)

    @rule(index=st.integers(0, ACCOUNTS_MAX - 1), floor=new_floors)
    def set_floor(self, index: int, floor: int | None) -> None:
        account = self.model.accounts[self._pick(index)]

        async def work(session: AsyncSession) -> Any:
            return await accounts.patch_account(
                session, account.id, AccountPatch(min_balance=floor), account.version, self.ctx()
            )

        code, out = self.attempt(work)
        if floor is not None and account.posted < floor:
            assert code == "min_balance_violated"
            return
        assert code is None
        account.floor = floor
        account.version += 1
        assert (out.min_balance, out.version) == (floor, account.version)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        if not self.order:
            return
        accounts_t = sa.table(
            "accounts",
            sa.column("id"),
            sa.column("posted_debits"),
            sa.column("posted_credits"),
            sa.column("version"),
            sa.column("status"),
        )

        async def read(session: AsyncSession) -> dict[uuid.UUID, tuple[int, int, int, str]]:
            rows = await session.execute(
                sa.select(accounts_t).where(accounts_t.c.id.in_(self.order))
            )
            return {r.id: (r.posted_debits, r.posted_credits, r.version, r.status) for r in rows}

        stored = self.run(read)
        expected = {
            a.id: (a.debits, a.credits, a.version, a.status) for a in self.model.accounts.values()
        }
        assert stored == expected

    @invariant()
    def money_is_conserved_per_currency(self) -> None:
        for currency in ("USD", "EUR"):
            debits = sum(a.debits for a in self.model.accounts.values() if a.currency == currency)
            credits = sum(a.credits for a in self.model.accounts.values() if a.currency == currency)
            assert debits == credits

    def teardown(self) -> None:
        violations = self.run(find_violations)
        assert violations == [], violations


def test_ledger_matches_the_model(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = create_engine(Settings(database_url=db_url), pool_size=2)
    LedgerMachine.loop = loop
    LedgerMachine.engine = engine
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=20,
                derandomize=True,
                database=None,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
