"""Load: 1,000 TCP connections with …Sync traffic, a dead subscriber while 100,000 events flow, and
connections that never send a byte."""

from __future__ import annotations

import resource
import tracemalloc
from decimal import Decimal

import pytest
import trio
import trio.testing

from server.app import serve
from tests.conftest import add_account, assert_ledger_ok, make_config, mem_client, tcp_client

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


async def test_dead_subscriber_is_dropped_while_100000_events_flow(nursery, autojump_clock):
    srv = await nursery.start(serve, make_config(db=":memory:", threaded=False, outbox_size=1024))
    dead, dead_server_end = trio.testing.lockstep_stream_pair()  # its socket is never read
    nursery.start_soon(srv._tcp_connection, dead_server_end)
    async with mem_client(srv) as writer, mem_client(srv) as live:
        login = await add_account(writer)
        await live.call("Subscribe", {"chanels": ["trade:event"]})
        await dead.send_all(b'{"command":"Subscribe","data":{"chanels":["trade:event"]},"__token":"'
                            + writer.token.encode() + b'"}\r\n')
        await trio.sleep(0.01)
        assert len(srv.broker.subscribers) == 2
        seen = 0
        expected = 1
        peak_during = 0
        for chunk in range(0, 100_000, 250):
            calls = [writer.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(250)]
            for call in calls:
                assert (await call.reply()).ok
            while True:  # the live subscriber keeps up and sees every event, in order
                try:
                    event = live.receive_event_nowait()
                except trio.WouldBlock:
                    break
                assert event["seq"] == expected
                expected += 1
                seen += 1
            if chunk == 80_000:  # by now the dead subscriber is long gone: memory must not keep growing
                tracemalloc.start()
            if tracemalloc.is_tracing():
                peak_during = max(peak_during, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        while seen < 100_000:
            assert (await live.receive_event())["seq"] == expected
            expected += 1
            seen += 1
    assert srv.broker.dropped == 1
    # bounded: 20,000 more events allocate far less than they would if anyone kept them (~10 MB)
    assert peak_during < 2 * 1024 * 1024


async def test_silent_connections_are_closed_after_the_idle_timeout(nursery, autojump_clock):
    srv = await nursery.start(serve, make_config(db=":memory:", threaded=False, idle_timeout=30))
    streams = [srv.connect_memory() for _ in range(50)]
    await trio.sleep(1)
    assert len(srv.connections) == 50
    async with mem_client(srv) as busy:  # a connection that keeps talking stays
        for _ in range(5):
            await trio.sleep(10)
            assert (await busy.call("Ping")).ok
        assert len(srv.connections) == 1
    for stream in streams:
        assert await stream.receive_some(10) == b""  # closed by the server
