"""Operating syncledger: an online backup taken under load restores to a ledger that verifies and holds
every acknowledged transaction up to its head; restore refuses a held ledger or a bad copy; export
round-trips every table as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import sqlite3
import sys
from contextlib import contextmanager

import pytest
import trio

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, verify_path
from syncledger.server.ops import backup, export
from syncledger.server.cli import main
from tests.conftest import add_account, tcp_client


async def test_a_backup_under_load_restores_every_acknowledged_transaction(start_server, tmp_path):
    path, copy = str(tmp_path / "live.db"), str(tmp_path / "backup.sqlite")
    srv = await start_server(db=path)
    acknowledged: dict[str, int] = {}  # extID -> seq of its event
    async with tcp_client(srv) as c:
        login = await add_account(c)

        async def load() -> None:
            i = 0
            while True:
                reply = await c.call("BalanceInSync", {"login": login, "amount": 1}, ext_id=f"b{i}")
                acknowledged[f"b{i}"] = reply.data["seq"]
                i += 1

        async with trio.open_nursery() as writers:
            writers.start_soon(load)
            while len(acknowledged) < 50:
                await trio.sleep(0.01)
            copied = await trio.to_thread.run_sync(backup.backup, path, copy)
            while len(acknowledged) < 100:  # the server kept writing meanwhile
                await trio.sleep(0.01)
            writers.cancel_scope.cancel()
    assert os.stat(copy).st_mode & 0o777 == 0o600
    head_seq = int(copied.head.split(":")[0])
    assert 50 <= head_seq < max(acknowledged.values()) + 2
    restored = str(tmp_path / "restored.db")
    assert main(["restore", "--from", copy, "--db", restored]) == 0
    assert verify_path(restored).ok
    db = sqlite3.connect(restored)
    try:
        held = {ext: seq for ext, seq in db.execute("SELECT ext_id, seq FROM idempotency WHERE seq IS NOT NULL")}
    finally:
        db.close()
    assert {e: s for e, s in acknowledged.items() if s <= head_seq} == held  # all up to the head, none after


async def test_restore_refuses_a_ledger_a_server_holds_and_a_copy_that_does_not_verify(start_server, tmp_path, capsys):
    path, copy = str(tmp_path / "live.db"), str(tmp_path / "b.sqlite")
    await start_server(db=path)
    backup.backup(path, copy)
    assert main(["restore", "--from", copy, "--db", path]) == 2
    assert "stop it before restoring" in capsys.readouterr().err
    assert main(["backup", "--db", path, "--to", copy]) == 2  # never overwrites
    bad = str(tmp_path / "bad.sqlite")
    with open(copy, "rb") as f:
        open(bad, "wb").write(f.read())
    db = sqlite3.connect(bad)
    db.execute("DROP TRIGGER finance_no_update")  # a copy somebody tampered with
    db.close()
    assert main(["restore", "--from", bad, "--db", str(tmp_path / "other.db")]) == 2
    assert "does not verify" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "other.db")


@pytest.fixture
async def busy_ledger(start_server, tmp_path):
    """A ledger with accounts, finance versions, events and wallet rows."""
    from syncledger.server.testing import Harness
    path = str(tmp_path / "e.db")
    srv = await start_server(db=path, wallet_token="t")
    h = Harness(srv)
    async with tcp_client(srv) as c:
        login = await add_account(c)
        await c.call("AddUser", {"name": "Zoë, \"quoted\"", "currency": "USD"})
        first = await c.call("BalanceIn", {"login": login, "amount": 10, "comment": "a, b \"c\"\nd"})
        await c.call("BalanceIn", {"login": login, "amount": 12, "order": first.data["order"]})
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    await h.wallet("debit", {"sid": sid, "userId": str(login), "currency": "EUR", "game": {"id": "g"},
                             "transaction": {"id": "d1", "amount": 1}, "uuid": "u"}, token="t")
    await srv.shutdown()
    return path


@pytest.mark.parametrize("what", sorted(export.EXPORTS))
@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
async def test_export_round_trips(busy_ledger, what, fmt):
    out = io.StringIO()
    n = export.export(busy_ledger, what, out, fmt)
    text = out.getvalue()
    if fmt == "csv":
        got = list(csv.DictReader(io.StringIO(text)))
    elif fmt == "json":
        got = json.loads(text)
    else:
        got = [json.loads(line) for line in text.splitlines()]
    db = sqlite3.connect(busy_ledger)
    db.row_factory = sqlite3.Row
    try:
        want = [dict(r) for r in db.execute(export.EXPORTS[what], {"since": None})]
    finally:
        db.close()
    assert n == len(want) > 0
    if fmt == "csv":  # CSV carries text: compare as text
        want = [{k: "" if v is None else str(v) for k, v in row.items()} for row in want]
    assert got == want


async def test_export_since_a_seq(busy_ledger):
    out = io.StringIO()
    export.export(busy_ledger, "events", out, "ndjson", since=2)
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [3]


# ---- restore keeps everything it replaces (issue 21)


def _kept(path: str) -> list[str]:
    """The ledgers a restore kept beside ``path`` (their side files left out), oldest first."""
    folder, name = os.path.split(path)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.startswith(name + ".replaced-") and not f.endswith(("-wal", "-shm")))


def _keyed(path: str) -> set[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {ext for (ext,) in db.execute("SELECT ext_id FROM idempotency WHERE seq IS NOT NULL")}
    finally:
        db.close()


def _unlocked(path: str) -> None:
    """Wait until no process holds the ledger's lock (a killed writer's descriptor closes as it dies)."""
    import fcntl
    import time
    fd = os.open(path + ".lock", os.O_RDWR)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the killed server's lock is still held"
                time.sleep(0.01)
    finally:
        os.close(fd)


async def test_restore_after_a_crash_keeps_every_acknowledged_row_of_the_wal(tmp_path, monkeypatch, capsys):
    """The real server (writer in its own process) takes 50 keyed credits, all answered 200, and is killed
    with SIGKILL together with its writer: the acknowledged rows are in the -wal only. A restore of a backup
    taken before them is refused, naming the 50 events it would roll back; forced, it keeps them all in the
    ledger it sets aside, which verifies."""
    import re
    import signal
    import subprocess
    import sys
    from syncledger.server.client import connect

    monkeypatch.setenv("SYNCLEDGER_SECRET", "restore-test-secret-restore-test-secret")
    path, older = str(tmp_path / "ledger.db"), str(tmp_path / "older.sqlite")
    assert main(["manager", "add", "--db", path, "--login", "1", "--password", "pw-long-enough-1",
                 "--session", "ADMIN"]) == 0
    assert main(["token", "--db", path, "--login", "1"]) == 0
    token = capsys.readouterr().out.split()[-1]
    proc = subprocess.Popen([sys.executable, "-P", "-m", "syncledger.server.cli", "serve", "--db", path,
                             "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0", "--admin-port", "-1",
                             "--writer", "process"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        port = int(re.match(r"listening tcp=127\.0\.0\.1:(\d+) ", line)[1])
        async with connect("127.0.0.1", port, token) as c:
            added = await c.call("AddUser", {"name": "p", "currency": "EUR"})
            assert added.ok, added
            login = added.data["login"]
            await trio.to_thread.run_sync(backup.backup, path, older)  # before the credits
            acknowledged = set()
            for call in [c.start("BalanceIn", {"login": login, "amount": 1}, ext_id=f"c{i}") for i in range(50)]:
                reply = await call.reply()
                assert reply.ok, reply
                acknowledged.add(call.ext_id)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its writer, at once
        proc.wait()
    _unlocked(path)
    assert os.path.getsize(path + "-wal") > 0  # never checkpointed: the acknowledged work is in the WAL

    assert main(["restore", "--from", older, "--db", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "roll back 50 acknowledged events" in err and "--force" in err
    assert _kept(path) == [] and _keyed(path) == acknowledged  # refused: nothing changed

    assert main(["restore", "--from", older, "--db", path, "--force"]) == 0
    out = capsys.readouterr().out
    [kept] = _kept(path)
    assert kept in out and "50 events rolled back" in out
    assert re.fullmatch(r".*\.replaced-\d{8}T\d{6}\.\d{6}Z", kept)
    assert _keyed(kept) == acknowledged and verify_path(kept).ok  # every acknowledged row, in the kept copy
    assert _keyed(path) == set() and verify_path(path).ok  # the backup's state


def test_two_restores_in_one_second_keep_both_ledgers_they_replace(tmp_path, capsys):
    path, copy = str(tmp_path / "l.db"), str(tmp_path / "b.sqlite")
    assert main(["manager", "add", "--db", path, "--login", "1", "--password", "pw-long-enough-1"]) == 0
    backup.backup(path, copy)
    assert main(["manager", "add", "--db", path, "--login", "2", "--password", "pw-long-enough-1"]) == 0
    assert main(["restore", "--from", copy, "--db", path]) == 0  # no event rolled back: not refused
    assert main(["restore", "--from", copy, "--db", path]) == 0
    first, second = _kept(path)
    managers = [sqlite3.connect(p).execute("SELECT count(*) FROM managers").fetchone()[0] for p in (first, second)]
    assert managers == [2, 1]  # the first kept copy is the ledger with manager 2, not written over


def test_restore_over_an_unreadable_ledger_needs_force_and_keeps_it_as_it_was(tmp_path, capsys):
    path, copy = str(tmp_path / "l.db"), str(tmp_path / "b.sqlite")
    assert main(["manager", "add", "--db", path, "--login", "1", "--password", "pw-long-enough-1"]) == 0
    backup.backup(path, copy)
    for name in (path, path + "-wal"):
        with open(name, "wb") as f:
            f.write(b"not a database" * 300)
    capsys.readouterr()
    assert main(["restore", "--from", copy, "--db", path]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and _kept(path) == []
    assert main(["restore", "--from", copy, "--db", path, "--force"]) == 0
    [kept] = _kept(path)
    assert kept in capsys.readouterr().out and verify_path(path).ok
    assert open(kept, "rb").read() == open(kept + "-wal", "rb").read() == b"not a database" * 300


# ---- a full disk, a closed pipe (issue 21)


@contextmanager
def _disk_full_beyond(size: int):
    """No file this process writes can grow beyond ``size`` bytes: the write fails (EFBIG) as it would on a full
    disk (ENOSPC). RLIMIT_FSIZE needs no privilege; Python ignores SIGXFSZ, so the call fails, not the process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.fixture
def small_ledger(tmp_path):
    """A ledger of 512-byte pages (under 24 KiB: smaller than a -shm) with 8 events, open as a server keeps it
    (its -wal and -shm exist, so a reader beside it makes no file)."""
    path = str(tmp_path / "small.db")
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size = 512")
    db.execute("VACUUM")
    db.close()
    store = Store(path)
    login = store.apply_batch([AddAccount("a", "EUR", 1)])[0].data["login"]
    store.apply_batch([Finance(FinanceRequest("BalanceIn", login, 1_000_000), 1) for _ in range(8)])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert os.path.getsize(path) < 24576
    yield path
    store.close()


@pytest.mark.parametrize("limit", [4096, 24576])  # the copy does not fit; it fits, but its side files do not
def test_a_backup_to_a_full_disk_is_one_line_and_leaves_nothing(small_ledger, tmp_path, capsys, limit):
    (tmp_path / "full").mkdir()
    to = str(tmp_path / "full" / "b.sqlite")
    with _disk_full_beyond(limit):
        assert main(["backup", "--db", small_ledger, "--to", to]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"syncledger: cannot copy {small_ledger} to {to}.partial-")
    assert os.listdir(tmp_path / "full") == []


def test_an_export_to_a_full_disk_is_one_line(small_ledger, tmp_path, monkeypatch, capsys):
    out = open(tmp_path / "e.ndjson", "w")
    monkeypatch.setattr(sys, "stdout", out)
    with _disk_full_beyond(2048):
        assert main(["export", "events", "--db", small_ledger]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the export is incomplete" in err
