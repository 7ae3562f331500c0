"""Fault injection for tests: switches that produce the awkward cases on demand. All off by default.

    faults.pause() / faults.resume()      hold batches back (queued commands wait)
    faults.delay_commit(seconds, n)       the next n batches each wait that long (Trio time) before they commit
    faults.fail_next_batch()              the next batch fails as a disk error would: nothing of it applies
    faults.fail_commit(landed, code)      the next COMMIT reports an error (sqlite3 error code ``code``), after
                                          reaching the file (landed=True) or before it (False)
    faults.fail_rollback()                the next ROLLBACK fails (the server must stop: fail-stop)
    faults.hold_events(n) / release_events()   keep the next n events (None: all) from fan-out and waiters
    faults.drop_events(n)                 the next n events reach no subscriber and no waiter (they stay in
                                          the ledger: from_seq replays them, a …Sync retry finds its record)
    faults.disconnect(client)             the server closes that client's connection
    faults.drop_websockets()              the server closes every live WebSocket subscriber (code 1013)
"""

from __future__ import annotations

import math
import sqlite3
from typing import TYPE_CHECKING, Any, Callable

import trio

from syncledger.ledger import Event, Outcome

from ..events.ws import WsSubscriber

if TYPE_CHECKING:
    from ..app import Server


class DiskFailure:
    """A command that fails the way a full or broken disk does, sinking its whole batch."""


def _disk_failure(command: DiskFailure) -> Outcome:
    raise sqlite3.OperationalError("disk I/O error (injected)")


def _error(code: int, statement: str) -> sqlite3.OperationalError:
    """The error SQLite would raise, with its error code (what the store decides by)."""
    error = sqlite3.OperationalError(f"{statement} failed: injected error {code}")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


class Faults:
    def __init__(self, server: Server):
        if server.writer is not None:
            raise RuntimeError("fault injection patches the store in this process: use writer='thread'")
        self._server = server
        self.commit_delay = 0.0
        self.delayed = 0  # batches still to delay
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

    def delay_commit(self, seconds: float, batches: int = 1) -> None:
        self.commit_delay, self.delayed = seconds, batches

    def fail_next_batch(self, batches: int = 1) -> None:
        self.failing += batches

    def fail_commit(self, landed: bool, code: int = sqlite3.SQLITE_BUSY) -> None:
        store = self._server.store

        def commit() -> None:
            del store._sql_commit  # once
            if landed:
                store._sql_commit()
            raise _error(code, "COMMIT")
        store._sql_commit = commit  # type: ignore[method-assign]

    def fail_rollback(self) -> None:
        store = self._server.store

        def rollback() -> None:
            del store._sql_rollback  # once; the transaction stays open until the connection closes
            raise _error(sqlite3.SQLITE_IOERR, "ROLLBACK")
        store._sql_rollback = rollback  # type: ignore[method-assign]

    async def before_commit(self, commands: list) -> list:
        """Called by the mainLoop with each batch's commands; returns what to apply."""
        if self.delayed:
            self.delayed -= 1
            await trio.sleep(self.commit_delay)
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

    def drop_websockets(self, reason: str = "disconnected by fault injection") -> int:
        """Close every live WebSocket subscriber as a too-slow one is closed (1013; events after the last
        one it was sent are not sent): each resumes with from_seq. Returns how many were closed."""
        broker = self._server.broker
        subscribers = [sub for sub in broker.subscribers if isinstance(sub, WsSubscriber)]
        for sub in subscribers:
            broker.remove(sub)
            sub.drop(reason)
        return len(subscribers)
