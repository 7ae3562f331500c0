"""The one guarded way to listen: every listener of the server is a :class:`Listener`, through which each of
its connections passes before its protocol driver sees it: the connection cap and the per-address connect
rate (a Gate), then TLS, whose handshake has a deadline and takes its CPU a few handshakes at a time.
Refusals and failed handshakes are logged at most once a second. The protocol's own deadlines are its
driver's (http.Limits; tcp.Connection's idle and silent timeouts; ws.CONNECT_TIMEOUT)."""

from __future__ import annotations

import logging
import ssl
from functools import partial
from typing import Any, Awaitable, Callable

import trio

from .limits import Gate, peer_address
from .logs import LineBudget

log = logging.getLogger("syncledger.limits")
Handler = Callable[[trio.abc.Stream], Awaitable[Any]]


class ListenError(Exception):
    """A port cannot be listened on, e.g. another program holds it (one line, exit 2)."""


class Listener:
    """One listening address (``port`` 0: a free one) and the guards of its connections: ``gate`` (cap and
    connect rate), and with ``tls`` a handshake that must end within ``handshake_timeout`` seconds, its CPU
    taken ``handshakes`` at a time (see _Metered)."""

    def __init__(self, name: str, host: str, port: int, gate: Gate, tls: ssl.SSLContext | None, *,
                 https: bool, handshakes: int, handshake_timeout: float):
        self.name, self.host, self.port, self.gate = name, host, port, gate
        self.tls, self.https, self.handshake_timeout = tls, https, handshake_timeout
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
        with self._accepting:
            await trio.serve_listeners(partial(self.admit, handler=handler), sockets, handler_nursery=connections)

    def stop(self) -> None:
        """Stop accepting (connections already admitted go on)."""
        self._accepting.cancel()

    async def admit(self, stream: trio.abc.Stream, handler: Handler) -> None:
        """One connection: refused at once over the cap or the connect rate (an in-process one is not rate
        limited and has no TLS), else its TLS handshake, then ``handler``; whatever fails ends it alone."""
        address = peer_address(stream)
        if not self.gate.enter(None if address == "memory" else address):
            await trio.aclose_forcefully(stream)
            return
        try:
            if self.tls is not None and address != "memory":
                stream = await self._handshake(stream)
            if stream is not None:
                await handler(stream)
        except Exception:
            log.exception("%s: a connection from %s failed", self.name, address)
        finally:
            self.gate.leave()

    async def _handshake(self, stream: trio.abc.Stream) -> trio.SSLStream | None:
        """The TLS stream of ``stream`` once its handshake is done; None (it is closed) if it failed or did not
        end within the deadline."""
        metered = _Metered(stream, self.handshakes)
        tls = trio.SSLStream(metered, self.tls, server_side=True, https_compatible=self.https)
        with trio.move_on_after(self.handshake_timeout) as deadline:
            try:
                await tls.do_handshake()
                tls.transport_stream = stream  # (established: its I/O no longer passes the meter)
                return tls
            except trio.BrokenResourceError:
                pass
            finally:
                metered.release()
        await trio.aclose_forcefully(stream)
        self.late += deadline.cancelled_caught
        self.failed += not deadline.cancelled_caught
        if self._lines.take() is not None:
            log.warning("%s: %d TLS handshake(s) failed and %d did not end within %g s", self.name, self.failed,
                        self.late, self.handshake_timeout)
            self.failed = self.late = 0
        return None


class _Metered(trio.abc.Stream):
    """A TLS handshake's transport. The SSL object does a handshake step's CPU (keys, signature) between a
    receive that brought data and the next send or receive: that stretch holds one of the listener's
    ``handshakes`` slots, so that a flood of handshakes runs only a few steps in each pass of the scheduler,
    and a peer slow to send (or stalled) holds none."""

    def __init__(self, transport: trio.abc.Stream, slots: trio.CapacityLimiter):
        self.transport, self.slots, self._held = transport, slots, False

    def release(self) -> None:
        if self._held:
            self._held = False
            self.slots.release_on_behalf_of(self)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.release()
        data = await self.transport.receive_some(max_bytes)
        await self.slots.acquire_on_behalf_of(self)
        self._held = True
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.release()
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self.release()
        await self.transport.aclose()
