"""verify beside a live server (one snapshot), its schema checks (append-only triggers, accounts that rows and keys
name), order chains and keys after a re-hashed forgery, and truncation caught only with an anchor (head, CLI)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, head, head_path, rules, verify, verify_path
from syncledger.ledger.store import GENESIS, event_hash, finance_hash
from syncledger.ledger.wallet import OpenSession, WalletCall
from syncledger.server.cli import main

U = 1_000_000
NOW = 1_700_000_000
MANAGER = 7
TRIGGERS = ["accounts_no_delete", "accounts_fixed", "finance_no_update", "finance_no_delete", "events_no_update",
            "events_no_delete", "idempotency_no_update", "idempotency_no_delete", "wallet_tx_no_update",
            "wallet_tx_no_delete"]


def fin(op, login=None, amount=None, *, now=NOW, manager=None, ext_id=None, **kw):
    return Finance(FinanceRequest(op, login, amount, **kw), now=now, manager=manager, ext_id=ext_id)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ledger.db")


def history(path: str) -> tuple[int, int]:
    """A small real ledger: 2 accounts, keyed and plain finance, an update and a delete, a wallet round.
    Returns the two logins."""
    store = Store(path)
    try:
        a, b = (o.data["login"] for o in store.apply_batch([AddAccount("a", "EUR", NOW), AddAccount("b", "EUR", NOW)]))
        order = store.apply_batch([fin("BalanceIn", a, 10 * U, manager=MANAGER, ext_id="k1")])[0].data.order
        store.apply_batch([fin("CreditIn", b, 2 * U), fin("BalanceIn", a, 12 * U, order=order),
                           OpenSession(a, "sid-a", NOW, 60)])
        credit = store.apply_batch([fin("CreditIn", a, 4 * U, manager=MANAGER, ext_id="k2")])[0].data.order
        store.apply_batch([fin("DeleteCredit", order=credit)])
        store.apply_batch([WalletCall("debit", a, NOW, 60, sid="sid-a", currency="EUR", txid="D1", ref_id="R1",
                                      game_id="g1", amount=U, payload="d")])
        store.apply_batch([WalletCall("credit", a, NOW, 60, sid="sid-a", currency="EUR", txid="C1", ref_id="R1",
                                      game_id="g1", amount=3 * U, payload="c")])
        store.apply_batch([fin("BalanceIn", b, 5 * U), fin("CreditIn", a, U)])
        assert store.seq == 9
    finally:
        store.close()
    return a, b


def raw(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def drop(db: sqlite3.Connection, *names: str) -> list[str]:
    """Drop triggers; returns their exact SQL, to create them again as they were."""
    sql = []
    for name in names:
        (text,) = db.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)).fetchone()
        db.execute(f"DROP TRIGGER {name}")
        sql.append(text)
    return sql


def restore(db: sqlite3.Connection, sql: list[str]) -> None:
    for text in sql:
        db.execute(text)


def rehash(db: sqlite3.Connection) -> None:
    """What a careful forger does after editing rows: recompute every event's data from its record and both
    hash chains, so that each row and event is consistent with its neighbours."""
    prev = GENESIS
    versions = {}
    for row in db.execute("SELECT * FROM finance ORDER BY id").fetchall():
        v = rules.Version(*row[1:13])
        versions[row[0]] = v
        prev = finance_hash(prev, row[0], v, row[13], row[14], row[15])
        if prev != row[16]:
            db.execute("UPDATE finance SET hash = ? WHERE id = ?", (prev, row[0]))
    prev = GENESIS
    for seq, type_, record_id, old_data, old in db.execute("SELECT * FROM events ORDER BY seq").fetchall():
        data = rules.record_json(versions[record_id])
        prev = event_hash(prev, seq, type_, record_id, data)
        if (data.decode(), prev) != (old_data, old):
            db.execute("UPDATE events SET data = ?, hash = ? WHERE seq = ?", (data.decode(), prev, seq))


def forge(path: str, *statements: str) -> None:
    """Run ``statements`` with the finance and events triggers dropped, re-hash, and put the triggers back."""
    db = raw(path)
    try:
        db.execute("BEGIN")
        saved = drop(db, "finance_no_update", "events_no_update")
        for statement in statements:
            db.execute(statement)
        rehash(db)
        restore(db, saved)
        db.execute("COMMIT")
    finally:
        db.close()


def test_history_verifies(path):
    history(path)
    report = verify_path(path)
    assert report.ok, report
    assert (report.finance_rows, report.events, report.accounts) == (9, 9, 2)
    assert report.head == head_path(path) and str(report).endswith(f", head {report.head}")


# ------------------------------------------------------------------ one snapshot


def test_verify_beside_a_live_writer_reports_no_false_problem(path):
    """verify reads one snapshot: a writer committing batches (new accounts, keyed and plain finance, updates)
    meanwhile never makes it see half a batch. Before, each query read its own snapshot and this failed on
    (nearly) every run: a finance row without its event, a row of an account created after accounts were read."""
    store = Store(path, synchronous="OFF")
    logins = [o.data["login"] for o in store.apply_batch([AddAccount(f"u{i}", "USD", NOW) for i in range(20)])]
    for k in range(20):  # enough rows for each verify to take a while
        store.apply_batch([fin("BalanceIn", logins[i % 20], U + i, manager=MANAGER if i % 3 == 0 else None,
                               ext_id=f"pre-{k}-{i}" if i % 3 == 0 else None) for i in range(100)])
    stop, failures, batches = threading.Event(), [], [0]

    def write():
        try:
            n = 0
            while not stop.is_set():
                n += 1
                [created] = store.apply_batch([AddAccount(f"live{n}", "USD", NOW)])
                login = created.data["login"]
                outcomes = store.apply_batch(
                    [fin("BalanceIn", login, U), fin("CreditIn", logins[n % 20], U, manager=MANAGER,
                                                     ext_id=f"live-{n}")]
                    + [fin("BalanceIn", logins[i], U) for i in range(5)])
                store.apply_batch([fin("BalanceIn", login, 2 * U, order=outcomes[0].data.order)])
                batches[0] += 3
                time.sleep(0.002)  # a busy server, not a flood: the ledger should not outgrow the test
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    writer = threading.Thread(target=write)
    reader = sqlite3.connect(path)  # a plain connection (Python's default transaction handling)
    reports, moved = [], 0
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while (len(reports) < 12 or moved < 8) and time.monotonic() < deadline:
            before = batches[0]
            reports.append(verify_path(path) if len(reports) % 2 else verify(reader))
            moved += batches[0] != before  # the writer committed while this run read
            assert not reader.in_transaction  # verify's transaction is rolled back
    finally:
        stop.set()
        writer.join()
        reader.close()
    assert not failures, failures
    assert moved >= 8, "the writer must commit while verify reads, or this test shows nothing"
    assert [str(r) for r in reports if not r.ok] == []
    assert verify(store.db).ok
    store.close()


def test_verify_on_the_writers_connection_between_batches(path):
    """As the server and the toolkit call it: verify(store.db) on the writer's autocommit connection."""
    store = Store(path)
    try:
        [login] = [o.data["login"] for o in store.apply_batch([AddAccount("a", "USD", NOW)])]
        for i in range(3):
            store.apply_batch([fin("BalanceIn", login, U), fin("CreditIn", login, U, manager=MANAGER,
                                                               ext_id=f"k{i}")])
            report = verify(store.db)
            assert report.ok and report.events == store.seq and not store.db.in_transaction
            assert report.head == f"{store.seq}:{store.event_head}" == head(store.db)
        # Inside a transaction the caller opened, verify reads it and leaves it open.
        store.db.execute("BEGIN")
        assert verify(store.db).ok and store.db.in_transaction
        store.db.execute("ROLLBACK")
        assert store.apply_batch([fin("BalanceIn", login, U)])[0].events[0].seq == 7
    finally:
        store.close()


# ------------------------------------------------------------------ speed (the million-row figure is in bench/)


def test_verify_of_thousands_of_keyed_rows_is_not_quadratic(path):
    """Key coverage used correlated NOT EXISTS over unindexed columns: O(n²), minutes on a big ledger."""
    store = Store(path, synchronous="OFF")
    try:
        logins = [o.data["login"] for o in store.apply_batch([AddAccount(f"u{i}", "USD", NOW) for i in range(10)])]
        store.apply_batch([OpenSession(login, f"sid-{login}", NOW, 10**6) for login in logins])
        for k in range(8):
            store.apply_batch([fin("BalanceIn", logins[i % 10], U, manager=MANAGER, ext_id=f"{k}-{i}")
                               for i in range(1000)])
            store.apply_batch([WalletCall("debit", logins[i % 10], NOW, 10**6, sid=f"sid-{logins[i % 10]}",
                                          currency="USD", txid=f"D{k}-{i}", amount=1, payload="p")
                               for i in range(1000)])
        assert store.seq == 16_000
    finally:
        store.close()
    start = time.perf_counter()
    report = verify_path(path)
    elapsed = time.perf_counter() - start
    assert report.ok and report.finance_rows == 16_000
    assert elapsed < 10, f"verify of 16,000 rows took {elapsed:.1f} s"


# ------------------------------------------------------------------ triggers and accounts


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_dropped_trigger_is_named(path, trigger):
    history(path)
    db = raw(path)
    drop(db, trigger)
    db.close()
    report = verify_path(path)
    assert not report.ok and f"trigger {trigger} is missing" in report.problem, report
    assert "\n" not in str(report)


def test_a_weakened_or_added_trigger_is_named(path):
    history(path)
    db = raw(path)
    drop(db, "finance_no_delete")
    db.execute("CREATE TRIGGER finance_no_delete BEFORE DELETE ON finance WHEN 0 "
               "BEGIN SELECT RAISE(ABORT, 'finance rows are append-only'); END")
    db.execute("CREATE TRIGGER sneaky AFTER INSERT ON accounts BEGIN SELECT 1; END")
    db.close()
    report = verify_path(path)
    assert not report.ok
    assert "trigger finance_no_delete is not the schema's" in report.problem
    assert "trigger sneaky on accounts is not part of the schema" in report.problem


def test_a_row_problem_comes_first_and_the_missing_trigger_after_it(path):
    history(path)
    db = raw(path)
    drop(db, "finance_no_update")
    db.execute("UPDATE finance SET amount = amount + 1 WHERE id = 3")
    db.close()
    report = verify_path(path)
    assert report.problem.startswith("finance row 3 (") and "hash" in report.problem
    assert report.problem.endswith("trigger finance_no_update is missing (finance rows can be changed)")


def test_a_changed_currency(path):
    a, b = history(path)
    db = raw(path)
    saved = drop(db, "accounts_fixed")
    db.execute("UPDATE accounts SET currency = 'USD' WHERE login = ?", (a,))
    report = verify_path(path)  # the trigger that should have refused it is missing: named
    assert not report.ok and "trigger accounts_fixed is missing" in report.problem
    # Once the trigger is back, nothing in the file shows the change: an account's currency is in no hash
    # and in no event (an anchor covers only the event chain). Only a backup, or a copy of the accounts
    # kept elsewhere, can show it. (An account created by a keyed AddUser is the exception: see below.)
    restore(db, saved)
    db.close()
    assert verify_path(path).ok


def test_a_changed_currency_of_an_account_created_by_a_keyed_adduser(path):
    history(path)
    store = Store(path)
    [created] = store.apply_batch([AddAccount("keyed", "EUR", NOW + 5, manager=MANAGER, ext_id="add-1")])
    login = created.data["login"]
    store.close()
    assert verify_path(path).ok
    db = raw(path)
    saved = drop(db, "accounts_fixed")
    db.execute("UPDATE accounts SET currency = 'USD' WHERE login = ?", (login,))
    restore(db, saved)
    db.close()
    # Its idempotency key (append-only) keeps what the AddUser asked for, currency included.
    report = verify_path(path)
    assert not report.ok and report.problem == (
        f"idempotency key (manager {MANAGER}, extID 'add-1'): account {login} (currency USD, created {NOW + 5}) "
        "is not the account it created")


def test_a_deleted_account(path):
    a, b = history(path)
    store = Store(path)
    [created] = store.apply_batch([AddAccount("keyed", "EUR", NOW, manager=MANAGER, ext_id="add-1")])
    keyed = created.data["login"]
    store.close()
    db = raw(path)
    saved = drop(db, "accounts_no_delete")
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("DELETE FROM accounts WHERE login IN (?, ?)", (b, keyed))
    restore(db, saved)
    db.close()
    report = verify_path(path)  # b has finance rows: the first of them names an account that is gone
    assert not report.ok and report.problem.startswith("finance row 2 (") and f"unknown account {b}" in report.problem
    # An account with no rows but created by a keyed AddUser: its key names it.
    db = raw(path)
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("""INSERT INTO accounts (login, name, "group", currency, created)
                  VALUES (?, 'b', 'default', 'EUR', ?)""", (b, NOW))  # b is back
    db.close()
    report = verify_path(path)
    assert not report.ok and report.problem == (
        f"idempotency key (manager {MANAGER}, extID 'add-1'): names account {keyed}, which does not exist")


# ------------------------------------------------------------------ forgeries that keep the chains consistent


def test_a_version_that_does_not_follow(path):
    history(path)
    forge(path, "UPDATE finance SET version = 3 WHERE id = 3")  # order 1: versions 1, 3
    report = verify_path(path)
    assert not report.ok and report.problem.startswith("finance row 3 (order 1 version 3)") and \
        "does not follow version 1 of the order" in report.problem


def test_an_event_naming_another_record(path):
    history(path)
    db = raw(path)
    db.execute("BEGIN")
    saved = drop(db, "events_no_update")
    db.execute("UPDATE events SET record_id = 2 WHERE seq = 3")  # seq k must name record k
    rehash(db)
    restore(db, saved)
    db.execute("COMMIT")
    db.close()
    report = verify_path(path)
    assert not report.ok and report.problem == "event seq 3: does not match finance row 3"


@pytest.mark.parametrize("table, statement, problem", [
    ("idempotency", "UPDATE idempotency SET seq = 3 WHERE ext_id = 'k1'",
     "finance row 1 (order 1 version 1): its idempotency key is missing"),
    ("wallet_tx", "UPDATE wallet_tx SET txid = 'D9' WHERE txid = 'D1'",
     "finance row 6 (order 4 version 1): wallet transaction (debit 'D9') names event seq 6, but the record's key "
     "is 'D1'"),
])
def test_a_key_moved_to_another_record(path, table, statement, problem):
    history(path)
    db = raw(path)
    saved = drop(db, f"{table}_no_update")
    db.execute(statement)
    restore(db, saved)
    db.close()
    report = verify_path(path)
    assert not report.ok and report.problem.startswith(problem), report


@pytest.mark.parametrize("statement, problem", [
    (f"INSERT INTO idempotency VALUES ({MANAGER + 1}, 'k1', 'x', 200, NULL, NULL, 1, 0, NULL)",
     f"finance row 1 (order 1 version 1): idempotency key (manager {MANAGER + 1}, extID 'k1') names event seq 1 too: "
     "two keys for one record"),
    ("INSERT INTO wallet_tx (kind, txid, login, amount, payload, status, seq, created, provider) "
     "VALUES ('debit', 'X', 1000, 1, 'p', 'OK', 2, 0, 'default')",
     "finance row 2 (order 2 version 1): wallet transaction (debit 'X') names event seq 2, but the record has no "
     "such key"),
    ("INSERT INTO wallet_tx (kind, txid, login, amount, payload, status, seq, created, provider) "
     "VALUES ('debit', 'X', 1000, 1, 'p', 'OK', 0, 0, 'default')",
     "wallet transaction (debit 'X') names event seq 0, which is no record"),
])
def test_an_added_key(path, statement, problem):
    """Inserting is what the triggers allow: a forged key must still match its record, one key per record."""
    history(path)
    db = raw(path)
    db.execute(statement)
    db.close()
    report = verify_path(path)
    assert not report.ok and report.problem == problem


# ------------------------------------------------------------------ truncation, head and anchor


def truncate(path: str, keep: int, *tables: str) -> None:
    """Remove every finance row and event after ``keep`` (and from ``tables``, their keys), dropping the
    triggers that refuse it and creating them again afterwards."""
    db = raw(path)
    db.execute("BEGIN")
    saved = drop(db, "finance_no_delete", "events_no_delete", *(f"{t}_no_delete" for t in tables))
    db.execute("DELETE FROM events WHERE seq > ?", (keep,))
    db.execute("DELETE FROM finance WHERE id > ?", (keep,))
    for table in tables:
        db.execute(f"DELETE FROM {table} WHERE seq > ?", (keep,))
    restore(db, saved)
    db.execute("COMMIT")
    db.close()


def test_a_truncated_tail_passes_plain_verify_and_fails_with_the_anchor(path):
    history(path)
    anchor = head_path(path)
    assert anchor.startswith("9:")
    assert verify_path(path, anchor).ok
    truncate(path, 7)  # the last two rows: plain finance, no keys
    report = verify_path(path)
    assert report.ok and report.head.startswith("7:")  # a prefix of an honest ledger is an honest ledger
    report = verify_path(path, anchor)
    assert not report.ok and report.problem == (
        f"anchor {anchor}: the ledger ends at event seq 7: its newest events were removed (truncated)")
    # An anchor at or before the cut still holds.
    db = raw(path)
    seven = db.execute("SELECT hash FROM events WHERE seq = 7").fetchone()[0]
    db.close()
    assert verify_path(path, f"7:{seven}").ok and verify_path(path, (0, GENESIS)).ok


def test_truncated_keyed_rows_whose_keys_were_left(path):
    history(path)
    truncate(path, 3)  # rows 4-9: keyed (k2), its delete, wallet (D1, C1), plain; their keys stay behind
    report = verify_path(path)
    assert not report.ok and report.problem == (
        f"idempotency key (manager {MANAGER}, extID 'k2') names event seq 4, beyond the last event (3): "
        "the newest events were removed (truncated)")
    truncate(path, 3, "idempotency", "wallet_tx")  # a thorough truncation takes the keys too
    assert verify_path(path).ok


def test_a_rewritten_tail_fails_with_the_anchor(path):
    a, b = history(path)
    anchor = head_path(path)
    truncate(path, 7)
    store = Store(path)  # the server restarted on the cut ledger and wrote two other rows
    store.apply_batch([fin("BalanceIn", a, 7 * U), fin("CreditIn", b, 7 * U)])
    store.close()
    report = verify_path(path)
    assert report.ok and report.head != anchor and report.head.startswith("9:")
    report = verify_path(path, anchor)
    assert not report.ok and report.problem.startswith("event seq 9: its hash ") and "rewritten" in report.problem


def test_head_of_an_empty_ledger(path):
    Store(path).close()
    assert head_path(path) == "0:" + "0" * 64
    assert verify_path(path, head_path(path)).ok
    report = verify_path(path, "0:" + "1" * 64)
    assert not report.ok and "seq 0" in report.problem


def test_head_and_anchor_on_the_command_line(path, capsys):
    history(path)
    assert main(["head", "--db", path]) == 0
    anchor = capsys.readouterr().out.strip()
    seq, digest = anchor.split(":")
    assert seq == "9" and len(digest) == 64
    assert main(["verify", "--db", path, "--anchor", anchor]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 9 finance rows") and out.count("\n") == 1 and "anchor 9 in the chain" in out
    truncate(path, 8)
    assert main(["verify", "--db", path]) == 0
    capsys.readouterr()
    assert main(["verify", "--db", path, "--anchor", anchor]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"FAILED: anchor {anchor}: the ledger ends at event seq 8") and \
        "truncated" in captured.err
    assert main(["verify", "--db", path, "--anchor", "9:xyz"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "--anchor" in captured.err


@pytest.mark.parametrize("command", ["verify", "head"])
def test_a_missing_ledger_is_one_line_and_never_created(tmp_path, capsys, command):
    missing = str(tmp_path / "no such?file#.db")
    assert main([command, "--db", missing]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"syncledger: no ledger at {missing}\n"
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        verify_path(missing)


def test_not_a_ledger_is_one_line(tmp_path, capsys):
    other = tmp_path / "notes.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.close()
    assert main(["verify", "--db", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a syncledger ledger" in err
    (tmp_path / "junk.db").write_bytes(b"this is not SQLite at all, just text" * 100)
    assert main(["verify", "--db", str(tmp_path / "junk.db")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
