"""Load: 1,000 TCP connections with …Sync traffic, a dead subscriber while events flow (10,000 here,
``SYNCLEDGER_LOAD_EVENTS`` for more), and connections that never send a byte."""

from __future__ import annotations

import gc
import os
import resource
import tracemalloc
from decimal import Decimal

import pytest
import trio
import trio.testing

from syncledger.server.testing import connect_memory
from tests.conftest import add_account, assert_ledger_ok, mem_client, tcp_client

CONNECTIONS = 1000


@pytest.fixture
def enough_file_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * CONNECTIONS + 200  # both ends live in this process
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_1000_connections_with_credit_in_sync(server, enough_file_descriptors):
    async with tcp_client(server) as admin:
        logins = [await add_account(admin) for _ in range(10)]
    results: list[tuple[int, int]] = []
    opened = trio.Event()
    count = 0

    async def one(i: int) -> None:
        nonlocal count
        async with tcp_client(server) as c:
            count += 1
            if count == CONNECTIONS:
                opened.set()
            await opened.wait()  # all 1,000 connections are open at once
            for k in range(3):
                reply = await c.call("CreditInSync", {"login": logins[i % 10], "amount": Decimal(1),
                                                      "comment": f"{i}-{k}"}, ext_id=f"{i}-{k}")
                assert reply.ok and reply.data["comment"] == f"{i}-{k}", reply
                results.append((i, reply.data["order"]))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for i in range(CONNECTIONS):
                nursery.start_soon(one, i)
    assert len(results) == 3 * CONNECTIONS and len({order for _, order in results}) == 3 * CONNECTIONS
    async with tcp_client(server) as admin:
        for login in logins:
            assert (await admin.call("GetUser", {"login": login})).data["credit"] == 3 * CONNECTIONS // 10
    await assert_ledger_ok(server)


# Events written in the dead-subscriber test; SYNCLEDGER_LOAD_EVENTS=100000 for the long run.
EVENTS = int(os.environ.get("SYNCLEDGER_LOAD_EVENTS", "10000"))


async def test_dead_subscriber_is_dropped_while_events_flow(start_server, nursery, autojump_clock):
    """A subscriber that never reads is dropped once its outbox (1,024 lines) is full, while the writes go
    on at full speed (250 pipelined at a time); a live subscriber beside it sees every event, in order;
    and once the dead one is gone memory stops growing: between the middle and the end of the run (after
    the drop) the traced memory grows by less than 32 bytes per event, where keeping each event line
    (~300 bytes) for the dead subscriber would cost ~10 times that.

    ``EVENTS`` (10,000, about 4 s) is 8 times the outbox: the drop comes within the first eighth and the
    measured half is long enough to tell a per-event leak from noise (steady state: ~3 bytes per event).
    The long run: ``SYNCLEDGER_LOAD_EVENTS=100000 pytest tests/e2e/test_load.py -k dead_subscriber``.
    In-memory ledger and memory streams: MockClock-safe."""
    chunk = 250
    assert EVENTS % chunk == 0 and EVENTS >= 8 * 1024
    srv = await start_server(db=":memory:", threaded=False, outbox_size=1024)
    dead, dead_server_end = trio.testing.lockstep_stream_pair()  # its socket is never read
    nursery.start_soon(srv._tcp_connection, dead_server_end)
    tracing_from, measured_from = EVENTS // 4, EVENTS // 2
    at_middle = at_end = 0
    async with mem_client(srv) as writer, mem_client(srv) as live:
        login = await add_account(writer)
        await live.call("Subscribe", {"chanels": ["trade:event"]})
        await dead.send_all(b'{"command":"Subscribe","data":{"chanels":["trade:event"]},"__token":"'
                            + writer.token.encode() + b'"}\r\n')
        await trio.sleep(0.01)
        assert len(srv.broker.subscribers) == 2
        expected = 1
        try:
            for written in range(chunk, EVENTS + 1, chunk):
                calls = [writer.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(chunk)]
                for call in calls:
                    assert (await call.reply()).ok
                del calls, call  # measure at quiet points: nothing of this chunk is held
                while True:  # the live subscriber keeps up and sees every event, in order
                    try:
                        event = live.receive_event_nowait()
                    except trio.WouldBlock:
                        break
                    assert event["seq"] == expected
                    expected += 1
                event = None
                if written == tracing_from:  # the dead subscriber is long gone by now
                    assert srv.broker.dropped == 1 and len(srv.broker.subscribers) == 1
                    tracemalloc.start()
                elif written == measured_from:
                    gc.collect()  # retained memory, not garbage that a collection has yet to free
                    at_middle = tracemalloc.get_traced_memory()[0]
            gc.collect()
            at_end = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        while expected <= EVENTS:
            assert (await live.receive_event())["seq"] == expected
            expected += 1
    assert srv.broker.dropped == 1
    growth = at_end - at_middle
    assert growth < 32 * (EVENTS - measured_from), f"{growth} bytes more after {EVENTS - measured_from} events"
    await assert_ledger_ok(srv)


async def test_silent_connections_are_closed_after_the_idle_timeout(start_server, autojump_clock):
    srv = await start_server(db=":memory:", threaded=False, idle_timeout=30, silent_timeout=30)
    streams = [connect_memory(srv) for _ in range(50)]
    await trio.sleep(1)
    assert len(srv.connections) == 50
    async with mem_client(srv) as busy:  # a connection that keeps talking stays
        for _ in range(5):
            await trio.sleep(10)
            assert (await busy.call("Ping")).ok
        assert len(srv.connections) == 1
    for stream in streams:
        assert await stream.receive_some(10) == b""  # closed by the server
