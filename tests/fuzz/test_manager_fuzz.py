"""Fuzzing the manager TCP API: each example starts a fresh fuzz server and seeds the manager world, then
sends a few generated lines on one connection, each checked against the manager oracle (what is checked:
``tests/fuzz/__init__.py``); three written-out examples of flows that random draws reach rarely run first.
Regression tests of the bugs the fuzzer found in the manager API follow."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import event, example, given

from syncledger.server.testing import connect_memory
from tests.fuzz import strategies as S
from tests.fuzz.connection import Conn
from tests.fuzz.harness.manager import ManagerHarness, seed_manager_world
from tests.fuzz.harness.server import COUNTS, EXAMPLE_TIMEOUT, ErrorLog, fuzz_server, fuzz_settings, start_fuzz_server


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


# ---------------------------------------------------------------------------------------------- bugs found
# Regression tests of what the fuzzer found in the manager API (each bug below crashed a connection, answered
# HTTP 500, sank a batch or let an oversized line through).


def raw_line(command: str, data: Any = None, ext: str = '"e"', token: str = S.ADMIN.raw) -> bytes:
    """A request line with a raw JSON text for extID (to carry escapes json.dumps would not write)."""
    body = f',"data":{data}' if data is not None else ""
    return f'{{"command":"{command}","extID":{ext}{body},"__token":"{token}"}}\r\n'.encode()


async def ask(srv: Any, line: bytes) -> dict | None:
    conn = Conn(connect_memory(srv))
    await conn.send(line)
    return await conn.reply()


async def test_ext_id_with_a_lone_surrogate_gets_an_error_reply():
    """An extID holding a lone surrogate (\\ud800) killed the connection without a reply:
    parse_request accepted it and orjson could not encode the reply that echoes it."""
    async with fuzz_server() as srv:
        conn = Conn(connect_memory(srv))
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
        first, good, bad = (Conn(connect_memory(srv)) for _ in range(3))
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
