"""A small Trio client of the manager TCP API: connect, log in, call a command and await its reply by
extID, pipeline many calls, iterate trade:events. Money in replies is ``Decimal`` (never float)."""

from __future__ import annotations

import json
import math
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, AsyncIterator

import orjson
import trio

from .manager.protocol import LineBuffer


class ConnectionLost(Exception):
    """The server closed the connection before answering."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    data: Any = None
    error: str | None = None
    message: str | None = None
    ext_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class Call:
    """A request in flight; ``await call.reply()`` once it is answered."""

    __slots__ = ("ext_id", "_done", "_reply")

    def __init__(self, ext_id: str):
        self.ext_id, self._done, self._reply = ext_id, trio.Event(), None

    def _set(self, reply: Reply | None) -> None:
        self._reply = reply
        self._done.set()

    async def reply(self) -> Reply:
        await self._done.wait()
        if self._reply is None:
            raise ConnectionLost(f"no reply to {self.ext_id!r}: connection closed")
        return self._reply


def _encode_amounts(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a number JSON can carry")
        return orjson.Fragment(str(value).encode())
    return value


def _finite(value: Any) -> None:
    """Refuse a float NaN or infinity (orjson would send it as null)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a number JSON can carry")
    elif isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _finite(item)


class Client:
    def __init__(self, stream: trio.abc.Stream, token: str | None = None):
        self.stream, self.token = stream, token
        self._calls: dict[str, Call] = {}
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](math.inf)
        self._events_send, self._events = trio.open_memory_channel[dict](math.inf)
        self.orphans: list[Reply] = []  # replies with no (known) extID, e.g. to an unparsable line
        self.closed = trio.Event()

    def _line(self, command: str, data: dict | None, ext_id: str, token: str | None) -> bytes:
        msg: dict[str, Any] = {"command": command, "extID": ext_id}
        if data is not None:
            _finite(data)
            msg["data"] = data
        if token is not None:
            msg["__token"] = token
        try:
            return orjson.dumps(msg, default=_encode_amounts) + b"\r\n"
        except orjson.JSONEncodeError as e:  # what default= raised: a NaN or infinite Decimal
            raise ValueError(str(e.__cause__ or e)) from None

    def start(self, command: str, data: dict | None = None, *, ext_id: str | None = None,
              token: str | None = "default") -> Call:
        """Send a request without waiting (pipelining). Decimals in ``data`` are sent exactly."""
        if self.closed.is_set():
            raise ConnectionLost("connection closed")
        # extIDs are idempotency keys per manager, kept for ever: a generated one is 128 random bits, so that
        # none repeats across connections and restarts. Pass your own ext_id to retry a request safely.
        ext_id = ext_id if ext_id is not None else secrets.token_hex(16)
        if ext_id in self._calls:
            raise ValueError(f"extID {ext_id!r} is already in flight on this client")
        line = self._line(command, data, ext_id, self.token if token == "default" else token)  # may refuse
        call = self._calls[ext_id] = Call(ext_id)
        self._out_send.send_nowait(line)
        return call

    async def call(self, command: str, data: dict | None = None, **kw: Any) -> Reply:
        return await self.start(command, data, **kw).reply()

    async def login(self, login: int, password: str) -> Reply:
        reply = await self.call("Login", {"login": login, "password": password}, token=None)
        if reply.ok:
            self.token = reply.data["token"]
        return reply

    async def events(self) -> AsyncIterator[dict]:
        """trade:event messages received after ``Subscribe``, in order."""
        async for event in self._events:
            yield event

    def receive_event_nowait(self) -> dict:
        return self._events.receive_nowait()

    async def receive_event(self) -> dict:
        return await self._events.receive()

    async def _writer(self) -> None:
        async for first in self._out_recv:
            chunks = [first]
            while True:
                try:
                    chunks.append(self._out_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self.stream.send_all(b"".join(chunks))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the reader sees the close and fails what is in flight

    async def _reader(self) -> None:
        lines = LineBuffer(max_line=1 << 30)
        try:
            while True:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    break
                lines.feed(data)
                for line in lines:
                    msg = json.loads(line, parse_float=Decimal)
                    if "event" in msg:
                        self._events_send.send_nowait(msg)
                        continue
                    reply = Reply(msg["status"], msg.get("data"), msg.get("error"), msg.get("message"),
                                  msg.get("extID"))
                    call = self._calls.pop(reply.ext_id, None) if reply.ext_id is not None else None
                    if call is None:
                        self.orphans.append(reply)
                    else:
                        call._set(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            self._events_send.close()
            for call in self._calls.values():
                call._set(None)
            self._calls.clear()


@asynccontextmanager
async def open_client(stream: trio.abc.Stream, token: str | None = None) -> AsyncIterator[Client]:
    """A client over any Trio stream (a TCP socket, or a memory stream in tests)."""
    client = Client(stream, token)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._reader)
        nursery.start_soon(client._writer)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await stream.aclose()


@asynccontextmanager
async def connect(host: str, port: int, token: str | None = None) -> AsyncIterator[Client]:
    """A client over a new TCP connection."""
    stream = await trio.open_tcp_stream(host, port)
    async with open_client(stream, token) as client:
        yield client
