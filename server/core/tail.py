"""A node of a cluster follows what the other nodes commit: woken by their NOTIFY (or every TAIL_POLL seconds,
so a lost notification costs latency, never an event), it has its mainLoop take in and publish their events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from syncledger.ledger import CatchUp, engine

from .mainloop import ShuttingDown

if TYPE_CHECKING:
    from .mainloop import MainLoop

log = logging.getLogger("syncledger.tail")
TAIL_POLL = 1.0  # seconds between two catch-ups when no notification came


class Tail:
    def __init__(self, url: str, mainloop: MainLoop, node: str, poll: float = TAIL_POLL):
        self.url, self.mainloop, self.node, self.poll = url, mainloop, node, poll
        self.notes = self.woken = 0  # notifications of this ledger, and those that woke the pump
        self._wake = trio.Event()

    async def run(self) -> None:
        """Until the mainLoop takes no more jobs: listen, and have the mainLoop catch up when woken."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            await self._pump()
            nursery.cancel_scope.cancel()

    async def _pump(self) -> None:
        """One CatchUp job at a time; wakes that come while one is queued are served by the next."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.mainloop.run_command(CatchUp())
            except ShuttingDown:
                return

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; a lost connection is opened again (meanwhile the poll goes on)."""
        while True:
            conn = None
            try:
                conn = await trio.to_thread.run_sync(self._connect)
                self._wake.set()  # whatever was committed before LISTEN took effect
                await self._follow(conn)
            except engine.errors() as e:
                log.warning("the cluster's notifications cannot be received (%s): catching up every %g s",
                            engine.said(e), self.poll)
                self._wake.set()
                await trio.sleep(self.poll)
            finally:
                if conn is not None:
                    conn.close()

    def _connect(self) -> Any:
        db = engine.connect_postgres(self.url)
        try:
            self._schema = db.execute("SELECT current_schema()").fetchone()[0]
            db.execute(f"LISTEN {engine.PG_CHANNEL}")
        except BaseException:
            db.close()
            raise
        return db.conn

    async def _follow(self, conn: Any) -> None:
        """Wake the pump for each notification of this ledger from another node (``schema seq node``) newer than
        what this node published, and every ``poll`` seconds; returns only by an error (the connection lost)."""
        pgconn = conn.pgconn
        while True:
            with trio.move_on_after(self.poll) as idle:
                await trio.lowlevel.wait_readable(pgconn.socket)
            if idle.cancelled_caught:
                self._wake.set()
                continue
            pgconn.consume_input()  # (raises OperationalError once the connection is lost)
            while (note := pgconn.notifies()) is not None:
                schema, seq, node = parse_note(note.extra.decode())
                if schema not in (self._schema, None):
                    continue
                self.notes += 1
                if node != self.node and (seq is None or seq > self.mainloop.committed_seq):
                    self.woken += 1
                    self._wake.set()


def parse_note(payload: str) -> tuple[str | None, int | None, str | None]:
    """A notification's ``schema seq node`` (a schema name may hold spaces). Anything else (another release's
    notification) gives Nones: the node catches up, which is never wrong."""
    try:
        schema, seq, node = payload.rsplit(" ", 2)
        return schema, int(seq), node
    except ValueError:
        return None, None, None
