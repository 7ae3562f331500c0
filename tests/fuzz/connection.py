"""The model of one manager connection over a memory stream: raw bytes out, strict reply lines in (each
of the shape the contract gives), events recorded per subscription and checked gap-free and once."""

from __future__ import annotations

import itertools
import json
import uuid as uuidlib
from dataclasses import dataclass, field

import trio

from tests.fuzz import strategies as S
from tests.fuzz.snapshot import Snap
from tests.fuzz.strict import Failed, strict_json

READ_TIMEOUT = 10.0  # seconds for any one reply (the sync timeout is 5 s)
MANAGER_STATUSES = {200, 400, 401, 403, 404, 409, 429, 500, 503, 504}


class Conn:
    """A manager connection over a memory stream: raw bytes out, strict reply lines in, events recorded."""

    _probes = itertools.count(1)

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self.buf = bytearray()
        self.closed = False  # by the server
        self.channels: set[str] = set()  # subscribed to (the model's)
        self.runs: list[Run] = []

    @property
    def subscribed(self) -> bool:
        """To trade:event, the one channel that carries anything."""
        return S.TRADE_EVENT in self.channels

    async def send(self, data: bytes, cuts: tuple = ()) -> None:
        start = 0
        for cut in (*cuts, len(data)):
            if cut > start:
                await self.stream.send_all(data[start:cut])
                await trio.lowlevel.checkpoint()
            start = cut

    async def _line(self) -> bytes | None:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if self.buf:
                    raise Failed(f"the server closed in the middle of a line: {bytes(self.buf[:200])!r}")
                return None
            self.buf += data

    async def reply(self) -> dict | None:
        """The next reply (events are checked and recorded on the way); None at EOF."""
        with trio.fail_after(READ_TIMEOUT):
            while True:
                line = await self._line()
                if line is None:
                    return None
                if not line.endswith(b"\r\n"):
                    raise Failed(f"a message must end with \\r\\n: {line[-50:]!r}")
                if not line.isascii() or b"'" in line:  # the SDKs decode each read alone; PHP rewrites '
                    raise Failed(f"the server writes plain ASCII, with no apostrophe: {line[:300]!r}")
                msg = strict_json(line[:-2])
                if not isinstance(msg, dict):
                    raise Failed(f"a message must be a JSON object: {msg!r}")
                if "event" in msg:
                    self.on_event(msg)
                    continue
                check_reply_shape(msg)
                return msg

    def on_event(self, msg: dict) -> None:
        if set(msg) != {"event", "type", "seq", "data"} or msg["event"] != "trade:event" \
                or msg["type"] not in (0, 1, 2) or type(msg["seq"]) is not int or not isinstance(msg["data"], dict) \
                or msg["data"].get("seq") != msg["seq"] or type(msg["data"]["seq"]) is not int:
            raise Failed(f"malformed event (its data carries its seq too): {msg!r}")
        if not self.subscribed or not self.runs:
            raise Failed(f"an event reached a connection that is not subscribed: seq {msg['seq']}")
        self.runs[-1].events.append(msg)

    async def probe(self) -> str:
        ext = f"probe-{next(self._probes)}-{uuidlib.uuid4().hex}"
        line = json.dumps({"command": "Ping", "extID": ext, "__token": S.ADMIN.raw}).encode() + b"\r\n"
        await self.send(line)
        return ext

    async def probe_reply(self, ext: str, reply: dict | None = None) -> None:
        reply = reply if reply is not None else await self.reply()
        if reply is None:
            raise Failed("the connection closed instead of answering the Ping sent after the input")
        if reply.get("extID") != ext or reply["status"] != 200 or reply["data"].get("pong") is not True:
            raise Failed(f"the Ping sent after the input got {reply!r}: a second reply to the input, or the "
                         f"connection is no longer usable")

    async def finish(self) -> None:
        """Half-close; whatever the server still sends must be events (no reply without a request)."""
        if not self.closed:
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            msg = await self.reply()
            if msg is not None:
                raise Failed(f"a reply nobody asked for: {msg!r}")
            self.closed = True
        await self.stream.aclose()


@dataclass
class Run:
    """One subscription of a connection: the first seq it may start at, the events it got, where it ended."""

    firsts: set[int]
    events: list = field(default_factory=list)
    end: int | None = None


def check_reply_shape(msg: dict) -> None:
    status = msg.get("status")
    if type(status) is not int or status not in MANAGER_STATUSES:
        raise Failed(f"bad status: {msg!r}")
    if "command" in msg:
        raise Failed(f"responses carry no command: {msg!r}")
    if "extID" in msg and not isinstance(msg["extID"], str):
        raise Failed(f"extID must be a string: {msg!r}")
    if status == 200:
        if "data" not in msg or set(msg) - {"extID", "status", "data"}:
            raise Failed(f"a success is {{extID?, status, data}}: {msg!r}")
    else:
        if set(msg) - {"extID", "status", "error", "message"} or not isinstance(msg.get("error"), str) \
                or not msg["error"] or not msg["error"].replace("_", "").isalpha() or not msg["error"].isupper() \
                or not isinstance(msg.get("message"), str) or not msg["message"]:
            raise Failed(f"an error is {{extID?, status, error, message}}: {msg!r}")


def check_message(case: S.Case, reply: dict) -> None:
    """The server's own messages never quote with an apostrophe (one may only come from the request)."""
    if "'" in reply["message"] and b"'" not in case.line and b"\\u0027" not in case.line.lower():
        raise Failed(f"an error message quotes with an apostrophe: {reply!r}")


def check_echo(msg: dict, echo: str | None) -> None:
    if echo is None:
        if "extID" in msg:
            raise Failed(f"the reply carries an extID the request did not have: {msg!r}")
    elif msg.get("extID") != echo:
        raise Failed(f"the reply must echo extID {echo!r}: {msg!r}")


def check_runs(conn: Conn, final: Snap) -> None:
    """Every subscription got every event from its start to its end, in order, once, as stored."""
    for run in conn.runs:
        end = run.end if run.end is not None else final.seq
        got = [e["seq"] for e in run.events]
        if not any(got == list(range(first, end + 1)) for first in run.firsts):
            raise Failed(f"a subscriber starting at one of {sorted(run.firsts)} and ending at {end} got seqs {got}")
        for e in run.events:
            etype, _ = final.events[e["seq"]]
            if e["type"] != etype or e["data"] != final.sent_data(e["seq"]):
                raise Failed(f"event {e['seq']} differs from the ledger's: {e!r}")
