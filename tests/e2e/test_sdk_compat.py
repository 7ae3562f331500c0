"""The manager API as the platform's official SDKs use it (issue 11): a client that decodes each read on its
own, rewrites ' to " before parsing, matches answers only by extID, subscribes to quote channels too, and
resumes from the seq inside an event's data. MockClock on memory streams where time matters."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
import trio

from syncledger.server.auth import SESSION_USER
from syncledger.server.testing import Harness, connect_memory
from tests.conftest import add_account, assert_ledger_ok, mem_client, tcp_client

NAMES = ["O'Brien deposit", "Zoë's bonus €5", "中文 comment", "emoji 😀 credit", "it's 'quoted'", "a,} b,] c, ]"]
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


class SdkLike:
    """What the JS/PHP/Python SDKs do with the bytes they read, on one connection: decode each read on its
    own, and (PHP's STPlatform::parseJson) turn ' into " and drop a comma before } or ]."""

    def __init__(self, stream: trio.abc.Stream, token: str):
        self.stream, self.token = stream, token
        self.raw = bytearray()  # every byte read, for the split test
        self.text = ""
        self.answers: dict[str, dict] = {}
        self.events: list[dict] = []
        self.unmatched: list[dict] = []
        self.n = 0

    async def send(self, command: str, data: dict | None = None, ext_id: str | None = None) -> str:
        self.n += 1
        ext_id = ext_id or f"sdk-{self.n}"
        msg = {"command": command, "extID": ext_id, "data": data or {}, "__token": self.token}
        await self.stream.send_all(json.dumps(msg, ensure_ascii=False, default=str).encode() + b"\n")
        return ext_id

    async def call(self, command: str, data: dict | None = None, ext_id: str | None = None) -> dict:
        ext_id = await self.send(command, data, ext_id)
        while ext_id not in self.answers:
            await self.read()
        return self.answers.pop(ext_id)

    async def read(self) -> None:
        chunk = await self.stream.receive_some(7)  # small reads: characters would be split across them
        assert chunk, "the server closed the connection"
        self.raw += chunk
        self.text += chunk.decode("utf-8")  # each read on its own, strictly, as the SDKs do
        *lines, self.text = self.text.split("\n")
        for line in lines:
            repaired = _TRAILING_COMMA.sub(r"\1", line.replace("'", '"'))  # the PHP SDK's two "repairs"
            msg = json.loads(repaired, parse_float=Decimal)
            if msg.get("event") == "trade:event":
                self.events.append(msg)
            elif "extID" in msg:
                self.answers[msg["extID"]] = msg
            else:
                self.unmatched.append(msg)

    async def event(self) -> dict:
        while not self.events:
            await self.read()
        return self.events.pop(0)


@pytest.fixture
async def sdk(mem_server):
    h = Harness(mem_server)
    return SdkLike(connect_memory(mem_server), h.token)


async def test_text_survives_every_split_and_the_apostrophe_rewrite(mem_server, sdk, autojump_clock):
    login = (await sdk.call("AddUser", {"name": "Zoë O'Brien", "currency": "EUR"}))["data"]["login"]
    assert (await sdk.call("Subscribe", {"chanels": ["trade:event"]}))["status"] == 200
    for name in NAMES:
        reply = await sdk.call("CreditInSync", {"login": login, "amount": 1, "comment": name})
        assert reply["status"] == 200 and reply["data"]["comment"] == name
        assert (await sdk.event())["data"]["comment"] == name
    user = await sdk.call("GetUser", {"login": login})
    assert user["data"]["name"] == "Zoë O'Brien"
    raw = bytes(sdk.raw)
    assert raw.isascii() and b"'" not in raw  # plain ASCII on the wire
    for k in range(len(raw)):  # any split decodes piece by piece to the same text
        assert raw[:k].decode() + raw[k:].decode() == raw.decode()
    assert not sdk.unmatched


async def test_server_messages_never_quote_with_an_apostrophe(mem_server, sdk, autojump_clock):
    replies = [await sdk.call("NoSuchCommand"), await sdk.call("BalanceIn", {"login": "x"}),
               await sdk.call("AddUser", {"name": "n", "currency": "euro"}),
               await sdk.call("BalanceIn", {"login": 1, "amount": 1}, ext_id="e'1")]
    for reply in replies:
        assert reply["status"] >= 400 and "'" not in reply["message"], reply
    assert replies[3]["extID"] == "e'1"  # the value is unchanged; only its bytes are escaped


@pytest.mark.parametrize("line, field", [
    (b'{"command":"BalanceIn","extID":"x1","data":{"login":1000,"amount":NaN},"__token":"T"}', "amount"),
    (b'{"command":"BalanceIn","extID":"x1","data":{"login":1000,"amount":-Infinity},"__token":"T"}', "amount"),
    (b'{"command":"CreditIn","extID":"x1","data":{"login":1000,"amount":1,"comment":"\\ud800"},"__token":"T"}',
     "comment"),
])
async def test_values_json_cannot_carry_are_refused_with_the_ext_id(mem_server, sdk, autojump_clock, line, field):
    await sdk.stream.send_all(line.replace(b'"T"', json.dumps(sdk.token).encode()) + b"\n")
    while "x1" not in sdk.answers:
        await sdk.read()
    reply = sdk.answers["x1"]
    assert (reply["status"], reply["error"]) == (400, "INVALID_DATA") and field in reply["message"]


async def test_only_a_line_that_is_not_json_goes_without_ext_id(mem_server, sdk, autojump_clock):
    await sdk.stream.send_all(b'{"command":"Ping","extID":"cut","data":{\n')  # malformed, extID readable
    await sdk.stream.send_all(b'this is not json\n')
    reply = await sdk.call("Ping")
    assert reply["status"] == 200 and sdk.answers.pop("cut")["error"] == "INVALID_JSON"
    assert [m["error"] for m in sdk.unmatched] == ["INVALID_JSON"]


async def test_subscriptions_are_additive_as_on_the_platform(mem_server, sdk, autojump_clock):
    login = (await sdk.call("AddUser", {"name": "p"}))["data"]["login"]
    first = await sdk.call("Subscribe", {"chanels": ["trade:event", "EURUSD"]})
    assert first["status"] == 200 and first["data"]["channels"] == ["trade:event"]
    assert first["data"]["unknown"] == ["EURUSD"]
    again = await sdk.call("Subscribe", {"chanels": ["trade:event"]})
    assert again["status"] == 200 and again["data"]["channels"] == ["trade:event"]  # not an error
    assert (await sdk.call("Unsubscribe", {"chanels": ["EURUSD"]}))["data"]["channels"] == ["trade:event"]
    await sdk.call("BalanceIn", {"login": login, "amount": 5})
    event = await sdk.event()
    assert event["data"]["seq"] == event["seq"]  # what an SDK user resumes from
    assert (await sdk.call("Unsubscribe", {}))["data"]["channels"] == []
    await sdk.call("BalanceIn", {"login": login, "amount": 6})
    await sdk.call("Ping")
    assert not sdk.events  # unsubscribed


async def test_an_sdk_user_resumes_from_the_seq_inside_data(mem_server, autojump_clock):
    h = Harness(mem_server)
    first = SdkLike(connect_memory(mem_server), h.token)
    login = (await first.call("AddUser", {"name": "p"}))["data"]["login"]
    await first.call("Subscribe", {"chanels": ["trade:event"]})
    for i in range(3):
        await first.call("BalanceIn", {"login": login, "amount": i + 1})
    data = (await first.event())["data"]  # an SDK hands its user this, and nothing else
    await first.stream.aclose()
    resumed = SdkLike(connect_memory(mem_server), h.token)
    await resumed.call("Subscribe", {"chanels": ["trade:event"], "from_seq": data["seq"]})
    got = [(await resumed.event())["data"]["seq"] for _ in range(2)]
    assert got == [data["seq"] + 1, data["seq"] + 2]


async def test_sync_answer_is_exactly_the_event_data(mem_server, sdk, autojump_clock):
    login = (await sdk.call("AddUser", {"name": "p"}))["data"]["login"]
    await sdk.call("Subscribe", {"chanels": ["trade:event"]})
    reply = await sdk.call("CreditInSync", {"login": login, "amount": 3, "comment": "c"}, ext_id="s1")
    event = await sdk.event()
    assert reply["data"] == event["data"] and reply["data"]["seq"] == event["seq"]
    replay = await sdk.call("CreditInSync", {"login": login, "amount": 3, "comment": "c"}, ext_id="s1")
    assert replay["data"] == event["data"]


# ---- connections: the SDKs send no heartbeat


async def test_an_authenticated_connection_is_never_closed_for_idleness(mem_server, sdk, autojump_clock):
    assert (await sdk.call("Ping"))["status"] == 200
    await trio.sleep(12 * 3600)  # (tokens themselves last 24 h)
    assert (await sdk.call("Ping"))["status"] == 200


async def test_an_unauthenticated_connection_is_closed_after_the_idle_timeout(start_server, autojump_clock, caplog):
    caplog.set_level("INFO", logger="syncledger")
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, idle_timeout=60)
        stream = connect_memory(srv)
        start = trio.current_time()
        for _ in range(10):  # bytes are no activity: only a valid token is
            await stream.send_all(b"\n")
            await trio.sleep(5)
        assert await stream.receive_some(100) == b""
        assert 60 <= trio.current_time() - start < 61
        nursery.cancel_scope.cancel()
    assert "no valid token within 60 s" in caplog.text


async def test_every_close_is_logged_with_its_reason(mem_server, autojump_clock, caplog):
    caplog.set_level("INFO", logger="syncledger")
    async with mem_client(mem_server) as c:
        assert (await c.call("Ping")).ok
    await trio.sleep(1)
    assert "closed by the peer" in caplog.text


# ---- accounts as the SDKs send them


async def test_add_user_takes_the_sdk_fields(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        reply = await c.call("AddUser", {"name": "Ann", "group": "vip", "password": "s3cret-pass", "leverage": 500,
                                         "email": "ann@example.com", "enable": 1})  # as the PHP example sends it
        assert reply.ok, reply
        user = (await c.call("GetUser", {"login": reply.data["login"]})).data
    assert {k: user[k] for k in ("name", "group", "currency", "leverage", "email", "enable")} == {
        "name": "Ann", "group": "vip", "currency": "USD", "leverage": 500, "email": "ann@example.com",
        "enable": True}
    async with mem_client(mem_server, token=None) as anon:
        login = await anon.call("Login", {"login": user["login"], "password": "s3cret-pass"})
        assert login.ok and login.data["session"] == SESSION_USER
        assert (await anon.call("Login", {"login": user["login"], "password": "wrong"})).status == 401
    async with mem_client(mem_server, token=login.data["token"]) as as_user:
        assert (await as_user.call("Ping")).ok
        assert (await as_user.call("BalanceIn", {"login": user["login"], "amount": 1})).status == 403


async def test_the_default_currency_is_the_servers(start_server, autojump_clock):
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, default_currency="EUR")
        async with mem_client(srv) as c:
            assert (await c.call("AddUser", {"name": "x"})).data["currency"] == "EUR"
        nursery.cancel_scope.cancel()


async def test_a_disabled_account_takes_no_finance_command_and_its_wallet_is_locked(mem_server, autojump_clock):
    h = Harness(mem_server)
    async with mem_client(mem_server) as c:
        login = (await c.call("AddUser", {"name": "off", "currency": "EUR", "enable": False})).data["login"]
        for command in ("BalanceIn", "CreditInSync"):
            reply = await c.call(command, {"login": login, "amount": 1, "comment": "c"})
            assert (reply.status, reply.error) == (403, "ACCOUNT_DISABLED")
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    body = {"sid": sid, "userId": str(login), "currency": "EUR", "game": {"id": "g"},
            "transaction": {"id": "t", "amount": 1}, "uuid": "u"}
    assert (await h.wallet("debit", body))["status"] == "ACCOUNT_LOCKED"
    assert (await h.wallet("balance", {**body}))["status"] == "ACCOUNT_LOCKED"
    await assert_ledger_ok(mem_server)


async def test_get_users_pages_by_login(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        for i in range(7):
            await c.call("AddUser", {"name": f"u{i}", "group": "even" if i % 2 == 0 else "odd"})
        pages, start = [], 0
        while start is not None:
            page = (await c.call("GetUsers", {"from_login": start, "limit": 3})).data
            pages.append([u["login"] for u in page["users"]])
            start = page["next_from_login"]
        assert pages == [[1000, 1001, 1002], [1003, 1004, 1005], [1006]]
        odd = (await c.call("GetUsers", {"group": "odd"})).data
        assert [u["login"] for u in odd["users"]] == [1001, 1003, 1005] and odd["next_from_login"] is None
        assert (await c.call("GetUsers", {"limit": 0})).status == 400


# ---- a read that fails fails alone


async def test_a_failing_read_fails_alone(mem_server, autojump_clock, monkeypatch):
    async with mem_client(mem_server) as c:
        login = await add_account(c)

        def broken(*args):
            raise RuntimeError("disk trouble while reading")
        monkeypatch.setattr("syncledger.ledger.reads.records", broken)
        trades = c.start("GetTrades", {"login": login})
        ping = c.start("Ping")
        credit = c.start("BalanceIn", {"login": login, "amount": 1})
        trades, ping, credit = await trades.reply(), await ping.reply(), await credit.reply()
        assert (trades.status, trades.error) == (500, "INTERNAL")
        assert ping.ok and credit.ok
        assert (await c.call("GetUser", {"login": login})).ok  # the connection goes on


async def test_the_client_makes_128_bit_ext_ids_and_takes_its_own(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        call = c.start("Ping")
        assert len(call.ext_id) == 32 and int(call.ext_id, 16) >= 0
        assert (await call.reply()).ok
        assert (await c.call("Ping", ext_id="my-own-retry-key")).ext_id == "my-own-retry-key"


async def test_over_real_sockets(server):
    """The same SDK behaviour end to end on a real socket."""
    h = Harness(server)
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports.tcp)
    sdk = SdkLike(stream, h.token)
    login = (await sdk.call("AddUser", {"name": "Zoë"}))["data"]["login"]
    await sdk.call("Subscribe", {"chanels": ["trade:event", "EURUSD"]})
    assert (await sdk.call("CreditInSync", {"login": login, "amount": 2, "comment": "O'Brien"}))["status"] == 200
    assert (await sdk.event())["data"]["comment"] == "O'Brien"
    assert bytes(sdk.raw).isascii()
    await stream.aclose()
    async with tcp_client(server) as c:
        assert (await c.call("GetUser", {"login": login})).data["name"] == "Zoë"
