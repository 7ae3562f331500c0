"""A thin HTTP/1.1 server for the game-wallet API: h11 (sans-IO) parses, one Trio task per connection does
the I/O. Keep-alive, Content-Length or chunked bodies, the request head checked before the server waits
for its body, deadlines for the head and the body, 400/413/431/505 on bad framing, graceful shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Awaitable, Protocol

import h11
import orjson
import trio

from .listen import Listener

log = logging.getLogger("syncledger.wallet.http")
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_head: int = 16 * 1024  # request line and headers (431 beyond)
    max_body: int = 64 * 1024  # a body the app reads; a larger one is drained and answered by the app
    max_drain: int = 1024 * 1024  # a body larger than this is not read at all (413, connection closed)
    head_timeout: float = 10.0  # from a request's first byte to the end of its head
    body_timeout: float = 10.0  # for its body
    early_body: float = 1.0  # a small body awaited before the head is judged (for the uuid of a refusal)
    idle_timeout: float = 75.0  # a kept-alive connection waiting for its next request
    untrusted_idle: float = 60.0  # the same, for a connection none of whose requests has passed head() yet


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False
    content_type: bytes = b"application/json"


class App(Protocol):
    def head(self, request: h11.Request, arrived: bytes | None) -> Response | None:
        """Answer before waiting for the body (a bad route, method or token), or None to read it. ``arrived``
        is the whole body if it came with the head (it usually does), else None."""

    def too_large(self, request: h11.Request) -> Response:
        """The answer to a body over max_body (it has been read and dropped)."""

    def handle(self, request: h11.Request, body: bytes) -> Awaitable[Response]:
        """The answer to a request and its body."""


class _Closed(Exception):
    """The connection is done: the peer went away, a deadline passed, or framing was lost."""


class HttpConnection:
    """One client connection: requests in, answers out, one at a time (HTTP/1.1 pipelining is served in
    order)."""

    def __init__(self, stream: trio.abc.Stream, app: App, limits: Limits, stopping: trio.Event,
                 idle: set[trio.CancelScope] | None = None):
        self.stream, self.app, self.limits, self.stopping = stream, app, limits, stopping
        self.idle = idle if idle is not None else set()  # where this connection waits between requests
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self.trusted = False  # a request of this connection has passed the app's head() (its token)

    async def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if not await self._one():
                    break
                self.h11.start_next_cycle()
        except _Closed:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _one(self) -> bool:
        """Serve one request; False when the connection must close."""
        try:
            idle = self.limits.idle_timeout if self.trusted else min(self.limits.idle_timeout,
                                                                      self.limits.untrusted_idle)
            request = await self._next(idle, self.limits.head_timeout, first=True)
        except h11.RemoteProtocolError as e:
            await self._error(e.error_status_hint, str(e))
            return False
        if request is None:  # the peer closed between requests, or stayed idle too long
            return False
        if request.http_version not in (b"1.1", b"1.0"):  # HTTP/2 prior knowledge ("PRI * HTTP/2.0") included
            await self._error(505, "HTTP/1.1 only")
            return False
        if len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers) > self.limits.max_head:
            await self._error(431, "request head too large")  # (h11 checks only a head still arriving)
            return False
        body_deadline = trio.current_time() + self.limits.body_timeout
        chunks, complete = await self._arrived(request)
        answer = self.app.head(request, b"".join(chunks) if complete else None)
        if answer is None:
            self.trusted = True
            answer = await self._body_and_answer(request, chunks, complete, body_deadline)
        if answer is None:
            return False
        close = answer.close or self.stopping.is_set()
        await self._send_response(answer, close)
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE and not close

    async def _arrived(self, request: h11.Request) -> tuple[list[bytes], bool]:
        """The body's first bytes, and whether that is all of it: what came with the head, and a small body
        (Content-Length up to max_body) for at most ``early_body`` seconds more. Nothing longer is waited
        for before the app has looked at the head."""
        chunks: list[bytes] = []
        size = 0
        length = _content_length(request)
        small = length is not None and length <= self.limits.max_body
        # (a client that sent "Expect: 100-continue" waits for our go-ahead, which comes after the head)
        deadline = trio.current_time() + (self.limits.early_body if small and
                                          not self.h11.client_is_waiting_for_100_continue else 0)
        try:
            while size <= self.limits.max_body:
                event = self.h11.next_event()
                if isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                    size += len(event.data)
                elif event is h11.NEED_DATA and trio.current_time() < deadline:
                    with trio.move_on_at(deadline):
                        self.h11.receive_data(await self._receive())
                else:
                    return chunks, isinstance(event, h11.EndOfMessage)
        except h11.RemoteProtocolError:
            pass  # met again, and answered, while the body is read
        return chunks, False

    async def _body_and_answer(self, request: h11.Request, chunks: list[bytes], complete: bool,
                               deadline: float) -> Response | None:
        length = _content_length(request)
        if length is not None and length > self.limits.max_drain:
            await self._error(413, "request body too large")
            return None
        size = sum(map(len, chunks))
        if not complete and self.h11.client_is_waiting_for_100_continue:  # "Expect: 100-continue"
            try:
                await self.stream.send_all(self.h11.send(h11.InformationalResponse(status_code=100, headers=[],
                                                                                    reason=_reason(100))))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _Closed() from None
        try:
            while not complete:
                left = max(deadline - trio.current_time(), 0)
                event = await self._next(left, left)
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self.limits.max_drain:
                        await self._error(413, "request body too large")
                        return None
                    if size <= self.limits.max_body:
                        chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    complete = True
                else:  # the peer closed mid-body
                    return None
        except h11.RemoteProtocolError as e:
            await self._error(e.error_status_hint, str(e))
            return None
        if size > self.limits.max_body:
            return self.app.too_large(request)
        return await self.app.handle(request, b"".join(chunks))

    async def _next(self, wait: float, then: float, first: bool = False) -> h11.Event | None:
        """The next h11 event: waits ``wait`` seconds for the first byte, then ``then`` for the rest."""
        deadline = trio.current_time() + wait
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.stopping.is_set() and first and not self.h11.trailing_data[0]:
                    return None  # shutting down between requests
                with trio.move_on_at(deadline) as timer:
                    waiting = first and not self.h11.trailing_data[0]  # between requests: a shutdown ends it
                    if waiting:
                        self.idle.add(timer)
                    try:
                        data = await self._receive()
                    finally:
                        self.idle.discard(timer)
                if timer.cancelled_caught:
                    if first and self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]:
                        return None  # an idle keep-alive connection: close it quietly
                    raise _Closed()
                self.h11.receive_data(data)
                if first and data:  # the head has started: it gets head_timeout from its first byte
                    deadline, first = trio.current_time() + then, False
                continue
            if event is h11.PAUSED:
                raise _Closed()
            if isinstance(event, h11.ConnectionClosed):
                return None
            return event

    async def _receive(self) -> bytes:
        try:
            return await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Closed() from None

    async def _send_response(self, answer: Response, close: bool) -> None:
        """The whole response in one write (a shutdown never cuts it in two)."""
        headers = [(b"content-type", answer.content_type), (b"content-length", b"%d" % len(answer.body)),
                   *answer.headers]
        if close:
            headers.append((b"connection", b"close"))
        data = b"".join(self.h11.send(event) or b"" for event in (
            h11.Response(status_code=answer.status, headers=headers, reason=_reason(answer.status)),
            h11.Data(data=answer.body), h11.EndOfMessage()))
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Closed() from None

    async def _error(self, status: int, reason: str) -> None:
        """Answer a framing error (when the state still allows an answer) and close."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = orjson.dumps({"error": reason[:200]})
            try:
                await self._send_response(Response(status, body), close=True)
            except (h11.LocalProtocolError, _Closed):
                pass


def _reason(status: int) -> bytes:
    """The standard reason phrase of ``status`` (strict clients such as h2load count an answer without one as
    failed)."""
    return HTTPStatus(status).phrase.encode()


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


class HttpServer:
    """The listener side: serves the connections a Listener admits and, at shutdown, stops them cleanly (a
    call in flight is answered, with ``Connection: close``; a connection waiting for its next request is
    closed at once)."""

    def __init__(self, app: App, limits: Limits | None = None):
        self.app, self.limits = app, limits or Limits()
        self.stopping = trio.Event()
        self._idle: set[trio.CancelScope] = set()

    async def serve(self, listener: Listener, *, connections: trio.Nursery,
                    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Accept on ``listener`` (until it stops) and serve each connection in ``connections``."""
        await listener.serve(self._connection, connections=connections, task_status=task_status)

    async def _connection(self, stream: trio.abc.Stream) -> None:
        started = trio.current_time()
        try:
            await HttpConnection(stream, self.app, self.limits, self.stopping, self._idle).run()
        finally:
            log.debug("HTTP connection closed after %.1f s", trio.current_time() - started)

    def stop(self) -> None:
        self.stopping.set()
        for scope in list(self._idle):
            scope.cancel()
