"""The wallet harness: the seeded wallet world, and for each provider call: snapshot, send over HTTP,
check the reply's shape and uuid, predict (the wallet oracle), check the ledger's effect, verify."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import trio
from hypothesis import event

from syncledger.ledger import verify
from syncledger.server.testing import connect_memory
from tests.fuzz import strategies as S
from tests.fuzz.connection import READ_TIMEOUT
from tests.fuzz.oracle.manager import TS_CLOSED, TS_DELETED
from tests.fuzz.oracle.wallet import ANY, WalletModel
from tests.fuzz.snapshot import Snap, assert_unchanged, take_snapshot
from tests.fuzz.strict import Failed, _no_constant, micro, strict_json


def uuid_echo(content: bytes) -> set[str | None]:
    """The uuids a wallet reply may echo: the body's, when the body is a JSON object and uuid a string. A
    body holding an integer of more digits than CPython parses (4,300) is JSON all the same: its uuid, or
    None (the contract leaves the choice, as for such numbers in a manager line)."""
    if len(content) > 64 * 1024 or S.lone_surrogate(content):
        return {None}
    uuids: set[str | None] = set()
    for parse_int in (int, lambda text: 0):
        try:
            obj = json.loads(content.decode(), parse_float=Decimal, parse_constant=_no_constant,
                             parse_int=parse_int)
        except (ValueError, RecursionError, ArithmeticError, Failed):
            uuids.add(None)
            continue
        uuid = obj.get("uuid") if isinstance(obj, dict) else None
        uuids.add(uuid if isinstance(uuid, str) else None)
        if parse_int is int:
            break
    return uuids


class WalletHarness:
    def __init__(self, srv: Any, http: httpx.AsyncClient, sids: dict[str, str]):
        self.srv, self.http, self.sids = srv, http, sids
        self.model = WalletModel()
        self.base = f"http://127.0.0.1:{srv.ports.wallet}"

    async def snapshot(self) -> Snap:
        return await self.srv.mainloop.read(take_snapshot, self.srv)

    def resolve(self, body: Any) -> Any:
        if isinstance(body, dict) and body.get("sid") in S.SIDS:
            body = {**body, "sid": self.sids.get(body["sid"], "no-such-sid")}
        return body

    def sid_ok(self, r: S.WalletReq) -> bool:
        return r.sid in ("sid:1000", "sid:1001", "sid:1002") and int(r.sid[4:]) == r.login

    async def run(self, case: S.WalletCase, *, light: bool = False) -> None:
        body = self.resolve(case.body)
        content = body if isinstance(body, bytes) else S.enc(body, ascii_only=case.ascii_only).encode()
        params = [("authToken", t) for t in case.auth.query]
        headers = {"authorization": case.auth.header} if case.auth.header is not None else {}
        before = await self.snapshot()
        with trio.fail_after(READ_TIMEOUT):
            response = await self.http.request(case.method, self.base + case.path, params=params, headers=headers,
                                               content=content)
        if isinstance(case.expect, int):  # a wrong route or method: an HTTP error, nothing done
            if response.status_code != case.expect:
                raise Failed(f"{case.method} {case.path}: HTTP {response.status_code}, expected {case.expect}")
            assert_unchanged(before, await self.snapshot())
            event(f"wallet-answer:http-{case.expect}")
            return
        if response.status_code != 200:
            raise Failed(f"{case.label}: HTTP {response.status_code} {response.content[:200]!r}, expected 200")
        if not response.headers.get("content-type", "").startswith("application/json"):
            raise Failed(f"content-type {response.headers.get('content-type')!r}")
        reply = strict_json(response.content)
        if not isinstance(reply, dict) or set(reply) - {"status", "balance", "bonus", "uuid", "sid", "retransmission"} \
                or reply.get("status") not in S.WALLET_STATUSES or "uuid" not in reply \
                or reply.get("retransmission", True) is not True:
            raise Failed(f"a wallet reply is {{status, balance?, bonus?, sid?, uuid, retransmission: true?}}: "
                         f"{reply!r}")
        if reply["uuid"] not in uuid_echo(content):
            # A call refused for its token is answered without waiting more than a second for its body: on a
            # loaded machine the body may come later, and the answer then has no uuid to echo.
            if not (reply["uuid"] is None and reply["status"] == "INVALID_TOKEN_ID" and not case.auth.good):
                raise Failed(f"uuid must echo one of {uuid_echo(content)!r}: {reply!r}")
            event("wallet-refused-before-its-body")  # the usual case: test_wallet_unauthenticated_call_echoes...
        if ("balance" in reply) != ("bonus" in reply):
            raise Failed(f"balance and bonus come together: {reply!r}")
        status = reply["status"]
        after = await self.snapshot()
        if not light:
            event(f"wallet-answer:{status}")
        expect = case.expect
        if isinstance(expect, (str, type(None))) and S.lone_surrogate(content):  # malformed: not Unicode
            expect = "INVALID_PARAMETER" if case.auth.good else "INVALID_TOKEN_ID"
        if case.req is None or expect != case.expect or (expect == "ambiguous" and status == "INVALID_PARAMETER"
                                                         and "balance" not in reply):
            want = expect if expect not in (None, "ambiguous") else "INVALID_PARAMETER"
            if status != want:
                raise Failed(f"{case.label}: got {reply!r}, expected {want}")
            if "balance" in reply or "sid" in reply or "retransmission" in reply:
                raise Failed(f"a refused request reports no balance, no sid and no retransmission: {reply!r}")
            assert_unchanged(before, after)
            return
        await self.check_valid(case.req, reply, before, after, light)
        if not light:
            report = await self.srv.mainloop.read(verify, self.srv.store.db)
            if not report.ok:
                raise Failed(f"verify failed: {report}")

    async def check_valid(self, r: S.WalletReq, reply: dict, before: Snap, after: Snap, light: bool = False) -> None:
        status = reply["status"]
        answers = self.model.predict(r, before, self.sid_ok(r))
        if ANY in answers:
            effect, update = self.any_effect(r, status), answers[ANY].update
            if not light:
                event(f"wallet-model:any:{answers[ANY].why}")
        elif status not in answers:
            raise Failed(f"{r}: got {reply!r}, expected one of {sorted(answers)}")
        else:
            ans = answers[status]
            effect, update = ans.effect, ans.update
            if ans.why and not light:
                event(f"wallet-model:{ans.why}")
            if reply.get("retransmission", False) != ans.retrans:
                raise Failed(f"{r}: {reply!r} {'is' if ans.retrans else 'is not'} the reply to a retried "
                             f"transaction (retransmission: true)")
        acc = after.accounts.get(r.login)
        if r.action == "check":
            if "balance" in reply or reply.get("sid") not in (None, self.resolve({"sid": r.sid})["sid"]):
                raise Failed(f"check answers {{status, sid, uuid}}: {reply!r}")
        elif acc is not None and status in ("OK", "INSUFFICIENT_FUNDS", "BET_ALREADY_EXIST", "BET_ALREADY_SETTLED",
                                             "BET_DOES_NOT_EXIST", "FINAL_ERROR_ACTION_FAILED"):
            if "balance" not in reply:
                raise Failed(f"{status} reports the balance: {reply!r}")
        if "balance" in reply:
            if acc is None or (micro(reply["balance"], "balance"), micro(reply["bonus"], "bonus")) != \
                    (acc.balance, acc.credit):
                raise Failed(f"balance/bonus {reply.get('balance')}/{reply.get('bonus')} are not the account's "
                             f"{acc}")
        order = None
        if effect is None:
            allow = {} if status not in ("BET_DOES_NOT_EXIST", "BET_ALREADY_SETTLED", "INSUFFICIENT_FUNDS",
                                         "FINAL_ERROR_ACTION_FAILED", "INVALID_SID", "UNKNOWN_ERROR") \
                or reply.get("retransmission") else None
            if allow is None:  # the wallet may remember the refusal (wallet_tx), nothing else moves
                allow = {"wallet_tx": after.counts.get("wallet_tx", 0) - before.counts.get("wallet_tx", 0)}
                if not 0 <= allow["wallet_tx"] <= 2:
                    raise Failed(f"{status}: {allow['wallet_tx']} wallet rows written")
            assert_unchanged(before, after, allow)
        else:
            order = self.check_effect(r, effect, before, after)
        if update is not None:
            update(order)

    def any_effect(self, r: S.WalletReq, status: str) -> Any:
        if status != "OK":
            return None
        if r.action == "debit":
            return ("debit", r.amount)
        if r.action == "credit":
            return ("credit", r.amount or 0)
        return ("cancel", None)

    def check_effect(self, r: S.WalletReq, effect: tuple, before: Snap, after: Snap) -> int:
        kind, what = effect
        if after.seq != before.seq + 1 or after.counts["finance"] != before.counts["finance"] + 1:
            raise Failed(f"an accepted {kind} writes one record and one event: seq {before.seq} -> {after.seq}")
        etype, _ = after.events[after.seq]
        rec = after.event_data(after.seq)
        acc_before, acc_after = before.accounts[r.login], after.accounts[r.login]
        if kind == "cancel":
            debit = what
            order = rec["order"]
            if etype != 2 or rec["state"] != TS_DELETED or rec["cmd"] != 8 or rec["login"] != r.login or \
                    (debit is not None and (order != debit.order or micro(rec["profit"]) != -debit.amount)):
                raise Failed(f"a cancel deletes its debit's order: {rec!r}")
            delta = -micro(rec["profit"])
        else:
            cmd, sign = (8, -1) if kind == "debit" else (6, 1)
            order = rec["order"]
            if etype != 0 or rec["cmd"] != cmd or rec["login"] != r.login or rec["state"] != TS_CLOSED \
                    or micro(rec["profit"]) != sign * what or order in before.orders:
                raise Failed(f"a {kind} of {what} is a new cmd {cmd} record: {rec!r}")
            delta = sign * what
        if (acc_after.balance, acc_after.credit) != (acc_before.balance + delta, acc_before.credit):
            raise Failed(f"{kind}: balance {acc_before.balance} -> {acc_after.balance}, expected delta {delta}")
        if {k: v for k, v in after.accounts.items() if k != r.login} != \
                {k: v for k, v in before.accounts.items() if k != r.login}:
            raise Failed("another account changed")
        return order


SEED_WALLET = [  # (action, txid, refId, game.id, amount in units, expected status): player 1000
    ("debit", "seed-bet-1", "r1", "g1", 10, "OK"),  # g1: an open round of two debits sharing refId r1
    ("debit", "seed-bet-5", "r1", "g1", 3, "OK"),
    ("debit", "seed-bet-2", None, "g2", 5, "OK"),  # g2: settled
    ("credit", "seed-win-2", "seed-bet-2", "g2", 7, "OK"),
    ("credit", "seed-win-3", "seed-bet-3", "g3", 1, "BET_DOES_NOT_EXIST"),  # seed-bet-3 can never be debited
    ("debit", "seed-bet-6", None, "g4", 2, "OK"),  # g4: its only debit cancelled
    ("cancel", "seed-bet-6", None, "g4", None, "OK"),
]


def wallet_seed_case(action: str, txid: str, ref_id: str | None, game_id: str | None,
                     amount: int | None) -> S.WalletCase:
    tx: dict = {"id": txid}
    if ref_id is not None:
        tx["refId"] = ref_id
    if amount is not None:
        tx["amount"] = amount
    body = {"sid": "sid:1000", "userId": "1000", "currency": "EUR", "transaction": tx, "uuid": f"seed-{txid}"}
    if game_id is not None:
        body["game"] = {"id": game_id, "type": "slots", "session": "gs-1"}
    req = S.WalletReq(action, "sid:1000", 1000, "EUR", game_id, "slots" if game_id is not None else None, txid,
                      ref_id, None if amount is None else amount * S.U)
    return S.WalletCase("POST", f"/v1/{action}", body, S.GOOD_AUTH[0], req, None, f"seed-{txid}", "seed")


async def seed_wallet_world(srv: Any) -> dict[str, str]:
    """Accounts 1000 (EUR, 100), 1001 (USD), 1002 (EUR, near the largest total), a sid for each, and an
    expired sid of 1000."""
    from syncledger.server.client import open_client
    sids = {}
    with trio.fail_after(READ_TIMEOUT):
        async with open_client(connect_memory(srv), S.ADMIN.raw) as c:
            for login, currency in ((1000, "EUR"), (1001, "USD"), (1002, "EUR")):
                assert (await c.call("AddUser", {"login": login, "name": "p", "currency": currency})).ok
            assert (await c.call("BalanceIn", {"login": 1000, "amount": 100})).ok
            for _ in range(8):
                assert (await c.call("BalanceIn", {"login": 1002, "amount": S.MAX_UNITS})).ok
            assert (await c.call("BalanceIn", {"login": 1002, "amount": 9 * 10**11})).ok
            for login in (1000, 1001, 1002):
                reply = await c.call("OpenGameSession", {"login": login})
                assert reply.ok, reply
                sids[f"sid:{login}"] = reply.data["sid"]

    def expired() -> None:
        old = srv.now() - 10**7
        srv.store.db.execute("INSERT INTO game_sessions VALUES (?,?,?,?)", ("expired-sid-of-1000", 1000, old, old))
    await srv.mainloop.read(expired)
    sids["sid:expired"] = "expired-sid-of-1000"
    return sids
