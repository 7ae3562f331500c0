"""Sans-IO codec of the manager TCP API: bytes in -> request lines or protocol errors; replies -> bytes (the JSON
itself, and the trade:event message, are server/wire.py's).

No I/O and no Trio: the connection task feeds received bytes and writes what this module returns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from syncledger.ledger import FinanceRequest

from ..wire import CRLF, SURROGATE, decode_json, invalid_value, plain

MAX_LINE = 64 * 1024
MAX_EXT_ID = 256


class ProtocolError(Exception):
    """A request that cannot be served; it becomes an error reply (``ext_id`` echoed when known)."""

    def __init__(self, status: int, code: str, message: str, ext_id: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.ext_id = status, code, message, ext_id


class LineTooLong(ProtocolError):
    def __init__(self) -> None:
        super().__init__(400, "LINE_TOO_LONG", f"a line may hold at most {MAX_LINE} bytes")


class LineBuffer:
    """Splits a byte stream into lines (``\\n`` or ``\\r\\n``), scanning each byte once.

    Iterating yields complete lines without their terminator; raises :class:`LineTooLong` when a line
    exceeds :data:`MAX_LINE` bytes, after which framing is lost and the connection must close.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self._max = max_line

    def feed(self, data: bytes) -> None:
        self._buf += data

    def __iter__(self) -> Iterator[bytes]:
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\n", start + self._scanned)
            if end < 0:
                break
            length = end - start - (end > start and buf[end - 1] == 13)  # a trailing \r is not content
            if length > self._max:
                raise LineTooLong()
            line = bytes(buf[start:end])
            start, self._scanned = end + 1, 0
            yield line[:-1] if line.endswith(b"\r") else line
        del buf[:start]
        self._scanned = len(buf)
        if len(buf) > self._max + 1:
            raise LineTooLong()


@dataclass(slots=True)
class Request:
    command: str
    ext_id: str | None
    data: dict
    token: Any
    finance: FinanceRequest | None = None  # the finance request its data make, already checked (fast.py)


_EXT_ID = re.compile(rb'"extID"\s*:\s*("(?:[^"\\]|\\.)*")')


def _ext_id(value: Any) -> str | None:
    """``value`` if it is an extID that can be echoed."""
    if isinstance(value, str) and 0 < len(value) <= MAX_EXT_ID and not SURROGATE.search(value):
        return value
    return None


def recover_ext_id(line: bytes) -> str | None:
    """The extID of a line that is not valid JSON, if it names exactly one (clients match answers by it)."""
    found = _EXT_ID.findall(line)
    if len(found) != 1:
        return None
    try:
        return _ext_id(json.loads(found[0]))
    except (ValueError, RecursionError):
        return None


def parse_request(line: bytes) -> Request:
    """Decode one request line; numbers with a fraction become ``Decimal`` (never float). Every error
    carries the request's extID when it can be read."""
    try:
        obj = decode_json(line)
    except RecursionError:
        raise ProtocolError(400, "INVALID_JSON", "JSON is nested too deeply", recover_ext_id(line)) from None
    except UnicodeDecodeError:
        raise ProtocolError(400, "INVALID_JSON", "line is not valid UTF-8", recover_ext_id(line)) from None
    except ValueError as e:
        reason = str(e).replace("'", '"')  # the decoder's own words quote with apostrophes
        raise ProtocolError(400, "INVALID_JSON", f"malformed JSON: {reason}", recover_ext_id(line)) from None
    if not isinstance(obj, dict):
        raise ProtocolError(400, "INVALID_REQUEST", "a request must be a JSON object")
    raw_ext_id = obj.get("extID")
    ext_id = _ext_id(raw_ext_id)
    if raw_ext_id is not None and ext_id is None:
        echo = raw_ext_id if isinstance(raw_ext_id, str) and not SURROGATE.search(raw_ext_id) else None
        raise ProtocolError(400, "INVALID_REQUEST", f"extID must be a string of 1 to {MAX_EXT_ID} characters", echo)
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        raise ProtocolError(400, "INVALID_REQUEST", "command must be a non-empty string", ext_id)
    where = invalid_value(obj, line)
    if where is not None:
        raise ProtocolError(400, "INVALID_DATA", where, ext_id)
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(400, "INVALID_DATA", "data must be a JSON object", ext_id)
    return Request(command, ext_id, data, obj.get("__token"))


def ok(ext_id: str | None, data: Any) -> bytes:
    """A 200 reply; ``data`` may be a dict or already-encoded JSON bytes (sent as they are)."""
    if isinstance(data, bytes):
        data = orjson.Fragment(data)
    if ext_id is None:
        return plain(orjson.dumps({"status": 200, "data": data})) + CRLF
    return plain(orjson.dumps({"extID": ext_id, "status": 200, "data": data})) + CRLF


def error(ext_id: str | None, status: int, code: str, message: str) -> bytes:
    reply = {"status": status, "error": code, "message": message}
    if ext_id is not None:
        reply = {"extID": ext_id, **reply}
    return plain(orjson.dumps(reply)) + CRLF
