"""Fault injection for tests: switches that produce the awkward cases on demand. All off by default.

    faults.pause() / faults.resume()      hold batches back (queued commands wait)
    faults.delay_commit(seconds)          the next batch waits that long (Trio time) before it commits
    faults.fail_next_batch()              the next batch fails as a disk error would: nothing of it applies
    faults.hold_events(n) / release_events()   keep the next n events (None: all) from fan-out and waiters
    faults.drop_events(n)                 the next n events reach no subscriber and no waiter (they stay in
                                          the ledger: from_seq replays them, a …Sync retry finds its record)
    faults.disconnect(client)             the server closes that client's connection
"""

from __future__ import annotations

import math
import sqlite3
from typing import TYPE_CHECKING, Any, Callable

import trio

from ledger.store import Event, Outcome

if TYPE_CHECKING:
    from .app import Server


class DiskFailure:
    """A command that fails the way a full or broken disk does, sinking its whole batch."""


def _disk_failure(command: DiskFailure) -> Outcome:
    raise sqlite3.OperationalError("disk I/O error (injected)")


class Faults:
    def __init__(self, server: Server):
        self._server = server
        self.commit_delay = 0.0
        self.failing = 0
        self.hold = 0.0  # events still to hold back (math.inf: until released)
        self.drop = 0
        self.held: list[tuple[Event, Any]] = []
        self.dropped: list[int] = []  # seqs of dropped events
        server.store.register(DiskFailure, _disk_failure)

    # ---- the mainLoop

    def pause(self) -> None:
        self._server.mainloop.pause()

    def resume(self) -> None:
        self._server.mainloop.resume()

    def delay_commit(self, seconds: float) -> None:
        self.commit_delay = seconds

    def fail_next_batch(self, batches: int = 1) -> None:
        self.failing += batches

    async def before_commit(self, commands: list) -> list:
        """Called by the mainLoop with each batch's commands; returns what to apply."""
        if self.commit_delay:
            delay, self.commit_delay = self.commit_delay, 0.0
            await trio.sleep(delay)
        if self.failing:
            self.failing -= 1
            return [*commands, DiskFailure()]
        return commands

    # ---- events

    def hold_events(self, n: int | None = None) -> None:
        self.hold = math.inf if n is None else n

    def release_events(self) -> None:
        self.hold = 0
        held, self.held = self.held, []
        for event, waiter in held:
            self._server.mainloop.deliver(event, waiter)

    def drop_events(self, n: int = 1) -> None:
        self.drop += n

    def deliver(self, event: Event, waiter: Any, deliver: Callable[[Event, Any], None]) -> None:
        """Called by the mainLoop for each committed event: deliver it, hold it or drop it."""
        if self.drop:
            self.drop -= 1
            self.dropped.append(event.seq)
        elif self.hold or self.held:  # later events queue behind held ones, so order is kept
            if self.hold:
                self.hold -= 1
            self.held.append((event, waiter))
        else:
            deliver(event, waiter)

    # ---- connections

    def disconnect(self, client: Any) -> bool:
        """Close the server's side of ``client``'s connection (a server.client.Client)."""
        for conn in list(self._server.connections):
            if conn.peer_of(client.stream):
                conn.drop("disconnected by fault injection")
                return True
        return False
