"""``syncledger status`` and ``manager list`` (issue 25): read-only summaries an operator and a script can use;
never a secret's value, never a password hash."""

from __future__ import annotations

import json
import os
import sqlite3

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store
from syncledger.server.cli import main
from syncledger.server.core.lockfile import LedgerLock
from syncledger.server.ops import managers
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)


def _ledger(path: str) -> None:
    store = Store(path)
    store.apply_batch([AddAccount("a", "EUR", 1), AddAccount("b", "EUR", 1)])
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 1_000_000), 1) for _ in range(2)])
    store.db.execute("INSERT INTO managers VALUES (1, 'no password', 3, 100, 1, 0)")  # (no slow hash)
    store.db.execute("INSERT INTO managers VALUES (2, 'secret-hash-never-shown', 1, 200, 2, 1)")
    store.close()


def test_status_says_what_an_operator_checks_and_its_last_line_is_the_head(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "l.db")
    _ledger(path)
    monkeypatch.setenv("SYNCLEDGER_SECRET", "the-secret-value-never-shown")
    monkeypatch.delenv("SYNCLEDGER_WALLET_TOKEN", raising=False)
    before = sorted(os.listdir(tmp_path))
    lock = LedgerLock.acquire(path)  # as a running server holds it
    try:
        assert main(["status", "--db", path]) == 0
        out = capsys.readouterr().out
        assert main(["status", "--db", path, "--format", "json"]) == 0
        found = json.loads(capsys.readouterr().out)
    finally:
        lock.release()
    assert main(["head", "--db", path]) == 0
    head = capsys.readouterr().out
    assert head.count("\n") == 1 and head.split(":")[0] == "2"
    lines = out.splitlines()
    assert lines[-1] + "\n" == head
    assert f"ledger: {path} (sqlite)" in lines
    assert "mode: 0600; key file " + path + ".key: missing" in lines
    assert f"lock: {os.path.realpath(path)}.lock: {os.getpid()} (alive)" in lines
    assert "accounts: 2; events: 2; managers: 1; providers: 1" in lines
    assert "secrets set: SYNCLEDGER_SECRET (of SYNCLEDGER_SECRET, SYNCLEDGER_WALLET_TOKEN)" in lines
    assert f"last backup: never (none recorded in {os.path.realpath(path)}.backups)" in lines
    assert "the-secret-value-never-shown" not in out + json.dumps(found)
    assert found["head"] == head.strip() and found["schema_version"] == found["schema_latest"]
    assert found["lock"]["pids"] == [{"pid": os.getpid(), "alive": True}]
    assert (found["engine"], found["accounts"], found["events"], found["secrets_set"], found["last_backup"]) == (
        "sqlite", 2, 2, ["SYNCLEDGER_SECRET"], None)
    # read-only: nothing made but the test's lock (and SQLite's own -wal/-shm of a reader)
    assert {n for n in os.listdir(tmp_path) if n[-4:] not in ("-wal", "-shm")} == {*before, "l.db.lock"} - {
        "l.db-wal", "l.db-shm"}


def test_status_of_a_missing_ledger_is_one_line_and_creates_nothing(tmp_path, capsys):
    assert main(["status", "--db", str(tmp_path / "none.db")]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"syncledger: no ledger at {tmp_path / 'none.db'}\n")
    assert os.listdir(tmp_path) == []


def test_status_of_a_postgresql_ledger(pg_url, capsys, monkeypatch):
    monkeypatch.setenv("SYNCLEDGER_SECRET", "s" * 32)
    store = Store(pg_url)
    store.apply_batch([AddAccount("a", "EUR", 1)])
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 1_000_000), 1)])
    store.close()
    assert main(["status", "--db", pg_url, "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["engine"], found["accounts"], found["events"], found["mode"], found["lock"]) == (
        "postgresql", 1, 1, None, None)
    assert (found["backups"], found["last_backup"]) == (None, None) and "pg_dump" in found["last_backup_unknown"]
    assert main(["status", "--db", pg_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == found["head"] and f"last backup: unknown ({found['last_backup_unknown']})" in lines


def test_manager_list_shows_every_manager_and_never_a_hash(tmp_path, capsys):
    path = str(tmp_path / "l.db")
    _ledger(path)
    db = sqlite3.connect(path)
    managers.add_manager(db, 3, "a-good-password-1", 2, 300)
    db.commit()
    db.close()
    assert main(["manager", "list", "--db", path]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["login  session  created               removed",
                                "1      ADMIN    1970-01-01T00:01:40Z  no",
                                "2      MANAGER  1970-01-01T00:03:20Z  yes",
                                "3      DEALER   1970-01-01T00:05:00Z  no"]
    assert main(["manager", "list", "--db", path, "--format", "json"]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown)[1] == {"login": 2, "session": "MANAGER", "created": 200, "removed": True}
    assert "hash" not in out + shown and "pbkdf" not in (out + shown).lower()
