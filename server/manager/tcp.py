"""One manager TCP connection: a reader task that frames and dispatches lines, a writer task that sends
buffered replies and events in as few ``send_all`` calls as it can."""

from __future__ import annotations

import itertools
import logging
import math
import os
from functools import partial
from typing import TYPE_CHECKING

import trio

from . import protocol
from ..core.broker import Outbox
from ..limits import LineBudget, left_out, peer_endpoint
from .pending import Pending

if TYPE_CHECKING:
    from ..core.broker import Broker
    from ..metrics import Metrics
    from .commands import Dispatcher

log = logging.getLogger("syncledger.tcp")
RECEIVE_SIZE = 64 * 1024
MAX_WRITE = 1 << 20


class Connection:
    _ids = itertools.count(1)
    listener = "tcp"
    frame = None  # (a subscriber's: its event lines go on the wire as they are)

    def __init__(self, stream: trio.abc.Stream, dispatcher: Dispatcher, broker: Broker, *,
                 outbox_size: int = 16384, outbox_bytes: int = 16 << 20, stall: float = 30.0,
                 idle_timeout: float, silent_timeout: float, answer_grace: float = 5.0,
                 peer: trio.abc.Stream | None = None, lines: LineBudget | None = None):
        self.id = next(self._ids)
        self.lines = lines or LineBudget(20, trio.current_time)  # budget for the opened/closed log lines
        self.peer = peer  # the client's end, for in-memory connections
        # the peer's IP address ("memory" in-process), for logs and throttling; with its port, for logs
        self.address, self.endpoint = peer_endpoint(stream)
        self.login: int | None = None  # of the last request that presented a valid token (or logged in)
        self.stream, self.dispatcher, self.broker = stream, dispatcher, broker
        self.idle_timeout, self.silent_timeout, self.answer_grace = idle_timeout, silent_timeout, answer_grace
        self.outbox = Outbox(outbox_size, outbox_bytes, stall)
        self.outbox_bytes, self.stall = outbox_bytes, stall
        self.max_reply = outbox_bytes // 2  # a larger answer is refused (REPLY_TOO_LARGE)
        self.pending: set[Pending] = set()
        self._all_answered: trio.Event | None = None
        self.scope = trio.CancelScope()  # the whole connection
        self.read_scope = trio.CancelScope()  # reading requests only (shutdown stops this first)
        self.channels: set[str] = set()  # subscribed to
        self.authenticated = False  # has presented a valid token (or logged in): never closed for idleness
        self.closed_reason: str | None = None

    # ---- what pending requests and the broker call (never wait)

    def send(self, line: bytes) -> None:
        """An answer, without waiting: written at once when nothing else waits to be sent (see offer)."""
        if not self.outbox.offer(line, now=True):
            self.drop(f"too many unread bytes (over {self.outbox_bytes})")

    def answered(self, pending: Pending) -> None:
        self.pending.discard(pending)
        if not self.pending and self._all_answered is not None:
            self._all_answered.set()

    def open_pending(self, ext_id: str | None, command: str = "", metrics: Metrics | None = None) -> Pending:
        pending = Pending(self, ext_id, command, metrics)
        self.pending.add(pending)
        return pending

    def offer(self, lines: bytes, count: int = 1) -> bool:
        """``count`` event lines (the broker's: one piece a batch) without waiting: written to the socket at once
        when nothing else waits to be sent (no wake-up of the writer task), else buffered; False if the outbox is
        full (in messages or in bytes)."""
        return self.outbox.offer(lines, count, now=True)

    async def put(self, lines: bytes) -> None:
        """Buffer replayed events once the outbox has room for them (Outbox.put): a client that reads at its
        own pace is never dropped for its own replay; one that takes nothing for ``stall`` seconds is
        dropped (it resumes with from_seq)."""
        if not await self.outbox.put(lines):
            self.drop(f"no progress for {self.stall:g} s while replaying: reconnect with from_seq")

    def drop(self, reason: str) -> None:
        """Close now (the close is logged with ``reason``)."""
        if self.closed_reason is None:
            self.closed_reason = reason
        self.scope.cancel()

    def peer_of(self, client_stream: trio.abc.Stream) -> bool:
        """Is ``client_stream`` the other end of this connection?"""
        if self.peer is not None:
            return self.peer is client_stream
        try:
            return self.stream.socket.getpeername() == client_stream.socket.getsockname()
        except (AttributeError, OSError):
            return False

    def stop_reading(self) -> None:
        self.read_scope.cancel()

    # ---- tasks

    async def run(self) -> None:
        started = trio.current_time()
        if (skipped := self.lines.take()) is not None and log.isEnabledFor(logging.INFO):
            log.info("connection %d from %s opened%s", self.id, self.address, left_out(skipped),
                     extra={"connection": self.id, "peer": self.endpoint, "listener": self.listener,
                            "left_out": skipped})
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    keep_answering = True  # also when stop_reading() cancels the read: answer, flush, close
                    with self.read_scope:
                        keep_answering = await self._reader()
                    if keep_answering:
                        await self._wait_answered()
                    self.outbox.close()  # the writer sends what is buffered, then ends
        finally:
            self.broker.remove(self, held=self.outbox.buffered)
            for pending in list(self.pending):
                pending.abandon()
            self.pending.clear()
            if (skipped := self.lines.take()) is not None and log.isEnabledFor(logging.INFO):
                took, reason = trio.current_time() - started, self.closed_reason or "closed by the server"
                log.info("connection %d from %s closed after %.1f s: %s%s", self.id, self.address, took, reason,
                         left_out(skipped), extra={"connection": self.id, "peer": self.endpoint,
                                                   "listener": self.listener, "login": self.login,
                                                   "duration_ms": round(took * 1000), "reason": reason,
                                                   "left_out": skipped})
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _reader(self) -> bool:
        """Read and dispatch lines until EOF (True: answer what is pending) or lost framing (False). A
        connection that has sent nothing is closed after silent_timeout (the SDKs connect in their
        constructors, long before a first request may come); one that has sent bytes but no valid token,
        idle_timeout after its first byte, whatever it sends; one that has presented a valid token is never
        closed for idleness (the SDKs send no heartbeat)."""
        lines = protocol.LineBuffer()
        deadline, heard = trio.current_time() + self.silent_timeout, False
        while True:
            with trio.CancelScope(deadline=math.inf if self.authenticated else deadline) as idle:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.closed_reason = "connection reset by the peer"
                    return False
            if idle.cancelled_caught:
                self.closed_reason = (f"no valid token within {self.idle_timeout:g} s" if heard else
                                      f"nothing received within {self.silent_timeout:g} s")
                return False
            if not data:
                self.closed_reason = "closed by the peer"
                return True
            if not heard:
                deadline, heard = trio.current_time() + self.idle_timeout, True
            lines.feed(data)
            try:
                for line in lines:
                    if line.strip():
                        await self.dispatcher.handle(self, line)
            except protocol.LineTooLong as e:
                self.send(protocol.error(None, e.status, e.code, e.message))
                self.closed_reason = "a line too long (framing lost)"
                return False

    async def _wait_answered(self) -> None:
        with trio.move_on_after(self.answer_grace):
            while self.pending:
                self._all_answered = trio.Event()
                await self._all_answered.wait()

    async def _writer(self) -> None:
        receive = self.outbox.receive
        if type(self.stream) is trio.SocketStream and not self.outbox.closed:  # (not TLS, not in memory): the
            # broker may write at once
            self.outbox.write_now = partial(os.write, self.stream.socket.fileno())
        try:
            await self._write(receive)
        finally:
            self.outbox.write_now = None  # (before the socket is closed: its number may be taken again)

    async def _write(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        async with receive:
            async for first in receive:
                chunks, size = [first], len(first)
                while size < MAX_WRITE:
                    try:
                        chunk = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                self.outbox.taken(len(chunks))
                try:
                    await self.stream.send_all(b"".join(chunks))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.drop("peer closed the connection")
                    return
                self.outbox.sent(size)
