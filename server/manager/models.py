"""Pydantic models of each manager command's ``data``: the one place where request input is validated."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from syncledger.ledger import MAX_ID

from ..fields import Model, micro


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("amount must be greater than 0")
    return value


# A positive JSON number of at most 6 decimals, as integer micro-units.
Amount = Annotated[int, BeforeValidator(micro), AfterValidator(_positive)]
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Time = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
Text = Annotated[str, Field(strict=True, max_length=255)]


class BalanceData(Model):
    login: Id
    amount: Amount
    comment: Text = "Finance"
    order: Id | None = None
    open_time: Time | None = None
    close_time: Time | None = None


class CreditData(BalanceData):
    comment: Text  # required for credit operations


class DeleteData(Model):
    order: Id


# The data of each finance command (and of its …Sync form).
FINANCE_MODELS: dict[str, type[Model]] = {
    "BalanceIn": BalanceData, "BalanceOut": BalanceData, "CreditIn": CreditData, "CreditOut": CreditData,
    "DeleteBalance": DeleteData, "DeleteCredit": DeleteData,
}


class LoginData(Model):
    login: Id
    password: Annotated[str, Field(strict=True, max_length=1024)]


def _flag(value: Any) -> bool:
    """true/false, or 1/0 as the PHP SDK's example sends it."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise ValueError("must be true, false, 1 or 0")


class AddUserData(Model):
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


class LoginRef(Model):
    login: Id


class OrderRef(Model):
    order: Id


class GetTradesData(Model):
    login: Id
    from_: Time | None = Field(default=None, alias="from")
    to: Time | None = None


class GetUsersData(Model):
    group: Annotated[str, Field(strict=True, min_length=1, max_length=64)] | None = None
    from_login: Annotated[int, Field(strict=True, ge=0, le=MAX_ID)] = 0
    limit: Annotated[int, Field(strict=True, ge=1)] = 1000


class SubscribeData(Model):
    chanels: list[Annotated[str, Field(strict=True)]] | None = None  # the platform's spelling
    channels: list[Annotated[str, Field(strict=True)]] | None = None
    from_seq: Annotated[int, Field(strict=True, ge=0, le=MAX_ID)] | None = None

    def names(self) -> list[str]:
        return (self.chanels or []) + (self.channels or [])
