"""Hypothesis strategies for ``tests/test_fuzz.py``: manager-protocol lines and game-wallet requests, each
drawn together with what the server must do with it.

Every manager input is a :class:`Case`: the bytes of one line (plus its terminator and where to split it
into separate writes) and an :class:`Expect`, a list of acceptable outcomes:

* :class:`Fixed` ``(status, code, echo, where)``: a refusal that must leave the ledger untouched, echo the
  extID ``echo`` and name one of ``where`` in its message;
* :class:`Oracle` ``(call)``: a well-formed request whose answer depends on the ledger's state; the test's
  oracle (an independent model of the contract) predicts the answer and the ledger change;
* :class:`Closed`: ``400 LINE_TOO_LONG`` and the connection closed;
* :class:`Silent`: no reply at all (a blank line).

Most inputs have exactly one acceptable outcome; a few have two where the contract leaves a choice (a
number with more than 6 decimals that are all zeros, a number whose exponent is beyond what a decimal holds).

What the contract says of a line before any command looks at it (malformed JSON, a repeated key, not an
object, a bad extID or command, a NaN or an infinity anywhere, a lone surrogate in any string, and which
extID the answer echoes) is decided for every generated line by :func:`protocol_expect`, whatever the
generator meant the line to be.

Every wallet input is a :class:`WalletCase`: method, path, query, headers, body and the semantics of the
body when it is valid (:class:`WalletReq`), else the status string it must get.
"""

from __future__ import annotations

import base64
import json
import re
import string
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from typing import Any

import jwt
from hypothesis import strategies as st

from syncledger.server.auth import SESSION_ADMIN, SESSION_DEALER, SESSION_MANAGER, SESSION_USER, Tokens

# The fuzz servers' own secrets (tests/test_fuzz.py passes them in the Config).
SECRET = "syncledger-fuzz-secret-long-enough-for-hs256-and-hs384!"
WALLET_TOKEN = "provider-shared-token-for-fuzzing"
MAX_ID = 2**63 - 1
MAX_LINE = 64 * 1024
MAX_EXT_ID = 256
U = 1_000_000  # micro-units per unit
MAX_UNITS = 10**12


# ---------------------------------------------------------------------------------------------- JSON text

class Lit(str):
    """Raw JSON text, written as it is: ``NaN``, ``1e400``, ``-0``, an integer of 10,000 digits, ``[[[...]]]``."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a key left out


class Pairs(tuple):
    """A JSON object written from (key, value) pairs as they are: a key may repeat."""


def _has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


def enc(value: Any, *, ascii_only: bool = True, compact: bool = True) -> str:
    """JSON text of ``value`` (dicts keep their order; :data:`MISSING` values are left out; Lit is raw)."""
    item, key = (",", ":") if compact else (", ", ": ")

    def s(text: str) -> str:
        return json.dumps(text, ensure_ascii=ascii_only or _has_surrogate(text))

    def go(v: Any) -> str:
        if isinstance(v, Lit):
            return str(v)
        if isinstance(v, Pairs):
            return "{" + item.join(s(k) + key + go(x) for k, x in v if x is not MISSING) + "}"
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, str):
            return s(v)
        if isinstance(v, (list, tuple)):
            return "[" + item.join(go(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + item.join(s(k) + key + go(x) for k, x in v.items() if x is not MISSING) + "}"
        raise TypeError(f"cannot encode {v!r}")

    return go(value)


@cache
def text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any Unicode text, lone surrogates included: a request that holds one in a string is refused as
    INVALID_DATA naming where (see :func:`protocol_expect`)."""
    return st.text(st.characters(), min_size=min_size, max_size=max_size)


# What the official SDKs' users type: non-ASCII text and apostrophes (the server writes them as \uXXXX escapes).
QUIRKY = ["O'Brien", "Zo\u00eb's bonus \u20ac5", "\u4e2d\u6587 comment", "emoji \U0001F600 it's", "it's 'quoted'", "'",
          "l'\u00e9t\u00e9", "\u00c9ric", "''", "\\'", "\"'\"", "caf\u00e9 \u2019 \u2018", "\u0000'"]


def _digits(n: int) -> str:
    return ("9876543210" * (n // 10 + 1))[:n].lstrip("0") or "9"


# Any JSON value (small), for extra fields and wrong types.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | text(max_size=10)
    | st.sampled_from([Lit("1.5"), Lit("-0.0"), Lit("1e3"), Lit("0.000001")]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


# ---------------------------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class Tok:
    raw: Any  # the __token value (MISSING: no key)
    error: str | None  # the 401 code it must get, None for a good token
    login: int = 0
    session: int = -1
    label: str = ""


_ISSUER = Tokens(SECRET, ttl=14 * 24 * 3600)
_EXP = int(time.time()) + 14 * 24 * 3600

ADMIN = Tok(_ISSUER.issue(1, SESSION_ADMIN)[0], None, 1, SESSION_ADMIN, "admin")
MANAGER = Tok(_ISSUER.issue(2, SESSION_MANAGER)[0], None, 2, SESSION_MANAGER, "manager")
DEALER = Tok(_ISSUER.issue(3, SESSION_DEALER)[0], None, 3, SESSION_DEALER, "dealer")
USER = Tok(_ISSUER.issue(4, SESSION_USER)[0], None, 4, SESSION_USER, "user")


def _signed(claims: dict, key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    i = len(sig) // 2
    return f"{head}.{body}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"


def _swap_payload(token: str, claims: dict) -> str:
    head, _, sig = token.split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


_UNAUTHORIZED = [MISSING, None, "", 0, 1, True, [], {}, [ADMIN.raw], {"token": ADMIN.raw}]
_INVALID = [
    Tokens("another-secret-long-enough-for-hs256-and-hs384!!!").issue(1, SESSION_ADMIN)[0],  # forged
    _signed({"sub": "1", "session": 3, "exp": _EXP}, alg="HS384"),
    jwt.encode({"sub": "1", "session": 3, "exp": _EXP}, None, algorithm="none"),
    _tamper_signature(ADMIN.raw),
    _swap_payload(USER.raw, {"sub": "4", "session": 3, "exp": _EXP}),  # a user token made admin
    _signed({"sub": "1", "session": 7, "exp": _EXP}),
    _signed({"sub": "1", "session": "3", "exp": _EXP}),
    _signed({"sub": "1", "session": True, "exp": _EXP}),
    _signed({"sub": "1", "session": 3.0, "exp": _EXP}),
    _signed({"sub": "1", "exp": _EXP}),
    _signed({"sub": "one", "session": 3, "exp": _EXP}),
    _signed({"session": 3, "exp": _EXP}),
    _signed({"sub": "1", "session": 3}),
    _signed({"sub": "1", "session": 3, "exp": str(_EXP)}),
    ADMIN.raw + "x", ADMIN.raw[:-3], ADMIN.raw.rsplit(".", 1)[0], "a.b.c", "..", "Bearer " + ADMIN.raw,
]
_EXPIRED = [_ISSUER.issue(1, SESSION_ADMIN, ttl=-60)[0], _ISSUER.issue(4, SESSION_USER, ttl=-1)[0],
            _ISSUER.issue(2, SESSION_MANAGER, ttl=-86400)[0]]

good_tokens = st.sampled_from([ADMIN, ADMIN, ADMIN, MANAGER, DEALER, USER])
finance_tokens = st.sampled_from([ADMIN, ADMIN, MANAGER, DEALER])
bad_tokens = st.one_of(
    st.sampled_from(_UNAUTHORIZED).map(lambda raw: Tok(raw, "UNAUTHORIZED", label="unauthorized")),
    st.sampled_from(_INVALID).map(lambda raw: Tok(raw, "INVALID_TOKEN", label="invalid")),
    text(min_size=1, max_size=300).map(lambda raw: Tok(raw, "INVALID_TOKEN", label="garbage")),
    st.sampled_from(_EXPIRED).map(lambda raw: Tok(raw, "TOKEN_EXPIRED", label="expired")),
)


# ---------------------------------------------------------------------------------------------- commands

FINANCE = ["BalanceIn", "BalanceOut", "CreditIn", "CreditOut", "DeleteBalance", "DeleteCredit"]
SYNC = [name + "Sync" for name in FINANCE]
OTHERS = ["Login", "AddUser", "GetUser", "GetUsers", "GetTrade", "GetTrades", "Subscribe", "Unsubscribe",
          "OpenGameSession", "Ping"]
COMMANDS = FINANCE + SYNC + OTHERS
FINANCE_SESSIONS = frozenset({SESSION_MANAGER, SESSION_DEALER, SESSION_ADMIN})
ALLOWED = {name: FINANCE_SESSIONS for name in COMMANDS}
ALLOWED["AddUser"] = frozenset({SESSION_MANAGER, SESSION_ADMIN})
ALLOWED["Ping"] = frozenset(range(4))
FIELD_NAMES = {"login", "amount", "comment", "order", "open_time", "close_time", "password", "name", "currency",
               "group", "from", "to", "chanels", "channels", "from_seq", "leverage", "email", "enable", "from_login",
               "limit"}
# Logins and orders that exist in the seeded world of each example (see test_fuzz.seed_manager_world): 1003 was
# added as the SDKs send AddUser and logs in with a password; 1004 has orders and is disabled.
ACCOUNTS = [1000, 1001, 1002, 1003, 1004]
ACCOUNT_PASSWORDS = {1003: "pw-1003"}
DISABLED = 1004
DEFAULT_CURRENCY = "USD"  # of an account AddUser creates without one (the fuzz servers keep the default)
MAX_USERS = 1000  # accounts in one GetUsers page at most
TRADE_EVENT = "trade:event"  # the one channel the server publishes
MANAGERS = {11: ("pw-eleven", SESSION_MANAGER), 12: ("pw-twelve", SESSION_DEALER), 13: ("pw-13", SESSION_ADMIN),
            14: ("pw-fourteen", SESSION_USER)}


def base_command(command: str) -> str:
    return command[:-4] if command in SYNC else command


@dataclass(frozen=True)
class Call:
    """A well-formed manager request, as the oracle sees it (data normalised: amounts in micro-units,
    defaults filled in)."""

    command: str
    fields: tuple  # sorted (name, value) pairs
    login: int  # the token's manager login (idempotency scope)
    session: int
    ext_id: str | None

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.fields).get(name, default)


@dataclass(frozen=True)
class Fixed:
    status: int
    code: str
    echo: str | None  # the extID the reply must carry (None: no extID)
    where: tuple = ()  # the message names one of these (a field, or the path of a value JSON cannot carry back)


@dataclass(frozen=True)
class Oracle:
    call: Call
    echo: str | None


@dataclass(frozen=True)
class Closed:
    """400 LINE_TOO_LONG (no extID), then the server closes the connection."""


@dataclass(frozen=True)
class Silent:
    """No reply (a blank line)."""


@dataclass
class Expect:
    alts: list

    def has(self, kind: type) -> bool:
        return any(isinstance(a, kind) for a in self.alts)


@dataclass
class Req:
    """A manager request before encoding; any attribute may hold a wrong type, MISSING leaves it out."""

    command: Any
    ext_id: Any = MISSING
    data: Any = MISSING
    token: Any = MISSING
    extra: dict = field(default_factory=dict)
    order: tuple = ("command", "extID", "data", "__token")

    def obj(self) -> dict:
        values = {"command": self.command, "extID": self.ext_id, "data": self.data, "__token": self.token}
        out = {k: values[k] for k in self.order}
        out.update(self.extra)
        return out


@dataclass
class Case:
    line: bytes  # without terminator
    end: bytes  # b"\n", b"\r\n" or b"" (an unterminated, oversized line)
    expect: Expect
    cuts: tuple = ()  # offsets where the bytes are split into separate writes
    label: str = ""
    req: Req | None = None  # the request (for retries)
    call: Call | None = None
    style: tuple = (True, True)

    @property
    def data(self) -> bytes:
        return self.line + self.end

    def __repr__(self) -> str:
        line = self.line if len(self.line) <= 400 else self.line[:300] + b"...(%d bytes)" % len(self.line)
        return f"Case({self.label!r}, {line + self.end!r}, expect={self.expect.alts!r})"


# ---------------------------------------------------------------------------------------------- values

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
# Mostly the seeded accounts and orders (tests/test_fuzz.py: SEED_MANAGER), sometimes anything.
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
# AddUser as the seeds send it (tests/test_fuzz.py): (extID, data). An input may repeat one (a replay of the
# seed's idempotency key when it also carries its extID and the admin's token).
SEED_ADD_USERS = [
    ("seed-u1", {"login": 1000, "name": "alice", "currency": "EUR"}),
    ("seed-u2", {"login": 1001, "name": "bob", "currency": "USD"}),
    ("seed-u3", {"login": 1002, "name": "whale", "currency": "EUR", "group": "vip"}),
    ("seed-u4", {"login": 1003, "name": "Zo\u00eb O'Brien", "group": "vip", "leverage": 500,
                 "email": "zoe@example.com", "enable": True}),  # as the SDKs send it: no currency
    ("seed-u5", {"login": 1004, "name": "off", "currency": "EUR"}),  # disabled after its orders
]


@dataclass
class Draft:
    """Valid data of one command: the raw dict, the normalised fields, and field specs to mutate."""

    data: dict
    fields: dict
    ambiguous: bool = False
    ext: str | None = None  # an extID that goes with it (a seed's: its AddUser replayed)


def _finance_draft(command: str) -> st.SearchStrategy[Draft]:
    op = base_command(command)

    @st.composite
    def build(draw: st.DrawFn) -> Draft:
        if op.startswith("Delete"):
            order = draw(orders)
            return Draft({"order": order}, {"order": order})
        login = draw(logins)
        raw_amount, micro, ambiguous = draw(valid_amount)
        credit = op.startswith("Credit")
        comment = draw(COMMENTS) if credit else draw(OPT_COMMENTS)[0]
        order_raw, order = draw(OPT_ORDERS)
        open_raw, open_t = draw(OPT_TIMES)
        close_raw, close_t = draw(OPT_TIMES)
        data = {"login": login, "amount": raw_amount, "comment": comment, "order": order_raw,
                "open_time": open_raw, "close_time": close_raw}
        fields = {"login": login, "amount": micro, "comment": "Finance" if comment is MISSING else comment,
                  "order": order, "open_time": open_t, "close_time": close_t}
        return Draft(data, fields, ambiguous)

    return build()


@st.composite
def _login_draft(draw: st.DrawFn) -> Draft:
    login = draw(LOGIN_LOGINS)
    known = MANAGERS[login][0] if login in MANAGERS else ACCOUNT_PASSWORDS.get(login, "")
    password = draw(st.sampled_from([known or "x", known or "x", known + " ", None, ACCOUNT_PASSWORD_POOL[0]]))
    if password is None:
        password = draw(PASSWORDS)
    return Draft({"login": login, "password": password}, {"login": login, "password": password})


@st.composite
def _add_user_draft(draw: st.DrawFn) -> Draft:
    """The classic form (login, name, currency, group), the SDKs' (no login, no currency; password, leverage,
    email, enable), everything at once, or a seed's AddUser again."""
    style = draw(st.sampled_from(["classic", "classic", "sdk", "sdk", "full", "seed"]))
    if style == "seed":
        ext, data = draw(st.sampled_from(SEED_ADD_USERS))
        return replace(draft_of("AddUser", data), ext=ext)
    login_raw, login = draw(NEW_LOGINS)
    cur_raw, currency = draw(OPT_CURRENCIES)
    if style == "sdk":
        (login_raw, login), (cur_raw, currency) = (MISSING, None), (MISSING, None)
    name = draw(NAMES)
    group_raw, group = draw(GROUPS)
    data = {"login": login_raw, "name": name, "currency": cur_raw, "group": group_raw}
    fields = {"login": login, "name": name, "currency": currency, "group": group or "default", "password": None,
              "leverage": 100, "email": "", "enable": True}
    if style != "classic":
        if draw(st.integers(0, 3)) == 0:  # a password costs a slow hash (about 50 ms): not too often
            data["password"] = fields["password"] = draw(NEW_PASSWORDS)
        elif draw(st.integers(0, 3)) == 0:
            data["password"] = None
        for name_, values in (("leverage", LEVERAGES), ("email", EMAILS),
                              ("enable", st.sampled_from([True, False, False]))):
            if draw(st.booleans()):
                data[name_] = fields[name_] = draw(values)
    return Draft(data, fields)


def _ref_draft(name: str, values: st.SearchStrategy) -> st.SearchStrategy[Draft]:
    return values.map(lambda v: Draft({name: v}, {name: v}))


@st.composite
def _get_trades_draft(draw: st.DrawFn) -> Draft:
    login = draw(logins)
    from_raw, start = draw(OPT_TIMES)
    to_raw, end = draw(OPT_TIMES)
    return Draft({"login": login, "from": from_raw, "to": to_raw}, {"login": login, "from": start, "to": end})


@st.composite
def _get_users_draft(draw: st.DrawFn) -> Draft:
    group_raw, group = draw(_opt(GROUP_NAMES))
    start = draw(st.sampled_from([MISSING, MISSING, 0, 1, 999, 1000, 1001, 1003, 1004, 1005, 1006, MAX_ID, None]))
    if start is None:
        start = draw(st.integers(0, MAX_ID))
    limit = draw(st.sampled_from([MISSING, 1, 2, 3, 4, 5, 1000, 1001, 10**30, None]))
    if limit is None:
        limit = draw(st.integers(1, 10**6))
    return Draft({"group": group_raw, "from_login": start, "limit": limit},
                 {"group": group, "from_login": 0 if start is MISSING else start,
                  "limit": MAX_USERS if limit is MISSING else limit})


@st.composite
def _channels_draft(draw: st.DrawFn) -> tuple[dict, dict]:
    """``chanels`` (the platform's spelling) and/or ``channels``: lists of names, empty, null or left out."""
    data: dict = {}
    fields: dict = {"chanels": None, "channels": None}
    keys = draw(st.sampled_from([("chanels",)] * 4 + [("channels",), ("chanels", "channels"), ()]))
    for key in keys:
        kind = draw(st.sampled_from(["list", "list", "list", "empty", "null"]))
        if kind == "null":
            data[key] = None
        elif kind == "empty":
            data[key], fields[key] = [], ()
        else:
            names = draw(st.lists(CHANNEL_NAMES, min_size=1, max_size=3))
            if TRADE_EVENT not in names and draw(st.booleans()):
                names.insert(draw(st.integers(0, len(names))), TRADE_EVENT)
            data[key], fields[key] = names, tuple(names)
    return data, fields


@st.composite
def _subscribe_draft(draw: st.DrawFn) -> Draft:
    data, fields = draw(_channels_draft())
    seq_raw, from_seq = draw(FROM_SEQS)
    data["from_seq"] = seq_raw
    return Draft(data, {**fields, "from_seq": from_seq})


@st.composite
def _unsubscribe_draft(draw: st.DrawFn) -> Draft:
    data, fields = draw(_channels_draft())
    if draw(st.integers(0, 5)) == 0:  # a from_seq is read and has no effect
        data["from_seq"] = draw(FROM_SEQS)[0]
    return Draft(data, fields)


def _empty_draft() -> st.SearchStrategy[Draft]:
    return st.just(Draft({}, {}))


DRAFTS: dict[str, st.SearchStrategy[Draft]] = {name: _finance_draft(name) for name in FINANCE + SYNC}
DRAFTS.update({
    "Login": _login_draft(), "AddUser": _add_user_draft(), "GetUser": _ref_draft("login", logins),
    "GetUsers": _get_users_draft(), "OpenGameSession": _ref_draft("login", logins),
    "GetTrade": _ref_draft("order", orders), "GetTrades": _get_trades_draft(), "Subscribe": _subscribe_draft(),
    "Unsubscribe": _unsubscribe_draft(), "Ping": _empty_draft(),
})


def draft_of(command: str, data: dict) -> Draft:
    """The normalised fields of concrete, valid ``data`` (amounts as int or Decimal units)."""
    op = base_command(command)
    if op in ("DeleteBalance", "DeleteCredit", "GetTrade"):
        return Draft(data, {"order": data["order"]})
    if op in FINANCE:
        return Draft(data, {"login": data["login"], "amount": int(Decimal(data["amount"]) * U),
                            "comment": data.get("comment", "Finance"), "order": data.get("order"),
                            "open_time": data.get("open_time"), "close_time": data.get("close_time")})
    if op == "AddUser":
        return Draft(data, {"login": data.get("login"), "name": data["name"], "currency": data.get("currency"),
                            "group": data.get("group", "default"), "password": data.get("password"),
                            "leverage": data.get("leverage", 100), "email": data.get("email", ""),
                            "enable": data.get("enable", True)})
    if op in ("Subscribe", "Unsubscribe"):
        fields = {k: None if data.get(k) is None else tuple(data[k]) for k in ("chanels", "channels")}
        return Draft(data, {**fields, "from_seq": data.get("from_seq")} if op == "Subscribe" else fields)
    if op == "GetTrades":
        return Draft(data, {"login": data["login"], "from": data.get("from"), "to": data.get("to")})
    if op == "GetUsers":
        return Draft(data, {"group": data.get("group"), "from_login": data.get("from_login", 0),
                            "limit": data.get("limit", MAX_USERS)})
    return Draft(data, dict(data))


# The commands whose data may be empty (or missing, or null), with what that means.
EMPTY_FIELDS = {
    "Ping": {}, "Unsubscribe": {"chanels": None, "channels": None},
    "Subscribe": {"chanels": None, "channels": None, "from_seq": None},
    "GetUsers": {"group": None, "from_login": 0, "limit": MAX_USERS},
}


def _not_null(s: st.SearchStrategy) -> st.SearchStrategy:
    """Invalid values without null (where null is a valid "absent", or where the contract does not say)."""
    return s.filter(lambda v: v[0] is not None)


invalid_leverage = st.one_of(
    _data(st.sampled_from([0, -1, 1_000_001, 10**7, "100", Lit("1e2")])), _data(st.integers(max_value=0)),
    _data(st.integers(1_000_001, 10**30)), fractions, wrong_scalars, huge_ints, bad_literals,
)
# (1 and 0 are taken for true and false, as the PHP SDK's example sends them)
invalid_enable = st.one_of(
    _data(st.sampled_from([2, -1, "true", "false", "1", "yes", [True], {}, Lit("1.0")])),
    wrong_scalars.filter(lambda v: not isinstance(v[0], bool) and v[0] not in (0, 1)), bad_literals,
)
invalid_from_login = st.one_of(
    _data(st.integers(max_value=-1)), _data(st.integers(MAX_ID + 1, 10**30)),
    _data(st.sampled_from(["0", "1000", True, False])), fractions, wrong_scalars, huge_ints, bad_literals,
)
# No upper bound (a larger limit is capped at 1,000): only an integer below 1 or not an integer is refused.
invalid_limit = st.one_of(
    _data(st.integers(max_value=0)), _data(st.sampled_from(["10", True, False, Lit("-" + _digits(5000))])),
    fractions, wrong_scalars, bad_literals,
)


@cache
def _field_spec(command: str) -> dict[str, tuple[bool, st.SearchStrategy]]:
    """name -> (required, invalid values) of a command's data fields."""
    op = base_command(command)
    if op in ("DeleteBalance", "DeleteCredit", "GetTrade"):
        return {"order": (True, invalid_id(True))}
    if op in FINANCE:
        return {"login": (True, invalid_id(True)), "amount": (True, invalid_amount),
                "comment": (op.startswith("Credit"), invalid_text(255)), "order": (False, invalid_id(False)),
                "open_time": (False, invalid_time()), "close_time": (False, invalid_time())}
    if op == "Login":
        return {"login": (True, invalid_id(True)), "password": (True, invalid_text(1024))}
    if op == "AddUser":
        return {"login": (False, invalid_id(False)), "name": (True, invalid_text(128, min_size=1)),
                "currency": (False, _not_null(invalid_currency)), "group": (False, invalid_text(64, min_size=1)),
                "password": (False, _not_null(invalid_text(1024, min_size=1))), "leverage": (False, invalid_leverage),
                "email": (False, _not_null(invalid_text(254))), "enable": (False, invalid_enable)}
    if op in ("GetUser", "OpenGameSession"):
        return {"login": (True, invalid_id(True))}
    if op == "GetTrades":
        return {"login": (True, invalid_id(True)), "from": (False, invalid_time()), "to": (False, invalid_time())}
    if op == "GetUsers":
        return {"group": (False, _not_null(invalid_text(64, min_size=1))), "from_login": (False, invalid_from_login),
                "limit": (False, invalid_limit)}
    return {}


# (data, level, the field the refusal names) of a Subscribe or Unsubscribe: a channel list that is not a list
# of strings, or a from_seq that is not a sequence number.
invalid_subscribe = st.one_of(
    st.sampled_from([({"chanels": "trade:event"}, "chanels"), ({"chanels": [1]}, "chanels"),
                     ({"chanels": [None]}, "chanels"), ({"chanels": [["trade:event"]]}, "chanels"),
                     ({"chanels": {"trade:event": 1}}, "chanels"), ({"chanels": True}, "chanels"),
                     ({"channels": "EURUSD"}, "channels"), ({"chanels": ["trade:event"], "channels": [2]}, "channels"),
                     ({"chanels": 0}, "chanels"), ({"channels": [Lit("1.5")]}, "channels"),
                     ({"chanels": ["EURUSD", False]}, "chanels")])
    .map(lambda dw: (dw[0], "data", dw[1])),
    st.tuples(st.sampled_from(["chanels", "channels"]),
              st.one_of(_data(st.integers(max_value=-1)), _data(st.integers(min_value=MAX_ID + 1, max_value=10**25)),
                        fractions, wrong_scalars, bad_literals, huge_ints))
    .map(lambda kv: ({kv[0]: ["trade:event"], "from_seq": kv[1][0]}, kv[1][1], "from_seq")),
)

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


# ---------------------------------------------------------------------------------------------- manager cases

def compose(command: Any, echo: str | None, tok: Tok, level: str | None, call: Call | None,
            ambiguous: bool = False, where: tuple = ()) -> Expect:
    """The answer of a request with a valid envelope, following the server's order of checks: JSON, Login,
    unknown command, token (401), session type (403), data (400, naming ``where``), then the command itself.
    (A line that is not JSON, or holds a NaN or a lone surrogate, is answered before any of these: level
    "json" leaves its answer to protocol_expect.)"""
    if level == "json":
        return Expect([Fixed(400, "INVALID_JSON", None)])
    alts: list = []
    if command == "Login":
        main = Fixed(400, "INVALID_DATA", echo, where) if level else Oracle(call, echo)
    elif command not in COMMANDS:
        main = Fixed(404, "UNKNOWN_COMMAND", echo)
    elif tok.error:
        main = Fixed(401, tok.error, echo)
    elif tok.session not in ALLOWED[command]:
        main = Fixed(403, "FORBIDDEN", echo)
    elif level:
        main = Fixed(400, "INVALID_DATA", echo, where)
    else:
        main = Oracle(call, echo)
        if ambiguous:
            alts.append(Fixed(400, "INVALID_DATA", echo))
    return Expect(alts + [main])


def make_call(command: str, draft: Draft, tok: Tok, ext: str | None) -> Call:
    return Call(command, tuple(sorted(draft.fields.items())), tok.login, tok.session, ext)


def encode_line(req: Req, style: tuple[bool, bool]) -> bytes:
    return enc(req.obj(), ascii_only=style[0], compact=style[1]).encode()


styles = st.tuples(st.booleans(), st.booleans())
ends = st.sampled_from([b"\r\n", b"\n"])


CUT_COUNTS = st.sampled_from([0, 0, 0, 1, 2, 3])


def _cuts(size: int) -> st.SearchStrategy[tuple]:
    """Where to split ``size`` bytes into separate writes (mostly one write)."""
    if size < 2:
        return st.just(())
    return st.lists(st.integers(1, size - 1), max_size=3).map(lambda xs: tuple(sorted(set(xs))))


EXTRA_DATA = st.dictionaries(text(max_size=8).filter(lambda k: k not in FIELD_NAMES), json_values, min_size=1,
                             max_size=3)
EXTRA_TOP = st.dictionaries(text(max_size=8).filter(lambda k: k not in ("command", "extID", "data", "__token")),
                            json_values, min_size=1, max_size=2)
# Commands drawn more often than the others: the ones whose answer depends on what came before.
MORE_OFTEN = ["Subscribe", "Subscribe", "Subscribe", "Unsubscribe", "Unsubscribe", "AddUser", "AddUser", "GetUsers",
              "GetUsers"]
KEY_ORDERS = st.permutations(["command", "extID", "data", "__token"])
FINANCE_OR_GOOD = st.booleans()


@st.composite
def valid_request(draw: st.DrawFn, command: str | None = None, tok: Tok | None = None
                  ) -> tuple[Req, Call, Draft, tuple, Tok]:
    command = command or draw(st.sampled_from(COMMANDS + MORE_OFTEN))
    tok = tok or draw(finance_tokens if command in FINANCE + SYNC and draw(st.booleans()) else good_tokens)
    ext_raw, ext = draw(ext_ids)
    draft = draw(DRAFTS[command])
    if draft.ext is not None and draw(st.booleans()):
        ext_raw = ext = draft.ext
    data: Any = dict(draft.data)
    if command in EMPTY_FIELDS and (command == "Ping" or draw(st.integers(0, 4)) == 0):
        data = draw(st.sampled_from([MISSING, None, {}]))  # the same as {}
        draft = Draft({}, EMPTY_FIELDS[command])
    if draw(st.integers(0, 9)) == 0 and isinstance(data, dict):  # unknown fields are ignored
        data.update(draw(EXTRA_DATA))
    order = tuple(draw(KEY_ORDERS))
    extra = {}
    if draw(st.integers(0, 9)) == 0:
        extra = draw(EXTRA_TOP)
    req = Req(command, ext_raw, data, tok.raw, extra, order)
    return req, make_call(command, draft, tok, ext), draft, (ext_raw, ext), tok


def _case(req: Req, expect: Expect, label: str, draw: st.DrawFn, call: Call | None = None) -> Case:
    style = draw(styles)
    line = encode_line(req, style)
    if draw(st.integers(0, 7)) == 0:
        line = draw(st.sampled_from([b" ", b"\t", b"\r", b"  "])) + line + draw(st.sampled_from([b"", b" ", b"\t"]))
    end = draw(ends)
    return Case(line, end, expect, draw(_cuts(len(line) + len(end))), label, req, call, style)


@st.composite
def case_valid(draw: st.DrawFn) -> Case:
    req, call, draft, (_, ext), tok = draw(valid_request())
    return _case(req, compose(req.command, ext, tok, None, call, draft.ambiguous), "valid", draw, call)


@st.composite
def case_bad_token(draw: st.DrawFn) -> Case:
    tok = draw(bad_tokens)
    req, call, draft, (_, ext), _ = draw(valid_request(tok=tok))
    return _case(req, compose(req.command, ext, tok, None, call, draft.ambiguous), f"token:{tok.label}", draw, call)


@st.composite
def case_bad_field(draw: st.DrawFn) -> Case:
    """One field of the data replaced by a value of a wrong type or out of range, or left out."""
    command = draw(st.sampled_from([c for c in COMMANDS if c != "Ping"]))
    req, call, _, (_, ext), tok = draw(valid_request(command=command))
    data = dict(req.data) if isinstance(req.data, dict) else {}
    if command in ("Subscribe", "Unsubscribe"):
        bad, level, name = draw(invalid_subscribe)
        data = dict(bad)
        label = f"field:{command.lower()}"
    else:
        spec = _field_spec(command)
        name = draw(st.sampled_from(sorted(spec)))
        required, invalid = spec[name]
        if required and draw(st.integers(0, 4)) == 0:
            data[name], level, label = MISSING, "data", f"missing:{name}"
        else:
            data[name], level = draw(invalid)
            label = f"field:{name}:{level}"
    req = replace(req, data=data)
    return _case(req, compose(command, ext, tok, level, call, where=(name,)), label, draw)


@st.composite
def case_bad_envelope(draw: st.DrawFn) -> Case:
    """command, extID or data of a wrong type, or missing."""
    req, _, _, (_, ext), tok = draw(valid_request())
    what = draw(st.sampled_from(["command", "command-missing", "ext", "data", "data-empty"]))
    if what == "command":
        req = replace(req, command=draw(st.one_of(st.integers(-2, 2), st.none(), st.booleans(), st.just(""),
                                                  st.lists(st.just(req.command), max_size=2),
                                                  st.just({"name": req.command}), st.just(Lit("1.5")))))
        return _case(req, Expect([Fixed(400, "INVALID_REQUEST", ext)]), "envelope:command", draw)
    if what == "command-missing":
        req = replace(req, command=MISSING)
        return _case(req, Expect([Fixed(400, "INVALID_REQUEST", ext)]), "envelope:command", draw)
    if what == "ext":
        bad = draw(invalid_ext_ids)
        req = replace(req, ext_id=bad)
        # a string extID is echoed even when refused, so that the client can match the error
        echo = bad if type(bad) is str else None  # (Lit, a raw JSON literal, is a str subclass)
        return _case(req, Expect([Fixed(400, "INVALID_REQUEST", echo)]), "envelope:extID", draw)
    if what == "data":
        req = replace(req, data=draw(st.one_of(st.lists(json_values, max_size=3), text(max_size=10),
                                               st.integers(-5, 5), st.booleans(), st.just(Lit("1.5")))))
        return _case(req, Expect([Fixed(400, "INVALID_DATA", ext, ("data",))]), "envelope:data", draw)
    # no data, or null data: the same as {}
    req = replace(req, data=draw(st.sampled_from([MISSING, None, {}])))
    command = req.command
    level = None if command in EMPTY_FIELDS else "data"
    empty = make_call(command, Draft({}, EMPTY_FIELDS.get(command, {})), tok, ext)
    return _case(req, compose(command, ext, tok, level, empty), "envelope:no-data", draw, empty)


NEAR_MISSES = ["ping", "PING", "Ping ", " Ping", "PingSync", "LoginSync", "GetUserSync", "CreditInSyncSync",
               "Creditin", "creditIn", "Balance", "Sync", "__init__", "handle", "finance", "login", "commands",
               "Ping\u0000", "Ping\n", "AddUserSync", "SubscribeSync", "Delete", "DeleteOrder", "Ping\u01c3"]


@st.composite
def case_unknown_command(draw: st.DrawFn) -> Case:
    name = draw(st.one_of(st.sampled_from(NEAR_MISSES), text(min_size=1, max_size=60))
                .filter(lambda n: n not in COMMANDS))
    tok = draw(st.one_of(good_tokens, bad_tokens))
    req, _, _, (_, ext), _ = draw(valid_request(tok=tok))
    req = replace(req, command=name)
    return _case(req, Expect([Fixed(404, "UNKNOWN_COMMAND", ext)]), "unknown-command", draw)


@st.composite
def case_truncated(draw: st.DrawFn) -> Case:
    req, *_ = draw(valid_request())
    full = encode_line(req, draw(styles))
    cut = draw(st.integers(1, len(full) - 1))  # the closing brace is always cut off
    end = draw(ends)
    line = full[:cut]
    return Case(line, end, Expect([Fixed(400, "INVALID_JSON", None)]), draw(_cuts(len(line) + len(end))),
                "truncated")


BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80",
            b"\xf4\x90\x80\x80", b"\xc3", b"\xe9", b"\xff\xfe", b"\xef\xbb"]


@st.composite
def case_non_utf8(draw: st.DrawFn) -> Case:
    req, *_ = draw(valid_request())
    full = encode_line(req, (draw(st.booleans()), True))
    at = draw(st.integers(0, len(full)))
    line = full[:at] + draw(st.sampled_from(BAD_UTF8)) + full[at:]
    end = draw(ends)
    return Case(line, end, Expect([Fixed(400, "INVALID_JSON", None)]), draw(_cuts(len(line) + len(end))),
                "non-utf8")


def _nest(kind: str, depth: int) -> Lit:
    if kind == "list":
        return Lit("[" * depth + "]" * depth)
    return Lit('{"a":' * depth + "1" + "}" * depth)


@st.composite
def case_deep(draw: st.DrawFn) -> Case:
    """Deep nesting: shallow enough to parse, or far deeper than the parser's recursion limit."""
    kind = draw(st.sampled_from(["list", "dict"]))
    deep = draw(st.booleans())
    depth = draw(st.integers(5000, 9000) if deep else st.integers(1, 60))
    nest = _nest(kind, depth)
    where = draw(st.sampled_from(["extra", "data", "field", "line", "ext"]))
    command = draw(st.sampled_from([c for c in COMMANDS if c not in EMPTY_FIELDS]))
    req, call, draft, (_, ext), tok = draw(valid_request(command=command))
    if where == "extra":
        req = replace(req, data={**req.data, "zz": nest})
        expect = compose(command, ext, tok, None, call, draft.ambiguous)
    elif where == "data":
        req = replace(req, data=nest)
        expect = Expect([Fixed(400, "INVALID_DATA", ext, ("data",))])
        if kind == "dict":  # {"a": {...}} is an object: its fields are missing
            expect = compose(command, ext, tok, "data", call)
    elif where == "field":
        name = draw(st.sampled_from(sorted(_field_spec(command))))
        req = replace(req, data={**req.data, name: nest})
        expect = compose(command, ext, tok, "data", call, where=(name,))
    elif where == "ext":
        req = replace(req, ext_id=nest)
        expect = Expect([Fixed(400, "INVALID_REQUEST", None)])
    else:
        req = None
        expect = Expect([Fixed(400, "INVALID_REQUEST", None)])
    # (too deep to parse: protocol_expect answers INVALID_JSON with the extID when it can be read)
    if req is None:
        line = str(nest).encode()
        end = draw(ends)
        return Case(line, end, expect, draw(_cuts(len(line) + len(end))), f"deep:{where}:{deep}")
    return _case(req, expect, f"deep:{where}:{deep}", draw)


def _classify(raw: bytes) -> Expect | None:
    """What the server must answer to an arbitrary line (None: the bytes happen to make a request)."""
    if not raw.strip():
        return Expect([Silent()])
    alts, _ = protocol_expect(raw)
    return None if alts is None else Expect(alts)


@st.composite
def case_binary(draw: st.DrawFn) -> Case:
    raw = draw(st.one_of(st.binary(max_size=120), st.sampled_from([b"", b" ", b"\t", b"\r", b" \t ", b"{", b"}",
                                                                 b"[", b"\"", b"\x00", b"null", b"{}"]))
               .map(lambda b: b.replace(b"\n", b"")))
    expect = _classify(raw)
    if expect is None:  # a request: make it an array
        raw, expect = b"[" + raw + b"]", Expect([Fixed(400, "INVALID_REQUEST", None)])
    end = draw(ends)
    return Case(raw, end, expect, draw(_cuts(len(raw) + len(end))), "binary")


@st.composite
def case_non_object(draw: st.DrawFn) -> Case:
    value = draw(st.one_of(st.lists(json_values, max_size=4), text(max_size=20), st.integers(-(2**80), 2**80),
                           st.booleans(), st.none(), st.sampled_from([Lit("1.5"), Lit("-0"), Lit("1e400")]),
                           st.just([{"command": "Ping", "__token": ADMIN.raw}])))
    line = enc(value, ascii_only=draw(st.booleans())).encode()
    end = draw(ends)
    return Case(line, end, Expect([Fixed(400, "INVALID_REQUEST", None)]), draw(_cuts(len(line) + len(end))),
                "non-object")


def _padded_ping(size: int, ext: str = "edge") -> bytes:
    head = b'{"command":"Ping","extID":"' + ext.encode() + b'","__token":"' + ADMIN.raw.encode() + b'","pad":"'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


PING_CALL = Call("Ping", (), ADMIN.login, ADMIN.session, "edge")


@st.composite
def case_oversized(draw: st.DrawFn) -> Case:
    """A line over 64 KiB: 400 LINE_TOO_LONG, then the connection is closed."""
    size = draw(st.one_of(st.integers(MAX_LINE + 2, MAX_LINE + 100), st.integers(MAX_LINE + 2, 5 * MAX_LINE)))
    filler = draw(st.sampled_from(["ping", "json", "binary"]))
    if filler == "ping":
        line = _padded_ping(size)
    elif filler == "json":
        line = b'{"command":"CreditIn","data":{"comment":"' + b"y" * size + b'"}}'
    else:
        line = bytes(draw(st.binary(min_size=1, max_size=64)).replace(b"\n", b"")) or b"z"
        line = (line * (size // len(line) + 1))[:size]
    end = draw(st.sampled_from([b"\n", b"\r\n", b""]))
    return Case(line, end, Expect([Closed()]), draw(_cuts(len(line) + len(end))), f"oversized:{filler}")


@st.composite
def case_boundary(draw: st.DrawFn) -> Case:
    """A Ping padded to a line length around 64 KiB: up to 65,536 bytes it is served."""
    size = draw(st.integers(MAX_LINE - 3, MAX_LINE + 3))
    end = draw(ends)
    line = _padded_ping(size)
    if size <= MAX_LINE:
        expect = Expect([Oracle(PING_CALL, "edge")])
    else:
        expect = Expect([Closed()])
    return Case(line, end, expect, draw(_cuts(len(line) + len(end))), f"boundary:{size - MAX_LINE}")


@st.composite
def case_blank(draw: st.DrawFn) -> Case:
    line = draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"  \t  "]))
    return Case(line, draw(ends), Expect([Silent()]), (), "blank")


def _data_of(req: Req) -> dict:
    return dict(req.data) if isinstance(req.data, dict) else {}


LONE_SURROGATES = ["\ud800", "a\udfffb", "\udc00'", "O'Brien \ud83d", "\ud800\ud800"]


@st.composite
def case_non_finite(draw: st.DrawFn) -> Case:
    """NaN, Infinity or -Infinity somewhere in a request (in a field, an unknown field, deep in one, beside
    the envelope, as the token, the data, the command or the extID): protocol_expect decides the answer
    (400 INVALID_DATA naming where, with the extID, unless the envelope is wrong first)."""
    req, *_ = draw(valid_request())
    value: Any = Lit(draw(st.sampled_from(NON_FINITE)))
    where = draw(st.sampled_from(["field", "field", "field", "extra", "nested", "top", "token", "data", "command",
                                  "ext"]))
    data = _data_of(req)
    if where == "field":
        names = sorted(_field_spec(req.command)) or ["amount"]
        req = replace(req, data={**data, draw(st.sampled_from(names)): value})
    elif where == "extra":
        req = replace(req, data={**data, "zz": value})
    elif where == "nested":
        req = replace(req, data={**data, "zz": [1, {"x": value}], "yy": {"deep": [[value]]}})
    elif where == "top":
        req = replace(req, extra={"meta": value})
    elif where == "token":
        req = replace(req, token=value)
    elif where == "data":
        req = replace(req, data=value)
    elif where == "command":
        req = replace(req, command=value)
    else:
        req = replace(req, ext_id=value)
    return _case(req, Expect([]), f"non-finite:{where}", draw)


@st.composite
def case_surrogate(draw: st.DrawFn) -> Case:
    """A lone surrogate in a string of a request: a text field, an unknown field or its key, the token, the
    command, a channel name, the extID."""
    req, *_ = draw(valid_request())
    bad = draw(st.sampled_from(LONE_SURROGATES))
    where = draw(st.sampled_from(["field", "field", "extra", "key", "top-key", "token", "command", "ext", "list"]))
    data = _data_of(req)
    if where == "field":
        texts = [n for n in ("comment", "name", "password", "group", "email") if n in _field_spec(req.command)]
        req = replace(req, data={**data, draw(st.sampled_from(texts or ["comment"])): bad})
    elif where == "extra":
        req = replace(req, data={**data, "note": {"text": bad}})
    elif where == "key":
        req = replace(req, data={**data, bad: 1})
    elif where == "top-key":
        req = replace(req, extra={bad: "x"})
    elif where == "token":
        req = replace(req, token=bad)
    elif where == "command":
        req = replace(req, command=bad)
    elif where == "ext":
        req = replace(req, ext_id=bad)
    else:
        req = replace(req, data={**data, "chanels": [TRADE_EVENT, bad]})
    return _case(req, Expect([]), f"surrogate:{where}", draw)


@st.composite
def case_repeated_key(draw: st.DrawFn) -> Case:
    """A key given twice in one object (``"command":"Ping","command":"BalanceIn"``): INVALID_JSON, with the
    extID when the line names exactly one."""
    req, *_ = draw(valid_request())
    style = draw(styles)
    where = draw(st.sampled_from(["top", "top", "data", "nested"]))
    obj = {k: v for k, v in req.obj().items() if v is not MISSING}
    data = obj.get("data")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if v is not MISSING}
    if where == "nested" or (where == "data" and not (isinstance(data, dict) and data)):
        obj["data"] = {**(data if isinstance(data, dict) else {}), "zz": Pairs([("a", 1), ("a", 1)])}
    elif where == "data":
        key = draw(st.sampled_from(sorted(data)))
        again = draw(st.one_of(st.just(data[key]), json_values))
        pairs = list(data.items())
        pairs.insert(draw(st.integers(0, len(pairs))), (key, again))
        obj["data"] = Pairs(pairs)
    pairs = list(obj.items())
    if where == "top":
        key = draw(st.sampled_from(sorted(obj)))
        again = draw(st.one_of(st.just(obj[key]), st.sampled_from(["Ping", "BalanceIn", "x-2"]), json_values))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, again))
    line = enc(Pairs(pairs), ascii_only=style[0], compact=style[1]).encode()
    end = draw(ends)
    return Case(line, end, Expect([]), draw(_cuts(len(line) + len(end))), f"repeated-key:{where}")


# Frequencies: valid requests first (hypothesis shrinks towards the first alternatives).
CASE_KINDS = ([case_valid] * 10 + [case_bad_token] * 3 + [case_bad_field] * 7 + [case_bad_envelope] * 2
              + [case_unknown_command] * 2 + [case_truncated] * 2 + [case_non_utf8] * 2 + [case_deep]
              + [case_binary] + [case_non_object] + [case_oversized] + [case_boundary] + [case_blank]
              + [case_non_finite] * 2 + [case_surrogate] * 2 + [case_repeated_key] * 2)


def lone_surrogate(data: bytes) -> bool:
    """Does this JSON text hold a string with a lone surrogate (an escape like \\ud800 alone)? Such text is
    not Unicode (the wallet refuses it as INVALID_PARAMETER)."""
    if b"\\u" not in data:
        return False
    try:
        stack = [json.loads(data.decode())]
    except (ValueError, RecursionError):
        return False
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# ---------------------------------------------------------------------------------------------- the line itself

_EXT_ID_TEXT = re.compile(rb'"extID"\s*:\s*("(?:[^"\\]|\\.)*")')


def _good_ext_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_EXT_ID and not _has_surrogate(value)


def readable_ext_id(line: bytes) -> str | None:
    """The extID a line that cannot be decoded is answered with: the one ``"extID": "..."`` the raw line
    holds, when it holds exactly one and it is a good extID; else None."""
    found = _EXT_ID_TEXT.findall(line)
    if len(found) != 1:
        return None
    try:
        value = json.loads(found[0])
    except ValueError:
        return None
    return value if _good_ext_id(value) else None


@dataclass(frozen=True)
class _NonFinite:
    name: str


class _RepeatedKey(Exception):
    pass


def _no_repeats(pairs: list) -> dict:
    if len({k for k, _ in pairs}) != len(pairs):
        raise _RepeatedKey()
    return dict(pairs)


def _not_carried(obj: Any) -> list[str]:
    """The paths (``data.comment``, ``data.zz[1]``, ``__token``) of every value JSON cannot carry back: a NaN
    or an infinity, a string with a lone surrogate; for a key with a lone surrogate, its object's path (whose
    members are then not looked into)."""
    paths: list[str] = []
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _NonFinite) or (isinstance(item, str) and _has_surrogate(item)):
            paths.append(path)
        elif isinstance(item, dict):
            if any(_has_surrogate(k) for k in item):
                paths.append(path)
            else:
                stack.extend((f"{path}.{k}" if path else k, v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return paths


def protocol_expect(line: bytes) -> tuple[list | None, bool]:
    """What the contract answers to a line before any command looks at it, in this order:

    * not UTF-8, not JSON, nested too deep to parse, or a key repeated in one object: 400 INVALID_JSON, with
      the extID the raw line names (:func:`readable_ext_id`);
    * not an object: 400 INVALID_REQUEST (no extID);
    * an extID that is not a string of 1 to 256 characters: 400 INVALID_REQUEST, echoing it when it is a
      string that can be written back; a command that is not a non-empty string: INVALID_REQUEST + extID;
    * a NaN or an infinity anywhere, or a lone surrogate in any string: 400 INVALID_DATA naming where,
      with the extID.

    Returns (the acceptable answers, or None when the command decides; whether the line holds a number beyond
    what a decimal holds, which the server may also refuse as INVALID_JSON). An integer of more digits than
    CPython parses is read as out of range (the command's validation refuses it where it must)."""
    beyond = False

    def number(text: str) -> Decimal:
        nonlocal beyond
        try:
            return Decimal(text)
        except ArithmeticError:
            beyond = True
            return Decimal(0)

    def integer(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            return -(10**40) if text.startswith("-") else 10**40

    try:
        obj = json.loads(line.decode("utf-8"), parse_float=number, parse_int=integer, parse_constant=_NonFinite,
                         object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError, _RepeatedKey):
        return [Fixed(400, "INVALID_JSON", readable_ext_id(line))], False
    if not isinstance(obj, dict):
        return [Fixed(400, "INVALID_REQUEST", None)], beyond
    ext = obj.get("extID")
    if ext is not None and not _good_ext_id(ext):
        echo = ext if isinstance(ext, str) and not _has_surrogate(ext) else None
        return [Fixed(400, "INVALID_REQUEST", echo)], beyond
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        return [Fixed(400, "INVALID_REQUEST", ext)], beyond
    where = _not_carried(obj)
    if where:
        return [Fixed(400, "INVALID_DATA", ext, tuple(where))], beyond
    return None, beyond


@st.composite
def manager_case(draw: st.DrawFn) -> Case:
    return settle(draw(draw(st.sampled_from(CASE_KINDS))()))


@st.composite
def case_subscribe(draw: st.DrawFn) -> Case:
    """A Subscribe as the admin (an example may start with one, so that the events of what follows are
    checked)."""
    req, call, draft, (_, ext), tok = draw(valid_request(command="Subscribe", tok=ADMIN))
    names = draw(st.sampled_from([[TRADE_EVENT], [TRADE_EVENT], [TRADE_EVENT, "EURUSD"], ["EURUSD", TRADE_EVENT]]))
    from_raw, from_seq = draw(_opt(st.integers(0, 16)))  # the seeds make events 1..16
    draft = Draft({"chanels": names, "from_seq": from_raw},
                  {"chanels": tuple(names), "channels": None, "from_seq": from_seq})
    req, call = replace(req, data=draft.data), make_call("Subscribe", draft, tok, ext)
    return _case(req, compose(req.command, ext, tok, None, call), "valid", draw, call)


def settle(case: Case) -> Case:
    """``case`` with the answer protocol_expect gives its line, when it gives one."""
    if case.expect.has(Closed) or case.expect.has(Silent):
        return case
    alts, beyond = protocol_expect(case.line)
    if alts is None:
        if not case.expect.alts or case.expect.alts == [Fixed(400, "INVALID_JSON", None)]:
            raise AssertionError(f"{case.label}: a line the generator made malformed parses: {case.line[:300]!r}")
    else:
        case.expect = Expect(alts)
        case.label += f">{alts[0].code.lower()}"
    if beyond:
        case.expect = Expect([Fixed(400, "INVALID_JSON", readable_ext_id(case.line))] + case.expect.alts)
        case.label += ">beyond-decimal"
    return case


def scripted(command: str, data: Any = MISSING, ext: Any = MISSING, tok: Tok = ADMIN, level: str | None = None,
             where: tuple = (), style: tuple = (False, True)) -> Case:
    """One input written out (the explicit examples of tests/test_fuzz.py): ``data`` valid unless ``level``
    says how it is not (then ``where`` is the field its refusal names)."""
    draft = draft_of(command, data if isinstance(data, dict) else {}) if level is None else Draft({}, {})
    call = make_call(command, draft, tok, ext if isinstance(ext, str) else None)
    req = Req(command, ext, data, tok.raw)
    expect = compose(command, call.ext_id, tok, level, call, where=where)
    line = encode_line(req, style)
    return settle(Case(line, b"\r\n", expect, (), "valid" if level is None else "scripted", req, call, style))


def flip_sync(case: Case) -> Case:
    """The same finance request in its other form (plain <-> …Sync), same extID: an idempotent replay."""
    req, call = case.req, case.call
    command = call.command[:-4] if call.command.endswith("Sync") else call.command + "Sync"
    new_call = replace(call, command=command)
    alts = [Oracle(new_call, a.echo) if isinstance(a, Oracle) else a for a in case.expect.alts]
    new_req = replace(req, command=command)
    return replace(case, line=encode_line(new_req, case.style), expect=Expect(alts), req=new_req, call=new_call,
                   cuts=(), label="retry:flip")


@st.composite
def manager_example(draw: st.DrawFn, max_size: int = 6) -> list[Case]:
    """A few inputs on one connection; some repeat an earlier finance request or AddUser (same extID), as a
    client retrying would."""
    cases = draw(st.lists(manager_case(), min_size=1, max_size=max_size))
    if draw(st.integers(0, 3)) == 0:
        cases.insert(0, settle(draw(case_subscribe())))
    out: list[Case] = []
    for case in cases:
        earlier = [c for c in out if c.label == "valid" and c.expect.has(Oracle)
                   and c.call.command in FINANCE + SYNC + ["AddUser"]]
        if earlier and draw(st.integers(0, 3)) == 0:
            again = draw(st.sampled_from(earlier))
            flip = again.call.command != "AddUser" and draw(st.booleans())
            out.append(flip_sync(again) if flip else replace(again, label="retry:same"))
        out.append(case)
    return out



# ---------------------------------------------------------------------------------------------- wallet

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
# cancels, retries, tombstones). The seed-* ids and the games g1..g4 are played by tests/test_fuzz.py
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


def _uuid_of(body: Any) -> Any:
    uuid = body.get("uuid", None) if isinstance(body, dict) else None
    return uuid if isinstance(uuid, str) else None


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
