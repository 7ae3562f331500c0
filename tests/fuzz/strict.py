"""How the fuzz suite reads what the server writes: strictly (UTF-8 JSON with no NaN and no repeated key,
exact decimals, money in exact micro-units), failing the example with :class:`Failed` otherwise."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


class Failed(AssertionError):
    pass


def _no_constant(name: str) -> Any:
    raise Failed(f"reply holds the non-JSON literal {name}")


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Failed(f"reply repeats a key: {keys}")
    return dict(pairs)


def strict_json(raw: bytes) -> Any:
    """Parse a reply as strict JSON (UTF-8, no NaN, no duplicate keys, exact decimals)."""
    try:
        return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant,
                          object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Failed(f"reply is not JSON ({e}): {raw[:300]!r}") from None


def micro(value: Any, what: str = "amount") -> int:
    """A JSON money value (int or exact Decimal of at most 6 decimals) as micro-units."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise Failed(f"{what} is not a number: {value!r}")
    d = Decimal(value)
    if not d.is_finite() or (isinstance(value, Decimal) and value.as_tuple().exponent < -6):
        raise Failed(f"{what} has more than 6 decimals: {value!r}")
    return int(d.scaleb(6))
