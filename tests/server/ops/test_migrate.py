"""``syncledger migrate`` (server/migrate.py): an SQLite ledger copied into PostgreSQL row for row, verified on
both sides, and carrying on the same chain there; what it refuses, and a failed copy that keeps nothing."""

from __future__ import annotations

import shutil

import pytest

from syncledger.ledger import Finance, FinanceRequest, Store, engine, verify_path
from syncledger.ledger import store as store_module
from syncledger.server.cli import main
from syncledger.server.core.lockfile import LedgerLock
from tests.conftest import FIXTURES
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)
from tests.ledger.test_batch_writer import NOW, U, _command, _generator, _outcome, _setup

TABLES = ("accounts", "managers", "game_sessions", "finance", "events", "idempotency", "wallet_tx", "meta")


def _rows(db: str, table: str, columns: list[str]) -> list[tuple]:
    conn = engine.connect_ro(db)
    try:
        names = ", ".join(f'"{c}"' for c in columns)
        return sorted(tuple(r) for r in conn.execute(f"SELECT {names} FROM {table}").fetchall())
    finally:
        conn.close()


def _columns(url: str, table: str) -> list[str]:
    conn = engine.connect_ro(url)
    try:
        return [c for (c,) in conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                           "table_schema = current_schema() AND table_name = ? ORDER BY "
                                           "ordinal_position", (table,))]
    finally:
        conn.close()


def test_a_migrated_ledger_holds_the_same_rows_and_carries_on_the_same_chain(tmp_path, pg_url, capsys, monkeypatch):
    lite = str(tmp_path / "ledger.db")
    monkeypatch.setenv("SYNCLEDGER_SECRET", "migrate-secret-migrate-secret-0123")
    assert main(["manager", "add", "--db", lite, "--login", "3", "--password", "pw-long-enough-3"]) == 0
    store = _setup(store_module, lite)
    draw = _generator(7, hard=False)
    for _ in range(15):
        store.apply_batch([_command(store_module, spec) for spec in draw(store)])
    store.close()
    capsys.readouterr()

    assert main(["migrate", "--from", lite, "--to", pg_url]) == 0
    out = capsys.readouterr().out
    head = verify_path(lite).head
    assert f"both verify, head {head}" in out and "SYNCLEDGER_SECRET" in out
    for table in TABLES:
        columns = _columns(pg_url, table)
        rows, copied = _rows(lite, table, columns), _rows(pg_url, table, columns)
        if table == "meta":  # (PostgreSQL keeps its schema version there; SQLite in PRAGMA user_version)
            copied = [row for row in copied if row[0] != "schema_version"]
        assert copied == rows, table
        assert rows or table == "game_sessions", f"the test wrote no {table} rows"

    here, there = Store(lite), Store(pg_url)
    try:  # the next batch on either side: the same answers, the same new head
        batch = [Finance(FinanceRequest("BalanceIn", 1000, 2 * U), NOW + 10**6, 3, "after-migrate"),
                 Finance(FinanceRequest("CreditOut", 1001, 10**12), NOW + 10**6)]
        assert [_outcome(o) for o in there.apply_batch(batch)] == [_outcome(o) for o in here.apply_batch(batch)]
        assert (there.seq, there.event_head) == (here.seq, here.event_head)
    finally:
        here.close()
        there.close()
    assert verify_path(pg_url).ok

    assert main(["migrate", "--from", lite, "--to", pg_url]) == 2  # never into a ledger that has rows
    assert "already holds a ledger" in capsys.readouterr().err


def test_an_older_release_s_ledger_is_brought_up_to_date_then_copied(tmp_path, pg_url, capsys):
    old = str(tmp_path / "v1.sqlite")
    shutil.copy(FIXTURES / "ledger-v1.sqlite", old)
    assert main(["migrate", "--from", old, "--to", pg_url]) == 0
    assert verify_path(pg_url).head == verify_path(old).head
    assert capsys.readouterr().out.startswith(f"migrated {old}")


def test_what_migrate_refuses_and_a_failed_copy_keeps_nothing(tmp_path, pg_cluster, pg_url, capsys):
    lite = str(tmp_path / "ledger.db")
    store = _setup(store_module, lite)
    store.close()
    lock = LedgerLock.acquire(lite)
    try:
        assert main(["migrate", "--from", lite, "--to", pg_url]) == 2  # a server holds it
        assert "already served" in capsys.readouterr().err
    finally:
        lock.release()
    assert main(["migrate", "--from", pg_url, "--to", lite]) == 2
    assert "--to postgresql://" in capsys.readouterr().err
    store = Store(lite)
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U, "nul \x00 inside"), NOW)])  # SQLite takes it
    store.close()
    assert main(["migrate", "--from", lite, "--to", pg_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing was kept" in err
    conn = engine.connect_ro(pg_url)
    try:
        assert all(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0 for t in TABLES[:-1])
    finally:
        conn.close()
