"""Exact money: JSON numbers (int or Decimal) to integer micro-units and back to text."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation

SCALE = 1_000_000  # micro-units per unit
MAX_UNITS = 10**12  # largest magnitude accepted, in units
MAX_MICRO = MAX_UNITS * SCALE
_MICRO = Decimal("0.000001")
# Enough precision for any in-range amount; Inexact means digits were dropped.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])


class MoneyError(ValueError):
    """An amount that is not an exact, finite number of at most 6 decimals within range."""


def to_micro(value: object) -> int:
    """Parse a JSON number (``int`` or ``Decimal``, never ``float``) into micro-units."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise MoneyError("amount must be a JSON number")
    number = Decimal(value)
    if not number.is_finite():
        raise MoneyError("amount must be finite")
    # copy_abs() is exact and context-free: abs() would round (or trap Overflow on 1E+1000000).
    if number.copy_abs() > MAX_UNITS:
        raise MoneyError(f"amount must be at most {MAX_UNITS} in magnitude")
    try:
        return int(number.quantize(_MICRO, context=_EXACT).scaleb(6, context=_EXACT))
    except Inexact:
        raise MoneyError("amount has more than 6 decimals") from None


def to_text(micro: int) -> str:
    """Format micro-units as a JSON number text: ``300000000 -> "300.0"``, ``-1 -> "-0.000001"``."""
    units, frac = divmod(abs(micro), SCALE)
    sign = "-" if micro < 0 else ""
    return f"{sign}{units}.{(f'{frac:06d}'.rstrip('0') or '0')}"


def to_decimal(micro: int) -> Decimal:
    """Micro-units as an exact ``Decimal``."""
    return Decimal(micro).scaleb(-6)
