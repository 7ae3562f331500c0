"""Valid game-wallet calls: the shapes of a wallet input, the provider's tokens, amounts, the small
pools of ids that make rounds link up, valid bodies and whole rounds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies.constants import MAX_UNITS, U, WALLET_TOKEN
from tests.fuzz.strategies.json_text import MISSING, Lit, text
from tests.fuzz.strategies.values import _amount_form_list

WALLET_ACTIONS = ["check", "balance", "debit", "credit", "cancel"]
WALLET_STATUSES = {"OK", "TEMPORARY_ERROR", "INVALID_TOKEN_ID", "INVALID_SID", "ACCOUNT_LOCKED", "UNKNOWN_ERROR",
                   "INVALID_PARAMETER", "BET_DOES_NOT_EXIST", "INSUFFICIENT_FUNDS", "BET_ALREADY_EXIST",
                   "BET_ALREADY_SETTLED", "FINAL_ERROR_ACTION_FAILED"}
# Symbolic sids, resolved by the test to the sids it opened for the example.
SIDS = ["sid:1000", "sid:1001", "sid:1002", "sid:expired", "sid:unknown"]
WALLET_USERS = st.sampled_from(["1000"] * 7 + ["1001", "1002", "1003", "999999999999999999"])
OWN_CURRENCY = {"1000": "EUR", "1001": "USD", "1002": "EUR"}
MOVES = ("debit", "credit", "cancel")
# Small pools of transaction ids, refIds and games, so that rounds link up within a few calls (debits, credits,
# cancels, retries, tombstones). The seed-* ids and the games g1..g4 are played by tests/fuzz/harness/wallet.py
# (SEED_WALLET) before the generated calls: g1 an open split round (seed-bet-1 and seed-bet-5 share refId r1),
# g2 settled, g3 a credit before its debit (seed-bet-3 tombstoned), g4 its only debit cancelled.
DEBIT_IDS = ["seed-bet-1", "seed-bet-2", "seed-bet-3", "seed-bet-4", "seed-bet-5", "seed-bet-6", "t1", "t2", "t3",
             "t4"]  # debits (and cancels)
REF_IDS = ["r1", "r7", "r8", "r9"]  # a debit's own refId, shared by the debits of a round
SETTLE_IDS = ["seed-win-2", "seed-win-3", "w1", "w2", "w3"]  # credits
ROUND_IDS = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]  # the debits of a round (wallet_round)
ROUND_SETTLE_IDS = ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9"]  # its credits
LATE_IDS = ["t10", "t11"]  # a debit after its round was settled
WALLET_DECIMAL = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?")  # the decimal strings the contract takes as amounts


@dataclass(frozen=True)
class WalletReq:
    """A valid wallet body, as the wallet model sees it."""

    action: str
    sid: str  # symbolic (SIDS) or literal; "" when empty, null or missing
    login: int
    currency: str | None
    game_id: str | None
    game_type: str | None
    txid: str | None
    ref_id: str | None
    amount: int | None  # micro-units


@dataclass(frozen=True)
class Auth:
    query: tuple  # authToken values
    header: bytes | None  # Authorization header value
    good: bool
    label: str


@dataclass
class WalletCase:
    method: str
    path: str
    body: bytes | dict  # a dict holds symbolic sids, encoded by the test once they are known
    auth: Auth
    req: WalletReq | None  # None: the body is malformed
    expect: str | int | None  # a status string for malformed bodies, an HTTP code for bad routes, None: model
    uuid: Any = None  # what the reply's uuid must be
    label: str = ""
    ascii_only: bool = True

    def __repr__(self) -> str:
        body = self.body
        if isinstance(body, bytes) and len(body) > 400:
            body = body[:300] + b"...(%d bytes)" % len(body)
        return (f"WalletCase({self.label!r}, {self.method} {self.path}, auth={self.auth.label}, body={body!r}, "
                f"expect={self.expect!r})")


# The call is authorised when any token it carries (each ?authToken= value, an Authorization: Bearer) is the
# shared one: a gateway may add a Bearer of its own beside the provider's authToken.
T = WALLET_TOKEN
GOOD_AUTH = [Auth((T,), None, True, "query"), Auth((), b"Bearer " + T.encode(), True, "header"),
             Auth((T,), b"Bearer " + T.encode(), True, "both"), Auth((T, T), None, True, "query-twice"),
             Auth((), b"bearer " + T.encode(), True, "header-lowercase"),
             Auth((T,), b"Bearer gateway-token", True, "good-query-gateway-header"),
             Auth(("wrong",), b"Bearer " + T.encode(), True, "bad-query-good-header"),
             Auth(("wrong", T), None, True, "bad-then-good-query"),
             Auth((T,), b"Basic " + T.encode(), True, "good-query-basic-header"),
             Auth((T,), b"Bearer", True, "good-query-bearer-empty")]
BAD_AUTH = [Auth((), None, False, "none"), Auth(("wrong",), None, False, "wrong-query"),
            Auth((), b"Bearer wrong", False, "wrong-header"),
            Auth(("wrong", "worse"), b"Bearer gateway-token", False, "all-wrong"),
            Auth((), b"Basic " + T.encode(), False, "basic"), Auth((T + "x",), None, False, "longer"),
            Auth((T[:-1],), None, False, "prefix"), Auth((), b"Bearer", False, "bearer-empty"),
            Auth((T.upper(),), None, False, "case"), Auth(("é" + T,), None, False, "non-ascii"),
            Auth((), b"Bearer \xff" + T.encode(), False, "non-ascii-header"), Auth((), T.encode(), False, "no-scheme"),
            Auth((T + " ",), b"Bearer " + T.upper().encode(), False, "near-misses")]


def _decimal_strings(micro: int) -> list[tuple[Any, bool]]:
    """Decimal-string spellings of a positive amount (a JSON string, as providers also send): (raw, ambiguous).
    Leading zeros are plain decimal strings; more than 6 decimals that are all zeros are ambiguous."""
    units, frac = divmod(micro, U)
    six = f"{units}.{frac:06d}"
    short = six.rstrip("0").rstrip(".")
    return [(six, False), (short, False), ("000" + short, False), (six + "000", True)]


ZERO_AMOUNTS = [(0, False), (Lit("0.0"), False), (Lit("-0"), False), ("0", False), ("-0.0", False),
                ("000", False), (Lit("0e5"), False)]


def amount_spellings(micro: int, ambiguous: bool = True) -> st.SearchStrategy:
    """(raw, micro, ambiguous) for ``micro`` >= 0: a JSON number (mostly) or a decimal string."""
    forms = ZERO_AMOUNTS if micro == 0 else _amount_form_list(micro) * 2 + _decimal_strings(micro)
    return st.sampled_from([(raw, micro, amb) for raw, amb in forms if ambiguous or not amb])


POSITIVE_MICRO = st.one_of(st.integers(1, 30).map(lambda n: n * U), st.integers(1, 50 * U),
                           st.sampled_from([1, U // 100 * 155, 100 * U, 1000 * U, MAX_UNITS * U]))
_SPELLED = POSITIVE_MICRO.flatmap(amount_spellings)
# An amount for each move: sometimes 0 (a lost round; for a debit INVALID_PARAMETER).
WALLET_AMOUNTS = {action: st.one_of(amount_spellings(0), *[_SPELLED] * (8 if action == "debit" else 3))
                  for action in MOVES}
SMALL_AMOUNTS = st.integers(1, 10 * U).flatmap(amount_spellings)


GAME_IDS = st.one_of(st.sampled_from(["g1", "g1", "g1", "g2", "g3", "g4", "g5"]), text(min_size=1, max_size=64))
DEBIT_TX_IDS = st.one_of(st.sampled_from(DEBIT_IDS), st.sampled_from(DEBIT_IDS), text(min_size=1, max_size=64))
SETTLE_TX_IDS = st.one_of(st.sampled_from(SETTLE_IDS), st.sampled_from(SETTLE_IDS), text(min_size=1, max_size=64))
DEBIT_REF_IDS = st.one_of(st.sampled_from(REF_IDS), st.sampled_from(REF_IDS), st.sampled_from(DEBIT_IDS),
                          text(min_size=1, max_size=64))
CREDIT_REF_IDS = st.one_of(st.sampled_from(DEBIT_IDS), st.sampled_from(REF_IDS), st.sampled_from(REF_IDS),
                           text(min_size=1, max_size=64))
UUIDS = st.one_of(st.just(MISSING), st.none(), text(max_size=128))
# Sids that credit and cancel take (any sid) and a debit refuses (INVALID_SID).
TOLERANT_SIDS = [MISSING, None, "", "sid:expired", "sid:unknown", "sid:1001"]


@st.composite
def wallet_body(draw: st.DrawFn, action: str, txid: str | None = None, ref_id: Any = MISSING,
                game_id: Any = MISSING, coherent: bool | None = None, steady: bool = False
                ) -> tuple[dict, WalletReq, bool]:
    """A valid body for ``action``: (body, semantics, ambiguous). Mostly the player 1000 with its own sid and
    currency, and ids from small pools; ``txid``, ``ref_id`` (None: no refId) and ``game_id`` (None: no game)
    fix those parts when given; ``steady``: the player's own sid and a small amount (a debit that is taken)."""
    if coherent is None:
        coherent = draw(st.integers(0, 9)) < 7  # the player 1000, its sid, its currency
    user = "1000" if coherent else draw(WALLET_USERS)
    own = OWN_CURRENCY.get(user, "EUR")
    body: dict = {}
    sid = "sid:1000" if coherent else draw(st.sampled_from([f"sid:{int(user)}"] + SIDS + [None]))
    if sid is None:
        sid = draw(text(min_size=1, max_size=128))
    if action in MOVES and not steady and draw(st.integers(0, 5 if action == "debit" else 2)) == 0:
        sid = draw(st.sampled_from(TOLERANT_SIDS))
    body["sid"] = sid
    body["userId"] = user
    currency = own if coherent else draw(st.sampled_from([own, own, "EUR", "USD", "GBP"]))
    if action == "check":
        currency = draw(st.sampled_from([MISSING, None, currency]))
    elif action == "balance":
        currency = draw(st.sampled_from([MISSING, None] + [currency] * 4))
    body["currency"] = currency
    game_type = None
    amount = None
    ambiguous = False
    if action in MOVES:
        if game_id is MISSING:
            game_id = draw(GAME_IDS) if draw(st.integers(0, 3)) else None
        if game_id is not None:
            game_type = draw(st.sampled_from(["slots", "slots", "", MISSING]))
            body["game"] = {"id": game_id, "type": game_type,
                            "session": draw(st.sampled_from(["gs-1", "gs-2", MISSING]))}
            game_type = "" if game_type is MISSING else game_type
        else:
            body["game"] = draw(st.sampled_from([MISSING, None]))
        if txid is None:
            txid = draw(SETTLE_TX_IDS if action == "credit" else DEBIT_TX_IDS)
        tx: dict = {"id": txid}
        if ref_id is MISSING:
            ref_id = None
            if action == "credit":
                ref_id = draw(CREDIT_REF_IDS)
            elif action == "debit" and draw(st.integers(0, 2)):
                ref_id = draw(DEBIT_REF_IDS)
            elif action == "cancel" and draw(st.integers(0, 4)) == 0:
                ref_id = draw(DEBIT_REF_IDS)
        if ref_id is not None:
            tx["refId"] = ref_id
        if action != "cancel" or draw(st.integers(0, 3)) == 0:
            raw, amount, ambiguous = draw(SMALL_AMOUNTS if steady else WALLET_AMOUNTS[action])
            tx["amount"] = raw
        body["transaction"] = tx
    else:
        game_id = ref_id = None
    body["uuid"] = draw(UUIDS)
    login = int(user)
    return body, WalletReq(action, sid if isinstance(sid, str) else "", login,
                           currency if isinstance(currency, str) else None, game_id, game_type, txid, ref_id,
                           amount), ambiguous


def _valid_case(draw: st.DrawFn, action: str, label: str, **fixed: Any) -> WalletCase:
    body, req, ambiguous = draw(wallet_body(action, **fixed))
    return WalletCase("POST", f"/v1/{action}", body, draw(st.sampled_from(GOOD_AUTH)), req,
                      "ambiguous" if ambiguous else None, _uuid_of(body), label, draw(st.booleans()))


ROUND_GAMES = st.one_of(st.sampled_from(["g1", "g5", "g6", "g6", "g7"]), text(min_size=1, max_size=64))


@st.composite
def wallet_round(draw: st.DrawFn) -> list[WalletCase]:
    """A round played by the player 1000: one to three debits in one game (most sharing a refId: a split),
    then one to three of: a credit naming the shared refId or one debit's id (with the game.id or without
    it), a cancel of one debit, another credit for the game, a late debit and its cancel."""
    game = draw(ROUND_GAMES) if draw(st.integers(0, 4)) else None
    ref = draw(st.sampled_from(REF_IDS + ["r2", "r3", "r4", "r5"]))
    ids = draw(st.lists(st.sampled_from(ROUND_IDS), min_size=1, max_size=3, unique=True))
    cases = [_valid_case(draw, "debit", "round:debit", txid=i, ref_id=ref if draw(st.integers(0, 3)) else None,
                         game_id=game, coherent=True, steady=draw(st.integers(0, 4)) > 0) for i in ids]

    def named() -> str | None:  # a credit or cancel names the round's game.id, mostly; or none, or another
        return draw(st.sampled_from([game, game, game, game, None, "g1" if game != "g1" else "g5"]))
    for step in draw(st.lists(st.sampled_from(["credit-ref", "credit-ref", "credit-id", "cancel", "late"]),
                              min_size=1, max_size=3)):
        if step == "credit-ref":
            cases.append(_valid_case(draw, "credit", "round:credit-ref", txid=draw(st.sampled_from(ROUND_SETTLE_IDS)),
                                     ref_id=ref, game_id=named(), coherent=True))
        elif step == "credit-id":
            cases.append(_valid_case(draw, "credit", "round:credit-id", txid=draw(st.sampled_from(ROUND_SETTLE_IDS)),
                                     ref_id=draw(st.sampled_from(ids)), game_id=named(), coherent=True))
        elif step == "cancel":
            cases.append(_valid_case(draw, "cancel", "round:cancel", txid=draw(st.sampled_from(ids)),
                                     game_id=named(), coherent=True))
        else:
            late = draw(st.sampled_from(LATE_IDS))
            cases.append(_valid_case(draw, "debit", "round:late-debit", txid=late, game_id=game, coherent=True,
                                     steady=True))
            cases.append(_valid_case(draw, "cancel", "round:late-cancel", txid=late, game_id=named(),
                                     coherent=True))
    return cases


def _uuid_of(body: Any) -> Any:
    uuid = body.get("uuid", None) if isinstance(body, dict) else None
    return uuid if isinstance(uuid, str) else None
