"""The writer process's message format: the store's commands and outcomes as plain data for ``marshal`` (no
pickled classes). A registered object is ``(code, *fields)``, every other value is sent as it is; a batch
(:func:`encode_batch`) and its outcomes (:func:`encode_outcomes`) send their common kind, finance, as one flat
list of fields instead, in one pass, and only the rest as registered objects."""

from __future__ import annotations

import itertools
import marshal
from operator import attrgetter
from typing import Any, Callable, Sequence

import orjson

from .commands import (AddAccount, CatchUp, Event, Finance, OpenSession, Outcome, PruneSessions, Receipt, WalletCall,
                       WalletResult)
from .errors import LedgerError
from .rules import FinanceRequest

_PLAIN = frozenset({int, str, bytes, bool, float, type(None)})


class _Kind:
    """How one registered class goes to a tuple and back: its fields in constructor order, and the
    positions of the fields that may hold registered objects (the others are plain values)."""

    __slots__ = ("code", "fields", "nested", "make")

    def __init__(self, code: int, fields: Callable[[Any], tuple], nested: tuple[int, ...],
                 make: Callable[..., Any]):
        self.code, self.fields, self.nested, self.make = code, fields, nested, make


_KINDS: dict[type, _Kind] = {}
_BY_CODE: list[_Kind] = []


def _register(cls: type, fields: tuple[str, ...] | None = None, nested: tuple[int, ...] = (),
              get: Callable[[Any], tuple] | None = None, make: Callable[..., Any] | None = None) -> None:
    if get is None:
        names = fields if fields is not None else tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        get = attrgetter(*names)
        if len(names) == 1:
            get = (lambda one: lambda obj: (one(obj),))(get)
    kind = _Kind(len(_BY_CODE), get, nested, make or cls)
    _KINDS[cls] = kind
    _BY_CODE.append(kind)


_register(Finance, nested=(0,))
_register(FinanceRequest)
_register(AddAccount)
_register(Outcome, nested=(0, 1, 2))
_register(Event)
_register(Receipt)
_register(LedgerError, ("status", "code", "message"))
_register(orjson.Fragment, get=lambda f: (orjson.dumps(f),))  # exact money, already JSON (reads.account)
_register(WalletCall)
_register(WalletResult)
_register(OpenSession)
_register(PruneSessions)
_register(CatchUp, get=lambda c: ())


def encode(value: Any) -> Any:
    """A value made of plain data only: registered objects become tuples, lists and dicts are walked."""
    t = type(value)
    if t in _PLAIN:
        return value
    kind = _KINDS.get(t)
    if kind is not None:
        fields = kind.fields(value)
        if kind.nested:
            fields = list(fields)
            for i in kind.nested:
                fields[i] = encode(fields[i])
        return (kind.code, *fields)
    if t is list:
        return [encode(v) for v in value]
    if t is dict:
        return {k: encode(v) for k, v in value.items()}
    raise TypeError(f"the writer process cannot send a {t.__name__}")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    t = type(value)
    if t is tuple:
        kind = _BY_CODE[value[0]]
        if kind.nested:
            fields = list(value[1:])
            for i in kind.nested:
                fields[i] = decode(fields[i])
            return kind.make(*fields)
        return kind.make(*value[1:])
    if t is list:
        return [decode(v) for v in value]
    if t is dict:
        return {k: decode(v) for k, v in value.items()}
    return value


# A batch's Finance commands, field after field, in the order the constructors take them.
_FINANCE = attrgetter("request.op", "request.login", "request.amount", "request.comment", "request.order",
                      "request.open_time", "request.close_time", "request.allow_zero",
                      "now", "manager", "ext_id", "new_order", "source")
_FINANCE_FIELDS = 13
_RECEIPT_FIELDS = 7  # seq (0: a replay, no event), order, login, cmd, amount, type, record


def encode_batch(commands: Sequence[Any]) -> tuple[list, list, list]:
    """A batch as (the Finance commands' fields, flat; every other command, encoded; their positions)."""
    finance: list = []
    others: list = []
    at: list = []
    for i, c in enumerate(commands):
        if type(c) is Finance and type(c.request) is FinanceRequest:
            finance += _FINANCE(c)
        else:
            others.append(encode(c))
            at.append(i)
    return finance, others, at


def decode_batch(message: tuple[list, list, list]) -> list:
    """The inverse of :func:`encode_batch`."""
    finance, others, at = message
    commands = [Finance(FinanceRequest(op, login, amount, comment, order, open_time, close_time, allow_zero),
                        now, manager, ext_id, new_order, source)
                for op, login, amount, comment, order, open_time, close_time, allow_zero, now, manager, ext_id,
                new_order, source in zip(*[iter(finance)] * _FINANCE_FIELDS, strict=True)]
    return _merge(commands, others, at)


def encode_outcomes(outcomes: Sequence[Any]) -> tuple[list, list, list]:
    """A batch's outcomes as (the finance outcomes' receipts and events, flat; every other outcome, encoded;
    their positions). A finance outcome is a receipt row, a receipt with the one event it committed, or a
    replay's receipt alone."""
    receipts: list = []
    others: list = []
    at: list = []
    for i, o in enumerate(outcomes):
        if type(o) is tuple:  # a receipt row (Store.apply_batch with rows): sent as it is
            assert len(o) == _RECEIPT_FIELDS and o[0], "a receipt row is a committed event's seven fields"
            receipts += o
            continue
        if type(o) is Outcome and type(o.data) is Receipt and o.error is None:
            r, events = o.data, o.events
            if not events:
                if o.replay:
                    receipts += (0, r.order, r.login, r.cmd, r.amount, r.type, r.record)
                    continue
            elif len(events) == 1 and not o.replay:
                e = events[0]
                if type(e) is Event and e.seq and e.type == r.type and e.order == r.order and e.data == r.record:
                    receipts += (e.seq, r.order, r.login, r.cmd, r.amount, r.type, r.record)
                    continue
        others.append(encode(o))
        at.append(i)
    return receipts, others, at


def decode_outcomes(message: tuple[list, list, list]) -> list[Outcome]:
    """The inverse of :func:`encode_outcomes`."""
    receipts, others, at = message
    outcomes = [Outcome(data=Receipt(order, login, cmd, amount, type_, record),
                        events=[Event(seq, type_, order, record)]) if seq else
                Outcome(data=Receipt(order, login, cmd, amount, type_, record), replay=True)
                for seq, order, login, cmd, amount, type_, record in zip(*[iter(receipts)] * _RECEIPT_FIELDS,
                                                                         strict=True)]
    return _merge(outcomes, others, at)


def _merge(common: list, others: list, at: list) -> list:
    """``common`` with each of ``others`` decoded and put at its position (in ``at``)."""
    if not others:
        return common
    if not common:
        return [decode(v) for v in others]
    merged: list = []
    rest = iter(common)
    for i, value in zip(at, others, strict=True):
        merged += itertools.islice(rest, i - len(merged))
        merged.append(decode(value))
    merged += rest
    return merged


def dumps(value: Any) -> bytes:
    return marshal.dumps(encode(value))


def loads(data: bytes) -> Any:
    return decode(marshal.loads(data))
