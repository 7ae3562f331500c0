"""Value strategies for the fields of manager requests: valid values (raw JSON and normalised) and
invalid ones (raw JSON and the level at which they are refused), extIDs included."""

from __future__ import annotations

import string
import time
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies.commands import TRADE_EVENT
from tests.fuzz.strategies.constants import MAX_EXT_ID, MAX_ID, MAX_UNITS, U
from tests.fuzz.strategies.json_text import MISSING, QUIRKY, Lit, _digits, json_values, text

# A value strategy draws (raw JSON value, normalised value). An invalid-value strategy draws
# (raw JSON value, level): "data" (400 INVALID_DATA naming the field) or "json" (the line is not JSON, or holds
# a NaN: protocol_expect decides the answer of such a line).

def _data(s: st.SearchStrategy) -> st.SearchStrategy:
    return s.map(lambda v: (v, "data"))


def _json(s: st.SearchStrategy) -> st.SearchStrategy:
    return s.map(lambda v: (v, "json"))


NOT_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity", "nan", "inf", "+1", "01", ".5", "1.", "0x10", "1_000", "1e",
                    "--1", "1e+", "- 1", "undefined", "NaN", "Infinity", "-Infinity"]
NON_FINITE = ["NaN", "Infinity", "-Infinity"]  # read, then refused as INVALID_DATA naming where (with the extID)
# An integer of more digits than CPython parses (4,300) is read as out of range: the field's validation
# refuses it as it refuses any other integer out of its range.
huge_ints = st.one_of(
    _data(st.integers(20, 4000).map(lambda n: Lit(_digits(n)))),
    _data(st.integers(20, 4000).map(lambda n: Lit("-" + _digits(n)))),
    _data(st.integers(4400, 20000).map(lambda n: Lit(_digits(n)))),
    _data(st.integers(4400, 12000).map(lambda n: Lit("-" + _digits(n)))),
)
bad_literals = _json(st.sampled_from(NOT_JSON_NUMBERS).map(Lit))
# Exponents up to 18 digits parse as a Decimal; longer ones are beyond Decimal (found by this fuzzer: the
# parser raised decimal.InvalidOperation; test_number_with_a_huge_exponent_gets_an_error_reply).
# (Beyond a decimal, protocol_expect also allows INVALID_JSON.)
big_exponents = (_data(st.builds(lambda sign, n: Lit(f"1e{sign}{_digits(n)}"), st.sampled_from(["", "+", "-"]),
                                 st.integers(3, 18)))
                 | _data(st.builds(lambda n: Lit(f"1e{_digits(n)}"), st.integers(19, 60))))
wrong_scalars = _data(st.one_of(text(max_size=12), st.booleans(), st.lists(json_values, max_size=3),
                                st.dictionaries(text(max_size=5), json_values, max_size=3)))
fractions = _data(st.sampled_from(["1000.0", "1e3", "1E3", "1000.5", "0.5", "-0.0", "1.0e3", "2.5E-1"]).map(Lit))


@cache
def invalid_id(required: bool) -> st.SearchStrategy:
    return st.one_of(
        _data(st.sampled_from([0, -1, MAX_ID + 1, 2**64, -(2**63), 10**30])),
        _data(st.integers(max_value=0)), _data(st.integers(min_value=MAX_ID + 1, max_value=10**40)),
        _data(st.sampled_from(["1000", "1", " 1000", "0x3e8"])), fractions, wrong_scalars, huge_ints,
        bad_literals, big_exponents, *([_data(st.none())] if required else []),
    )


@cache
def invalid_time() -> st.SearchStrategy:
    return st.one_of(_data(st.integers(max_value=-1)), _data(st.integers(min_value=MAX_ID + 1, max_value=10**30)),
                     fractions, wrong_scalars, huge_ints, bad_literals)


invalid_amount = st.one_of(
    _data(st.sampled_from([0, Lit("-0"), Lit("-0.0"), Lit("0.0"), Lit("0e10"), Lit("0.0000000"), Lit("1e-7"),
                           Lit("0.0000001"), Lit("1.0000001"), Lit("-1"), Lit("-0.000001"),
                           Lit("1000000000000.000001"), 10**12 + 1, Lit("1e13"), Lit("1e400"), Lit("-1e400"),
                           Lit("1E-400"), Lit("1e999999999999999999"), Lit("1e-999999999999999999"),
                           Lit("999999999999.9999999"), Lit("1.23456789"), Lit("-1e-7")])),
    _data(st.integers(max_value=0)), _data(st.integers(min_value=MAX_UNITS + 1, max_value=10**40)),
    _data(st.decimals(min_value=Decimal("-1e15"), max_value=Decimal("1e15"), places=9)
          .filter(lambda d: d != d.quantize(Decimal("0.000001")))),
    _data(st.sampled_from(["1", "1.0", "", "100", "NaN", "Infinity"])),
    _data(st.sampled_from([None, True, False])), wrong_scalars, huge_ints, bad_literals, big_exponents,
)
_non_str = _data(st.one_of(st.integers(-5, 5), st.booleans(), st.none(), st.lists(text(max_size=5), max_size=2),
                           st.dictionaries(text(max_size=3), text(max_size=3), max_size=2),
                           fractions.map(lambda v: v[0])))


@cache
def invalid_text(max_size: int, min_size: int = 0) -> st.SearchStrategy:
    too_long = _data(text(min_size=max_size + 1, max_size=max_size + 300))
    empty = [_data(st.just(""))] if min_size > 0 else []
    return st.one_of(_non_str, too_long, *empty, bad_literals)


invalid_currency = st.one_of(
    _data(st.sampled_from(["eur", "EURO", "EU", "E1R", "", "EUR\n", "\nEUR", " EUR", "EUR ", "ÉUR", "Eur",
                           "\uff25\uff35\uff32", "EU\u0000"])),
    _data(text(max_size=6).filter(lambda t: not (len(t) == 3 and all(c in string.ascii_uppercase for c in t)))),
    _non_str, bad_literals,
)


@cache
def valid_text(max_size: int, min_size: int = 0) -> st.SearchStrategy:
    quirky = st.sampled_from([q for q in QUIRKY if min_size <= len(q) <= max_size])
    return st.one_of(text(min_size=min_size, max_size=min(max_size, 30)), quirky,
                     text(min_size=max(min_size, max_size - 3), max_size=max_size))


def _amount_forms(micro: int) -> st.SearchStrategy:
    """Exact spellings of a positive amount: (raw, micro, ambiguous). Ambiguous spellings carry more than
    6 decimals that are all zeros: the contract says "at most 6 decimals", so both accepting and refusing
    them is allowed."""
    return st.sampled_from(_amount_form_list(micro)).map(lambda f: (f[0], micro, f[1]))


def _amount_form_list(micro: int) -> list[tuple[Any, bool]]:
    """The JSON-number spellings of a positive amount: (raw, ambiguous)."""
    units, frac = divmod(micro, U)
    six = f"{units}.{frac:06d}"
    forms = [(Lit(six), False), (Lit(six.rstrip("0").rstrip(".") or "0"), False), (Lit(f"{micro}e-6"), False),
             (Lit(f"{micro}E-6"), False), (Lit(six + "000"), True), (Lit(f"{micro}0e-7"), True)]
    if frac == 0:
        forms += [(units, False), (Lit(f"{units}.0"), False), (Lit(f"{units}e0"), False)]
        if units % 100 == 0 and units:
            forms.append((Lit(f"{units // 100}E+2"), False))
    return forms


valid_amount = st.one_of(
    st.integers(1, 50).map(lambda n: n * U), st.integers(1, 200 * U), st.integers(1, 10 * U),
    st.sampled_from([1, U // 2, U, MAX_UNITS * U, MAX_UNITS * U - 1, 10**11 * U]),
    st.integers(1, MAX_UNITS * U),
).flatmap(_amount_forms)
# Mostly the seeded accounts and orders (tests/fuzz/harness/manager.py: SEED_MANAGER), sometimes anything.
@st.composite
def _mostly(draw: st.DrawFn, common: tuple, other: st.SearchStrategy) -> Any:
    """One of ``common`` (None: a draw from ``other``)."""
    value = draw(st.sampled_from(common))
    return draw(other) if value is None else value


logins = _mostly((1000, 1000, 1000, 1000, 1001, 1001, 1002, 1002, 1003, 1004, 1004, 1005, 999, None),
                 st.integers(1, MAX_ID))
orders = _mostly(tuple(range(1, 17)) + (1, 2, 3, 4, 15, 16, 17, 18, MAX_ID, None), st.integers(1, MAX_ID))
_NOW = int(time.time())
times = st.one_of(st.sampled_from([0, 1, MAX_ID, 1_700_000_000, _NOW - 1, _NOW + 3600]),
                  st.integers(_NOW - 100_000, _NOW + 100_000), st.integers(0, MAX_ID))


@cache
def _opt(s: st.SearchStrategy, none: bool = True) -> st.SearchStrategy:
    """MISSING, null (when allowed and meaning absent) or a value: (raw, normalised or None)."""
    options = [st.just((MISSING, None))] + ([st.just((None, None))] if none else [])
    return st.one_of(*options, s.map(lambda v: (v, v)))


COMMENTS = valid_text(255)
OPT_COMMENTS = _opt(COMMENTS, none=False)
OPT_ORDERS = _opt(orders)
OPT_TIMES = _opt(times)
PASSWORDS = valid_text(1024)
# The passwords AddUser gives most often, so that a later Login of the new account can use one.
ACCOUNT_PASSWORD_POOL = ["s3cret-pass", "it's m\u00eene"]
NEW_PASSWORDS = st.one_of(st.sampled_from(ACCOUNT_PASSWORD_POOL), valid_text(1024, min_size=1))
# 1000 has no password and 15 is nobody (a check against a dummy hash: about 50 ms, kept rare); 1005 is the
# account an AddUser without a login creates first.
LOGIN_LOGINS = st.one_of(st.sampled_from([11, 12, 13, 14, 11, 14, 1003, 1003]),
                         st.sampled_from([15, 1, MAX_ID, 1000, 1005]))
NEW_LOGINS = _opt(st.one_of(st.sampled_from([1003, 1004, 1005, 999, 1, 1000, 5000, MAX_ID - 1, MAX_ID]),
                            st.integers(1, MAX_ID)))
NAMES = valid_text(128, min_size=1)
CURRENCIES = st.one_of(st.sampled_from(["EUR", "USD", "GBP", "JPY"]), st.text(string.ascii_uppercase, min_size=3,
                                                                          max_size=3))
OPT_CURRENCIES = _opt(CURRENCIES)  # missing or null: the server's default currency
GROUP_NAMES = st.one_of(st.sampled_from(["default", "vip", "O'Brien's", "nobody"]), valid_text(64, min_size=1))
GROUPS = _opt(GROUP_NAMES, none=False)
LEVERAGES = st.one_of(st.sampled_from([1, 100, 500, 1_000_000]), st.integers(1, 1_000_000))
EMAILS = st.one_of(st.sampled_from(["", "ann@example.com", "o'brien@example.com", "z\u00f6e@example.com"]),
                   valid_text(254))
FROM_SEQS = _opt(st.one_of(st.integers(0, 40), st.sampled_from([MAX_ID]), st.integers(0, MAX_ID)))
# Channels: the one published, the quote symbols the SDKs' examples subscribe to, near misses, anything.
CHANNEL_NAMES = st.one_of(st.sampled_from([TRADE_EVENT] * 5 + ["EURUSD", "GBPUSD", "XAUUSD", "orders", "Trade:Event",
                                                               "trade:event ", "", "O'Brien\u20ac"]),
                          text(max_size=12))
# AddUser as the seeds send it (tests/fuzz/harness/manager.py): (extID, data). An input may repeat one (a replay of the
# seed's idempotency key when it also carries its extID and the admin's token).
SEED_ADD_USERS = [
    ("seed-u1", {"login": 1000, "name": "alice", "currency": "EUR"}),
    ("seed-u2", {"login": 1001, "name": "bob", "currency": "USD"}),
    ("seed-u3", {"login": 1002, "name": "whale", "currency": "EUR", "group": "vip"}),
    ("seed-u4", {"login": 1003, "name": "Zo\u00eb O'Brien", "group": "vip", "leverage": 500,
                 "email": "zoe@example.com", "enable": True}),  # as the SDKs send it: no currency
    ("seed-u5", {"login": 1004, "name": "off", "currency": "EUR"}),  # disabled after its orders
]


ext_ids = st.one_of(
    st.just((MISSING, None)), st.just((None, None)),
    st.sampled_from(["k1", "k2", "k3", "k1", "seed-1", "seed-3", "seed-fail", "seed-u1", "seed-u4", "e'1",
                     "cl\u00e9-\u00e9t\u00e9", "\U0001F600"]).map(lambda e: (e, e)),
    text(min_size=1, max_size=40).map(lambda e: (e, e)),
    text(min_size=MAX_EXT_ID, max_size=MAX_EXT_ID).map(lambda e: (e, e)),
)
# "" is refused (and echoed): an empty extID would be one idempotency key shared by every request that sends it
invalid_ext_ids = st.one_of(st.just(""), st.integers(-3, 3), st.booleans(), st.lists(text(max_size=3), max_size=2),
                            st.dictionaries(text(max_size=3), text(max_size=3), max_size=2),
                            st.sampled_from([Lit("1.5"), Lit("-0"), Lit("NaN")]),
                            text(min_size=MAX_EXT_ID + 1, max_size=MAX_EXT_ID + 50))
