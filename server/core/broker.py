"""Fan-out of committed trade:events to subscribers, and replay from the ledger with ``from_seq``.

Each subscriber owns a bounded buffer (an :class:`Outbox`); one that cannot take the next events is dropped
at once, so a slow or dead subscriber never slows the mainLoop or anyone else. It reconnects with
``from_seq``. A committed batch's events are encoded once, into one bytes object that every subscriber's
outbox shares, and each subscriber is offered it once (a subscriber that already has the first events of the
batch, at the replay's hand-off, is offered the lines after its own). A subscriber whose wire wants its pieces
in another form (a WebSocket's frames: its ``frame``) is offered that form, made once a piece for all the
subscribers of that form (a replayed page's too, kept with the page). A replay buffers its events in pieces
of REPLAY_TURN lines, so that what a stalled replay holds is a few large allocations, which the C allocator
can give back (see limits.HeapTrim), not thousands of small ones.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import trio

from syncledger.ledger import Event, reads

from .. import wire
from ..limits import HeapTrim, SubscriberCap

if TYPE_CHECKING:
    from .mainloop import MainLoop

REPLAY_PAGE = 1000
REPLAY_TURN = 100  # replayed events in one buffered piece (between two checkpoints of the replaying task)
REPLAY_BYTES = 256 << 10  # replayed bytes a subscriber holds before its replay waits for the client
REPLAY_CACHE = 8  # encoded whole pages kept for the replays at the same position (while any replay runs)


class Subscriber(Protocol):
    # what its pieces become on its wire (the same function for every subscriber of a kind, so that a piece is
    # framed once for all of them); None: the lines as they are
    frame: Callable[[bytes], bytes] | None

    def offer(self, lines: bytes, count: int = 1) -> bool:
        """Buffer ``count`` event lines (one bytes object) without waiting; False if the buffer is full."""

    async def put(self, lines: bytes) -> None:
        """Buffer event lines, waiting for room (replay only, never from the mainLoop)."""

    def drop(self, reason: str) -> None:
        """Disconnect: the subscriber could not keep up."""


class Outbox:
    """A connection's bounded buffer of unsent bytes (answers, live events, replayed pieces): at most ``size``
    messages and ``limit`` bytes. A piece of live events counts as the events it holds (a batch's lines are one
    piece, bounded as if they were buffered one by one); an answer or a replayed piece counts as one. ``offer``
    never waits; ``put`` (a replay) waits while REPLAY_BYTES or half the messages are buffered, so that the rest
    stays free for answers and a stalled replay holds little. Whoever takes pieces from ``receive`` says so
    (:meth:`taken`), and :meth:`sent` once their bytes are out. ``write_now`` (set by a connection on a plain
    socket while its writer task runs) writes without waiting: events offered ``now`` to an outbox with
    nothing in it or under way go straight to the socket, whatever it does not take is buffered."""

    def __init__(self, size: int, limit: int, stall: float):
        # (a piece counts as one message at least: the channel never holds more than ``size`` pieces)
        self._send, self.receive = trio.open_memory_channel[bytes](size)
        self.size, self.limit, self.stall = size, limit, stall
        self.buffered = 0  # bytes in the buffer and in the write under way
        self.queued = 0  # messages in the buffer (not yet taken)
        self._counts: deque[int] = deque()  # the messages of each piece in the buffer, oldest first
        self._drained: trio.Event | None = None
        self.write_now: Callable[[bytes], int] | None = None
        self.closed = False

    def offer(self, data: bytes, count: int = 1, now: bool = False) -> bool:
        """Buffer ``data`` (``count`` messages) without waiting; False if the buffer is full (once closed, it is
        dropped). ``now``: first try to write it at once (see ``write_now``), if it would fit in the buffer
        (a subscriber dropped for a batch too large is sent none of it, as one that is buffered)."""
        if self.buffered + len(data) > self.limit or self.queued + count > self.size:
            return False
        if now and not self.buffered and self.write_now is not None:
            try:
                written = self.write_now(data)
            except OSError:  # (BlockingIOError: the socket is full; another error: the writer task meets it)
                written = 0
            if written == len(data):
                return True
            data = data[written:]  # (the rest is smaller: it fits)
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True
        self.buffered += len(data)
        self.queued += count
        self._counts.append(count)
        return True

    async def put(self, data: bytes) -> bool:
        """Buffer ``data`` once there is room for a replay; False if nothing was sent for ``stall`` seconds."""
        while self.buffered >= min(self.limit // 2, REPLAY_BYTES) or self.queued >= self.size // 2:
            self._drained = trio.Event()
            with trio.move_on_after(self.stall) as waited:
                await self._drained.wait()
            if waited.cancelled_caught:
                return False
        self.offer(data)
        return True

    def taken(self, pieces: int) -> None:
        """The oldest ``pieces`` pieces were taken from ``receive`` (their bytes are now the write under way)."""
        counts = self._counts
        for _ in range(pieces):
            self.queued -= counts.popleft()

    def sent(self, size: int) -> None:
        """``size`` bytes taken from the buffer are sent."""
        self.buffered -= size
        if self._drained is not None:
            self._drained.set()

    def close(self) -> None:
        """Take nothing more; what is buffered can still be received."""
        self.closed, self.write_now = True, None
        self._send.close()


def event_line(event: Event) -> bytes:
    return wire.event_json(event.seq, event.type, event.data) + wire.CRLF


def pieces(events: list[Event]) -> list[bytes]:
    """The lines of ``events``, joined REPLAY_TURN at a time."""
    return [b"".join(map(event_line, events[i:i + REPLAY_TURN])) for i in range(0, len(events), REPLAY_TURN)]


def _seq(event: Event) -> int:
    return event.seq


def split_lines(piece: bytes) -> list[bytes]:
    """The event messages (without line ends) of a buffered piece of one or more lines."""
    return piece[:-2].split(wire.CRLF)


class Broker:
    def __init__(self, cap: SubscriberCap | None = None, replay_slots: int = 2) -> None:
        self.subscribers: dict[Subscriber, int] = {}  # subscriber -> seq of the last event it was given
        self.dropped = 0
        self.cap = cap or SubscriberCap()  # (no cap unless one is given)
        self.trim = HeapTrim()
        # pages read at once, by all replays together: many replaying subscribers share the CPU that a
        # replay costs instead of multiplying it (a slot is never held while waiting for a client)
        self._replay_slots = trio.CapacityLimiter(replay_slots)
        # Encoded pages, by (the seq they follow, the page size): a whole page can no longer change, and the
        # replays at one position (400 subscribers from seq 0) share its read and its encoding. Kept while any
        # replay runs, at most REPLAY_CACHE of them; a page being read is waited for, not read again.
        self._pages: OrderedDict[tuple[int, int], _Page] = OrderedDict()
        self._reading: dict[tuple[int, int], _Reading] = {}
        self.replays = 0  # replays running
        self.pages_read = 0  # replay pages read from the ledger (and encoded)

    def publish(self, events: list[Event]) -> None:
        """Called by the mainLoop once per committed batch, ``events`` in seq order; never waits. The lines are
        encoded once, into one bytes object that every subscriber is offered once (framed once for all those of
        a ``frame``). Each subscriber gets each event once, in seq order: the events it already has (replayed
        from the ledger) are not sent again."""
        if not self.subscribers or not events:
            return
        lines = [event_line(e) for e in events]
        data = b"".join(lines)
        first, last, count = events[0].seq, events[-1].seq, len(events)
        starts: list[int] | None = None  # where each line begins in data (only if a subscriber needs a slice)
        framed: dict[Callable[[bytes], bytes], bytes] = {}  # data, by frame
        dropped = []
        for sub, seen in self.subscribers.items():
            frame = sub.frame
            if seen < first:
                if frame is None:
                    ok = sub.offer(data, count)
                else:
                    if (piece := framed.get(frame)) is None:
                        piece = framed[frame] = frame(data)
                    ok = sub.offer(piece, count)
            elif seen >= last:
                continue
            else:  # (at the replay's hand-off: it has the batch's first events)
                if starts is None:
                    starts, at = [], 0
                    for line in lines:
                        starts.append(at)
                        at += len(line)
                k = bisect_right(events, seen, key=_seq)
                piece = data[starts[k]:]
                ok = sub.offer(piece if frame is None else frame(piece), count - k)
            if ok:
                self.subscribers[sub] = last  # (an existing key: the dict's size does not change)
            else:
                dropped.append(sub)
        for sub in dropped:
            del self.subscribers[sub]
            self.dropped += 1
            sub.drop("subscriber too slow: events dropped; reconnect with from_seq")

    def skipped(self, seq: int) -> None:
        """A node of a cluster skipped publishing other nodes' events up to ``seq``, too many to hold: every
        live subscriber is dropped, and replays them from the ledger when it reconnects with ``from_seq``."""
        for sub in list(self.subscribers):
            del self.subscribers[sub]
            self.dropped += 1
            sub.drop(f"this node fell behind the ledger (events up to seq {seq}); reconnect with from_seq")

    def remove(self, sub: Subscriber, held: int = 0) -> None:
        """``sub`` is no longer subscribed (its slot under the cap is free again); ``held``: the bytes its
        connection left unsent, if it closed (see HeapTrim)."""
        self.subscribers.pop(sub, None)
        self.cap.leave(sub)
        self.trim.freed(held)

    async def subscribe(self, sub: Subscriber, mainloop: MainLoop, from_seq: int | None = None,
                        read: Callable[..., Awaitable[Any]] | None = None) -> None:
        """Go live; with ``from_seq``, first replay every committed event after it, with no gap and no
        duplicate: pages are read (on the read connections, see ``read``) and sent with backpressure outside
        the lock that batches take; only the last page (less than a page behind the ledger) is read, and the
        subscriber goes live, under it."""
        if read is None:
            async def read(fn: Callable[..., Any], *args: Any) -> Any:
                return await mainloop.read(fn, mainloop.store.db, *args)
        last = from_seq
        self.replays += 1
        try:
            while True:
                while last is not None:
                    page = await self._page(last, read)
                    for i in range(len(page.pieces)):
                        await sub.put(page.piece(i, sub.frame))
                    last = page.last
                    if page.count < REPLAY_PAGE:
                        break
                async with mainloop.lock:  # between two batches: nothing is committed meanwhile
                    tail = [] if last is None else await mainloop.call(reads.events_after, mainloop.store.db, last,
                                                                       REPLAY_PAGE)
                    if len(tail) < REPLAY_PAGE:  # caught up: deliver the tail and go live, still under the lock
                        for piece in pieces(tail):
                            if not sub.offer(piece if sub.frame is None else sub.frame(piece)):
                                sub.drop("subscriber too slow during replay; reconnect with from_seq")
                                return
                        last = tail[-1].seq if tail else last
                        self.subscribers[sub] = mainloop.committed_seq if last is None else last
                        return
                # a whole page was committed while this subscriber was replaying: page on, outside the lock
        finally:
            self.replays -= 1
            if not self.replays:
                self._pages.clear()  # (its memory is not held for replays that may never come)

    async def _page(self, after: int, read: Callable[..., Awaitable[Any]]) -> _Page:
        """The page of events after seq ``after``, encoded (in pieces of REPLAY_TURN lines).
        One read and one encoding for every replay at this position: a whole page is kept (REPLAY_CACHE), and
        a replay that wants a page being read waits for that read (and reads it itself if that one failed)."""
        key = (after, REPLAY_PAGE)
        while (page := self._pages.get(key)) is None and (reading := self._reading.get(key)) is not None:
            await reading.done.wait()
            if reading.page is not None:
                return reading.page
        if page is not None:
            self._pages.move_to_end(key)
            return page
        reading = self._reading[key] = _Reading()
        try:
            async with self._replay_slots:
                events = await read(reads.events_after, after, REPLAY_PAGE)
            self.pages_read += 1
            replayed = []
            for i in range(0, len(events), REPLAY_TURN):
                replayed += pieces(events[i:i + REPLAY_TURN])
                await trio.lowlevel.checkpoint()  # a page is ~3 ms of Python: others get turns
            page = reading.page = _Page(replayed, len(events), events[-1].seq if events else after)
            del events  # (its many small objects are not held while the clients are waited for)
            if page.count == REPLAY_PAGE:
                self._pages[key] = page
                while len(self._pages) > REPLAY_CACHE:
                    self._pages.popitem(last=False)
            return page
        finally:
            del self._reading[key]
            reading.done.set()


class _Page:
    """A replay page: its pieces, how many events they hold, the seq of the last (or the seq they follow),
    and its pieces framed, by frame (each made the first time a replay of that frame reaches it)."""

    __slots__ = ("pieces", "count", "last", "framed")

    def __init__(self, pieces: list[bytes], count: int, last: int):
        self.pieces, self.count, self.last = pieces, count, last
        self.framed: dict[Callable[[bytes], bytes], list[bytes | None]] = {}

    def piece(self, i: int, frame: Callable[[bytes], bytes] | None) -> bytes:
        """Piece ``i``, framed by ``frame`` (once for every replay of this page)."""
        if frame is None:
            return self.pieces[i]
        framed = self.framed.get(frame)
        if framed is None:
            framed = self.framed[frame] = [None] * len(self.pieces)
        if (piece := framed[i]) is None:
            piece = framed[i] = frame(self.pieces[i])
        return piece


class _Reading:
    """A replay page being read: replays at its position wait for it."""

    __slots__ = ("done", "page")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.page: _Page | None = None
