"""A thin HTTP/1.1 server for the game-wallet API: httptools (llhttp, the C parser behind uvicorn) parses,
one Trio task per connection does the I/O. Keep-alive, Content-Length or chunked bodies, the request head
checked before the server waits for its body, deadlines for the head and the body, 400/413/431/505 on bad
framing, graceful shutdown. (It was h11 until issue 24 item 3: llhttp costs a fraction of its CPU per
request, docs/benchmarks.md.)"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Awaitable, Protocol

import httptools
import orjson
import trio

from .listen import Listener

log = logging.getLogger("syncledger.wallet.http")
READ_SIZE = 64 * 1024
# The connection whose request is being answered (None: a call from within the process), for the peer of a line
# the app logs: read only when one is written
STREAM: contextvars.ContextVar[trio.abc.Stream | None] = contextvars.ContextVar("http_stream", default=None)


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
    refusal_pause: float = 0.05  # after a request refused at its head, the connection's next one is read this
    # much later: a loop of refusals on one connection (what another site's page can send) costs at most 20 a second


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False
    content_type: bytes = b"application/json"


@dataclass(slots=True)
class Request:
    """A request's head, whatever parsed it: ``headers`` are (lowercased name, value) pairs in their order."""
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: bytes = b"1.1"
    keep_alive: bool = True  # the client allows another request on this connection after this one
    expect_continue: bool = False  # "Expect: 100-continue"


class App(Protocol):
    def head(self, request: Request, arrived: bytes | None) -> Response | None:
        """Answer before waiting for the body (a bad route, method or token), or None to read it. ``arrived``
        is the whole body if it came with the head (it usually does), else None."""

    def too_large(self, request: Request) -> Response:
        """The answer to a body over max_body (it has been read and dropped)."""

    def handle(self, request: Request, body: bytes) -> Awaitable[Response]:
        """The answer to a request and its body."""


class ProtocolError(Exception):
    """Bad framing: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


NEED_DATA, END, CLOSED = object(), object(), object()  # the parser's other events (a body piece is bytes)


class Parser:
    """llhttp (httptools) turned into a queue of events: a Request once its head is whole, its body as bytes
    pieces, END after its last byte; NEED_DATA when the bytes fed so far are used up, CLOSED when the peer
    has closed (or asked for another protocol). Bad framing raises ProtocolError, after the events of the
    requests before it (pipelined requests keep their order)."""

    def __init__(self, max_head: int):
        self.max_head = max_head
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque = deque()
        self._error: ProtocolError | None = None
        self._closed = False
        self._in_head = False  # a head has begun and is not whole
        self._head_size = 0  # its bytes so far, at least
        self._in_body = False  # a head is whole, its message is not
        self._quiet = 0  # bytes of this message since its last body piece (chunk extensions, trailers)
        self._pieces = 0  # body pieces so far
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self.done = True  # the current request has been read to its END
        self.body_seen = False  # a byte of the current request's body has been handed out

    @property
    def between(self) -> bool:
        """Nothing of a next request has arrived (an idle connection)."""
        return not self._events and not self._in_head and self._error is None

    def receive_data(self, data: bytes) -> None:
        if self._error is not None or self._closed:
            return
        if not data:
            self._closed = True
            return
        was_in_head, was_in_body, pieces = self._in_head, self._in_body, self._pieces
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # Upgrade or CONNECT: this server speaks HTTP/1.1 alone
            self._closed = True
        except httptools.HttpParserError as e:
            if self._error is None:
                text = str(e)
                self._error = ProtocolError(505 if "PRI" in text or "HTTP version" in text else 400, text)
        if was_in_head and self._in_head:  # the whole read is head (llhttp hands a header over whole)
            self._head_size += len(data)
        if self._in_head and self._head_size > self.max_head and self._error is None:
            self._error = ProtocolError(431, "request head too large")
        if was_in_body and self._in_body and pieces == self._pieces:  # no body byte in the whole read
            self._quiet += len(data)
            if self._quiet > self.max_head and self._error is None:
                self._error = ProtocolError(431, "chunk extensions or trailers too large")

    def next_event(self):
        if self._events:
            event = self._events.popleft()
            if event is END:
                self.done = True
            elif type(event) is Request:
                self.done, self.body_seen = False, False
            else:
                self.body_seen = True
            return event
        if self._error is not None:
            raise self._error
        return CLOSED if self._closed else NEED_DATA

    # ---- llhttp's callbacks

    def on_message_begin(self) -> None:
        self._in_head, self._head_size, self._url, self._headers = True, 0, [], []

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head:
            self._error = ProtocolError(431, "request head too large")
            raise self._error  # (llhttp stops here)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version().encode()
        expect = version == b"1.1" and any(n == b"expect" and v.lower() == b"100-continue" for n, v in self._headers)
        self._events.append(Request(parser.get_method(), b"".join(self._url), self._headers, version,
                                    version == b"1.1" and parser.should_keep_alive(), expect))
        self._headers = []  # a chunked body's trailers go here, and no further: the head was judged without them
        self._in_body, self._quiet = True, 0

    def on_body(self, body: bytes) -> None:
        self._events.append(body)
        self._pieces += 1
        self._quiet = 0

    def on_message_complete(self) -> None:
        self._in_body = False
        self._events.append(END)


class _Closed(Exception):
    """The connection is done: the peer went away, a deadline passed, or framing was lost."""


class HttpConnection:
    """One client connection: requests in, answers out, one at a time (HTTP/1.1 pipelining is served in
    order)."""

    def __init__(self, stream: trio.abc.Stream, app: App, limits: Limits, stopping: trio.Event,
                 idle: set[trio.CancelScope] | None = None):
        self.stream, self.app, self.limits, self.stopping = stream, app, limits, stopping
        self.idle = idle if idle is not None else set()  # where this connection waits between requests
        self.parser = Parser(limits.max_head)
        self.trusted = False  # a request of this connection has passed the app's head() (its token)

    async def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if not await self._one():
                    break
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
        except ProtocolError as e:
            await self._error(e.status, str(e))
            return False
        if request is None:  # the peer closed between requests, or stayed idle too long
            return False
        if request.http_version not in (b"1.1", b"1.0"):
            await self._error(505, "HTTP/1.1 only")
            return False
        if len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers) > self.limits.max_head:
            await self._error(431, "request head too large")
            return False
        body_deadline = trio.current_time() + self.limits.body_timeout
        chunks, complete = await self._arrived(request)
        answer = self.app.head(request, b"".join(chunks) if complete else None)
        refused = answer is not None
        if answer is None:
            self.trusted = True
            answer = await self._body_and_answer(request, chunks, complete, body_deadline)
            if answer is None:
                return False
        close = answer.close or self.stopping.is_set() or not request.keep_alive or not self.parser.done
        await self._send_response(answer, close, request.method == b"HEAD")
        if refused and not close and not self.stopping.is_set():
            await self._pause()
        return not close

    async def _pause(self) -> None:
        """``refusal_pause`` seconds before the next request is read, as an idle wait (a shutdown ends it)."""
        with trio.CancelScope(deadline=trio.current_time() + self.limits.refusal_pause) as scope:
            self.idle.add(scope)
            try:
                await trio.sleep_forever()
            finally:
                self.idle.discard(scope)

    def _waiting_for_100_continue(self, request: Request) -> bool:
        return request.expect_continue and not self.parser.body_seen and not self.parser.done

    async def _arrived(self, request: Request) -> tuple[list[bytes], bool]:
        """The body's first bytes, and whether that is all of it: what came with the head, and a small body
        (Content-Length up to max_body) for at most ``early_body`` seconds more. Nothing longer is waited
        for before the app has looked at the head."""
        chunks: list[bytes] = []
        size = 0
        length = _content_length(request)
        small = length is not None and length <= self.limits.max_body
        # (a client that sent "Expect: 100-continue" waits for our go-ahead, which comes after the head)
        deadline = trio.current_time() + (self.limits.early_body if small and
                                          not self._waiting_for_100_continue(request) else 0)
        parser = self.parser
        try:
            while size <= self.limits.max_body:
                event = parser.next_event()
                if type(event) is bytes:
                    chunks.append(event)
                    size += len(event)
                elif event is NEED_DATA and trio.current_time() < deadline:
                    with trio.move_on_at(deadline):
                        parser.receive_data(await self._receive())
                else:
                    return chunks, event is END
        except ProtocolError:
            pass  # met again, and answered, while the body is read
        return chunks, False

    async def _body_and_answer(self, request: Request, chunks: list[bytes], complete: bool,
                               deadline: float) -> Response | None:
        length = _content_length(request)
        size = sum(map(len, chunks))
        if (length is not None and length > self.limits.max_drain) or size > self.limits.max_drain:
            await self._error(413, "request body too large")
            return None
        if not complete and self._waiting_for_100_continue(request):  # "Expect: 100-continue"
            try:
                await self.stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _Closed() from None
        try:
            while not complete:
                left = max(deadline - trio.current_time(), 0)
                event = await self._next(left, left)
                if type(event) is bytes:
                    size += len(event)
                    if size > self.limits.max_drain:
                        await self._error(413, "request body too large")
                        return None
                    if size <= self.limits.max_body:
                        chunks.append(event)
                elif event is END:
                    complete = True
                else:  # the peer closed mid-body
                    return None
        except ProtocolError as e:
            await self._error(e.status, str(e))
            return None
        if size > self.limits.max_body:
            return self.app.too_large(request)
        return await self.app.handle(request, b"".join(chunks))

    async def _next(self, wait: float, then: float, first: bool = False):
        """The next parser event (None when the peer has closed): waits ``wait`` seconds for the first
        byte, then ``then`` for the rest."""
        deadline = trio.current_time() + wait
        parser = self.parser
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                waiting = first and parser.between  # between requests: a shutdown ends it
                if self.stopping.is_set() and waiting:
                    return None  # shutting down between requests
                with trio.move_on_at(deadline) as timer:
                    if waiting:
                        self.idle.add(timer)
                    try:
                        data = await self._receive()
                    finally:
                        self.idle.discard(timer)
                if timer.cancelled_caught:
                    if first and parser.between:
                        return None  # an idle keep-alive connection: close it quietly
                    raise _Closed()
                parser.receive_data(data)
                if first and data:  # the head has started: it gets head_timeout from its first byte
                    deadline, first = trio.current_time() + then, False
                continue
            if event is CLOSED:
                return None
            return event

    async def _receive(self) -> bytes:
        try:
            return await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Closed() from None

    async def _send_response(self, answer: Response, close: bool, head_only: bool = False) -> None:
        """The whole response in one write (a shutdown never cuts it in two)."""
        parts = [_status_line(answer.status), b"content-type: ", answer.content_type,
                 b"\r\ncontent-length: %d\r\n" % len(answer.body)]
        for name, value in answer.headers:
            parts += (name, b": ", value, b"\r\n")
        if close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if not head_only:  # (the answer to a HEAD is its head alone)
            parts.append(answer.body)
        try:
            await self.stream.send_all(b"".join(parts))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Closed() from None

    async def _error(self, status: int, reason: str) -> None:
        """Answer a framing error and close (nothing of this request's answer has been sent yet: an answer
        always goes in one write)."""
        body = orjson.dumps({"error": reason[:200]})
        try:
            await self._send_response(Response(status, body), close=True)
        except _Closed:
            pass


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, with the standard reason phrase (strict clients such as h2load count an
    answer without one as failed)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
    return line


def _content_length(request: Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # llhttp has checked it is a number
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
        STREAM.set(stream)  # (this connection's task alone)
        try:
            await HttpConnection(stream, self.app, self.limits, self.stopping, self._idle).run()
        finally:
            log.debug("HTTP connection closed after %.1f s", trio.current_time() - started)

    def stop(self) -> None:
        self.stopping.set()
        for scope in list(self._idle):
            scope.cancel()
