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

import orjson

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, verify
from syncledger.ledger import rules

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


# ---------------------------------------------------------------------------------------- wallet rounds

from syncledger.ledger import wallet as W  # noqa: E402

ROUNDS = 3  # games g0.. with shared refIds r0..; debits d0.., credits c0..
WALLET_LOGIN, OTHER_LOGIN = 1000, 1001


@dataclass
class Debit:
    login: int
    ref: str | None
    game: str
    amount: int
    status: str
    payload: str
    at: int = 0  # when it was accepted (model time)
    live: bool = False


# One wallet call, drawn as plain values: action, id number, round, how a credit names its debit (the
# round's shared refId, a debit's id, or a refId of another round), amount (None: the id's own, so that
# retries repeat it), the account, and whether the id is taken from the other kind's pool.
call_spec = st.tuples(
    st.sampled_from(["debit", "debit", "credit", "credit", "cancel"]),
    st.integers(0, 3), st.integers(0, ROUNDS - 1), st.sampled_from(["shared", "shared", "by-id", "odd"]),
    st.sampled_from([None, None, None, 0, 70 * U]),
    st.sampled_from([WALLET_LOGIN] * 5 + [OTHER_LOGIN]),
    st.sampled_from([False] * 9 + [True]),
)


class WalletRoundsMachine(RuleBasedStateMachine):
    """Random interleavings of debits, credits, cancels, retries and manager deletes across a few rounds of
    two accounts, against an independent model of CONTRACT.md section 3."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="wallet-prop-")
        self.path = f"{self.dir}/ledger.db"
        self.store = Store(self.path, synchronous="OFF")
        self.clock = NOW
        self.store.apply_batch([AddAccount("p", "EUR", NOW, login=WALLET_LOGIN),
                                AddAccount("q", "EUR", NOW, login=OTHER_LOGIN)])
        self.store.apply_batch([Finance(FinanceRequest("BalanceIn", WALLET_LOGIN, 100 * U), NOW),
                                Finance(FinanceRequest("BalanceIn", OTHER_LOGIN, 100 * U), NOW)])
        self.store.apply_batch([W.OpenSession(login, f"sid-{login}", NOW, 10**9)
                                for login in (WALLET_LOGIN, OTHER_LOGIN)])
        self.balance = {WALLET_LOGIN: 100 * U, OTHER_LOGIN: 100 * U}
        self.time = 0
        self.debits: dict[str, Debit] = {}
        self.settles: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, id) -> (payload, status)
        self.tombstones: set[tuple[int, str]] = set()  # (login, id)
        self.closed: dict[tuple[int, str], int] = {}  # round -> when its credit was accepted
        self.orders: dict[str, int] = {}  # debit id -> its order
        self.moved: dict[tuple[str, str], int] = {}  # (kind, id) -> how many times it moved money

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _call(self, action, n, k, form, amount, login, cross):
        self.clock += 1
        own, other = ("d", "c") if action != "credit" else ("c", "d")
        txid = f"{other if cross else own}{n}"
        ref = {"shared": f"r{k}", "by-id": f"d{n}", "odd": f"r{(k + 1) % ROUNDS}"}[form]
        if action == "debit":
            ref = f"r{k}"
        elif action == "cancel":
            ref = None
        if amount is None:
            amount = (n + 1) * U
        if action == "debit":
            amount = amount or U  # a debit of 0 is refused before it reaches the ledger
        elif action == "cancel":
            amount = None
        payload = orjson.dumps([action, login, "EUR", f"g{k}", "slots", txid, ref, amount]).decode()
        return W.WalletCall(action, login, self.clock, 10**9, sid=f"sid-{login}", currency="EUR", txid=txid,
                            ref_id=ref, game_id=f"g{k}", amount=amount or 0, payload=payload)

    # ---- the model: (status, retransmission, what to do if the ledger agrees)

    def predict(self, c):
        if c.action == "debit":
            return self._debit(c)
        if c.action == "credit":
            return self._credit(c)
        return self._cancel(c)

    def _repeat(self, payload, status, ok):
        return ("INVALID_PARAMETER", False, None) if payload != status[0] else \
            (ok if status[1] == "OK" else status[1], True, None)

    def _debit(self, c):
        seen = self.debits.get(c.txid)
        if seen is not None:
            return self._repeat(c.payload, (seen.payload, seen.status), "BET_ALREADY_EXIST")
        if ("credit", c.txid) in self.settles:
            return "INVALID_PARAMETER", False, None

        def record(status):
            def do():
                d = Debit(c.login, c.ref_id, c.game_id, c.amount, status, c.payload)
                if status == "OK":
                    self.time += 1
                    d.at, d.live = self.time, True
                    self.balance[c.login] -= c.amount
                    self._moved("debit", c.txid)
                self.debits[c.txid] = d
            return do
        if (c.login, c.txid) in self.tombstones or (c.login, c.ref_id) in self.tombstones:
            return "FINAL_ERROR_ACTION_FAILED", False, record("FINAL_ERROR_ACTION_FAILED")
        if c.amount > self.balance[c.login]:
            return "INSUFFICIENT_FUNDS", False, record("INSUFFICIENT_FUNDS")
        return "OK", False, record("OK")

    def _settle_record(self, c, status, tombstone=None, then=None):
        def do():
            self.settles[(c.action, c.txid)] = (c.payload, status)
            if tombstone is not None:
                self.tombstones.add((c.login, tombstone))
            if then is not None:
                then()
        return do

    def _credit(self, c):
        if (seen := self.settles.get(("credit", c.txid))) is not None:
            return self._repeat(c.payload, seen, "BET_ALREADY_SETTLED")
        if c.txid in self.debits:
            return "INVALID_PARAMETER", False, None
        named = [d for i, d in self.debits.items() if d.status == "OK" and d.login == c.login
                 and (i == c.ref_id or d.ref == c.ref_id) and d.game == c.game_id]
        if not named:  # remembered, in a settled round too: a debit that comes later with its id is refused
            status = "BET_ALREADY_SETTLED" if (c.login, c.game_id) in self.closed else "BET_DOES_NOT_EXIST"
            return status, False, self._settle_record(c, status, tombstone=c.ref_id)
        if all(self._settled(d) for d in named):  # (a debit taken after its round's credit is not: a late one)
            return "BET_ALREADY_SETTLED", False, self._settle_record(c, "BET_ALREADY_SETTLED")

        def pay():
            self.time += 1
            self.closed[(c.login, c.game_id)] = self.time
            self.balance[c.login] += c.amount
            self._moved("credit", c.txid)
        return "OK", False, self._settle_record(c, "OK", then=pay)

    def _cancel(self, c):
        if (seen := self.settles.get(("cancel", c.txid))) is not None:
            return self._repeat(c.payload, seen, "BET_ALREADY_SETTLED")
        d = self.debits.get(c.txid)
        if d is None or d.status != "OK" or d.game != c.game_id or d.login != c.login:
            return "BET_DOES_NOT_EXIST", False, self._settle_record(c, "BET_DOES_NOT_EXIST", tombstone=c.txid)
        if self._settled(d):
            return "BET_ALREADY_SETTLED", False, self._settle_record(c, "BET_ALREADY_SETTLED")

        def refund():
            d.live = False
            self.balance[c.login] += d.amount
            self._moved("cancel", c.txid)
        return "OK", False, self._settle_record(c, "OK", then=refund)

    def _settled(self, d):
        """Cancelled, deleted, or settled by a credit of its round accepted after it was taken."""
        return not d.live or self.closed.get((d.login, d.game), 0) > d.at

    def _moved(self, kind, txid):
        self.moved[(kind, txid)] = self.moved.get((kind, txid), 0) + 1

    # ---- rules

    @rule(specs=st.lists(call_spec, min_size=1, max_size=4), retry=st.booleans())
    def calls(self, specs, retry):
        """A batch of calls (each maybe followed by its exact retry in the same batch)."""
        commands = []
        for s in specs:
            c = self._call(*s)
            commands += [c, c] if retry else [c]
        outcomes = self.store.apply_batch(commands)
        for c, outcome in zip(commands, outcomes):
            status, retransmission, do = self.predict(c)
            if currently_in_test_context():
                event(f"{c.action}: {status}{' (retry)' if retransmission else ''}")
            assert outcome.error is None, (c, outcome)
            r = outcome.data
            assert (r.status, r.retransmission) == (status, retransmission), (c, r)
            assert len(outcome.events) == (1 if status == "OK" and not retransmission else 0)
            if outcome.events and c.action == "debit":
                self.orders[c.txid] = outcome.events[0].order
            if do is not None:
                do()
            assert (r.balance, r.bonus) == (self.balance[c.login], 0)

    @rule(pick=st.sampled_from([f"d{n}" for n in range(4)]))
    def manager_deletes_a_debit(self, pick):
        """The back office reverses a bet: its round counts it as settled."""
        d = self.debits.get(pick)
        if d is None or d.status != "OK":
            return
        (outcome,) = self.store.apply_batch([Finance(FinanceRequest("DeleteBalance", order=self.orders[pick]),
                                                     self.clock)])
        if d.live:
            assert outcome.error is None
            d.live = False
            self.balance[d.login] += d.amount
        else:
            assert outcome.error is not None and outcome.error.code == "ORDER_DELETED"

    @rule()
    def reopen(self):
        self.store.close()
        self.store = Store(self.path, synchronous="OFF")

    @invariant()
    def balances_equal_the_ledger(self):
        db = self.store.db
        sums = dict(db.execute("SELECT login, SUM(delta) FROM finance WHERE cmd IN (6, 8) GROUP BY login"))
        assert sums == self.balance == {login: b for login, (_, b, _) in self.store.accounts.items()}
        assert all(n == 1 for n in self.moved.values()), "a transaction moved money twice"
        report = verify(db)
        assert report.ok, report.problem


WalletRoundsMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
TestWalletRounds = WalletRoundsMachine.TestCase
