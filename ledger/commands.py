"""What a batch takes and gives: the commands the store applies (finance, accounts, a cluster's catch-up, the
wallet's calls and game sessions), their outcomes, and what a command handler may ask of the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import orjson

from .errors import LedgerError
from .rules import Event, FinanceRequest, Version

__all__ = ["AddAccount", "CatchUp", "Event", "Finance", "Host", "OpenSession", "Outcome", "PruneSessions", "Receipt",
           "ReceiptRow", "WalletCall", "WalletResult", "receipt_outcome"]


@dataclass(slots=True)
class Receipt:
    """What a finance command did: enough to answer both the plain and the ``…Sync`` form."""

    order: int
    login: int
    cmd: int
    amount: int
    type: int  # event type; its acceptance state is rules.ACCEPT_STATE[type]
    record: bytes  # the trade record JSON (the event's data)


@dataclass(slots=True)
class Outcome:
    """One command's result: an error, or data (command specific) and the events it committed."""

    error: LedgerError | None = None
    data: Any = None
    events: list[Event] = field(default_factory=list)
    replay: bool = False  # answered from an idempotency key, nothing new written


# A finance command's outcome as its handler gives it when it committed its one event: the receipt row
# (seq, order, login, cmd, amount, type, record), a plain tuple that the writer process sends as it is.
# Store.apply_batch makes it an Outcome (:func:`receipt_outcome`) for a caller that wants objects.
ReceiptRow = tuple[int, int, int, int, int, int, bytes]


def receipt_outcome(row: ReceiptRow) -> Outcome:
    """The Outcome of a receipt row: its Receipt and its one event."""
    seq, order, login, cmd, amount, type_, record = row
    return Outcome(data=Receipt(order, login, cmd, amount, type_, record), events=[Event(seq, type_, order, record)])


@dataclass(slots=True)
class Finance:
    """A finance request with its context: time, idempotency scope and a reserved order number."""

    request: FinanceRequest
    now: int
    manager: int | None = None  # idempotency is per (manager, ext_id)
    ext_id: str | None = None
    new_order: int | None = None  # order number to use if a new order is created
    source: str = "manager"


@dataclass(frozen=True, slots=True)
class AddAccount:
    name: str
    currency: str
    now: int
    group: str = "default"
    login: int | None = None  # None: the next free login
    manager: int | None = None  # idempotency, as for finance: per (manager, ext_id)
    ext_id: str | None = None
    leverage: int = 100
    email: str = ""
    enable: bool = True
    password_hash: str | None = None  # hashed by the caller (slow, salted): never compared on a retry

    def payload(self) -> str:
        """Canonical text of what the request asks, for idempotency comparison (the password left out:
        its hash is salted, so a retry could never match it)."""
        return orjson.dumps(["AddUser", self.name, self.currency, self.group, self.login, self.leverage,
                             self.email, self.enable]).decode()


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A node of a cluster (several servers on one PostgreSQL ledger) puts one first in every batch: its outcome
    carries the events other nodes committed since this store last looked, to be published before the batch's
    own (or, as its ``data``, the seq up to which they were too many to hold). A batch of nothing else reads
    them from one snapshot, without the head lock."""


@dataclass(frozen=True, slots=True)
class OpenSession:
    login: int
    sid: str
    now: int
    ttl: int  # idle seconds before the sid expires


@dataclass(frozen=True, slots=True)
class PruneSessions:
    """Forget the game sessions last seen before ``before`` (expired: they can no longer be used)."""

    before: int


@dataclass(slots=True)
class WalletCall:
    """One provider call. ``payload`` is the canonical content compared on a repeated transaction.id."""

    action: str  # check | balance | debit | credit | cancel | promo_payout
    login: int
    now: int
    ttl: int  # idle seconds before a sid expires
    sid: str | None = None
    currency: str | None = None
    txid: str | None = None
    ref_id: str | None = None
    game_id: str | None = None  # the round
    amount: int = 0
    payload: str = ""
    provider: str = "default"  # every id above is the provider's own: scoped by it
    settlement: str = "gamewise"  # the provider's mode: "gamewise" (a credit settles its round) or "mixed"
    game_type: str | None = None
    game_session: str | None = None
    promo_type: str | None = None  # promo_payout: promoTransaction.type


@dataclass(frozen=True, slots=True)
class WalletResult:
    """``balance``/``bonus`` are the account's balance and credit (micro-units), None if it is unknown;
    ``retransmission`` marks the answer to a transaction.id seen before; ``closed_round`` a new debit, credit or
    cancel whose round a credit had already settled (the server warns: a reused game.id?)."""

    status: str
    balance: int | None = None
    bonus: int | None = None
    retransmission: bool = False
    closed_round: bool = False


class Host(Protocol):
    """What a command handler registered with the store (ledger/finance.py, ledger/wallet.py) may ask of it,
    inside a batch: the batch's state, and staging rows into it (undone with the command should it fail)."""

    db: Any
    accounts: dict[int, Any]
    disabled: set[int]
    cluster: bool

    def register(self, command_type: type, handler: Callable[[Any], Outcome]) -> None: ...

    def account(self, login: int | None) -> tuple[str, int, int] | None: ...

    def current_version(self, order: int) -> Version | None: ...

    def reserve(self) -> int: ...

    def remember(self, mapping: dict, key: Any, value: Any) -> None: ...

    def stage(self, v: Version, now: int, source: str, ext_id: str | None) -> Event: ...

    def stage_record(self, v: Version, now: int, source: str, ext_id: str | None) -> tuple[int, int, bytes]: ...

    def append(self, v: Version, now: int, source: str, ext_id: str | None) -> Event: ...

    def apply_finance(self, req: FinanceRequest, now: int, source: str, ext_id: str | None,
                      new_order: int | None = None) -> tuple[Version, Event]: ...

    def stage_key(self, c: Any, payload: str, status: int, error: str | None = None, message: str | None = None,
                  seq: int | None = None, login: int | None = None, receipt: ReceiptRow | None = None) -> None: ...

    def stored_key(self, manager: int, ext_id: str, payload: str) -> Outcome | tuple | None: ...
