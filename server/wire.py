"""Sans-IO JSON that every adapter shares: bytes in -> values (exact decimals, no repeated key, what JSON cannot
carry back named), values -> plain-ASCII bytes out, and the ``trade:event`` message. No I/O and no Trio."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

CRLF = b"\r\n"  # the end of every JSON line the server writes

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
SURROGATE = re.compile("[\ud800-\udfff]")


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
            if SURROGATE.search(item):
                return f"{path or 'value'}: a string holds a lone surrogate"
        elif isinstance(item, Decimal):
            if not item.is_finite():
                return f"{path or 'value'}: {item} is not a number"
        elif isinstance(item, dict):
            for key, value in item.items():
                if SURROGATE.search(key):
                    return f"{path or 'object'}: a key holds a lone surrogate"
                stack.append((f"{path}.{key}" if path else key, value))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", value) for i, value in enumerate(item))
    return None


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


def event_json(seq: int, type_: int, data: bytes) -> bytes:
    """A ``trade:event`` message without line terminator (one WebSocket text frame)."""
    return plain(b'{"event":"trade:event","type":%d,"seq":%d,"data":%s}' % (type_, seq, data))


# ---- the fast paths' decoding (server/manager/fast.py, server/wallet/models.py): msgspec, for a body that a
# hand check may then prove valid exactly as the usual path would take it; any doubt takes the usual path.

# Fractions as exact Decimals, as decode_json makes them. msgspec refuses NaN, the infinities, lone surrogates
# (\ud800) and bytes that are not UTF-8 outright: what it decodes holds nothing that invalid_value would name.
fast_decode = msgspec.json.Decoder(float_hook=Decimal).decode
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def no_repeated_key(body: bytes, members: int) -> bool:
    """Whether ``body`` (valid JSON whose objects hold ``members`` keys in all once decoded, none of them deeper
    than the caller looked) has no repeated key: each member of an object has one colon outside the strings, and
    a repeated key is one member fewer once decoded."""
    return body.count(b":") == members or _STRING.sub(b"", body).count(b":") == members
