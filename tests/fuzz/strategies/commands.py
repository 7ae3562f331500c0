"""The manager commands, who may send them, the seeded world's accounts and managers, and the
shapes of a manager input: the request, its :class:`Case` and the acceptable outcomes (:class:`Expect`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncledger.server.auth import SESSION_ADMIN, SESSION_DEALER, SESSION_MANAGER, SESSION_USER
from tests.fuzz.strategies.json_text import MISSING

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
# Logins and orders that exist in the seeded world of each example (see harness.manager.seed_manager_world): 1003 was
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
