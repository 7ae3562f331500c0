"""How an integrator whose tests are plain (synchronous) pytest tests tests against syncledger, as a process.

Copy this file into your project (`pip install 'syncledger[pytest]'`; this file needs nothing else beyond the
standard library) and run `pytest`. The `syncledger_server` fixture runs `syncledger serve` on free ports, on a
fresh ledger for each test, with an ADMIN manager token (`.token`) and a game provider's token (`.wallet_token`);
the server is stopped with SIGTERM when the test ends, and the test fails if it did not exit cleanly.
"""

import json
import socket
import urllib.request
import uuid
from decimal import Decimal


def call(conn, token, command, data=None):
    """One request of the manager TCP API (a JSON line) and its reply."""
    request = {"command": command, "extID": uuid.uuid4().hex, "data": data or {}, "__token": token}
    conn.write(json.dumps(request).encode() + b"\n")
    conn.flush()
    return json.loads(conn.readline(), parse_float=Decimal)


def wallet(server, action, body):
    """One call of the game-wallet API, as a game provider makes it."""
    request = urllib.request.Request(server.wallet_url + action, json.dumps(body).encode(),
                                     {"Content-Type": "application/json",
                                      "Authorization": f"Bearer {server.wallet_token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read(), parse_float=Decimal)


def test_my_crm_deposit_and_promotion_credit_show_in_the_game_wallet(syncledger_server):
    with socket.create_connection((syncledger_server.host, syncledger_server.tcp_port), timeout=10) as sock, \
            sock.makefile("rwb") as conn:
        token = syncledger_server.token
        login = call(conn, token, "AddUser", {"name": "Alice", "currency": "EUR"})["data"]["login"]
        assert call(conn, token, "BalanceIn", {"login": login, "amount": 50, "comment": "Deposit"})["status"] == 200
        assert call(conn, token, "CreditIn", {"login": login, "amount": 300, "comment": "Promotion"})["status"] == 200
        sid = call(conn, token, "OpenGameSession", {"login": login})["data"]["sid"]

    balance = wallet(syncledger_server, "balance", {"sid": sid, "userId": str(login), "currency": "EUR"})
    assert (balance["status"], balance["balance"], balance["bonus"]) == ("OK", 50, 300)
