"""Seeded scenarios: many clients' finance requests interleaved in a seeded order under Trio's MockClock,
then the ledger's invariants checked. The same seed gives the same run, event for event; a failing
seed is printed and reproduces exactly.

    python -m syncledger.server.scenario --seeds 0-99          # run seeds, print the failing ones
    result = run(seed=7)                             # from Python: a ScenarioResult
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import trio
import trio.testing

from ..app import Server
from ..client import Call, Client
from . import Harness, faults_of, running, test_config

CREATES = ("BalanceIn", "CreditIn", "BalanceOut", "CreditOut")


@dataclass
class ScenarioResult:
    seed: int
    events: list[bytes] = field(default_factory=list)  # every trade:event, as the subscriber received it
    problems: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"seed {self.seed}: ok ({self.requests} requests, {len(self.events)} events)"
        return f"seed {self.seed}: FAILED: " + "; ".join(self.problems[:5])


@dataclass
class _Sent:
    client: int
    command: str
    data: dict
    ext_id: str
    call: Call


async def run_scenario(harness: Harness, seed: int, *, clients: int = 4, steps: int = 120,
                       accounts: int = 3) -> ScenarioResult:
    """Drive ``harness`` with a seeded interleaving; the server must run under MockClock."""
    rng = random.Random(seed)
    result = ScenarioResult(seed)
    server = harness.server
    async with _clients(harness, clients + 1) as conns:
        setup, subscriber, workers = conns[0], conns[1], conns[1:]
        logins = [await harness.add_account(setup) for _ in range(accounts)]
        assert (await subscriber.call("Subscribe", {"chanels": ["trade:event"]})).ok
        orders: dict[int, tuple[str, int]] = {}  # order -> (create command, login), from acknowledgements
        history: list[_Sent] = []
        sent = 0
        while sent < steps:
            group = rng.randint(1, 8)
            hold = rng.random() < 0.5  # let the group build up into one batch, or let it flow
            if hold:
                faults_of(server).pause()
            pending = []
            for _ in range(min(group, steps - sent)):
                who = rng.randrange(len(workers))
                command, data, ext_id = _pick(rng, logins, orders, history, sent)
                retry = next((h for h in history if h.ext_id == ext_id), None)
                if retry is not None:
                    who = retry.client  # a retry comes from the same manager
                    if any(p.ext_id == ext_id and p.client == who for p in pending):
                        continue  # already retried in this group
                    if ext_id in workers[who]._calls:
                        continue
                queued = server.mainloop.submitted
                call = workers[who].start(command, data, ext_id=ext_id)
                while server.mainloop.submitted == queued and not call._done.is_set():
                    await trio.sleep(0)  # wait until the server has queued it: a seeded queue order
                pending.append(_Sent(who, command, data, ext_id, call))
                sent += 1
            if hold:
                faults_of(server).resume()
            for item in pending:
                reply = await item.call.reply()
                _note(item, reply, orders, result)
                history.append(item)
        result.requests = sent
        await _check(harness, subscriber, setup, logins, orders, history, result)
    return result


def _pick(rng: random.Random, logins: list[int], orders: dict, history: list[_Sent], n: int):
    """A seeded request: a create, an update, a delete, or a retry of an earlier extID."""
    roll = rng.random()
    if roll < 0.15 and history:
        old = rng.choice(history)
        return old.command, old.data, old.ext_id  # a retry: must not apply twice
    if roll < 0.30 and orders:
        order = rng.choice(sorted(orders))
        create, login = orders[order]
        if rng.random() < 0.5:
            kind = "DeleteBalance" if create in ("BalanceIn", "BalanceOut") else "DeleteCredit"
            return kind + rng.choice(("", "Sync")), {"order": order}, f"x{n}"
        data = {"login": login, "amount": Decimal(rng.randint(1, 50)), "comment": f"upd{n}", "order": order}
        return create + rng.choice(("", "Sync")), data, f"x{n}"
    create = rng.choice(CREATES)
    data = {"login": rng.choice(logins), "amount": Decimal(rng.randint(1, 3000)) / 100, "comment": f"c{n}"}
    return create + rng.choice(("", "Sync")), data, f"x{n}"


def _note(item: _Sent, reply: Any, orders: dict, result: ScenarioResult) -> None:
    if reply.ok:
        order = reply.data["order"]
        base = item.command.removesuffix("Sync")
        if base in CREATES and order not in orders:
            orders[order] = (base, reply.data["login"])
    elif reply.status not in (404, 409):  # no money, unknown or deleted order, replayed refusal
        result.problems.append(f"{item.command} {item.ext_id} answered {reply.status} {reply.error}")


async def _check(harness: Harness, subscriber: Client, reader: Client, logins: list[int], orders: dict,
                 history: list[_Sent], result: ScenarioResult) -> None:
    """Invariants: the audit passes; the subscriber saw seq 1..N once each, in order; every …Sync answer
    is its event's data; every acknowledged extID is applied once; totals equal the acknowledged orders."""
    report = await harness.verify()
    if not report.ok:
        result.problems.append(f"verify: {report}")
    head = harness.server.store.seq
    events = []
    while len(events) < head:
        events.append(await subscriber.receive_event())
    result.events = [_canonical(e) for e in events]
    if [e["seq"] for e in events] != list(range(1, head + 1)):
        result.problems.append("the subscriber did not see every event once, in order")
    by_order: dict[int, dict] = {}
    for event in events:
        by_order[event["data"]["order"]] = event["data"]
    datas = {_canonical(e["data"]) for e in events}
    applied: dict[str, int] = {}
    for item in history:
        reply = await item.call.reply()
        if reply.ok and item.command.endswith("Sync") and _canonical(reply.data) not in datas:
            result.problems.append(f"{item.command} {item.ext_id} answered data that no event carried")
        if reply.ok:
            order = reply.data["order"]
            if applied.setdefault(item.ext_id, order) != order:
                result.problems.append(f"extID {item.ext_id} acknowledged with two orders")
    for login in logins:
        user = (await reader.call("GetUser", {"login": login})).data
        balance = sum((d["profit"] for d in by_order.values() if d["login"] == login and d["state"] != 6
                       and d["cmd"] in (6, 8)), Decimal(0))
        credit = sum((d["profit"] for d in by_order.values() if d["login"] == login and d["state"] != 6
                      and d["cmd"] in (7, 9)), Decimal(0))
        if (user["balance"], user["credit"]) != (balance, credit):
            result.problems.append(f"account {login}: {user['balance']}/{user['credit']} but its orders sum to "
                                   f"{balance}/{credit}")


def _canonical(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)


class _clients:
    def __init__(self, harness: Harness, n: int):
        self.harness, self.n = harness, n

    async def __aenter__(self) -> list[Client]:
        from contextlib import AsyncExitStack

        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        # two managers, so that their extIDs live in separate idempotency scopes
        return [await self._stack.enter_async_context(self.harness.client(self.harness.token_for(1 + i % 2)))
                for i in range(self.n)]

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.__aexit__(*exc)


def run(seed: int, *, clients: int = 4, steps: int = 120,
        prepare: Callable[[Server], None] | None = None) -> ScenarioResult:
    """Run one seed in a fresh Trio run under MockClock(autojump_threshold=0). ``prepare`` may swap
    parts of the server (e.g. a test double) before the scenario starts."""
    async def main() -> ScenarioResult:
        async with running(test_config()) as harness:
            if prepare is not None:
                prepare(harness.server)
            return await run_scenario(harness, seed, clients=clients, steps=steps)

    _seed_trio_scheduler(seed)
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _seed_trio_scheduler(seed: int) -> None:
    """Trio shuffles runnable tasks with a module-level Random (it seeds it under hypothesis too);
    seeding it makes task interleaving repeat exactly."""
    from trio._core import _run

    _run._r.seed(seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m syncledger.server.scenario", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-19", help="a seed or a range, e.g. 7 or 0-99")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args(argv)
    first, _, last = args.seeds.partition("-")
    failed = 0
    for seed in range(int(first), int(last or first) + 1):
        result = run(seed, clients=args.clients, steps=args.steps)
        print(result)
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
