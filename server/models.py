"""Pydantic models of each manager command's ``data``: the one place where request input is validated."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from syncledger.ledger.money import MoneyError, to_micro
from syncledger.ledger import MAX_ID


def _micro(value: Any) -> int:
    try:
        return to_micro(value)
    except MoneyError as e:
        raise ValueError(str(e)) from None


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("amount must be greater than 0")
    return value


# A positive JSON number of at most 6 decimals, as integer micro-units.
Amount = Annotated[int, BeforeValidator(_micro), AfterValidator(_positive)]
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Time = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
Text = Annotated[str, Field(strict=True, max_length=255)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BalanceData(_Data):
    login: Id
    amount: Amount
    comment: Text = "Finance"
    order: Id | None = None
    open_time: Time | None = None
    close_time: Time | None = None


class CreditData(BalanceData):
    comment: Text  # required for credit operations


class DeleteData(_Data):
    order: Id


class LoginData(_Data):
    login: Id
    password: Annotated[str, Field(strict=True, max_length=1024)]


def _flag(value: Any) -> bool:
    """true/false, or 1/0 as the PHP SDK's example sends it."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise ValueError("must be true, false, 1 or 0")


class AddUserData(_Data):
    """``AddUser`` as the SDKs send it: ``currency`` defaults to the server's, ``password`` (hashed before it
    is stored) lets the account log in as a USER session."""

    login: Id | None = None
    name: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    currency: Annotated[str, Field(strict=True, pattern=r"^[A-Z]{3}$")] | None = None
    group: Annotated[str, Field(strict=True, min_length=1, max_length=64)] = "default"
    password: Annotated[str, Field(strict=True, min_length=1, max_length=1024)] | None = None
    leverage: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 100
    email: Annotated[str, Field(strict=True, max_length=254)] = ""
    enable: Annotated[bool, BeforeValidator(_flag)] = True


class LoginRef(_Data):
    login: Id


class OrderRef(_Data):
    order: Id


class GetTradesData(_Data):
    login: Id
    from_: Time | None = Field(default=None, alias="from")
    to: Time | None = None


class GetUsersData(_Data):
    group: Annotated[str, Field(strict=True, min_length=1, max_length=64)] | None = None
    from_login: Annotated[int, Field(strict=True, ge=0, le=MAX_ID)] = 0
    limit: Annotated[int, Field(strict=True, ge=1)] = 1000


class SubscribeData(_Data):
    chanels: list[Annotated[str, Field(strict=True)]] | None = None  # the platform's spelling
    channels: list[Annotated[str, Field(strict=True)]] | None = None
    from_seq: Annotated[int, Field(strict=True, ge=0, le=MAX_ID)] | None = None

    def names(self) -> list[str]:
        return (self.chanels or []) + (self.channels or [])


def describe(error: ValidationError) -> str:
    """The first validation problem as ``field: reason``."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "data"
    return f"{where}: {first['msg']}".replace("'", '"')  # the server never quotes with an apostrophe


# ---- game-wallet requests (JSON bodies of /v1/*)

WalletId = Annotated[str, Field(strict=True, min_length=1, max_length=64)]
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?")


def _wallet_micro(value: Any) -> int:
    """A JSON number, or a plain decimal string such as ``"1.55"`` (providers send both), exact."""
    if isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError("amount must be a number or a decimal string")
        value = Decimal(value)
    return _micro(value)


WalletAmount = Annotated[int, BeforeValidator(_wallet_micro), Field(ge=0)]
Currency = Annotated[str, Field(strict=True, pattern=r"^[A-Z]{3}$")]


_LOGIN_TEXT = re.compile(r"[1-9][0-9]{0,17}")


def _user_id(value: Any) -> int:
    """The login as it was issued: its canonical decimal form only ("01003", "+1003" or "1_003" name no account)."""
    if not isinstance(value, str) or not _LOGIN_TEXT.fullmatch(value):
        raise ValueError("userId must be the account login as a decimal string")
    return int(value)


class Game(_Data):
    id: WalletId
    type: Annotated[str, Field(strict=True, max_length=64)] = ""
    session: Annotated[str, Field(strict=True, max_length=128)] = ""


class Transaction(_Data):
    id: WalletId
    refId: WalletId | None = None
    amount: WalletAmount | None = None


class WalletUser(_Data):
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
