"""Property test of the ledger: random batches of finance commands, replays, crashes and restarts, checked
against a small independent model; the ledger's sums, the store's totals and verify() always agree."""

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ledger import AddAccount, Finance, FinanceRequest, Store, verify
from ledger import rules

U = 1_000_000
NOW = 1_700_000_000
KINDS = {"DeleteBalance": rules.BALANCE_CMDS, "DeleteCredit": rules.CREDIT_CMDS}


@dataclass(frozen=True)
class Crash:
    """A command whose handler fails as the database would: the whole batch must roll back."""


def _crash(command):
    raise sqlite3.OperationalError("disk I/O error")


@dataclass
class Order:
    login: int
    cmd: int
    amount: int  # signed
    deleted: bool = False


# One command of a batch, drawn as plain values and resolved against the model when the batch runs.
spec = st.tuples(
    st.sampled_from(["BalanceIn", "CreditIn", "BalanceOut", "CreditOut", "DeleteBalance", "DeleteCredit",
                     "BalanceIn", "CreditIn", "add", "add_explicit", "replay"]),
    st.integers(0, 49),  # picks a login, an order or an earlier request
    st.sampled_from([0, 1, U // 2, U, 3 * U, 10 * U, 25 * U]),
    st.booleans(),  # update an existing order
    st.one_of(st.none(), st.tuples(st.sampled_from([1, 2]), st.sampled_from(["a", "b", "c", "d", "e"]))),
)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ledger-prop-")
        self.path = f"{self.dir}/ledger.db"
        self.store = self._open()
        self.totals: dict[int, list[int]] = {}  # login -> [balance, credit]
        self.orders: dict[int, Order] = {}
        self.keys: dict[tuple[int, str], tuple[str, object]] = {}  # (manager, extID) -> (payload, outcome)
        self.sent: list[Finance] = []  # keyed requests sent so far, for replays
        self.clock = NOW

    def _open(self):
        store = Store(self.path, synchronous="OFF")  # durability is not under test here: keep it fast
        store.register(Crash, _crash)
        return store

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ building commands

    def _resolve(self, kind, idx, amount, update, key):
        self.clock += 1
        logins = sorted(self.totals)
        if kind == "add":
            return AddAccount("auto", "USD", self.clock)
        if kind == "add_explicit":
            return AddAccount("explicit", "EUR", self.clock, login=2000 + idx % 4)
        if kind == "replay":
            if not self.sent:
                return None
            return self.sent[idx % len(self.sent)]
        orders = sorted(self.orders)
        if kind in KINDS:
            order = orders[idx % len(orders)] if orders and idx < 45 else 10**9 + idx
            req = FinanceRequest(kind, order=order)
        else:
            login = logins[idx % len(logins)] if logins and idx < 46 else 999_999
            order = orders[idx % len(orders)] if update and orders else None
            req = FinanceRequest(kind, login, amount, comment=f"c{idx % 3}", order=order)
        manager, ext_id = key if key else (None, None)
        command = Finance(req, now=self.clock, manager=manager, ext_id=ext_id)
        if key:
            self.sent.append(command)
        return command

    # ------------------------------------------------------------------ the model

    def _predict(self, c):
        """(error code or None, effect) of a command on the model, without changing it."""
        if isinstance(c, AddAccount):
            if c.login is None:
                return None, max(max(self.totals, default=999), 999) + 1
            return ("ACCOUNT_EXISTS", None) if c.login in self.totals else (None, c.login)
        req = c.request
        if c.manager is not None and c.ext_id is not None and (c.manager, c.ext_id) in self.keys:
            payload, outcome = self.keys[(c.manager, c.ext_id)]
            return ("replay", outcome) if payload == req.payload() else ("IDEMPOTENCY_CONFLICT", None)
        if req.op in KINDS:
            o = self.orders.get(req.order)
            if o is None or o.cmd not in KINDS[req.op]:
                return "ORDER_NOT_FOUND", None
            if o.deleted:
                return "ORDER_DELETED", None
            return self._move(o.login, o.cmd, -o.amount)
        if req.login not in self.totals:
            return "ACCOUNT_NOT_FOUND", None
        if req.amount == 0:
            return "INVALID_DATA", None
        cmd, sign = rules.OPERATIONS[req.op]
        o = self.orders.get(req.order) if req.order is not None else None
        if o is None:
            return self._move(req.login, cmd, sign * req.amount)
        if o.deleted:
            return "ORDER_DELETED", None
        if (o.login, o.cmd) != (req.login, cmd):
            return "ORDER_MISMATCH", None
        return self._move(req.login, cmd, sign * req.amount - o.amount)

    def _move(self, login, cmd, delta):
        i = 0 if cmd in rules.BALANCE_CMDS else 1
        if self.totals[login][i] + delta < 0:
            return "NO_MONEY", None
        return None, (login, i, delta)

    def _commit(self, c, outcome, effect):
        """Apply a successful command to the model."""
        if isinstance(c, AddAccount):
            assert outcome.data["login"] == effect
            self.totals[effect] = [0, 0]
            return
        login, i, delta = effect
        self.totals[login][i] += delta
        receipt = outcome.data
        req = c.request
        if req.op in KINDS:
            self.orders[req.order].deleted = True
        elif req.order in self.orders:
            self.orders[req.order].amount = receipt.amount
        else:
            assert receipt.order not in self.orders, "an order number was reused"
            self.orders[receipt.order] = Order(login, receipt.cmd, receipt.amount)

    # ------------------------------------------------------------------ rules

    @rule(specs=st.lists(spec, min_size=1, max_size=8))
    def batch(self, specs):
        commands = [c for c in (self._resolve(*s) for s in specs) if c is not None]
        if not commands:
            return
        seq = self.store.seq
        outcomes = self.store.apply_batch(commands)
        assert len(outcomes) == len(commands)
        seqs = []
        for c, outcome in zip(commands, outcomes):
            code, effect = self._predict(c)
            if currently_in_test_context():  # see --hypothesis-show-statistics
                event(f"{type(c).__name__}: {code or 'applied'}")
            keyed = isinstance(c, Finance) and c.manager is not None and c.ext_id is not None
            if code == "replay":
                assert outcome.replay and outcome.events == []
                if isinstance(effect, str):
                    assert outcome.error is not None and outcome.error.code == effect
                else:
                    assert outcome.error is None and outcome.data == effect
                continue
            if code is not None:
                assert outcome.error is not None and outcome.error.code == code, (c, outcome, code)
                assert outcome.events == []
                if keyed and code != "IDEMPOTENCY_CONFLICT":
                    self.keys[(c.manager, c.ext_id)] = (c.request.payload(), code)
                continue
            assert outcome.error is None and not outcome.replay, (c, outcome)
            self._commit(c, outcome, effect)
            if isinstance(c, Finance):
                assert len(outcome.events) == 1 and outcome.events[0].data == outcome.data.record
                seqs.append(outcome.events[0].seq)
                if keyed:
                    self.keys[(c.manager, c.ext_id)] = (c.request.payload(), outcome.data)
        assert seqs == list(range(seq + 1, seq + 1 + len(seqs)))

    @rule(specs=st.lists(spec, max_size=4), where=st.integers(0, 4))
    def crashing_batch(self, specs, where):
        """A batch that dies half-way changes nothing, on disk or in memory."""
        commands = [c for c in (self._resolve(*s) for s in specs) if c is not None]
        commands.insert(where % (len(commands) + 1), Crash())
        before = (self.store.seq, self.store.finance_id, self.store.finance_head, dict(self.store.accounts))
        try:
            self.store.apply_batch(commands)
        except sqlite3.OperationalError:
            pass
        else:
            raise AssertionError("the crash did not propagate")
        assert (self.store.seq, self.store.finance_id, self.store.finance_head, dict(self.store.accounts)) == before
        # Keyed requests of the lost batch stay in self.sent: sent again, they are fresh attempts.

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self._open()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_agrees(self):
        db = self.store.db
        sums = {login: [0, 0] for (login,) in db.execute("SELECT login FROM accounts")}
        for login, cmd, delta in db.execute("SELECT login, cmd, delta FROM finance"):
            sums[login][0 if cmd in rules.BALANCE_CMDS else 1] += delta
        cached = {login: [balance, credit] for login, (_, balance, credit) in self.store.accounts.items()}
        assert sums == cached == self.totals
        assert all(v >= 0 for pair in sums.values() for v in pair)
        events = db.execute("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events").fetchone()
        assert events == (self.store.seq, self.store.seq)
        report = verify(db)
        assert report.ok, report.problem

    @invariant()
    def no_write_outside_the_store(self):
        assert not self.store.db.in_transaction


LedgerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedger = LedgerMachine.TestCase


def test_the_model_would_notice_a_wrong_total(tmp_path):
    """The machine's invariant is not vacuous: a ledger whose cached total drifts fails it."""
    m = LedgerMachine()
    try:
        m.batch([("add", 0, 0, False, None)])
        m.batch([("BalanceIn", 0, 3 * U, False, None)])
        assert list(m.totals.values()) == [[3 * U, 0]]
        m.ledger_agrees()
        login = next(iter(m.store.accounts))
        currency, balance, credit = m.store.accounts[login]
        m.store.accounts[login] = (currency, balance + 1, credit)
        try:
            m.ledger_agrees()
        except AssertionError:
            pass
        else:
            raise AssertionError("a drifted total went unnoticed")
    finally:
        m.teardown()


def test_sqlite_is_new_enough_for_the_schema():
    # WITHOUT ROWID tables and RAISE() in triggers: SQLite >= 3.8.2.
    assert sqlite3.sqlite_version_info >= (3, 8, 2)
