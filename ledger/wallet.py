"""Game-wallet commands on the store: game sessions (sid), and check, balance, debit, credit, cancel with
idempotency by ``transaction.id`` and tombstones for a credit or cancel that comes before its debit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rules import TS_DELETED, FinanceRequest, LedgerError
from .store import Outcome

if TYPE_CHECKING:
    from .store import Store

# Wallet status strings (the provider's).
OK = "OK"
INVALID_SID = "INVALID_SID"
INVALID_PARAMETER = "INVALID_PARAMETER"
BET_DOES_NOT_EXIST = "BET_DOES_NOT_EXIST"
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
BET_ALREADY_EXIST = "BET_ALREADY_EXIST"
BET_ALREADY_SETTLED = "BET_ALREADY_SETTLED"
FINAL_ERROR_ACTION_FAILED = "FINAL_ERROR_ACTION_FAILED"


@dataclass(frozen=True, slots=True)
class OpenSession:
    login: int
    sid: str
    now: int
    ttl: int  # idle seconds before the sid expires


@dataclass(slots=True)
class WalletCall:
    """One provider call. ``payload`` is the canonical content compared on a repeated transaction.id."""

    action: str  # check | balance | debit | credit | cancel
    login: int
    now: int
    ttl: int  # idle seconds before a sid expires
    sid: str | None = None
    currency: str | None = None
    txid: str | None = None
    ref_id: str | None = None
    amount: int = 0
    payload: str = ""


@dataclass(frozen=True, slots=True)
class WalletResult:
    """``balance``/``bonus`` are the account's balance and credit (micro-units), None if it is unknown."""

    status: str
    balance: int | None = None
    bonus: int | None = None


class _Wallet:
    def __init__(self, store: Store):
        self.store, self.db = store, store.db

    def open_session(self, c: OpenSession) -> Outcome:
        if c.login not in self.store.accounts:
            raise LedgerError(404, "ACCOUNT_NOT_FOUND", f"no account {c.login}")
        self.db.execute("INSERT INTO game_sessions VALUES (?,?,?,?)", (c.sid, c.login, c.now, c.now))
        return Outcome(data={"sid": c.sid, "login": c.login, "expires_at": c.now + c.ttl})

    def call(self, c: WalletCall) -> Outcome:
        account = self.store.accounts.get(c.login)
        if account is None:
            return Outcome(data=WalletResult(INVALID_PARAMETER))
        if c.action in ("check", "balance"):
            status = OK if self._session_ok(c) else INVALID_SID
            return self._result(c.login, status)
        if c.currency != account[0]:
            return self._result(c.login, INVALID_PARAMETER)
        return getattr(self, c.action)(c)

    def _result(self, login: int, status: str, events: list | None = None) -> Outcome:
        _, balance, credit = self.store.accounts[login]
        return Outcome(data=WalletResult(status, balance, credit), events=events or [])

    def _session_ok(self, c: WalletCall) -> bool:
        """The sid belongs to the user and has not been idle too long; activity renews it."""
        row = self.db.execute("SELECT login, last_seen FROM game_sessions WHERE sid = ?", (c.sid,)).fetchone()
        if row is None or row[0] != c.login or c.now - row[1] > c.ttl:
            return False
        self.db.execute("UPDATE game_sessions SET last_seen = ? WHERE sid = ?", (c.now, c.sid))
        return True

    def _tx(self, kind: str, txid: str) -> tuple[str, str, int] | None:
        """(payload, status, login) of a recorded transaction."""
        return self.db.execute("SELECT payload, status, login FROM wallet_tx WHERE kind = ? AND txid = ?",
                               (kind, txid)).fetchone()

    def _record(self, kind: str, c: WalletCall, status: str, *, txid: str | None = None,
                ref_id: str | None = None, order: int | None = None, seq: int | None = None) -> None:
        self.db.execute("INSERT INTO wallet_tx VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (kind, txid or c.txid, c.login, ref_id or c.ref_id, c.amount, c.payload, status, order,
                         seq, c.now))

    def _settled(self, debit_id: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM wallet_tx WHERE ref_id = ? AND kind IN ('credit', 'cancel') AND status = 'OK' LIMIT 1",
            (debit_id,)).fetchone() is not None

    def _repeat(self, kind: str, c: WalletCall, repeated_ok: str) -> Outcome | None:
        """The answer to a transaction.id seen before: a changed request is INVALID_PARAMETER, a repeat
        of one that succeeded answers ``repeated_ok``, a repeat of a refused one is refused again."""
        seen = self._tx(kind, c.txid)
        if seen is None:
            return None
        payload, status, _ = seen
        if payload != c.payload:
            return self._result(c.login, INVALID_PARAMETER)
        return self._result(c.login, repeated_ok if status == OK else status)

    def _move(self, kind: str, c: WalletCall, request: FinanceRequest, ref_id: str | None = None) -> Outcome:
        _, event = self.store.apply_finance(request, c.now, "wallet", c.txid)
        self._record(kind, c, OK, ref_id=ref_id, order=event.order, seq=event.seq)
        return self._result(c.login, OK, [event])

    def _id_taken(self, kind: str, c: WalletCall) -> bool:
        """A transaction.id names one transaction: a debit may not reuse a credit's id, nor a credit a
        debit's (a cancel shares its debit's id by design)."""
        return self._tx("credit" if kind == "debit" else "debit", c.txid) is not None

    def debit(self, c: WalletCall) -> Outcome:
        repeat = self._repeat("debit", c, BET_ALREADY_EXIST)
        if repeat is not None:
            return repeat
        if self._id_taken("debit", c):
            return self._result(c.login, INVALID_PARAMETER)
        if self._tx("tombstone", c.txid) is not None:
            self._record("debit", c, FINAL_ERROR_ACTION_FAILED)
            return self._result(c.login, FINAL_ERROR_ACTION_FAILED)
        if not self._session_ok(c):
            return self._result(c.login, INVALID_SID)
        request = FinanceRequest("BalanceOut", c.login, c.amount, f"debit {c.txid}"[:255], allow_zero=True)
        try:
            return self._move("debit", c, request)
        except LedgerError as e:
            if e.code != "NO_MONEY":
                raise
        self._record("debit", c, INSUFFICIENT_FUNDS)
        return self._result(c.login, INSUFFICIENT_FUNDS)

    def credit(self, c: WalletCall) -> Outcome:
        return self._settle("credit", c, c.ref_id)

    def cancel(self, c: WalletCall) -> Outcome:
        return self._settle("cancel", c, c.txid)

    def _settle(self, kind: str, c: WalletCall, debit_id: str) -> Outcome:
        """Credit (win or loss) or cancel the round opened by debit ``debit_id``."""
        repeat = self._repeat(kind, c, BET_ALREADY_SETTLED)
        if repeat is not None:
            return repeat
        if kind == "credit" and self._id_taken("credit", c):
            return self._result(c.login, INVALID_PARAMETER)
        debit = self._tx("debit", debit_id)
        if debit is None or debit[1] != OK:
            if self._tx("tombstone", debit_id) is None:
                self._record("tombstone", c, kind, txid=debit_id, ref_id=c.txid)
            self._record(kind, c, BET_DOES_NOT_EXIST, ref_id=debit_id)
            return self._result(c.login, BET_DOES_NOT_EXIST)
        if debit[2] != c.login:
            return self._result(c.login, INVALID_PARAMETER)
        order = self.db.execute("SELECT order_id FROM wallet_tx WHERE kind = 'debit' AND txid = ?",
                                (debit_id,)).fetchone()[0]
        # Settled by an earlier credit or cancel, or its order deleted by a manager: nothing more to do.
        if self._settled(debit_id) or self.store.current_version(order).state == TS_DELETED:
            self._record(kind, c, BET_ALREADY_SETTLED, ref_id=debit_id)
            return self._result(c.login, BET_ALREADY_SETTLED)
        if kind == "credit":
            request = FinanceRequest("BalanceIn", c.login, c.amount, f"credit {c.txid}"[:255], allow_zero=True)
        else:
            request = FinanceRequest("DeleteBalance", order=order)
        return self._move(kind, c, request, ref_id=debit_id)


def install(store: Store) -> None:
    """Teach ``store`` the wallet commands."""
    wallet = _Wallet(store)
    store.register(OpenSession, wallet.open_session)
    store.register(WalletCall, wallet.call)
