"""The pydantic building blocks every adapter's request models share: the base model, exact money as
integer micro-units, and the first validation problem said in one line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from syncledger.ledger.money import MoneyError, to_micro


class Model(BaseModel):
    """A request's data: unknown fields ignored, frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def micro(value: Any) -> int:
    """``value`` (a JSON number: int or Decimal, never float) as integer micro-units; ValueError if inexact."""
    try:
        return to_micro(value)
    except MoneyError as e:
        raise ValueError(str(e)) from None


def describe(error: ValidationError) -> str:
    """The first validation problem as ``field: reason``."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "data"
    return f"{where}: {first['msg']}".replace("'", '"')  # the server never quotes with an apostrophe
