"""Operating syncledger: an online backup taken under load restores to a ledger that verifies and holds
every acknowledged transaction up to its head; restore refuses a held ledger or a bad copy; export
round-trips every table as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3

import pytest
import trio

from syncledger.ledger import verify_path
from syncledger.server import ops
from syncledger.server.app import serve
from syncledger.server.cli import main
from tests.conftest import add_account, make_config, tcp_client


async def test_a_backup_under_load_restores_every_acknowledged_transaction(nursery, tmp_path):
    path, copy = str(tmp_path / "live.db"), str(tmp_path / "backup.sqlite")
    srv = await nursery.start(serve, make_config(db=path))
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
            copied = await trio.to_thread.run_sync(ops.backup, path, copy)
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


async def test_restore_refuses_a_ledger_a_server_holds_and_a_copy_that_does_not_verify(nursery, tmp_path, capsys):
    path, copy = str(tmp_path / "live.db"), str(tmp_path / "b.sqlite")
    await nursery.start(serve, make_config(db=path))
    ops.backup(path, copy)
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
async def busy_ledger(nursery, tmp_path):
    """A ledger with accounts, finance versions, events and wallet rows."""
    from syncledger.server.testing import Harness
    path = str(tmp_path / "e.db")
    srv = await nursery.start(serve, make_config(db=path, wallet_token="t"))
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


@pytest.mark.parametrize("what", sorted(ops.EXPORTS))
@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
async def test_export_round_trips(busy_ledger, what, fmt):
    out = io.StringIO()
    n = ops.export(busy_ledger, what, out, fmt)
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
        want = [dict(r) for r in db.execute(ops.EXPORTS[what], {"since": None})]
    finally:
        db.close()
    assert n == len(want) > 0
    if fmt == "csv":  # CSV carries text: compare as text
        want = [{k: "" if v is None else str(v) for k, v in row.items()} for row in want]
    assert got == want


async def test_export_since_a_seq(busy_ledger):
    out = io.StringIO()
    ops.export(busy_ledger, "events", out, "ndjson", since=2)
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [3]
