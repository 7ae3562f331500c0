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
import json
import logging
import os
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, example, given, settings

from syncledger.ledger import verify
from syncledger.server.app import Config, serve
from tests.fuzz import strategies as S
from tests.fuzz.connection import READ_TIMEOUT, Conn, check_echo, check_message, check_runs
from tests.fuzz.oracle.manager import (ACCEPT_STATE, TS_CLOSED, TS_DELETED, KeyRec, ManagerOracle, add_user_payload,
                                       check_account, payload_of)
from tests.fuzz.oracle.wallet import ANY, WalletModel
from tests.fuzz.snapshot import Snap, assert_unchanged, expect_counts, take_snapshot
from tests.fuzz.strategies import SECRET
from tests.fuzz.strict import Failed, _no_constant, micro, strict_json

EXAMPLES = int(os.environ.get("SYNCLEDGER_FUZZ_EXAMPLES", "0") or 0)

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
