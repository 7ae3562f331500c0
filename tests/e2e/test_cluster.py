"""Several nodes on one PostgreSQL ledger (issue 15, phase 2): two cluster Stores taking random batches by turns
give a single node's answers, rows and hash chain, each publishing every event once and in seq order; a failed
batch keeps what its node caught up; order numbers never collide; the lock lets nodes share a ledger and still
keeps a lone server alone; two in-process servers serve one ledger (a subscriber on one sees the other's events,
…Sync answered where it was asked, a retry on the other node replays)."""

from __future__ import annotations

import random
import sqlite3

import psycopg
import pytest
import trio

from bench.crash_test import MANAGER, SECRET, ServerProcess
from syncledger.ledger import Finance, FinanceRequest, Store, verify, verify_path
from syncledger.ledger import store as store_module
from syncledger.ledger.store import CatchUp, LedgerOpenError
from syncledger.ledger.wallet import OpenSession
from syncledger.server.core import lockfile
from syncledger.server.core.tail import Tail, parse_note
from syncledger.server.auth import SESSION_MANAGER, Tokens
from syncledger.server.client import ConnectionLost, connect
from syncledger.server.core.lockfile import LedgerLock, LedgerLocked
from tests.conftest import add_account, admin_token, tcp_client
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)
from tests.ledger.test_batch_writer import NOW, U, Crash, _command, _generator, _outcome

_SETUP = (
    [store_module.AddAccount(f"a{i}", ("EUR", "USD")[i % 2], NOW) for i in range(4)],
    [OpenSession(login, f"sid-{login}", NOW, 3600) for login in (1000, 1001, 1002)],
    [Finance(FinanceRequest("BalanceIn", login, 60 * U), NOW) for login in range(1000, 1004)],
)


def _node(url: str) -> Store:
    store = Store(url, synchronous="OFF", cluster=True)
    store.register(Crash, lambda c: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error (simulated)")))
    return store


def _answers(outcomes) -> list[tuple]:
    """Each outcome; an INTERNAL error by status and code alone (its message is the engine's own words)."""
    answers = []
    for o in outcomes:
        error, data, events, replay = _outcome(o)
        answers.append((error[:2] if error and error[1] == "INTERNAL" else error, data, events, replay))
    return answers


class Node:
    """A cluster Store and the events it published, in the order a mainLoop publishes them."""

    def __init__(self, url: str):
        self.store = _node(url)
        self.opened_at = self.store.seq  # what it published starts after this
        self.published: list[int] = []

    def apply(self, commands: list) -> list:
        outcomes = self.store.apply_batch([CatchUp(), *commands])
        for o in outcomes:
            self.published += [e.seq for e in o.events]
        return outcomes[1:]


@pytest.mark.parametrize("seed", range(3))
def test_two_nodes_taking_turns_answer_as_one_node(tmp_path, pg_url, seed):
    """The same random batches on one SQLite store, and on two cluster nodes of one PostgreSQL ledger taking
    them in random turns: the same answers (order numbers included), the same rows and hash chain; each node's
    totals right and its published events 1..N, each once, in order."""
    one = Store(str(tmp_path / "one.db"), synchronous="OFF")
    for batch in _SETUP:
        one.apply_batch(batch)
    first = Node(pg_url)
    for batch in _SETUP:
        first.apply(batch)
    nodes = [first, Node(pg_url)]  # the second opens on a ledger that is not empty
    rng = random.Random(seed)
    batch = _generator(seed, hard=False)
    seen: set = set()
    try:
        for n in range(60):
            specs = batch(one)
            node = rng.choice(nodes)
            got = _answers(node.apply([_command(store_module, s) for s in specs]))
            want = _answers(one.apply_batch([_command(store_module, s) for s in specs]))
            assert got == want, f"batch {n} on node {nodes.index(node)}: {specs}"
            seen |= {o[0][1] if o[0] else ("replay" if o[3] else "applied") for o in got}
        for node in nodes:
            node.apply([])  # (a batch of a CatchUp alone: read from a snapshot)
            assert node.published == list(range(node.opened_at + 1, one.seq + 1))
            assert node.store.seq == one.seq and node.store.event_head == one.event_head
            assert node.store.finance_head == one.finance_head
            for login, totals in node.store.accounts.items():
                assert totals == one.accounts[login]
        assert nodes[1].opened_at == 4
        assert nodes[0].store.reserve_order() == nodes[1].store.reserve_order() == one.reserve_order()
        assert verify(first.store.db).ok and verify(first.store.db).head == verify(one.db).head
        events = "SELECT seq, type, record_id, data, hash FROM events ORDER BY seq"
        assert first.store.db.execute(events).fetchall() == one.db.execute(events).fetchall()
        assert {"applied", "replay", "IDEMPOTENCY_CONFLICT", "NO_MONEY", "ACCOUNT_EXISTS"} <= seen, seen
    finally:
        one.close()
        for node in nodes:
            node.store.close()


def test_a_failed_batch_keeps_what_its_node_caught_up(pg_url):
    """A node catches up under the head lock, then its batch fails and rolls back: what the other node
    committed stays taken in (published once, with the next batch), the chain goes on, nothing collides."""
    a = Node(pg_url)
    for batch in _SETUP:
        a.apply(batch)
    b = Node(pg_url)
    assert b.opened_at == 4  # (the setup's four credits: orders 1-4)
    a.apply([Finance(FinanceRequest("BalanceIn", 1000, U), NOW), Finance(FinanceRequest("CreditIn", 1001, U), NOW)])
    with pytest.raises(sqlite3.OperationalError):  # it took order 7 before it failed
        b.apply([Finance(FinanceRequest("BalanceIn", 1002, U), NOW), Crash()])
    assert b.store.seq == 6 and b.published == []  # caught up; the events wait for its next batch
    [ok] = b.apply([Finance(FinanceRequest("BalanceIn", 1002, U), NOW)])
    assert b.published == [5, 6, 7] and ok.events[0].seq == 7 and ok.data.order == 8
    [again] = a.apply([Finance(FinanceRequest("BalanceIn", 1002, U), NOW)])
    assert a.published == [1, 2, 3, 4, 5, 6, 7, 8] and again.data.order == 9
    assert a.store.accounts[1002] == ("EUR", 62 * U, 0)
    report = verify(a.store.db)
    assert report.ok, report
    for node in (a, b):
        node.store.close()


def test_order_numbers_taken_by_a_batch_that_wrote_nothing_are_not_given_again(pg_url):
    """A batch whose every command was refused after taking an order number moves the head (the next number is
    kept beside it): the other node's next order is numbered after it, as a single node's would be."""
    a = Node(pg_url)
    for batch in _SETUP:
        a.apply(batch)
    b = Node(pg_url)
    [refused] = a.apply([Finance(FinanceRequest("BalanceOut", 1000, 1000 * U), NOW)])  # it took order 5
    assert refused.error.code == "NO_MONEY"
    [ok] = b.apply([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
    assert ok.data.order == 6
    for node in (a, b):
        node.store.close()


def test_accounts_another_node_made(pg_url):
    """A node finds accounts the other made (and their totals, and whether they are disabled) when first needed;
    a new login is numbered after every node's; an explicit login another node took is ACCOUNT_EXISTS."""
    a, b = Node(pg_url), Node(pg_url)
    a.apply([store_module.AddAccount("x", "EUR", NOW), store_module.AddAccount("y", "USD", NOW, enable=False)])
    a.apply([Finance(FinanceRequest("BalanceIn", 1000, 5 * U), NOW)])
    [credit, locked, taken, fresh] = b.apply([
        Finance(FinanceRequest("BalanceIn", 1000, U), NOW), Finance(FinanceRequest("BalanceIn", 1001, U), NOW),
        store_module.AddAccount("z", "EUR", NOW, login=1000), store_module.AddAccount("w", "EUR", NOW)])
    assert credit.data.login == 1000 and b.store.accounts[1000] == ("EUR", 6 * U, 0)
    assert locked.error.code == "ACCOUNT_DISABLED" and taken.error.code == "ACCOUNT_EXISTS"
    assert fresh.data["login"] == 1002
    [session, late] = a.apply([OpenSession(1002, "sid-w", NOW, 3600),  # b's account, found by a
                               Finance(FinanceRequest("BalanceIn", 1002, U), NOW)])
    assert session.error is None and session.data["login"] == 1002
    assert late.error is None and a.store.accounts[1002] == ("EUR", U, 0)
    assert verify(a.store.db).ok
    for node in (a, b):
        node.store.close()


def test_the_lock_lets_nodes_share_a_ledger_and_keeps_a_lone_server_alone(tmp_path, pg_url, monkeypatch):
    monkeypatch.setattr(lockfile, "PG_LOCK_GRACE", 0.1)
    Store(pg_url).close()
    first, second = LedgerLock.acquire(pg_url, cluster=True), LedgerLock.acquire(pg_url, cluster=True)
    try:
        with pytest.raises(LedgerLocked, match="already served by another syncledger"):
            LedgerLock.acquire(pg_url)
    finally:
        first.release()
        second.release()
    lone = LedgerLock.acquire(pg_url)
    try:
        with pytest.raises(LedgerLocked, match="nodes of a cluster cannot join a lone server"):
            LedgerLock.acquire(pg_url, cluster=True)
    finally:
        lone.release()
    with pytest.raises(LedgerOpenError, match="a cluster needs PostgreSQL"):
        LedgerLock.acquire(str(tmp_path / "l.db"), cluster=True)
    with pytest.raises(LedgerOpenError, match="a cluster needs PostgreSQL"):
        Store(str(tmp_path / "l.db"), cluster=True)


async def _events(client, n: int) -> list[dict]:
    with trio.fail_after(10):
        return [await client.receive_event() for _ in range(n)]


async def test_two_servers_on_one_ledger(start_server, pg_url):
    """Two in-process nodes (one with its writer in a process of its own, one with a thread) on one ledger:
    both take credits at once; a subscriber on each sees every event of both, once, in seq order; a …Sync on A
    is answered by A; a retry of A's request on B replays it; the ledger verifies."""
    Store(pg_url).close()
    a = await start_server(db=pg_url, cluster=True, writer="process")
    b = await start_server(db=pg_url, cluster=True, writer="thread")
    async with tcp_client(a, admin_token(a)) as ca, tcp_client(b, admin_token(b)) as cb, \
            tcp_client(a, admin_token(a)) as sub_a, tcp_client(b, admin_token(b)) as sub_b:
        first, second = await add_account(ca), await add_account(cb)
        assert second == first + 1
        for sub in (sub_a, sub_b):
            assert (await sub.call("Subscribe", {"chanels": ["trade:event"]})).ok

        async def credit(client, login: int, amount: int) -> None:
            assert (await client.call("CreditIn", {"login": login, "amount": amount, "comment": "c"})).ok

        async def credits(client, login: int, n: int) -> None:
            async with trio.open_nursery() as calls:
                for i in range(n):
                    calls.start_soon(credit, client, login, 1 + i % 3)

        async with trio.open_nursery() as load:
            load.start_soon(credits, ca, second, 60)
            load.start_soon(credits, cb, first, 60)
        synced = await ca.call("CreditInSync", {"login": first, "amount": 7, "comment": "s"}, ext_id="sync-on-a")
        assert synced.ok and synced.data["login"] == first and synced.data["profit"] == 7
        retried = await cb.call("CreditInSync", {"login": first, "amount": 7, "comment": "s"}, ext_id="sync-on-a")
        assert retried.ok and retried.data == synced.data  # replayed by B: nothing applied twice
        seqs = {name: [e["seq"] for e in await _events(sub, 121)] for name, sub in (("a", sub_a), ("b", sub_b))}
        assert seqs["a"] == seqs["b"] == list(range(seqs["a"][0], seqs["a"][0] + 121)), seqs
        for sub in (sub_a, sub_b):
            with pytest.raises(trio.WouldBlock):
                sub.receive_event_nowait()  # the replay applied nothing: no event
        for client in (ca, cb):
            user = await client.call("GetUser", {"login": first})
            assert user.data["credit"] == 60 * 2 + 7  # (1+2+3)*20 on B, and 7 on A
    report = verify_path(pg_url)
    assert report.ok, report
    await a.shutdown()
    await b.shutdown()


async def test_a_subscriber_moving_over_names_a_seq_this_node_has_not_published_yet(start_server, pg_url, monkeypatch):
    """A subscriber that saw seq N on node A reconnects to B with from_seq; B's tail has not brought N yet (here
    it brings nothing): B catches up first, then replays, instead of answering FROM_SEQ_AHEAD."""
    Store(pg_url).close()
    a = await start_server(db=pg_url, cluster=True, writer="thread")

    async def deaf(self) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(Tail, "run", deaf)  # B hears of A's batches only when it asks
    b = await start_server(db=pg_url, cluster=True, writer="thread")
    async with tcp_client(a, admin_token(a)) as ca, tcp_client(b, admin_token(b)) as sub:
        login = await add_account(ca)
        for amount in (1, 2, 3):
            assert (await ca.call("CreditIn", {"login": login, "amount": amount, "comment": "c"})).ok
        assert a.mainloop.committed_seq == 3 and b.mainloop.committed_seq == 0
        reply = await sub.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 1})
        assert reply.ok, reply
        assert [e["seq"] for e in await _events(sub, 2)] == [2, 3]
        ahead = await sub.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 4})
        assert ahead.ok  # (already subscribed: nothing fresh, so nothing to check)
    await a.shutdown()
    await b.shutdown()


async def test_kill_9_of_one_node_while_the_other_serves(tmp_path, pg_url):
    """Two ``syncledger serve --cluster`` processes on one ledger, credits pipelined into both; one is killed
    with SIGKILL mid-storm. Every request either node acknowledged is in the ledger exactly once and nothing
    else is; the survivor answers all of its own, before and after the kill; the restarted node catches up:
    the retries of the requests the kill cut are applied once (replayed where the dead node had committed
    them), its totals are the ledger's, its subscriber sees the survivor's next event; both stop with 0."""
    Store(pg_url).close()
    _rows(pg_url, "INSERT INTO managers (login, password_hash, session, created) VALUES (%s, '!', %s, 0) "
                  "RETURNING login", (MANAGER, SESSION_MANAGER))  # (a manager with no password: tokens only)
    token = Tokens(SECRET).issue(MANAGER, SESSION_MANAGER)[0]
    a, b = ServerProcess(pg_url, str(tmp_path), 0, cluster=True), \
        ServerProcess(pg_url, str(tmp_path), 1, writer="thread", cluster=True)
    nodes = [a, b]
    try:
        for node in nodes:
            await node.start()
        async with connect("127.0.0.1", b.tcp, token) as c:
            login = (await c.call("AddUser", {"name": "p", "currency": "EUR"})).data["login"]
        sent: dict[str, int] = {}
        acked: dict[str, int] = {}

        in_flight = {"a": 0, "b": 0}

        async def answered(call, prefix: str) -> None:
            try:
                reply = await call.reply()
            except ConnectionLost:
                return
            finally:
                in_flight[prefix] -= 1
            assert reply.ok, reply
            acked[call.ext_id] = sent[call.ext_id]

        async def storm(client, prefix: str, n: int, pace: float) -> None:
            """Up to ``n`` credits, 200 in flight at most, until the connection is cut."""
            async with trio.open_nursery() as replies:
                for i in range(n):
                    while in_flight[prefix] >= 200 and not client.closed.is_set():
                        await trio.sleep(0.001)
                    if client.closed.is_set():
                        break
                    ext_id = f"{prefix}{i}"
                    sent[ext_id] = 1 + i % 5
                    in_flight[prefix] += 1
                    replies.start_soon(answered, client.start(
                        "CreditIn", {"login": login, "amount": sent[ext_id], "comment": "c"}, ext_id=ext_id), prefix)
                    if i % 10 == 9:
                        await trio.sleep(pace)

        async with connect("127.0.0.1", a.tcp, token) as on_a, connect("127.0.0.1", b.tcp, token) as on_b:
            async with trio.open_nursery() as load:
                load.start_soon(storm, on_a, "a", 100_000, 0)  # until the kill
                load.start_soon(storm, on_b, "b", 400, 0.01)  # about 0.4 s: before, during and after the kill
                with trio.fail_after(10):
                    while sum(e.startswith("a") for e in acked) < 100:  # A in the middle of its storm
                        await trio.sleep(0.005)
                a.kill()
        await a.wait()
        cut = [e for e in sent if e.startswith("a") and e not in acked]
        print(f"acknowledged {len(acked)} of {len(sent)} (node A: {len(acked) - 400}), {len(cut)} cut by the kill")
        assert all(e in acked for e in sent if e.startswith("b")) and cut and len(acked) > 400, len(acked)

        def committed() -> dict[str, int]:
            rows = _rows(pg_url, "SELECT ext_id, amount FROM finance WHERE login = %s", (login,))
            assert len(rows) == len({e for e, _ in rows}), "a request applied twice"
            return {e: amount // U for e, amount in rows}
        found = committed()
        assert acked.items() <= found.items() and found.keys() <= sent.keys()
        assert verify_path(pg_url).ok

        a = nodes[0] = ServerProcess(pg_url, str(tmp_path), 2, writer="thread", cluster=True)
        await a.start()
        async with connect("127.0.0.1", a.tcp, token) as on_a, connect("127.0.0.1", b.tcp, token) as on_b:
            retries = [on_a.start("CreditIn", {"login": login, "amount": sent[e], "comment": "c"}, ext_id=e) for e in cut]
            for call in retries:
                assert (await call.reply()).ok
            assert committed() == sent
            user = await on_a.call("GetUser", {"login": login})
            assert user.data["credit"] == sum(sent.values())
            assert (await on_a.call("Subscribe", {"chanels": ["trade:event"]})).ok
            synced = await on_b.call("CreditInSync", {"login": login, "amount": 1, "comment": "s"})
            with trio.fail_after(10):
                event = await on_a.receive_event()
            assert event["seq"] == synced.data["seq"] and event["data"]["order"] == synced.data["order"]
        report = verify_path(pg_url)
        assert report.ok and report.head.startswith(f"{len(sent) + 1}:"), report
        assert await a.stop() == 0 and await b.stop() == 0, a.log_tail() + b.log_tail()
    finally:
        for node in nodes:
            node.ensure_dead()


def _rows(url: str, sql: str, params: tuple) -> list[tuple]:
    with psycopg.connect(url) as db:
        return db.execute(sql, params).fetchall()


def test_a_catch_up_too_long_to_hold_is_skipped_not_held(pg_url, monkeypatch):
    """Node B, idle while node A commits more events than CATCH_UP_HELD (here 5): B's catch-up does not hold
    them (its CatchUp says up to which seq it skipped, with no events) yet takes in every total and both
    heads from the rows, streamed; B's next batch chains on and the ledger verifies. A shorter stretch is
    still carried to be published."""
    monkeypatch.setattr(store_module, "CATCH_UP_HELD", 5)
    a = Node(pg_url)
    for batch in _SETUP:
        a.apply(batch)
    b = Node(pg_url)
    a.apply([Finance(FinanceRequest("CreditIn", 1000 + i % 4, (i + 1) * U), NOW) for i in range(3)])
    [short] = b.store.apply_batch([CatchUp()])
    assert short.data is None and [e.seq for e in short.events] == [5, 6, 7]
    a.apply([Finance(FinanceRequest("CreditIn", 1000 + i % 4, (i + 1) * U), NOW) for i in range(8)])
    [skipped] = b.store.apply_batch([CatchUp()])
    assert skipped.data == 15 and skipped.events == []
    assert b.store.accounts == a.store.accounts and (b.store.seq, b.store.event_head) == (a.store.seq, a.store.event_head)
    assert (b.store.finance_id, b.store.finance_head) == (a.store.finance_id, a.store.finance_head)
    [ok] = b.apply([Finance(FinanceRequest("BalanceIn", 1001, U), NOW)])
    assert ok.error is None and ok.events[0].seq == 16
    report = verify_path(pg_url)
    assert report.ok, report


async def test_a_node_too_far_behind_lets_its_subscribers_replay(start_server, pg_url, monkeypatch):
    """Node B hears of A's batches only when it asks; A commits more events than B may hold (here 2). When B
    catches up it publishes none of them: its live subscriber is dropped, told to reconnect with from_seq,
    and the replay from the ledger brings every event, in order; B's totals are the ledger's."""
    monkeypatch.setattr(store_module, "CATCH_UP_HELD", 2)
    Store(pg_url).close()
    a = await start_server(db=pg_url, cluster=True, writer="thread")

    async def deaf(self) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(Tail, "run", deaf)
    b = await start_server(db=pg_url, cluster=True, writer="thread")
    async with tcp_client(a, admin_token(a)) as ca, tcp_client(b, admin_token(b)) as sub:
        login = await add_account(ca)
        assert (await sub.call("Subscribe", {"chanels": ["trade:event"]})).ok
        for amount in range(1, 6):
            assert (await ca.call("CreditIn", {"login": login, "amount": amount, "comment": "c"})).ok
        assert await b.newest_seq(5) == 5
        with trio.fail_after(5):
            await sub.closed.wait()
        with pytest.raises(trio.EndOfChannel):
            sub.receive_event_nowait()  # (closed, with no event)
    async with tcp_client(b, admin_token(b)) as again:
        assert (await again.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 0})).ok
        assert [e["seq"] for e in await _events(again, 5)] == [1, 2, 3, 4, 5]
        assert (await again.call("GetUser", {"login": login})).data["credit"] == 15
    await a.shutdown()
    await b.shutdown()


async def test_a_node_is_not_woken_by_its_own_notifications(start_server, pg_url):
    """Each batch tells the other nodes with NOTIFY, signed by its node: a node's tail hears its own batches'
    notifications and leaves them alone (its mainLoop published those events already; a catch-up for each
    would be a spare read per batch), and is woken by the other node's."""
    Store(pg_url).close()
    a = await start_server(db=pg_url, cluster=True, writer="process")
    b = await start_server(db=pg_url, cluster=True, writer="thread")
    async with tcp_client(a, admin_token(a)) as ca, tcp_client(b, admin_token(b)) as cb:
        login = await add_account(ca)
        for amount in range(1, 11):
            assert (await ca.call("CreditIn", {"login": login, "amount": amount, "comment": "c"})).ok
        with trio.fail_after(10):
            while b.tail.woken == 0 or a.tail.notes < 10:
                await trio.sleep(0.01)
        assert a.tail.woken == 0
        assert (await cb.call("CreditIn", {"login": login, "amount": 1, "comment": "c"})).ok
        with trio.fail_after(10):
            while a.tail.woken == 0:
                await trio.sleep(0.01)
        assert (await ca.call("GetUser", {"login": login})).data["credit"] == 56
    await a.shutdown()
    await b.shutdown()


def test_a_notification_is_read_whatever_its_form():
    """``schema seq node``, a schema name with spaces, and anything else (an older release's ``schema seq``):
    then Nones, and the tail catches up rather than fail."""
    assert parse_note("ledger_7 42 n1a2b") == ("ledger_7", 42, "n1a2b")
    assert parse_note("my ledger 42 ") == ("my ledger", 42, "")
    assert parse_note("ledger_7 42") == (None, None, None)
    assert parse_note("") == (None, None, None)
