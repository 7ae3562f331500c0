"""How an integrator whose tests run on asyncio (pytest-asyncio) tests against syncledger, as a process.

Copy this file into your project (`pip install 'syncledger[pytest]' pytest-asyncio`) and run `pytest`. The
`syncledger_server` fixture is a plain one: it runs `syncledger serve` on free ports, on a fresh ledger for each
test, and stops it with SIGTERM when the test ends (see test_server_process_sync.py). It needs no pytest-trio.
"""

import asyncio
import json
import urllib.request
import uuid
from decimal import Decimal

import pytest


def wallet(server, action, body):
    """One call of the game-wallet API, as a game provider makes it (blocking: run it in a thread)."""
    request = urllib.request.Request(server.wallet_url + action, json.dumps(body).encode(),
                                     {"Content-Type": "application/json",
                                      "Authorization": f"Bearer {server.wallet_token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read(), parse_float=Decimal)


@pytest.mark.asyncio
async def test_a_bet_placed_by_the_game_shows_in_my_back_office(syncledger_server):
    reader, writer = await asyncio.open_connection(syncledger_server.host, syncledger_server.tcp_port)

    async def call(command, data):
        request = {"command": command, "extID": uuid.uuid4().hex, "data": data, "__token": syncledger_server.token}
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        return json.loads(await asyncio.wait_for(reader.readline(), 10), parse_float=Decimal)

    try:
        login = (await call("AddUser", {"name": "Bob", "currency": "EUR"}))["data"]["login"]
        assert (await call("BalanceIn", {"login": login, "amount": 20, "comment": "Deposit"}))["status"] == 200
        sid = (await call("OpenGameSession", {"login": login}))["data"]["sid"]
        bet = await asyncio.to_thread(wallet, syncledger_server, "debit", {
            "sid": sid, "userId": str(login), "currency": "EUR", "transaction": {"id": "bet-1", "amount": "2.5"}})
        assert (bet["status"], bet["balance"]) == ("OK", Decimal("17.5"))
        assert (await call("GetUser", {"login": login}))["data"]["balance"] == Decimal("17.5")
    finally:
        writer.close()
        await writer.wait_closed()
