"""The writer process's message format: the store's commands and outcomes as plain tuples for ``marshal``
(no pickled classes): a registered object is ``(code, *fields)``, every other value is sent as it is."""

from __future__ import annotations

import marshal
from operator import attrgetter
from typing import Any, Callable

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


def dumps(value: Any) -> bytes:
    return marshal.dumps(encode(value))


def loads(data: bytes) -> Any:
    return decode(marshal.loads(data))
