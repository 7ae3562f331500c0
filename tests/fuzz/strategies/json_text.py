"""JSON text as the fuzzer writes it: raw literals, left-out keys, repeated keys, any Unicode
(lone surrogates included), and the test of whether a text holds a lone surrogate."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import strategies as st


class Lit(str):
    """Raw JSON text, written as it is: ``NaN``, ``1e400``, ``-0``, an integer of 10,000 digits, ``[[[...]]]``."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a key left out


class Pairs(tuple):
    """A JSON object written from (key, value) pairs as they are: a key may repeat."""


def _has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


def enc(value: Any, *, ascii_only: bool = True, compact: bool = True) -> str:
    """JSON text of ``value`` (dicts keep their order; :data:`MISSING` values are left out; Lit is raw)."""
    item, key = (",", ":") if compact else (", ", ": ")

    def s(text: str) -> str:
        return json.dumps(text, ensure_ascii=ascii_only or _has_surrogate(text))

    def go(v: Any) -> str:
        if isinstance(v, Lit):
            return str(v)
        if isinstance(v, Pairs):
            return "{" + item.join(s(k) + key + go(x) for k, x in v if x is not MISSING) + "}"
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, str):
            return s(v)
        if isinstance(v, (list, tuple)):
            return "[" + item.join(go(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + item.join(s(k) + key + go(x) for k, x in v.items() if x is not MISSING) + "}"
        raise TypeError(f"cannot encode {v!r}")

    return go(value)


@cache
def text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any Unicode text, lone surrogates included: a request that holds one in a string is refused as
    INVALID_DATA naming where (see :func:`protocol_expect`)."""
    return st.text(st.characters(), min_size=min_size, max_size=max_size)


# What the official SDKs' users type: non-ASCII text and apostrophes (the server writes them as \uXXXX escapes).
QUIRKY = ["O'Brien", "Zo\u00eb's bonus \u20ac5", "\u4e2d\u6587 comment", "emoji \U0001F600 it's", "it's 'quoted'", "'",
          "l'\u00e9t\u00e9", "\u00c9ric", "''", "\\'", "\"'\"", "caf\u00e9 \u2019 \u2018", "\u0000'"]


def _digits(n: int) -> str:
    return ("9876543210" * (n // 10 + 1))[:n].lstrip("0") or "9"


# Any JSON value (small), for extra fields and wrong types.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | text(max_size=10)
    | st.sampled_from([Lit("1.5"), Lit("-0.0"), Lit("1e3"), Lit("0.000001")]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def lone_surrogate(data: bytes) -> bool:
    """Does this JSON text hold a string with a lone surrogate (an escape like \\ud800 alone)? Such text is
    not Unicode (the wallet refuses it as INVALID_PARAMETER)."""
    if b"\\u" not in data:
        return False
    try:
        stack = [json.loads(data.decode())]
    except (ValueError, RecursionError):
        return False
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
