"""The wallet's fast path (``fast_move``, server/wallet/models.py) decides exactly as the usual path does:
every body it takes gives the same uuid and the same ledger command (WalletCall, compared field by field) as
parse_body and the pydantic models, or the same refusal; what it does not take goes the usual way. The inputs
are the wallet fuzz corpus (hypothesis, ``wallet_case``, sids resolved to a fixed one) and EDGE_CASES below; one
in-process run of a debit, credit and cancel sequence then compares the server's answers, byte for byte, with
the fast path on and off."""

from __future__ import annotations

import trio
from hypothesis import event, given

from syncledger.server.auth import Provider
from syncledger.server.wallet import app
from syncledger.server.wallet.models import FAST_ACTIONS, fast_move
from tests.fuzz import strategies as S
from tests.fuzz.harness.server import fuzz_settings, start_fuzz_server
from tests.fuzz.harness.wallet import seed_wallet_world
from tests.fuzz.strategies.wallet_cases import wallet_case

EUR_ONLY = Provider("eur", "mixed", frozenset({"EUR"}))
PROVIDERS = (Provider("default"), EUR_ONLY)


def usual(action: str, body: bytes, provider: Provider) -> tuple:
    """(uuid, WalletCall or "invalid") by parse_body and the models, as WalletApp._answer reads a move."""
    try:
        obj = app.parse_body(body)
    except app._Invalid:
        return None, "invalid"
    try:
        return obj.get("uuid"), app.wallet_call(action, obj, 1_700_000_000, 1800, provider)
    except app._Invalid:
        return obj.get("uuid"), "invalid"


def quick(action: str, body: bytes, provider: Provider) -> tuple | None:
    """The same by fast_move and validated_call; None where the fast path leaves the body to the usual path."""
    taken = fast_move(body)
    if taken is None:
        return None
    uuid, req = taken
    try:
        return uuid, app.validated_call(action, req, 1_700_000_000, 1800, provider)
    except app._Invalid:
        return uuid, "invalid"


def check(action: str, body: bytes) -> bool:
    """Both paths agree on ``body`` for every provider; whether the fast path took it."""
    took = False
    for provider in PROVIDERS:
        got = quick(action, body, provider)
        if got is not None:
            took = True
            want = usual(action, body, provider)
            assert got == want and type(got[0]) is type(want[0]), (action, body, got, want)
    return took


_GOOD = (b'{"sid":"s","userId":"1000","currency":"EUR","game":{"id":"g1","type":"slots","session":"x"},'
         b'"transaction":{"id":"t1","refId":"d1","amount":%s},"uuid":"u"}')
EDGE_CASES = [
    _GOOD % b"2.5", _GOOD % b"0", _GOOD % b"-0", _GOOD % b"-0.0", _GOOD % b'"2.50"', _GOOD % b'"-0"',
    _GOOD % b"-1", _GOOD % b'"-1"', _GOOD % b"1.0000001", _GOOD % b"-0.000001", _GOOD % b'"-0.000001"',
    _GOOD % b"1e2", _GOOD % b"1E-7", _GOOD % b'"1e2"',
    _GOOD % b"true", _GOOD % b"null", _GOOD % b'" 1"', _GOOD % b'"1."', _GOOD % b'".5"', _GOOD % b"1e400",
    _GOOD % b"123456789012345678901234567890", _GOOD % (b"9" * 5000), _GOOD % b'"\xd9\xa1"', _GOOD % b"[1]",
    _GOOD % b"NaN", _GOOD % b"Infinity", _GOOD % b"1e99999999999999999999",
    b'{"sid":"s","userId":"1000","currency":"EUR","transaction":{"id":"t1","amount":1},"uuid":"u"}',
    b'{"sid":null,"userId":"1000","currency":"EUR","game":null,"transaction":{"id":"t1","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t1","refId":null,"amount":1},"uuid":null}',
    b'{"sid":"","userId":"1000","currency":"EUR","transaction":{"id":"t1","refId":"","amount":1}}',
    b'{"userId":"01000","currency":"EUR","transaction":{"id":"t1","amount":1}}',
    b'{"userId":"+1000","currency":"EUR","transaction":{"id":"t1","amount":1}}',
    b'{"userId":1000,"currency":"EUR","transaction":{"id":"t1","amount":1}}',
    b'{"userId":"1000","currency":"eur","transaction":{"id":"t1","amount":1}}',
    b'{"userId":"1000","currency":"EUR\\n","transaction":{"id":"t1","amount":1}}',
    b'{"userId":"1000","currency":"\xc3\x89UR","transaction":{"id":"t1","amount":1}}',
    b'{"userId":"1000","currency":"USD","transaction":{"id":"t1","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"' + b"x" * 65 + b'","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"' + b"x" * 64 + b'","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":1,"amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"uuid":"' + b"u" * 129 + b'"}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"uuid":"' + b"u" * 128 + b'"}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"uuid":7}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"sid":"' + b"s" * 129 + b'"}',
    b'{"userId":"1000","currency":"EUR","game":{"id":""},"transaction":{"id":"t","amount":1}}',
    b'{"userId":"1000","currency":"EUR","game":{"type":"x"},"transaction":{"id":"t","amount":1}}',
    b'{"userId":"1000","currency":"EUR","game":{"id":"g","type":null},"transaction":{"id":"t","amount":1}}',
    b'{"userId":"1000","currency":"EUR","game":{"id":"g","extra":1},"transaction":{"id":"t","amount":1}}',
    b'{"userId":"1000","currency":"EUR","game":[],"transaction":{"id":"t","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"bonus":{"a":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"userId":"1001"}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1,"amount":2}}',
    b'{"userId":"1000","currency":"EUR","game":{"id":"g","id":"h"},"transaction":{"id":"t","amount":1}}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"a:b","amount":1},"uuid":"x\\":y"}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"uuid":"\\ud800"}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1},"uuid":"\\ud83d\\ude00"}',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t\xff","amount":1}}',
    b'\xef\xbb\xbf{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1}}',
    b' {"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1}}\n',
    b'{"userId":"1000","currency":"EUR","transaction":{"id":"t","amount":1}} x',
    b'{"userId":"1000","currency":"EUR","transaction":null}', b'{"userId":"1000","currency":"EUR"}',
    b'[]', b'null', b'"x"', b'', b'{', b'{}',
]


def test_edge_cases_decide_alike():
    taken = [check(action, body) for body in EDGE_CASES for action in FAST_ACTIONS]
    assert sum(taken) >= 40  # (the fast path does take the common shapes: 51 of these)


@fuzz_settings(300)
@given(wallet_case())
def test_fuzz_corpus_decides_alike(case):
    body = case.body
    if isinstance(body, dict):
        body = S.enc({**body, "sid": "a-sid"} if body.get("sid") in S.SIDS else body,
                     ascii_only=case.ascii_only).encode()
    action = case.path.rpartition("/")[2]
    if action in FAST_ACTIONS:
        event(f"fast path took the body: {check(action, body)}")


async def _answers(bodies: list[tuple[str, bytes]], fast_path: bool) -> list[bytes]:
    async with trio.open_nursery() as nursery:
        srv = await start_fuzz_server(nursery)
        sids = await seed_wallet_world(srv)
        srv.wallet.fast = fast_path
        out = [await srv.wallet.call(action, b"authToken=" + S.WALLET_TOKEN.encode(), [],
                                     body.replace(b"SID", sids["sid:1000"].encode())) for action, body in bodies]
        nursery.cancel_scope.cancel()
    return out


def test_the_server_answers_alike_with_and_without_the_fast_path():
    move = (b'{"sid":"SID","userId":"1000","currency":"EUR","game":{"id":"%s","type":"slots"},'
            b'"transaction":{"id":"%s","refId":"%s","amount":%s},"uuid":"u-%s"}')
    bodies = [("debit", move % (b"fp1", b"fp-d1", b"fp-r1", b"1.5", b"1")),
              ("debit", move % (b"fp1", b"fp-d1", b"fp-r1", b"1.5", b"2")),  # a retransmission
              ("debit", move % (b"fp1", b"fp-d1", b"fp-r1", b"2.5", b"3")),  # the id again, changed
              ("credit", move % (b"fp1", b"fp-c1", b"fp-d1", b'"3.25"', b"4")),
              ("credit", move % (b"fp1", b"fp-c2", b"fp-d9", b"1", b"5")),  # no such debit
              ("debit", move % (b"fp2", b"fp-d2", b"fp-r2", b"100000000", b"6")),  # more than the balance
              ("debit", move % (b"fp2", b"fp-d3", b"fp-r3", b"0.25", b"7")),
              ("cancel", move % (b"fp2", b"fp-d3", b"fp-r3", b"0.25", b"8")),
              ("cancel", move % (b"fp2", b"fp-d3", b"fp-r3", b"0.25", b"9")),  # again
              ("credit", move % (b"fp2", b"fp-c3", b"fp-d3", b"0", b"10")),  # its debit cancelled
              ("debit", move % (b"fp3", b"fp-d4", b"fp-r4", b"-1", b"11")),  # refused by validation
              ("debit", b'{"userId":"1000","currency":"EUR","transaction":{"id":"x","amount":1},"uuid":"u-12"}')]
    with_fast, without = trio.run(_answers, bodies, True), trio.run(_answers, bodies, False)
    assert with_fast == without
    assert b'"status":"OK"' in with_fast[0] and b'"retransmission":true' in with_fast[1]
