"""The manager harness: the seeded manager world, and for each input on a connection: snapshot, send,
predict (the manager oracle), match the reply, check the ledger, probe the connection, verify."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import trio
from hypothesis import event

from syncledger.ledger import verify
from syncledger.server.testing import connect_memory
from tests.fuzz import strategies as S
from tests.fuzz.connection import READ_TIMEOUT, Conn, check_echo, check_message, check_runs
from tests.fuzz.harness.server import cheap_hash
from tests.fuzz.oracle.manager import ACCEPT_STATE, KeyRec, ManagerOracle, add_user_payload, check_account, payload_of
from tests.fuzz.snapshot import Snap, assert_unchanged, expect_counts, take_snapshot
from tests.fuzz.strict import Failed


class ManagerHarness:
    def __init__(self, srv: Any):
        self.srv = srv
        self.oracle = ManagerOracle(srv)
        self.conns: list[Conn] = []
        self.conn: Conn | None = None

    async def snapshot(self) -> Snap:
        return await self.srv.mainloop.read(take_snapshot, self.srv)

    async def verify(self) -> None:
        report = await self.srv.mainloop.read(verify, self.srv.store.db)
        if not report.ok:
            raise Failed(f"verify failed: {report}")

    def connection(self) -> Conn:
        if self.conn is None or self.conn.closed:
            self.conn = Conn(connect_memory(self.srv))
            self.conns.append(self.conn)
        return self.conn

    async def run(self, case: S.Case) -> None:
        conn = self.connection()
        before = await self.snapshot()
        self.oracle.t0 = self.srv.now()
        alts = case.expect.alts
        may_close = case.expect.has(S.Closed)
        try:
            await conn.send(case.data, case.cuts)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not may_close:
                raise Failed("the server closed the connection while the input was being sent") from None
        probe = await conn.probe() if case.expect.has(S.Silent) else None
        reply = await conn.reply()
        self.oracle.t1 = self.srv.now()
        if reply is None:
            raise Failed(f"no reply: the server closed the connection (expected one of {alts})")
        if probe is not None and reply.get("extID") == probe:
            if not case.expect.has(S.Silent):
                raise Failed("no reply to the input")
            await conn.probe_reply(probe, reply)
            assert_unchanged(before, await self.snapshot())
            return
        await self.match(case, conn, reply, before)
        if conn.closed:
            return
        if probe is None:
            probe = await conn.probe()
        await conn.probe_reply(probe)
        await self.verify()

    async def match(self, case: S.Case, conn: Conn, reply: dict, before: Snap) -> None:
        status, code = reply["status"], reply.get("error")
        if status != 200:
            check_message(case, reply)
        oracle = next((a for a in case.expect.alts if isinstance(a, S.Oracle)), None)
        pred = self.oracle.predict(oracle.call, conn, before) if oracle else None
        if pred is not None and (status, code) == (pred.status, pred.code):
            check_echo(reply, oracle.echo)
            after = await self.snapshot()
            if status == 200:
                if pred.check is not None:
                    pred.check(reply.get("data"), before, after)
                expect_counts(before, after, pred.deltas)
            else:  # refused: at most the idempotency key of a keyed finance request is written
                assert_unchanged(before, after, pred.deltas)
            if pred.commit is not None:
                pred.commit(reply.get("data"), after)
            event(f"answer:{S.base_command(oracle.call.command)}:{status}")
            return
        fixed = [a for a in case.expect.alts if isinstance(a, S.Fixed) and (status, code) == (a.status, a.code)]
        if fixed:
            alt = next((a for a in fixed if reply.get("extID") == a.echo), fixed[0])
            check_echo(reply, alt.echo)
            if alt.where and not any(where in reply["message"] for where in alt.where):
                raise Failed(f"{case.label}: the message must name one of {alt.where}: {reply!r}")
            assert_unchanged(before, await self.snapshot())
            event(f"answer:{code}")
            return
        for alt in case.expect.alts:
            if isinstance(alt, S.Closed) and (status, code) == (400, "LINE_TOO_LONG"):
                check_echo(reply, None)
                rest = await conn.reply()
                if rest is not None:
                    raise Failed(f"after LINE_TOO_LONG the connection must close, got {rest!r}")
                conn.closed = True
                if conn.subscribed:
                    conn.runs[-1].end = before.seq
                assert_unchanged(before, await self.snapshot())
                event("answer:LINE_TOO_LONG")
                return
        want = [(pred.status, pred.code)] if pred else []
        want += [(a.status, a.code) for a in case.expect.alts if isinstance(a, S.Fixed)]
        want += ["LINE_TOO_LONG+close" for a in case.expect.alts if isinstance(a, S.Closed)]
        raise Failed(f"{case.label}: got {reply!r}, expected one of {want}")

    async def finish(self) -> None:
        for conn in self.conns:
            await conn.finish()
        final = await self.snapshot()
        for conn in self.conns:
            check_runs(conn, final)
        fresh = Conn(connect_memory(self.srv))
        await fresh.probe_reply(await fresh.probe())
        await fresh.finish()
        await self.verify()


SEED_MANAGER = [  # (command, data, extID): orders 1..4, a deleted order, a refused keyed request, a whale
    *(("AddUser", data, ext) for ext, data in S.SEED_ADD_USERS),  # 1000..1004; 1003 as the SDKs send it
    ("BalanceIn", {"login": 1000, "amount": 100}, "seed-1"),
    ("CreditIn", {"login": 1000, "amount": 50, "comment": "bonus"}, "seed-2"),
    ("BalanceIn", {"login": 1001, "amount": 5}, "seed-4"),
    ("DeleteBalanceSync", {"order": 3}, "seed-5"),
    ("BalanceOutSync", {"login": 1000, "amount": 10}, "seed-3"),
    ("BalanceOut", {"login": 1001, "amount": 1}, "seed-fail"),
] + [("BalanceIn", {"login": 1002, "amount": S.MAX_UNITS}, f"seed-whale-{i}") for i in range(8)] + [
    ("BalanceIn", {"login": 1002, "amount": 9 * 10**11}, "seed-whale-8"),
    ("BalanceIn", {"login": 1004, "amount": 20}, "seed-off-1"),  # orders 15 and 16 of 1004, disabled next
    ("CreditInSync", {"login": 1004, "amount": 5, "comment": "Zo\u00eb's \u20ac5"}, "seed-off-2"),
]
SEED_DISABLED = [("BalanceIn", {"login": 1004, "amount": 1}, "seed-off-3")]  # refused, once 1004 is disabled
SEED_REFUSED = {"seed-fail": (409, "NO_MONEY"), "seed-off-3": (403, "ACCOUNT_DISABLED")}


async def seed_manager_world(h: ManagerHarness) -> None:
    """Managers (cheap password hashes), then SEED_MANAGER pipelined on one connection; 1003 gets a password
    (a cheap hash) and 1004 is disabled (no command disables an account: an operator's change in the
    database, which the server's copy follows); then SEED_DISABLED. The oracle learns the idempotency keys
    of the seeds from their replies and events."""
    from syncledger.server.client import open_client

    def add_managers() -> None:
        for login, (password, session) in S.MANAGERS.items():
            h.srv.store.db.execute("INSERT OR REPLACE INTO managers (login, password_hash, session, created) "
                                   "VALUES (?,?,?,?)", (login, cheap_hash(password), session, 0))

    def password_and_disable() -> None:
        for login, password in S.ACCOUNT_PASSWORDS.items():
            h.srv.store.db.execute("UPDATE accounts SET password_hash = ? WHERE login = ?",
                                   (cheap_hash(password), login))
        h.srv.store.db.execute("UPDATE accounts SET enable = 0 WHERE login = ?", (S.DISABLED,))
        h.srv.store.disabled.add(S.DISABLED)
    await h.srv.mainloop.read(add_managers)
    h.srv.reload_keys()
    with trio.fail_after(READ_TIMEOUT):
        async with open_client(connect_memory(h.srv), S.ADMIN.raw) as client:
            calls = [client.start(command, data, ext_id=ext) for command, data, ext in SEED_MANAGER]
            replies = [await call.reply() for call in calls]
            await h.srv.mainloop.read(password_and_disable)
            replies += [await client.call(command, data, ext_id=ext) for command, data, ext in SEED_DISABLED]
    snap = await h.snapshot()
    seq = 0
    for (command, data, ext), reply in zip(SEED_MANAGER + SEED_DISABLED, replies, strict=True):
        op = S.base_command(command)
        fields = S.draft_of(command, data).fields
        if op == "AddUser":
            assert reply.ok, reply
            check_account(reply.data, data["login"],  # as it was when created
                          replace(snap.accounts[data["login"]], balance=0, credit=0, enable=True))
            h.oracle.keys[(S.ADMIN.login, ext)] = KeyRec(add_user_payload(fields), login=data["login"])
            continue
        payload = payload_of(op, fields)
        if ext in SEED_REFUSED:
            assert (reply.status, reply.error) == SEED_REFUSED[ext], reply
            h.oracle.keys[(S.ADMIN.login, ext)] = KeyRec(payload, error=SEED_REFUSED[ext])
            continue
        assert reply.ok, reply
        seq += 1
        etype, _ = snap.events[seq]
        record = snap.sent_data(seq)
        acceptance = {"accepted": True, "order": record["order"], "state": ACCEPT_STATE[etype],
                      "login": record["login"], "cmd": record["cmd"], "amount": record["profit"]}
        assert reply.data == (record if command.endswith("Sync") else acceptance), (reply, record)
        h.oracle.keys[(S.ADMIN.login, ext)] = KeyRec(payload, acceptance=acceptance, record=record)
    assert snap.seq == seq
    assert snap.accounts[1003].currency == S.DEFAULT_CURRENCY and not snap.accounts[S.DISABLED].enable
    assert sorted(snap.orders) == [1, 2, 3, 4, *range(6, 17)], sorted(snap.orders)  # seed-fail reserved 5
