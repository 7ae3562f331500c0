"""Sans-IO codec of the manager TCP API: bytes in -> request lines or protocol errors; replies and events -> bytes.

No I/O and no Trio: the connection task feeds received bytes and writes what this module returns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator

import orjson

MAX_LINE = 64 * 1024
MAX_EXT_ID = 256
CRLF = b"\r\n"


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


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal holds
        raise ValueError(f"number {text[:32]} is out of range") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    """An object without a repeated key: ``{"command": "Ping", "command": "BalanceIn"}`` is ambiguous."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {repeated[:64]!r} appears twice in one object")
    return obj


# Larger in magnitude than every range the models accept: an integer of more digits than CPython parses
# (4,300) becomes this, so that the field's own validation names it instead of the JSON decoder failing.
OUT_OF_RANGE = 10**40


def _bounded_int(text: str) -> int:
    if len(text) <= 40:
        return int(text)
    return -OUT_OF_RANGE if text[0] == "-" else OUT_OF_RANGE


# Built once: json.loads with options would build a new decoder per call.
_DECODER = json.JSONDecoder(parse_float=_decimal, parse_constant=_no_constants, object_pairs_hook=_unique)
_BOUNDED = json.JSONDecoder(parse_float=_decimal, parse_constant=_no_constants, object_pairs_hook=_unique,
                            parse_int=_bounded_int)
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json(data: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: fractions as ``Decimal``, no NaN/Infinity, no repeated key, no lone
    surrogates (``\\ud800`` escapes decode to strings that can be neither stored nor sent back); an integer
    too long for CPython becomes OUT_OF_RANGE. Raises ValueError (or RecursionError when nested too deeply)."""
    text = data.decode()
    try:
        obj = _DECODER.decode(text)
    except ValueError:  # malformed (raised again below), or an integer of more digits than int() takes
        obj = _BOUNDED.decode(text)
    if b"\\u" in data:
        stack = [obj]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    raise ValueError("a string holds a lone surrogate")
            elif isinstance(item, dict):
                stack.extend(item)
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return obj


def parse_request(line: bytes) -> Request:
    """Decode one request line; numbers with a fraction become ``Decimal`` (never float)."""
    try:
        obj = decode_json(line)
    except RecursionError:
        raise ProtocolError(400, "INVALID_JSON", "JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise ProtocolError(400, "INVALID_JSON", "line is not valid UTF-8") from None
    except ValueError as e:
        raise ProtocolError(400, "INVALID_JSON", f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(400, "INVALID_REQUEST", "a request must be a JSON object")
    ext_id = obj.get("extID")
    if ext_id is not None and (not isinstance(ext_id, str) or not 0 < len(ext_id) <= MAX_EXT_ID):
        raise ProtocolError(400, "INVALID_REQUEST", f"extID must be a string of 1 to {MAX_EXT_ID} characters",
                            ext_id if isinstance(ext_id, str) else None)
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        raise ProtocolError(400, "INVALID_REQUEST", "command must be a non-empty string", ext_id)
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
        return orjson.dumps({"status": 200, "data": data}) + CRLF
    return orjson.dumps({"extID": ext_id, "status": 200, "data": data}) + CRLF


def error(ext_id: str | None, status: int, code: str, message: str) -> bytes:
    reply = {"status": status, "error": code, "message": message}
    if ext_id is not None:
        reply = {"extID": ext_id, **reply}
    return orjson.dumps(reply) + CRLF


def event_json(seq: int, type_: int, data: bytes) -> bytes:
    """A ``trade:event`` message without line terminator (one WebSocket text frame)."""
    return b'{"event":"trade:event","type":%d,"seq":%d,"data":%s}' % (type_, seq, data)
