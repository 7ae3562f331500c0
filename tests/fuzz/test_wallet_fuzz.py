"""Fuzzing the game-wallet HTTP API: each example starts a fresh fuzz server, seeds the wallet world and
plays its seed rounds, then sends a few generated provider calls and rounds, each checked against the wallet
oracle (what is checked: ``tests/fuzz/__init__.py``). Regression tests of the bugs the fuzzer found in the
wallet API follow."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from hypothesis import event, given

from syncledger.ledger import verify
from syncledger.server.testing import connect_memory
from tests.fuzz import strategies as S
from tests.fuzz.connection import READ_TIMEOUT, Conn
from tests.fuzz.harness.server import COUNTS, EXAMPLE_TIMEOUT, ErrorLog, fuzz_server, fuzz_settings, start_fuzz_server
from tests.fuzz.harness.wallet import SEED_WALLET, WalletHarness, seed_wallet_world, wallet_seed_case


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
            conn = Conn(connect_memory(srv))  # the server is still alive
            await conn.probe_reply(await conn.probe())
            await conn.finish()
            nursery.cancel_scope.cancel()
        errors.check()


@fuzz_settings(100)
@given(S.wallet_example())
def test_wallet_api_fuzz(cases):
    trio.run(wallet_example, cases)


# ---------------------------------------------------------------------------------------------- bugs found
# Regression tests of what the fuzzer found in the wallet API (each bug below answered HTTP 500 or broke the wallet
# contract).


async def wallet_post(srv: Any, action: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(verify=False) as http:
        return await http.post(f"http://127.0.0.1:{srv.ports.wallet}/v1/{action}",
                               params={"authToken": S.WALLET_TOKEN}, content=body)


async def test_wallet_number_with_a_huge_exponent_is_invalid_parameter():
    """The number of test_manager_fuzz's test_number_with_a_huge_exponent_gets_an_error_reply in a wallet body
    got HTTP 500 with an empty body (parse_body let decimal.InvalidOperation through) instead of 200
    INVALID_PARAMETER."""
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
