"""The wallet oracle: an independent model of the game-wallet contract (rounds, debits found by refId,
idempotency by transaction.id, tombstones) that gives every acceptable answer of a call and its effect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fuzz import strategies as S
from tests.fuzz.oracle.manager import MAX_TOTAL
from tests.fuzz.snapshot import Account, Snap

ANY = "any"


@dataclass
class Tx:
    """A wallet transaction the model remembers under (kind, transaction.id)."""

    kind: str  # debit | credit | cancel
    txid: str
    payload: tuple
    status: str
    login: int
    ref_id: str | None = None
    game: str | None = None  # the round: a debit's game.id; an accepted credit's round
    amount: int = 0
    order: int | None = None
    at: int = 0  # when it was accepted (the model's clock of accepted moves)
    live: bool = True  # a debit neither cancelled nor deleted


@dataclass
class Ans:
    """One acceptable answer: its ledger effect (None: nothing moves), the model's update (given the new
    order, if any) and whether the reply is a retransmission."""

    effect: tuple | None = None
    update: Callable[[int | None], None] | None = None
    retrans: bool = False
    why: str = ""  # the rule that gave it (a hypothesis event), or why the contract leaves it open (ANY)


REFUSED = Ans()


class WalletModel:
    """The wallet contract (section 3): rounds are (login, game.id), settled by one accepted credit (and a debit
    taken after that by its own credit); debits found by refId (a debit's id or its own refId); idempotency by
    transaction.id; tombstones.

    When the contract leaves an answer open the model answers ANY and marks the ids and games involved as
    vague: any later call that touches them is ANY too (its answer is only checked for shape and effect)."""

    def __init__(self) -> None:
        self.txs: dict[tuple[str, str], Tx] = {}
        self.tombstones: set[tuple[int, str]] = set()  # (login, id): a tombstone is per account
        self.clock = 0
        self.vague_ids: set[str] = set()
        self.vague_games: set[str] = set()

    # ---- state

    def _debits(self) -> list[Tx]:
        return [t for (kind, _), t in self.txs.items() if kind == "debit"]

    def _credits(self, login: int) -> list[Tx]:
        """The accepted credits of ``login`` (each settled its round)."""
        return [t for (kind, _), t in self.txs.items() if kind == "credit" and t.status == "OK" and t.login == login]

    def _settled(self, login: int, game: str | None, refs: set[str], after: int = 0) -> bool:
        """Has an accepted credit, accepted after ``after``, settled the round: ``game``, or for a game-less
        round, the game-less credit that names one of ``refs``?"""
        return any(c.at > after and c.game == game and (game is not None or c.ref_id in refs)
                   for c in self._credits(login))

    def _vague(self, ids: Any, games: Any) -> bool:
        return bool({i for i in ids if i is not None} & self.vague_ids) or \
            bool({g for g in games if g is not None} & self.vague_games)

    def _blur(self, ids: Any, games: Any) -> Callable:
        def update(order: Any) -> None:
            self.vague_ids.update(i for i in ids if i is not None)
            self.vague_games.update(g for g in games if g is not None)
        return update

    def _record(self, r: S.WalletReq, payload: tuple, status: str, *, game: str | None = None,
                tombstone: str | None = None, then: Callable | None = None) -> Callable:
        def update(order: Any) -> None:
            at = 0
            if status == "OK":
                self.clock += 1
                at = self.clock
            self.txs[(r.action, r.txid)] = Tx(r.action, r.txid, payload, status, r.login, r.ref_id, game,
                                              r.amount or 0, order, at)
            if tombstone is not None:
                self.tombstones.add((r.login, tombstone))
            if then is not None:
                then()
        return update

    # ---- answers

    def predict(self, r: S.WalletReq, snap: Snap, sid_ok: bool) -> dict[str, Any]:
        """status -> Ans for every acceptable answer; {ANY: Ans(update=...)} when the contract leaves it open."""
        if r.action == "debit" and r.amount == 0:  # a debit takes an amount above 0, before anything else
            return {"INVALID_PARAMETER": REFUSED}
        acc = snap.accounts.get(r.login)
        if acc is None:  # an unknown userId; check, balance and debit also fail the sid (order unspecified)
            if r.action in ("credit", "cancel"):
                return {"INVALID_PARAMETER": REFUSED}
            return {"INVALID_PARAMETER": REFUSED, "INVALID_SID": REFUSED}
        if r.action in ("check", "balance"):  # check compares the currency when given; balance requires it
            if (r.currency is None and r.action == "balance") or r.currency not in (None, acc.currency):
                return {"INVALID_PARAMETER": REFUSED, **({} if sid_ok else {"INVALID_SID": REFUSED})}
            return {"OK" if sid_ok else "INVALID_SID": REFUSED}
        if r.currency != acc.currency:
            if r.action == "debit" and not sid_ok:
                return {"INVALID_PARAMETER": REFUSED, "INVALID_SID": REFUSED}
            return {"INVALID_PARAMETER": REFUSED}
        payload = (r.action, r.login, r.currency, r.game_id, r.game_type, r.txid, r.ref_id, r.amount)
        if self._vague([r.txid, r.ref_id], [r.game_id]):
            return {ANY: Ans(update=self._blur([r.txid, r.ref_id], [r.game_id]), why="vague-ids")}
        seen = self.txs.get((r.action, r.txid))
        if seen is not None:  # a transaction.id seen before: the same content is a retransmission
            if seen.payload != payload:
                return {"INVALID_PARAMETER": REFUSED}
            again = "BET_ALREADY_EXIST" if r.action == "debit" else "BET_ALREADY_SETTLED"
            return {again if seen.status == "OK" else seen.status: Ans(retrans=True, why="retransmission")}
        return getattr(self, r.action)(r, acc, payload, sid_ok)

    def debit(self, r: S.WalletReq, acc: Account, payload: tuple, sid_ok: bool) -> dict[str, Ans]:
        if ("credit", r.txid) in self.txs:  # a transaction.id names one transaction
            return {"INVALID_PARAMETER": REFUSED}
        if (r.login, r.txid) in self.tombstones or (r.login, r.ref_id) in self.tombstones:
            why = "tombstone" if (r.login, r.txid) in self.tombstones else "tombstoned-ref"
            return {"FINAL_ERROR_ACTION_FAILED": Ans(update=self._record(r, payload, "FINAL_ERROR_ACTION_FAILED",
                                                                         game=r.game_id), why=why)}
        if not sid_ok:
            return {"INVALID_SID": REFUSED}
        if r.amount > acc.balance:
            return {"INSUFFICIENT_FUNDS": Ans(update=self._record(r, payload, "INSUFFICIENT_FUNDS", game=r.game_id))}
        # also in a round already settled: the provider follows a late debit with a cancel
        return {"OK": Ans(("debit", r.amount), self._record(r, payload, "OK", game=r.game_id))}

    def credit(self, r: S.WalletReq, acc: Account, payload: tuple, sid_ok: bool) -> dict[str, Ans]:
        if ("debit", r.txid) in self.txs:
            return {"INVALID_PARAMETER": REFUSED}
        # a round is the account's: another player's debit with that id or refId is not this one's
        named = [d for d in self._debits() if r.ref_id in (d.txid, d.ref_id) and d.login == r.login]
        if self._vague([i for d in named for i in (d.txid, d.ref_id)], [d.game for d in named]):
            return {ANY: Ans(update=self._blur([r.txid, r.ref_id] + [d.txid for d in named], [r.game_id]),
                             why="vague-debits")}
        debits = [d for d in named if d.status == "OK" and (r.game_id is None or d.game == r.game_id)]
        if not debits:  # its refId is tombstoned: a debit with it, coming later, is refused (never unsettleable)
            status = "BET_ALREADY_SETTLED" if r.game_id is not None and self._settled(r.login, r.game_id, set()) \
                else "BET_DOES_NOT_EXIST"
            return {status: Ans(update=self._record(r, payload, status, game=r.game_id, tombstone=r.ref_id),
                                why="round-closed-no-debit" if status == "BET_ALREADY_SETTLED" else "no-debit")}
        games = {d.game for d in debits}
        if r.game_id is None and len(games) > 1:  # debits of several rounds: the contract does not say which
            return {ANY: Ans(update=self._blur([r.txid, r.ref_id] + [i for d in debits for i in (d.txid, d.ref_id)],
                                               games), why="several-rounds")}
        game = r.game_id if r.game_id is not None else games.pop()
        refs = {r.ref_id} | {d.txid for d in debits} | {d.ref_id for d in debits if d.ref_id is not None}
        closed = self._settled(r.login, game, refs)
        # a debit is settled when cancelled, or by a credit of its round accepted after it (a late debit, taken
        # after its round was settled, is settled by its own credit)
        if not any(d.live and not self._settled(r.login, d.game, {d.txid, d.ref_id} - {None}, after=d.at)
                   for d in debits):
            return {"BET_ALREADY_SETTLED": Ans(update=self._record(r, payload, "BET_ALREADY_SETTLED", game=game),
                                               why="round-closed" if closed else "no-live-debit")}
        if r.amount > 0 and acc.balance + r.amount > MAX_TOTAL:  # beyond what the ledger keeps: nothing moves
            blur = Ans(update=self._blur([r.txid, r.ref_id], [game]))
            return {"UNKNOWN_ERROR": blur, "INVALID_PARAMETER": blur}
        why = "late-win" if closed else "split-win" if len(debits) > 1 else \
            "shared-ref-win" if r.ref_id != debits[0].txid else "win"
        return {"OK": Ans(("credit", r.amount), self._record(r, payload, "OK", game=game),
                          why=why + ("-no-game" if r.game_id is None else ""))}

    def cancel(self, r: S.WalletReq, acc: Account, payload: tuple, sid_ok: bool) -> dict[str, Ans]:
        debit = self.txs.get(("debit", r.txid))
        if debit is not None and self._vague([debit.ref_id], [debit.game]):
            return {ANY: Ans(update=self._blur([r.txid, debit.ref_id], [r.game_id, debit.game]), why="vague-debit")}
        missing = Ans(update=self._record(r, payload, "BET_DOES_NOT_EXIST", game=r.game_id, tombstone=r.txid))
        if debit is None or debit.status != "OK" or debit.login != r.login:  # not this account's debit
            return {"BET_DOES_NOT_EXIST": missing}
        if r.game_id is not None and r.game_id != debit.game:  # not that round's debit
            return {"BET_DOES_NOT_EXIST": missing}
        return self._reverse(r, payload, debit)

    def _reverse(self, r: S.WalletReq, payload: tuple, debit: Tx) -> dict[str, Ans]:
        """A cancel of ``debit``, an accepted debit of the cancel's account and round."""
        refs = {debit.txid} | ({debit.ref_id} if debit.ref_id is not None else set())
        if not debit.live or self._settled(r.login, debit.game, refs, after=debit.at):
            why = "cancel-of-a-cancelled" if not debit.live else "cancel-after-credit"
            return {"BET_ALREADY_SETTLED": Ans(update=self._record(r, payload, "BET_ALREADY_SETTLED",
                                                                   game=debit.game), why=why)}

        def dead() -> None:
            debit.live = False
        late = self._settled(r.login, debit.game, refs)  # settled before the debit came
        return {"OK": Ans(("cancel", debit), self._record(r, payload, "OK", game=debit.game, then=dead),
                          why="late-cancel" if late else "cancel")}
