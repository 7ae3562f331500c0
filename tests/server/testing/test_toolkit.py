"""The testing toolkit tests itself: the pytest plugin, each fault switch, and the seeded scenario runner."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from syncledger.server.manager.commands import Dispatcher
from syncledger.server.scenario import run
from syncledger.server.testing import Harness, faults_of
from tests.conftest import mem_client


async def _events_now(client) -> list[dict]:
    events = []
    while True:
        try:
            events.append(client.receive_event_nowait())
        except trio.WouldBlock:
            return events


# ---- the plugin's fixtures


async def test_plugin_fixtures_run_the_whole_server(syncledger: Harness, syncledger_client, syncledger_ports,
                                                    syncledger_token, autojump_clock):
    assert syncledger_token == syncledger.token
    assert all(port > 0 for port in syncledger_ports)
    login = await syncledger.add_account(syncledger_client, balance=10)
    sid = (await syncledger_client.call("OpenGameSession", {"login": login})).data["sid"]
    bet = await syncledger.wallet("debit", {"sid": sid, "userId": str(login), "currency": "EUR",
                                            "transaction": {"id": "t1", "amount": Decimal("2.5")}, "uuid": "u"})
    assert (bet["status"], bet["balance"]) == ("OK", Decimal("7.5"))
    assert (await syncledger.verify()).ok


async def test_sid_expiry_follows_the_mock_clock(syncledger: Harness, syncledger_client, autojump_clock):
    login = await syncledger.add_account(syncledger_client, balance=10)
    sid = (await syncledger_client.call("OpenGameSession", {"login": login})).data["sid"]
    check = {"sid": sid, "userId": str(login)}
    assert (await syncledger.wallet("check", check))["status"] == "OK"
    await trio.sleep(syncledger.server.config.game_session_ttl + 1)
    assert (await syncledger.wallet("check", check))["status"] == "INVALID_SID"


# ---- fault switches: each shows its effect, and that nothing else changes


async def test_pause_and_resume(syncledger: Harness, syncledger_client, autojump_clock):
    c = syncledger_client
    login = await syncledger.add_account(c)
    syncledger.faults.pause()
    call = c.start("CreditIn", {"login": login, "amount": 3, "comment": "x"})
    await trio.sleep(60)
    assert not call._done.is_set() and syncledger.server.store.seq == 0
    syncledger.faults.resume()
    assert (await call.reply()).ok and syncledger.server.store.seq == 1


async def test_pausing_twice_then_resuming_runs_again(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        faults_of(mem_server).pause()
        faults_of(mem_server).pause()
        call = c.start("AddUser", {"name": "x", "currency": "EUR"})
        await trio.sleep(1)
        faults_of(mem_server).resume()
        assert (await call.reply()).ok


async def test_delay_commit_delays_only_the_next_batch(syncledger: Harness, syncledger_client, autojump_clock):
    c = syncledger_client
    login = await syncledger.add_account(c)
    syncledger.faults.delay_commit(2.0)
    start = trio.current_time()
    assert (await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"})).ok
    assert trio.current_time() - start == pytest.approx(2.0)
    start = trio.current_time()
    assert (await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"})).ok
    assert trio.current_time() - start < 0.001


async def test_fail_next_batch_applies_nothing_of_it(syncledger: Harness, syncledger_client, autojump_clock):
    c = syncledger_client
    login = await syncledger.add_account(c)
    syncledger.faults.pause()
    calls = [c.start("BalanceIn", {"login": login, "amount": 5}, ext_id=f"f{i}") for i in range(3)]
    await trio.sleep(0.01)
    syncledger.faults.fail_next_batch()
    syncledger.faults.resume()
    replies = [await call.reply() for call in calls]
    assert [(r.status, r.error) for r in replies] == [(500, "INTERNAL")] * 3
    assert syncledger.server.store.seq == 0
    retry = await c.call("BalanceIn", {"login": login, "amount": 5}, ext_id="f0")  # nothing was remembered
    assert retry.ok and (await c.call("GetUser", {"login": login})).data["balance"] == 5
    assert (await syncledger.verify()).ok


async def test_hold_events_then_504_then_retry_gets_the_final_record(syncledger: Harness, syncledger_client,
                                                                      autojump_clock):
    c = syncledger_client
    login = await syncledger.add_account(c)
    await c.call("Subscribe", {"chanels": ["trade:event"]})
    syncledger.faults.hold_events(1)
    reply = await c.call("CreditInSync", {"login": login, "amount": 7, "comment": "held"}, ext_id="h1")
    assert (reply.status, reply.error) == (504, "SYNC_TIMEOUT")
    assert await _events_now(c) == []  # committed, but not yet broadcast
    retry = await c.call("CreditInSync", {"login": login, "amount": 7, "comment": "held"}, ext_id="h1")
    assert retry.ok and retry.data["credit"] == 7
    syncledger.faults.release_events()
    await trio.sleep(0.01)
    assert [e["seq"] for e in await _events_now(c)] == [1]
    later = await c.call("CreditInSync", {"login": login, "amount": 1, "comment": "after"})
    assert later.ok  # only the held event was affected
    assert syncledger.server.store.seq == 2


async def test_drop_events_then_from_seq_recovers_them_once(syncledger: Harness, syncledger_client,
                                                           autojump_clock):
    c = syncledger_client
    login = await syncledger.add_account(c)
    async with syncledger.client() as sub:
        await sub.call("Subscribe", {"chanels": ["trade:event"]})
        syncledger.faults.drop_events(1)
        await c.call("CreditIn", {"login": login, "amount": 1, "comment": "a"})
        await c.call("CreditIn", {"login": login, "amount": 2, "comment": "b"})
        await trio.sleep(0.01)
        assert [e["seq"] for e in await _events_now(sub)] == [2]
    assert syncledger.faults.dropped == [1]
    async with syncledger.client() as again:  # the subscriber reconnects from what it last saw
        await again.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 0})
        await trio.sleep(0.01)
        assert [e["seq"] for e in await _events_now(again)] == [1, 2]


async def test_disconnect_a_client(syncledger: Harness, syncledger_client, autojump_clock):
    async with syncledger.client() as victim:
        assert (await victim.call("Ping")).ok
        assert syncledger.faults.disconnect(victim)
        await victim.closed.wait()
    assert (await syncledger_client.call("Ping")).ok


# ---- the scenario runner


def test_same_seed_gives_the_same_events_byte_for_byte():
    first, second = run(11, steps=80), run(11, steps=80)
    assert first.ok and second.ok, (first, second)
    assert first.events and first.events == second.events
    assert run(12, steps=80).events != first.events


class LateWaiter(Dispatcher):
    """A planted bug: the …Sync waiter is registered after the job was submitted, so the event may be
    published before anyone waits for it."""

    async def finance(self, op, sync, conn, pending, req, claims):
        job, types = self.finance_job(op, sync, pending, req, claims)
        await self.s.mainloop.submit(job)
        if sync:
            for _ in range(3):
                await trio.sleep(0)
            self.wait(pending, types)


def _plant(server) -> None:
    server.dispatcher = LateWaiter(server)


def test_scenario_runner_finds_a_planted_bug_and_its_seed_reproduces():
    failing = next((r for r in (run(seed, steps=60, prepare=_plant) for seed in range(10)) if not r.ok), None)
    assert failing is not None, "the planted bug was not found in 10 seeds"
    assert any("SYNC_TIMEOUT" in p for p in failing.problems)
    again = run(failing.seed, steps=60, prepare=_plant)
    assert again.problems == failing.problems and again.events == failing.events
