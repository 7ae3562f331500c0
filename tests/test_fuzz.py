"""Fuzzing the manager TCP API and the game-wallet HTTP API (issue 5, item 2).

Each hypothesis example starts a fresh in-process server (in-memory ledger, ``threaded=False``: a couple of
milliseconds), seeds a small world (accounts, one added as the SDKs send AddUser and logging in with a
password, one disabled with orders; orders, refused keyed requests, managers, game sessions, wallet rounds)
and sends a handful of generated inputs (``tests/fuzz/strategies/``). For every input:

* it gets exactly one well-formed reply (manager: one ``\\r\\n``-terminated JSON object with ``status`` and,
  for errors, ``error`` + ``message``, in plain ASCII with no apostrophe (``\\uXXXX`` escapes), the
  ``extID`` echoed whenever it can be read, errors included: a NaN or a lone surrogate anywhere is
  INVALID_DATA naming where, a repeated key INVALID_JSON with the extID the raw line names; wallet: HTTP 200 with a
  known status string and the request's ``uuid``, ``"retransmission": true`` exactly when it answers a
  retried transaction.id), or the documented silence (blank line) or
  ``LINE_TOO_LONG`` + close; a Ping sent after it on the same connection is answered next, so there is no
  second reply and the connection is still usable;
* the answer is the one the contract gives: a fixed error for malformed input, or, for well-formed
  requests, what an independent model of the contract predicts from the ledger state before the input
  (accounts with their SDK fields and passwords, disabled accounts, orders, idempotency keys of finance
  requests and AddUser, each connection's channels, wallet rounds);
* the ledger is unchanged by every rejected input (every table's row count, every account's totals,
  every order, the event seq), and an accepted input changes exactly what its answer says;
  ``verify()`` passes after every input; events reach subscribers gap-free and once, each with its seq in
  its data too (and a …Sync answer is exactly that data);
* nothing is logged at ERROR, and at the end of the example a fresh connection still gets its Ping.

Run: ``python -m pytest tests/test_fuzz.py`` (CI size: 200 + 100 examples, about 18 s). Long run:
``SYNCLEDGER_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz.py -s`` (examples per fuzz
test; an example holds 1 to 12 inputs; the input counts are printed). Regression tests of the bugs the
fuzzer found are at the end of this file.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, example, given, settings

from syncledger.ledger import verify
from syncledger.server.app import Config, serve
from tests.fuzz import strategies as S
from tests.fuzz.strategies import SECRET

EXAMPLES = int(os.environ.get("SYNCLEDGER_FUZZ_EXAMPLES", "0") or 0)
READ_TIMEOUT = 10.0  # seconds for any one reply (the sync timeout is 5 s)
MANAGER_STATUSES = {200, 400, 401, 403, 404, 409, 429, 500, 503, 504}
BALANCE_CMDS, CREDIT_CMDS = (6, 8), (7, 9)
OPS = {"BalanceIn": (6, 1), "CreditIn": (7, 1), "BalanceOut": (8, -1), "CreditOut": (9, -1)}
MAX_TOTAL = 9 * 10**18  # largest balance or credit the ledger keeps (ledger/rules.py)
ACCEPT_STATE = {0: 10, 1: 11, 2: 12}
TS_CLOSED, TS_DELETED = 3, 6
COUNTS: Counter = Counter()  # inputs sent, by test


async def start_fuzz_server(nursery: trio.Nursery, **kw: Any) -> Any:
    """A fuzz server whose managers 1 (ADMIN), 2 (MANAGER) and 3 (DEALER) hold the strategies' tokens."""
    from syncledger.server.testing import add_test_manager
    srv = await nursery.start(serve, fuzz_config(**kw))
    for tok in (S.ADMIN, S.MANAGER, S.DEALER):
        add_test_manager(srv, tok.login, tok.session)
    return srv


def fuzz_config(**kw: Any) -> Config:
    """An in-memory ledger on the Trio thread, the real clock (tokens are minted before the server starts)."""
    return Config(**{"db": ":memory:", "threaded": False, "epoch": None, "tcp_port": 0, "ws_port": 0,
                     "wallet_port": 0, "admin_port": None, "secret": SECRET, "wallet_token": S.WALLET_TOKEN, **kw})


def fuzz_settings(default: int) -> settings:
    return settings(max_examples=EXAMPLES or default, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------------- helpers

class Failed(AssertionError):
    pass


def _no_constant(name: str) -> Any:
    raise Failed(f"reply holds the non-JSON literal {name}")


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Failed(f"reply repeats a key: {keys}")
    return dict(pairs)


def strict_json(raw: bytes) -> Any:
    """Parse a reply as strict JSON (UTF-8, no NaN, no duplicate keys, exact decimals)."""
    try:
        return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant,
                          object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Failed(f"reply is not JSON ({e}): {raw[:300]!r}") from None


def micro(value: Any, what: str = "amount") -> int:
    """A JSON money value (int or exact Decimal of at most 6 decimals) as micro-units."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise Failed(f"{what} is not a number: {value!r}")
    d = Decimal(value)
    if not d.is_finite() or (isinstance(value, Decimal) and value.as_tuple().exponent < -6):
        raise Failed(f"{what} has more than 6 decimals: {value!r}")
    return int(d.scaleb(6))


def cheap_hash(password: str) -> str:
    """A valid ``scrypt$n$r$p$salt$hash`` with tiny parameters, so that Login costs nothing in the fuzzer."""
    salt = b"fuzz-salt-16byte"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    return f"scrypt$2$1$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class ErrorLog(logging.Handler):
    """Collects records at ERROR and above from the server's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLog:
        logging.getLogger("syncledger").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("syncledger").removeHandler(self)

    def check(self) -> None:
        if self.records:
            r = self.records[0]
            raise Failed(f"the server logged an error: {r.getMessage()}\n{self.format(r)}")


# ---------------------------------------------------------------------------------------------- snapshots

@dataclass(frozen=True)
class Row:
    """The current version of a finance order, with its event's seq."""

    order: int
    version: int
    login: int
    cmd: int
    state: int
    amount: int
    comment: str
    open_time: int
    close_time: int
    balance: int
    credit: int
    seq: int


@dataclass(frozen=True)
class Account:
    name: str
    group: str
    currency: str
    created: int
    leverage: int
    email: str
    enable: bool
    password_hash: str | None
    balance: int
    credit: int


@dataclass
class Snap:
    counts: dict[str, int]
    seq: int
    accounts: dict[int, Account]
    orders: dict[int, Row]
    events: dict[int, tuple[int, bytes]]  # seq -> (type, record) as stored (the record without its seq)

    def event_data(self, seq: int) -> Any:
        """The trade record of an event, as GetTrade and GetTrades answer it (no seq)."""
        return strict_json(self.events[seq][1])

    def sent_data(self, seq: int) -> Any:
        """An event's data as sent (and answered to its …Sync request): the record with the event's seq."""
        return {**self.event_data(seq), "seq": seq}


def take_snapshot(srv: Any) -> Snap:
    db = srv.store.db
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    counts = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    accounts = {}
    for login, *fields in db.execute(
            'SELECT login, name, "group", currency, created, leverage, email, enable, password_hash FROM accounts'):
        row = db.execute("SELECT balance, credit FROM finance WHERE login = ? ORDER BY id DESC LIMIT 1",
                         (login,)).fetchone()
        fields[6] = bool(fields[6])
        accounts[login] = Account(*fields, *(row or (0, 0)))
    orders = {r[0]: Row(*r) for r in db.execute(
        "SELECT f.order_id, f.version, f.login, f.cmd, f.state, f.amount, f.comment, f.open_time, f.close_time, "
        "f.balance, f.credit, e.seq FROM finance f JOIN events e ON e.record_id = f.id "
        "WHERE f.id IN (SELECT MAX(id) FROM finance GROUP BY order_id)")}
    events = {seq: (type_, data.encode()) for seq, type_, data in db.execute("SELECT seq, type, data FROM events")}
    seq = max(events, default=0)
    if srv.store.seq != seq:
        raise Failed(f"store.seq is {srv.store.seq} but the last event is {seq}")
    return Snap(counts, seq, accounts, orders, events)


def assert_unchanged(before: Snap, after: Snap, allow: dict[str, int] | None = None) -> None:
    """Nothing in the ledger moved (``allow``: tables that may gain exactly that many rows)."""
    allow = allow or {}
    for table, n in after.counts.items():
        if n - before.counts.get(table, 0) != allow.get(table, 0):
            raise Failed(f"table {table} went from {before.counts.get(table)} to {n} rows "
                         f"(expected +{allow.get(table, 0)})")
    if after.seq != before.seq or after.orders != before.orders or after.accounts != before.accounts:
        raise Failed("the ledger changed: events, orders or account totals differ")


def expect_counts(before: Snap, after: Snap, deltas: dict[str, int]) -> None:
    for table, n in after.counts.items():
        d = n - before.counts.get(table, 0)
        if d != deltas.get(table, 0):
            raise Failed(f"table {table} changed by {d} rows, expected {deltas.get(table, 0)}")


# ---------------------------------------------------------------------------------------------- connection

class Conn:
    """A manager connection over a memory stream: raw bytes out, strict reply lines in, events recorded."""

    _probes = itertools.count(1)

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self.buf = bytearray()
        self.closed = False  # by the server
        self.channels: set[str] = set()  # subscribed to (the model's)
        self.runs: list[Run] = []

    @property
    def subscribed(self) -> bool:
        """To trade:event, the one channel that carries anything."""
        return S.TRADE_EVENT in self.channels

    async def send(self, data: bytes, cuts: tuple = ()) -> None:
        start = 0
        for cut in (*cuts, len(data)):
            if cut > start:
                await self.stream.send_all(data[start:cut])
                await trio.lowlevel.checkpoint()
            start = cut

    async def _line(self) -> bytes | None:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if self.buf:
                    raise Failed(f"the server closed in the middle of a line: {bytes(self.buf[:200])!r}")
                return None
            self.buf += data

    async def reply(self) -> dict | None:
        """The next reply (events are checked and recorded on the way); None at EOF."""
        with trio.fail_after(READ_TIMEOUT):
            while True:
                line = await self._line()
                if line is None:
                    return None
                if not line.endswith(b"\r\n"):
                    raise Failed(f"a message must end with \\r\\n: {line[-50:]!r}")
                if not line.isascii() or b"'" in line:  # the SDKs decode each read alone; PHP rewrites '
                    raise Failed(f"the server writes plain ASCII, with no apostrophe: {line[:300]!r}")
                msg = strict_json(line[:-2])
                if not isinstance(msg, dict):
                    raise Failed(f"a message must be a JSON object: {msg!r}")
                if "event" in msg:
                    self.on_event(msg)
                    continue
                check_reply_shape(msg)
                return msg

    def on_event(self, msg: dict) -> None:
        if set(msg) != {"event", "type", "seq", "data"} or msg["event"] != "trade:event" \
                or msg["type"] not in (0, 1, 2) or type(msg["seq"]) is not int or not isinstance(msg["data"], dict) \
                or msg["data"].get("seq") != msg["seq"] or type(msg["data"]["seq"]) is not int:
            raise Failed(f"malformed event (its data carries its seq too): {msg!r}")
        if not self.subscribed or not self.runs:
            raise Failed(f"an event reached a connection that is not subscribed: seq {msg['seq']}")
        self.runs[-1].events.append(msg)

    async def probe(self) -> str:
        ext = f"probe-{next(self._probes)}-{uuidlib.uuid4().hex}"
        line = json.dumps({"command": "Ping", "extID": ext, "__token": S.ADMIN.raw}).encode() + b"\r\n"
        await self.send(line)
        return ext

    async def probe_reply(self, ext: str, reply: dict | None = None) -> None:
        reply = reply if reply is not None else await self.reply()
        if reply is None:
            raise Failed("the connection closed instead of answering the Ping sent after the input")
        if reply.get("extID") != ext or reply["status"] != 200 or reply["data"].get("pong") is not True:
            raise Failed(f"the Ping sent after the input got {reply!r}: a second reply to the input, or the "
                         f"connection is no longer usable")

    async def finish(self) -> None:
        """Half-close; whatever the server still sends must be events (no reply without a request)."""
        if not self.closed:
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            msg = await self.reply()
            if msg is not None:
                raise Failed(f"a reply nobody asked for: {msg!r}")
            self.closed = True
        await self.stream.aclose()


@dataclass
class Run:
    """One subscription of a connection: the first seq it may start at, the events it got, where it ended."""

    firsts: set[int]
    events: list = field(default_factory=list)
    end: int | None = None


def check_reply_shape(msg: dict) -> None:
    status = msg.get("status")
    if type(status) is not int or status not in MANAGER_STATUSES:
        raise Failed(f"bad status: {msg!r}")
    if "command" in msg:
        raise Failed(f"responses carry no command: {msg!r}")
    if "extID" in msg and not isinstance(msg["extID"], str):
        raise Failed(f"extID must be a string: {msg!r}")
    if status == 200:
        if "data" not in msg or set(msg) - {"extID", "status", "data"}:
            raise Failed(f"a success is {{extID?, status, data}}: {msg!r}")
    else:
        if set(msg) - {"extID", "status", "error", "message"} or not isinstance(msg.get("error"), str) \
                or not msg["error"] or not msg["error"].replace("_", "").isalpha() or not msg["error"].isupper() \
                or not isinstance(msg.get("message"), str) or not msg["message"]:
            raise Failed(f"an error is {{extID?, status, error, message}}: {msg!r}")


def check_message(case: S.Case, reply: dict) -> None:
    """The server's own messages never quote with an apostrophe (one may only come from the request)."""
    if "'" in reply["message"] and b"'" not in case.line and b"\\u0027" not in case.line.lower():
        raise Failed(f"an error message quotes with an apostrophe: {reply!r}")


def check_echo(msg: dict, echo: str | None) -> None:
    if echo is None:
        if "extID" in msg:
            raise Failed(f"the reply carries an extID the request did not have: {msg!r}")
    elif msg.get("extID") != echo:
        raise Failed(f"the reply must echo extID {echo!r}: {msg!r}")


# ---------------------------------------------------------------------------------------------- manager oracle

@dataclass
class KeyRec:
    """What the first attempt of a keyed request (finance or AddUser) got: idempotency is per (manager, extID)
    whatever the command."""

    payload: tuple
    error: tuple[int, str] | None = None
    acceptance: dict | None = None
    record: Any = None  # a finance request's record, as its …Sync form answers it (with the event's seq)
    login: int | None = None  # the account an AddUser created


@dataclass
class Pred:
    """The oracle's answer: status and error code, then content checks and the ledger change."""

    status: int
    code: str | None = None
    check: Callable[[Any, Snap, Snap], None] | None = None
    deltas: dict = field(default_factory=dict)
    commit: Callable[[Any, Snap], None] | None = None


def payload_of(op: str, f: dict) -> tuple:
    if op.startswith("Delete"):
        return (op, None, None, "Finance", f["order"], None, None)
    return (op, f["login"], f["amount"], f["comment"], f["order"], f["open_time"], f["close_time"])


def add_user_payload(f: dict) -> tuple:
    """What an AddUser asks, for idempotency: everything but the password (kept only as a salted hash)."""
    return ("AddUser", f["name"], f["currency"] or S.DEFAULT_CURRENCY, f["group"], f["login"], f["leverage"],
            f["email"], f["enable"])


def check_record(rec: Any, exp: dict, t0: int, t1: int) -> None:
    """A trade record against the expected version (None times: the server's now)."""
    if not isinstance(rec, dict):
        raise Failed(f"a trade record is an object: {rec!r}")
    for key in ("order", "login", "cmd", "state", "profit", "comment", "open_time", "close_time"):
        if key not in rec:
            raise Failed(f"trade record without {key}: {rec!r}")
    got = {"order": rec["order"], "login": rec["login"], "cmd": rec["cmd"], "state": rec["state"],
           "amount": micro(rec["profit"], "profit"), "comment": rec["comment"]}
    want = {k: exp[k] for k in got}
    if got != want:
        raise Failed(f"trade record {got} != expected {want}")
    for key in ("open_time", "close_time"):
        value = rec[key]
        if exp[key] is None:
            if type(value) is not int or not t0 <= value <= t1:
                raise Failed(f"{key} {value!r} is not the server's now [{t0}, {t1}]")
        elif value != exp[key]:
            raise Failed(f"{key} {value!r} != {exp[key]}")
    if "version" in rec and rec["version"] != exp["version"]:
        raise Failed(f"version {rec['version']} != {exp['version']}")
    for key in ("balance", "credit"):
        if key in rec and micro(rec[key], key) != exp[key]:
            raise Failed(f"record {key} {rec[key]} != {exp[key]}")


ACCOUNT_KEYS = {"login", "name", "group", "currency", "created", "leverage", "email", "enable", "balance", "credit"}


def check_account(data: Any, login: int, acc: Account, what: str = "the account") -> None:
    """An account as the API answers it: its fields, balance and credit; never its password."""
    if not isinstance(data, dict) or not ACCOUNT_KEYS <= set(data):
        raise Failed(f"{what} has {sorted(ACCOUNT_KEYS)}: {data!r}")
    if any("password" in k or "hash" in k for k in data):
        raise Failed(f"{what} shows its password: {data!r}")
    want = {"login": login, "name": acc.name, "group": acc.group, "currency": acc.currency, "created": acc.created,
            "leverage": acc.leverage, "email": acc.email, "enable": acc.enable}
    got = {k: data[k] for k in want}
    if got != want or type(data["enable"]) is not bool or type(data["leverage"]) is not int \
            or (micro(data["balance"], "balance"), micro(data["credit"], "credit")) != (acc.balance, acc.credit):
        raise Failed(f"{what}: {data!r} != {want} balance {acc.balance} credit {acc.credit}")


class ManagerOracle:
    """An independent model of the manager contract, evaluated on a snapshot of the ledger."""

    def __init__(self, srv: Any):
        self.srv = srv
        self.keys: dict[tuple[int, str], KeyRec] = {}
        self.passwords: dict[int, str] = dict(S.ACCOUNT_PASSWORDS)  # accounts that log in, and with what
        self.t0 = self.t1 = 0

    def predict(self, call: S.Call, conn: Conn, before: Snap) -> Pred:
        command = S.base_command(call.command)
        f = dict(call.fields)
        if command in S.FINANCE:
            return self.finance(call, command, f, before)
        return getattr(self, "cmd_" + command)(call, f, before, conn)

    def _key(self, call: S.Call) -> tuple[int, str] | None:
        return (call.login, call.ext_id) if call.ext_id is not None else None

    def _remember_refusal(self, key: Any, payload: tuple, refusal: tuple) -> Pred:
        """A keyed request refused by the ledger's rules: the refusal is kept (an idempotency row) and
        answered again to a retry."""
        def remember(data: Any, a: Snap) -> None:
            if key:
                self.keys[key] = KeyRec(payload, error=refusal)
        return Pred(refusal[0], refusal[1], deltas={"idempotency": 1} if key else {}, commit=remember)

    # ---- finance

    def finance(self, call: S.Call, op: str, f: dict, before: Snap) -> Pred:
        sync = call.command.endswith("Sync")
        payload = payload_of(op, f)
        key = self._key(call)
        rec = self.keys.get(key) if key else None
        if rec is not None:
            if rec.payload != payload:
                event("model:idempotency-conflict")
                return Pred(409, "IDEMPOTENCY_CONFLICT")
            if rec.error is not None:
                event("model:finance-replay-refused")
                return Pred(*rec.error)
            event(f"model:finance-replay{'-sync' if sync else ''}")
            want = rec.record if sync else rec.acceptance

            def check_replay(data: Any, b: Snap, a: Snap) -> None:
                if data != want:
                    raise Failed(f"a replay must answer as the first attempt did: {data!r} != {want!r}")
            return Pred(200, None, check_replay)
        result = self.rules(op, f, before)
        keyed = {"idempotency": 1} if key else {}
        if isinstance(result, tuple):  # refused by the ledger's rules
            return self._remember_refusal(key, payload, result)
        exp = result

        def check(data: Any, b: Snap, a: Snap) -> None:
            if a.seq != b.seq + 1:
                raise Failed(f"an accepted finance command adds one event: seq {b.seq} -> {a.seq}")
            etype, _ = a.events[a.seq]
            record = a.event_data(a.seq)
            if "seq" in record:
                raise Failed(f"the stored record carries no seq (GetTrade answers it): {record!r}")
            order = record.get("order")
            if exp["order"] is None:  # a new order: a fresh number
                if order in b.orders or type(order) is not int or order <= max(b.orders, default=0):
                    raise Failed(f"a new order needs a fresh number, got {order!r}")
                exp["order"] = order
            if etype != exp["type"]:
                raise Failed(f"event type {etype} != {exp['type']}")
            check_record(record, exp, self.t0, self.t1)
            row = a.orders[exp["order"]]
            if (row.version, row.state, row.amount, row.login, row.cmd) != \
                    (exp["version"], exp["state"], exp["amount"], exp["login"], exp["cmd"]):
                raise Failed(f"stored version {row} differs from {exp}")
            want_acc = b.accounts[exp["login"]]
            acc = a.accounts[exp["login"]]
            if (acc.balance, acc.credit) != (exp["balance"], exp["credit"]):
                raise Failed(f"account totals {acc.balance}/{acc.credit} != {exp['balance']}/{exp['credit']}")
            if {k: v for k, v in a.accounts.items() if k != exp["login"]} != \
                    {k: v for k, v in b.accounts.items() if k != exp["login"]} or \
                    replace(acc, balance=0, credit=0) != replace(want_acc, balance=0, credit=0):
                raise Failed("another account changed")
            if {k: v for k, v in a.orders.items() if k != exp["order"]} != \
                    {k: v for k, v in b.orders.items() if k != exp["order"]}:
                raise Failed("another order changed")
            acceptance = {"accepted": True, "order": exp["order"], "state": ACCEPT_STATE[exp["type"]],
                          "login": exp["login"], "cmd": exp["cmd"], "amount": data.get("amount") if
                          isinstance(data, dict) else None}
            sent = a.sent_data(a.seq)
            if sync:
                if data != sent:  # exactly the event's data: the record and its seq
                    raise Failed(f"a …Sync answer is its event's data: {data!r} != {sent!r}")
            else:
                if not isinstance(data, dict) or set(data) != set(acceptance) or \
                        {k: v for k, v in data.items() if k != "amount"} != \
                        {k: v for k, v in acceptance.items() if k != "amount"} \
                        or micro(data["amount"]) != exp["amount"]:
                    raise Failed(f"acceptance {data!r} != {acceptance!r} (amount {exp['amount']})")
            exp["_acceptance"], exp["_record"] = acceptance, sent

        def commit(data: Any, a: Snap) -> None:
            if key:
                acceptance = exp["_acceptance"]
                if sync:  # the plain form of a replay answers with the acceptance
                    acceptance = {**acceptance, "amount": exp["_record"]["profit"]}
                self.keys[key] = KeyRec(payload, acceptance=acceptance, record=exp["_record"])
        return Pred(200, None, check, {"finance": 1, "events": 1, **keyed}, commit)

    def rules(self, op: str, f: dict, snap: Snap) -> dict | tuple:
        """The next version an accepted request writes (dict), or the refusal (status, code). A disabled
        account takes no finance command, the delete of one of its orders included."""
        if op.startswith("Delete"):
            cur = snap.orders.get(f["order"])
            if cur is not None and not snap.accounts[cur.login].enable:
                event("model:order-of-a-disabled-account")
                return (403, "ACCOUNT_DISABLED")
            kinds = BALANCE_CMDS if op == "DeleteBalance" else CREDIT_CMDS
            if cur is None or cur.cmd not in kinds:
                return (404, "ORDER_NOT_FOUND")
            if cur.state == TS_DELETED:
                return (409, "ORDER_DELETED")
            totals = self.totals(snap, cur.login, cur.cmd, -cur.amount)
            if isinstance(totals, tuple) and isinstance(totals[1], str):
                return totals
            return dict(order=cur.order, version=cur.version + 1, login=cur.login, cmd=cur.cmd, state=TS_DELETED,
                        amount=cur.amount, comment=cur.comment, open_time=cur.open_time, close_time=None, type=2,
                        balance=totals[0], credit=totals[1])
        cmd, sign = OPS[op]
        login = f["login"]
        cur = snap.orders.get(f["order"]) if f["order"] is not None else None
        if login not in snap.accounts:
            return (404, "ACCOUNT_NOT_FOUND")
        if not snap.accounts[login].enable:
            event("model:account-disabled")
            return (403, "ACCOUNT_DISABLED")
        signed = sign * f["amount"]
        if cur is None:
            delta, version, open_time, etype, order = signed, 1, f["open_time"], 0, None
        else:
            if cur.state == TS_DELETED:
                return (409, "ORDER_DELETED")
            if (cur.login, cur.cmd) != (login, cmd):
                return (400, "ORDER_MISMATCH")
            delta, version, etype, order = signed - cur.amount, cur.version + 1, 1, cur.order
            open_time = f["open_time"] if f["open_time"] is not None else cur.open_time
        totals = self.totals(snap, login, cmd, delta)
        if isinstance(totals[1], str):
            return totals
        return dict(order=order, version=version, login=login, cmd=cmd, state=TS_CLOSED, amount=signed,
                    comment=f["comment"], open_time=open_time, close_time=f["close_time"], type=etype,
                    balance=totals[0], credit=totals[1])

    @staticmethod
    def totals(snap: Snap, login: int, cmd: int, delta: int) -> tuple:
        acc = snap.accounts[login]
        balance, credit = acc.balance, acc.credit
        if cmd in BALANCE_CMDS:
            balance += delta
            if delta < 0 and balance < 0:
                return (409, "NO_MONEY")
        else:
            credit += delta
            if delta < 0 and credit < 0:
                return (409, "NO_MONEY")
        if delta > 0 and max(balance, credit) > MAX_TOTAL:
            return (400, "INVALID_DATA")
        return (balance, credit)

    # ---- other commands

    def cmd_Ping(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or data.get("pong") is not True or type(data.get("time")) is not int \
                    or not self.t0 <= data["time"] <= self.t1:
                raise Failed(f"Ping answers {{pong: true, time: now}}: {data!r}")
        return Pred(200, None, check)

    def cmd_Login(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """A manager's login, else an account's with the password AddUser gave it (session type USER)."""
        login = f["login"]
        if login in S.MANAGERS:
            password, session = S.MANAGERS[login]
        elif login in before.accounts and login in self.passwords:
            password, session = self.passwords[login], S.SESSION_USER
        else:
            return Pred(401, "INVALID_CREDENTIALS")
        if password != f["password"]:
            return Pred(401, "INVALID_CREDENTIALS")
        event(f"model:login-session-{session}")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or set(data) != {"token", "session", "expires_at"} \
                    or data["session"] != session:
                raise Failed(f"Login answers {{token, session {session}, expires_at}}: {data!r}")
            claims = jwt.decode(data["token"], SECRET, algorithms=["HS256"], options={"verify_exp": False})
            if (claims["sub"], claims["session"], claims["exp"]) != (str(login), session, data["expires_at"]):
                raise Failed(f"token claims {claims} do not match {data!r}")
            if not self.t0 < data["expires_at"]:
                raise Failed(f"the token is already expired: {data!r}")
        return Pred(200, None, check)

    def cmd_AddUser(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """Idempotent by (manager, extID) like a finance request: the same payload answers the same account
        (as it is now) or the same refusal; another payload is IDEMPOTENCY_CONFLICT."""
        payload = add_user_payload(f)
        key = self._key(call)
        rec = self.keys.get(key) if key else None
        if rec is not None:
            if rec.payload != payload:
                return Pred(409, "IDEMPOTENCY_CONFLICT")
            if rec.error is not None:
                event("model:add-user-replay-refused")
                return Pred(*rec.error)
            event("model:add-user-replay")
            return Pred(200, None, lambda data, b, a: check_account(data, rec.login, b.accounts[rec.login],
                                                                    "a replayed AddUser answers the account"))
        login = f["login"]
        if login is not None and login in before.accounts:
            return self._remember_refusal(key, payload, (409, "ACCOUNT_EXISTS"))
        if login is None:
            login = max(max(before.accounts, default=999), 999) + 1
        if login > S.MAX_ID:  # no login is left above the largest: it must be given
            return self._remember_refusal(key, payload, (409, "NO_FREE_LOGIN"))
        currency = f["currency"] or S.DEFAULT_CURRENCY

        def check(data: Any, b: Snap, a: Snap) -> None:
            acc = a.accounts.get(login)
            want = (f["name"], f["group"], currency, f["leverage"], f["email"], f["enable"], 0, 0)
            if acc is None or (acc.name, acc.group, acc.currency, acc.leverage, acc.email, acc.enable, acc.balance,
                               acc.credit) != want or not self.t0 <= acc.created <= self.t1:
                raise Failed(f"account {login} is not stored as asked {want}: {acc}")
            if (acc.password_hash is None) != (f["password"] is None) or \
                    (f["password"] is not None and (acc.password_hash == f["password"] or
                                                    len(f["password"]) >= 8 and f["password"] in acc.password_hash)):
                raise Failed(f"a password is stored as a salted hash, and only when given: {acc.password_hash!r}")
            check_account(data, login, acc, "AddUser answers the new account")
            if {k: v for k, v in a.accounts.items() if k != login} != b.accounts or a.seq != b.seq:
                raise Failed("AddUser changed other accounts or the events")

        def commit(data: Any, a: Snap) -> None:
            if key:
                self.keys[key] = KeyRec(payload, login=login)
            if f["password"] is not None:
                self.passwords[login] = f["password"]
        return Pred(200, None, check, {"accounts": 1, **({"idempotency": 1} if key else {})}, commit)

    def cmd_GetUser(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        login = f["login"]
        if login not in before.accounts:
            return Pred(404, "ACCOUNT_NOT_FOUND")
        return Pred(200, None, lambda data, b, a: check_account(data, login, b.accounts[login]))

    def cmd_GetUsers(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """A page of accounts by login from from_login (in group, when given), at most limit and 1,000, and
        where the next page starts (null: none)."""
        logins = sorted(login for login, acc in before.accounts.items()
                        if login >= f["from_login"] and f["group"] in (None, acc.group))
        page = logins[:min(f["limit"], S.MAX_USERS)]
        following = logins[len(page)] if len(logins) > len(page) else None
        event(f"model:get-users:{'more' if following else 'last'}-page")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or set(data) != {"users", "next_from_login"} \
                    or not isinstance(data["users"], list) or len(data["users"]) != len(page) \
                    or data["next_from_login"] != following:
                raise Failed(f"GetUsers answers {{users: {page}, next_from_login: {following}}}: {data!r}")
            for user, login in zip(data["users"], page, strict=True):
                check_account(user, login, b.accounts[login], f"GetUsers' account {login}")
        return Pred(200, None, check)

    def cmd_GetTrade(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        row = before.orders.get(f["order"])
        if row is None:
            return Pred(404, "ORDER_NOT_FOUND")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if data != b.event_data(row.seq):  # a record, not an event: no seq
                raise Failed(f"GetTrade answers the order's current record: {data!r}")
        return Pred(200, None, check)

    def cmd_GetTrades(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        if f["login"] not in before.accounts:
            return Pred(404, "ACCOUNT_NOT_FOUND")
        start = f["from"] if f["from"] is not None else -1
        end = f["to"] if f["to"] is not None else S.MAX_ID
        rows = sorted((r for r in before.orders.values() if r.login == f["login"] and start <= r.open_time <= end),
                      key=lambda r: r.order)

        def check(data: Any, b: Snap, a: Snap) -> None:
            want = {"login": f["login"], "trades": [b.event_data(r.seq) for r in rows], "more": False}
            if data != want:
                raise Failed(f"GetTrades: {data!r} != {want!r}")
        return Pred(200, None, check)

    def cmd_OpenGameSession(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        if f["login"] not in before.accounts:
            return Pred(404, "ACCOUNT_NOT_FOUND")
        ttl = self.srv.config.game_session_ttl

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or data.get("login") != f["login"] or not isinstance(data.get("sid"), str) \
                    or len(data["sid"]) < 16 or type(data.get("expires_at")) is not int \
                    or not self.t0 + ttl <= data["expires_at"] <= self.t1 + ttl:
                raise Failed(f"OpenGameSession answers {{sid, login, expires_at}}: {data!r}")
        return Pred(200, None, check, {"game_sessions": 1})

    @staticmethod
    def _names(f: dict) -> list[str]:
        return list(f["chanels"] or ()) + list(f["channels"] or ())

    def cmd_Subscribe(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """Additive: the channels published here are added (one already subscribed is no error), the others
        reported in ``unknown``; from_seq replays when trade:event is newly subscribed (beyond the newest
        event: FROM_SEQ_AHEAD, nothing subscribed)."""
        names = self._names(f)
        unknown = [n for n in names if n != S.TRADE_EVENT]
        fresh = S.TRADE_EVENT in names and not conn.subscribed
        from_seq = f["from_seq"]
        if fresh and from_seq is not None and from_seq > before.seq:
            return Pred(400, "FROM_SEQ_AHEAD")
        event(f"model:subscribe:{'fresh' if fresh else 'again' if S.TRADE_EVENT in names else 'no-op'}"
              f"{':unknown' if unknown else ''}{':replay' if fresh and from_seq is not None else ''}")
        channels = sorted(conn.channels | ({S.TRADE_EVENT} if fresh else set()))

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or set(data) != {"channels", "unknown", "from_seq"} \
                    or data["channels"] != channels or data["from_seq"] != (from_seq if fresh else None) \
                    or not isinstance(data["unknown"], list) \
                    or Counter(data["unknown"]) not in (Counter(unknown), Counter(dict.fromkeys(unknown))):
                raise Failed(f"Subscribe answers {{channels: {channels}, unknown: {unknown}, from_seq: "
                             f"{from_seq if fresh else None}}}: {data!r}")

        def commit(data: Any, a: Snap) -> None:
            if fresh:
                conn.channels.add(S.TRADE_EVENT)
                conn.runs.append(Run({from_seq + 1 if from_seq is not None else before.seq + 1}))
        return Pred(200, None, check, commit=commit)

    def cmd_Unsubscribe(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """Removes the channels named (no list: all); answers what is still subscribed."""
        named = f["chanels"] is not None or f["channels"] is not None
        remaining = conn.channels - set(self._names(f)) if named else set()
        ends = conn.subscribed and not remaining
        event(f"model:unsubscribe:{'named' if named else 'all'}:{'ends' if ends else 'keeps'}")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if data != {"channels": sorted(remaining)}:
                raise Failed(f"Unsubscribe answers {{channels: {sorted(remaining)}}}: {data!r}")

        def commit(data: Any, a: Snap) -> None:
            if conn.subscribed and S.TRADE_EVENT not in remaining:
                conn.runs[-1].end = before.seq
            conn.channels = set(remaining)
        return Pred(200, None, check, commit=commit)



def check_runs(conn: Conn, final: Snap) -> None:
    """Every subscription got every event from its start to its end, in order, once, as stored."""
    for run in conn.runs:
        end = run.end if run.end is not None else final.seq
        got = [e["seq"] for e in run.events]
        if not any(got == list(range(first, end + 1)) for first in run.firsts):
            raise Failed(f"a subscriber starting at one of {sorted(run.firsts)} and ending at {end} got seqs {got}")
        for e in run.events:
            etype, _ = final.events[e["seq"]]
            if e["type"] != etype or e["data"] != final.sent_data(e["seq"]):
                raise Failed(f"event {e['seq']} differs from the ledger's: {e!r}")


# ---------------------------------------------------------------------------------------------- manager harness

class ManagerHarness:
    def __init__(self, srv: Any):
        self.srv = srv
        self.oracle = ManagerOracle(srv)
        self.conns: list[Conn] = []
        self.conn: Conn | None = None

    async def snapshot(self) -> Snap:
        return await self.srv.mainloop.read(take_snapshot, self.srv)

    async def verify(self) -> None:
        report = await self.srv.mainloop.read(verify, self.srv.store.db)
        if not report.ok:
            raise Failed(f"verify failed: {report}")

    def connection(self) -> Conn:
        if self.conn is None or self.conn.closed:
            self.conn = Conn(self.srv.connect_memory())
            self.conns.append(self.conn)
        return self.conn

    async def run(self, case: S.Case) -> None:
        conn = self.connection()
        before = await self.snapshot()
        self.oracle.t0 = self.srv.now()
        alts = case.expect.alts
        may_close = case.expect.has(S.Closed)
        try:
            await conn.send(case.data, case.cuts)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not may_close:
                raise Failed("the server closed the connection while the input was being sent") from None
        probe = await conn.probe() if case.expect.has(S.Silent) else None
        reply = await conn.reply()
        self.oracle.t1 = self.srv.now()
        if reply is None:
            raise Failed(f"no reply: the server closed the connection (expected one of {alts})")
        if probe is not None and reply.get("extID") == probe:
            if not case.expect.has(S.Silent):
                raise Failed("no reply to the input")
            await conn.probe_reply(probe, reply)
            assert_unchanged(before, await self.snapshot())
            return
        await self.match(case, conn, reply, before)
        if conn.closed:
            return
        if probe is None:
            probe = await conn.probe()
        await conn.probe_reply(probe)
        await self.verify()

    async def match(self, case: S.Case, conn: Conn, reply: dict, before: Snap) -> None:
        status, code = reply["status"], reply.get("error")
        if status != 200:
            check_message(case, reply)
        oracle = next((a for a in case.expect.alts if isinstance(a, S.Oracle)), None)
        pred = self.oracle.predict(oracle.call, conn, before) if oracle else None
        if pred is not None and (status, code) == (pred.status, pred.code):
            check_echo(reply, oracle.echo)
            after = await self.snapshot()
            if status == 200:
                if pred.check is not None:
                    pred.check(reply.get("data"), before, after)
                expect_counts(before, after, pred.deltas)
            else:  # refused: at most the idempotency key of a keyed finance request is written
                assert_unchanged(before, after, pred.deltas)
            if pred.commit is not None:
                pred.commit(reply.get("data"), after)
            event(f"answer:{S.base_command(oracle.call.command)}:{status}")
            return
        fixed = [a for a in case.expect.alts if isinstance(a, S.Fixed) and (status, code) == (a.status, a.code)]
        if fixed:
            alt = next((a for a in fixed if reply.get("extID") == a.echo), fixed[0])
            check_echo(reply, alt.echo)
            if alt.where and not any(where in reply["message"] for where in alt.where):
                raise Failed(f"{case.label}: the message must name one of {alt.where}: {reply!r}")
            assert_unchanged(before, await self.snapshot())
            event(f"answer:{code}")
            return
        for alt in case.expect.alts:
            if isinstance(alt, S.Closed) and (status, code) == (400, "LINE_TOO_LONG"):
                check_echo(reply, None)
                rest = await conn.reply()
                if rest is not None:
                    raise Failed(f"after LINE_TOO_LONG the connection must close, got {rest!r}")
                conn.closed = True
                if conn.subscribed:
                    conn.runs[-1].end = before.seq
                assert_unchanged(before, await self.snapshot())
                event("answer:LINE_TOO_LONG")
                return
        want = [(pred.status, pred.code)] if pred else []
        want += [(a.status, a.code) for a in case.expect.alts if isinstance(a, S.Fixed)]
        want += ["LINE_TOO_LONG+close" for a in case.expect.alts if isinstance(a, S.Closed)]
        raise Failed(f"{case.label}: got {reply!r}, expected one of {want}")

    async def finish(self) -> None:
        for conn in self.conns:
            await conn.finish()
        final = await self.snapshot()
        for conn in self.conns:
            check_runs(conn, final)
        fresh = Conn(self.srv.connect_memory())
        await fresh.probe_reply(await fresh.probe())
        await fresh.finish()
        await self.verify()


SEED_MANAGER = [  # (command, data, extID): orders 1..4, a deleted order, a refused keyed request, a whale
    *(("AddUser", data, ext) for ext, data in S.SEED_ADD_USERS),  # 1000..1004; 1003 as the SDKs send it
    ("BalanceIn", {"login": 1000, "amount": 100}, "seed-1"),
    ("CreditIn", {"login": 1000, "amount": 50, "comment": "bonus"}, "seed-2"),
    ("BalanceIn", {"login": 1001, "amount": 5}, "seed-4"),
    ("DeleteBalanceSync", {"order": 3}, "seed-5"),
    ("BalanceOutSync", {"login": 1000, "amount": 10}, "seed-3"),
    ("BalanceOut", {"login": 1001, "amount": 1}, "seed-fail"),
] + [("BalanceIn", {"login": 1002, "amount": S.MAX_UNITS}, f"seed-whale-{i}") for i in range(8)] + [
    ("BalanceIn", {"login": 1002, "amount": 9 * 10**11}, "seed-whale-8"),
    ("BalanceIn", {"login": 1004, "amount": 20}, "seed-off-1"),  # orders 15 and 16 of 1004, disabled next
    ("CreditInSync", {"login": 1004, "amount": 5, "comment": "Zo\u00eb's \u20ac5"}, "seed-off-2"),
]
SEED_DISABLED = [("BalanceIn", {"login": 1004, "amount": 1}, "seed-off-3")]  # refused, once 1004 is disabled
SEED_REFUSED = {"seed-fail": (409, "NO_MONEY"), "seed-off-3": (403, "ACCOUNT_DISABLED")}


async def seed_manager_world(h: ManagerHarness) -> None:
    """Managers (cheap password hashes), then SEED_MANAGER pipelined on one connection; 1003 gets a password
    (a cheap hash) and 1004 is disabled (no command disables an account: an operator's change in the
    database, which the server's copy follows); then SEED_DISABLED. The oracle learns the idempotency keys
    of the seeds from their replies and events."""
    from syncledger.server.client import open_client

    def add_managers() -> None:
        for login, (password, session) in S.MANAGERS.items():
            h.srv.store.db.execute("INSERT OR REPLACE INTO managers (login, password_hash, session, created) "
                                   "VALUES (?,?,?,?)", (login, cheap_hash(password), session, 0))

    def password_and_disable() -> None:
        for login, password in S.ACCOUNT_PASSWORDS.items():
            h.srv.store.db.execute("UPDATE accounts SET password_hash = ? WHERE login = ?",
                                   (cheap_hash(password), login))
        h.srv.store.db.execute("UPDATE accounts SET enable = 0 WHERE login = ?", (S.DISABLED,))
        h.srv.store.disabled.add(S.DISABLED)
    await h.srv.mainloop.read(add_managers)
    h.srv.reload_keys()
    with trio.fail_after(READ_TIMEOUT):
        async with open_client(h.srv.connect_memory(), S.ADMIN.raw) as client:
            calls = [client.start(command, data, ext_id=ext) for command, data, ext in SEED_MANAGER]
            replies = [await call.reply() for call in calls]
            await h.srv.mainloop.read(password_and_disable)
            replies += [await client.call(command, data, ext_id=ext) for command, data, ext in SEED_DISABLED]
    snap = await h.snapshot()
    seq = 0
    for (command, data, ext), reply in zip(SEED_MANAGER + SEED_DISABLED, replies, strict=True):
        op = S.base_command(command)
        fields = S.draft_of(command, data).fields
        if op == "AddUser":
            assert reply.ok, reply
            check_account(reply.data, data["login"],  # as it was when created
                          replace(snap.accounts[data["login"]], balance=0, credit=0, enable=True))
            h.oracle.keys[(S.ADMIN.login, ext)] = KeyRec(add_user_payload(fields), login=data["login"])
            continue
        payload = payload_of(op, fields)
        if ext in SEED_REFUSED:
            assert (reply.status, reply.error) == SEED_REFUSED[ext], reply
            h.oracle.keys[(S.ADMIN.login, ext)] = KeyRec(payload, error=SEED_REFUSED[ext])
            continue
        assert reply.ok, reply
        seq += 1
        etype, _ = snap.events[seq]
        record = snap.sent_data(seq)
        acceptance = {"accepted": True, "order": record["order"], "state": ACCEPT_STATE[etype],
                      "login": record["login"], "cmd": record["cmd"], "amount": record["profit"]}
        assert reply.data == (record if command.endswith("Sync") else acceptance), (reply, record)
        h.oracle.keys[(S.ADMIN.login, ext)] = KeyRec(payload, acceptance=acceptance, record=record)
    assert snap.seq == seq
    assert snap.accounts[1003].currency == S.DEFAULT_CURRENCY and not snap.accounts[S.DISABLED].enable
    assert sorted(snap.orders) == [1, 2, 3, 4, *range(6, 17)], sorted(snap.orders)  # seed-fail reserved 5


EXAMPLE_TIMEOUT = 120.0  # seconds for one example, whatever happens


async def manager_example(cases: list[S.Case]) -> None:
    with ErrorLog() as errors, trio.fail_after(EXAMPLE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            srv = await start_fuzz_server(nursery)
            h = ManagerHarness(srv)
            await seed_manager_world(h)
            for case in cases:
                event(f"input:{case.label.split(':')[0]}")
                COUNTS["manager"] += 1
                await h.run(case)
            await h.finish()
            nursery.cancel_scope.cancel()
        errors.check()


def _scripted_examples() -> list[list[S.Case]]:
    """Flows of the SDK-compatible manager API that random draws reach rarely, run first on every run."""
    sc, Lit = S.scripted, S.Lit
    quirky = "Zo\u00eb's bonus \u20ac5 \u2014 O'Brien \U0001F600"
    events = [
        sc("Subscribe", {"chanels": [S.TRADE_EVENT, "EURUSD"], "from_seq": 10}),  # replay 11.., EURUSD unknown
        sc("CreditInSync", {"login": 1000, "amount": Lit("1.5"), "comment": quirky}, "s-1", style=(False, False)),
        sc("CreditIn", {"login": 1000, "amount": Lit("1.5"), "comment": quirky}, "s-1"),  # its plain replay
        sc("Subscribe", {"channels": [S.TRADE_EVENT, "XAUUSD"], "from_seq": S.MAX_ID}),  # again: no error
        sc("Unsubscribe", {"chanels": ["EURUSD"]}),  # still subscribed
        sc("BalanceInSync", {"login": 1004, "amount": 1}, "s-2"),  # disabled
        sc("DeleteCredit", {"order": 16}, "s-3"),  # an order of the disabled account
        sc("BalanceInSync", {"login": 1004, "amount": 1}, "s-2"),  # the refusal again
        sc("Unsubscribe", None),  # all
        sc("BalanceIn", {"login": 1000, "amount": 2}),  # no event now
        sc("Subscribe", {"chanels": [S.TRADE_EVENT], "from_seq": 99}),  # beyond the newest: FROM_SEQ_AHEAD
        sc("Subscribe", {}),  # nothing named: a no-op
    ]
    accounts = [
        sc("AddUser", {"name": "Ann O'Neil", "group": "vip", "password": "s3cret-pass", "leverage": 500,
                       "email": "ann@example.com", "enable": True}, "u-1", S.MANAGER),  # 1005
        sc("AddUser", {"name": "Ann O'Neil", "group": "vip", "password": "other", "leverage": 500,
                       "email": "ann@example.com", "enable": True}, "u-1", S.MANAGER),  # a replay
        sc("AddUser", {"name": "Ann", "group": "vip"}, "u-1", S.MANAGER),  # another payload: conflict
        sc("Login", {"login": 1005, "password": "s3cret-pass"}, "l-1", S.Tok(S.MISSING, None)),  # USER
        sc("Login", {"login": 1003, "password": "pw-1003"}, "l-2", S.Tok(S.MISSING, None)),
        sc("GetUsers", {"limit": 2}),
        sc("GetUsers", {"group": "vip", "from_login": 1003}),
        sc("AddUser", {"name": "off", "currency": None, "enable": False}, "u-2"),  # 1006, disabled
        sc("CreditInSync", {"login": 1006, "amount": 1, "comment": "x"}),
        sc("AddUser", {"login": 1000, "name": "again"}, "u-3"),  # ACCOUNT_EXISTS, remembered
        sc("AddUser", {"login": 1000, "name": "again"}, "u-3"),
        sc("AddUser", dict(S.SEED_ADD_USERS[3][1]), S.SEED_ADD_USERS[3][0]),  # the seed's AddUser replayed
        sc("GetUser", {"login": 1006}),
    ]
    token = f'"__token":"{S.ADMIN.raw}"'
    raw = [S.settle(S.Case(line, b"\n", S.Expect([]), (), "scripted-raw")) for line in [
        b'{"command":"BalanceIn","extID":"x1","data":{"login":1000,"amount":NaN},' + token.encode() + b"}",
        b'{"command":"CreditIn","extID":"x2","data":{"login":1000,"amount":1,"comment":"\\ud800"},'
        + token.encode() + b"}",
        b'{"command":"Ping","extID":"x3","command":"BalanceIn",' + token.encode() + b"}",
        b'{"command":"Ping","extID":"x4","data":{' + token.encode(),
        b'{"command":"Ping","extID":"x5","data":{"zz":-Infinity}}',  # before the token is looked at
    ]] + [sc("BalanceIn", {"login": 1000, "amount": Lit("9" * 5000)}, "x6", level="data", where=("amount",)),
          sc("Ping", S.MISSING, "")]  # an empty extID is refused, and echoed
    return [events, accounts, raw]


@fuzz_settings(200)
@given(S.manager_example())
@example(_scripted_examples()[0])
@example(_scripted_examples()[1])
@example(_scripted_examples()[2])
def test_manager_protocol_fuzz(cases):
    trio.run(manager_example, cases)


# ---------------------------------------------------------------------------------------------- wallet

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


def uuid_echo(content: bytes) -> set[str | None]:
    """The uuids a wallet reply may echo: the body's, when the body is a JSON object and uuid a string. A
    body holding an integer of more digits than CPython parses (4,300) is JSON all the same: its uuid, or
    None (the contract leaves the choice, as for such numbers in a manager line)."""
    if len(content) > 64 * 1024 or S.lone_surrogate(content):
        return {None}
    uuids: set[str | None] = set()
    for parse_int in (int, lambda text: 0):
        try:
            obj = json.loads(content.decode(), parse_float=Decimal, parse_constant=_no_constant,
                             parse_int=parse_int)
        except (ValueError, RecursionError, ArithmeticError, Failed):
            uuids.add(None)
            continue
        uuid = obj.get("uuid") if isinstance(obj, dict) else None
        uuids.add(uuid if isinstance(uuid, str) else None)
        if parse_int is int:
            break
    return uuids


class WalletHarness:
    def __init__(self, srv: Any, http: httpx.AsyncClient, sids: dict[str, str]):
        self.srv, self.http, self.sids = srv, http, sids
        self.model = WalletModel()
        self.base = f"http://127.0.0.1:{srv.ports.wallet}"

    async def snapshot(self) -> Snap:
        return await self.srv.mainloop.read(take_snapshot, self.srv)

    def resolve(self, body: Any) -> Any:
        if isinstance(body, dict) and body.get("sid") in S.SIDS:
            body = {**body, "sid": self.sids.get(body["sid"], "no-such-sid")}
        return body

    def sid_ok(self, r: S.WalletReq) -> bool:
        return r.sid in ("sid:1000", "sid:1001", "sid:1002") and int(r.sid[4:]) == r.login

    async def run(self, case: S.WalletCase, *, light: bool = False) -> None:
        body = self.resolve(case.body)
        content = body if isinstance(body, bytes) else S.enc(body, ascii_only=case.ascii_only).encode()
        params = [("authToken", t) for t in case.auth.query]
        headers = {"authorization": case.auth.header} if case.auth.header is not None else {}
        before = await self.snapshot()
        with trio.fail_after(READ_TIMEOUT):
            response = await self.http.request(case.method, self.base + case.path, params=params, headers=headers,
                                               content=content)
        if isinstance(case.expect, int):  # a wrong route or method: an HTTP error, nothing done
            if response.status_code != case.expect:
                raise Failed(f"{case.method} {case.path}: HTTP {response.status_code}, expected {case.expect}")
            assert_unchanged(before, await self.snapshot())
            event(f"wallet-answer:http-{case.expect}")
            return
        if response.status_code != 200:
            raise Failed(f"{case.label}: HTTP {response.status_code} {response.content[:200]!r}, expected 200")
        if not response.headers.get("content-type", "").startswith("application/json"):
            raise Failed(f"content-type {response.headers.get('content-type')!r}")
        reply = strict_json(response.content)
        if not isinstance(reply, dict) or set(reply) - {"status", "balance", "bonus", "uuid", "sid", "retransmission"} \
                or reply.get("status") not in S.WALLET_STATUSES or "uuid" not in reply \
                or reply.get("retransmission", True) is not True:
            raise Failed(f"a wallet reply is {{status, balance?, bonus?, sid?, uuid, retransmission: true?}}: "
                         f"{reply!r}")
        if reply["uuid"] not in uuid_echo(content):
            # A call refused for its token is answered without waiting more than a second for its body: on a
            # loaded machine the body may come later, and the answer then has no uuid to echo.
            if not (reply["uuid"] is None and reply["status"] == "INVALID_TOKEN_ID" and not case.auth.good):
                raise Failed(f"uuid must echo one of {uuid_echo(content)!r}: {reply!r}")
            event("wallet-refused-before-its-body")  # the usual case: test_wallet_unauthenticated_call_echoes...
        if ("balance" in reply) != ("bonus" in reply):
            raise Failed(f"balance and bonus come together: {reply!r}")
        status = reply["status"]
        after = await self.snapshot()
        if not light:
            event(f"wallet-answer:{status}")
        expect = case.expect
        if isinstance(expect, (str, type(None))) and S.lone_surrogate(content):  # malformed: not Unicode
            expect = "INVALID_PARAMETER" if case.auth.good else "INVALID_TOKEN_ID"
        if case.req is None or expect != case.expect or (expect == "ambiguous" and status == "INVALID_PARAMETER"
                                                         and "balance" not in reply):
            want = expect if expect not in (None, "ambiguous") else "INVALID_PARAMETER"
            if status != want:
                raise Failed(f"{case.label}: got {reply!r}, expected {want}")
            if "balance" in reply or "sid" in reply or "retransmission" in reply:
                raise Failed(f"a refused request reports no balance, no sid and no retransmission: {reply!r}")
            assert_unchanged(before, after)
            return
        await self.check_valid(case.req, reply, before, after, light)
        if not light:
            report = await self.srv.mainloop.read(verify, self.srv.store.db)
            if not report.ok:
                raise Failed(f"verify failed: {report}")

    async def check_valid(self, r: S.WalletReq, reply: dict, before: Snap, after: Snap, light: bool = False) -> None:
        status = reply["status"]
        answers = self.model.predict(r, before, self.sid_ok(r))
        if ANY in answers:
            effect, update = self.any_effect(r, status), answers[ANY].update
            if not light:
                event(f"wallet-model:any:{answers[ANY].why}")
        elif status not in answers:
            raise Failed(f"{r}: got {reply!r}, expected one of {sorted(answers)}")
        else:
            ans = answers[status]
            effect, update = ans.effect, ans.update
            if ans.why and not light:
                event(f"wallet-model:{ans.why}")
            if reply.get("retransmission", False) != ans.retrans:
                raise Failed(f"{r}: {reply!r} {'is' if ans.retrans else 'is not'} the reply to a retried "
                             f"transaction (retransmission: true)")
        acc = after.accounts.get(r.login)
        if r.action == "check":
            if "balance" in reply or reply.get("sid") not in (None, self.resolve({"sid": r.sid})["sid"]):
                raise Failed(f"check answers {{status, sid, uuid}}: {reply!r}")
        elif acc is not None and status in ("OK", "INSUFFICIENT_FUNDS", "BET_ALREADY_EXIST", "BET_ALREADY_SETTLED",
                                             "BET_DOES_NOT_EXIST", "FINAL_ERROR_ACTION_FAILED"):
            if "balance" not in reply:
                raise Failed(f"{status} reports the balance: {reply!r}")
        if "balance" in reply:
            if acc is None or (micro(reply["balance"], "balance"), micro(reply["bonus"], "bonus")) != \
                    (acc.balance, acc.credit):
                raise Failed(f"balance/bonus {reply.get('balance')}/{reply.get('bonus')} are not the account's "
                             f"{acc}")
        order = None
        if effect is None:
            allow = {} if status not in ("BET_DOES_NOT_EXIST", "BET_ALREADY_SETTLED", "INSUFFICIENT_FUNDS",
                                         "FINAL_ERROR_ACTION_FAILED", "INVALID_SID", "UNKNOWN_ERROR") \
                or reply.get("retransmission") else None
            if allow is None:  # the wallet may remember the refusal (wallet_tx), nothing else moves
                allow = {"wallet_tx": after.counts.get("wallet_tx", 0) - before.counts.get("wallet_tx", 0)}
                if not 0 <= allow["wallet_tx"] <= 2:
                    raise Failed(f"{status}: {allow['wallet_tx']} wallet rows written")
            assert_unchanged(before, after, allow)
        else:
            order = self.check_effect(r, effect, before, after)
        if update is not None:
            update(order)

    def any_effect(self, r: S.WalletReq, status: str) -> Any:
        if status != "OK":
            return None
        if r.action == "debit":
            return ("debit", r.amount)
        if r.action == "credit":
            return ("credit", r.amount or 0)
        return ("cancel", None)

    def check_effect(self, r: S.WalletReq, effect: tuple, before: Snap, after: Snap) -> int:
        kind, what = effect
        if after.seq != before.seq + 1 or after.counts["finance"] != before.counts["finance"] + 1:
            raise Failed(f"an accepted {kind} writes one record and one event: seq {before.seq} -> {after.seq}")
        etype, _ = after.events[after.seq]
        rec = after.event_data(after.seq)
        acc_before, acc_after = before.accounts[r.login], after.accounts[r.login]
        if kind == "cancel":
            debit = what
            order = rec["order"]
            if etype != 2 or rec["state"] != TS_DELETED or rec["cmd"] != 8 or rec["login"] != r.login or \
                    (debit is not None and (order != debit.order or micro(rec["profit"]) != -debit.amount)):
                raise Failed(f"a cancel deletes its debit's order: {rec!r}")
            delta = -micro(rec["profit"])
        else:
            cmd, sign = (8, -1) if kind == "debit" else (6, 1)
            order = rec["order"]
            if etype != 0 or rec["cmd"] != cmd or rec["login"] != r.login or rec["state"] != TS_CLOSED \
                    or micro(rec["profit"]) != sign * what or order in before.orders:
                raise Failed(f"a {kind} of {what} is a new cmd {cmd} record: {rec!r}")
            delta = sign * what
        if (acc_after.balance, acc_after.credit) != (acc_before.balance + delta, acc_before.credit):
            raise Failed(f"{kind}: balance {acc_before.balance} -> {acc_after.balance}, expected delta {delta}")
        if {k: v for k, v in after.accounts.items() if k != r.login} != \
                {k: v for k, v in before.accounts.items() if k != r.login}:
            raise Failed("another account changed")
        return order


SEED_WALLET = [  # (action, txid, refId, game.id, amount in units, expected status): player 1000
    ("debit", "seed-bet-1", "r1", "g1", 10, "OK"),  # g1: an open round of two debits sharing refId r1
    ("debit", "seed-bet-5", "r1", "g1", 3, "OK"),
    ("debit", "seed-bet-2", None, "g2", 5, "OK"),  # g2: settled
    ("credit", "seed-win-2", "seed-bet-2", "g2", 7, "OK"),
    ("credit", "seed-win-3", "seed-bet-3", "g3", 1, "BET_DOES_NOT_EXIST"),  # seed-bet-3 can never be debited
    ("debit", "seed-bet-6", None, "g4", 2, "OK"),  # g4: its only debit cancelled
    ("cancel", "seed-bet-6", None, "g4", None, "OK"),
]


def wallet_seed_case(action: str, txid: str, ref_id: str | None, game_id: str | None,
                     amount: int | None) -> S.WalletCase:
    tx: dict = {"id": txid}
    if ref_id is not None:
        tx["refId"] = ref_id
    if amount is not None:
        tx["amount"] = amount
    body = {"sid": "sid:1000", "userId": "1000", "currency": "EUR", "transaction": tx, "uuid": f"seed-{txid}"}
    if game_id is not None:
        body["game"] = {"id": game_id, "type": "slots", "session": "gs-1"}
    req = S.WalletReq(action, "sid:1000", 1000, "EUR", game_id, "slots" if game_id is not None else None, txid,
                      ref_id, None if amount is None else amount * S.U)
    return S.WalletCase("POST", f"/v1/{action}", body, S.GOOD_AUTH[0], req, None, f"seed-{txid}", "seed")


async def seed_wallet_world(srv: Any) -> dict[str, str]:
    """Accounts 1000 (EUR, 100), 1001 (USD), 1002 (EUR, near the largest total), a sid for each, and an
    expired sid of 1000."""
    from syncledger.server.client import open_client
    sids = {}
    with trio.fail_after(READ_TIMEOUT):
        async with open_client(srv.connect_memory(), S.ADMIN.raw) as c:
            for login, currency in ((1000, "EUR"), (1001, "USD"), (1002, "EUR")):
                assert (await c.call("AddUser", {"login": login, "name": "p", "currency": currency})).ok
            assert (await c.call("BalanceIn", {"login": 1000, "amount": 100})).ok
            for _ in range(8):
                assert (await c.call("BalanceIn", {"login": 1002, "amount": S.MAX_UNITS})).ok
            assert (await c.call("BalanceIn", {"login": 1002, "amount": 9 * 10**11})).ok
            for login in (1000, 1001, 1002):
                reply = await c.call("OpenGameSession", {"login": login})
                assert reply.ok, reply
                sids[f"sid:{login}"] = reply.data["sid"]

    def expired() -> None:
        old = srv.now() - 10**7
        srv.store.db.execute("INSERT INTO game_sessions VALUES (?,?,?,?)", ("expired-sid-of-1000", 1000, old, old))
    await srv.mainloop.read(expired)
    sids["sid:expired"] = "expired-sid-of-1000"
    return sids


async def wallet_example(cases: list[S.WalletCase]) -> None:
    with ErrorLog() as errors, trio.fail_after(EXAMPLE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            srv = await start_fuzz_server(nursery)
            sids = await seed_wallet_world(srv)
            async with httpx.AsyncClient(verify=False, timeout=READ_TIMEOUT) as http:
                h = WalletHarness(srv, http, sids)
                for action, txid, ref_id, game_id, amount, status in SEED_WALLET:
                    await h.run(wallet_seed_case(action, txid, ref_id, game_id, amount), light=True)
                    seen = h.model.txs.get((action, txid))
                    assert seen is not None and seen.status == status, (txid, seen)
                for case in cases:
                    event(f"wallet-input:{case.label.split(':')[0]}")
                    COUNTS["wallet"] += 1
                    await h.run(case)
            report = await srv.mainloop.read(verify, srv.store.db)
            assert report.ok, report
            conn = Conn(srv.connect_memory())  # the server is still alive
            await conn.probe_reply(await conn.probe())
            await conn.finish()
            nursery.cancel_scope.cancel()
        errors.check()


@fuzz_settings(100)
@given(S.wallet_example())
def test_wallet_api_fuzz(cases):
    trio.run(wallet_example, cases)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    start = time.perf_counter()
    yield
    if COUNTS:
        print(f"\nfuzz inputs: {dict(COUNTS)} in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------------------------------------- bugs found
# Regression tests of what the fuzzer found (each bug below crashed a connection, answered HTTP 500, sank a
# batch, let an oversized line through or broke the wallet contract).


@asynccontextmanager
async def fuzz_server(**kw: Any):
    async with trio.open_nursery() as nursery:
        srv = await start_fuzz_server(nursery, **kw)
        yield srv
        nursery.cancel_scope.cancel()


def raw_line(command: str, data: Any = None, ext: str = '"e"', token: str = S.ADMIN.raw) -> bytes:
    """A request line with a raw JSON text for extID (to carry escapes json.dumps would not write)."""
    body = f',"data":{data}' if data is not None else ""
    return f'{{"command":"{command}","extID":{ext}{body},"__token":"{token}"}}\r\n'.encode()


async def ask(srv: Any, line: bytes) -> dict | None:
    conn = Conn(srv.connect_memory())
    await conn.send(line)
    return await conn.reply()


async def test_ext_id_with_a_lone_surrogate_gets_an_error_reply():
    """An extID holding a lone surrogate (\\ud800) killed the connection without a reply:
    parse_request accepted it and orjson could not encode the reply that echoes it."""
    async with fuzz_server() as srv:
        conn = Conn(srv.connect_memory())
        await conn.send(raw_line("Ping", ext='"\\ud800"'))
        reply = await conn.reply()
        assert reply is not None and reply["status"] == 400, reply
        await conn.probe_reply(await conn.probe())


async def test_lone_surrogate_ext_id_does_not_sink_the_batch():
    """A finance request whose extID held a lone surrogate made Store._replay raise
    UnicodeEncodeError: its whole batch failed (500 INTERNAL for every other command in it) and the request
    itself was never answered."""
    async with fuzz_server() as srv:
        assert (await ask(srv, raw_line("AddUser", '{"login":1000,"name":"a","currency":"EUR"}')))["status"] == 200
        first, good, bad = (Conn(srv.connect_memory()) for _ in range(3))
        srv.mainloop.pause()
        await first.send(raw_line("BalanceIn", '{"login":1000,"amount":1}', ext='"first"'))
        await trio.testing.wait_all_tasks_blocked()  # the mainLoop holds [first] as its next batch
        await good.send(raw_line("BalanceIn", '{"login":1000,"amount":2}', ext='"good"'))
        await bad.send(raw_line("BalanceIn", '{"login":1000,"amount":3}', ext='"bad\\udc00"'))
        await trio.testing.wait_all_tasks_blocked()  # good and bad wait in the inbox: one batch
        srv.mainloop.resume()
        assert (await first.reply())["status"] == 200
        good_reply = await good.reply()
        bad_reply = None
        with trio.move_on_after(0.5):
            bad_reply = await bad.reply()
        assert good_reply["status"] == 200, good_reply  # was: 500 INTERNAL, nothing applied
        assert bad_reply is not None and bad_reply["status"] == 400, bad_reply  # was: no reply at all


async def test_token_with_a_lone_surrogate_gets_an_error_reply():
    """A __token holding a lone surrogate killed the connection without a reply (PyJWT
    raised UnicodeEncodeError, which Tokens.verify let through)."""
    async with fuzz_server() as srv:
        reply = await ask(srv, b'{"command":"Ping","extID":"t","__token":"\\ud800"}\r\n')
        assert reply is not None and reply["status"] in (400, 401), reply


async def test_number_with_a_huge_exponent_gets_an_error_reply():
    """A number whose exponent has 19+ digits made json's parse_float=Decimal raise
    decimal.InvalidOperation, which parse_request did not catch: the connection died without a reply."""
    async with fuzz_server() as srv:
        assert (await ask(srv, raw_line("AddUser", '{"login":1000,"name":"a","currency":"EUR"}')))["status"] == 200
        reply = await ask(srv, raw_line("CreditIn", '{"login":1000,"amount":1e99999999999999999999,"comment":"x"}'))
        assert reply is not None and reply["status"] == 400, reply
        assert reply["error"] in ("INVALID_JSON", "INVALID_DATA"), reply


async def wallet_post(srv: Any, action: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(verify=False) as http:
        return await http.post(f"http://127.0.0.1:{srv.ports.wallet}/v1/{action}",
                               params={"authToken": S.WALLET_TOKEN}, content=body)


async def test_wallet_number_with_a_huge_exponent_is_invalid_parameter():
    """The same number in a wallet body got HTTP 500 with an empty body (parse_body let
    decimal.InvalidOperation through) instead of 200 INVALID_PARAMETER."""
    async with fuzz_server() as srv:
        r = await wallet_post(srv, "debit", b'{"sid":"s","userId":"1000","currency":"EUR","transaction":'
                                            b'{"id":"t","amount":1e99999999999999999999},"uuid":"u"}')
        assert r.status_code == 200 and r.json() == {"status": "INVALID_PARAMETER", "uuid": None}, r.content


async def test_wallet_uuid_with_a_lone_surrogate_is_invalid_parameter():
    """A wallet body whose uuid held a lone surrogate got HTTP 500 with an empty body
    (render could not encode the echoed uuid) instead of 200 INVALID_PARAMETER."""
    async with fuzz_server() as srv:
        r = await wallet_post(srv, "check", b'{"sid":"s","userId":"1000","uuid":"\\ud800"}')
        assert r.status_code == 200 and r.json()["status"] == "INVALID_PARAMETER", r.content


async def test_line_of_64k_plus_one_with_bare_newline_is_too_long():
    """LineBuffer accepted a line of 65,537 bytes ended by a bare \\n: it allowed one
    byte for a \\r that was not there. Over 64 KiB is LINE_TOO_LONG."""
    async with fuzz_server() as srv:
        line = S._padded_ping(S.MAX_LINE + 1)
        assert len(line) == 65_537
        reply = await ask(srv, line + b"\n")
        assert (reply["status"], reply.get("error")) == (400, "LINE_TOO_LONG"), reply


async def test_add_user_after_the_largest_login():
    """After an account with login 2**63-1, AddUser without a login picked 2**63, which
    SQLite cannot store: OverflowError failed the whole batch with 500 INTERNAL, and every later AddUser
    without a login failed the same way."""
    async with fuzz_server() as srv:
        top = await ask(srv, raw_line("AddUser", f'{{"login":{S.MAX_ID},"name":"top","currency":"EUR"}}'))
        assert top["status"] == 200
        after = await ask(srv, raw_line("AddUser", '{"name":"next","currency":"EUR"}'))
        assert after is not None and after["status"] != 500, after


async def test_cancel_naming_a_game_does_not_find_a_game_less_debit():
    """Found by the wallet fuzzer: a cancel naming a game.id reversed a debit that had no game.id. The
    contract finds a credit's or cancel's debit "within the same game.id when one is given", and a credit
    naming a game.id does not find that debit (BET_DOES_NOT_EXIST); the cancel must not either (and leaves a
    tombstone)."""
    async with fuzz_server() as srv:
        sids = await seed_wallet_world(srv)
        debit = {"sid": sids["sid:1000"], "userId": "1000", "currency": "EUR",
                 "transaction": {"id": "d1", "amount": 1}, "uuid": "u1"}
        assert (await wallet_post(srv, "debit", json.dumps(debit).encode())).json()["status"] == "OK"
        credit = {"userId": "1000", "currency": "EUR", "game": {"id": "g1"},
                  "transaction": {"id": "c1", "refId": "d1", "amount": 2}, "uuid": "u2"}
        assert (await wallet_post(srv, "credit", json.dumps(credit).encode())).json()["status"] == "BET_DOES_NOT_EXIST"
        cancel = {"userId": "1000", "currency": "EUR", "game": {"id": "g1"}, "transaction": {"id": "d1"}, "uuid": "u3"}
        reply = (await wallet_post(srv, "cancel", json.dumps(cancel).encode())).json()
        assert reply["status"] == "BET_DOES_NOT_EXIST", reply  # is: OK, the debit reversed
        assert reply["balance"] == 99, reply


async def test_wallet_unauthenticated_call_echoes_its_uuid():
    """Found by the wallet fuzzer after e90bc77 (the wallet's own HTTP driver): a call with no or a wrong
    provider token answers INVALID_TOKEN_ID with "uuid": null. The contract: every reply's uuid "echoes the
    request", and the provider matches answers by it."""
    async with fuzz_server() as srv:
        async with httpx.AsyncClient(verify=False) as http:
            r = await http.post(f"http://127.0.0.1:{srv.ports.wallet}/v1/check", params={"authToken": "wrong"},
                                content=b'{"sid":"s","userId":"1000","uuid":"u-1"}')
        assert r.json() == {"status": "INVALID_TOKEN_ID", "uuid": "u-1"}, r.content  # was: "uuid": null
