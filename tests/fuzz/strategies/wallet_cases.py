"""Game-wallet inputs: valid calls, bad tokens, bad fields, garbage bodies and wrong routes, retries
of an earlier call, and an example of several on one account world."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies.constants import MAX_UNITS, U
from tests.fuzz.strategies.json_text import MISSING, Lit, _digits, enc, json_values, text
from tests.fuzz.strategies.malformed import BAD_UTF8, _nest
from tests.fuzz.strategies.values import _non_str, invalid_amount, invalid_currency
from tests.fuzz.strategies.wallet_calls import (BAD_AUTH, GOOD_AUTH, MOVES, POSITIVE_MICRO, WALLET_ACTIONS,
                                                WALLET_DECIMAL, WalletCase, _uuid_of, _valid_case, amount_spellings,
                                                wallet_body, wallet_round)

WALLET_BAD_AMOUNT_STRINGS = ["", " 1", "1 ", "+1", "1.", ".5", "1e3", "1E-6", "0x10", "1_000", "1,5", "NaN",
                             "Infinity", "-Infinity", "\uff11", "\u0661", "--1", "\u22121", "1.5.0", "-1", "-0.5",
                             "-0.000001", "1.0000001", "0.0000001", "1000000000000.000001", "1000000000001",
                             "9" * 31, "1." + "0" * 31, "0" * 31, "1\n", "null"]


@cache
def _invalid_wallet_fields(action: str) -> dict[str, st.SearchStrategy]:
    """name (dotted) -> invalid values, for a body of ``action``."""
    sid_bad = st.one_of(_non_str.map(lambda v: v[0]), text(min_size=129, max_size=200))
    if action in ("check", "balance"):
        sid_bad = st.one_of(sid_bad, st.just(""), st.just(MISSING))
    else:  # a move's sid may be empty, null or missing (a debit then answers INVALID_SID: wallet_body)
        sid_bad = sid_bad.filter(lambda v: v is not None)
    fields: dict[str, st.SearchStrategy] = {
        "sid": sid_bad,
        "userId": st.one_of(st.integers(0, 2000), st.sampled_from(["", "10x", "-1", "+1000", " 1000", "1000 ", "1.0",
                                                                   "\uff11\uff10\uff10\uff10", "1e3", "0x10", "1_000",
                                                                   "01000", "0001000"]),  # not as issued
                            st.just("9" * 19), st.none(), st.just(MISSING), st.booleans(),
                            st.lists(st.just("1000"), max_size=1)),
        "uuid": st.one_of(st.integers(), st.booleans(), st.lists(text(max_size=4), max_size=2),
                          text(min_size=129, max_size=200)),
    }
    currency_bad = invalid_currency.map(lambda v: v[0])
    if action in MOVES:
        fields["currency"] = st.one_of(currency_bad, st.just(MISSING))
        fields["game"] = st.one_of(st.lists(st.integers(), max_size=2), text(max_size=5), st.integers(), st.booleans(),
                                   st.just({}), st.just({"id": ""}), st.just({"id": "x" * 65}), st.just({"id": 5}),
                                   st.just({"id": "g", "type": "t" * 65}), st.just({"id": "g", "session": "s" * 129}),
                                   st.just({"id": "g", "type": None}))
        fields["transaction"] = st.one_of(st.just(MISSING), st.none(), st.lists(st.integers(), max_size=2),
                                          text(max_size=5), st.just({}))
        fields["transaction.id"] = st.one_of(st.just(MISSING), st.just(""), text(min_size=65, max_size=80),
                                             _non_str.map(lambda v: v[0]))
        fields["transaction.refId"] = st.one_of(st.just(""), text(min_size=65, max_size=80),
                                                _non_str.map(lambda v: v[0]).filter(lambda v: v is not None))
        # Not an amount: a JSON number that is negative, beyond 10^12 or of more than 6 decimals, NaN, a string
        # that is not a plain decimal, any other type. (0 is an amount: a lost round; a debit refuses it.)
        amount_bad = st.one_of(
            invalid_amount.map(lambda v: v[0]).filter(
                lambda v: v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v == 0)
                and str(v) not in ("-0", "-0.0", "0.0", "0e10", "0.0000000")
                and not (isinstance(v, str) and not isinstance(v, Lit) and WALLET_DECIMAL.fullmatch(v))),
            st.sampled_from(WALLET_BAD_AMOUNT_STRINGS))
        fields["transaction.amount"] = amount_bad
        if action == "credit":
            fields["transaction.refId"] = st.one_of(fields["transaction.refId"], st.just(MISSING), st.none())
        if action in ("debit", "credit"):
            fields["transaction.amount"] = st.one_of(amount_bad, st.just(MISSING), st.none())
    else:
        fields["currency"] = currency_bad.filter(lambda v: v is not None)
    return fields


def _set(body: dict, dotted: str, value: Any) -> dict:
    body = dict(body)
    if "." in dotted:
        outer, inner = dotted.split(".")
        sub = body.get(outer)
        body[outer] = {**(sub if isinstance(sub, dict) else {}), inner: value}
    else:
        body[dotted] = value
    return body


@st.composite
def wallet_case(draw: st.DrawFn) -> WalletCase:
    kind = draw(st.sampled_from(["valid"] * 10 + ["auth"] * 2 + ["field"] * 6 + ["garbage"] * 3 + ["route"]))
    if kind == "valid":  # mostly the moves, which play rounds
        action = draw(st.sampled_from(WALLET_ACTIONS + ["debit", "debit", "credit", "credit", "cancel"]))
        return _valid_case(draw, action, f"valid:{action}")
    action = draw(st.sampled_from(WALLET_ACTIONS))
    body, req, ambiguous = draw(wallet_body(action))
    auth = draw(st.sampled_from(GOOD_AUTH))
    path = f"/v1/{action}"
    ascii_only = draw(st.booleans())
    if kind == "auth":
        auth = draw(st.sampled_from(BAD_AUTH))
        if draw(st.booleans()):
            return WalletCase("POST", path, body, auth, None, "INVALID_TOKEN_ID", _uuid_of(body),
                              f"auth:{auth.label}", ascii_only)
        raw = draw(st.sampled_from([b"", b"{", b"[]", b"\xff"]))
        return WalletCase("POST", path, raw, auth, None, "INVALID_TOKEN_ID", None, f"auth:{auth.label}:garbage")
    if kind == "field":
        fields = _invalid_wallet_fields(action)
        name = draw(st.sampled_from(sorted(fields)))
        body = _set(body, name, draw(fields[name]))
        if draw(st.integers(0, 5)) == 0:
            auth = draw(st.sampled_from(BAD_AUTH))
            return WalletCase("POST", path, body, auth, None, "INVALID_TOKEN_ID", _uuid_of(body),
                              f"field:{name}:noauth", ascii_only)
        return WalletCase("POST", path, body, auth, None, "INVALID_PARAMETER", _uuid_of(body), f"field:{name}",
                          ascii_only)
    if kind == "route":
        which = draw(st.sampled_from(["get", "put", "unknown", "prefix"]))
        if which in ("get", "put"):
            return WalletCase(which.upper(), path, b"", auth, None, 405, None, f"route:{which}")
        path = draw(st.sampled_from(["/v1/withdraw", "/v1/", "/v2/debit", "/v1/debit/", "/v1/Debit", "/",
                                     "/v1/debit%00"]))
        return WalletCase("POST", path, b"{}", auth, None, 404, None, "route:unknown")
    # garbage bodies: not JSON, not UTF-8, truncated, NaN, deep, huge, not an object, oversized
    encoded = enc(body, ascii_only=True)
    what = draw(st.sampled_from(["truncated", "non-utf8", "nan", "deep", "non-object", "oversized", "empty",
                                 "binary", "huge-int"]))
    uuid: Any = None
    if what == "truncated":
        raw = encoded.encode()[: draw(st.integers(0, len(encoded) - 1))]
    elif what == "non-utf8":
        data = encoded.encode()
        at = draw(st.integers(0, len(data)))
        raw = data[:at] + draw(st.sampled_from(BAD_UTF8)) + data[at:]
    elif what == "nan":
        body = _set(body, draw(st.sampled_from(["transaction.amount", "userId", "uuid", "sid"])),
                    Lit(draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))))
        raw = enc(body).encode()
    elif what == "deep":
        depth = draw(st.integers(5000, 25000))
        raw = enc({**body, "zz": _nest("list", depth)}).encode()
    elif what == "non-object":
        raw = enc(draw(st.one_of(st.lists(json_values, max_size=3), text(max_size=10), st.integers(), st.none(),
                                 st.booleans()))).encode()
    elif what == "oversized":
        raw = enc({**body, "pad": "x" * draw(st.integers(64 * 1024, 200 * 1024))}).encode()
    elif what == "empty":
        raw = b""
    elif what == "huge-int":
        # an integer of more digits than CPython parses, where the action reads it (a check or balance body
        # has no transaction): whether the parser fails or takes it as out of range, INVALID_PARAMETER
        digits = Lit(_digits(draw(st.integers(5000, 20000))))
        body = _set(body, draw(st.sampled_from(["transaction.amount", "uuid"] if action in MOVES else ["uuid"])),
                    digits)
        raw = enc(body).encode()
    else:
        raw = draw(st.binary(max_size=100))
        try:
            obj = json.loads(raw.decode())
            uuid = _uuid_of(obj)
            if isinstance(obj, dict):
                raw = b"[" + raw + b"]"
                uuid = None
        except (ValueError, RecursionError):
            pass
    return WalletCase("POST", path, raw, auth, None, "INVALID_PARAMETER", uuid, f"garbage:{what}")


RETRY_SIDS = [MISSING, None, "", "sid:1000", "sid:expired", "sid:unknown"]


@st.composite
def wallet_retry(draw: st.DrawFn, again: WalletCase) -> WalletCase:
    """``again`` sent once more under its transaction.id, as a provider retrying would: the same content
    (a retransmission), possibly with another uuid, sid, game session or spelling of the amount; or
    sometimes with another amount (changed content: INVALID_PARAMETER unless the first was not kept)."""
    body, req, expect = dict(again.body), again.req, again.expect
    how = draw(st.sampled_from(["same", "uuid", "uuid", "sid", "session", "spelling", "spelling", "changed"]))
    tx = body.get("transaction")
    if how == "uuid":
        body["uuid"] = draw(text(max_size=20))
    elif how == "sid":
        sid = draw(st.sampled_from(RETRY_SIDS))
        body["sid"] = sid
        req = replace(req, sid=sid if isinstance(sid, str) else "")
    elif how == "session" and isinstance(body.get("game"), dict):
        body["game"] = {**body["game"], "session": draw(st.sampled_from(["gs-retry", MISSING]))}
    elif how in ("spelling", "changed") and isinstance(tx, dict) and req.amount is not None:
        micro = req.amount if how == "spelling" else (req.amount + draw(POSITIVE_MICRO)) % (MAX_UNITS * U) or 1
        raw, micro, _ = draw(amount_spellings(micro, ambiguous=False))
        body["transaction"] = {**tx, "amount": raw}
        req = replace(req, amount=micro)
        expect = None
    else:
        how = "same"
    return replace(again, body=body, req=req, expect=expect, uuid=_uuid_of(body), label=f"retry:{how}")


@st.composite
def wallet_example(draw: st.DrawFn, max_size: int = 4, max_inputs: int = 9) -> list[WalletCase]:
    """Provider calls on one account world: single calls and whole rounds (wallet_round); some are retries
    of an earlier call (same transaction.id, wallet_retry)."""
    steps = draw(st.lists(st.one_of(wallet_case().map(lambda c: [c]), wallet_case().map(lambda c: [c]),
                                    wallet_round()),
                          min_size=1, max_size=max_size))
    out: list[WalletCase] = []
    for case in (c for step in steps for c in step):
        earlier = [c for c in out if c.req is not None and c.req.txid is not None]
        if earlier and draw(st.integers(0, 3)) == 0:
            out.append(draw(wallet_retry(draw(st.sampled_from(earlier)))))
        out.append(case)
    return out[:max_inputs]
