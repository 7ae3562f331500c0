"""How an integrator whose tests run on Trio tests against syncledger as a process (the whole `syncledger serve`,
as in production), with the client that ships with it and the event WebSocket.

Copy this file into your project (`pip install 'syncledger[pytest]'`) and run `pytest`. For a server inside the
test itself (a mock clock, fault switches), see test_integration_example.py.
"""

import json
from decimal import Decimal

import pytest
import trio
from trio_websocket import open_websocket_url

from syncledger.server.client import connect

pytestmark = pytest.mark.trio


async def test_my_subscriber_sees_the_credit_my_crm_made(syncledger_server):
    url = f"{syncledger_server.ws_url}?token={syncledger_server.token}"
    async with open_websocket_url(url) as events, \
            connect(syncledger_server.host, syncledger_server.tcp_port, syncledger_server.token) as crm:
        login = (await crm.call("AddUser", {"name": "Carol", "currency": "EUR"})).data["login"]
        credit = await crm.call("CreditInSync", {"login": login, "amount": Decimal("300.0"), "comment": "Promotion"},
                                ext_id="crm-42")
        assert credit.ok and credit.data["credit"] == Decimal("300.0")
        with trio.fail_after(10):
            event = json.loads(await events.get_message(), parse_float=Decimal)
        assert (event["event"], event["data"]["login"], event["data"]["profit"]) == ("trade:event", login, 300)
