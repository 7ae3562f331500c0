"""Regression tests for bugs found in review: each failed before its fix."""

from __future__ import annotations

import socket
import sqlite3
import struct
from decimal import Decimal

import pytest
import trio

from syncledger.ledger import Finance, FinanceRequest, Store, verify
from syncledger.ledger.store import AddAccount
from syncledger.server.app import serve
from tests.conftest import add_account, assert_ledger_ok, make_config, mem_client, tcp_client


async def _reset(sock: trio.socket.SocketType) -> None:
    """Close with RST, the way a crashed client goes away."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_a_websocket_client_resetting_mid_handshake_does_not_stop_the_server(server):
    for _ in range(3):
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", server.ports.ws))
        await sock.send(b"GET /events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await _reset(sock)
    await trio.sleep(0.2)
    async with tcp_client(server) as c:
        assert (await c.call("Ping")).ok


async def test_a_websocket_subscriber_resetting_while_events_flow_does_not_stop_the_server(server):
    from tests.conftest import admin_token

    async with tcp_client(server) as c:
        login = await add_account(c)
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", server.ports.ws))
        await sock.send(f"GET /events?token={admin_token(server)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        await sock.recv(4096)  # the 101 answer
        calls = [c.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(200)]
        await _reset(sock)
        for call in calls:
            assert (await call.reply()).ok
        await trio.sleep(0.2)
        assert (await c.call("Ping")).ok


async def test_shutdown_answers_and_flushes_every_request_it_read(nursery, autojump_clock):
    srv = await nursery.start(serve, make_config(db=":memory:", threaded=False))
    async with mem_client(srv) as c:
        login = await add_account(c)
        srv.faults.pause()
        calls = [c.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(20)]
        await trio.sleep(0.01)
        nursery.start_soon(srv.shutdown)
        replies = [await call.reply() for call in calls]  # ConnectionLost if a reply was not flushed
    assert all(r.ok for r in replies)


async def test_replay_never_drops_a_client_that_reads(nursery, autojump_clock):
    srv = await nursery.start(serve, make_config(db=":memory:", threaded=False, outbox_size=64))
    async with mem_client(srv) as c:
        login = await add_account(c)
        for chunk in range(10):
            calls = [c.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(20)]
            for call in calls:
                await call.reply()
        sync = c.start("CreditInSync", {"login": login, "amount": 1, "comment": "x"})
        sub = c.start("Subscribe", {"chanels": ["trade:event"], "from_seq": 0})
        assert (await sync.reply()).ok and (await sub.reply()).ok
        seqs = [(await c.receive_event())["seq"] for _ in range(201)]
    assert seqs == list(range(1, 202))


async def test_empty_ext_id_is_refused(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        reply = await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"}, ext_id="")
    assert (reply.status, reply.error) == (400, "INVALID_REQUEST")


async def test_pausing_twice_then_resuming_runs_again(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        mem_server.faults.pause()
        mem_server.faults.pause()
        call = c.start("AddUser", {"name": "x", "currency": "EUR"})
        await trio.sleep(1)
        mem_server.faults.resume()
        assert (await call.reply()).ok


def test_a_failed_commit_that_may_have_reached_the_disk_is_never_guessed(tmp_path):
    """With WAL, COMMIT can fail (an I/O error) after its frame is written: the store cannot know whether
    the batch is durable, so it raises Unsure (the server fail-stops) instead of believing memory or the
    file; a fresh open reads the truth. (It used to reload memory from the file and go on.)"""
    from syncledger.ledger.store import Unsure
    from syncledger.server.faults import _error

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


async def test_a_wallet_transaction_id_names_one_transaction(mem_server, autojump_clock):
    from syncledger.server.testing import Harness

    h = Harness(mem_server)
    async with h.client() as c:
        login = await h.add_account(c, balance=100)
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    base = {"sid": sid, "userId": str(login), "currency": "EUR"}
    assert (await h.wallet("debit", {**base, "transaction": {"id": "T1", "amount": 5}}))["status"] == "OK"
    assert (await h.wallet("credit", {**base, "transaction": {"id": "T9", "refId": "T1", "amount": 0}}))[
        "status"] == "OK"
    reused = await h.wallet("debit", {**base, "transaction": {"id": "T9", "amount": 7}})
    assert (reused["status"], reused["balance"]) == ("INVALID_PARAMETER", Decimal(95))
    await h.wallet("debit", {**base, "transaction": {"id": "T2", "amount": 1}})
    clash = await h.wallet("credit", {**base, "transaction": {"id": "T2", "refId": "T2", "amount": 3}})
    assert clash["status"] == "INVALID_PARAMETER"
    await assert_ledger_ok(mem_server)
