"""One outstanding request on a connection, answered exactly once: by its reply, by its trade:event
(``…Sync``), by the sync timeout, or at shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from syncledger.ledger import Event, Outcome

from . import protocol

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..core.timeouts import Timeouts


class Replies(Protocol):
    """The connection side: where answers go."""

    max_reply: int  # bytes: a larger answer is refused

    def send(self, line: bytes) -> None: ...

    def answered(self, pending: "Pending") -> None: ...


class Pending:
    __slots__ = ("conn", "ext_id", "done", "types", "timeouts", "timeout_ms", "applied", "command", "started",
                 "metrics")

    def __init__(self, conn: Replies, ext_id: str | None, command: str = "", metrics: Metrics | None = None):
        self.conn, self.ext_id, self.done = conn, ext_id, False
        self.applied = False  # a …Sync request whose job is committed (its answer waits for the event)
        self.command, self.metrics = command, metrics
        self.started = trio.current_time() if metrics is not None else 0.0
        self.types: frozenset[int] = frozenset()  # a …Sync request: the types of its job's event it answers with
        self.timeouts: Timeouts | None = None
        self.timeout_ms = 0

    def answer(self, line: bytes, status: int = 200) -> bool:
        if self.done:
            return False
        self._finish()
        self.conn.answered(self)
        if self.metrics is not None:
            self.metrics.answered(self.command, status, trio.current_time() - self.started, bool(self.types))
        if len(line) > self.conn.max_reply:
            line = protocol.error(self.ext_id, 400, "REPLY_TOO_LARGE",
                                  f"the answer would be {len(line)} bytes, over the {self.conn.max_reply} this "
                                  f"connection takes: ask for less (GetTrades: a narrower from/to)")
        self.conn.send(line)
        return True

    def _finish(self) -> None:
        self.done = True
        if self.timeouts is not None:  # still in the scheduler's heap: let it know
            self.timeouts.finished()

    def ok(self, data: object) -> bool:
        return self.answer(protocol.ok(self.ext_id, data))

    def error(self, status: int, code: str, message: str) -> bool:
        return self.answer(protocol.error(self.ext_id, status, code, message), status)

    def refused(self, outcome: Outcome) -> bool:
        """Answer the outcome's error, if it has one; True if it did."""
        if outcome.error is None:
            return False
        self.error(outcome.error.status, outcome.error.code, outcome.error.message)
        return True

    def abandon(self) -> None:
        """The connection is gone: nobody to answer; the work itself still completes."""
        if not self.done:
            self._finish()

    # ---- …Sync: wait for the matching trade:event, or time out

    def wait_for(self, types: frozenset[int], timeouts: Timeouts, deadline: float, ms: int) -> None:
        """Register as a waiter BEFORE the job is submitted: the job's event of one of ``types`` answers."""
        self.types, self.timeouts, self.timeout_ms = types, timeouts, ms
        timeouts.add(deadline, self)

    def on_event(self, event: Event) -> None:
        """One of this request's own job's events, after broadcast (the mainLoop shows it no other)."""
        if event.type in self.types:
            self.ok(event.data)

    def on_outcome(self, outcome: Outcome) -> None:
        """The job is committed: a replay or a refusal is answered here (a new record by its event)."""
        if not self.refused(outcome):
            self.applied = True
            if outcome.replay:
                self.ok(outcome.data.record)

    def stopped(self) -> None:
        """The server stops with this request unanswered: say what is true of it."""
        if self.applied:
            self.error(504, "SYNC_TIMEOUT", "the request was applied, but the server stopped before its "
                                            "trade:event was broadcast")
        else:
            self.error(503, "SHUTTING_DOWN", "the server shut down before applying this request: "
                                             "nothing was applied")

    def expire(self) -> None:
        """Called by the scheduler, which has already taken this entry off its heap."""
        self.timeouts = None
        if self.metrics is not None:
            self.metrics.sync_timeouts.inc()
        self.error(504, "SYNC_TIMEOUT", f"no matching trade:event within {self.timeout_ms} ms")
