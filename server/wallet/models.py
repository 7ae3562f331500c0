"""Pydantic models of the game-wallet API's JSON bodies (``/v1/*``), and the fast path of the common debit, credit
and cancel body (:func:`fast_move`): the one place where a provider's input is validated."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, NamedTuple

from pydantic import BeforeValidator, Field

from syncledger.ledger import MoneyError, to_micro

from ..fields import Model, micro
from ..wire import fast_decode, no_repeated_key

WalletId = Annotated[str, Field(strict=True, min_length=1, max_length=64)]
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?")


def _wallet_micro(value: Any) -> int:
    """A JSON number, or a plain decimal string such as ``"1.55"`` (providers send both), exact."""
    if isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError("amount must be a number or a decimal string")
        value = Decimal(value)
    return micro(value)


WalletAmount = Annotated[int, BeforeValidator(_wallet_micro), Field(ge=0)]
Currency = Annotated[str, Field(strict=True, pattern=r"^[A-Z]{3}$")]


_LOGIN_TEXT = re.compile(r"[1-9][0-9]{0,17}")


def _user_id(value: Any) -> int:
    """The login as it was issued: its canonical decimal form only ("01003", "+1003" or "1_003" name no account)."""
    if not isinstance(value, str) or not _LOGIN_TEXT.fullmatch(value):
        raise ValueError("userId must be the account login as a decimal string")
    return int(value)


class Game(Model):
    id: WalletId
    type: Annotated[str, Field(strict=True, max_length=64)] = ""
    session: Annotated[str, Field(strict=True, max_length=128)] = ""


class Transaction(Model):
    id: WalletId
    refId: WalletId | None = None
    amount: WalletAmount | None = None


class WalletUser(Model):
    """``POST /v1/sid`` (test environments): a check request whose sid is not looked at."""

    userId: Annotated[int, BeforeValidator(_user_id)]
    uuid: Annotated[str, Field(strict=True, max_length=128)] | None = None


class WalletSession(WalletUser):
    """``check`` and ``balance``."""

    sid: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    currency: Currency | None = None


class WalletMove(WalletUser):
    """``debit``, ``credit`` and ``cancel``. The sid may be expired, empty, null or missing on credit and
    cancel (debit checks it)."""

    sid: Annotated[str, Field(strict=True, max_length=128)] | None = None
    currency: Currency
    game: Game | None = None
    transaction: Transaction


class PromoGame(Model):
    """A promotional payout's game, if any (a tournament's may have none)."""

    id: WalletId | None = None
    type: Annotated[str, Field(strict=True, max_length=64)] | None = ""
    session: Annotated[str, Field(strict=True, max_length=128)] | None = ""


class PromoTransaction(Model):
    """``type`` (e.g. ``JackpotWin``, ``FreeRoundPlayableSpent``), ``id`` and ``amount``; the rest (``voucherId``,
    ``remainingRounds``, ``jackpots``...) is the provider's and is not looked at."""

    type: Annotated[str, Field(strict=True, min_length=1, max_length=64)]
    id: WalletId
    amount: WalletAmount


class WalletPromo(WalletUser):
    """``promo_payout``: a credit with no debit. The sid may be expired, empty, null or missing, as on credit."""

    sid: Annotated[str, Field(strict=True, max_length=128)] | None = None
    currency: Currency
    game: PromoGame | None = None
    promoTransaction: PromoTransaction


# ---- the fast path of debit, credit and cancel bodies: one msgspec decode and a hand check of the common shape,
# for a body that it can prove valid exactly as app.parse_body and WalletMove would take it. Anything else (any
# doubt) gives None, and the body takes the usual path, which decides every refusal (the proof:
# tests/fuzz/test_wallet_fast_path.py).

FAST_ACTIONS = frozenset(("debit", "credit", "cancel"))
_TOP = frozenset(("sid", "userId", "currency", "game", "transaction", "uuid"))  # WalletMove's fields
_GAME, _TX = frozenset(("id", "type", "session")), frozenset(("id", "refId", "amount"))  # Game's, Transaction's


class FastGame(NamedTuple):
    id: str
    type: str
    session: str


class FastTransaction(NamedTuple):
    id: str
    refId: str | None
    amount: int | None


class FastMove(NamedTuple):
    """What WalletMove.model_validate gives (the fields app.validated_call reads)."""
    userId: int
    uuid: str | None
    sid: str | None
    currency: str
    game: FastGame | None
    transaction: FastTransaction


def _text(value: Any, low: int, high: int) -> bool:
    return type(value) is str and low <= len(value) <= high


def _fast_amount(value: Any) -> int | None:
    """A WalletAmount: a JSON number or a plain decimal string, exact, at least 0; ValueError if not."""
    if type(value) is str and _DECIMAL_TEXT.fullmatch(value):
        value = Decimal(value)
    elif type(value) not in (int, Decimal):
        raise ValueError("amount")
    micro = to_micro(value)
    if micro < 0:
        raise ValueError("amount")
    return micro


def _fast_game(value: Any) -> FastGame | None:
    if type(value) is not dict or not value.keys() <= _GAME:
        return None
    game = FastGame(value.get("id"), value.get("type", ""), value.get("session", ""))
    ok = _text(game.id, 1, 64) and _text(game.type, 0, 64) and _text(game.session, 0, 128)
    return game if ok else None


def _fast_transaction(value: Any) -> FastTransaction | None:
    if type(value) is not dict or not value.keys() <= _TX:
        return None
    tx_id, ref_id, amount = value.get("id"), value.get("refId"), value.get("amount")
    if not _text(tx_id, 1, 64) or (ref_id is not None and not _text(ref_id, 1, 64)):
        return None
    try:
        return FastTransaction(tx_id, ref_id, None if amount is None else _fast_amount(amount))
    except (MoneyError, ValueError, ArithmeticError):
        return None


def fast_move(body: bytes) -> tuple[Any, FastMove] | None:
    """(uuid, the validated body) of a debit, credit or cancel body of the common shape, or None."""
    try:
        obj = fast_decode(body)
    except Exception:  # malformed, or what Decimal cannot hold: the usual path says which
        return None
    if type(obj) is not dict or not obj.keys() <= _TOP:
        return None
    raw_game, raw_tx = obj.get("game"), obj.get("transaction")
    game = None if raw_game is None else _fast_game(raw_game)
    tx = _fast_transaction(raw_tx)
    user, uuid, sid, currency = obj.get("userId"), obj.get("uuid"), obj.get("sid"), obj.get("currency")
    if (tx is None or (raw_game is not None and game is None) or type(user) is not str
            or not _LOGIN_TEXT.fullmatch(user) or (uuid is not None and not _text(uuid, 0, 128))
            or (sid is not None and not _text(sid, 0, 128)) or type(currency) is not str or len(currency) != 3
            or not ("A" <= currency[0] <= "Z" and "A" <= currency[1] <= "Z" and "A" <= currency[2] <= "Z")):
        return None
    if not no_repeated_key(body, len(obj) + len(raw_tx) + (len(raw_game) if raw_game is not None else 0)):
        return None
    return uuid, FastMove(int(user), uuid, sid, currency, game, tx)
