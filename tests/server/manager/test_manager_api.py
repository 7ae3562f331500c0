"""Manager API over memory streams: auth, session types, every bad input of the contract, reads, accounts."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import trio

from syncledger.server.manager import protocol
from syncledger.server.auth import SESSION_DEALER, SESSION_MANAGER, SESSION_USER, Tokens
from syncledger.server.testing import connect_memory, faults_of
from tests.conftest import add_account, admin_token, assert_ledger_ok, event_count, mem_client
from tests.pgcluster import backend, every_backend, ledger_db, mem_db, mem_server, pg_cluster, pg_url  # noqa: F401


class Raw:
    """A raw manager connection: bytes out, parsed reply lines in."""

    def __init__(self, stream: trio.abc.Stream):
        self.stream, self.lines = stream, protocol.LineBuffer(1 << 30)
        self.queue: list[bytes] = []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(self) -> dict:
        while not self.queue:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise EOFError
            self.lines.feed(data)
            self.queue.extend(self.lines)
        return json.loads(self.queue.pop(0), parse_float=Decimal)

    async def ask(self, data: bytes) -> dict:
        await self.send(data)
        return await self.reply()


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


@pytest.fixture
async def login_1000(mem_server):
    """Account 1000 with a balance of 100. It runs in the test's Trio run, on the test's clock: every test
    using it names ``autojump_clock`` itself (pytest-trio takes the clock only from the test function's
    own arguments; a clock requested here alone would be ignored)."""
    async with mem_client(mem_server) as c:
        await add_account(c, 1000)
        await c.call("BalanceIn", {"login": 1000, "amount": 100})
    return 1000


BAD_LINES = [
    (b"{not json\r\n", 400, "INVALID_JSON"),
    (b"[1, 2]\r\n", 400, "INVALID_REQUEST"),
    (b'{"extID": "x"}\r\n', 400, "INVALID_REQUEST"),
    (b'{"command": 5}\r\n', 400, "INVALID_REQUEST"),
    (b'{"command": "CreditIn", "extID": 12}\r\n', 400, "INVALID_REQUEST"),
    (b'{"command": "CreditIn", "data": [1]}\r\n', 400, "INVALID_DATA"),
    # NaN and infinities are read, then refused naming their field (and echoing the extID: CONTRACT.md)
    (b'{"command": "CreditIn", "data": {"login": 1000, "amount": NaN, "comment": "x"}}\r\n', 400, "INVALID_DATA"),
    (b'{"command": "CreditIn", "data": {"login": 1000, "amount": Infinity, "comment": "x"}}\r\n', 400,
     "INVALID_DATA"),
    # an integer longer than CPython parses is read as out of range (its field names it when validated, see
    # test_truth.py); this line carries no token, so it is refused for that first
    (b'{"command": "CreditIn", "data": {"login": 1000, "amount": 1' + b"0" * 5000 + b', "comment": "x"}}\r\n',
     401, "UNAUTHORIZED"),
    (b'{"command": "CreditIn", "data": ' + b"[" * 100_00 + b"]" * 100_00 + b"}\r\n", 400, "INVALID_JSON"),
    (b'{"command": "Cr\xff\xfeditIn"}\r\n', 400, "INVALID_JSON"),
]


@pytest.mark.parametrize("raw, status, code", BAD_LINES)
async def test_bad_lines_get_an_error_and_change_nothing(mem_server, login_1000, autojump_clock, raw, status, code):
    before = await event_count(mem_server)
    conn = Raw(connect_memory(mem_server))
    reply = await conn.ask(raw)
    assert (reply["status"], reply["error"]) == (status, code)
    assert reply["message"]
    pong = await conn.ask(line({"command": "Ping", "extID": "p", "__token": admin_token(mem_server)}))
    assert pong["status"] == 200 and pong["extID"] == "p"  # the connection is still usable
    assert await event_count(mem_server) == before
    await assert_ledger_ok(mem_server)


BAD_DATA = [
    ("CreditIn", {"login": "1000", "amount": 1, "comment": "x"}),
    ("CreditIn", {"login": 1000, "amount": "1.0", "comment": "x"}),
    ("CreditIn", {"login": 1000, "amount": 1.0000001, "comment": "x"}),
    ("CreditIn", {"login": 1000, "amount": -1, "comment": "x"}),
    ("CreditIn", {"login": 1000, "amount": 0, "comment": "x"}),
    ("CreditIn", {"login": 1000, "amount": 10**12 + 1, "comment": "x"}),
    ("CreditIn", {"login": 1000, "amount": 1}),  # comment is required for credit
    ("CreditIn", {"login": 1000, "amount": True, "comment": "x"}),
    ("BalanceIn", {"login": 1000}),
    ("BalanceOut", {"login": 1000, "amount": 1, "order": "7"}),
    ("BalanceIn", {"login": 2**64, "amount": 1}),
    ("DeleteBalance", {}),
    ("AddUser", {"name": "x", "currency": "euro"}),
    ("GetUser", {"login": None}),
    # (an unknown channel is reported, not refused: test_sdk_compat.py)
]


@pytest.mark.parametrize("command, data", BAD_DATA)
async def test_bad_data_is_400_and_changes_nothing(mem_server, login_1000, autojump_clock, command, data):
    before = await event_count(mem_server)
    conn = Raw(connect_memory(mem_server))
    reply = await conn.ask(line({"command": command, "extID": "e", "data": data,
                                 "__token": admin_token(mem_server)}))
    assert (reply["status"], reply["error"], reply["extID"]) == (400, "INVALID_DATA", "e")
    assert await event_count(mem_server) == before
    await assert_ledger_ok(mem_server)


async def test_line_too_long_closes_the_connection(mem_server, login_1000, autojump_clock):
    conn = Raw(connect_memory(mem_server))
    await conn.send(b'{"command": "Ping", "pad": "' + b"x" * (70 * 1024))
    reply = await conn.reply()
    assert (reply["status"], reply["error"]) == (400, "LINE_TOO_LONG")
    with pytest.raises(EOFError):
        await conn.reply()


async def test_exactly_64k_line_is_accepted(mem_server, login_1000, autojump_clock):
    conn = Raw(connect_memory(mem_server))
    head = b'{"command": "Ping", "extID": "big", "__token": "' + admin_token(mem_server).encode() + b'", "pad": "'
    tail = b'"}'
    body = head + b"x" * (protocol.MAX_LINE - len(head) - len(tail)) + tail
    assert len(body) == protocol.MAX_LINE
    reply = await conn.ask(body + b"\r\n")
    assert reply["status"] == 200


async def test_newline_only_framing_and_pipelined_lines_in_one_packet(mem_server, login_1000, autojump_clock):
    conn = Raw(connect_memory(mem_server))
    tok = admin_token(mem_server)
    await conn.send(b"".join(json.dumps({"command": "Ping", "extID": f"p{i}", "__token": tok}).encode() + b"\n"
                             for i in range(50)))
    replies = [await conn.reply() for _ in range(50)]
    assert sorted(r["extID"] for r in replies) == sorted(f"p{i}" for i in range(50))


@pytest.mark.parametrize("token, code", [
    (None, "UNAUTHORIZED"),
    ("", "UNAUTHORIZED"),
    ("not-a-jwt", "INVALID_TOKEN"),
    ("forged", "INVALID_TOKEN"),
    ("expired", "TOKEN_EXPIRED"),
])
async def test_401_for_missing_forged_or_expired_tokens(mem_server, login_1000, autojump_clock, token, code):
    # (made here, not in the parameters: a token holds the time, and every xdist worker must see the same ids)
    if token == "forged":
        token = Tokens("another-secret-of-at-least-32-bytes!!").issue(1, 3)[0]
    elif token == "expired":
        token = mem_server.tokens.issue(1, 3, ttl=-1)[0]
    before = await event_count(mem_server)
    async with mem_client(mem_server, token=token) as c:
        reply = await c.call("CreditIn", {"login": 1000, "amount": 1, "comment": "x"})
    assert (reply.status, reply.error) == (401, code)
    assert await event_count(mem_server) == before


@every_backend
async def test_token_expires_on_the_server_clock(mem_server, login_1000, autojump_clock):
    """A token is good until its ``exp`` on the server's clock and refused from then on (MockClock: the
    minute passes instantly, and the two calls land just before and just after ``exp``)."""
    token, exp = mem_server.tokens.issue(1, SESSION_MANAGER, ttl=60)
    async with mem_client(mem_server, token=token) as c:
        assert (await c.call("Ping")).ok
        await trio.sleep(exp - mem_server.wall_time() - 0.5)
        assert (await c.call("Ping")).ok  # half a second before exp
        await trio.sleep(1)
        reply = await c.call("Ping")
    assert (reply.status, reply.error) == (401, "TOKEN_EXPIRED")


@every_backend
async def test_403_for_session_user_and_dealer_rights(mem_server, login_1000, autojump_clock):
    before = await event_count(mem_server)
    async with mem_client(mem_server, token=admin_token(mem_server, 5, SESSION_USER)) as user:
        for command in ("CreditIn", "CreditInSync", "BalanceOut", "DeleteCredit", "GetUser", "AddUser"):
            reply = await user.call(command, {"login": 1000, "amount": 1, "comment": "x"})
            assert (reply.status, reply.error) == (403, "FORBIDDEN"), command
    async with mem_client(mem_server, token=admin_token(mem_server, 6, SESSION_DEALER)) as dealer:
        assert (await dealer.call("AddUser", {"name": "x", "currency": "EUR"})).status == 403
        assert (await dealer.call("CreditInSync", {"login": 1000, "amount": 1, "comment": "x"})).ok
    assert await event_count(mem_server) == before + 1


async def test_unknown_command_is_404(mem_server, login_1000, autojump_clock):
    async with mem_client(mem_server) as c:
        reply = await c.call("TransferEverything", {})
    assert (reply.status, reply.error) == (404, "UNKNOWN_COMMAND")


async def test_empty_ext_id_is_refused(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        login = await add_account(c)
        reply = await c.call("CreditIn", {"login": login, "amount": 1, "comment": "x"}, ext_id="")
    assert (reply.status, reply.error) == (400, "INVALID_REQUEST")


@every_backend
async def test_login_with_stored_manager(start_server, backend, ledger_db):
    from syncledger.ledger import Store
    from syncledger.server.ops import managers

    db = ledger_db
    store = Store(db)
    managers.add_manager(store.db, 42, "s3cret", SESSION_MANAGER, 0)
    store.close()
    srv = await start_server(db=db, backend=backend)
    async with mem_client(srv, token=None) as c:
        wrong = await c.call("Login", {"login": 42, "password": "nope"})
        unknown = await c.call("Login", {"login": 43, "password": "s3cret"})
        assert (wrong.status, wrong.error) == (401, "INVALID_CREDENTIALS")
        assert (unknown.status, unknown.error) == (401, "INVALID_CREDENTIALS")
        assert (await c.call("Ping")).status == 401
        good = await c.login(42, "s3cret")
        assert good.ok and good.data["session"] == SESSION_MANAGER and good.data["expires_at"] > 0
        assert (await c.call("Ping")).ok
    async with mem_client(srv, token=good.data["token"]) as other:  # (on the cluster: the other node)
        assert (await other.call("Ping")).ok


@every_backend
async def test_accounts_and_reads(mem_server, login_1000, autojump_clock):
    async with mem_client(mem_server) as c:
        dup = await c.call("AddUser", {"login": 1000, "name": "again", "currency": "EUR"})
        assert (dup.status, dup.error) == (409, "ACCOUNT_EXISTS")
        auto = await c.call("AddUser", {"name": "next", "currency": "USD", "group": "vip"})
        assert auto.ok and auto.data["login"] == 1001 and auto.data["group"] == "vip"
        missing = await c.call("GetUser", {"login": 5})
        assert (missing.status, missing.error) == (404, "ACCOUNT_NOT_FOUND")
        nobody = await c.call("CreditIn", {"login": 5, "amount": 1, "comment": "x"})
        assert (nobody.status, nobody.error) == (404, "ACCOUNT_NOT_FOUND")
        ok = await c.call("BalanceOut", {"login": 1000, "amount": Decimal("0.000001")})
        assert ok.data == {"accepted": True, "order": ok.data["order"], "state": 10, "login": 1000, "cmd": 8,
                           "amount": Decimal("-0.000001")}
        trade = await c.call("GetTrade", {"order": ok.data["order"]})
        assert trade.data["profit"] == Decimal("-0.000001") and trade.data["balance"] == Decimal("99.999999")
        assert (await c.call("GetTrade", {"order": 10**9})).error == "ORDER_NOT_FOUND"
        trades = await c.call("GetTrades", {"login": 1000})
        assert [t["cmd"] for t in trades.data["trades"]] == [6, 8]
        user = await c.call("GetUser", {"login": 1000})
        assert user.data["balance"] == Decimal("99.999999") and user.data["currency"] == "EUR"
        delete = await c.call("DeleteBalance", {"order": ok.data["order"]})
        assert delete.data["state"] == 12
        twice = await c.call("DeleteBalance", {"order": ok.data["order"]})
        assert (twice.status, twice.error) == (409, "ORDER_DELETED")
        session = await c.call("OpenGameSession", {"login": 1000})
        assert session.ok and len(session.data["sid"]) >= 20
    await assert_ledger_ok(mem_server)


@pytest.mark.parametrize("raw, code", [
    (b'{"command": "Ping", "extID": "\\ud800", "__token": "TOKEN"}\r\n', "INVALID_REQUEST"),  # cannot be echoed
    (b'{"command": "CreditIn", "data": {"login": 1000, "amount": 1e99999999999999999999, "comment": "x"}}\r\n',
     "INVALID_JSON"),
])
async def test_undecodable_strings_and_numbers_are_refused(mem_server, login_1000, autojump_clock, raw, code):
    conn = Raw(connect_memory(mem_server))
    reply = await conn.ask(raw.replace(b"TOKEN", admin_token(mem_server).encode()))
    assert (reply["status"], reply["error"]) == (400, code) and "extID" not in reply
    assert (await conn.ask(line({"command": "Ping", "extID": "p", "__token": admin_token(mem_server)})))["status"] \
        == 200


async def test_line_of_64k_plus_one_byte_ended_by_newline_is_too_long(mem_server, login_1000, autojump_clock):
    conn = Raw(connect_memory(mem_server))
    reply = await conn.ask(b"x" * (protocol.MAX_LINE + 1) + b"\n")
    assert (reply["status"], reply["error"]) == (400, "LINE_TOO_LONG")


@every_backend
async def test_get_trades_says_when_there_are_more(mem_server, login_1000, autojump_clock, monkeypatch):
    from syncledger.server.manager import commands

    monkeypatch.setattr(commands, "MAX_TRADES", 2)
    async with mem_client(mem_server) as c:
        first = await c.call("GetTrades", {"login": 1000})
        await c.call("BalanceIn", {"login": 1000, "amount": 1})
        await c.call("BalanceIn", {"login": 1000, "amount": 1})
        full = await c.call("GetTrades", {"login": 1000})
    assert len(first.data["trades"]) == 1 and first.data["more"] is False
    assert len(full.data["trades"]) == 2 and full.data["more"] is True


async def test_shutdown_answers_and_flushes_every_request_it_read(start_server, nursery, autojump_clock):
    srv = await start_server(db=":memory:", threaded=False)
    async with mem_client(srv) as c:
        login = await add_account(c)
        faults_of(srv).pause()
        calls = [c.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(20)]
        await trio.sleep(0.01)
        nursery.start_soon(srv.shutdown)
        replies = [await call.reply() for call in calls]  # ConnectionLost if a reply was not flushed
    assert all(r.ok for r in replies)
