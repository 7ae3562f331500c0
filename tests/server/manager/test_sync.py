"""…Sync commands under MockClock on memory streams: event matching, 504 SYNC_TIMEOUT, replays, waiters."""

from __future__ import annotations

from decimal import Decimal

import trio

from syncledger.ledger.rules import EV_RECORD_ADD, EV_RECORD_DELETE, EV_RECORD_UPDATE
from tests.conftest import add_account, admin_token, assert_ledger_ok, event_count, mem_client
from tests.pgcluster import backend, every_backend, mem_db, mem_server, pg_cluster, pg_url  # noqa: F401  (fixtures)


@every_backend
async def test_credit_in_sync_answers_with_the_event_data(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        await c.call("Subscribe", {"chanels": ["trade:event"]})
        reply = await c.call("CreditInSync", {"login": login, "amount": Decimal("300.0"), "comment": "Promotion credit"},
                             ext_id="credit-req-1001")
        event = await c.receive_event()
    assert reply.ok and reply.ext_id == "credit-req-1001"
    assert reply.data == event["data"]  # the event's data alone, not the envelope
    assert event["type"] == EV_RECORD_ADD
    data = reply.data
    assert (data["login"], data["cmd"], data["state"], data["profit"], data["comment"]) == \
        (login, 7, 3, Decimal("300.0"), "Promotion credit")
    assert data["credit"] == Decimal("300.0") and data["balance"] == 0
    await assert_ledger_ok(mem_server)


@every_backend
async def test_update_and_delete_wait_for_their_event_types(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        await c.call("Subscribe", {"chanels": ["trade:event"]})
        first = await c.call("CreditInSync", {"login": login, "amount": 10, "comment": "a"})
        order = first.data["order"]
        update = await c.call("CreditInSync", {"login": login, "amount": 4, "comment": "b", "order": order})
        delete = await c.call("DeleteCreditSync", {"order": order})
        types = [(await c.receive_event())["type"] for _ in range(3)]
    assert types == [EV_RECORD_ADD, EV_RECORD_UPDATE, EV_RECORD_DELETE]
    assert (update.data["order"], update.data["version"], update.data["profit"], update.data["credit"]) == \
        (order, 2, Decimal(4), Decimal(4))
    assert (delete.data["order"], delete.data["state"], delete.data["credit"]) == (order, 6, 0)
    await assert_ledger_ok(mem_server)


async def test_unknown_order_creates_a_new_one(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        reply = await c.call("CreditInSync", {"login": login, "amount": 1, "comment": "x", "order": 999_999})
    assert reply.ok and reply.data["order"] != 999_999 and reply.data["version"] == 1


@every_backend
async def test_sync_timeout_after_5000_ms_then_applied_and_replayed(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        mem_server.mainloop.pause()
        start = trio.current_time()
        reply = await c.call("CreditInSync", {"login": login, "amount": 5, "comment": "late"}, ext_id="late-1")
        waited = trio.current_time() - start
        assert (reply.status, reply.error, reply.ext_id) == (504, "SYNC_TIMEOUT", "late-1")
        assert 5.0 <= waited < 5.01
        mem_server.mainloop.resume()
        await trio.sleep(0.01)  # let the held batch commit
        user = await c.call("GetUser", {"login": login})
        assert user.data["credit"] == Decimal(5)  # the transaction was still applied, once
        retry = await c.call("CreditInSync", {"login": login, "amount": 5, "comment": "late"}, ext_id="late-1")
        plain = await c.call("CreditIn", {"login": login, "amount": 5, "comment": "late"}, ext_id="late-1")
        user = await c.call("GetUser", {"login": login})
    assert retry.ok and retry.data["profit"] == Decimal(5) and retry.data["credit"] == Decimal(5)
    assert plain.ok and plain.data["accepted"] is True and plain.data["order"] == retry.data["order"]
    assert user.data["credit"] == Decimal(5)
    assert await event_count(mem_server) == 1
    await assert_ledger_ok(mem_server)


async def test_configured_sync_timeout(start_server, autojump_clock):
    srv = await start_server(db=":memory:", threaded=False, sync_timeout_ms=250)
    async with mem_client(srv) as c:
        login = await add_account(c)
        srv.mainloop.pause()
        start = trio.current_time()
        reply = await c.call("BalanceInSync", {"login": login, "amount": 1})
    assert reply.status == 504 and abs(trio.current_time() - start - 0.25) < 1e-6


@every_backend
async def test_idempotency_conflict_and_failed_first_attempt(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        out = await c.call("BalanceOutSync", {"login": login, "amount": 3}, ext_id="w-1")
        assert (out.status, out.error) == (409, "NO_MONEY")
        await c.call("BalanceIn", {"login": login, "amount": 10}, ext_id="d-1")
        again = await c.call("BalanceOutSync", {"login": login, "amount": 3}, ext_id="w-1")
        assert (again.status, again.error) == (409, "NO_MONEY")  # an id that failed stays failed
        changed = await c.call("BalanceIn", {"login": login, "amount": 11}, ext_id="d-1")
        assert (changed.status, changed.error) == (409, "IDEMPOTENCY_CONFLICT")
        user = await c.call("GetUser", {"login": login})
    assert user.data["balance"] == Decimal(10)
    await assert_ledger_ok(mem_server)


async def test_client_disconnecting_while_waiting(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
    mem_server.mainloop.pause()
    async with mem_client(mem_server) as gone:
        gone.start("CreditInSync", {"login": login, "amount": 7, "comment": "bye"})
        await trio.sleep(0.001)
    await trio.sleep(0.001)
    mem_server.mainloop.resume()
    await trio.sleep(6)  # past the sync timeout: nothing fires for the closed connection
    async with mem_client(mem_server) as c:
        user = await c.call("GetUser", {"login": login})
    assert user.data["credit"] == Decimal(7)
    assert len(mem_server.timeouts) == 0
    await assert_ledger_ok(mem_server)


@every_backend
async def test_1000_pipelined_sync_on_one_connection(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        calls = [c.start("CreditInSync", {"login": login, "amount": i + 1, "comment": f"n{i}"}, ext_id=f"p{i}")
                 for i in range(1000)]
        replies = [await call.reply() for call in calls]
    assert all(r.ok for r in replies)
    assert [r.data["comment"] for r in replies] == [f"n{i}" for i in range(1000)]
    assert [r.data["profit"] for r in replies] == [Decimal(i + 1) for i in range(1000)]
    assert len({r.data["order"] for r in replies}) == 1000
    by_order = sorted(replies, key=lambda r: r.data["order"])
    assert by_order[-1].data["credit"] == Decimal(500500)
    await assert_ledger_ok(mem_server)


async def test_waiters_of_two_connections_never_cross(mem_server, autojump_clock):
    # Two managers may use the same extID: idempotency is per manager login.
    async with mem_client(mem_server) as a, mem_client(mem_server, admin_token(mem_server, login=2)) as b:
        login = await add_account(a)
        order = (await a.call("CreditInSync", {"login": login, "amount": 1, "comment": "base"})).data["order"]
        mem_server.mainloop.pause()  # both land in one batch, updating the same order
        ca = a.start("CreditInSync", {"login": login, "amount": 2, "comment": "from-a", "order": order}, ext_id="same")
        cb = b.start("CreditInSync", {"login": login, "amount": 3, "comment": "from-b", "order": order}, ext_id="same")
        await trio.sleep(0.001)
        mem_server.mainloop.resume()
        ra, rb = await ca.reply(), await cb.reply()
    assert ra.data["comment"] == "from-a" and ra.data["profit"] == Decimal(2)
    assert rb.data["comment"] == "from-b" and rb.data["profit"] == Decimal(3)
    assert {ra.data["version"], rb.data["version"]} == {2, 3}


async def test_generated_ext_ids_never_repeat_across_connections(mem_server, autojump_clock):
    """Without an explicit extID, two connections' identical credits are two credits, not a replay."""
    async with mem_client(mem_server) as c:
        login = await add_account(c)
    for _ in range(2):
        async with mem_client(mem_server) as c:  # each connection sends the same two requests
            assert (await c.call("Ping")).ok
            assert (await c.call("CreditIn", {"login": login, "amount": 5, "comment": "same"})).ok
    async with mem_client(mem_server) as c:
        assert (await c.call("GetUser", {"login": login})).data["credit"] == Decimal(10)
