"""Upgrades keep data: the schema-version-1 fixture ledger (tests/fixtures) migrates in place, in one
transaction, verifies before and after, and its open wallet round settles as a provider would settle it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from syncledger.ledger import Store, migrations, verify_path
from syncledger.ledger.store import LedgerOpenError
from syncledger.ledger.wallet import WalletCall
from syncledger.server.cli import main
from syncledger.server.wallet.app import wallet_call

FIXTURE = Path(__file__).parent / "fixtures" / "ledger-v1.sqlite"
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


def test_fixture_is_a_version_1_ledger_that_verifies(pristine):
    db = sqlite3.connect(f"file:{pristine}?mode=ro", uri=True)
    try:
        assert migrations.version_of(db) == 1
    finally:
        db.close()
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
