"""Fan-out by bytes (issue 24, item 2): a committed batch's events are encoded once and every subscriber is
offered the same bytes once; a subscriber that already has the first events of a batch (the replay's hand-off)
is offered exactly the lines after its own; the bounds of an outbox stay those of one event at a time."""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import SimpleNamespace

import orjson
import trio

from syncledger.ledger import Event
from syncledger.server.core import broker
from syncledger.server.core.broker import Broker, Outbox
from tests.conftest import add_account, mem_client


def _events(first: int, last: int) -> list[Event]:
    return [Event(seq, 7, 100 + seq, b'{"order":%d,"seq":%d}' % (100 + seq, seq)) for seq in range(first, last + 1)]


class Sub:
    """A subscriber that records what it is offered."""

    frame = None

    def __init__(self, room: int = 1 << 30):
        self.offers: list[tuple[bytes, int]] = []
        self.put_pieces: list[bytes] = []
        self.room = room
        self.dropped: str | None = None

    def offer(self, lines: bytes, count: int = 1) -> bool:
        if count > self.room:
            return False
        self.room -= count
        self.offers.append((lines, count))
        return True

    async def put(self, lines: bytes) -> None:
        self.put_pieces.append(lines)

    def drop(self, reason: str) -> None:
        self.dropped = reason

    def seqs(self) -> list[int]:
        data = b"".join([lines for lines in self.put_pieces] + [lines for lines, _ in self.offers])
        return [orjson.loads(line)["seq"] for line in data.split(b"\r\n") if line]


def test_one_batch_is_encoded_once_and_every_subscriber_gets_the_same_bytes_once(monkeypatch):
    encoded = []
    real = broker.event_line
    monkeypatch.setattr(broker, "event_line", lambda event: encoded.append(event.seq) or real(event))
    for n in (1, 10, 500):
        b = Broker()
        subs = [Sub() for _ in range(n)]
        for sub in subs:
            b.subscribers[sub] = 0
        encoded.clear()
        b.publish(_events(1, 50))
        assert encoded == list(range(1, 51))  # fifty lines, whatever the number of subscribers
        assert all(len(sub.offers) == 1 and sub.offers[0][1] == 50 for sub in subs)  # one offer each
        assert len({id(sub.offers[0][0]) for sub in subs}) == 1  # one bytes object, shared
        assert subs[0].seqs() == list(range(1, 51))
        assert set(b.subscribers.values()) == {50}


def test_a_subscriber_that_has_part_of_the_batch_gets_the_lines_after_its_own():
    b = Broker()
    behind, inside, at_end, ahead = Sub(), Sub(), Sub(), Sub()
    b.subscribers.update({behind: 10, inside: 13, at_end: 20, ahead: 25})
    b.publish(_events(11, 20))
    assert behind.seqs() == list(range(11, 21)) and behind.offers[0][1] == 10
    assert inside.seqs() == list(range(14, 21)) and inside.offers[0][1] == 7
    assert at_end.offers == [] and ahead.offers == []  # nothing they have is sent again
    assert b.subscribers == {behind: 20, inside: 20, at_end: 20, ahead: 25}


def test_a_subscriber_without_room_for_the_batch_is_dropped_with_the_same_message():
    b = Broker()
    fast, slow = Sub(), Sub(room=5)
    b.subscribers.update({fast: 0, slow: 0})
    b.publish(_events(1, 6))
    assert slow.dropped == "subscriber too slow: events dropped; reconnect with from_seq"
    assert list(b.subscribers) == [fast] and b.dropped == 1 and fast.seqs() == list(range(1, 7))


async def test_an_outbox_counts_a_batch_as_its_events():
    """A piece of live events weighs as many messages as it holds (the bound of one event at a time); the
    messages are free again once the piece is taken, its bytes once they are sent."""
    box = Outbox(size=10, limit=1 << 20, stall=30)
    assert box.offer(b"a\r\n" * 6, 6) and box.offer(b"answer\r\n")
    assert not box.offer(b"b\r\n" * 4, 4)  # 6 + 1 + 4 > 10
    assert box.offer(b"b\r\n" * 3, 3)
    assert (box.queued, box.buffered) == (10, 18 + 8 + 9)
    first = box.receive.receive_nowait()
    box.taken(1)
    assert box.queued == 4 and box.offer(b"c\r\n" * 6, 6) and box.queued == 10
    box.sent(len(first))
    assert box.buffered == 8 + 9 + 18


def test_events_go_straight_to_the_socket_only_when_nothing_waits_and_they_would_fit():
    """``now``: an empty outbox writes the batch to its socket at once; what the socket does not take is buffered
    (and later events queue behind it); a batch that the outbox could not hold is not written either (the
    subscriber is dropped having been sent none of it, as one whose outbox is full)."""
    box = Outbox(size=4, limit=1 << 20, stall=30)
    writes: list[bytes] = []
    box.write_now = lambda data: writes.append(data) or len(data)
    assert not box.offer(b"a\r\n" * 5, 5, now=True) and writes == []
    assert box.offer(b"a\r\n" * 4, 4, now=True) and writes == [b"a\r\n" * 4] and box.buffered == 0
    box.write_now = lambda data: writes.append(data) or 3  # the socket takes three bytes
    assert box.offer(b"b\r\nc\r\n", 2, now=True) and (box.buffered, box.queued) == (3, 2)
    assert box.offer(b"d\r\n", 1, now=True) and len(writes) == 2  # behind what waits: buffered
    assert box.offer(b"answer\r\n")  # (an answer is never written at once)
    assert [box.receive.receive_nowait() for _ in range(3)] == [b"c\r\n", b"d\r\n", b"answer\r\n"]

    def full(data: bytes) -> int:
        raise BlockingIOError
    empty = Outbox(size=4, limit=1 << 20, stall=30)
    empty.write_now = full
    assert empty.offer(b"e\r\n", 1, now=True) and empty.receive.receive_nowait() == b"e\r\n"


class Loop:
    """What Broker.subscribe asks of a mainLoop: its lock and a call on the store (here, a list of events that
    runs ahead of what was published, as a node of a cluster's ledger does with other nodes' events)."""

    def __init__(self, ledger: list[Event]):
        self.ledger, self.lock, self.committed_seq = ledger, trio.Lock(), 0
        self.store = SimpleNamespace(db=None)
        self.reads = 0

    def after(self, seq: int, limit: int) -> list[Event]:
        self.reads += 1
        return [e for e in self.ledger if e.seq > seq][:limit]

    async def call(self, fn, db, seq: int, limit: int) -> list[Event]:
        assert self.lock.locked()  # the tail: under the lock
        return self.after(seq, limit)

    async def read(self, fn, seq: int, limit: int) -> list[Event]:
        await trio.lowlevel.checkpoint()
        return self.after(seq, limit)


async def test_a_subscriber_at_the_hand_off_gets_exactly_the_events_after_its_seq(monkeypatch):
    """The ledger holds 1..23 while the broker has published up to 15 (a node of a cluster whose next batch
    brings other nodes' 16..23 and its own 24..30): a subscriber from seq 4 replays 5..23 from the ledger, goes
    live at 23, and is offered 24..30 of that batch, nothing twice and nothing missed; one already live gets
    16..30."""
    monkeypatch.setattr(broker, "REPLAY_PAGE", 5)
    ledger = _events(1, 23)
    loop = Loop(ledger)
    b = Broker()
    live = Sub()
    b.subscribers[live] = 15
    replaying = Sub()
    await b.subscribe(replaying, loop, 4, loop.read)
    assert b.subscribers[replaying] == 23
    b.publish(_events(16, 30))
    assert replaying.seqs() == list(range(5, 31))
    assert replaying.offers[-1][1] == 7  # one offer of the batch's last seven lines
    assert live.seqs() == list(range(16, 31))


async def test_subscribers_of_a_server_get_each_batch_in_one_piece(mem_server, autojump_clock, monkeypatch):
    """End to end, on the server: 40 credits sent at once (one batch: the connection's reader queues them all
    before the mainLoop runs) are encoded once for 12 subscribers; each subscriber is offered the batch once,
    and gets every event once, in order."""
    encoded = []
    real = broker.event_line
    monkeypatch.setattr(broker, "event_line", lambda event: encoded.append(event.seq) or real(event))
    offers: dict[int, list[int]] = {}
    real_offer = Outbox.offer

    def offer(self, data: bytes, count: int = 1, now: bool = False) -> bool:
        if data.startswith(b'{"event":"trade:event"'):
            offers.setdefault(id(self), []).append(count)
        return real_offer(self, data, count, now)
    monkeypatch.setattr(Outbox, "offer", offer)
    async with mem_client(mem_server) as writer, AsyncExitStack() as stack:
        login = await add_account(writer)
        subs = [await stack.enter_async_context(mem_client(mem_server)) for _ in range(12)]
        for sub in subs:
            assert (await sub.call("Subscribe", {"chanels": ["trade:event"]})).ok
        batches = mem_server.mainloop.batches
        calls = [writer.start("CreditIn", {"login": login, "amount": 1, "comment": "x"}) for _ in range(40)]
        for call in calls:
            assert (await call.reply()).ok
        assert mem_server.mainloop.batches == batches + 1
        assert encoded == list(range(1, 41))  # once each, not once per subscriber
        assert list(offers.values()) == [[40]] * 12  # one offer per subscriber
        for sub in subs:
            assert [(await sub.receive_event())["seq"] for _ in range(40)] == list(range(1, 41))


# ---- replays at one position share their pages


async def test_replays_at_one_position_read_and_encode_each_page_once(monkeypatch):
    """Fifty subscribers replaying from seq 4 at once: each page of the ledger is read (and encoded) once for all
    of them; each gets 5..23, nothing twice; once no replay runs, no page is kept."""
    monkeypatch.setattr(broker, "REPLAY_PAGE", 5)
    encoded = []
    real = broker.event_line
    monkeypatch.setattr(broker, "event_line", lambda event: encoded.append(event.seq) or real(event))
    loop = Loop(_events(1, 23))
    b = Broker()
    subs = [Sub() for _ in range(50)]
    async with trio.open_nursery() as nursery:
        for sub in subs:
            nursery.start_soon(b.subscribe, sub, loop, 4, loop.read)
    assert b.pages_read == 4  # after 4, 9, 14 (whole pages) and 19 (the last, short one)
    assert sorted(encoded) == list(range(5, 24))
    assert loop.reads == 4 + 50  # and each subscriber's tail, under the lock (empty here)
    assert all(sub.seqs() == list(range(5, 24)) for sub in subs)
    assert all(b.subscribers[sub] == 23 for sub in subs)
    assert not b._pages and not b._reading


async def test_a_page_read_that_fails_is_read_again_by_a_replay_that_waited_for_it(monkeypatch, autojump_clock):
    monkeypatch.setattr(broker, "REPLAY_PAGE", 5)
    loop = Loop(_events(1, 12))
    failing = [True]

    async def read(fn, seq: int, limit: int) -> list[Event]:
        await trio.sleep(1)
        if failing and seq == 0:
            failing.clear()
            raise RuntimeError("the read failed")
        return loop.after(seq, limit)
    b = Broker()
    first, second = Sub(), Sub()

    async def fails() -> None:
        try:
            await b.subscribe(first, loop, 0, read)
        except RuntimeError:
            pass
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fails)
        await trio.sleep(0.5)  # the second waits for the first one's read of the page after 0
        nursery.start_soon(b.subscribe, second, loop, 0, read)
    assert first.seqs() == [] and first not in b.subscribers
    assert second.seqs() == list(range(1, 13)) and b.subscribers[second] == 12


async def test_many_subscribers_replaying_from_one_seq_read_each_page_once(mem_server, autojump_clock, monkeypatch):
    """On the server (an in-memory ledger: its pages are read between batches): 12 subscribers from seq 0 at
    once over 30 events in pages of 10: the pages after 0, 10 and 20 are read once each; every subscriber gets
    1..30, then the live events."""
    from syncledger.ledger import reads
    monkeypatch.setattr(broker, "REPLAY_PAGE", 10)
    read_at: dict[int, int] = {}
    real = reads.events_after

    def events_after(db, seq: int, limit: int = 1000):
        read_at[seq] = read_at.get(seq, 0) + 1
        return real(db, seq, limit)
    monkeypatch.setattr(reads, "events_after", events_after)
    async with mem_client(mem_server) as writer, AsyncExitStack() as stack:
        login = await add_account(writer)
        for _ in range(30):
            assert (await writer.call("CreditIn", {"login": login, "amount": 1, "comment": "x"})).ok
        subs = [await stack.enter_async_context(mem_client(mem_server)) for _ in range(12)]
        calls = [sub.start("Subscribe", {"chanels": ["trade:event"], "from_seq": 0}) for sub in subs]
        for call in calls:
            assert (await call.reply()).ok
        for sub in subs:
            assert [(await sub.receive_event())["seq"] for _ in range(30)] == list(range(1, 31))
        assert (await writer.call("CreditIn", {"login": login, "amount": 1, "comment": "live"})).ok
        for sub in subs:
            assert (await sub.receive_event())["seq"] == 31
    assert (read_at[0], read_at[10], read_at[20]) == (1, 1, 1)
    assert mem_server.broker.pages_read <= 4 and not mem_server.broker._pages


# ---- on sockets: a batch goes straight to the socket of a subscriber with nothing else to send


async def test_subscribers_on_sockets_get_every_event_once_in_order_and_a_stalled_one_is_dropped(start_server, caplog):
    """Real sockets: a batch is written to each subscriber's socket at once when its outbox is empty (here
    counted), buffered for its writer task when the socket does not take it whole. Three subscribers that read
    (one of them the writing client, whose answers go between the events) get all 3,000 events once, in order;
    one that never reads (a small receive buffer) is dropped with the usual message, the others go on."""
    import socket as stdlib_socket
    from syncledger.server.testing import Harness
    from tests.conftest import tcp_client
    caplog.set_level("INFO", logger="syncledger")
    srv = await start_server(outbox_size=512)
    h = Harness(srv)
    async with tcp_client(srv) as writer, tcp_client(srv) as a, tcp_client(srv) as b:
        login = await add_account(writer)
        for c in (writer, a, b):
            assert (await c.call("Subscribe", {"chanels": ["trade:event"]})).ok
        stalled = trio.socket.socket()
        stalled.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
        await stalled.connect(("127.0.0.1", srv.ports.tcp))
        stalled_stream = trio.SocketStream(stalled)
        await stalled_stream.send_all(orjson.dumps({"command": "Subscribe", "data": {"chanels": ["trade:event"]},
                                                    "__token": h.token}) + b"\r\n")
        while len(srv.broker.subscribers) < 4:
            await trio.sleep(0.01)
        written = [0]
        for conn in srv.broker.subscribers:
            write = conn.outbox.write_now
            assert write is not None  # a plain socket

            def counted(data: bytes, write=write) -> int:
                written[0] += 1
                return write(data)
            conn.outbox.write_now = counted
        seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

        async def read(i: int, c) -> None:
            while len(seen[i]) < 3000:
                seen[i].append((await c.receive_event())["seq"])
        async with trio.open_nursery() as nursery:
            for i, c in enumerate((writer, a, b)):
                nursery.start_soon(read, i, c)
            for _ in range(30):
                calls = [writer.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(100)]
                for call in calls:
                    assert (await call.reply()).ok
        await stalled_stream.aclose()
    assert all(seqs == list(range(1, 3001)) for seqs in seen.values())
    assert srv.broker.dropped == 1  # the stalled one
    assert any("subscriber too slow: events dropped; reconnect with from_seq" in r.getMessage() for r in caplog.records)
    assert written[0] > 30  # batches went straight to the sockets


# ---- subscribers of a frame (WebSocket ones): each piece framed once for all of them

class Framing:
    """A subscriber's ``frame`` that counts its calls (and marks what it made)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, piece: bytes) -> bytes:
        self.calls += 1
        return b"framed:" + piece


def test_subscribers_of_a_frame_are_offered_a_batch_framed_once_for_all():
    """Five subscribers of one frame share one framing of the batch (one bytes object); those of none get the
    lines as they are; one at the hand-off is offered its own lines after its seq, framed."""
    frame = Framing()
    b = Broker()
    framed, plain, inside = [Sub() for _ in range(5)], [Sub() for _ in range(2)], Sub()
    for sub in (*framed, inside):
        sub.frame = frame
    b.subscribers.update({sub: 10 for sub in (*framed, *plain)})
    b.subscribers[inside] = 13
    b.publish(_events(11, 20))
    lines = b"".join(broker.event_line(e) for e in _events(11, 20))
    assert frame.calls == 2  # the batch, and the hand-off's slice
    assert all(sub.offers == [(b"framed:" + lines, 10)] for sub in framed)
    assert len({id(sub.offers[0][0]) for sub in framed}) == 1
    assert all(sub.offers == [(lines, 10)] for sub in plain)
    assert inside.offers == [(b"framed:" + b"".join(broker.event_line(e) for e in _events(14, 20)), 7)]


async def test_replays_of_a_frame_frame_each_page_once(monkeypatch):
    """Fifty subscribers of one frame replaying from seq 4 at once: each page's piece is framed once for all of
    them (kept with the page), and each is given the same bytes."""
    monkeypatch.setattr(broker, "REPLAY_PAGE", 5)
    frame = Framing()
    loop = Loop(_events(1, 23))
    b = Broker()
    subs = [Sub() for _ in range(50)]
    for sub in subs:
        sub.frame = frame
    async with trio.open_nursery() as nursery:
        for sub in subs:
            nursery.start_soon(b.subscribe, sub, loop, 4, loop.read)
    assert frame.calls == 4  # the pages after 4, 9, 14 and 19 (one piece each)
    pages = [b"framed:" + b"".join(broker.event_line(e) for e in _events(first, min(first + 4, 23)))
             for first in (5, 10, 15, 20)]
    assert all(sub.put_pieces == pages for sub in subs)
    assert all(len({id(sub.put_pieces[i]) for sub in subs}) == 1 for i in range(4))
