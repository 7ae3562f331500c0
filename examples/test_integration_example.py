"""How an integrator tests a CRM, cashier or game integration against syncledger, in-process.

Copy this file into your project (with `pip install 'syncledger[pytest]'`: the fixtures come with syncledger,
pytest-trio with the extra; set `trio_mode = true` in your pytest config) and run `pytest`. Every test gets a
fresh server on an in-memory ledger; under `autojump_clock` its 5-second timeouts take milliseconds, and the
ledger is audited when each test ends.
"""

from decimal import Decimal

import trio


async def test_sync_credit_times_out_then_my_retry_gets_the_final_record(syncledger, syncledger_client,
                                                                         autojump_clock):
    login = await syncledger.add_account(syncledger_client)
    syncledger.faults.hold_events(1)  # the transaction commits, its trade:event is held back
    first = await syncledger_client.call(
        "CreditInSync", {"login": login, "amount": Decimal("300.0"), "comment": "Promotion credit"},
        ext_id="crm-42")
    assert (first.status, first.error) == (504, "SYNC_TIMEOUT")

    retry = await syncledger_client.call(  # my CRM retries with the same extID
        "CreditInSync", {"login": login, "amount": Decimal("300.0"), "comment": "Promotion credit"},
        ext_id="crm-42")
    assert retry.ok and retry.data["credit"] == Decimal("300.0")  # applied once, not twice


async def test_my_subscriber_reconnects_with_from_seq_and_sees_every_event_once(syncledger, syncledger_client,
                                                                                autojump_clock):
    login = await syncledger.add_account(syncledger_client)
    seen = []
    async with syncledger.client() as feed:
        await feed.call("Subscribe", {"chanels": ["trade:event"]})
        await syncledger_client.call("BalanceIn", {"login": login, "amount": 10})
        seen.append((await feed.receive_event())["seq"])
        syncledger.faults.disconnect(feed)  # my subscriber loses its connection...
        await syncledger_client.call("BalanceIn", {"login": login, "amount": 20})  # ...and misses this
    async with syncledger.client() as feed:  # it comes back from the last seq it saw
        await feed.call("Subscribe", {"chanels": ["trade:event"], "from_seq": seen[-1]})
        seen.append((await feed.receive_event())["seq"])
    assert seen == [1, 2]


async def test_a_providers_credit_arrives_before_its_debit(syncledger, syncledger_client, autojump_clock):
    login = await syncledger.add_account(syncledger_client, balance=100)
    sid = (await syncledger_client.call("OpenGameSession", {"login": login})).data["sid"]
    round_ = {"sid": sid, "userId": str(login), "currency": "EUR", "uuid": "u1"}

    credit = await syncledger.wallet("credit", {**round_, "transaction": {"id": "win-1", "refId": "bet-1",
                                                                          "amount": 5}})
    assert credit["status"] == "BET_DOES_NOT_EXIST"
    debit = await syncledger.wallet("debit", {**round_, "transaction": {"id": "bet-1", "amount": 2}})
    assert debit["status"] == "FINAL_ERROR_ACTION_FAILED"  # the round can never be opened now
    assert debit["balance"] == 100  # and no money moved


async def test_sessions_expire_on_the_mock_clock(syncledger, syncledger_client, autojump_clock):
    login = await syncledger.add_account(syncledger_client, balance=100)
    sid = (await syncledger_client.call("OpenGameSession", {"login": login})).data["sid"]
    await trio.sleep(syncledger.server.config.game_session_ttl + 1)  # instant under autojump_clock
    bet = await syncledger.wallet("debit", {"sid": sid, "userId": str(login), "currency": "EUR",
                                            "transaction": {"id": "bet-2", "amount": 1}})
    assert bet["status"] == "INVALID_SID"
