"""The fast path of the finance commands: one msgspec decode and a hand check of the common shape, for a line
that it can prove valid exactly as :func:`protocol.parse_request` and the pydantic models would take it.

Anything else (any doubt) gives None, and the line takes the usual path, which makes every error message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncledger.ledger import MAX_ID, FinanceRequest, MoneyError, to_micro

from ..wire import fast_decode, no_repeated_key
from . import models
from .protocol import Request, _ext_id


def _id(value: Any, low: int = 1) -> bool:
    return type(value) is int and low <= value <= MAX_ID


def _optional(data: dict, name: str, low: int) -> int | None:
    """``data[name]`` if it is absent, null or an Id/Time in range; else raises ValueError."""
    value = data.get(name)
    if value is None or _id(value, low):
        return value
    raise ValueError(name)


def _transfer(op: str, data: dict, default_comment: str | None) -> FinanceRequest | None:
    """BalanceData (``default_comment`` "Finance") or CreditData (None: the comment is required)."""
    login, amount, comment = data.get("login"), data.get("amount"), data.get("comment", default_comment)
    if not _id(login) or type(comment) is not str or len(comment) > 255 or type(amount) not in (int, Decimal):
        return None
    try:
        micro = to_micro(amount)
        order, open_time, close_time = (_optional(data, "order", 1), _optional(data, "open_time", 0),
                                        _optional(data, "close_time", 0))
    except (MoneyError, ValueError):
        return None
    return FinanceRequest(op, login, micro, comment, order, open_time, close_time) if micro > 0 else None


def _delete(op: str, data: dict) -> FinanceRequest | None:
    order = data.get("order")
    return FinanceRequest(op, order=order) if _id(order) else None


_SHAPES = {models.BalanceData: lambda op, data: _transfer(op, data, "Finance"),
           models.CreditData: lambda op, data: _transfer(op, data, None),
           models.DeleteData: _delete}
CHECKS = {name + sync: (name, _SHAPES[model]) for name, model in models.FINANCE_MODELS.items() for sync in ("", "Sync")}


def finance_request(line: bytes) -> Request | None:
    """The Request of a finance command line, its data already checked (``Request.finance``), or None."""
    try:
        obj = fast_decode(line)
    except Exception:  # malformed, or a number Decimal cannot hold: the usual path says which
        return None
    command = obj.get("command") if type(obj) is dict else None
    if type(command) is not str or (check := CHECKS.get(command)) is None:
        return None
    data, raw_ext_id, token = obj.get("data"), obj.get("extID"), obj.get("__token")
    if type(data) is not dict or type(token) is not str or (raw_ext_id is not None and _ext_id(raw_ext_id) is None):
        return None
    if not no_repeated_key(line, len(obj) + len(data)):  # (nor a member deeper than data)
        return None
    op, shape = check
    finance = shape(op, data)
    return None if finance is None else Request(command, raw_ext_id, data, token, finance)
