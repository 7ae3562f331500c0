"""The ``__token`` values of manager requests: good tokens of each session type, and every way a token
is missing, invalid or expired (with the 401 code it must get)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from hypothesis import strategies as st

from syncledger.server.auth import SESSION_ADMIN, SESSION_DEALER, SESSION_MANAGER, SESSION_USER, Tokens
from tests.fuzz.strategies.constants import SECRET
from tests.fuzz.strategies.json_text import MISSING, text


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
