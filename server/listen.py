"""The one guarded way to listen: every listener of the server is a :class:`Listener`, through which each of
its connections passes before its protocol driver sees it: with TLS, a pace of new connections; the
connection cap and the per-address connect rate (a Gate); then the TLS handshake, with a deadline, its
costly step in a worker thread, a few at a time. Refusals and failed handshakes are logged at most once a
second, and counted by reason in the Gate's ``refusals`` (``syncledger_refused_connections_total``). The
protocol's own deadlines are its driver's (http.Limits; tcp.Connection's idle and silent timeouts;
ws.CONNECT_TIMEOUT)."""

from __future__ import annotations

import logging
import math
import ssl
from functools import partial
from typing import Any, Awaitable, Callable

import trio

from .limits import Gate, peer_endpoint
from .logs import LineBudget

log = logging.getLogger("syncledger.limits")
Handler = Callable[[trio.abc.Stream], Awaitable[Any]]


class ListenError(Exception):
    """A port cannot be listened on, e.g. another program holds it (one line, exit 2)."""


class Listener:
    """One listening address (``port`` 0: a free one) and the guards of its connections: ``gate`` (cap and
    connect rate), and with ``tls`` at most ``handshake_rate`` new connections a second (None: no limit), each
    handshake ended within ``handshake_timeout`` seconds, its costly step computed ``handshakes`` at a time."""

    def __init__(self, name: str, host: str, port: int, gate: Gate, tls: ssl.SSLContext | None, *,
                 https: bool, handshakes: int, handshake_timeout: float, handshake_rate: float | None):
        self.name, self.host, self.port, self.gate = name, host, port, gate
        self.tls, self.https, self.handshake_timeout = tls, https, handshake_timeout
        self.pace = _Pace(handshake_rate) if tls is not None and handshake_rate else None
        self.handshakes = trio.CapacityLimiter(handshakes)
        self.failed = self.late = 0  # handshakes that failed / did not end in time, since last logged
        self._lines = LineBudget(1, trio.current_time)
        self._accepting = trio.CancelScope()
        self.serving = False

    async def serve(self, handler: Handler, *, connections: trio.Nursery,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, hand back the bound port, then serve each connection ``admit`` lets through with
        ``handler`` in ``connections``, until ``stop()``."""
        try:
            sockets = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as e:
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.port, self.serving = sockets[0].socket.getsockname()[1], True
        task_status.started(self.port)  # (connections wait in the listen backlog meanwhile)
        paced = sockets if self.pace is None else [_Paced(socket, self.pace) for socket in sockets]
        with self._accepting:
            await trio.serve_listeners(partial(self.admit, handler=handler), paced, handler_nursery=connections)

    def stop(self) -> None:
        """Stop accepting (connections already admitted go on)."""
        self._accepting.cancel()

    async def admit(self, stream: trio.abc.Stream, handler: Handler) -> None:
        """One connection: refused at once over the cap or the connect rate (an in-process one is not rate
        limited and has no TLS), else its TLS handshake, then ``handler``; whatever fails ends it alone."""
        address, peer = peer_endpoint(stream)
        if not self.gate.enter(None if address == "memory" else address):
            await stream.aclose()  # (at once: nothing was sent; aclose_forcefully would cost a Cancelled)
            return
        try:
            if self.tls is not None and address != "memory":
                stream = await self._handshake(stream)
            if stream is not None:
                await handler(stream)
        except Exception:
            log.exception("%s: a connection from %s failed", self.name, address,
                          extra={"listener": self.name, "peer": peer})
        finally:
            self.gate.leave()
            if isinstance(stream, trio.SSLStream):
                _uncycle(stream)

    async def _handshake(self, stream: trio.abc.Stream) -> trio.SSLStream | None:
        """The TLS stream of ``stream`` once its handshake is done; None (it is closed) if it failed or did not
        end within the deadline. The handshake's costly step, the answer to the ClientHello (a key exchange
        and a signature: 0.3-0.4 ms of CPU here, with an ECDSA or an RSA key), runs in a worker thread,
        ``handshakes`` at a time for the listener: OpenSSL releases the interpreter lock meanwhile, so it is
        off the event loop, whose connections are served in the meantime."""
        made = _Context(self.tls)
        tls = trio.SSLStream(stream, made, server_side=True, https_compatible=self.https)  # type: ignore[arg-type]
        with trio.move_on_after(self.handshake_timeout) as deadline:
            try:
                await made.handshake(stream, self.handshakes)
                await tls.do_handshake()  # (trio's side of it: nothing left to compute)
                return tls
            except (ssl.SSLError, ssl.CertificateError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await stream.aclose()  # (the transport: at once)
        _uncycle(tls)
        self.late += deadline.cancelled_caught
        self.failed += not deadline.cancelled_caught
        self.gate.refusals["handshake_timeout" if deadline.cancelled_caught else "handshake"] += 1
        if self._lines.take() is not None:
            log.warning("%s: %d TLS handshake(s) failed and %d did not end within %g s", self.name, self.failed,
                        self.late, self.handshake_timeout,
                        extra={"listener": self.name, "handshakes_failed": self.failed, "handshakes_late": self.late})
            self.failed = self.late = 0
        return None


def _uncycle(tls: trio.SSLStream) -> None:
    """Break the cycle a trio SSLStream is (its handshake's _Once holds a method of it) once it is done with,
    so that it and its SSL object are freed at once: else the garbage collector frees them, hundreds of
    connections at once in one pause (tens of milliseconds of the event loop)."""
    vars(tls).pop("_handshook", None)


class _Pace:
    """At most ``rate`` a second, after a first ``rate`` at once (a virtual schedule: each take is given the
    next free time, and waits for it)."""

    def __init__(self, rate: float):
        self.rate, self.next = rate, -math.inf

    async def take(self) -> None:
        now = trio.current_time()
        at = max(self.next, now - 1.0)  # (at most a second's worth saved up)
        self.next = at + 1 / self.rate
        await trio.sleep_until(at)


class _Paced(trio.abc.Listener[trio.SocketStream]):
    """A TLS listener's socket that accepts connections at its listener's pace: a flood of them waits in the
    kernel's listen backlog, at no cost, and takes no more of the event loop than the pace allows (their
    handshakes, their protocol's first steps); connections already admitted are served meanwhile."""

    def __init__(self, socket: trio.SocketListener, pace: _Pace):
        self.socket, self.pace = socket, pace

    async def accept(self) -> trio.SocketStream:
        await self.pace.take()
        return await self.socket.accept()

    async def aclose(self) -> None:
        await self.socket.aclose()


class _Context:
    """The SSL context an SSLStream is made with, keeping the SSL object it makes and that object's memory
    BIOs, so that its handshake can be driven here, its costly step in a worker thread."""

    def __init__(self, context: ssl.SSLContext):
        self.context = context

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, **options: Any) -> ssl.SSLObject:
        self.incoming, self.outgoing = incoming, outgoing
        self.made = self.context.wrap_bio(incoming, outgoing, **options)
        return self.made

    def step(self) -> bool:
        """One step of the handshake: whether it is done. (SSLWantReadError stays here: raised across the
        thread, it would tie its traceback, the frames and this SSL object into a cycle, freed only by a
        collection of the garbage collector, hundreds of handshakes at once.)"""
        try:
            self.made.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    async def handshake(self, transport: trio.abc.Stream, limiter: trio.CapacityLimiter) -> None:
        """Drive the handshake until the SSL object has done its part; what it wrote last (a TLS 1.3 server's
        session tickets) stays in its BIO for the SSLStream to send. The step that answers the ClientHello,
        once its record is whole, runs in a thread under ``limiter``; the cheap ones run here (a peer that
        sends its hello a byte at a time costs no thread hop for each)."""
        header, received, costly = b"", 0, True  # the first record's header (type, version, length), bytes in
        while True:
            if costly and len(header) == 5 and received >= 5 + int.from_bytes(header[3:], "big"):
                costly = False
                if await trio.to_thread.run_sync(self.step, limiter=limiter):
                    return
            elif self.step():
                return
            if data := self.outgoing.read():
                await transport.send_all(data)
            if data := await transport.receive_some():
                self.incoming.write(data)
                header, received = (header + data[:5])[:5], received + len(data)
            else:
                self.incoming.write_eof()
