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


_CONSTANTS = {"NaN": Decimal("NaN"), "Infinity": Decimal("Infinity"), "-Infinity": Decimal("-Infinity")}


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal holds
        raise ValueError(f"number {text[:32]} is out of range") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    """An object without a repeated key: ``{"command": "Ping", "command": "BalanceIn"}`` is ambiguous."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"key {quoted(repeated[:64])} appears twice in one object")
    return obj


# Larger in magnitude than every range the models accept: an integer of more digits than CPython parses
# (4,300) becomes this, so that the field's own validation names it instead of the JSON decoder failing.
OUT_OF_RANGE = 10**40


def _bounded_int(text: str) -> int:
    if len(text) <= 40:
        return int(text)
    return -OUT_OF_RANGE if text[0] == "-" else OUT_OF_RANGE


# Built once: json.loads with options would build a new decoder per call. NaN and Infinity are read (as
# Decimals) so that the request keeps its extID and the field they are in is named when refused.
_DECODER = json.JSONDecoder(parse_float=_decimal, parse_constant=_CONSTANTS.__getitem__, object_pairs_hook=_unique)
_BOUNDED = json.JSONDecoder(parse_float=_decimal, parse_constant=_CONSTANTS.__getitem__, object_pairs_hook=_unique,
                            parse_int=_bounded_int)
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json(data: bytes) -> Any:
    """JSON from UTF-8 bytes: fractions as ``Decimal`` (NaN and Infinity too, for :func:`invalid_value` to
    refuse), no repeated key; an integer too long for CPython becomes OUT_OF_RANGE. Raises ValueError (or
    RecursionError when nested too deeply)."""
    text = data.decode()
    try:
        return _DECODER.decode(text)
    except ValueError as e:
        if "integer string conversion" not in str(e):
            raise
        return _BOUNDED.decode(text)  # an integer of more digits than int() takes (CPython's own limit)


def invalid_value(obj: Any, raw: bytes) -> str | None:
    """Where ``obj`` (decoded from ``raw``) holds what JSON cannot carry back: a NaN or an infinity, or a
    string with a lone surrogate (``\\ud800``), as ``path: reason``; None if nowhere (the common case is
    decided by a look at ``raw``)."""
    if b"\\u" not in raw and b"NaN" not in raw and b"Infinity" not in raw:
        return None
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return f"{path or 'value'}: a string holds a lone surrogate"
        elif isinstance(item, Decimal):
            if not item.is_finite():
                return f"{path or 'value'}: {item} is not a number"
        elif isinstance(item, dict):
            for key, value in item.items():
                if _SURROGATE.search(key):
                    return f"{path or 'object'}: a key holds a lone surrogate"
                stack.append((f"{path}.{key}" if path else key, value))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", value) for i, value in enumerate(item))
    return None


_EXT_ID = re.compile(rb'"extID"\s*:\s*("(?:[^"\\]|\\.)*")')


def _ext_id(value: Any) -> str | None:
    """``value`` if it is an extID that can be echoed."""
    if isinstance(value, str) and 0 < len(value) <= MAX_EXT_ID and not _SURROGATE.search(value):
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
        echo = raw_ext_id if isinstance(raw_ext_id, str) and not _SURROGATE.search(raw_ext_id) else None
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


def quoted(name: str) -> str:
    """A name for a message, in double quotes (the server's messages never quote with an apostrophe)."""
    return json.dumps(name, ensure_ascii=False)


# Everything the server writes is plain ASCII: non-ASCII characters and the apostrophe become \u
# escapes (the JSON value is the same). The official SDKs decode each TCP read on its own, which splits
# multi-byte characters, and the PHP SDK "repairs" every line before parsing it: ' becomes ", and a comma
# before } or ] (optionally with blanks between) is dropped. orjson never writes such a comma outside a
# string, so those commas are escaped too.
_NOT_PLAIN = re.compile("[^\x00-\x26\x28-\x7f]|,(?=\\s*[}\\]])")
_SDK_REPAIRS = re.compile(rb",\s*[}\]]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
    return "\\u%04x" % code


def plain(out: bytes) -> bytes:
    """``out`` (JSON from orjson) with every non-ASCII character, apostrophe and SDK-bait comma escaped."""
    if out.isascii() and b"'" not in out and not _SDK_REPAIRS.search(out):
        return out
    return _NOT_PLAIN.sub(_escape, out.decode()).encode()


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


def event_json(seq: int, type_: int, data: bytes) -> bytes:
    """A ``trade:event`` message without line terminator (one WebSocket text frame)."""
    return plain(b'{"event":"trade:event","type":%d,"seq":%d,"data":%s}' % (type_, seq, data))
