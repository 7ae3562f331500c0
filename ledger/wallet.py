"""Game-wallet commands on the store: game sessions (sid), and check, balance, debit, credit, cancel and
promo_payout of several providers, each id scoped by its provider, idempotent by ``transaction.id``, with
tombstones for a credit or cancel before its debit. Rounds (``game.id``) are settled game-wise (a credit
settles every debit its round had) or mixed (a credit or cancel settles the debit its refId names), by the
provider's mode; each round's state is kept in wallet_rounds."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from .commands import Host, OpenSession, Outcome, PruneSessions, WalletCall, WalletResult
from .errors import LedgerError
from .rules import TS_DELETED, FinanceRequest

# Wallet status strings (the provider's).
OK = "OK"
INVALID_SID = "INVALID_SID"
ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
INVALID_PARAMETER = "INVALID_PARAMETER"
BET_DOES_NOT_EXIST = "BET_DOES_NOT_EXIST"
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
BET_ALREADY_EXIST = "BET_ALREADY_EXIST"
BET_ALREADY_SETTLED = "BET_ALREADY_SETTLED"
FINAL_ERROR_ACTION_FAILED = "FINAL_ERROR_ACTION_FAILED"


class _Tx(NamedTuple):
    """A recorded wallet transaction (one wallet_tx row; a tuple: a few are made for every call)."""

    kind: str
    txid: str
    login: int
    ref_id: str | None
    game_id: str | None
    payload: str
    status: str
    order: int | None
    seq: int | None
    state: int | None = None  # its order's state now, if read with it (a debit's, see _debits)


_TX = "SELECT kind, txid, login, ref_id, game_id, payload, status, order_id, seq FROM wallet_tx"


@cache
def _txs_query(kinds: int) -> str:
    """The statement of :meth:`_Wallet._txs` for that many kinds."""
    return _TX + f" WHERE provider = ? AND kind IN ({','.join('?' * kinds)}) AND txid = ? ORDER BY kind, login"


# A debit with its order's current state (what _live asks), in the same statement.
_DEBIT = ("SELECT kind, txid, login, ref_id, game_id, payload, status, order_id, seq, (SELECT state FROM finance "
          "WHERE order_id = wallet_tx.order_id ORDER BY version DESC LIMIT 1) FROM wallet_tx")
MIXED = "mixed"  # a provider's settlement mode: each credit or cancel settles the debit its refId names


class _Wallet:
    def __init__(self, store: Host):
        self.store, self.db = store, store.db

    def open_session(self, c: OpenSession) -> Outcome:
        if c.login not in self.store.accounts:
            raise LedgerError(404, "ACCOUNT_NOT_FOUND", f"no account {c.login}")
        self.db.execute("INSERT INTO game_sessions VALUES (?,?,?,?)", (c.sid, c.login, c.now, c.now))
        return Outcome(data={"sid": c.sid, "login": c.login, "expires_at": c.now + c.ttl})

    def prune_sessions(self, c: PruneSessions) -> Outcome:
        return Outcome(data=self.db.execute("DELETE FROM game_sessions WHERE last_seen < ?", (c.before,)).rowcount)

    def call(self, c: WalletCall) -> Outcome:
        account = self.store.accounts.get(c.login)
        if account is None:
            return Outcome(data=WalletResult(INVALID_PARAMETER))
        if c.login in self.store.disabled:
            return self._result(c.login, ACCOUNT_LOCKED)
        if c.action == "check" and c.currency is None:  # check may leave the currency out
            return self._result(c.login, OK if self._session_ok(c) else INVALID_SID)
        if c.currency != account[0]:
            return self._result(c.login, INVALID_PARAMETER)
        if c.action in ("check", "balance"):
            return self._result(c.login, OK if self._session_ok(c) else INVALID_SID)
        return getattr(self, c.action)(c)

    def _result(self, login: int, status: str, events: list | None = None, retransmission: bool = False,
                closed: bool = False) -> Outcome:
        _, balance, credit = self.store.accounts[login]
        return Outcome(data=WalletResult(status, balance, credit, retransmission, closed), events=events or [])

    def _session_ok(self, c: WalletCall) -> bool:
        """The sid belongs to the user and has not been idle too long; activity renews it."""
        row = self.db.execute("SELECT login, last_seen FROM game_sessions WHERE sid = ?", (c.sid,)).fetchone()
        if row is None or row[0] != c.login or c.now - row[1] > c.ttl:
            return False
        self.db.execute("UPDATE game_sessions SET last_seen = ? WHERE sid = ?", (c.now, c.sid))
        return True

    # ---- the wallet_tx table

    def _txs(self, c: WalletCall, kinds: tuple[str, ...]) -> dict[str, _Tx]:
        """The provider's transactions of these kinds with the call's transaction.id (an id names one
        transaction of its provider, whoever's), in one statement: kind -> its transaction."""
        found: dict[str, _Tx] = {}
        for row in self.db.execute(_txs_query(len(kinds)), (c.provider, *kinds, c.txid)):
            if row[0] not in found:
                found[row[0]] = _Tx(*row)
        return found

    def _tombstoned(self, c: WalletCall, txid: str | None) -> bool:
        """Was ``txid`` named by a credit or cancel of this provider and account before any debit had it?"""
        return txid is not None and self.db.execute(
            "SELECT 1 FROM wallet_tx WHERE provider = ? AND kind = 'tombstone' AND txid = ? AND login = ?",
            (c.provider, txid, c.login)).fetchone() is not None

    def _record(self, kind: str, c: WalletCall, status: str, *, txid: str | None = None, ref_id: str | None = None,
                game_id: str | None = None, order: int | None = None, seq: int | None = None) -> None:
        self.db.execute("INSERT INTO wallet_tx VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (kind, txid or c.txid, c.login, ref_id or c.ref_id, game_id or c.game_id, c.amount,
                         c.payload, status, order, seq, c.now, c.provider, c.game_type, c.game_session))

    def _answer(self, kind: str, c: WalletCall, status: str, closed: bool = False, **recorded: object) -> Outcome:
        """Record a refusal under the transaction.id (a retry gets the same answer) and answer it."""
        self._record(kind, c, status, **recorded)  # type: ignore[arg-type]
        return self._result(c.login, status, closed=closed)

    def _repeat(self, seen: _Tx, c: WalletCall, repeated_ok: str) -> Outcome:
        """A transaction.id seen before: a changed request is INVALID_PARAMETER; a retry of one that
        succeeded answers ``repeated_ok``, of a refused one the same refusal; both as a retransmission."""
        if seen.payload != c.payload:
            return self._result(c.login, INVALID_PARAMETER)
        return self._result(c.login, repeated_ok if seen.status == OK else seen.status, retransmission=True)

    def _tombstone(self, txid: str, c: WalletCall) -> None:
        """``txid`` was named by a credit or cancel before any debit of this account had it: the account can
        never be debited with it (as its id or its refId) by this provider."""
        if not self._tombstoned(c, txid):
            self._record("tombstone", c, c.action, txid=txid, ref_id=c.txid)

    def _move(self, kind: str, c: WalletCall, request: FinanceRequest, ref_id: str | None = None,
              game_id: str | None = None, closed: bool = False) -> Outcome:
        _, event = self.store.apply_finance(request, c.now, "wallet:" + c.provider, c.txid)
        self._record(kind, c, OK, ref_id=ref_id, game_id=game_id, order=event.order, seq=event.seq)
        round_id = game_id or c.game_id
        if round_id is not None and kind != "promo":
            self._round_moved(c, round_id, kind)
        return self._result(c.login, OK, [event], closed=closed)

    # ---- rounds

    def _debits(self, c: WalletCall, ref: str, game_id: str | None) -> list[_Tx]:
        """The account's accepted debits a credit's refId names: by the debit's id or its own refId, in the
        round (several players may share a round's refId, as at a live table)."""
        rows = self.db.execute(
            _DEBIT + " WHERE provider = ? AND kind = 'debit' AND status = 'OK' AND txid = ? AND login = ? UNION "
            + _DEBIT + " WHERE provider = ? AND kind = 'debit' AND status = 'OK' AND ref_id = ? AND login = ? "
            "ORDER BY 9", (c.provider, ref, c.login, c.provider, ref, c.login)).fetchall()
        return [_Tx(*row) for row in rows if game_id is None or row[4] == game_id]

    def _round_credit(self, c: WalletCall, game_id: str | None, refs: set[str], after_seq: int = 0) -> bool:
        """Has an accepted credit (committed after ``after_seq``) settled the round: ``game_id``, or for a
        round without one, the debits known by ``refs``? (Game-wise: any credit of the round; mixed: a credit
        naming one of ``refs``.)"""
        query = "SELECT 1 FROM wallet_tx WHERE provider = ? AND login = ? AND kind = 'credit' AND status = 'OK' " \
                "AND seq > ?"
        args: tuple = (c.provider, c.login, after_seq)
        if game_id is not None:
            query, args = query + " AND game_id = ?", (*args, game_id)
        else:
            query += " AND game_id IS NULL"
        if game_id is None or c.settlement == MIXED:
            query += f" AND ref_id IN ({','.join('?' * len(refs))})"
            args = (*args, *refs)
        return self.db.execute(query + " LIMIT 1", args).fetchone() is not None

    def _live(self, debit: _Tx) -> bool:
        """Not cancelled and its order not deleted by a manager."""
        state = debit.state if debit.state is not None else self.store.current_version(debit.order).state
        return state != TS_DELETED

    def _settled(self, c: WalletCall, debit: _Tx) -> bool:
        """Cancelled, deleted, or settled by a credit accepted after it (a credit settles the debits its round
        had then, not one taken later): of its round, or (mixed) one that names it."""
        return not self._live(debit) or self._round_credit(c, debit.game_id, _refs(debit), debit.seq)

    def _closed(self, c: WalletCall, game_id: str | None, refs: set[str]) -> bool:
        """Game-wise: has the round been settled by a credit already (a move on it now is flagged)? A mixed
        round settles debit by debit: no move on it is out of place."""
        return c.settlement != MIXED and self._round_credit(c, game_id, refs)

    def _round_moved(self, c: WalletCall, game_id: str, kind: str) -> None:
        """Keep the round's row in wallet_rounds: a debit opens it (again); a game-wise credit settles it; a
        mixed credit or a cancel leaves it open while one of its debits is neither settled nor cancelled."""
        if kind == "debit" or (kind == "credit" and c.settlement != MIXED):
            state = "open" if kind == "debit" else "settled"
        else:
            rows = self.db.execute(_TX + " WHERE provider = ? AND login = ? AND game_id = ? AND kind = 'debit' "
                                   "AND status = 'OK'", (c.provider, c.login, game_id)).fetchall()
            debits = [_Tx(*row) for row in rows]
            if not all(self._settled(c, d) for d in debits):
                state = "open"
            elif any(self._live(d) for d in debits) or self.db.execute(
                    "SELECT 1 FROM wallet_tx WHERE provider = ? AND login = ? AND game_id = ? AND kind = 'credit' "
                    "AND status = 'OK' LIMIT 1", (c.provider, c.login, game_id)).fetchone():
                state = "settled"
            else:
                state = "cancelled"
        row = (c.provider, c.login, game_id, c.now, c.now, state)
        if kind == "debit":  # (a debit most often opens its round)
            self.db.execute("INSERT INTO wallet_rounds VALUES (?,?,?,?,?,?) ON CONFLICT (provider, login, game_id) DO "
                            "UPDATE SET updated = excluded.updated, state = excluded.state", row)
        # else the round has its row (its debit's move opened it): an UPDATE does what the upsert would, for less
        elif self.db.execute("UPDATE wallet_rounds SET updated = ?, state = ? WHERE provider = ? AND login = ? AND "
                             "game_id = ?", (c.now, state, c.provider, c.login, game_id)).rowcount == 0:
            self.db.execute("INSERT INTO wallet_rounds VALUES (?,?,?,?,?,?)", row)

    # ---- the three moves

    def debit(self, c: WalletCall) -> Outcome:
        known = self._txs(c, ("debit", "credit", "promo"))
        seen = known.get("debit")
        if seen is not None:
            return self._repeat(seen, c, BET_ALREADY_EXIST)
        if known:  # a transaction.id names one transaction
            return self._result(c.login, INVALID_PARAMETER)
        # A debit in a round already settled is taken like any other (the provider follows it with a cancel,
        # or its own credit settles it), and flagged.
        closed = self._closed(c, c.game_id, _refs(c))
        if self._tombstoned(c, c.txid) or self._tombstoned(c, c.ref_id):
            return self._answer("debit", c, FINAL_ERROR_ACTION_FAILED, closed)
        if not self._session_ok(c):
            return self._result(c.login, INVALID_SID, closed=closed)
        request = FinanceRequest("BalanceOut", c.login, c.amount, _comment(c))
        try:
            return self._move("debit", c, request, closed=closed)
        except LedgerError as e:
            if e.code != "NO_MONEY":
                raise
        return self._answer("debit", c, INSUFFICIENT_FUNDS, closed)

    def credit(self, c: WalletCall) -> Outcome:
        """Settle the round (win, or a loss with amount 0): every debit of it taken so far. A round already
        settled is closed, except to the credit of a debit taken since (a late debit is settled by its own)."""
        known = self._txs(c, ("credit", "debit", "promo"))
        seen = known.get("credit")
        if seen is not None:
            return self._repeat(seen, c, BET_ALREADY_SETTLED)
        if known:
            return self._result(c.login, INVALID_PARAMETER)
        debits = self._debits(c, c.ref_id, c.game_id)
        round_id = c.game_id if c.game_id is not None or not debits else debits[0].game_id
        refs = {c.ref_id}.union(*map(_refs, debits)) if round_id is None else set()  # (only a round without id)
        closed = self._closed(c, round_id, refs)
        if not debits:  # and a debit that comes later with that id or refId is refused, never left unsettleable
            self._tombstone(c.ref_id, c)
            return self._answer("credit", c, BET_ALREADY_SETTLED if closed else BET_DOES_NOT_EXIST, closed)
        # Game-wise, a round no credit has settled yet has no credit after any of its debits either: each of
        # those debits is settled only if it is no longer live (its refs are among those _closed looked for).
        open_round = c.settlement != MIXED and not closed
        if all(not self._live(d) if open_round and d.game_id == round_id else self._settled(c, d) for d in debits):
            return self._answer("credit", c, BET_ALREADY_SETTLED, closed, game_id=round_id)
        request = FinanceRequest("BalanceIn", c.login, c.amount, _comment(c, round_id), allow_zero=True)
        return self._move("credit", c, request, game_id=round_id, closed=closed)

    def cancel(self, c: WalletCall) -> Outcome:
        """Reverse the debit whose transaction.id the cancel carries, unless its round's credit came after it."""
        known = self._txs(c, ("cancel", "debit"))
        seen = known.get("cancel")
        if seen is not None:
            return self._repeat(seen, c, BET_ALREADY_SETTLED)
        debit = known.get("debit")
        if debit is None or debit.status != OK or debit.login != c.login or \
                (c.game_id is not None and debit.game_id != c.game_id):
            self._tombstone(c.txid, c)
            return self._answer("cancel", c, BET_DOES_NOT_EXIST, ref_id=c.txid)
        closed = self._closed(c, debit.game_id, _refs(debit))
        if self._settled(c, debit):
            return self._answer("cancel", c, BET_ALREADY_SETTLED, closed, ref_id=c.txid, game_id=debit.game_id)
        return self._move("cancel", c, FinanceRequest("DeleteBalance", order=debit.order), ref_id=c.txid,
                          game_id=debit.game_id, closed=closed)


    def promo_payout(self, c: WalletCall) -> Outcome:
        """A promotional payout (a tournament, a free round's win): a credit with no debit and no round."""
        known = self._txs(c, ("promo", "debit", "credit", "cancel"))
        seen = known.get("promo")
        if seen is not None:
            return self._repeat(seen, c, OK)
        if known:
            return self._result(c.login, INVALID_PARAMETER)
        request = FinanceRequest("BalanceIn", c.login, c.amount, _comment(c), allow_zero=True)
        return self._move("promo", c, request)


def _refs(debit: _Tx | WalletCall) -> set[str]:
    """The ids a credit may name a debit by: its transaction.id and its own refId."""
    return {debit.txid} | ({debit.ref_id} if debit.ref_id else set())


def _comment(c: WalletCall, round_id: str | None = None) -> str:
    """The finance record's comment: the move, its transaction and its round, for an operator's trace."""
    text = f"{c.action} {c.txid}"
    if c.action == "promo_payout" and c.promo_type:
        text += f" {c.promo_type}"
    if c.action == "credit":
        text += f" ref {c.ref_id}"
    round_id = round_id if round_id is not None else c.game_id
    if round_id is not None:
        text += f" round {round_id}"
    return text[:255]


def install(store: Host) -> None:
    """Teach ``store`` the wallet commands."""
    wallet = _Wallet(store)
    store.register(OpenSession, wallet.open_session)
    store.register(WalletCall, wallet.call)
    store.register(PruneSessions, wallet.prune_sessions)
