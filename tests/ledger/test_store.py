"""The ledger store (ledger/store.py) on real SQLite files: batches, idempotency, append-only triggers,
verify catching tampering, gap-free seq and balances across restarts, whole-batch rollback."""

import sqlite3
from dataclasses import dataclass

import orjson
import pytest

from syncledger.ledger import (AddAccount, Event, Finance, FinanceRequest, LedgerError, Outcome, Receipt, Store, verify,
                               verify_path)
from syncledger.ledger import reads, rules
from syncledger.ledger.store import GENESIS, SCHEMA_VERSION, finance_hash

U = 1_000_000
NOW = 1_700_000_000
MANAGER = 7


def fin(op, login=None, amount=None, *, now=NOW, manager=None, ext_id=None, new_order=None, **kw):
    return Finance(FinanceRequest(op, login, amount, **kw), now=now, manager=manager, ext_id=ext_id,
                   new_order=new_order)


def one(store, command):
    """Apply a one-command batch and return its Outcome."""
    [outcome] = store.apply_batch([command])
    return outcome


def ok(store, command):
    outcome = one(store, command)
    assert outcome.error is None, outcome.error
    return outcome


def err(outcome):
    assert outcome.error is not None, outcome
    return outcome.error.status, outcome.error.code


def count(db, table):
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def ledger_sums(db):
    """login -> (balance, credit) summed from the finance deltas, independently of the store."""
    sums = {login: [0, 0] for (login,) in db.execute("SELECT login FROM accounts")}
    for login, cmd, delta in db.execute("SELECT login, cmd, delta FROM finance"):
        sums[login][0 if cmd in rules.BALANCE_CMDS else 1] += delta
    return {login: tuple(v) for login, v in sums.items()}


def totals(store):
    return {login: (balance, credit) for login, (_, balance, credit) in store.accounts.items()}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ledger.db")


@pytest.fixture
def store(path):
    s = Store(path)
    yield s
    s.close()


def new_accounts(store, n=2):
    outcomes = store.apply_batch([AddAccount(f"user{i}", "USD", NOW) for i in range(n)])
    return [o.data["login"] for o in outcomes]


# ------------------------------------------------------------------ opening


def test_open_settings(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (store.seq, store.finance_id, store.event_head, store.finance_head) == (0, 0, GENESIS, GENESIS)


def test_newer_schema_is_refused(path):
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


# ------------------------------------------------------------------ batches


def test_failing_command_in_the_middle_of_a_batch(store, path):
    a, b = new_accounts(store)
    outcomes = store.apply_batch([
        fin("BalanceIn", a, 10 * U),
        fin("BalanceOut", a, 11 * U, comment="too much"),  # NO_MONEY: balance is 10
        fin("CreditIn", b, 3 * U),
        fin("BalanceIn", 999_999, U),  # ACCOUNT_NOT_FOUND
        fin("DeleteBalance", order=123_456),  # ORDER_NOT_FOUND
        fin("BalanceOut", a, 4 * U),
    ])
    assert [o.error and (o.error.status, o.error.code) for o in outcomes] == [
        None, (409, "NO_MONEY"), None, (404, "ACCOUNT_NOT_FOUND"), (404, "ORDER_NOT_FOUND"), None]
    for o in outcomes:
        assert (o.data is None and o.events == []) if o.error else (len(o.events) == 1 and o.data)
    # The events of the applied commands are 1, 2, 3: a failure leaves no gap.
    assert [e.seq for o in outcomes for e in o.events] == [1, 2, 3]
    assert [o.data.amount for o in outcomes if o.error is None] == [10 * U, 3 * U, -4 * U]
    # Nothing of the failures was written.
    assert count(store.db, "finance") == count(store.db, "events") == 3
    assert store.db.execute("SELECT COUNT(*) FROM finance WHERE comment = 'too much' OR amount = -11000000"
                            ).fetchone()[0] == 0
    assert totals(store) == ledger_sums(store.db) == {a: (6 * U, 0), b: (0, 3 * U)}
    assert (store.seq, store.finance_id) == (3, 3)
    assert verify_path(path).ok


@dataclass(frozen=True)
class Claims:
    """A command whose handler claims an event it never appended (a bug the phase asserts are there for)."""


def test_a_batch_whose_events_do_not_match_its_rows_is_refused_whole(store, path):
    """The assert between execute and stamp (seq and ids advanced by exactly the batch's events): a handler
    that answers an event it never staged fails the whole batch, and nothing of it is written."""
    [a] = new_accounts(store, 1)
    before = (store.seq, store.finance_id, count(store.db, "finance"))
    store.register(Claims, lambda c: Outcome(events=[Event(store.seq + 1, 0, 1, b"{}")]))
    with pytest.raises(AssertionError, match="seq and ids"):
        store.apply_batch([fin("BalanceIn", a, U), Claims()])
    assert (store.seq, store.finance_id, count(store.db, "finance")) == before
    assert store.apply_batch([fin("BalanceIn", a, U)])[0].error is None  # the next batch goes on
    assert verify_path(path).ok


def test_outcome_events_are_the_committed_events(store):
    [a] = new_accounts(store, 1)
    outcomes = store.apply_batch([fin("BalanceIn", a, U), fin("CreditIn", a, 2 * U)])
    committed = reads.events_after(store.db, 0)
    assert [e for o in outcomes for e in o.events] == committed
    assert [o.data.record for o in outcomes] == [e.data for e in committed]
    assert orjson.loads(committed[1].data)["credit"] == 2.0


def test_update_and_delete_through_the_store(store, path):
    [a] = new_accounts(store, 1)
    created = ok(store, fin("BalanceIn", a, 10 * U, new_order=500, open_time=100)).data
    assert created == Receipt(500, a, rules.OP_BALANCE_IN, 10 * U, rules.EV_RECORD_ADD, created.record)
    updated = ok(store, fin("BalanceIn", a, 4 * U, order=500, now=NOW + 1)).data
    assert (updated.order, updated.amount, updated.type) == (500, 4 * U, rules.EV_RECORD_UPDATE)
    rec = orjson.loads(updated.record)
    assert (rec["version"], rec["balance"], rec["open_time"], rec["close_time"]) == (2, 4.0, 100, NOW + 1)
    ok(store, fin("BalanceOut", a, 3 * U))
    # Lowering the deposit below what was taken out, or deleting it, would make the balance negative.
    assert err(one(store, fin("BalanceIn", a, 2 * U, order=500))) == (409, "NO_MONEY")
    assert err(one(store, fin("DeleteBalance", order=500))) == (409, "NO_MONEY")
    assert err(one(store, fin("DeleteCredit", order=500))) == (404, "ORDER_NOT_FOUND")
    assert err(one(store, fin("CreditIn", a, U, order=500))) == (400, "ORDER_MISMATCH")
    ok(store, fin("BalanceIn", a, 3 * U))
    deleted = ok(store, fin("DeleteBalance", order=500)).data
    assert (deleted.order, deleted.type, deleted.amount) == (500, rules.EV_RECORD_DELETE, 4 * U)
    assert orjson.loads(deleted.record)["state"] == rules.TS_DELETED
    assert err(one(store, fin("DeleteBalance", order=500))) == (409, "ORDER_DELETED")
    assert err(one(store, fin("BalanceIn", a, U, order=500))) == (409, "ORDER_DELETED")
    assert totals(store) == ledger_sums(store.db) == {a: (0, 0)}
    assert [v for (v,) in store.db.execute("SELECT version FROM finance WHERE order_id = 500 ORDER BY id")
            ] == [1, 2, 3]
    assert verify_path(path).ok


def test_update_of_unknown_order_creates_a_new_one(store):
    [a] = new_accounts(store, 1)
    receipt = ok(store, fin("BalanceIn", a, U, order=987_654)).data
    assert receipt.type == rules.EV_RECORD_ADD and receipt.order != 987_654
    assert store.current_version(receipt.order).version == 1
    assert store.current_version(987_654) is None


def test_orders_are_never_reused_across_restarts(path):
    orders = []
    for _ in range(3):
        s = Store(path)
        login = new_accounts(s, 1)[0]
        orders += [o.data.order for o in s.apply_batch([fin("BalanceIn", login, U) for _ in range(3)])]
        s.close()
    assert len(set(orders)) == len(orders) == 9


# ------------------------------------------------------------------ idempotency


@pytest.mark.parametrize("reopen", [False, True])
def test_replay_and_conflict(path, reopen):
    s = Store(path)
    a, b = new_accounts(s)
    keyed = fin("BalanceIn", a, 5 * U, manager=MANAGER, ext_id="dep-1", comment="deposit")
    first = ok(s, keyed)
    assert not first.replay and len(first.events) == 1
    before = (count(s.db, "finance"), count(s.db, "events"), count(s.db, "idempotency"), s.seq, totals(s))
    if reopen:
        s.close()
        s = Store(path)
    try:
        # Same manager, extID and payload (a new `now` is not part of the payload): the original answer.
        again = one(s, fin("BalanceIn", a, 5 * U, manager=MANAGER, ext_id="dep-1", comment="deposit",
                           now=NOW + 99))
        assert again.replay and again.error is None and again.events == []
        assert again.data == first.data and again.data.record == first.data.record
        # Same extID, different payload: a conflict.
        for other in (
            fin("BalanceIn", a, 6 * U, manager=MANAGER, ext_id="dep-1", comment="deposit"),
            fin("BalanceIn", b, 5 * U, manager=MANAGER, ext_id="dep-1", comment="deposit"),
            fin("CreditIn", a, 5 * U, manager=MANAGER, ext_id="dep-1", comment="deposit"),
            fin("BalanceIn", a, 5 * U, manager=MANAGER, ext_id="dep-1", comment="other"),
        ):
            conflict = one(s, other)
            assert err(conflict) == (409, "IDEMPOTENCY_CONFLICT") and conflict.events == []
        # Replays and conflicts inside one batch together with real work.
        outcomes = s.apply_batch([
            fin("BalanceIn", a, 5 * U, manager=MANAGER, ext_id="dep-1", comment="deposit"),
            fin("BalanceIn", a, 9 * U, manager=MANAGER, ext_id="dep-1", comment="deposit"),
        ])
        assert outcomes[0].data == first.data and outcomes[0].replay
        assert err(outcomes[1]) == (409, "IDEMPOTENCY_CONFLICT")
        # Nothing was written by any of that.
        assert (count(s.db, "finance"), count(s.db, "events"), count(s.db, "idempotency"), s.seq, totals(s)) \
            == before
        # The key is per manager: another manager may use the same extID.
        other_manager = ok(s, fin("BalanceIn", a, 5 * U, manager=MANAGER + 1, ext_id="dep-1",
                                  comment="deposit"))
        assert not other_manager.replay and other_manager.data.order != first.data.order
        assert totals(s)[a] == (10 * U, 0)
        # Without a manager there is no key: the same request applies again.
        ok(s, fin("BalanceIn", a, 5 * U, ext_id="dep-1", comment="deposit"))
        assert totals(s)[a] == (15 * U, 0)
    finally:
        s.close()
    # And once more after a restart.
    s = Store(path)
    try:
        assert one(s, keyed).data == first.data
        assert err(one(s, fin("BalanceIn", a, 1, manager=MANAGER, ext_id="dep-1"))) == (409, "IDEMPOTENCY_CONFLICT")
        assert totals(s)[a] == (15 * U, 0)
        assert verify(s.db).ok
    finally:
        s.close()


def test_replay_within_the_same_batch(store):
    [a] = new_accounts(store, 1)
    cmd = fin("CreditIn", a, U, manager=MANAGER, ext_id="x")
    first, second = store.apply_batch([cmd, cmd])
    assert not first.replay and second.replay and second.data == first.data and second.events == []
    assert totals(store)[a] == (0, U)


@pytest.mark.parametrize("reopen", [False, True])
def test_failed_first_attempt_stays_failed(path, reopen):
    s = Store(path)
    [a] = new_accounts(s, 1)
    withdraw = fin("BalanceOut", a, 5 * U, manager=MANAGER, ext_id="wd-1")
    assert err(one(s, withdraw)) == (409, "NO_MONEY")
    ok(s, fin("BalanceIn", a, 100 * U))  # the money arrives
    if reopen:
        s.close()
        s = Store(path)
    try:
        again = one(s, withdraw)
        assert again.replay and err(again) == (409, "NO_MONEY") and again.events == []
        assert totals(s)[a] == (100 * U, 0)
        # A different payload on that extID is still a conflict, not a fresh attempt.
        assert err(one(s, fin("BalanceOut", a, 1 * U, manager=MANAGER, ext_id="wd-1"))) == \
            (409, "IDEMPOTENCY_CONFLICT")
        assert totals(s)[a] == (100 * U, 0)
        # A fresh extID works.
        ok(s, fin("BalanceOut", a, 5 * U, manager=MANAGER, ext_id="wd-2"))
        assert totals(s)[a] == (95 * U, 0)
    finally:
        s.close()


def test_unknown_account_failure_is_remembered_too(store):
    cmd = fin("BalanceIn", 1000, U, manager=MANAGER, ext_id="early")
    assert err(one(store, cmd)) == (404, "ACCOUNT_NOT_FOUND")
    assert new_accounts(store, 1) == [1000]
    again = one(store, cmd)
    assert again.replay and err(again) == (404, "ACCOUNT_NOT_FOUND")
    assert totals(store)[1000] == (0, 0)


# ------------------------------------------------------------------ append-only


def _filled(store):
    [a] = new_accounts(store, 1)
    ok(store, fin("BalanceIn", a, 5 * U, manager=MANAGER, ext_id="k"))
    assert err(one(store, fin("BalanceOut", a, 50 * U, manager=MANAGER, ext_id="k2"))) == (409, "NO_MONEY")
    store.db.execute("INSERT INTO wallet_tx VALUES ('debit', 'tx-1', ?, NULL, 'g-1', 5, '{}', 'OK', NULL, NULL, ?, 'default', NULL, NULL)",
                     (a, NOW))


@pytest.mark.parametrize(
    ("table", "column", "message"),
    [
        ("finance", "amount", "finance rows are append-only"),
        ("events", "type", "events are append-only"),
        ("idempotency", "status", "idempotency keys are append-only"),
        ("wallet_tx", "amount", "wallet transactions are append-only"),
    ],
)
@pytest.mark.parametrize("plain", [False, True], ids=["store-connection", "plain-sqlite3"])
def test_triggers_refuse_update_and_delete(store, path, table, column, message, plain):
    _filled(store)
    db = sqlite3.connect(path) if plain else store.db
    try:
        snapshot = db.execute(f"SELECT * FROM {table}").fetchall()
        assert snapshot
        with pytest.raises(sqlite3.DatabaseError, match=message):
            db.execute(f"UPDATE {table} SET {column} = {column} + 1")
        with pytest.raises(sqlite3.DatabaseError, match=message):
            db.execute(f"DELETE FROM {table}")
        if plain:
            db.rollback()
        assert db.execute(f"SELECT * FROM {table}").fetchall() == snapshot
    finally:
        if plain:
            db.close()


def test_trigger_error_is_an_integrity_error(store):
    _filled(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE finance SET comment = 'x' WHERE id = 1")


# ------------------------------------------------------------------ verify


def _history(path):
    """A small real history: 2 accounts, creates, an update, a delete, a failure, over 2 sessions."""
    s = Store(path)
    a, b = new_accounts(s)
    order = ok(s, fin("BalanceIn", a, 10 * U)).data.order
    s.apply_batch([fin("CreditIn", b, 2 * U), fin("BalanceOut", b, U), fin("BalanceOut", a, 3 * U)])
    s.close()
    s = Store(path)
    ok(s, fin("BalanceIn", a, 12 * U, order=order))
    ok(s, fin("CreditOut", b, U))
    credit = ok(s, fin("CreditIn", a, 4 * U)).data.order
    ok(s, fin("DeleteCredit", order=credit))
    s.close()


def _tamper(path, sql, *drop):
    db = sqlite3.connect(path)
    for trigger in drop:
        db.execute(f"DROP TRIGGER {trigger}")
    cur = db.execute(sql)
    assert cur.rowcount == 1
    db.commit()
    db.close()


def test_verify_passes_on_an_honest_ledger(path):
    _history(path)
    report = verify_path(path)
    assert report.ok and report.problem is None
    assert (report.finance_rows, report.events, report.accounts) == (7, 7, 2)
    assert str(report).startswith("ok: 7 finance rows")


def test_verify_catches_an_edited_finance_amount(path):
    _history(path)
    _tamper(path, "UPDATE finance SET amount = amount + 1 WHERE id = 3", "finance_no_update")
    report = verify_path(path)
    assert not report.ok
    assert report.problem.startswith("finance row 3 ")  # the edited row, not a later one
    assert "hash" in report.problem
    assert str(report).startswith("FAILED: finance row 3 ")


def test_verify_catches_an_edited_event(path):
    _history(path)
    _tamper(path, "UPDATE events SET data = replace(data, '\"profit\":10.0', '\"profit\":100.0') WHERE seq = 1",
            "events_no_update")
    report = verify_path(path)
    assert not report.ok and report.problem.startswith("event seq 1:") and "hash" in report.problem


def test_verify_catches_a_missing_event(path):
    _history(path)
    _tamper(path, "DELETE FROM events WHERE seq = 4", "events_no_delete")
    report = verify_path(path)
    assert not report.ok and report.problem.startswith("event seq 5:") and "gap" in report.problem


def test_verify_catches_a_rehashed_wrong_total(path):
    """Even with a recomputed hash chain, a total that is not the sum of its rows is named."""
    _history(path)
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER finance_no_update")
    db.execute("UPDATE finance SET balance = balance + 1000000 WHERE id = 2")
    prev = GENESIS
    for row in db.execute("SELECT * FROM finance ORDER BY id").fetchall():
        v = rules.Version(*row[1:13])
        h = finance_hash(prev, row[0], v, row[13], row[14], row[15])
        db.execute("UPDATE finance SET hash = ? WHERE id = ?", (h, row[0]))
        prev = h
    db.commit()
    db.close()
    report = verify_path(path)
    assert not report.ok and report.problem.startswith("finance row 2 ") and "sum of its rows" in report.problem


def test_verify_path_with_uri_characters_in_the_name(tmp_path):
    # "#" or "?" must not cut the path short and make verify open (and create) another, empty file.
    path = str(tmp_path / "we#ird?name.db")
    _history(path)
    report = verify_path(path)
    assert report.ok and report.finance_rows == 7
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("we#ird?name.db")) == []


# ------------------------------------------------------------------ restarts


def test_seq_gap_free_and_balances_across_restarts(path):
    expected_seq = 0
    for cycle in range(5):
        s = Store(path)
        try:
            assert s.seq == expected_seq
            assert totals(s) == ledger_sums(s.db)
            a = new_accounts(s, 1)[0]
            logins = sorted(s.accounts)
            outcomes = s.apply_batch(
                [fin("BalanceIn", login, (cycle + 1) * U) for login in logins]
                + [fin("BalanceOut", a, 10**6 * U)]  # fails, leaves no gap
                + [fin("CreditIn", logins[0], U)]
            )
            assert [e.seq for o in outcomes for e in o.events] == list(
                range(expected_seq + 1, expected_seq + len(logins) + 2))
            expected_seq += len(logins) + 1
        finally:
            s.close()
    s = Store(path)
    try:
        seqs = [e.seq for e in reads.events_after(s.db, 0, limit=10_000)]
        assert seqs == list(range(1, expected_seq + 1))
        assert s.seq == expected_seq
        assert [i for (i,) in s.db.execute("SELECT id FROM finance ORDER BY id")] == seqs
        # Balances from the ledger after reopen: account i got cycles i..4 worth (cycle+1) each.
        logins = sorted(s.accounts)
        assert totals(s) == ledger_sums(s.db)
        assert totals(s)[logins[0]] == (15 * U, 5 * U)
        assert totals(s)[logins[4]] == (5 * U, 0)
        assert verify(s.db).ok
    finally:
        s.close()
    assert verify_path(path).ok


# ------------------------------------------------------------------ whole-batch failure


@dataclass(frozen=True)
class Boom:
    pass


def _heads(store):
    return (store.seq, store.finance_id, store.finance_head, store.event_head, dict(store.accounts))


def _rows(db):
    return tuple(count(db, t) for t in ("accounts", "finance", "events", "idempotency"))


def _assert_rolled_back(store, path, heads, rows, reader):
    assert _heads(store) == heads
    assert not store.db.in_transaction
    assert _rows(store.db) == rows
    assert _rows(reader) == rows  # another connection sees nothing either


def _assert_continues(store, path, heads):
    """The next batch continues gap-free from the heads before the failed batch."""
    seq, finance_id = heads[0], heads[1]
    a = min(store.accounts)
    outcomes = store.apply_batch([fin("BalanceIn", a, U), fin("CreditIn", a, U)])
    assert [e.seq for o in outcomes for e in o.events] == [seq + 1, seq + 2]
    assert store.finance_id == finance_id + 2
    assert totals(store) == ledger_sums(store.db)
    assert verify(store.db).ok
    assert verify_path(path).ok


def _doomed_batch(a):
    return [
        AddAccount("late", "EUR", NOW),
        fin("BalanceIn", a, 7 * U),
        fin("BalanceOut", a, 10**6 * U, manager=MANAGER, ext_id="lost-fail"),  # its failure is not kept either
        fin("BalanceIn", a, 8 * U, manager=MANAGER, ext_id="lost"),
        fin("CreditIn", a, 9 * U),
    ]


def test_database_failure_rolls_back_the_whole_batch(store, path):
    a, b = new_accounts(store)
    ok(store, fin("BalanceIn", a, U))
    heads, rows = _heads(store), _rows(store.db)

    def boom(command):
        raise sqlite3.OperationalError("disk I/O error")

    store.register(Boom, boom)
    reader = sqlite3.connect(path)
    try:
        batch = _doomed_batch(a)
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            store.apply_batch(batch[:4] + [Boom()] + batch[4:])
        _assert_rolled_back(store, path, heads, rows, reader)
    finally:
        reader.close()
    # The key of the lost batch was not kept: the extID is free for another payload.
    assert not one(store, fin("CreditIn", a, U, manager=MANAGER, ext_id="lost")).replay
    assert not one(store, fin("CreditIn", a, U, manager=MANAGER, ext_id="lost-fail")).replay
    heads = _heads(store)
    # The auto login the lost AddAccount had taken is handed out again.
    assert new_accounts(store, 1) == [b + 1]
    _assert_continues(store, path, heads)


def test_failed_commit_rolls_back_the_whole_batch(store, path):
    a, _ = new_accounts(store)
    ok(store, fin("BalanceIn", a, U))
    heads, rows = _heads(store), _rows(store.db)

    class FailingCommit:
        def __init__(self, db):
            self._db = db

        def execute(self, sql, *args):
            if sql.strip().upper() == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error (simulated)")
            return self._db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._db, name)

    real = store.db
    store.db = FailingCommit(real)
    reader = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="simulated"):
            store.apply_batch(_doomed_batch(a))
    finally:
        store.db = real
    try:
        _assert_rolled_back(store, path, heads, rows, reader)
    finally:
        reader.close()
    assert not one(store, fin("CreditIn", a, U, manager=MANAGER, ext_id="lost")).replay
    assert not one(store, fin("CreditIn", a, U, manager=MANAGER, ext_id="lost-fail")).replay
    _assert_continues(store, path, _heads(store))
    store.close()
    # And after a restart the ledger is consistent too.
    s = Store(path)
    try:
        assert s.seq == count(s.db, "events") == s.finance_id
        assert totals(s) == ledger_sums(s.db)
    finally:
        s.close()


def test_a_failed_commit_that_may_have_reached_the_disk_is_never_guessed(tmp_path):
    """With WAL, COMMIT can fail (an I/O error) after its frame is written: the store cannot know whether
    the batch is durable, so it raises Unsure (the server fail-stops) instead of believing memory or the
    file; a fresh open reads the truth. (It used to reload memory from the file and go on.)"""
    from syncledger.ledger.store import Unsure
    from syncledger.server.testing.faults import _error

    db = str(tmp_path / "c.db")
    store = Store(db)
    store.apply_batch([AddAccount("a", "EUR", 0)])

    def commit_then_fail() -> None:
        store.db.execute("COMMIT")
        raise _error(sqlite3.SQLITE_IOERR, "COMMIT")
    store._sql_commit = commit_then_fail
    with pytest.raises(Unsure, match="cannot be known"):
        store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 5_000_000), now=1)])
    store.close()
    restarted = Store(db)
    assert restarted.seq == 1 and restarted.accounts[1000][1] == 5_000_000  # what the file holds
    assert verify(restarted.db).ok
    restarted.close()


@dataclass(frozen=True)
class TwoStep:
    """A command that appends a record and then fails, as a multi-step (wallet) handler may."""

    login: int
    error: Exception


def test_command_failing_after_an_append_is_undone(store, path):
    """The SAVEPOINT undoes the rows, and the in-memory heads and totals go back with them."""
    [a] = new_accounts(store, 1)
    ok(store, fin("BalanceIn", a, 5 * U))

    def two_step(c):
        v = rules.apply(FinanceRequest("BalanceIn", c.login, U), store.accounts[c.login][1:], None,
                        store.reserve_order(), NOW)
        store.append(v, NOW, "test", None)
        raise c.error

    store.register(TwoStep, two_step)
    heads = _heads(store)
    outcomes = store.apply_batch([
        TwoStep(a, LedgerError(409, "NO_MONEY", "second step refused")),
        TwoStep(a, sqlite3.IntegrityError("UNIQUE constraint failed")),
        fin("CreditIn", a, U),
    ])
    assert err(outcomes[0]) == (409, "NO_MONEY")
    assert err(outcomes[1]) == (500, "INTERNAL")
    assert [e.seq for e in outcomes[2].events] == [heads[0] + 1]
    assert totals(store) == ledger_sums(store.db) == {a: (5 * U, U)}
    assert count(store.db, "finance") == count(store.db, "events") == 2
    assert verify_path(path).ok


def test_rule_failure_inside_a_batch_is_not_a_crash(store):
    """Only non-LedgerErrors sink a batch; a batch where every command fails still commits cleanly."""
    [a] = new_accounts(store, 1)
    outcomes = store.apply_batch([fin("BalanceOut", a, U), fin("CreditOut", a, U)])
    assert [err(o) for o in outcomes] == [(409, "NO_MONEY")] * 2
    assert store.seq == 0 and count(store.db, "finance") == 0


def test_overflowing_total_fails_one_command_not_the_batch(store):
    a, b = new_accounts(store)
    store.apply_batch([fin("BalanceIn", a, 10**18) for _ in range(9)])
    outcomes = store.apply_batch([fin("BalanceIn", b, U), fin("BalanceIn", a, 10**18), fin("BalanceIn", b, U)])
    assert [o.error and o.error.code for o in outcomes] == [None, "INVALID_DATA", None]
    assert totals(store) == ledger_sums(store.db) == {a: (9 * 10**18, 0), b: (2 * U, 0)}


# ------------------------------------------------------------------ accounts and reads


def test_add_account(store, path):
    o = one(store, AddAccount("alice", "USD", NOW))
    assert o.error is None and o.events == [] and o.data["login"] == 1000
    assert one(store, AddAccount("bob", "EUR", NOW, group="vip")).data["login"] == 1001
    assert one(store, AddAccount("carol", "USD", NOW, login=5000)).data["login"] == 5000
    assert one(store, AddAccount("dave", "USD", NOW)).data["login"] == 5001
    assert err(one(store, AddAccount("again", "USD", NOW, login=1001))) == (409, "ACCOUNT_EXISTS")
    assert reads.account(store.db, 1001)["name"] == "bob"  # unchanged
    assert orjson.loads(orjson.dumps(reads.account(store.db, 1001))) == {
        "login": 1001, "name": "bob", "group": "vip", "currency": "EUR", "created": NOW,
        "leverage": 100, "email": "", "enable": True, "balance": 0.0, "credit": 0.0}
    assert reads.account(store.db, 4242) is None
    store.close()
    s = Store(path)
    try:
        assert sorted(s.accounts) == [1000, 1001, 5000, 5001]
        assert s.accounts[1001] == ("EUR", 0, 0)
        assert one(s, AddAccount("eve", "USD", NOW)).data["login"] == 5002
    finally:
        s.close()


def test_auto_login_starts_at_1000_even_after_a_small_explicit_one(store):
    assert one(store, AddAccount("seven", "USD", NOW, login=7)).data["login"] == 7
    assert one(store, AddAccount("auto", "USD", NOW)).data["login"] == 1000


def test_get_account_shows_totals(store):
    [a] = new_accounts(store, 1)
    store.apply_batch([fin("BalanceIn", a, 1_556_179), fin("CreditIn", a, 300 * U), fin("BalanceOut", a, 1)])
    acc = orjson.loads(orjson.dumps(reads.account(store.db, a)))
    assert (acc["balance"], acc["credit"]) == (1.556178, 300.0)
    assert b'"balance":1.556178,"credit":300.0' in orjson.dumps(reads.account(store.db, a))


def test_get_records_and_record(store):
    a, b = new_accounts(store)
    o1 = ok(store, fin("BalanceIn", a, 5 * U, open_time=100)).data.order
    o2 = ok(store, fin("CreditIn", a, 2 * U, open_time=200, comment="bonus")).data.order
    ok(store, fin("BalanceIn", b, 1 * U, open_time=150))
    o3 = ok(store, fin("BalanceOut", a, 1 * U, open_time=300)).data.order
    ok(store, fin("BalanceIn", a, 6 * U, order=o1))  # version 2 of o1, open_time kept
    ok(store, fin("DeleteCredit", order=o2))

    def records(*args, **kw):
        return [orjson.loads(r) for r in reads.records(store.db, *args, **kw)]

    recs = records(a)
    assert [(r["order"], r["version"], r["state"], r["profit"]) for r in recs] == [
        (o1, 2, rules.TS_CLOSED_NORMAL, 6.0), (o2, 2, rules.TS_DELETED, 2.0), (o3, 1, rules.TS_CLOSED_NORMAL, -1.0)]
    assert all(r["login"] == a for r in recs)
    assert [r["order"] for r in records(a, start=150)] == [o2, o3]
    assert [r["order"] for r in records(a, end=200)] == [o1, o2]
    assert [r["order"] for r in records(a, start=101, end=299)] == [o2]
    assert records(a, limit=1) == recs[:1]
    assert records(4242) == []
    assert reads.record(store.db, o1) == reads.records(store.db, a)[0]
    assert orjson.loads(reads.record(store.db, o2))["state"] == rules.TS_DELETED
    assert reads.record(store.db, 987_654) is None


def test_events_after(store):
    [a] = new_accounts(store, 1)
    order = ok(store, fin("BalanceIn", a, 5 * U)).data.order
    ok(store, fin("BalanceIn", a, 6 * U, order=order))
    ok(store, fin("DeleteBalance", order=order))
    events = reads.events_after(store.db, 0)
    assert [(e.seq, e.type, e.order) for e in events] == [
        (1, rules.EV_RECORD_ADD, order), (2, rules.EV_RECORD_UPDATE, order), (3, rules.EV_RECORD_DELETE, order)]
    assert [orjson.loads(e.data)["version"] for e in events] == [1, 2, 3]
    assert reads.events_after(store.db, 1) == events[1:]
    assert reads.events_after(store.db, 1, limit=1) == events[1:2]
    assert reads.events_after(store.db, 3) == []
    assert isinstance(events[0].data, bytes)


def test_an_unexpected_error_in_one_command_fails_only_that_command(store):
    a, b = new_accounts(store)

    def bug(command):
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    store.register(Boom, bug)
    outcomes = store.apply_batch([fin("BalanceIn", a, U), Boom(), fin("BalanceIn", a, 2 * U)])
    assert [o.error.code if o.error else None for o in outcomes] == [None, "INTERNAL", None]
    assert outcomes[1].error.status == 500 and store.accounts[a][1] == 3 * U
    assert verify(store.db).ok


@pytest.mark.parametrize("table, key", [("idempotency", "ext_id = 'k1'"), ("wallet_tx", "txid = 'bet-1'")])
def test_verify_names_a_record_whose_key_was_deleted(path, table, key):
    """Deleting a key behind the ledger's back would let a retry apply again: verify must see it."""
    from syncledger.ledger.wallet import OpenSession, WalletCall

    store = Store(path)
    store.apply_batch([AddAccount("a", "EUR", 0)])
    store.apply_batch([fin("BalanceIn", 1000, 10 * U, manager=MANAGER, ext_id="k1"),
                       OpenSession(1000, "sid-1", 0, 60)])
    store.apply_batch([WalletCall("debit", 1000, 1, 60, sid="sid-1", currency="EUR", txid="bet-1", amount=U,
                                  payload="p")])
    store.close()
    assert verify_path(path).ok
    raw = sqlite3.connect(path)
    raw.execute(f"DROP TRIGGER {table}_no_delete")
    raw.execute(f"DELETE FROM {table} WHERE {key}")
    raw.commit()
    raw.close()
    report = verify_path(path)
    assert not report.ok and "is missing" in report.problem and report.problem.startswith("finance row")
