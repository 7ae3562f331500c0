"""The writer in a process of its own (``serve --writer process``, server/writer.py, ledger/codec.py): the same
rows, hashes and answers as the writer thread; the APIs on top of it; a writer that dies or loses its file
stops the server truthfully; nothing outlives the server."""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
from decimal import Decimal

import orjson
import pytest
import trio

from syncledger.ledger import (AddAccount, CatchUp, Finance, FinanceRequest, LedgerError, Store, Unsure, Version,
                               codec, verify_path)
from syncledger.ledger.commands import Receipt, receipt_outcome
from syncledger.ledger.store import Event, LedgerOpenError, Outcome
from syncledger.ledger.wallet import OpenSession, PruneSessions, WalletCall, WalletResult
from syncledger.server.testing import Harness
from syncledger.server.core.writer import WriterProcess
from tests.conftest import add_account, tcp_client
from tests.ledger.test_batch_writer import NOW, TABLES, U, _command, _generator, _outcome
from tests.e2e.test_truth import _assert_truthful, _fail_stop_run

new_store = __import__("syncledger.ledger.store", fromlist=["Store"])


def test_every_message_survives_the_codec():
    """Each kind of command and outcome, through marshal and back, is what it was (exact money too)."""
    commands = [
        Finance(FinanceRequest("CreditIn", 1000, 12_345_678, "c'é😀", 7, 1, 2), NOW, 3, "x" * 40, 99, "wallet"),
        Finance(FinanceRequest("DeleteBalance", order=5), NOW),
        AddAccount("n", "EUR", NOW, "vip", None, 1, "e", 200, "a@b", False, "scrypt$1"),
        WalletCall("credit", 1000, NOW, 60, None, "EUR", "t", "r", "g", 0, "[]"),
        OpenSession(1000, "sid", NOW, 60), PruneSessions(NOW),
    ]
    assert codec.loads(codec.dumps(commands)) == commands
    outcomes = [
        Outcome(data=Receipt(7, 1000, 2, -5, 1, b'{"a":1}'), events=[Event(9, 1, 7, b'{"seq":9}')]),
        Outcome(error=LedgerError(409, "NO_MONEY", "not enough"), replay=True),
        Outcome(data=WalletResult("OK", 10, None, True), events=[]),
        Outcome(data={"login": 1000, "balance": orjson.Fragment(b"12.345678"), "enable": True}),
        Outcome(data=3),
    ]
    back = codec.loads(codec.dumps(outcomes))
    assert [orjson.dumps(o.data) if isinstance(o.data, dict) else o.data for o in back] == \
        [orjson.dumps(o.data) if isinstance(o.data, dict) else o.data for o in outcomes]
    assert [(o.error and (o.error.status, o.error.code, o.error.message), o.events, o.replay) for o in back] == \
        [(o.error and (o.error.status, o.error.code, o.error.message), o.events, o.replay) for o in outcomes]
    with pytest.raises(TypeError, match="cannot send a tuple"):
        codec.dumps([(1, 2)])  # a plain tuple would read back as a registered object: refused


def _comparable(outcomes: list) -> list:
    """Outcomes as values that compare (an orjson.Fragment does not: its JSON does)."""
    return [(o.error and (o.error.status, o.error.code, o.error.message),
             orjson.dumps(o.data) if isinstance(o.data, dict) else o.data, o.events, o.replay) for o in outcomes]


def test_every_batch_and_outcome_kind_survives_the_batch_codec():
    """A batch as the server sends it (its Finance commands as one flat list, every other kind in its place among
    them) and its outcomes (finance receipts and their events flat, the rest as registered objects), through
    marshal and back, are what they were, in order."""
    finance = [Finance(FinanceRequest("CreditIn", 1000, 12_345_678, "c'é😀", 7, 1, 2), NOW, 3, "x" * 40, 99, "wallet"),
               Finance(FinanceRequest("DeleteBalance", order=5), NOW),
               Finance(FinanceRequest("BalanceIn", 1001, 0, "lost round", None, None, None, True), NOW + 1, None, None,
                       None, "wallet:p")]
    others = [AddAccount("n", "EUR", NOW, "vip", None, 1, "e", 200, "a@b", False, "scrypt$1"), CatchUp(),
              WalletCall("credit", 1000, NOW, 60, None, "EUR", "t", "r", "g", 0, "[]"),
              OpenSession(1000, "sid", NOW, 60), PruneSessions(NOW)]
    mixed = [others[1], finance[0], others[0], others[2], finance[1], finance[2], others[3], others[4]]
    for batch in (mixed, finance, others, finance[:1], others[:1], []):
        assert codec.decode_batch(marshal.loads(marshal.dumps(codec.encode_batch(batch)))) == batch
    assert codec.encode_batch(finance)[1] == []  # every Finance in the flat list
    receipt = Receipt(7, 1000, 7, -5, 1, b'{"a":1,"seq":9}')
    outcomes = [
        Outcome(data=receipt, events=[Event(9, 1, 7, receipt.record)]),
        Outcome(data=Receipt(8, 1001, 6, 3, 0, b'{"b":2}'), replay=True),
        Outcome(error=LedgerError(409, "NO_MONEY", "not enough"), replay=True),
        Outcome(data=WalletResult("OK", 10, None, True), events=[Event(10, 0, 8, b'{"seq":10}')]),
        Outcome(data={"login": 1000, "balance": orjson.Fragment(b"12.345678"), "enable": True}),
        Outcome(data=3), Outcome(),
        Outcome(data=receipt, events=[Event(9, 1, 7, receipt.record), Event(10, 1, 7, b"{}")]),  # not a finance's
        Outcome(data=receipt, events=[Event(9, 2, 7, receipt.record)]),  # (its type is not the receipt's)
        Outcome(data=receipt, events=[Event(9, 1, 7, receipt.record)], replay=True),
        Outcome(data=receipt, replay=False),
    ]
    for some in (outcomes, outcomes[:2], outcomes[2:], outcomes[::-1], []):
        back = codec.decode_outcomes(marshal.loads(marshal.dumps(codec.encode_outcomes(some))))
        assert _comparable(back) == _comparable(some)
    assert codec.encode_outcomes(outcomes[:2] * 3)[1] == []  # receipts, with or without their event, flat


def test_a_receipt_row_goes_as_its_outcome_would(tmp_path):
    """The writer's Store gives an applied finance command's outcome as its receipt row: the same as the Outcome
    an in-process Store gives, and the same message to the server, among every other kind of outcome."""
    stores = [Store(str(tmp_path / f"{name}.db"), synchronous="OFF") for name in ("rows", "objects")]
    batches = [[AddAccount("a", "EUR", NOW)],
               [Finance(FinanceRequest("BalanceIn", 1000, 5 * U), NOW, 1, "k1"),
                Finance(FinanceRequest("BalanceIn", 1000, 5 * U), NOW, 1, "k1"),  # replayed in its batch
                Finance(FinanceRequest("BalanceOut", 1000, 50 * U), NOW),  # refused: NO_MONEY
                AddAccount("b", "USD", NOW),
                Finance(FinanceRequest("CreditIn", 1001, 2 * U, "c"), NOW + 1, 1, "k2")],
               [Finance(FinanceRequest("BalanceIn", 1000, 5 * U), NOW, 1, "k1"),  # replayed from the table
                Finance(FinanceRequest("DeleteBalance", order=1), NOW + 2)]]
    try:
        for batch in batches:
            rows, objects = stores[0].apply_batch(batch, rows=True), stores[1].apply_batch(batch)
            assert [type(o) for o in rows] == [tuple if type(o.data) is Receipt and o.events else Outcome
                                               for o in objects]
            assert _comparable([receipt_outcome(o) if type(o) is tuple else o for o in rows]) == _comparable(objects)
            assert codec.encode_outcomes(rows) == codec.encode_outcomes(objects)
    finally:
        for store in stores:
            store.close()


class _Request(FinanceRequest):
    pass


@pytest.mark.parametrize("what", ["command", "request", "outcome", "data", "event"])
def test_the_batch_codec_refuses_what_it_does_not_know(what):
    """Anything not registered is refused loudly, in a batch as alone: never sent as something else."""
    request = FinanceRequest("CreditIn", 1000, 1, "c")
    batch = [Finance(request, NOW)] * 2
    outcomes = [Outcome(data=Receipt(7, 1000, 7, 1, 0, b"{}"), replay=True)] * 2
    if what == "command":
        batch.insert(1, (1, 2))  # a plain tuple would read back as a registered object
    elif what == "request":
        batch.insert(1, Finance(_Request("CreditIn", 1000, 1, "c"), NOW))
    elif what == "outcome":
        outcomes.insert(1, Version(7, 1, 1000, 7, 3, 1, 1, 1, 0, "c", NOW, NOW))
    elif what == "data":
        outcomes.insert(1, Outcome(data=Decimal("1.5")))
    else:
        outcomes.insert(1, Outcome(data=Receipt(7, 1000, 7, 1, 0, b"{}"), events=[(9, 0, 7, b"{}")]))
    with pytest.raises(TypeError, match="cannot send a"):
        codec.encode_batch(batch) if what in ("command", "request") else codec.encode_outcomes(outcomes)


def _setup_batches() -> list[list]:
    return [[AddAccount(f"a{i}", ("EUR", "USD")[i % 2], NOW) for i in range(4)],
            [OpenSession(login, f"sid-{login}", NOW, 3600) for login in (1000, 1001, 1002)],
            [Finance(FinanceRequest("BalanceIn", login, 60 * U), NOW) for login in range(1000, 1004)]]


def _tables(path: str) -> dict:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES if t != "meta"}
    finally:
        db.close()


@pytest.mark.parametrize("seed", range(3))
def test_the_writer_process_gives_the_same_rows_hashes_and_answers(tmp_path, seed):
    """Random batches (finance with repeated extIDs and refusals, AddAccount, wallet rounds) applied by the
    writer process and by a Store in this process give the same answers, events and rows."""
    here, there = str(tmp_path / "here.db"), str(tmp_path / "there.db")
    store = Store(here, synchronous="OFF")
    Store(there).close()
    writer = WriterProcess(there)
    try:
        for batch in _setup_batches():
            assert [_outcome(o) for o in store.apply_batch(batch)] == [_outcome(o) for o in writer.apply_batch(batch)]
        draw = _generator(seed, hard=False)
        for _ in range(25):
            commands = [_command(new_store, spec) for spec in draw(store)]
            expected = [_outcome(o) for o in store.apply_batch(commands)]
            assert [_outcome(o) for o in writer.apply_batch(commands)] == expected
        head = (store.seq, store.event_head)
    finally:
        writer.close()
        store.close()
    assert writer.head == head and writer.process.returncode == 0
    assert _tables(there) == _tables(here)
    assert verify_path(there).ok


async def test_the_writer_spoken_to_from_the_trio_thread(tmp_path):
    """apply(): a batch larger than the socket's buffers (written and read in pieces) gives what Store gives;
    a caller cancelled mid-batch still gets its batch applied whole and answered; an interrupt ends the
    wait for a batch with Unsure naming why, and the writer, let go, finishes it alone."""
    here, there = str(tmp_path / "here.db"), str(tmp_path / "there.db")
    store = Store(here, synchronous="OFF")
    Store(there).close()
    writer = WriterProcess(there)
    try:
        for batch in _setup_batches():
            assert [_outcome(o) for o in store.apply_batch(batch)] == [_outcome(o) for o in await writer.apply(batch)]
        big = [Finance(FinanceRequest("BalanceIn", 1000 + i % 4, U, f"{i:06d}" * 60), NOW) for i in range(8000)]
        assert len(marshal.dumps(codec.encode_batch(big))) > 2 << 20
        assert [_outcome(o) for o in await writer.apply(big)] == [_outcome(o) for o in store.apply_batch(big)]
        with trio.CancelScope() as scope:
            scope.cancel()
            got = await writer.apply(big[:10])  # begun under a cancelled scope: shielded, applied and answered
        assert [_outcome(o) for o in got] == [_outcome(o) for o in store.apply_batch(big[:10])]
        os.kill(writer.process.pid, signal.SIGSTOP)
        try:
            async with trio.open_nursery() as nursery:
                async def one_more() -> None:
                    with pytest.raises(Unsure, match="the grace ran out"):
                        await writer.apply(big[:1])
                nursery.start_soon(one_more)
                await trio.sleep(0.2)
                writer.interrupt("the grace ran out")
        finally:
            os.kill(writer.process.pid, signal.SIGCONT)
        store.apply_batch(big[:1])  # what the writer, let go, commits alone
    finally:
        writer.close()
        store.close()
    assert writer.process.wait(10) == 0
    assert _tables(there) == _tables(here) and verify_path(there).ok


def test_a_ledger_the_writer_cannot_open_is_one_clear_error(tmp_path):
    with pytest.raises(LedgerOpenError, match="no ledger at"):
        WriterProcess(str(tmp_path / "missing.db"))


async def test_the_apis_on_the_writer_process(start_server, tmp_path):
    """Manager API (plain and …Sync, a replay, a refusal, a subscriber), the wallet, then a clean stop: the
    writer process has ended, the head it logs is the file's, and the ledger verifies."""
    path = str(tmp_path / "ledger.db")
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, db=path, writer="process")
        writer = srv.writer
        assert writer is not None and writer.process.poll() is None
        async with tcp_client(srv) as c, tcp_client(srv) as sub:
            assert (await sub.call("Subscribe", {"chanels": ["trade:event"]})).ok
            login = await add_account(c)
            first = await c.call("BalanceIn", {"login": login, "amount": Decimal("10.5")}, ext_id="k1")
            assert first.ok and first.data["accepted"] is True
            again = await c.call("BalanceIn", {"login": login, "amount": Decimal("10.5")}, ext_id="k1")
            assert again.ok and again.data["order"] == first.data["order"]
            synced = await c.call("CreditInSync", {"login": login, "amount": 2, "comment": "sync"})
            assert synced.ok and synced.data["order"] == first.data["order"] + 1 and synced.data["seq"] == 2, synced
            refused = await c.call("BalanceOut", {"login": login, "amount": 1000, "comment": "too much"})
            assert refused.status == 409, refused
            seen = [await sub.receive_event() for _ in range(2)]
            assert [e["data"]["seq"] for e in seen] == [1, 2]
            user = await c.call("GetUser", {"login": login})
            assert user.ok and Decimal(str(user.data["balance"])) == Decimal("10.5"), user
            sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
        harness = Harness(srv)
        base = {"sid": sid, "userId": str(login), "currency": "EUR", "game": {"id": "g1"}}
        debit = await harness.wallet("debit", {**base, "uuid": "u1", "transaction": {"id": "d1", "amount": "1.25"}})
        assert debit["status"] == "OK" and debit["balance"] == Decimal("9.25"), debit
        credit = await harness.wallet("credit", {**base, "uuid": "u2",
                                                 "transaction": {"id": "c1", "refId": "d1", "amount": "3"}})
        assert credit["status"] == "OK" and credit["balance"] == Decimal("12.25"), credit
        again = await harness.wallet("credit", {**base, "uuid": "u3",
                                                "transaction": {"id": "c1", "refId": "d1", "amount": "3"}})
        assert again["retransmission"] is True and again["balance"] == Decimal("12.25"), again
        await srv.shutdown()
    assert writer.process.returncode == 0
    assert writer.head is not None and writer.head[0] == 4
    report = verify_path(path)
    assert report.ok and report.events == 4, report


@pytest.mark.parametrize("fault", ["writer-killed", "wal-unlinked", "db-unlinked"])
async def test_fail_stop_with_the_writer_process(start_server, tmp_path, fault):
    """The writer process dies (kill -9) or its file goes: one CRITICAL line, the server stops, and every
    200 it gave is in the file, nothing it refused is."""
    path = str(tmp_path / "ledger.db")

    def break_it(srv) -> None:
        if fault == "writer-killed":
            os.kill(srv.writer.process.pid, signal.SIGKILL)
            srv.writer.process.wait()
        elif fault == "wal-unlinked":
            os.unlink(path + "-wal")
        else:
            os.unlink(path)

    answers, critical = await _fail_stop_run(start_server, path, break_it, writer="process")
    assert len(critical) == 1 and "stopping:" in critical[0], critical
    assert all(answers[f"before-{i}"] == 200 for i in range(3))
    assert not any(status == 200 for key, status in answers.items() if key.startswith("after"))
    if fault == "writer-killed":
        _assert_truthful(path, answers)


def test_the_writer_holds_the_ledger_lock_until_it_ends(tmp_path):
    """The writer inherits the server's lock: a server killed with kill -9 cannot be followed by a new one
    while its writer still finishes a batch (two writers would each believe their own head)."""
    from syncledger.server.core.lockfile import LedgerLock, LedgerLocked

    path = str(tmp_path / "ledger.db")
    Store(path).close()
    lock = LedgerLock.acquire(path)
    writer = WriterProcess(path, lock_fd=lock.fd)
    lock.release()  # as the kernel does for a killed server
    with pytest.raises(LedgerLocked):
        LedgerLock.acquire(path)
    writer.close()
    LedgerLock.acquire(path).release()
