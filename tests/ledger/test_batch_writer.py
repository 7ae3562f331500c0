"""The batch-oriented Store.apply_batch (ledger/store.py: one idempotency lookup per batch, rows staged and
written with executemany) against what came before it: the same random batches (finance commands, repeated
extIDs inside a batch and across batches, refusals, AddAccount, wallet calls, a row that cannot be written,
a command failing after it wrote, a batch that crashes) give the same rows in every table, the same hashes,
the same answers and the same in-memory state as

* the previous implementation (a statement per row, a lookup per key), ledger/store.py as of PREVIOUS, read
  from git (skipped where the history is not there);
* the same commands applied one per batch, so that nothing is ever staged across commands (no git needed).
"""

import dataclasses
import random
import sqlite3
import subprocess
import sys
import types

import orjson
import pytest

from syncledger.ledger import Store, rules, verify
from syncledger.ledger import store as new_store
from syncledger.ledger.rules import FinanceRequest, LedgerError
from syncledger.ledger.wallet import OpenSession, WalletCall
from tests.conftest import ROOT

PREVIOUS = "e727c69"  # the last commit with the statement-per-row store
U = 1_000_000
NOW = 1_700_000_000
TABLES = ("accounts", "finance", "events", "idempotency", "wallet_tx", "wallet_rounds", "game_sessions", "meta")


def _previous_module() -> types.ModuleType:
    name = "syncledger.ledger._previous_store"
    if name in sys.modules:
        return sys.modules[name]
    try:
        source = subprocess.run(["git", "show", f"{PREVIOUS}:ledger/store.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"ledger/store.py at {PREVIOUS} is not in this checkout's history")
    # Today's trade record names a wallet move's provider (schema 8): the previous store writes records as today's
    # rules make them, so that what is compared is the batch engine alone.
    source = source.replace("rules.record_json(v)", "rules.record_json(v, rules.provider_of(source))")
    module = types.ModuleType(name)
    module.__package__ = "syncledger.ledger"  # its relative imports: today's rules, reads, wallet, migrations
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{PREVIOUS}:ledger/store.py", "exec"), module.__dict__)
    return module


@dataclasses.dataclass(frozen=True)
class Crash:
    """The database fails under this command: the whole batch rolls back."""


@dataclasses.dataclass(frozen=True)
class TwoStep:
    """Appends a record, then is refused: only a savepoint can undo it."""

    login: int


def _open(module: types.ModuleType, path: str) -> Store:
    store = module.Store(path, synchronous="OFF")

    def crash(c):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    def two_step(c):
        v = rules.apply(FinanceRequest("BalanceIn", c.login, U), store.accounts[c.login][1:], None,
                        store.reserve_order(), NOW)
        store.append(v, NOW, "two-step", None)
        raise LedgerError(409, "NO_MONEY", "second step refused")

    store.register(Crash, crash)
    store.register(TwoStep, two_step)
    return store


def _command(module: types.ModuleType, spec: tuple):
    """A spec as a command of ``module``'s classes (wallet commands and the test's own are shared)."""
    kind, *args = spec
    if kind == "fin":
        request, kw = args
        return module.Finance(FinanceRequest(**request), **kw)
    if kind == "add":
        return module.AddAccount(**args[0])
    return args[0]


def _generator(seed: int, *, hard: bool):
    """Batches of specs, drawn against the state of ``store`` (the one under test) before each batch. ``hard``
    adds what only a whole batch can show: a crash, a command failing after it wrote, and rows that cannot
    be written (an order number already taken, a time beyond SQLite's INTEGER)."""
    rng = random.Random(seed)
    clock = iter(range(NOW, NOW + 10**6))
    fresh_orders = iter(range(7_000_000, 8_000_000))
    sent: list[tuple] = []  # keyed specs, to send again
    ext_ids = [f"x{i}" for i in range(4)]  # used so far: mostly a new one, sometimes a recent one again

    def batch(store) -> list[tuple]:
        logins = sorted(store.accounts) or [1000]
        orders = [o for (o,) in store.db.execute("SELECT DISTINCT order_id FROM finance ORDER BY 1")]
        named: list[int] = []  # orders this batch may create, for its later commands
        specs = []
        for _ in range(rng.randint(1, 14)):
            now = next(clock)
            login = rng.choice(logins + [999_999] if rng.random() < 0.05 else logins)
            roll = rng.random()
            key = {}
            if rng.random() < 0.6:
                if rng.random() < 0.8:
                    ext_ids.append(f"x{len(ext_ids)}")
                key = {"manager": rng.choice((1, 2)), "ext_id": rng.choice(ext_ids[-6:])}
            if roll < 0.06:
                specs.append(("add", {"name": f"n{now}", "currency": rng.choice(("EUR", "USD")), "now": now,
                                      "login": rng.choice((None, None, 1000, 1003, 2000 + now % 3)),
                                      "enable": rng.random() > 0.15, **key}))
            elif roll < 0.18 and sent:
                again = rng.choice(sent)  # the same request again, or the same key for something else
                if rng.random() < 0.3 and again[0] == "fin":
                    request = {**again[1], "amount": (again[1].get("amount") or 0) + 1}
                    again = ("fin", request, again[2])
                specs.append(again)
            elif roll < 0.28:  # debit dN in round g(N % 4), ref r(N % 4); credits name a ref or a debit
                login = rng.choice((1000, 1001, 1002)) if rng.random() < 0.9 else login
                currency = store.accounts.get(login, ("EUR",))[0]
                action = rng.choice(("debit", "debit", "credit", "cancel", "balance"))
                n, k = rng.randint(0, 11), rng.randint(0, 3)
                txid = f"{'c' if action == 'credit' else 'd'}{n}"
                ref = f"r{k}" if action == "credit" and rng.random() < 0.7 else f"r{n % 4}"
                game = f"g{k if action == 'credit' else n % 4}"
                amount = rng.choice((U, 2 * U, 30 * U)) if action == "debit" else rng.choice((0, U, 5 * U))
                payload = orjson.dumps([action, login, currency, game, txid, ref, amount]).decode()
                specs.append(("wallet", WalletCall(action, login, now, 3600, sid=f"sid-{login}", currency=currency,
                                                   txid=txid, ref_id=ref, game_id=game, amount=amount,
                                                   payload=payload)))
            elif roll < 0.33:
                specs.append(("wallet", OpenSession(login, f"sid-{login}", now, 3600)))  # again: refused
            elif hard and roll < 0.345:
                specs.append(("test", rng.choice((Crash(), TwoStep(login)))))
            else:
                op = rng.choice(("BalanceIn", "BalanceIn", "CreditIn", "BalanceOut", "CreditOut", "DeleteBalance",
                                 "DeleteCredit"))
                pool = orders + named
                order = rng.choice(pool) if pool and rng.random() < (0.9 if op.startswith("Delete") else 0.3) \
                    else (None if not op.startswith("Delete") else 123_456_789)
                if op.startswith("Delete"):
                    request = {"op": op, "order": order}
                    new_order = None
                else:
                    request = {"op": op, "login": login, "amount": rng.choice((0, 1, U // 2, U, 3 * U, 10 * U)),
                               "comment": f"c{now % 3}", "order": order}
                    new_order = next(fresh_orders) if rng.random() < 0.4 else None
                    if hard and orders and rng.random() < 0.03:
                        new_order = rng.choice(orders)  # taken: its row cannot be written
                    if hard and rng.random() < 0.01:
                        request["open_time"] = 2**63 + 1  # beyond SQLite's INTEGER
                    if new_order is not None:
                        named.append(new_order)
                spec = ("fin", request, {"now": now, "new_order": new_order, **key})
                specs.append(spec)
                if key:
                    sent.append(spec)
        return specs

    return batch


def _outcome(o) -> tuple:
    data = o.data
    if dataclasses.is_dataclass(data):
        data = dataclasses.astuple(data)
    elif isinstance(data, dict):
        data = orjson.dumps(data)
    error = o.error and (o.error.status, o.error.code, o.error.message)
    return error, data, [dataclasses.astuple(e) for e in o.events], o.replay


def _kinds(got: list[tuple] | str) -> set[str]:
    """What a batch's answers were: error codes, "replay", "applied", or "crash" (the batch failed)."""
    if not isinstance(got, list):
        return {"crash"}
    return {o[0][1] if o[0] else ("replay" if o[3] else "applied") for o in got}


def _run(store, commands) -> list[tuple] | str:
    try:
        return [_outcome(o) for o in store.apply_batch(commands)]
    except sqlite3.OperationalError as e:
        return f"batch failed: {e}"


def _state(store, *, meta: bool = True) -> dict:
    state = {t: store.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES if meta or t != "meta"}
    state["memory"] = (dict(store.accounts), set(store.disabled), store.seq, store.event_head, store.finance_id,
                       store.finance_head, store.reserve_order())
    if meta:
        state["memory"] += (store.batch_no,)
    return state


def _setup(store_module, path):
    store = _open(store_module, path)
    store.apply_batch([store_module.AddAccount(f"a{i}", ("EUR", "USD")[i % 2], NOW) for i in range(4)])
    store.apply_batch([OpenSession(login, f"sid-{login}", NOW, 3600) for login in (1000, 1001, 1002)])
    store.apply_batch([store_module.Finance(FinanceRequest("BalanceIn", login, 60 * U), NOW) for login in range(1000, 1004)])
    return store


@pytest.mark.parametrize("seed", range(6))
def test_same_rows_hashes_and_answers_as_the_previous_store(tmp_path, seed):
    previous = _previous_module()
    new, old = _setup(new_store, str(tmp_path / "new.db")), _setup(previous, str(tmp_path / "old.db"))
    batch = _generator(seed, hard=True)
    seen = set()
    try:
        for n in range(70):
            specs = batch(new)
            got = _run(new, [_command(new_store, s) for s in specs])
            want = _run(old, [_command(previous, s) for s in specs])
            assert got == want, f"batch {n}: {specs}"
            assert _state(new) == _state(old), f"batch {n}: {specs}"
            seen |= _kinds(got)
        assert verify(new.db).ok
        # The batches did reach what they are meant to: replays, conflicts, refusals and the rare paths.
        assert {"applied", "replay", "IDEMPOTENCY_CONFLICT", "NO_MONEY", "ORDER_NOT_FOUND", "INTERNAL",
                "ACCOUNT_EXISTS"} <= seen, seen
        assert new.seq > 60 and new.db.execute("SELECT COUNT(*) FROM finance WHERE source LIKE 'wallet:%'").fetchone()[0]
    finally:
        new.close()
        old.close()


@pytest.mark.parametrize("seed", range(4))
def test_one_batch_equals_its_commands_one_by_one(tmp_path, seed):
    """Staging across commands changes nothing: a batch leaves what its commands applied one at a time leave."""
    batched, single = _setup(new_store, str(tmp_path / "batched.db")), _setup(new_store, str(tmp_path / "single.db"))
    batch = _generator(100 + seed, hard=False)
    try:
        for n in range(70):
            specs = batch(batched)
            commands = [_command(new_store, s) for s in specs]
            got = _run(batched, commands)
            want = [o for c in commands for o in _run(single, [c])]
            assert got == want, f"batch {n}: {specs}"
            assert _state(batched, meta=False) == _state(single, meta=False), f"batch {n}: {specs}"
        assert verify(batched.db).ok and batched.seq > 60
    finally:
        batched.close()
        single.close()


def test_the_idempotency_prefetch_uses_the_primary_key(tmp_path):
    """One query per manager for the whole batch, by (manager, ext_id): never a scan of the key table."""
    store = Store(str(tmp_path / "l.db"), synchronous="OFF")
    try:
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        store.apply_batch([new_store.AddAccount("a", "EUR", NOW)] + [
            new_store.Finance(FinanceRequest("BalanceIn", 1000, U), NOW, manager=m, ext_id=f"k{i}")
            for m in (1, 2) for i in range(40)])
        store.db.set_trace_callback(None)
        lookups = [s for s in statements if "FROM idempotency" in s]
        assert len(lookups) == 2, lookups
        plan = store.db.execute("EXPLAIN QUERY PLAN " + lookups[0]).fetchall()
        assert "USING PRIMARY KEY" in plan[0][3], plan
        writes = [s for s in statements if s.startswith("INSERT INTO")]
        assert store.seq == 80 and len(writes) <= 3 * 80 + 1  # executemany: traced once per row
    finally:
        store.close()
