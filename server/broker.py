"""Fan-out of committed trade:events to subscribers, and replay from the ledger with ``from_seq``.

Each subscriber owns a bounded buffer; one that cannot take the next event is dropped at once, so a
slow or dead subscriber never slows the mainLoop or anyone else. It reconnects with ``from_seq``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import trio

from syncledger.ledger import reads
from syncledger.ledger.store import Event

from . import protocol

if TYPE_CHECKING:
    from .mainloop import MainLoop

REPLAY_PAGE = 1000
REPLAY_TURN = 100  # replayed events between two checkpoints of the replaying task


class Subscriber(Protocol):
    def offer(self, line: bytes) -> bool:
        """Buffer an event line without waiting; False if the buffer is full."""

    async def put(self, line: bytes) -> None:
        """Buffer an event line, waiting for room (replay only, never from the mainLoop)."""

    def drop(self, reason: str) -> None:
        """Disconnect: the subscriber could not keep up."""


def event_line(event: Event) -> bytes:
    return protocol.event_json(event.seq, event.type, event.data) + protocol.CRLF


class Broker:
    def __init__(self, replay_slots: int = 2) -> None:
        self.subscribers: dict[Subscriber, int] = {}  # subscriber -> seq of the last event it was given
        self.dropped = 0
        # pages read at once, by all replays together: many replaying subscribers share the CPU that a
        # replay costs instead of multiplying it (a slot is never held while waiting for a client)
        self._replay_slots = trio.CapacityLimiter(replay_slots)

    def publish(self, event: Event) -> None:
        """Called by the mainLoop after commit; never waits. Each subscriber gets each event once, in seq
        order: an event it already has (replayed from the ledger) is not sent again."""
        if not self.subscribers:
            return
        line = event_line(event)
        seq = event.seq
        for sub, last in list(self.subscribers.items()):
            if seq <= last:
                continue
            if sub.offer(line):
                self.subscribers[sub] = seq
            else:
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

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.pop(sub, None)

    async def subscribe(self, sub: Subscriber, mainloop: MainLoop, from_seq: int | None = None,
                        read: Callable[..., Awaitable[Any]] | None = None) -> None:
        """Go live; with ``from_seq``, first replay every committed event after it, with no gap and no
        duplicate: pages are sent with backpressure outside the lock that batches take; only the last
        page (less than a page behind the ledger) is read, and the subscriber goes live, under it."""
        last = from_seq
        while True:
            while last is not None:
                async with self._replay_slots:
                    page = await (read(reads.events_after, last, REPLAY_PAGE) if read is not None else
                                  mainloop.read(mainloop.store.events_after, last, REPLAY_PAGE))
                for i, event in enumerate(page, 1):
                    await sub.put(event_line(event))
                    if i % REPLAY_TURN == 0:
                        await trio.lowlevel.checkpoint()  # a page is ~5 ms of Python: others get turns
                if page:
                    last = page[-1].seq
                if len(page) < REPLAY_PAGE:
                    break
            async with mainloop.lock:  # between two batches: nothing is committed meanwhile
                tail = [] if last is None else await mainloop.call(mainloop.store.events_after, last, REPLAY_PAGE)
                if len(tail) < REPLAY_PAGE:  # caught up: deliver the tail and go live, still under the lock
                    for event in tail:
                        if not sub.offer(event_line(event)):
                            sub.drop("subscriber too slow during replay; reconnect with from_seq")
                            return
                        last = event.seq
                    self.subscribers[sub] = mainloop.committed_seq if last is None else last
                    return
            # a whole page was committed while this subscriber was replaying: page on, outside the lock
