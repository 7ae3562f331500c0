"""Pydantic models of the game-wallet API's JSON bodies (``/v1/*``): the one place where a provider's input is
validated."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from ..fields import Model, micro

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
