"""Upgrades keep data: the schema-version-1 fixture ledger (tests/fixtures) migrates in place, in one
transaction, verifies before and after, and its open wallet round settles as a provider would settle it; the
previous release's ledger (version 6) gains the index of the account search, on SQLite and PostgreSQL, and the
back-office page's reads go by index (their query plans)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from syncledger.ledger import AddAccount, Store, engine, migrations, reads, verify_path
from syncledger.ledger.store import LedgerOpenError
from syncledger.ledger.wallet import WalletCall
from syncledger.server.cli import main
from syncledger.server.wallet.app import wallet_call
from tests.conftest import FIXTURES
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)

FIXTURE = FIXTURES / "ledger-v1.sqlite"
PREVIOUS = FIXTURES / "ledger-v6.sqlite"  # the release before the search index
NOW = 1_764_000_100


@pytest.fixture
def v1(tmp_path) -> str:
    path = str(tmp_path / "v1.db")
    shutil.copyfile(FIXTURE, path)
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> str:
    """A copy of the fixture that no test changes (opening the fixture itself, even read-only, would leave
    -wal and -shm files beside it)."""
    path = str(tmp_path_factory.mktemp("fixture") / "v1.db")
    shutil.copyfile(FIXTURE, path)
    return path


def contents(path: str, pristine: str) -> dict[str, list]:
    """Every row of every table of the version-1 fixture, in a stable order (columns added later left out)."""
    v1 = sqlite3.connect(f"file:{pristine}?mode=ro", uri=True)
    db = sqlite3.connect(path)
    try:
        out = {}
        for (t,) in v1.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            quoted = ", ".join(f'"{c[1]}"' for c in v1.execute(f'PRAGMA table_info("{t}")'))
            out[t] = sorted(db.execute(f'SELECT {quoted} FROM "{t}"').fetchall(), key=repr)
        return out
    finally:
        v1.close()
        db.close()


def schema(db: sqlite3.Connection) -> dict:
    """The schema as SQLite understands it: columns, indexes with their columns, triggers, user_version."""
    shape: dict = {"user_version": migrations.version_of(db)}
    for name, kind in db.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"):
        if kind == "table":
            shape[name] = [tuple(c) for c in db.execute(f'PRAGMA table_xinfo("{name}")')]
            shape[name + ":fk"] = [tuple(f) for f in db.execute(f'PRAGMA foreign_key_list("{name}")')]
        elif kind == "index":
            shape[name] = [tuple(c) for c in db.execute(f'PRAGMA index_xinfo("{name}")')]
        else:
            shape[name] = kind
    return shape


def call(action: str, txid: str, ref: str | None, game: str, amount=None) -> WalletCall:
    tx = {"id": txid, **({"refId": ref} if ref else {}), **({"amount": amount} if amount is not None else {})}
    body = {"sid": "fixture-sid-alice", "userId": "1000", "currency": "EUR",
            "game": {"id": game, "type": "plinko", "session": "gs"}, "transaction": tx, "uuid": "u"}
    return wallet_call(action, body, NOW, 1800)


def version_at(path: str) -> int:
    """The schema version of the ledger file at ``path``, read without changing it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return migrations.version_of(db)
    finally:
        db.close()


def test_fixture_is_a_version_1_ledger_that_verifies(pristine):
    assert version_at(pristine) == 1
    assert verify_path(pristine).ok


def test_version_1_migrates_in_place_and_keeps_every_row(v1, pristine):
    before = contents(v1, pristine)
    assert verify_path(v1).ok
    store = Store(v1)
    try:
        assert store.migrated == list(range(2, migrations.LATEST + 1))
        assert migrations.version_of(store.db) == migrations.LATEST
        assert store.accounts == {1000: ("EUR", 120_250_000, 5_000_000), 1001: ("USD", 0, 0)}
        rounds = dict(store.db.execute("SELECT txid || ':' || kind, game_id FROM wallet_tx"))
        assert rounds["D2:debit"] == "g-2" and rounds["D4:tombstone"] == "g-4" and rounds["C1:credit"] == "g-1"
    finally:
        store.close()
    assert contents(v1, pristine) == before
    assert verify_path(v1).ok
    assert Store(v1).migrated == []  # a second open has nothing to do


def test_a_migrated_ledger_has_the_schema_of_a_new_one(v1, tmp_path):
    Store(v1).close()
    new = tmp_path / "new.db"
    Store(str(new)).close()
    a, b = sqlite3.connect(v1), sqlite3.connect(new)
    try:
        assert schema(a) == schema(b)
    finally:
        a.close()
        b.close()


def test_the_open_round_of_a_version_1_ledger_settles_after_the_upgrade(v1):
    store = Store(v1)
    try:
        def result(c: WalletCall):
            (outcome,) = store.apply_batch([c])
            return outcome.data.status, outcome.data.balance, outcome.data.retransmission
        # g-2's debit D2 carried refId R2: its win comes with the shared refId, as providers send it
        assert result(call("credit", "C2", "R2", "g-2", 3)) == ("OK", 123_250_000, False)
        assert result(call("credit", "C2b", "D2", "g-2", 3)) == ("BET_ALREADY_SETTLED", 123_250_000, False)
        # answers written before the upgrade keep their meaning, as retransmissions
        assert result(call("credit", "C1", "D1", "g-1", 4)) == ("BET_ALREADY_SETTLED", 123_250_000, True)
        assert result(call("debit", "D5", "R5", "g-5", 100_000)) == ("INSUFFICIENT_FUNDS", 123_250_000, True)
        assert result(call("cancel", "D1", "R1", "g-1")) == ("BET_ALREADY_SETTLED", 123_250_000, False)
        assert result(call("debit", "D4", "R4", "g-4", 1)) == ("FINAL_ERROR_ACTION_FAILED", 123_250_000, False)
        assert result(call("cancel", "D3", "R3", "g-3")) == ("BET_ALREADY_SETTLED", 123_250_000, True)
    finally:
        store.close()
    assert verify_path(v1).ok


def test_a_failing_step_leaves_the_ledger_as_it_was(v1, pristine, monkeypatch):
    before = contents(v1, pristine)
    steps = [*migrations.STEPS[:-1], (migrations.STEPS[-1][0], "broken",
                                     [*migrations.STEPS[-1][2], "INSERT INTO no_such_table VALUES (1)"])]
    monkeypatch.setattr(migrations, "STEPS", steps)
    with pytest.raises(LedgerOpenError, match="no_such_table"):
        Store(v1)
    db = sqlite3.connect(v1)
    try:
        assert migrations.version_of(db) == 1
        assert "game_id" not in [c[1] for c in db.execute("PRAGMA table_info(wallet_tx)")]
    finally:
        db.close()
    assert contents(v1, pristine) == before and verify_path(v1).ok


def test_a_newer_ledger_is_refused_with_a_clear_message(v1, capsys):
    db = sqlite3.connect(v1)
    db.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    db.close()
    with pytest.raises(migrations.SchemaError, match="newer than this syncledger"):
        Store(v1)
    assert main(["token", "--db", v1, "--login", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run a newer syncledger" in err[0]


def test_a_foreign_sqlite_file_is_not_taken_for_a_ledger(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.close()
    with pytest.raises(migrations.SchemaError, match="not a syncledger ledger"):
        Store(str(path))


# ---- the previous release (schema version 6) and the account search by index

SEARCHES = [  # (text, from_login, limit) -> the logins found, and the next page's from_login
    (("ali", 0, 100), ([1000, 1001], None)), (("ALICE t", 0, 100), ([1001], None)),
    (("100", 0, 100), ([1000, 1001, 1002, 1003, 1004], None)), (("100", 1001, 2), ([1001, 1002], 1003)),
    (("1003", 0, 100), ([1003], None)), (("b", 0, 100), ([1002], None)), (("bob_100%", 0, 100), ([1002], None)),
    (("z", 0, 100), ([1004], None)), (("ÉMILE", 0, 100), ([1003], None)), (("émile", 0, 100), ([], None)),
    (("lice", 0, 100), ([], None)), (("%", 0, 100), ([], None)), (("_", 0, 100), ([], None)),
    (("0100", 0, 100), ([], None)), (("99999999999999999999", 0, 100), ([], None)),
    (("\U0010ffff", 0, 100), ([], None)), (("", 1003, 100), ([1003, 1004], None)),
]


def found(db, text: str, from_login: int, limit: int) -> tuple[list[int], int | None]:
    page, following = reads.find_accounts(db, text, from_login, limit)
    return [a["login"] for a in page], following


def test_the_previous_release_opens_migrates_verifies_and_is_searched_by_prefix(tmp_path):
    path = str(tmp_path / "v6.db")
    shutil.copyfile(PREVIOUS, path)
    assert version_at(path) == 6 and verify_path(path).ok
    store = Store(path)
    try:
        assert store.migrated == [7, 8] and migrations.version_of(store.db) == migrations.LATEST
        assert store.accounts[1000][1:] == (75_000_000, 0) and store.accounts[1001][1:] == (0, 5_000_000)
        for args, want in SEARCHES:
            assert found(store.db, *args) == want, args
    finally:
        store.close()
    assert verify_path(path).ok


def plans(db, sql: str, args) -> list[str]:
    if isinstance(db, engine.PgConnection):
        return [row[0] for row in db.execute("EXPLAIN " + sql, args).fetchall()]
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]


def test_the_pages_reads_go_by_index_on_sqlite(tmp_path):
    store = Store(str(tmp_path / "new.db"))
    try:
        for text in ("ali", "100", "\U0010ffff"):
            plan = plans(store.db, *reads.account_search(text, 0, 101))
            assert not [p for p in plan if p.startswith(("SCAN a", "SCAN finance"))], plan  # no table read whole
            assert any("accounts_name" in p for p in plan), plan
            if text == "100":
                assert any("PRIMARY KEY (rowid>? AND rowid<?)" in p for p in plan), plan
        plan = plans(store.db, reads._ROW + " WHERE login = ? AND id < ? ORDER BY id DESC LIMIT ?", (1000, 2**62, 51))
        assert plan == ["SEARCH finance USING INDEX finance_login (login=? AND id<?)"]  # reads.history's
    finally:
        store.close()


def test_postgresql_ledgers_old_and_new_get_the_index_and_search_alike(pg_url):
    raw = engine.connect(pg_url)
    try:
        raw.script(migrations.schema_pg_sql())  # a ledger of the previous release: version 6
        assert migrations.version_of(raw) == 6
    finally:
        raw.close()
    store = Store(pg_url)
    try:
        assert not store.created and store.migrated == [7, 8] and migrations.version_of(store.db) == migrations.LATEST
        names = [("Alice Example", "EUR"), ("alice Two", "USD"), ("Bob_100%", "USD"), ("ÉMILE Zola", "EUR"),
                 ("Zed", "USD")]
        store.apply_batch([AddAccount(name, currency, NOW + i) for i, (name, currency) in enumerate(names)])
        for args, want in SEARCHES:  # the same answers as the SQLite ledger of the same accounts
            assert found(store.db, *args) == want, args
        store.db.execute("SET enable_seqscan = off")  # (a table this small is read whole otherwise)
        plan = " ".join(plans(store.db, *reads.account_search("ali", 0, 101)))
        assert "accounts_name" in plan and "Seq Scan" not in plan, plan
    finally:
        store.close()
    assert verify_path(pg_url).ok
