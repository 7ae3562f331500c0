"""The fast path of debit, credit and cancel bodies: one msgspec decode and a hand check of the common shape, for
a body that it can prove valid exactly as :func:`app.parse_body` and :class:`models.WalletMove` would take it.

Anything else (any doubt) gives None, and the body takes the usual path, which decides every refusal.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from syncledger.ledger import MoneyError, to_micro

from .models import _DECIMAL_TEXT, _LOGIN_TEXT

MOVES = frozenset(("debit", "credit", "cancel"))
# Fractions as exact Decimals, as wire.decode_json makes them. msgspec refuses NaN, the infinities, lone surrogates
# and bytes that are not UTF-8 outright: what it decodes holds nothing that wire.invalid_value would name.
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_TOP = frozenset(("sid", "userId", "currency", "game", "transaction", "uuid"))  # WalletMove's fields
_GAME, _TX = frozenset(("id", "type", "session")), frozenset(("id", "refId", "amount"))  # Game's, Transaction's


class Game(NamedTuple):
    id: str
    type: str
    session: str


class Transaction(NamedTuple):
    id: str
    refId: str | None
    amount: int | None


class Move(NamedTuple):
    """What WalletMove.model_validate gives, for app.wallet_call."""
    userId: int
    uuid: str | None
    sid: str | None
    currency: str
    game: Game | None
    transaction: Transaction


def _text(value: Any, low: int, high: int) -> bool:
    return type(value) is str and low <= len(value) <= high


def _amount(value: Any) -> int | None:
    """A WalletAmount: a JSON number or a plain decimal string, exact, at least 0; ValueError if not."""
    if type(value) is str and _DECIMAL_TEXT.fullmatch(value):
        value = Decimal(value)
    elif type(value) not in (int, Decimal):
        raise ValueError("amount")
    micro = to_micro(value)
    if micro < 0:
        raise ValueError("amount")
    return micro


def _game(value: Any) -> Game | None:
    if type(value) is not dict or not value.keys() <= _GAME:
        return None
    game = Game(value.get("id"), value.get("type", ""), value.get("session", ""))
    ok = _text(game.id, 1, 64) and _text(game.type, 0, 64) and _text(game.session, 0, 128)
    return game if ok else None


def _transaction(value: Any) -> Transaction | None:
    if type(value) is not dict or not value.keys() <= _TX:
        return None
    tx_id, ref_id, amount = value.get("id"), value.get("refId"), value.get("amount")
    if not _text(tx_id, 1, 64) or (ref_id is not None and not _text(ref_id, 1, 64)):
        return None
    try:
        return Transaction(tx_id, ref_id, None if amount is None else _amount(amount))
    except (MoneyError, ValueError, ArithmeticError):
        return None


def _one_level(body: bytes, members: int) -> bool:
    """Whether ``body`` (valid JSON whose objects hold ``members`` keys in all once decoded) has no repeated key:
    each member of an object has one colon outside the strings, and a repeated key is one member fewer once
    decoded."""
    return body.count(b":") == members or _STRING.sub(b"", body).count(b":") == members


def move(body: bytes) -> tuple[Any, Move] | None:
    """(uuid, the validated body) of a debit, credit or cancel body of the common shape, or None."""
    try:
        obj = _DECODER.decode(body)
    except Exception:  # malformed, or what Decimal cannot hold: the usual path says which
        return None
    if type(obj) is not dict or not obj.keys() <= _TOP:
        return None
    raw_game, raw_tx = obj.get("game"), obj.get("transaction")
    game = None if raw_game is None else _game(raw_game)
    tx = _transaction(raw_tx)
    user, uuid, sid, currency = obj.get("userId"), obj.get("uuid"), obj.get("sid"), obj.get("currency")
    if (tx is None or (raw_game is not None and game is None) or type(user) is not str
            or not _LOGIN_TEXT.fullmatch(user) or (uuid is not None and not _text(uuid, 0, 128))
            or (sid is not None and not _text(sid, 0, 128)) or type(currency) is not str or len(currency) != 3
            or not ("A" <= currency[0] <= "Z" and "A" <= currency[1] <= "Z" and "A" <= currency[2] <= "Z")):
        return None
    if not _one_level(body, len(obj) + len(raw_tx) + (len(raw_game) if raw_game is not None else 0)):
        return None
    return uuid, Move(int(user), uuid, sid, currency, game, tx)
