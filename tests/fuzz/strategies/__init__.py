"""The fuzz suite's workload: hypothesis strategies of manager-protocol lines and game-wallet requests, each
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

One module per part of the workload, in the order each builds on the last: ``constants``, ``json_text``,
``tokens``, ``commands``, ``values``, ``drafts``, ``manager_cases``, ``malformed``, ``lines``,
``manager_examples``; ``wallet_calls``, ``wallet_cases``. This package's namespace holds the names the
oracles, the harness and the tests use (``from tests.fuzz import strategies as S``).
"""

from __future__ import annotations

from syncledger.server.auth import SESSION_USER
from tests.fuzz.strategies.commands import (ACCOUNT_PASSWORDS, DEFAULT_CURRENCY, DISABLED, FINANCE, MANAGERS,
                                            MAX_USERS, TRADE_EVENT, Call, Case, Closed, Expect, Fixed, Oracle, Silent,
                                            base_command)
from tests.fuzz.strategies.constants import MAX_ID, MAX_LINE, MAX_UNITS, SECRET, U, WALLET_TOKEN
from tests.fuzz.strategies.drafts import draft_of
from tests.fuzz.strategies.json_text import MISSING, Lit, enc, lone_surrogate
from tests.fuzz.strategies.malformed import _padded_ping
from tests.fuzz.strategies.manager_examples import manager_example, scripted, settle
from tests.fuzz.strategies.tokens import ADMIN, DEALER, MANAGER, Tok
from tests.fuzz.strategies.values import SEED_ADD_USERS
from tests.fuzz.strategies.wallet_calls import GOOD_AUTH, SIDS, WALLET_STATUSES, WalletCase, WalletReq
from tests.fuzz.strategies.wallet_cases import wallet_example

__all__ = [
    "ACCOUNT_PASSWORDS", "ADMIN", "base_command", "Call", "Case", "Closed", "DEALER", "DEFAULT_CURRENCY",
    "DISABLED", "draft_of", "enc", "Expect", "FINANCE", "Fixed", "GOOD_AUTH", "Lit", "lone_surrogate", "MANAGER",
    "manager_example", "MANAGERS", "MAX_ID", "MAX_LINE", "MAX_UNITS", "MAX_USERS", "MISSING", "Oracle",
    "_padded_ping", "scripted", "SECRET", "SEED_ADD_USERS", "SESSION_USER", "settle", "SIDS", "Silent", "Tok",
    "TRADE_EVENT", "U", "wallet_example", "WALLET_STATUSES", "WALLET_TOKEN", "WalletCase", "WalletReq",
]
