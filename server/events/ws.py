"""The trade:event stream over WebSocket (path ``/events``): token checked at the handshake,
``?from_seq=N`` replay, then live events, one per text frame. Too slow a client is closed with 1013.

A piece of events is framed once for every WebSocket subscriber (the broker offers each the same bytes,
see :func:`frames`) and written to each connection with one send (:func:`_frame_writer`)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, WebSocketRequest, wrap_server_stream
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import FrameProtocol

from ..auth import FINANCE_SESSIONS, AuthError
from ..core.broker import Outbox, split_lines
from ..limits import UPGRADE_REFUSALS, left_out
from ..core.mainloop import ShuttingDown

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("syncledger.ws")
CLOSE_TRY_AGAIN_LATER = 1013
DROP_GRACE = 5.0
CONNECT_TIMEOUT = 10.0  # seconds from a connection's admission to its upgrade request
DISCONNECT_TIMEOUT = 5.0  # seconds a closing handshake may take
MESSAGE_QUEUE_SIZE = 4  # client messages buffered (they are read and ignored)
_FRAMER = FrameProtocol(client=False, extensions=[])  # a server's frames: unmasked, and no extension
# what _frame_writer uses of a trio-websocket connection
_TRIO_WEBSOCKET = ("_stream", "_stream_lock", "_wsproto", "_close_reason", "_abort_web_socket")


# bytes of a piece's frames in one send at most (or one frame): a dropped client's 1013 waits on no more
SEGMENT = 64 << 10


class Frames(bytes):
    """A piece's frames, and ``cuts``: offsets between two frames where its sends end (one per SEGMENT)."""

    cuts: tuple[int, ...] = ()


def frames(piece: bytes) -> Frames:
    """A piece of event lines as WebSocket frames, one text frame an event, byte for byte those that
    ``send_message`` makes on a connection with no extension (the server never accepts one)."""
    text = _FRAMER.send_data  # (a whole message each time: the framer keeps no state between them)
    parts = [text(line.decode()) for line in split_lines(piece)]
    out = Frames(b"".join(parts))
    if len(out) > SEGMENT:
        cuts, start, at = [], 0, 0
        for part in parts:
            if at + len(part) - start > SEGMENT and at > start:
                cuts.append(at)
                start = at
            at += len(part)
        out.cuts = tuple(cuts)
    return out


class WsSubscriber:
    """A WebSocket client's bounded buffer of event lines (in pieces and in bytes, as a TCP connection's)."""

    def __init__(self, size: int, limit: int, stall: float = 30.0):
        self.frame: Callable[[bytes], bytes] | None = None  # frames, once its connection can take them whole
        self.outbox = Outbox(size, limit, stall)
        self.stall = stall
        self.scope = trio.CancelScope()
        self.reason: str | None = None
        self.login: int | None = None  # whose token opened it, for the log

    def offer(self, lines: bytes, count: int = 1) -> bool:
        return self.outbox.offer(lines, count)

    async def put(self, lines: bytes) -> None:
        """Buffer replayed events once there is room (Outbox.put); a client that takes nothing for
        ``stall`` seconds is dropped (it resumes with from_seq)."""
        if self.reason is None and not await self.outbox.put(lines):
            self.drop(f"no progress for {self.stall:g} s while replaying: reconnect with from_seq")

    def drop(self, reason: str) -> None:
        """Queue nothing more and close with 1013 once the frames being sent (SEGMENT at most) are out; a peer
        that does not take even those within DROP_GRACE seconds is cut off (a cancelled send breaks framing)."""
        self.reason = self.reason or reason
        self.outbox.close()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + DROP_GRACE)


def _refusal(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, b'{"error":"%s","message":"%s"}' % (code.encode(), message.encode())


async def _handshake(server: Services, request: WebSocketRequest, sub: WsSubscriber) -> tuple[int, bytes | int | None]:
    """(0, from_seq) for an upgrade request to accept, ``sub`` holding a slot under the subscriber cap, or
    (HTTP status, JSON error body) to refuse."""
    url = urlsplit(request.path)
    if url.path != "/events":
        return _refusal(404, "NOT_FOUND", "the event stream is at /events")
    query = parse_qs(url.query)
    token = (query.get("token") or [None])[0]
    auth = dict(request.headers).get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    try:
        claims = server.tokens.verify(token)
        await server.authorize(claims)
    except AuthError as e:
        return _refusal(401, e.code, "a valid manager token is required")
    sub.login = claims.login
    if claims.session not in FINANCE_SESSIONS:
        return _refusal(403, "FORBIDDEN", "the event stream is for manager, dealer and admin sessions")
    from_seq = (query.get("from_seq") or [None])[0]
    if from_seq is not None and (not from_seq.isascii() or not from_seq.isdigit() or len(from_seq) > 18):
        return _refusal(400, "INVALID_DATA", "from_seq must be a decimal number")
    if refusal := server.broker.cap.enter(sub, claims.login, _remote_address(request)):
        return _refusal(429, "TOO_MANY_SUBSCRIBERS", refusal)
    return 0, None if from_seq is None else int(from_seq)


def _remote_address(request: WebSocketRequest) -> str:
    return _remote(request)[0]


def _remote(of: WebSocketRequest | WebSocketConnection) -> tuple[str, str]:
    """The peer's address and its address:port ("unknown" once it is gone)."""
    try:
        remote = of.remote
    except OSError:  # the peer is already gone (its connection reset during the handshake)
        return "unknown", "unknown"
    address = str(getattr(remote, "address", "unknown"))
    port = getattr(remote, "port", None)
    if port is None:
        return address, address
    return address, f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def serve_stream(server: Services, stream: trio.abc.Stream) -> None:
    """One connection its listener admitted: its upgrade request within CONNECT_TIMEOUT (else it is closed, as
    it is at once when the peer goes first), then ``handle``."""
    async with trio.open_nursery() as nursery:
        request = None
        with trio.move_on_after(CONNECT_TIMEOUT) as waiting:
            request = await wrap_server_stream(_Reader(nursery, waiting), stream,
                                               message_queue_size=MESSAGE_QUEUE_SIZE)
        if request is not None:
            await handle(server, request)
        nursery.cancel_scope.cancel()  # (its reader task)


class _Reader:
    """The nursery wrap_server_stream starts the connection's reader task in: when that task ends (the peer
    closed), the wait for an upgrade request ends too (trio-websocket's would wait on)."""

    def __init__(self, nursery: trio.Nursery, waiting: trio.CancelScope):
        self.nursery, self.waiting = nursery, waiting

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        self.nursery.start_soon(self._run, task)

    async def _run(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        finally:
            self.waiting.cancel()


async def handle(server: Services, request: WebSocketRequest) -> None:
    """One client: whatever goes wrong with it ends it alone, never the server."""
    try:
        await _serve(server, request)
    except Exception as exc:
        closed = isinstance(exc, ConnectionClosed) or (
            isinstance(exc, BaseExceptionGroup) and exc.split(ConnectionClosed)[1] is None)
        if not closed:
            log.exception("websocket client failed")


async def _serve(server: Services, request: WebSocketRequest) -> None:
    sub = WsSubscriber(server.config.outbox_size, server.config.outbox_bytes, server.config.replay_stall)
    try:
        refused, detail = await _handshake(server, request, sub)
        if not refused and detail is not None:
            try:
                newest = await server.newest_seq(detail)
            except ShuttingDown:
                newest, refused, detail = 0, *_refusal(503, "SHUTTING_DOWN", "the server is shutting down")
            if not refused and detail > newest:
                refused, detail = _refusal(400, "FROM_SEQ_AHEAD",
                                           f"from_seq {detail} is beyond the newest event {newest}")
        if refused:
            server.gates["ws"].refusals[UPGRADE_REFUSALS[refused]] += 1  # (syncledger_refused_connections_total)
            await request.reject(refused, extra_headers=[(b"content-type", b"application/json")], body=detail)
            return
        await _stream(server, await request.accept(), sub, detail)
    finally:
        server.broker.remove(sub, held=sub.outbox.buffered)


async def _stream(server: Services, ws: WebSocketConnection, sub: WsSubscriber, from_seq: int | None) -> None:
    """Replayed, then live events until the client goes; one dropped as too slow is closed with 1013."""
    started = trio.current_time()
    write = _frame_writer(ws)
    sub.frame = frames if write is not None else None
    try:
        with sub.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_until_closed, ws, nursery.cancel_scope)
                nursery.start_soon(server.broker.subscribe, sub, server.mainloop, from_seq, server.read)
                await _send_events(ws, sub, write)
                nursery.cancel_scope.cancel()
    finally:
        reason = sub.reason or (f"closed by the peer ({ws.closed.code})" if ws.closed else "closed by the server")
        if (skipped := server.connection_lines.take()) is not None and log.isEnabledFor(logging.INFO):
            took = trio.current_time() - started
            log.info("websocket client closed after %.1f s: %s%s", took, reason, left_out(skipped),
                     extra={"peer": _remote(ws)[1], "listener": "ws", "login": sub.login,
                            "duration_ms": round(took * 1000), "reason": reason, "left_out": skipped})
        if sub.reason is None:
            with trio.move_on_after(DISCONNECT_TIMEOUT):
                await ws.aclose()
        elif not sub.scope.cancelled_caught:  # (else a frame was cut: nothing more can be sent)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose(CLOSE_TRY_AGAIN_LATER, sub.reason[:120])


async def _send_events(ws: WebSocketConnection, sub: WsSubscriber,
                       write: Callable[[bytes | memoryview], Awaitable[None]] | None) -> None:
    """Each buffered piece (its frames, see ``frames``) in one write (one per SEGMENT of a larger one), until the
    buffer ends or ``sub`` is dropped (what is left is for the from_seq replay of its next connection); with no
    ``write``, each buffered event line in a ``send_message`` of its own."""
    async for data in sub.outbox.receive:
        sub.outbox.taken(1)
        if sub.reason is not None:
            return
        if write is not None:
            if not (cuts := getattr(data, "cuts", ())):
                await write(data)
            else:
                view, start = memoryview(data), 0
                for cut in (*cuts, len(data)):
                    if start and sub.reason is not None:
                        return
                    await write(view[start:cut])
                    start = cut
        else:
            for message in split_lines(data):
                if sub.reason is not None:
                    return
                await ws.send_message(message.decode())
        sub.outbox.sent(len(data))


def _frame_writer(ws: WebSocketConnection) -> Callable[[bytes | memoryview], Awaitable[None]] | None:
    """A write of ready-made frames to ``ws``'s stream, or None (said once in a warning): then events go one
    ``send_message`` each.

    trio-websocket sends nothing but the messages it frames itself, so this is the one place its internals are
    used (those of 0.12, which pyproject.toml pins; tests/server/events/test_ws_frames.py fails if they change):
    _TRIO_WEBSOCKET, and the extensions of its wsproto connection. None if any is missing, or if the
    connection has an extension (its frames would differ from ``frames``'). The frames are written under the
    lock that trio-websocket's own sends take (a pong, a close frame), so that nothing lands inside them, and
    never once the connection is closing (its close frame queued or sent, or the peer's received); a broken
    stream ends the connection as a failed ``send_message`` does: ConnectionClosed (1006), this client alone."""
    missing = [name for name in _TRIO_WEBSOCKET if not hasattr(ws, name)]
    proto = None if missing else ws._wsproto
    extensions = getattr(getattr(getattr(proto, "connection", None), "_proto", None), "extensions", None)
    if missing or extensions is None or extensions:
        _one_at_a_time(f"trio-websocket has no {', '.join(missing)}" if missing else
                       f"extensions {extensions!r}" if extensions else "wsproto's extensions are not known")
        return None
    stream, lock, abort = ws._stream, ws._stream_lock, ws._abort_web_socket

    async def write(data: bytes | memoryview) -> None:
        async with lock:
            if ws._close_reason is not None or ws._wsproto.state is not ConnectionState.OPEN:
                raise ConnectionClosed(ws._close_reason or CloseReason(1006, "closing"))
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await abort()
                raise ConnectionClosed(ws._close_reason) from None
    return write


@functools.cache
def _one_at_a_time(why: str) -> None:
    """Say once (for each cause) that events go one send_message each."""
    log.warning("websocket events are sent one message at a time (%s)", why)


async def _read_until_closed(ws: WebSocketConnection, scope: trio.CancelScope) -> None:
    """Read (and ignore) client messages, so that close frames and pings are seen."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        scope.cancel()
