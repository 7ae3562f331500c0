"""Game-wallet HTTP API over real HTTP on loopback: rounds, retries, tombstones, validation, concurrency."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import httpx
import orjson
import pytest
import trio

from syncledger.ledger import codec
from syncledger.ledger.wallet import WalletResult
from tests.conftest import add_account, assert_ledger_ok, event_count, tcp_client
from tests.pgcluster import backend, every_backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)

TOKEN = "provider-shared-token"


def dumps(body: dict) -> bytes:
    """JSON with Decimals as exact numbers, as a provider sends them."""
    return orjson.dumps(body, default=lambda d: orjson.Fragment(str(d).encode()))


@pytest.fixture
async def wallet_server(start_server, backend, ledger_db):
    """On a ledger file; a test marked ``every_backend`` runs on PostgreSQL and on two nodes (calls alternating)."""
    return await start_server(db=ledger_db, wallet_port=0, wallet_token=TOKEN, game_session_ttl=1, backend=backend)


class Provider:
    """The game provider's side: calls the operator's wallet and keeps nothing but ids. Each call names its
    round (``game``, the game.id)."""

    def __init__(self, srv, http: httpx.AsyncClient, login: int, sid: str, currency: str = "EUR"):
        self.srv, self.http, self.login, self.sid, self.currency = srv, http, login, sid, currency
        self.n = 0

    async def post(self, action: str, body: dict | bytes, *, token: str | None = TOKEN, query: bool = True,
                   header: bool = True, extra_headers: dict | None = None) -> dict:
        url = f"http://127.0.0.1:{self.srv.ports.wallet}/v1/{action}"
        params = {"authToken": token} if token is not None and query else {}
        headers = {"Authorization": f"Bearer {token}"} if token is not None and header else {}
        headers.update(extra_headers or {})
        content = body if isinstance(body, bytes) else dumps(body)
        response = await self.http.post(url, params=params, headers=headers, content=content)
        assert response.status_code == 200
        return json.loads(response.content, parse_float=Decimal)

    def body(self, txid: str, amount=None, ref_id: str | None = None, game: str | None = "g-1", **over) -> dict:
        self.n += 1
        tx = {"id": txid}
        if ref_id is not None:
            tx["refId"] = ref_id
        if amount is not None:
            tx["amount"] = amount
        body = {"sid": self.sid, "userId": str(self.login), "currency": self.currency, "transaction": tx,
                "uuid": f"uuid-{self.n}"}
        if game is not None:
            body["game"] = {"id": game, "type": "plinko", "session": "gs-1"}
        body.update(over)
        return body

    async def debit(self, txid: str, amount, game: str | None = "g-1", ref_id: str | None = None, **over) -> dict:
        return await self.post("debit", self.body(txid, amount, ref_id, game, **over))

    async def credit(self, txid: str, ref_id: str, amount, game: str | None = "g-1", **over) -> dict:
        return await self.post("credit", self.body(txid, amount, ref_id, game, **over))

    async def cancel(self, txid: str, game: str | None = "g-1", **over) -> dict:
        return await self.post("cancel", self.body(txid, game=game, **over))

    async def balance(self) -> Decimal:
        reply = await self.post("balance", {"sid": self.sid, "userId": str(self.login), "currency": self.currency})
        assert reply["status"] == "OK", reply
        return reply["balance"]


@pytest.fixture
async def provider(wallet_server):
    async with tcp_client(wallet_server) as c:
        login = await add_account(c)
        assert (await c.call("BalanceIn", {"login": login, "amount": 100})).ok
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    async with httpx.AsyncClient(timeout=30) as http:  # a loaded machine may take more than httpx's 5 s
        yield Provider(wallet_server, http, login, sid)
    await assert_ledger_ok(wallet_server)


@every_backend
async def test_full_round_debit_then_credit(provider):
    check = await provider.post("check", {"sid": provider.sid, "userId": str(provider.login), "uuid": "u0"})
    assert check == {"status": "OK", "sid": provider.sid, "uuid": "u0"}
    bet = await provider.debit("bet-1", Decimal("10.5"))
    assert (bet["status"], bet["balance"], bet["bonus"], bet["uuid"]) == ("OK", Decimal("89.5"), 0, "uuid-1")
    win = await provider.credit("win-1", "bet-1", Decimal("1.556179"))
    assert (win["status"], win["balance"]) == ("OK", Decimal("91.056179"))
    balance = await provider.post("balance", {"sid": provider.sid, "userId": str(provider.login),
                                              "currency": "EUR", "uuid": "u9"})
    assert (balance["status"], balance["balance"], balance["uuid"]) == ("OK", Decimal("91.056179"), "u9")
    assert "retransmission" not in win and "retransmission" not in balance


async def test_lost_round_is_a_credit_of_zero(provider):
    await provider.debit("bet-2", 5)
    lost = await provider.credit("win-2", "bet-2", 0)
    assert (lost["status"], lost["balance"]) == ("OK", Decimal(95))
    again = await provider.credit("win-2", "bet-2", 0)
    assert (again["status"], again["balance"]) == ("BET_ALREADY_SETTLED", Decimal(95))


async def expired_sid(srv, login: int) -> str:
    """A sid issued for ``login`` and idle for longer than the server's game_session_ttl."""
    old = srv.now() - srv.config.game_session_ttl - 10

    def insert() -> None:
        srv.store.db.execute("INSERT INTO game_sessions VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                             (f"old-sid-{login}", login, old, old))
    await srv.mainloop.read(insert)
    return f"old-sid-{login}"


@every_backend
async def test_credit_accepted_after_sid_expiry_debit_refused(provider):
    await provider.debit("bet-3", 5)
    provider.sid = await expired_sid(provider.srv, provider.login)
    assert (await provider.debit("bet-4", 5, game="g-2"))["status"] == "INVALID_SID"
    assert (await provider.post("check", {"sid": provider.sid, "userId": str(provider.login)}))["status"] == \
        "INVALID_SID"
    win = await provider.credit("win-3", "bet-3", 7)
    assert (win["status"], win["balance"]) == ("OK", Decimal(102))


@every_backend
async def test_retries_never_move_money_twice(provider):
    srv = provider.srv
    first = await provider.debit("bet-5", 10)
    before = await event_count(srv)
    for _ in range(3):
        again = await provider.debit("bet-5", 10, uuid="another-uuid")
        assert (again["status"], again["balance"]) == ("BET_ALREADY_EXIST", first["balance"])
    changed = await provider.debit("bet-5", 11)
    assert changed["status"] == "INVALID_PARAMETER"
    assert (await provider.credit("win-5", "bet-5", 3))["status"] == "OK"
    for _ in range(3):
        assert (await provider.credit("win-5", "bet-5", 3))["status"] == "BET_ALREADY_SETTLED"
    assert (await provider.credit("win-5", "bet-5", 4))["status"] == "INVALID_PARAMETER"
    assert (await provider.credit("win-5b", "bet-5", 3))["status"] == "BET_ALREADY_SETTLED"
    assert await event_count(srv) == before + 1
    await provider.debit("bet-6", 10, game="g-2")
    assert (await provider.cancel("bet-6", game="g-2"))["balance"] == Decimal(93)
    for _ in range(3):
        assert (await provider.cancel("bet-6", game="g-2"))["status"] == "BET_ALREADY_SETTLED"
    async with tcp_client(srv) as c:
        user = await c.call("GetUser", {"login": provider.login})
    assert user.data["balance"] == Decimal(93)


@every_backend
async def test_cancel_after_credit_and_credit_after_cancel(provider):
    await provider.debit("bet-7", 10)
    await provider.credit("win-7", "bet-7", 20)
    late_cancel = await provider.cancel("bet-7")
    assert (late_cancel["status"], late_cancel["balance"]) == ("BET_ALREADY_SETTLED", Decimal(110))
    await provider.debit("bet-8", 10, game="g-2")
    cancelled = await provider.cancel("bet-8", game="g-2")
    assert (cancelled["status"], cancelled["balance"]) == ("OK", Decimal(110))
    late_credit = await provider.credit("win-8", "bet-8", 50, game="g-2")
    assert (late_credit["status"], late_credit["balance"]) == ("BET_ALREADY_SETTLED", Decimal(110))


@every_backend
async def test_credit_or_cancel_before_debit_leaves_a_tombstone(provider):
    early = await provider.credit("win-9", "bet-9", 5)
    assert (early["status"], early["balance"]) == ("BET_DOES_NOT_EXIST", Decimal(100))
    assert (await provider.credit("win-9", "bet-9", 5))["status"] == "BET_DOES_NOT_EXIST"
    debit = await provider.debit("bet-9", 5)
    assert (debit["status"], debit["balance"]) == ("FINAL_ERROR_ACTION_FAILED", Decimal(100))
    assert (await provider.debit("bet-9", 5))["status"] == "FINAL_ERROR_ACTION_FAILED"
    assert (await provider.cancel("bet-10", game="g-2"))["status"] == "BET_DOES_NOT_EXIST"
    assert (await provider.debit("bet-10", 1, game="g-2"))["status"] == "FINAL_ERROR_ACTION_FAILED"
    async with tcp_client(provider.srv) as c:
        assert (await c.call("GetUser", {"login": provider.login})).data["balance"] == Decimal(100)


@every_backend
async def test_insufficient_funds_stays_failed(provider):
    short = await provider.debit("bet-11", 1000)
    assert (short["status"], short["balance"]) == ("INSUFFICIENT_FUNDS", Decimal(100))
    async with tcp_client(provider.srv) as c:
        await c.call("BalanceIn", {"login": provider.login, "amount": 5000})
    assert (await provider.debit("bet-11", 1000))["status"] == "INSUFFICIENT_FUNDS"


async def test_wrong_currency_and_wrong_user(provider, wallet_server):
    before = await event_count(wallet_server)
    assert (await provider.debit("bet-12", 1, currency="USD"))["status"] == "INVALID_PARAMETER"
    assert (await provider.debit("bet-12", 1, userId="999999"))["status"] == "INVALID_PARAMETER"
    assert (await provider.debit("bet-12", 1, userId="10x"))["status"] == "INVALID_PARAMETER"
    assert (await provider.credit("win-12", "bet-1", 1, currency="GBP"))["status"] == "INVALID_PARAMETER"
    async with tcp_client(wallet_server) as c:
        other = await add_account(c)
        other_sid = (await c.call("OpenGameSession", {"login": other})).data["sid"]
    wrong_sid = await provider.debit("bet-13", 1, sid=other_sid)
    assert wrong_sid["status"] == "INVALID_SID"
    await provider.debit("bet-14", 1)
    stolen = await provider.credit("win-14", "bet-14", 1, userId=str(other))
    assert stolen["status"] == "BET_DOES_NOT_EXIST"  # a round is the account's: the other has no such bet
    assert await event_count(wallet_server) == before + 1


async def test_user_id_names_an_account_only_as_issued(provider, wallet_server):
    """Only the login's canonical decimal form names it: "01003" is not the account "1003" was issued for
    (nor are int()'s other spellings); each is answered as an unknown userId is, and nothing moves."""
    login = str(provider.login)
    before = await event_count(wallet_server)
    for user in ("0" + login, "00" + login, f" {login}", f"{login} ", "+" + login, login + "\n",
                 f"{login[0]}_{login[1:]}", "\uff11" + login):
        for action, body in (("debit", provider.body("D-u", 1, userId=user)),
                             ("credit", provider.body("C-u", 1, "R-u", userId=user)),
                             ("cancel", provider.body("D-u", userId=user)),
                             ("balance", {"sid": provider.sid, "userId": user, "currency": "EUR"}),
                             ("check", {"sid": provider.sid, "userId": user})):
            reply = await provider.post(action, body)
            assert (reply["status"], "balance" in reply) == ("INVALID_PARAMETER", False), (action, user, reply)
    assert await event_count(wallet_server) == before
    async with tcp_client(wallet_server) as c:  # (40 calls may take longer than the 1 s the sid lives)
        provider.sid = (await c.call("OpenGameSession", {"login": provider.login})).data["sid"]
    assert (await provider.debit("D-u", 1))["status"] == "OK"  # the id as issued; nothing was tombstoned


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[]",
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": NaN}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": 1.0000001}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": -1}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": "NaN"}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": "1.0000001"}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": "-1"}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": "1e3"}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": " 1"}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": 0}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "t", "amount": -0.0}}',
    b'{"sid": "s", "userId": 1000, "currency": "EUR", "transaction": {"id": "t", "amount": 1}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR"}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "", "amount": 1}}',
    b'{"sid": "s", "userId": "1000", "currency": "EUR", "transaction": {"id": "' + b"x" * 65 + b'", "amount": 1}}',
])
async def test_malformed_requests_are_invalid_parameter_and_write_nothing(provider, wallet_server, body):
    before = await event_count(wallet_server)
    reply = await provider.post("debit", body.replace(b'"s"', json.dumps(provider.sid).encode())
                                .replace(b'"1000"', json.dumps(str(provider.login)).encode()))
    assert reply["status"] == "INVALID_PARAMETER"
    assert await event_count(wallet_server) == before


async def test_credit_needs_ref_id_and_amount(provider):
    body = provider.body("win-x", 1)
    assert (await provider.post("credit", body))["status"] == "INVALID_PARAMETER"
    body = provider.body("win-x", None, "bet-1")
    assert (await provider.post("credit", body))["status"] == "INVALID_PARAMETER"


@pytest.mark.parametrize("token, query, header", [
    (None, True, True), ("wrong", True, True), ("wrong", True, False), ("wrong", False, True),
])
async def test_bad_provider_token_touches_nothing(provider, wallet_server, token, query, header):
    before = await event_count(wallet_server)
    reply = await provider.post("debit", provider.body("bet-t", 1), token=token, query=query, header=header)
    assert reply["status"] == "INVALID_TOKEN_ID" and "balance" not in reply
    assert await event_count(wallet_server) == before
    # either way of sending the right token is enough
    assert (await provider.post("balance", {"sid": provider.sid, "userId": str(provider.login), "currency": "EUR"},
                                query=query, header=not query))["status"] == "OK"


async def test_without_a_configured_token_every_call_is_refused(start_server):
    srv = await start_server(wallet_port=0, wallet_token=None)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"http://127.0.0.1:{srv.ports.wallet}/v1/check", params={"authToken": ""},
                            content=b'{"sid": "x", "userId": "1"}')
    assert r.json()["status"] == "INVALID_TOKEN_ID"


async def test_http_errors_for_unknown_paths_and_methods(provider):
    base = f"http://127.0.0.1:{provider.srv.ports.wallet}"
    assert (await provider.http.post(base + "/v1/withdraw-all")).status_code == 404
    assert (await provider.http.get(base + "/v1/credit")).status_code == 405


async def test_100_concurrent_credits_from_separate_clients_apply_once(provider, wallet_server):
    for i in range(100):
        assert (await provider.debit(f"cb-{i}", 1, game=f"g-{i}"))["status"] == "OK"
    base = f"http://127.0.0.1:{wallet_server.ports.wallet}/v1/credit"
    statuses: list[str] = []

    async def settle(i: int) -> None:
        async with httpx.AsyncClient(timeout=30) as http:  # its own connection
            body = provider.body(f"cw-{i}", 2, f"cb-{i}", game=f"g-{i}")
            for _ in range(2):  # and a retry
                r = await http.post(base, params={"authToken": TOKEN}, content=dumps(body))
                statuses.append(r.json()["status"])

    async with trio.open_nursery() as n:
        for i in range(100):
            n.start_soon(settle, i)
    assert statuses.count("OK") == 100 and statuses.count("BET_ALREADY_SETTLED") == 100
    async with tcp_client(wallet_server) as c:
        user = await c.call("GetUser", {"login": provider.login})
    assert user.data["balance"] == Decimal(100 - 100 + 200)


@every_backend
async def test_wallet_operations_are_trade_events(provider, wallet_server):
    async with tcp_client(wallet_server) as c:
        await c.call("Subscribe", {"chanels": ["trade:event"]})
        await provider.debit("bet-e", 4)
        await provider.credit("win-e", "bet-e", 6)
        await provider.debit("bet-f", 3, game="g-2")
        await provider.cancel("bet-f", game="g-2")
        events = [await c.receive_event() for _ in range(4)]
    assert [(e["type"], e["data"]["cmd"], e["data"]["profit"]) for e in events] == [
        (0, 8, Decimal(-4)), (0, 6, Decimal(6)), (0, 8, Decimal(-3)), (2, 8, Decimal(-3))]
    assert events[3]["data"]["state"] == 6 and events[3]["data"]["order"] == events[2]["data"]["order"]


@every_backend
async def test_a_debit_whose_order_a_manager_deleted_is_settled(provider, wallet_server):
    bet = await provider.debit("bet-m", 10)
    async with tcp_client(wallet_server) as c:
        trades = (await c.call("GetTrades", {"login": provider.login})).data["trades"]
        order = next(t["order"] for t in trades if t["profit"] == -10)
        deleted = await c.call("DeleteBalance", {"order": order})
        assert deleted.ok, deleted  # the back office reverses the bet
    cancel = await provider.cancel("bet-m")
    assert (cancel["status"], cancel["balance"]) == ("BET_ALREADY_SETTLED", bet["balance"] + 10)
    credit = await provider.credit("win-m", "bet-m", 50)
    assert (credit["status"], credit["balance"]) == ("BET_ALREADY_SETTLED", bet["balance"] + 10)


async def test_a_wallet_transaction_id_names_one_transaction(mem_server, autojump_clock):
    from syncledger.server.testing import Harness

    h = Harness(mem_server)
    async with h.client() as c:
        login = await h.add_account(c, balance=100)
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    base = {"sid": sid, "userId": str(login), "currency": "EUR"}
    assert (await h.wallet("debit", {**base, "transaction": {"id": "T1", "amount": 5}}))["status"] == "OK"
    assert (await h.wallet("credit", {**base, "transaction": {"id": "T9", "refId": "T1", "amount": 0}}))[
        "status"] == "OK"
    reused = await h.wallet("debit", {**base, "transaction": {"id": "T9", "amount": 7}})
    assert (reused["status"], reused["balance"]) == ("INVALID_PARAMETER", Decimal(95))
    await h.wallet("debit", {**base, "transaction": {"id": "T2", "amount": 1}})
    clash = await h.wallet("credit", {**base, "transaction": {"id": "T2", "refId": "T2", "amount": 3}})
    assert clash["status"] == "INVALID_PARAMETER"
    await assert_ledger_ok(mem_server)


# ---- the provider's flows, as providers send them (CONTRACT.md section 3)

# (action, transaction.id, refId, game.id, amount, expected status, expected balance after). The account
# starts with 100. Every step is sent again with a new uuid: the retry is answered as a retransmission.
FLOWS = {
    "shared refId, a win": [
        ("debit", "D9fb6", "9fb6", "7kfw", 10, "OK", 90),
        ("credit", "C9fb6", "9fb6", "7kfw", Decimal("1.556179"), "OK", Decimal("91.556179")),
    ],
    "shared refId, a loss": [
        ("debit", "D9fb6", "9fb6", "7kfw", 10, "OK", 90),
        ("credit", "C9fb6", "9fb6", "7kfw", 0, "OK", 90),
    ],
    "refId naming the debit's id": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("credit", "C1", "D1", "G1", 25, "OK", 115),
    ],
    "a split round: two debits, one credit, then closed": [
        ("debit", "D1", "S", "G1", 10, "OK", 90),
        ("debit", "D2", "S", "G1", 5, "OK", 85),
        ("credit", "C1", "S", "G1", 30, "OK", 115),
        ("credit", "C2", "S", "G1", 30, "BET_ALREADY_SETTLED", 115),
        ("credit", "C3", "D2", "G1", 1, "BET_ALREADY_SETTLED", 115),
        ("debit", "D3", "S2", "G2", 1, "OK", 114),  # another round is not affected
        ("credit", "C4", "D3", "G2", 2, "OK", 116),
    ],
    "a late debit after its round was settled, then its cancel": [
        ("debit", "D1", "R", "G1", 10, "OK", 90),
        ("credit", "C1", "R", "G1", 20, "OK", 110),
        ("debit", "D2", "R", "G1", 5, "OK", 105),
        ("cancel", "D2", None, "G1", None, "OK", 110),
        ("cancel", "D1", None, "G1", None, "BET_ALREADY_SETTLED", 110),
    ],
    "a cancel, then a credit for the round's other debit": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("debit", "D2", "R2", "G1", 10, "OK", 80),
        ("cancel", "D1", None, "G1", None, "OK", 90),
        ("credit", "C1", "D2", "G1", 15, "OK", 105),
        ("cancel", "D2", None, "G1", None, "BET_ALREADY_SETTLED", 105),
    ],
    "a cancel in a shared-refId split, the credit by the shared refId": [
        ("debit", "D1", "S", "G1", 10, "OK", 90),
        ("debit", "D2", "S", "G1", 10, "OK", 80),
        ("cancel", "D1", None, "G1", None, "OK", 90),
        ("credit", "C1", "S", "G1", 0, "OK", 90),
    ],
    "a credit naming only a cancelled debit": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("cancel", "D1", None, "G1", None, "OK", 100),
        ("credit", "C1", "D1", "G1", 50, "BET_ALREADY_SETTLED", 100),
    ],
    "decimal-string amounts": [
        ("debit", "D1", "R1", "G1", "10.50", "OK", Decimal("89.5")),
        ("credit", "C1", "R1", "G1", "1.556179", "OK", Decimal("91.056179")),
    ],
    "a credit before any debit of its round": [
        ("credit", "C9fb6", "9fb6", "G1", 5, "BET_DOES_NOT_EXIST", 100),
        ("debit", "D9fb6", "9fb6", "G1", 5, "FINAL_ERROR_ACTION_FAILED", 100),  # refId tombstoned
        ("debit", "9fb6", "X", "G1", 5, "FINAL_ERROR_ACTION_FAILED", 100),  # id tombstoned
        ("debit", "D2", "R2", "G1", 5, "OK", 95),  # the round itself is still open
        ("credit", "C2", "R2", "G1", 6, "OK", 101),
    ],
    "a cancel before its debit": [
        ("cancel", "D1", None, "G1", None, "BET_DOES_NOT_EXIST", 100),
        ("debit", "D1", "R1", "G1", 5, "FINAL_ERROR_ACTION_FAILED", 100),
    ],
    "a credit is linked only within its game": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("credit", "C1", "R1", "G2", 10, "BET_DOES_NOT_EXIST", 90),
        ("cancel", "D1", None, "G2", None, "BET_DOES_NOT_EXIST", 90),
        ("credit", "C2", "R1", "G1", 10, "OK", 100),
    ],
    "a credit without game.id settles its debit's round": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("credit", "C1", "R1", None, 3, "OK", 93),
        ("credit", "C2", "D1", None, 3, "BET_ALREADY_SETTLED", 93),
        ("credit", "C3", "R1", "G1", 3, "BET_ALREADY_SETTLED", 93),
    ],
    "a game.id reused by the next round: each round's credit settles its own debit": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("credit", "C1", "R1", "G1", 20, "OK", 110),
        ("debit", "D2", "R2", "G1", 5, "OK", 105),  # the round was settled: taken, and warned
        ("credit", "C2", "R2", "G1", 7, "OK", 112),  # settles D2, the debit C1 could not have settled
        ("credit", "C3", "R1", "G1", 1, "BET_ALREADY_SETTLED", 112),
        ("credit", "C4", "D2", "G1", 1, "BET_ALREADY_SETTLED", 112),
        ("cancel", "D2", None, "G1", None, "BET_ALREADY_SETTLED", 112),
    ],
    "a credit in a settled round naming no debit: that debit, coming later, is refused": [
        ("debit", "D1", "R1", "G1", 10, "OK", 90),
        ("credit", "C1", "R1", "G1", 20, "OK", 110),
        ("credit", "C2", "R2", "G1", 5, "BET_ALREADY_SETTLED", 110),
        ("debit", "D2", "R2", "G1", 5, "FINAL_ERROR_ACTION_FAILED", 110),  # never taken and then unsettleable
        ("debit", "R2", "R3", "G1", 5, "FINAL_ERROR_ACTION_FAILED", 110),
    ],
}
RETRIED = {("debit", "OK"): "BET_ALREADY_EXIST", ("credit", "OK"): "BET_ALREADY_SETTLED",
           ("cancel", "OK"): "BET_ALREADY_SETTLED"}


@every_backend
@pytest.mark.parametrize("flow", FLOWS)
async def test_provider_flow(provider, flow):
    seq = await event_count(provider.srv)
    moves = 0
    for action, txid, ref_id, game, amount, status, balance in FLOWS[flow]:
        body = provider.body(txid, amount, ref_id, game)
        reply = await provider.post(action, body)
        assert (reply["status"], reply["balance"], reply["uuid"]) == (status, Decimal(balance), body["uuid"]), \
            (action, txid, reply)
        assert "retransmission" not in reply
        moves += status == "OK"
        retry = await provider.post(action, {**body, "uuid": "retry-" + body["uuid"]})
        assert retry == {"status": RETRIED.get((action, status), status), "balance": Decimal(balance),
                         "bonus": 0, "uuid": "retry-" + body["uuid"], "retransmission": True}, (action, txid)
    assert await event_count(provider.srv) == seq + moves  # each accepted call is one record, once
    assert await provider.balance() == Decimal(FLOWS[flow][-1][-1])


SIDS = ["valid", "expired", "empty", "null", "missing"]


async def _sid_variant(provider, kind: str, body: dict) -> dict:
    if kind == "missing":
        del body["sid"]
    elif kind == "expired":
        body["sid"] = await expired_sid(provider.srv, provider.login)
    else:
        body["sid"] = {"valid": provider.sid, "empty": "", "null": None}[kind]
    return body


@pytest.mark.parametrize("sid", SIDS)
async def test_credit_and_cancel_take_any_sid_debit_needs_a_valid_one(provider, sid):
    assert (await provider.debit("D1", 10, "G1", "R1"))["status"] == "OK"
    assert (await provider.debit("D2", 10, "G2", "R2"))["status"] == "OK"
    credit = await provider.post("credit", await _sid_variant(provider, sid, provider.body("C1", 25, "R1", "G1")))
    assert (credit["status"], credit["balance"]) == ("OK", Decimal(105))
    cancel = await provider.post("cancel", await _sid_variant(provider, sid, provider.body("D2", None, "R2", "G2")))
    assert (cancel["status"], cancel["balance"]) == ("OK", Decimal(115))
    debit = await provider.post("debit", await _sid_variant(provider, sid, provider.body("D3", 1, "R3", "G3")))
    assert debit["status"] == ("OK" if sid == "valid" else "INVALID_SID")


async def test_balance_validates_currency_as_debit_does(provider):
    body = {"sid": provider.sid, "userId": str(provider.login), "uuid": "b1"}
    assert (await provider.post("balance", {**body, "currency": "EUR"}))["status"] == "OK"
    assert (await provider.post("balance", {**body, "currency": "USD"}))["status"] == "INVALID_PARAMETER"
    assert (await provider.post("balance", body))["status"] == "INVALID_PARAMETER"
    assert (await provider.post("check", body))["status"] == "OK"  # check validates sid and userId only


async def test_a_gateway_bearer_beside_the_right_auth_token_is_accepted(provider):
    reply = await provider.post("debit", provider.body("D1", 1, "R1"), header=False,
                                extra_headers={"Authorization": "Bearer the-gateway-s-own-token"})
    assert reply["status"] == "OK"
    reply = await provider.post("debit", provider.body("D2", 1, "R2"), token="wrong", header=False,
                                extra_headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply["status"] == "OK"


async def test_records_name_the_round_and_the_transaction(provider, wallet_server):
    await provider.debit("D9fb6", 4, "7kfw", "9fb6")
    await provider.credit("C9fb6", "9fb6", 6, "7kfw")
    await provider.debit("D2", 3, "G2", "R2")
    await provider.cancel("D2", "G2")
    async with tcp_client(wallet_server) as c:
        trades = (await c.call("GetTrades", {"login": provider.login})).data["trades"]
    comments = {t["comment"] for t in trades}
    assert {"debit D9fb6 round 7kfw", "credit C9fb6 ref 9fb6 round 7kfw", "debit D2 round G2"} <= comments


async def test_sid_endpoint_only_for_test_environments(start_server, provider, tmp_path):
    body = {"sid": "anything", "userId": str(provider.login), "uuid": "s1"}
    url = f"http://127.0.0.1:{provider.srv.ports.wallet}/v1/sid"
    assert (await provider.http.post(url, params={"authToken": TOKEN}, content=dumps(body))).status_code == 404

    srv = await start_server(db=str(tmp_path / "sid.db"), wallet_port=0, wallet_token=TOKEN,  # (ledger.db: provider's)
                             wallet_test_endpoints=True)
    async with tcp_client(srv) as c:
        login = await add_account(c)
        assert (await c.call("BalanceIn", {"login": login, "amount": 10})).ok
    tester = Provider(srv, provider.http, login, sid="")
    fresh = await tester.post("sid", {**body, "userId": str(login)})
    assert fresh["status"] == "OK" and fresh["uuid"] == "s1" and fresh["sid"]
    tester.sid = fresh["sid"]
    assert (await tester.debit("D1", 1))["status"] == "OK"
    assert (await tester.post("sid", {**body, "userId": "999999"}))["status"] == "INVALID_PARAMETER"
    assert (await tester.post("sid", {**body, "userId": str(login)}, token="wrong"))["status"] == "INVALID_TOKEN_ID"
    await assert_ledger_ok(srv)


@every_backend
async def test_players_sharing_a_round_and_its_ref_id_are_settled_apart(provider, wallet_server):
    """A live table: every player's debit carries the round's refId; rounds and tombstones are per account."""
    async with tcp_client(wallet_server) as c:
        other = await add_account(c)
        assert (await c.call("BalanceIn", {"login": other, "amount": 100})).ok
        other_sid = (await c.call("OpenGameSession", {"login": other})).data["sid"]
    b = Provider(wallet_server, provider.http, other, other_sid)
    assert (await provider.debit("A-bet", 10, "table-7", "round-7"))["status"] == "OK"
    assert (await b.debit("B-bet", 20, "table-7", "round-7"))["status"] == "OK"
    win = await provider.credit("A-win", "round-7", 30, "table-7")
    assert (win["status"], win["balance"]) == ("OK", Decimal(120))
    b_win = await b.credit("B-win", "round-7", 5, "table-7")  # the round is closed for A only
    assert (b_win["status"], b_win["balance"]) == ("OK", Decimal(85))
    early = await b.credit("B-win-8", "round-8", 5, "table-8")  # B's credit before B's debit: B's tombstone
    assert early["status"] == "BET_DOES_NOT_EXIST"
    assert (await provider.debit("A-bet-8", 1, "table-8", "round-8"))["status"] == "OK"  # A is not affected
    assert (await b.debit("B-bet-8", 1, "table-8", "round-8"))["status"] == "FINAL_ERROR_ACTION_FAILED"


def closed_round_calls(srv, call: str) -> float:
    """syncledger_wallet_closed_round_total{call}, over the server's nodes."""
    return sum(node.metrics.registry.get_sample_value("syncledger_wallet_closed_round_total", {"call": call}) or 0
               for node in getattr(srv, "nodes", [srv]))


def closed_round_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncledger.wallet" and r.levelno == logging.WARNING]


@every_backend
async def test_rounds_reusing_a_game_id_pay_every_win(provider, caplog):
    """An integration that sends its game code as game.id: each round after the first meets a round already
    settled. Its debit is taken, and its own credit settles it (116 owed after three rounds; 110 were left
    when every later credit was answered BET_ALREADY_SETTLED); each such call is warned and counted."""
    caplog.set_level(logging.WARNING, "syncledger.wallet")
    srv = provider.srv
    for n, win in enumerate((25, 3, 3), 1):
        assert (await provider.debit(f"D{n}", 5, "slot-7", f"R{n}"))["status"] == "OK"
        credit = await provider.credit(f"C{n}", f"R{n}", win, "slot-7")
        assert (n, credit["status"]) == (n, "OK")
    assert await provider.balance() == 116
    again = await provider.credit("C3b", "R3", 3, "slot-7")  # a new credit for a debit already settled
    assert (again["status"], again["balance"]) == ("BET_ALREADY_SETTLED", 116)
    assert (await provider.credit("C3", "R3", 3, "slot-7"))["retransmission"]  # a retry is not one more warning
    assert (await provider.debit("D4", 5, "slot-7", "R4"))["status"] == "OK"
    refund = await provider.cancel("D4", "slot-7")  # a late debit the provider takes back
    assert (refund["status"], refund["balance"]) == ("OK", 116)
    assert [closed_round_calls(srv, call) for call in ("debit", "credit", "cancel")] == [3, 3, 1]
    lines = closed_round_lines(caplog)
    assert len(lines) == 7 and all(f"login={provider.login} game.id=slot-7 " in line for line in lines), lines
    assert "transaction.id=D2" in lines[0] and "transaction.id=C2" in lines[1]
    assert "transaction.id=C3b" in lines[4] and "BET_ALREADY_SETTLED" in lines[4]


async def test_a_closed_round_is_flagged_through_the_writer_process(start_server, caplog):
    """The wallet rules run where the writer runs: the flag comes back through ledger/codec.py."""
    assert codec.loads(codec.dumps(WalletResult("OK", 1, 0, False, True))) == WalletResult("OK", 1, 0, False, True)
    caplog.set_level(logging.WARNING, "syncledger.wallet")
    srv = await start_server(wallet_port=0, wallet_token=TOKEN, writer="process")
    async with tcp_client(srv) as c:
        login = await add_account(c)
        assert (await c.call("BalanceIn", {"login": login, "amount": 100})).ok
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    async with httpx.AsyncClient(timeout=30) as http:
        player = Provider(srv, http, login, sid)
        for n in (1, 2):
            assert (await player.debit(f"D{n}", 5, "slot-7", f"R{n}"))["status"] == "OK"
            assert (await player.credit(f"C{n}", f"R{n}", 6, "slot-7"))["status"] == "OK"
    assert [closed_round_calls(srv, call) for call in ("debit", "credit")] == [1, 1]
    assert len(closed_round_lines(caplog)) == 2
