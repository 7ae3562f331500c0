"""What the contract answers to a manager line before any command looks at it (:func:`protocol_expect`),
and the extID such an answer echoes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.fuzz.strategies.commands import Fixed
from tests.fuzz.strategies.constants import MAX_EXT_ID
from tests.fuzz.strategies.json_text import _has_surrogate

_EXT_ID_TEXT = re.compile(rb'"extID"\s*:\s*("(?:[^"\\]|\\.)*")')


def _good_ext_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_EXT_ID and not _has_surrogate(value)


def readable_ext_id(line: bytes) -> str | None:
    """The extID a line that cannot be decoded is answered with: the one ``"extID": "..."`` the raw line
    holds, when it holds exactly one and it is a good extID; else None."""
    found = _EXT_ID_TEXT.findall(line)
    if len(found) != 1:
        return None
    try:
        value = json.loads(found[0])
    except ValueError:
        return None
    return value if _good_ext_id(value) else None


@dataclass(frozen=True)
class _NonFinite:
    name: str


class _RepeatedKey(Exception):
    pass


def _no_repeats(pairs: list) -> dict:
    if len({k for k, _ in pairs}) != len(pairs):
        raise _RepeatedKey()
    return dict(pairs)


def _not_carried(obj: Any) -> list[str]:
    """The paths (``data.comment``, ``data.zz[1]``, ``__token``) of every value JSON cannot carry back: a NaN
    or an infinity, a string with a lone surrogate; for a key with a lone surrogate, its object's path (whose
    members are then not looked into)."""
    paths: list[str] = []
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _NonFinite) or (isinstance(item, str) and _has_surrogate(item)):
            paths.append(path)
        elif isinstance(item, dict):
            if any(_has_surrogate(k) for k in item):
                paths.append(path)
            else:
                stack.extend((f"{path}.{k}" if path else k, v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return paths


def protocol_expect(line: bytes) -> tuple[list | None, bool]:
    """What the contract answers to a line before any command looks at it, in this order:

    * not UTF-8, not JSON, nested too deep to parse, or a key repeated in one object: 400 INVALID_JSON, with
      the extID the raw line names (:func:`readable_ext_id`);
    * not an object: 400 INVALID_REQUEST (no extID);
    * an extID that is not a string of 1 to 256 characters: 400 INVALID_REQUEST, echoing it when it is a
      string that can be written back; a command that is not a non-empty string: INVALID_REQUEST + extID;
    * a NaN or an infinity anywhere, or a lone surrogate in any string: 400 INVALID_DATA naming where,
      with the extID.

    Returns (the acceptable answers, or None when the command decides; whether the line holds a number beyond
    what a decimal holds, which the server may also refuse as INVALID_JSON). An integer of more digits than
    CPython parses is read as out of range (the command's validation refuses it where it must)."""
    beyond = False

    def number(text: str) -> Decimal:
        nonlocal beyond
        try:
            return Decimal(text)
        except ArithmeticError:
            beyond = True
            return Decimal(0)

    def integer(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            return -(10**40) if text.startswith("-") else 10**40

    try:
        obj = json.loads(line.decode("utf-8"), parse_float=number, parse_int=integer, parse_constant=_NonFinite,
                         object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError, _RepeatedKey):
        return [Fixed(400, "INVALID_JSON", readable_ext_id(line))], False
    if not isinstance(obj, dict):
        return [Fixed(400, "INVALID_REQUEST", None)], beyond
    ext = obj.get("extID")
    if ext is not None and not _good_ext_id(ext):
        echo = ext if isinstance(ext, str) and not _has_surrogate(ext) else None
        return [Fixed(400, "INVALID_REQUEST", echo)], beyond
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        return [Fixed(400, "INVALID_REQUEST", ext)], beyond
    where = _not_carried(obj)
    if where:
        return [Fixed(400, "INVALID_DATA", ext, tuple(where))], beyond
    return None, beyond
