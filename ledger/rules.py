"""The rules of each finance operation, as pure functions.

(account totals, current order version, request) -> the order's next version, or a LedgerError.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .errors import LedgerError
from .money import MAX_MICRO, to_text

# Operation codes (platform SDK numbering).
OP_BALANCE_IN, OP_CREDIT_IN, OP_BALANCE_OUT, OP_CREDIT_OUT = 6, 7, 8, 9
BALANCE_CMDS = (OP_BALANCE_IN, OP_BALANCE_OUT)
CREDIT_CMDS = (OP_CREDIT_IN, OP_CREDIT_OUT)
# Trade states of a finance record.
TS_CLOSED_NORMAL, TS_DELETED = 3, 6
# trade:event types.
EV_RECORD_ADD, EV_RECORD_UPDATE, EV_RECORD_DELETE = 0, 1, 2
# Acceptance states of a plain (non-Sync) finance command, by event type.
ACCEPT_STATE = {EV_RECORD_ADD: 10, EV_RECORD_UPDATE: 11, EV_RECORD_DELETE: 12}

# Request operation name -> (cmd, sign). Delete operations carry the cmds they may delete.
OPERATIONS = {
    "BalanceIn": (OP_BALANCE_IN, 1),
    "CreditIn": (OP_CREDIT_IN, 1),
    "BalanceOut": (OP_BALANCE_OUT, -1),
    "CreditOut": (OP_CREDIT_OUT, -1),
}
DELETES = {"DeleteBalance": BALANCE_CMDS, "DeleteCredit": CREDIT_CMDS}
# Largest balance or credit (micro-units), below SQLite's signed 64-bit INTEGER: a total beyond it
# could not be stored, and that failure would sink the whole batch instead of one command.
MAX_TOTAL = 9 * 10**18




def no_money(what: str, login: int) -> LedgerError:
    return LedgerError(409, "NO_MONEY", f"not enough {what} on account {login}")


@dataclass(slots=True)
class Version:
    """One version of a finance order, as stored in one ``finance`` row."""

    order: int
    version: int
    login: int
    cmd: int
    state: int
    amount: int  # the order's signed amount (micro-units)
    delta: int  # what this version changed on the account
    balance: int  # account balance after this version
    credit: int  # account credit after this version
    comment: str
    open_time: int
    close_time: int

    @property
    def effect(self) -> int:
        """What the order contributes to the account now: nothing once deleted."""
        return 0 if self.state == TS_DELETED else self.amount

    @property
    def event_type(self) -> int:
        if self.state == TS_DELETED:
            return EV_RECORD_DELETE
        return EV_RECORD_ADD if self.version == 1 else EV_RECORD_UPDATE


@dataclass(slots=True)
class Event:
    """A committed ``trade:event``: its gap-free ``seq``, type, order and data (the record JSON with the
    seq inside, as sent; the ledger stores the record without it)."""

    seq: int
    type: int
    order: int
    data: bytes


@dataclass(slots=True)
class FinanceRequest:
    """A finance operation on one account. ``amount`` is positive micro-units (None for deletes)."""

    op: str  # a key of OPERATIONS or DELETES
    login: int | None = None
    amount: int | None = None
    comment: str = "Finance"
    order: int | None = None  # the order to update or delete
    open_time: int | None = None
    close_time: int | None = None
    allow_zero: bool = False  # a wallet credit of 0 (a lost round) is a real record

    def payload(self) -> str:
        """Canonical text of what the request asks, for idempotency comparison."""
        return orjson.dumps(
            [self.op, self.login, self.amount, self.comment, self.order, self.open_time, self.close_time]
        ).decode()


def _with_totals(login: int, cmd: int, totals: tuple[int, int], delta: int) -> tuple[int, int]:
    """The account's (balance, credit) after ``delta`` on a ``cmd`` order; NO_MONEY if it goes below 0."""
    balance, credit = totals
    if cmd in BALANCE_CMDS:
        balance += delta
        if delta < 0 and balance < 0:
            raise no_money("balance", login)
    else:
        credit += delta
        if delta < 0 and credit < 0:
            raise no_money("credit", login)
    if delta > 0 and max(balance, credit) > MAX_TOTAL:
        raise LedgerError(400, "INVALID_DATA", f"account {login} would exceed the largest total the ledger keeps")
    return balance, credit


def apply(
    req: FinanceRequest, totals: tuple[int, int], current: Version | None, new_order: int, now: int
) -> Version:
    """The next version of an order for ``req``, given the account's (balance, credit) and the
    order's current version (None when ``req.order`` is absent or unknown)."""
    if req.op in DELETES:
        return _delete(req, totals, current, now)
    cmd, sign = OPERATIONS[req.op]
    if req.login is None:
        raise LedgerError(400, "INVALID_DATA", "login is required")
    amount = req.amount
    if amount is None or amount < 0 or (amount == 0 and not req.allow_zero):
        raise LedgerError(400, "INVALID_DATA", "amount must be greater than 0")
    if amount > MAX_MICRO:
        raise LedgerError(400, "INVALID_DATA", "amount is beyond the largest accepted")
    signed = sign * amount
    if current is None:
        balance, credit = _with_totals(req.login, cmd, totals, signed)
        open_time = req.open_time if req.open_time is not None else now
        close_time = req.close_time if req.close_time is not None else now
        return Version(new_order, 1, req.login, cmd, TS_CLOSED_NORMAL, signed, signed,
                       balance, credit, req.comment, open_time, close_time)
    if current.state == TS_DELETED:
        raise LedgerError(409, "ORDER_DELETED", f"order {current.order} is deleted")
    if current.login != req.login or current.cmd != cmd:
        raise LedgerError(
            400, "ORDER_MISMATCH",
            f"order {current.order} is cmd {current.cmd} of login {current.login}, not cmd {cmd} of login {req.login}",
        )
    delta = signed - current.amount
    balance, credit = _with_totals(req.login, cmd, totals, delta)
    return Version(
        current.order, current.version + 1, current.login, cmd, TS_CLOSED_NORMAL, signed, delta,
        balance, credit, req.comment,
        req.open_time if req.open_time is not None else current.open_time,
        req.close_time if req.close_time is not None else now,
    )


def _delete(req: FinanceRequest, totals: tuple[int, int], current: Version | None, now: int) -> Version:
    if current is None or current.cmd not in DELETES[req.op]:
        kind = "balance" if req.op == "DeleteBalance" else "credit"
        raise LedgerError(404, "ORDER_NOT_FOUND", f"no {kind} order {req.order}")
    if current.state == TS_DELETED:
        raise LedgerError(409, "ORDER_DELETED", f"order {current.order} is already deleted")
    delta = -current.amount
    balance, credit = _with_totals(current.login, current.cmd, totals, delta)
    return Version(current.order, current.version + 1, current.login, current.cmd, TS_DELETED,
                   current.amount, delta, balance, credit, current.comment, current.open_time, now)


def with_seq(record: bytes, seq: int) -> bytes:
    """A trade record as a ``trade:event`` carries it: with the event's ``seq`` inside (the SDKs pass only
    ``data`` on, so that is where their users find the seq to resume from)."""
    return b'%s,"seq":%d}' % (record[:-1], seq)


def provider_of(source: str) -> str | None:
    """The game provider whose call wrote a finance row of this ``source`` ("wallet:NAME"; None for any other
    row, and for a wallet row written before providers, whose source is "wallet")."""
    return source[7:] if source.startswith("wallet:") else None


def record_json(v: Version, provider: str | None = None) -> bytes:
    """The trade record of a version: ``trade:event`` data and the ``…Sync`` response, as JSON; a wallet
    move's names its provider last."""
    record = {
        "order": v.order,
        "login": v.login,
        "cmd": v.cmd,
        "state": v.state,
        "profit": orjson.Fragment(to_text(v.amount)),
        "comment": v.comment,
        "open_time": v.open_time,
        "close_time": v.close_time,
        "version": v.version,
        "balance": orjson.Fragment(to_text(v.balance)),
        "credit": orjson.Fragment(to_text(v.credit)),
    }
    if provider is not None:
        record["provider"] = provider
    return orjson.dumps(record)
