"""trade:event fan-out: slow subscribers dropped, others complete and in order; WebSocket; from_seq replay."""

from __future__ import annotations

import trio
import trio.testing
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
import orjson

from syncledger.server.app import serve
from tests.conftest import add_account, admin_token, assert_ledger_ok, make_config, mem_client, tcp_client
from tests.pgcluster import (backend, every_backend, ledger_db, mem_db, mem_server, pg_cluster,  # noqa: F401
                             pg_url, serve_on)


async def test_slow_subscriber_is_dropped_others_get_every_event_in_order(nursery, autojump_clock):
    srv = await nursery.start(serve, make_config(db=":memory:", threaded=False, outbox_size=64))
    # A dead subscriber: it subscribes, then never reads. Lockstep streams make the server's
    # send_all wait for a receive that never comes, so its buffer fills.
    dead, dead_server_end = trio.testing.lockstep_stream_pair()
    nursery.start_soon(srv._tcp_connection, dead_server_end)
    async with mem_client(srv) as fast:
        login = await add_account(fast)
        assert (await fast.call("Subscribe", {"chanels": ["trade:event"]})).ok
        await dead.send_all(orjson.dumps({"command": "Subscribe", "data": {"chanels": ["trade:event"]},
                                          "__token": admin_token(srv)}) + b"\r\n")
        await trio.sleep(0.01)
        assert len(srv.broker.subscribers) == 2
        for chunk in range(0, 300, 16):  # a reply and an event per request: stay within its 64 buffered
            calls = [fast.start("BalanceIn", {"login": login, "amount": i + 1}) for i in range(chunk, chunk + 16)]
            for call in calls:
                assert (await call.reply()).ok
        seqs = [(await fast.receive_event())["seq"] for _ in range(300)]
        assert srv.broker.dropped == 1 and len(srv.broker.subscribers) == 1  # only the fast one is left
    assert seqs == list(range(1, 301))
    await assert_ledger_ok(srv)


@every_backend
async def test_from_seq_replays_without_gap_or_duplicate_then_goes_live(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        for i in range(25):
            await c.call("CreditIn", {"login": login, "amount": i + 1, "comment": "x"})
        async with mem_client(mem_server) as sub:
            assert (await sub.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 10})).ok
            for i in range(5):
                await c.call("CreditIn", {"login": login, "amount": 1, "comment": "live"})
            seqs = [(await sub.receive_event())["seq"] for _ in range(20)]
            await trio.sleep(1)
            try:
                extra = sub.receive_event_nowait()
            except trio.WouldBlock:
                extra = None
    assert seqs == list(range(11, 31))
    assert extra is None


@every_backend
async def test_replay_while_writes_continue_has_no_gap(mem_server, autojump_clock):
    from syncledger.server import broker as broker_module

    broker_module_page = broker_module.REPLAY_PAGE
    broker_module.REPLAY_PAGE = 7  # many pages, with writes landing between them
    try:
        async with mem_client(mem_server) as c, mem_client(mem_server) as sub:
            login = await add_account(c)
            for i in range(40):
                await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"})
            writes = [c.start("CreditIn", {"login": login, "amount": 1, "comment": "y"}) for _ in range(40)]
            assert (await sub.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 0})).ok
            for w in writes:
                await w.reply()
            seqs = [(await sub.receive_event())["seq"] for _ in range(80)]
    finally:
        broker_module.REPLAY_PAGE = broker_module_page
    assert seqs == list(range(1, 81))


async def test_unsubscribe_stops_events(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        await c.call("Subscribe", {"chanels": ["trade:event"]})
        again = await c.call("Subscribe", {"chanels": ["trade:event"]})  # additive: no error, no second feed
        assert again.ok and again.data["channels"] == ["trade:event"]
        await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"})
        await c.call("Unsubscribe")
        await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"})
        first = await c.receive_event()
        await trio.sleep(1)
        try:
            second = c.receive_event_nowait()
        except trio.WouldBlock:
            second = None
    assert first["seq"] == 1 and second is None


async def test_websocket_stream_with_token_and_from_seq(server):
    async with tcp_client(server) as c:
        login = await add_account(c)
        for _ in range(3):
            await c.call("BalanceIn", {"login": login, "amount": 2})
        url = f"ws://127.0.0.1:{server.ports.ws}/events?from_seq=1"
        headers = [(b"Authorization", f"Bearer {admin_token(server)}".encode())]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            replayed = [orjson.loads(await ws.get_message()) for _ in range(2)]
            await c.call("BalanceInSync", {"login": login, "amount": 2})
            live = orjson.loads(await ws.get_message())
    assert [e["seq"] for e in replayed] == [2, 3]
    assert live["seq"] == 4 and live["event"] == "trade:event" and live["data"]["balance"] == 8
    # the token may also travel in the query string; a bad one is refused at the handshake
    async with open_websocket_url(f"ws://127.0.0.1:{server.ports.ws}/events?token={admin_token(server)}") as ws:
        await c_ping(server)
    for bad in ("/events?token=nope", "/events", f"/other?token={admin_token(server)}"):
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{server.ports.ws}{bad}"):
                raise AssertionError(f"{bad} was accepted")
        except HandshakeError:
            pass
    await assert_ledger_ok(server)


async def c_ping(server) -> None:
    async with tcp_client(server) as c:
        assert (await c.call("Ping")).ok


async def test_websocket_slow_client_is_closed_with_1013(nursery, tmp_path):
    srv = await nursery.start(serve, make_config(db=str(tmp_path / "ws.db"), outbox_size=64))
    async with tcp_client(srv) as c:
        login = await add_account(c)
        url = f"ws://127.0.0.1:{srv.ports.ws}/events?token={admin_token(srv)}"
        async with open_websocket_url(url, message_queue_size=1) as ws:
            # never read while many events flow: socket buffers fill, then the server's buffer for us
            for _ in range(1000):
                calls = [c.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(32)]
                for call in calls:
                    assert (await call.reply()).ok
                if srv.broker.dropped:
                    break
            code = None
            with trio.move_on_after(10):
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as closed:
                    code = closed.reason.code
    assert code == 1013
    assert srv.broker.dropped >= 1


@every_backend
async def test_from_seq_across_a_restart(nursery, backend, ledger_db):
    db = ledger_db
    async with trio.open_nursery() as first:
        srv = await serve_on(first, backend, make_config(db=db))
        async with tcp_client(srv) as c:
            login = await add_account(c)
            for i in range(10):
                await c.call("CreditIn", {"login": login, "amount": i + 1, "comment": "before"})
        first.cancel_scope.cancel()
    srv = await serve_on(nursery, backend, make_config(db=db))
    async with tcp_client(srv) as c:
        await c.call("CreditIn", {"login": login, "amount": 1, "comment": "after"})
        assert (await c.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 5})).ok
        events = [await c.receive_event() for _ in range(6)]
    assert [e["seq"] for e in events] == [6, 7, 8, 9, 10, 11]
    assert events[-1]["data"]["comment"] == "after"
    await assert_ledger_ok(srv)
