#!/usr/bin/env python
"""Crash-restart test of syncledger (issue 5, item 1): ``kill -9`` under load, restart, prove the ledger.

Each cycle starts the real server process (``python -m syncledger.server.cli serve`` on a ledger file that carries
over from cycle to cycle, every port 0), then:

1. right after a restart, a fresh subscriber resumes with ``Subscribe {"chanels": ["trade:event"],
   "from_seq": K}`` for a random K and must see exactly the events K+1..N of the ledger, in order;
2. every request journaled so far (acknowledged or not) is sent again with the same extID /
   transaction.id, plus a few deliberately changed repeats (they must be refused as conflicts);
3. a quiescent check: the ledger (read-only) against the client's journal, and every account's
   ``GetUser`` balance and credit against the sum of the journaled operations the ledger applied;
4. mixed load over real sockets for a random short time: ``BalanceIn``, ``CreditIn``, ``BalanceOut``
   (some too large: ``409 NO_MONEY``), ``CreditOut``, each in its plain or ``…Sync`` form, game-wallet
   debit / credit / cancel over HTTP (rounds, late settlements, second settlements, credits or cancels
   before their debit), retries of earlier requests and concurrent duplicates on other connections, and
   a subscriber that resumes from a random earlier seq while the writes go on;
5. ``kill -9`` (SIGKILL) of the server at a random moment while requests are in flight (half the time a
   few milliseconds into a storm of up to 300 pipelined requests: mid group commit); even cycles run the
   writer in its own process (``--writer process``: only the server is killed, its writer ends by itself and
   holds the ledger lock until it has), odd cycles in a thread of the server;
6. offline checks on the dead server's files: ``syncledger verify`` exits 0, the event seq is gap-free,
   every event any subscriber saw is in the ledger unchanged (and came in order, without gap or
   duplicate), and the journal check of step 3.

Some cycles run the server with a 2 ms sync timeout, so that ``…Sync`` requests answer
``504 SYNC_TIMEOUT`` and are settled by later retries. The seed fixes every random choice (operations,
amounts, durations, kill moments); the interleaving with the server still depends on timing.

The journal check: every acknowledged operation is in the ledger exactly once (its idempotency key or
wallet_tx row, its event and its finance row, with the journaled amount); every finance row belongs to a
journaled operation and has its event; every reply ever received for a key (first send, concurrent
duplicate, retry before or after a crash) agrees with what the ledger holds for that key; the outcome of
a key never changes once it is in the ledger; a round is settled at most once; and each account's totals
equal the sum of the journaled operations the ledger applied. After the last cycle the server is
restarted once more, checked, and stopped with SIGTERM (it must exit 0).

    python bench/crash_test.py                      # 20 cycles, random seed (printed)
    python bench/crash_test.py --cycles 50 --seed 7
    python bench/crash_test.py --keep               # keep the database, server logs and journal
    python bench/crash_test.py --db URL --nodes 2   # two serve --cluster nodes on PostgreSQL: one killed a cycle

The core is importable (``run_crash_test``): tests/e2e/test_crash.py runs a short version in CI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Callable, Sequence

import httpx
import orjson
import trio

from syncledger.ledger import engine
from syncledger.ledger.money import to_micro
from syncledger.server.client import Client, ConnectionLost, connect

CLI = [sys.executable, "-P", "-m", "syncledger.server.cli"]  # -P: the current folder never shadows the package
SECRET = "crash-test-secret-of-at-least-32-bytes!"
WALLET_TOKEN = "crash-test-provider-token"
MANAGER = 7  # the manager login: idempotency keys are per (manager, extID)
CURRENCY = "EUR"
ACCOUNTS = 3
HUGE = Decimal(10) ** 9  # more than any account ever holds: a sure NO_MONEY / INSUFFICIENT_FUNDS

# Manager replies that say nothing about the ledger (the request may or may not have been applied).
TRANSIENT_STATUS = {429, 500, 503, 504}
# Wallet statuses that are not recorded (nothing written; a retry may still apply).
TRANSIENT_WALLET = {"TEMPORARY_ERROR", "UNKNOWN_ERROR"}
# What the load must have had answered before the first kill (it waits for them, at most 10 s after its time):
# every kind applied, and the refusal that must stay refused.
MIX = frozenset({"BalanceIn", "CreditIn", "BalanceOut", "debit", "credit", "cancel", "BalanceOut:NO_MONEY"})
ALREADY = {"debit": "BET_ALREADY_EXIST", "credit": "BET_ALREADY_SETTLED", "cancel": "BET_ALREADY_SETTLED"}
WALLET_REFUSALS = {"debit": {"INSUFFICIENT_FUNDS", "FINAL_ERROR_ACTION_FAILED"},
                   "credit": {"BET_DOES_NOT_EXIST", "BET_ALREADY_SETTLED"},
                   "cancel": {"BET_DOES_NOT_EXIST", "BET_ALREADY_SETTLED"}}
MGR_EFFECT = {"BalanceIn": (0, 1), "BalanceOut": (0, -1), "CreditIn": (1, 1), "CreditOut": (1, -1)}  # (total, sign)
MGR_CMD = {"BalanceIn": 6, "CreditIn": 7, "BalanceOut": 8, "CreditOut": 9}


class CrashTestFailure(AssertionError):
    """The ledger or a reply contradicts the journal."""


def _failure_in(exc: BaseException) -> CrashTestFailure | None:
    """The CrashTestFailure in ``exc`` (Trio nurseries wrap their children's exceptions in groups)."""
    if isinstance(exc, CrashTestFailure):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _failure_in(inner)
            if found is not None:
                return found
    return None


# ============================================================================ the journal

@dataclass(eq=False)
class Op:
    """One idempotent request as the client sent it, and every reply it got.

    ``kind`` is ``mgr`` (a manager finance request, ``key`` its extID) or the wallet's ``debit``,
    ``credit``, ``cancel`` (``key`` its transaction.id; a cancel's id is its debit's id)."""

    kind: str
    key: str
    login: int
    amount: Decimal  # what was asked (positive); a cancel: 0 (it reverses its debit)
    command: str = ""  # mgr: BalanceIn | BalanceOut | CreditIn | CreditOut
    data: dict | None = None  # mgr: the request data; wallet: the body without uuid
    ref: str | None = None  # credit: its debit's id; cancel: the debit's id (== key)
    cycle: int = 0
    expect: frozenset | None = None  # acceptable ledger outcomes (None: any), see check_journal
    sends: int = 0
    # (cycle, phase, normalized reply or None when no answer came back)
    replies: list[tuple[int, str, Any]] = field(default_factory=list)
    truth: Any = None  # the outcome the ledger holds, once it holds one

    @property
    def jkey(self) -> tuple[str, str]:
        return (self.kind, self.key)

    def answered(self) -> list:
        """Replies that tell what the ledger holds (not transient, not lost)."""
        if self.kind == "mgr":
            return [r for _, _, r in self.replies
                    if r is not None and not (r[0] == "err" and r[1] in TRANSIENT_STATUS)]
        return [r for _, _, r in self.replies if r is not None and r not in TRANSIENT_WALLET]

    def describe(self) -> str:
        what = self.command if self.kind == "mgr" else self.kind
        return (f"{what} {self.key!r} (login {self.login}, amount {self.amount}, cycle {self.cycle}, "
                f"{self.sends} sends, replies {[(c, p, r) for c, p, r in self.replies][:8]})")


class Journal:
    def __init__(self) -> None:
        self.ops: dict[tuple[str, str], Op] = {}
        self.mgr: list[Op] = []
        self.wallet: list[Op] = []
        self.probes: list[tuple[Op, int, str, Any]] = []  # (op, cycle, phase, reply) of changed repeats

    def add(self, op: Op) -> Op:
        assert op.jkey not in self.ops, op.jkey
        self.ops[op.jkey] = op
        (self.mgr if op.kind == "mgr" else self.wallet).append(op)
        return op

    def dump(self, path: str) -> None:
        def ser(op: Op) -> dict:
            return {"kind": op.kind, "key": op.key, "command": op.command, "login": op.login,
                    "amount": str(op.amount), "ref": op.ref, "cycle": op.cycle, "sends": op.sends,
                    "expect": sorted(map(str, op.expect)) if op.expect else None,
                    "replies": [[c, p, repr(r)] for c, p, r in op.replies], "truth": repr(op.truth)}
        with open(path, "w") as f:
            json.dump([ser(op) for op in self.ops.values()], f, indent=0)


def mgr_norm(reply, sync: bool) -> tuple:
    """A manager reply, comparable whatever its form: ("ok", order, login, cmd, signed micro-units) or
    ("err", status, code)."""
    if reply.ok:
        d = reply.data
        return ("ok", d["order"], d["login"], d["cmd"], to_micro(d["profit"] if sync else d["amount"]))
    return ("err", reply.status, reply.error)


# ============================================================================ the ledger, read-only

@dataclass
class Ledger:
    # id -> (order, version, login, cmd, state, amount, delta, balance, credit, source, ext_id)
    finance: dict[int, tuple]
    events: dict[int, tuple]  # seq -> (type, record_id, data)
    idempotency: dict[tuple[int, str], tuple]  # (manager, ext_id) -> (payload, status, error, seq)
    wallet_tx: dict[tuple[str, str], tuple]  # (kind, txid) -> (login, ref_id, amount, payload, status, order, seq)
    accounts: set[int]

    def totals(self) -> dict[int, tuple[int, int]]:
        """Each account's (balance, credit) after its latest finance row."""
        out = {login: (0, 0) for login in self.accounts}
        for row_id in sorted(self.finance):
            r = self.finance[row_id]
            out[r[2]] = (r[7], r[8])
        return out


def read_ledger(path: str) -> Ledger:
    db = engine.connect_ro(path)
    try:
        db.execute(engine.snapshot(db))  # one snapshot: another node of a cluster may be committing meanwhile
        q = db.execute
        finance = {r[0]: r[1:] for r in q(
            "SELECT id, order_id, version, login, cmd, state, amount, delta, balance, credit, source, ext_id "
            "FROM finance")}
        events = {r[0]: r[1:] for r in q("SELECT seq, type, record_id, data FROM events")}
        idem = {(r[0], r[1]): r[2:] for r in q("SELECT manager, ext_id, payload, status, error, seq FROM idempotency "
                                               "WHERE login IS NULL")}  # AddUser keys (set-up) name a login
        wtx = {(r[0], r[1]): r[2:] for r in q(
            "SELECT kind, txid, login, ref_id, amount, payload, status, order_id, seq FROM wallet_tx")}
        accounts = {r[0] for r in q("SELECT login FROM accounts")}
    finally:
        db.close()
    return Ledger(finance, events, idem, wtx, accounts)


def run_verify(path: str) -> str:
    """``syncledger verify --db PATH``: must exit 0."""
    r = subprocess.run([*CLI, "verify", "--db", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise CrashTestFailure(f"syncledger verify exited {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
    return r.stdout.strip()


def _finance_key(row: tuple) -> tuple[str, str | None]:
    """Which journal key a finance row belongs to."""
    order, version, login, cmd, state, amount, delta, balance, credit, source, ext_id = row
    if source == "manager":
        return ("mgr", ext_id)
    if source == "wallet" or source.startswith("wallet:"):
        if state == 6:
            return ("cancel", ext_id)
        if cmd == 8 and version == 1:
            return ("debit", ext_id)
        if cmd == 6 and version == 1:
            return ("credit", ext_id)
    return ("?", f"{source}/{ext_id}/cmd{cmd}/v{version}")


def check_journal(ledger: Ledger, journal: Journal, where: str) -> dict[int, tuple[int, int]]:
    """Every invariant between the client's journal and the ledger. Sets each op's ``truth``; returns the
    expected (balance, credit) of each account in micro-units. Raises CrashTestFailure naming the ops."""
    problems: list[str] = []

    def bad(msg: str) -> None:
        problems.append(msg)

    # --- seq and rows: gap-free, every finance row has exactly one event
    seqs = sorted(ledger.events)
    if seqs != list(range(1, len(seqs) + 1)):
        first = next((s for i, s in enumerate(seqs, 1) if s != i), None)
        bad(f"event seq is not gap-free 1..{len(seqs)}: seq {first} is out of place")
    ids = sorted(ledger.finance)
    if ids != list(range(1, len(ids) + 1)):
        bad("finance ids are not 1..N")
    referenced = [ev[1] for ev in ledger.events.values()]
    if sorted(referenced) != ids:
        bad(f"finance rows and events do not pair one to one ({len(ids)} rows, {len(referenced)} events)")

    # --- finance rows grouped by the key that wrote them
    groups: dict[tuple[str, str], list[int]] = {}
    for row_id, row in ledger.finance.items():
        groups.setdefault(_finance_key(row), []).append(row_id)
    for key, rows in groups.items():
        if key not in journal.ops:
            bad(f"finance rows {rows} belong to no journaled request: {key} (phantom write)")
        elif len(rows) > 1:
            bad(f"{journal.ops[key].describe()}: APPLIED {len(rows)} TIMES (finance rows {rows})")

    expected = {login: [0, 0] for login in ledger.accounts}
    settles: dict[str, list[Op]] = {}
    for op in journal.ops.values():
        rows = groups.get(op.jkey, [])
        answered = op.answered()
        if op.kind == "mgr":
            idem = ledger.idempotency.get((MANAGER, op.key))
            if idem is None:
                truth = None
                if rows:
                    bad(f"{op.describe()}: finance row {rows} without its idempotency key (half-applied)")
                if answered:
                    bad(f"{op.describe()}: ACKNOWLEDGED {answered[0]} but not in the ledger (lost)")
            else:
                payload, status, error, seq = idem
                if seq is None:
                    truth = ("err", status, error)
                    if rows:
                        bad(f"{op.describe()}: refused {truth} yet has finance rows {rows}")
                else:
                    ev = ledger.events.get(seq)
                    row = ledger.finance.get(ev[1]) if ev else None
                    if row is None:
                        bad(f"{op.describe()}: idempotency key points to seq {seq} with no event/finance row")
                        continue
                    truth = ("ok", row[0], row[2], row[3], row[5])
                    total, sign = MGR_EFFECT[op.command]
                    amount = to_micro(op.amount)
                    if rows != [ev[1]]:
                        bad(f"{op.describe()}: idempotency seq {seq} is row {ev[1]}, the key's rows are {rows}")
                    if (row[2], row[3], row[5], row[6], row[9], row[10]) != \
                            (op.login, MGR_CMD[op.command], sign * amount, sign * amount, "manager", op.key):
                        bad(f"{op.describe()}: ledger row {row} does not match the request")
                    expected[op.login][total] += sign * amount
            for r in answered:
                if r != truth:
                    bad(f"{op.describe()}: reply {r} disagrees with the ledger {truth}")
        else:
            wt = ledger.wallet_tx.get(op.jkey)
            if wt is None:
                truth = None
                if rows:
                    bad(f"{op.describe()}: finance rows {rows} without a wallet_tx row (half-applied)")
                if answered:
                    bad(f"{op.describe()}: ACKNOWLEDGED {answered[0]} but not in wallet_tx (lost)")
            else:
                login, ref_id, amount, payload, status, order, seq = wt
                truth = status
                if login != op.login or (op.kind == "credit" and ref_id != op.ref):
                    bad(f"{op.describe()}: wallet_tx row {wt} does not match the request")
                if status == "OK":
                    ev = ledger.events.get(seq) if seq is not None else None
                    if ev is None or rows != [ev[1]]:
                        bad(f"{op.describe()}: OK with seq {seq}, but its finance rows are {rows}")
                    else:
                        row = ledger.finance[ev[1]]
                        if op.kind == "cancel":
                            debit = journal.ops.get(("debit", op.key))
                            want = to_micro(debit.amount) if debit else None
                        else:
                            want = to_micro(op.amount) * (-1 if op.kind == "debit" else 1)
                        if row[6] != want or row[2] != op.login or row[0] != order:
                            bad(f"{op.describe()}: ledger row {row} (delta {row[6]}) does not match the request "
                                f"(delta {want}, order {order})")
                        expected[op.login][0] += row[6] if want is None else want
                    if op.kind != "debit":
                        settles.setdefault(op.ref, []).append(op)
                    oks = [r for r in answered if r == "OK"]
                    if len(oks) > 1:
                        bad(f"{op.describe()}: answered OK {len(oks)} times")
                    for r in answered:
                        if r not in ("OK", ALREADY[op.kind]):
                            bad(f"{op.describe()}: reply {r} disagrees with the ledger (OK)")
                else:
                    if rows:
                        bad(f"{op.describe()}: refused {status} yet has finance rows {rows}")
                    if status not in WALLET_REFUSALS[op.kind]:
                        bad(f"{op.describe()}: unexpected recorded status {status}")
                    for r in answered:
                        if r != status:
                            bad(f"{op.describe()}: reply {r} disagrees with the ledger ({status})")
        if op.truth is not None and truth != op.truth:
            bad(f"{op.describe()}: its outcome changed from {op.truth} to {truth}")
        if truth is not None:
            outcome = (truth[0] if truth[0] == "ok" else truth[2]) if op.kind == "mgr" else truth
            if op.expect is not None and outcome not in op.expect:
                bad(f"{op.describe()}: outcome {truth}, expected one of {sorted(op.expect)}")
            op.truth = truth
    for debit_id, ops in settles.items():
        if len(ops) > 1:
            bad(f"round {debit_id!r} settled {len(ops)} times: {[o.describe() for o in ops]}")
    # tombstones name a debit that a journaled credit/cancel came before
    for (kind, txid), wt in ledger.wallet_tx.items():
        if kind == "tombstone":
            continue
        if (kind, txid) not in journal.ops:
            bad(f"wallet_tx ({kind}, {txid}) belongs to no journaled request")
    for (manager, ext_id) in ledger.idempotency:
        if ("mgr", ext_id) not in journal.ops:
            bad(f"idempotency key ({manager}, {ext_id}) belongs to no journaled request")
    # changed repeats were refused
    for op, cycle, phase, reply in journal.probes:
        want = ("err", 409, "IDEMPOTENCY_CONFLICT") if op.kind == "mgr" else "INVALID_PARAMETER"
        transient = reply is None or (reply[0] == "err" and reply[1] in TRANSIENT_STATUS if op.kind == "mgr"
                                      else reply in TRANSIENT_WALLET)
        if not transient and reply != want:
            bad(f"changed repeat of {op.describe()}: answered {reply}, expected {want}")
    # balances: the ledger's totals equal the sum of the journaled operations it applied
    totals = ledger.totals()
    for login, (balance, credit) in expected.items():
        if totals.get(login) != (balance, credit):
            bad(f"account {login}: ledger totals {totals.get(login)} != journaled sum {(balance, credit)}")
    if problems:
        more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        raise CrashTestFailure(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:25]) + more)
    return {login: (b, c) for login, (b, c) in expected.items()}


# ============================================================================ the server process

class ServerProcess:
    def __init__(self, db: str, workdir: str, number: int, sync_timeout_ms: int = 5000, writer: str = "process",
                 cluster: bool = False):
        self.db, self.sync_timeout_ms, self.writer = db, sync_timeout_ms, writer
        self.cluster = cluster  # one node of several on a PostgreSQL ledger (serve --cluster)
        self.log_path = os.path.join(workdir, f"server-{number:03d}.log")  # (numbered in the order started)
        self.proc: subprocess.Popen | None = None
        self.tcp = self.ws = self.wallet = 0

    async def start(self) -> None:
        env = {**os.environ, "SYNCLEDGER_SECRET": SECRET, "SYNCLEDGER_WALLET_TOKEN": WALLET_TOKEN}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--db", self.db, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                 "--admin-port", "0", "--sync-timeout-ms", str(self.sync_timeout_ms), "--writer", self.writer,
                 *(["--cluster"] if self.cluster else [])],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        with trio.fail_after(60):
            line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        m = re.fullmatch(r"listening tcp=[^:]+:(\d+) ws=[^:]+:(\d+) wallet=[^:]+:(\d+) admin=\S+\n", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise CrashTestFailure(f"server did not start: {line!r}\n{self.log_tail()}")
        self.tcp, self.ws, self.wallet = map(int, m.groups())

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self, timeout: float = 30) -> int:
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(self.proc.wait)

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def ensure_dead(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()


# ============================================================================ the run

@dataclass
class Stats:
    cycles: int = 0
    sent: int = 0
    answered: int = 0
    lost: int = 0  # no reply: the server died first
    retries: int = 0
    probes: int = 0
    in_flight_at_kill: list[int] = field(default_factory=list)
    storm_kills: int = 0  # kills a few milliseconds into a storm of pipelined requests (mid group commit)
    short_sync_cycles: int = 0  # cycles run with a 2 ms sync timeout (…Sync answers 504, settled by retries)
    cut_applied: int = 0  # unanswered at a kill, yet committed (their retry must replay, not apply again)
    cut_lost: int = 0  # unanswered at a kill and not committed (their retry may apply them once)
    transient: dict[str, int] = field(default_factory=dict)  # answers that decide nothing (504 SYNC_TIMEOUT…)
    events: int = 0
    late_events: int = 0  # events checked from subscribers that resumed (from_seq) under load
    keys: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.cycles} kill -9 cycles in {self.seconds:.1f} s: {self.keys} idempotency keys, "
                f"{self.sent} requests sent ({self.retries} retries after restarts, {self.probes} changed repeats), "
                f"{self.answered} answered, {self.lost} replies lost to kills; in flight at each kill: "
                f"{self.in_flight_at_kill} ({self.storm_kills} mid-storm); {self.short_sync_cycles} cycles with a "
                f"2 ms sync timeout; unanswered at a kill: {self.cut_applied} committed, "
                f"{self.cut_lost} not; transient answers {self.transient}; {self.events} events "
                f"({self.late_events} more seen by subscribers resuming under load); "
                f"applied {dict(sorted(self.applied.items()))}; "
                f"refused {dict(sorted(self.refused.items()))}")


class CrashTest:
    def __init__(self, *, db: str, workdir: str, seed: int, load_seconds: tuple[float, float] = (0.3, 1.2),
                 retry_sample: int | None = None, log: Callable[[str], None] = print,
                 sync_timeouts: Sequence[int] | None = None, storms: Sequence[bool] | None = None, nodes: int = 1):
        self.db, self.workdir, self.seed, self.log = db, workdir, seed, log
        # the servers: one, or the nodes of a cluster (cycle i kills node i % nodes while the others serve)
        self.nodes: list[ServerProcess | None] = [None] * nodes
        self.starts = itertools.count()
        self.rng = random.Random(seed)
        self.load_seconds, self.retry_sample = load_seconds, retry_sample
        self.answered_kinds: set[str] = set()  # what has been answered so far: see MIX
        # per cycle (cycle i takes item i; no sequence or no item i: a random choice): the sync timeout in
        # ms, and whether the kill comes mid-storm. A short test can then be sure to cover each kind of cycle.
        self.sync_timeouts, self.storms = sync_timeouts, storms
        self.journal = Journal()
        self.stats = Stats()
        self.token = ""
        self.accounts: dict[int, str] = {}  # login -> sid
        self.ids = itertools.count(1)
        self.uuids = itertools.count(1)
        self.cycle = 0
        self.in_flight = 0
        # wallet rounds the client knows the state of
        self.open_debits: list[Op] = []  # debit answered OK, no settlement sent yet
        self.settled: list[Op] = []  # debits whose first settlement was answered OK
        self.recent_mgr: list[Op] = []  # sent lately: candidates for concurrent duplicates
        # the live subscriber's view of trade:event, kept across restarts
        self.seen: list[tuple[int, int, dict]] = []
        self.sub_problems: list[str] = []
        self.late: list[tuple[int, list]] = []  # (from_seq, events seen) of subscribers started under load
        self.late_checked = 0
        self.ledger_events = 0

    def fail(self, msg: str) -> None:
        raise CrashTestFailure(msg)

    def node(self, i: int) -> ServerProcess:
        """The server of the ``i``-th connection: the only one, or the nodes of a cluster by turns."""
        return self.nodes[i % len(self.nodes)]

    # ---------------------------------------------------------------- setup

    def prepare(self) -> None:
        env = {**os.environ, "SYNCLEDGER_SECRET": SECRET}
        subprocess.run([*CLI, "manager", "add", "--db", self.db, "--login", str(MANAGER), "--password", "crash-password-1",
                        "--session", "MANAGER"], check=True, capture_output=True, env=env)
        self.token = subprocess.run([*CLI, "token", "--db", self.db, "--login", str(MANAGER)], check=True,
                                    capture_output=True, text=True, env=env).stdout.strip()

    async def setup_accounts(self) -> None:
        async with connect("127.0.0.1", self.node(0).tcp, self.token) as c:
            for i in range(ACCOUNTS):
                r = await c.call("AddUser", {"name": f"player-{i}", "currency": CURRENCY})
                if not r.ok:
                    self.fail(f"AddUser: {r}")
                login = r.data["login"]
                r = await c.call("OpenGameSession", {"login": login})
                if not r.ok:
                    self.fail(f"OpenGameSession: {r}")
                self.accounts[login] = r.data["sid"]
                op = self.journal.add(Op("mgr", f"setup-{login}", login, Decimal(1000), "BalanceIn",
                                         {"login": login, "amount": Decimal(1000), "comment": "setup"},
                                         expect=frozenset({"ok"})))
                await self.send_mgr(c, op, "setup", sync=True)

    # ---------------------------------------------------------------- requests

    def amount(self) -> Decimal:
        r = self.rng.random()
        if r < 0.3:
            return Decimal(self.rng.randint(1, 20))
        if r < 0.4:
            return Decimal("0.000001") * self.rng.randint(1, 9)
        return Decimal(self.rng.randint(1, 20_000_000)).scaleb(-6)

    def new_mgr_op(self) -> Op:
        login = self.rng.choice(list(self.accounts))
        r = self.rng.random()
        expect = None
        if r < 0.30:
            command, amount, expect = "BalanceIn", self.amount(), frozenset({"ok"})
        elif r < 0.55:
            command, amount, expect = "CreditIn", self.amount(), frozenset({"ok"})
        elif r < 0.80:
            command, amount = "BalanceOut", self.amount()
        elif r < 0.90:
            command, amount, expect = "BalanceOut", HUGE, frozenset({"NO_MONEY"})
        else:
            command, amount = "CreditOut", self.amount()
        data: dict[str, Any] = {"login": login, "amount": amount}
        if command.startswith("Credit") or self.rng.random() < 0.5:
            data["comment"] = f"crash {self.cycle}"
        key = f"m{self.cycle}-{next(self.ids)}"
        return self.journal.add(Op("mgr", key, login, amount, command, data, cycle=self.cycle, expect=expect))

    async def send_mgr(self, client: Client, op: Op, phase: str, *, sync: bool | None = None,
                       data: dict | None = None) -> Any:
        """Send ``op`` (or, with ``data``, a changed repeat of it) and journal the reply."""
        if sync is None:
            sync = self.rng.random() < 0.4
        probe = data is not None
        if not probe:
            op.sends += 1
        self.stats.sent += 1
        self.in_flight += 1
        try:
            call = client.start(op.command + ("Sync" if sync else ""), data or op.data, ext_id=op.key)
            reply = await call.reply()
            norm = mgr_norm(reply, sync)
            self.stats.answered += 1
            self.answered_kinds.add(op.command if norm[0] == "ok" else f"{op.command}:{norm[2]}")
            if norm[0] == "err" and norm[1] in TRANSIENT_STATUS:
                self.stats.transient[norm[2]] = self.stats.transient.get(norm[2], 0) + 1
        except ConnectionLost:
            norm = None
            self.stats.lost += 1
        finally:
            self.in_flight -= 1
        if probe:
            self.journal.probes.append((op, self.cycle, phase, norm))
        else:
            op.replies.append((self.cycle, phase, norm))
        return norm

    def wallet_body(self, op: Op, changed: bool = False) -> bytes:
        body = dict(op.data)
        if changed:
            body["game"] = {**body["game"], "id": body["game"]["id"] + "-changed"}
        body["uuid"] = f"u-{next(self.uuids)}"
        return orjson.dumps(body, default=lambda d: orjson.Fragment(str(d).encode()))

    def new_wallet_op(self, kind: str, login: int, txid: str, amount: Decimal = Decimal(0),
                      ref: str | None = None, expect: set | None = None) -> Op:
        tx: dict[str, Any] = {"id": txid}
        if kind == "credit":
            tx["refId"] = ref
        if kind != "cancel":
            tx["amount"] = amount
        body = {"sid": self.accounts[login], "userId": str(login), "currency": CURRENCY,
                "game": {"id": f"round-{ref or txid}", "type": "slots", "session": "gs-1"}, "transaction": tx}
        if kind == "cancel":
            ref = txid
        return self.journal.add(Op(kind, txid, login, amount, data=body, ref=ref, cycle=self.cycle,
                                   expect=frozenset(expect) if expect else None))

    async def send_wallet(self, http: httpx.AsyncClient, port: int, op: Op, phase: str,
                          changed: bool = False) -> str | None:
        url = f"http://127.0.0.1:{port}/v1/{op.kind}"
        if not changed:
            op.sends += 1
        self.stats.sent += 1
        self.in_flight += 1
        try:
            r = await http.post(url, params={"authToken": WALLET_TOKEN},
                                headers={"Authorization": f"Bearer {WALLET_TOKEN}"},
                                content=self.wallet_body(op, changed))
            if r.status_code != 200:
                self.fail(f"{op.describe()}: HTTP {r.status_code} {r.text[:200]}")
            status = json.loads(r.content, parse_float=Decimal)["status"]
            self.stats.answered += 1
            if status == "OK" and not changed:
                self.answered_kinds.add(op.kind)
            if status in TRANSIENT_WALLET:
                self.stats.transient[status] = self.stats.transient.get(status, 0) + 1
        except httpx.HTTPError:
            status = None
            self.stats.lost += 1
        finally:
            self.in_flight -= 1
        if changed:
            self.journal.probes.append((op, self.cycle, phase, status))
        else:
            op.replies.append((self.cycle, phase, status))
        return status

    # ---------------------------------------------------------------- load with a kill

    async def manager_worker(self, client: Client, depth: int) -> None:
        """Keep up to ``depth`` finance requests in flight on one connection: new ones, retries of earlier
        ones (any cycle), and duplicates of ones just sent on another connection (likely still in flight)."""
        rng = self.rng
        in_flight: set[str] = set()
        room = trio.Semaphore(depth)

        async def one(op: Op) -> None:
            try:
                await self.send_mgr(client, op, "load")
            finally:
                in_flight.discard(op.key)
                room.release()

        async with trio.open_nursery() as n:
            while not client.closed.is_set():
                burst = rng.randint(1, depth)  # pipelined back to back: many in flight at a kill
                for _ in range(burst):
                    await room.acquire()
                    r = rng.random()
                    op = None
                    if r < 0.08 and self.recent_mgr:
                        op = rng.choice(self.recent_mgr)  # concurrent duplicate
                    elif r < 0.16:
                        op = rng.choice(self.journal.mgr)  # a retry of anything sent before
                    if op is None or op.key in in_flight:
                        op = self.new_mgr_op()
                        self.recent_mgr.append(op)
                        del self.recent_mgr[:-32]
                    in_flight.add(op.key)
                    n.start_soon(one, op)
                await trio.sleep(rng.expovariate(1 / (0.004 * burst)))

    async def wallet_worker(self, http: httpx.AsyncClient, port: int) -> None:
        """A game provider: rounds (debit, then credit, cancel or left open), late settlements of open
        rounds (from any cycle), second settlements, credits/cancels before their debit, retries."""
        rng = self.rng

        async def send(op: Op) -> str | None:
            if rng.random() < 0.1:  # a concurrent duplicate (its own connection)
                results: list = []

                async def dup() -> None:
                    results.append(await self.send_wallet(http, port, op, "load"))

                async with trio.open_nursery() as n:
                    n.start_soon(dup)
                    n.start_soon(dup)
                for status in results:
                    if status is None:
                        return None
                return "OK" if "OK" in results else results[0]
            return await self.send_wallet(http, port, op, "load")

        while True:
            login = rng.choice(list(self.accounts))
            r = rng.random()
            txid = f"t{self.cycle}-{next(self.ids)}"
            if r < 0.45:
                huge = rng.random() < 0.08
                debit = self.new_wallet_op("debit", login, txid, HUGE if huge else self.amount(),
                                           expect={"INSUFFICIENT_FUNDS"} if huge else None)
                status = await send(debit)
                if status is None:
                    return
                if status == "OK":
                    x = rng.random()
                    if x < 0.45:
                        amount = Decimal(0) if rng.random() < 0.2 else self.amount()
                        settle = self.new_wallet_op("credit", login, f"w{txid}", amount, ref=txid, expect={"OK"})
                    elif x < 0.7:
                        settle = self.new_wallet_op("cancel", login, txid, expect={"OK"})
                    else:
                        self.open_debits.append(debit)
                        continue
                    status = await send(settle)
                    if status is None:
                        return
                    if status == "OK":
                        self.settled.append(debit)
            elif r < 0.60 and self.open_debits:
                debit = self.open_debits.pop(rng.randrange(len(self.open_debits)))
                if rng.random() < 0.6:
                    settle = self.new_wallet_op("credit", debit.login, f"w{txid}", self.amount(), ref=debit.key,
                                                expect={"OK"})
                else:
                    settle = self.new_wallet_op("cancel", debit.login, debit.key, expect={"OK"})
                status = await send(settle)
                if status is None:
                    return
                if status == "OK":
                    self.settled.append(debit)
            elif r < 0.68 and self.settled:
                debit = rng.choice(self.settled)
                if rng.random() < 0.7 or ("cancel", debit.key) in self.journal.ops:
                    settle = self.new_wallet_op("credit", debit.login, f"w{txid}", self.amount(), ref=debit.key,
                                                expect={"BET_ALREADY_SETTLED"})
                else:
                    settle = self.new_wallet_op("cancel", debit.login, debit.key, expect={"BET_ALREADY_SETTLED"})
                if await send(settle) is None:
                    return
            elif r < 0.74:
                # the settlement comes first: BET_DOES_NOT_EXIST and a tombstone; the debit then fails for good
                if rng.random() < 0.5:
                    early = self.new_wallet_op("credit", login, f"w{txid}", self.amount(), ref=txid,
                                               expect={"BET_DOES_NOT_EXIST"})
                else:
                    early = self.new_wallet_op("cancel", login, txid, expect={"BET_DOES_NOT_EXIST"})
                status = await send(early)
                if status is None:
                    return
                debit = self.new_wallet_op("debit", login, txid, self.amount(),
                                           expect={"FINAL_ERROR_ACTION_FAILED"} if status == "BET_DOES_NOT_EXIST"
                                           else None)
                if await send(debit) is None:
                    return
            elif self.journal.wallet:
                if await send(rng.choice(self.journal.wallet)) is None:  # a retry of anything sent before
                    return
            await trio.sleep(rng.expovariate(1 / 0.003))

    async def load_and_kill(self) -> None:
        """Load on every node; the cycle's node is killed (the others serve on, and must answer after it)."""
        srv, survivor = self.node(self.cycle), self.node(self.cycle + 1)
        duration = self.rng.uniform(*self.load_seconds)
        killed = trio.Event()

        async def killer(n: trio.Nursery, storm: Client) -> None:
            await trio.sleep(duration)
            with trio.move_on_after(10):  # a loaded machine answers less in the same time: wait for the mix
                while not MIX <= self.answered_kinds:
                    await trio.sleep(0.01)
            mid_storm = self.rng.random() < 0.5
            if self.storms is not None and self.cycle < len(self.storms):
                mid_storm = self.storms[self.cycle]
            if mid_storm:
                self.stats.storm_kills += 1
                # a storm of pipelined requests, and the kill a few milliseconds into it: in the middle of
                # group commits, between a commit and its answers
                for _ in range(self.rng.randint(20, 300)):
                    op = self.new_mgr_op()
                    n.start_soon(self.send_mgr, storm, op, "load")
                await trio.sleep(self.rng.uniform(0, 0.02))
            with trio.move_on_after(2):  # kill while something is in flight
                while self.in_flight == 0:
                    await trio.sleep(0.001)
            self.stats.in_flight_at_kill.append(self.in_flight)
            srv.kill()
            killed.set()
            await srv.wait()
            if survivor is not srv:  # a new request on the other node is answered
                async with connect("127.0.0.1", survivor.tcp, self.token) as c:
                    reply = await self.send_mgr(c, self.new_mgr_op(), "after the kill", sync=False)
                if reply is None or reply[0] == "err" and reply[1] in TRANSIENT_STATUS:
                    self.fail(f"the other node answered {reply} after the kill")
            await trio.sleep(0.5)  # let every client see its connection die
            n.cancel_scope.cancel()

        async def late_subscriber() -> None:
            """Resumes from a random earlier seq while writes go on (replay, catch-up and going live
            under load), until the kill: what it saw is checked against the ledger afterwards."""
            await trio.sleep(self.rng.uniform(0, duration * 0.8))
            k = self.rng.randint(0, self.seen[-1][0] if self.seen else 0)
            got: list[tuple[int, int, dict]] = []
            self.late.append((k, got))
            try:
                async with connect("127.0.0.1", survivor.tcp, self.token) as c:
                    r = await c.call("Subscribe", {"chanels": ["trade:event"], "from_seq": k})
                    if not r.ok:
                        self.fail(f"Subscribe from_seq {k} under load: {r}")
                    async for ev in c.events():
                        got.append((ev["seq"], ev["type"], ev["data"]))
            except* (ConnectionLost, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the kill

        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:
            async with connect("127.0.0.1", self.node(0).tcp, self.token) as c1, \
                    connect("127.0.0.1", self.node(1).tcp, self.token) as c2, \
                    connect("127.0.0.1", self.node(2).tcp, self.token) as c3, \
                    connect("127.0.0.1", srv.tcp, self.token) as storm:
                async with trio.open_nursery() as n:
                    n.start_soon(killer, n, storm)
                    n.start_soon(late_subscriber)
                    for c in (c1, c2, c3):
                        n.start_soon(self.manager_worker, c, 8)
                    for i in range(4):
                        n.start_soon(self.wallet_worker, http, self.node(i).wallet)
        if not killed.is_set():
            self.fail("the load ended before the kill")

    # ---------------------------------------------------------------- after a restart

    async def follow(self, srv: ServerProcess, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The live subscriber: resumes from the last seq it saw, checks each event follows the one before."""
        async with connect("127.0.0.1", srv.tcp, self.token) as c:
            last = self.seen[-1][0] if self.seen else 0
            r = await c.call("Subscribe", {"chanels": ["trade:event"], "from_seq": last})
            if not r.ok:
                self.fail(f"Subscribe from_seq {last}: {r}")
            task_status.started()
            async for ev in c.events():
                seq = ev["seq"]
                expected = (self.seen[-1][0] if self.seen else 0) + 1
                if seq != expected:
                    self.sub_problems.append(f"subscriber resumed from {last}: got seq {seq}, expected {expected}")
                    return
                self.seen.append((seq, ev["type"], ev["data"]))

    async def replay_from_random_seq(self, srv: ServerProcess, ledger: Ledger) -> None:
        """A new subscriber with from_seq K sees K+1..N exactly once, in order, as the ledger has them."""
        n = len(ledger.events)
        k = self.rng.randint(0, n)
        async with connect("127.0.0.1", srv.tcp, self.token) as c:
            r = await c.call("Subscribe", {"chanels": ["trade:event"], "from_seq": k})
            if not r.ok:
                self.fail(f"Subscribe from_seq {k}: {r}")
            got = []
            with trio.move_on_after(20):
                while len(got) < n - k:
                    got.append(await c.receive_event())
            await trio.sleep(0.1)
            while True:
                try:
                    got.append(c.receive_event_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        if [e["seq"] for e in got] != list(range(k + 1, n + 1)):
            self.fail(f"Subscribe from_seq {k} after restart: got seqs {[e['seq'] for e in got][:20]}..., "
                      f"expected {k + 1}..{n}")
        for e in got:
            self._same_event(e["seq"], e["type"], e["data"], ledger, f"replay from {k}")

    def _same_event(self, seq: int, type_: int, data: dict, ledger: Ledger, who: str) -> None:
        stored = ledger.events.get(seq)
        if stored is None:
            self.fail(f"{who}: event seq {seq} was delivered but is not in the ledger (lost after a kill)")
        # the ledger keeps the record; the event carries it with its seq inside (CONTRACT.md section 1)
        if stored[0] != type_ or {**json.loads(stored[2], parse_float=Decimal), "seq": seq} != data:
            self.fail(f"{who}: event seq {seq} delivered as {type_} {data}, the ledger has {stored[0]} {stored[2]}")

    def check_subscriber(self, ledger: Ledger) -> None:
        if self.sub_problems:
            self.fail("; ".join(self.sub_problems))
        for seq, type_, data in self.seen:
            self._same_event(seq, type_, data, ledger, "live subscriber")
        for k, got in self.late:
            seqs = [seq for seq, _, _ in got]
            if seqs != list(range(k + 1, k + 1 + len(seqs))):
                self.fail(f"subscriber from_seq {k} under load: seqs {seqs[:10]}... are not {k + 1}, {k + 2}, ...")
            for seq, type_, data in got:
                self._same_event(seq, type_, data, ledger, f"subscriber from_seq {k} under load")
        self.late_checked += sum(len(got) for _, got in self.late)
        self.late.clear()

    async def retry_everything(self) -> None:
        """Resend every journaled request (or a sample of the older ones), same extID / transaction.id,
        then a few changed repeats of settled ones."""
        ops = list(self.journal.ops.values())
        if self.retry_sample is not None:
            recent = [op for op in ops if op.cycle >= self.cycle - 1 or op.truth is None]
            older = [op for op in ops if not (op.cycle >= self.cycle - 1 or op.truth is None)]
            ops = recent + self.rng.sample(older, min(len(older), self.retry_sample))
        self.rng.shuffle(ops)
        mgr = [op for op in ops if op.kind == "mgr"]
        wallet = [op for op in ops if op.kind != "mgr"]
        self.stats.retries += len(ops)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            async with connect("127.0.0.1", self.node(0).tcp, self.token) as c1, \
                    connect("127.0.0.1", self.node(1).tcp, self.token) as c2:
                async with trio.open_nursery() as n:
                    for i, c in enumerate((c1, c2)):
                        n.start_soon(self._pump_mgr, c, mgr[i::2], 64)
                        n.start_soon(self._pump_wallet, http, self.node(i).wallet, wallet[i::2], 8)
                # changed repeats of requests the ledger has an outcome for: refused, nothing applied
                decided = [op for op in self.journal.ops.values() if op.truth is not None]
                for op in self.rng.sample(decided, min(len(decided), 8)):
                    self.stats.probes += 1
                    if op.kind == "mgr":
                        changed = {**op.data, "amount": op.amount + 1}
                        await self.send_mgr(c1, op, "probe", data=changed)
                    else:
                        await self.send_wallet(http, self.node(0).wallet, op, "probe", changed=True)

    async def _pump_mgr(self, client: Client, ops: list[Op], depth: int) -> None:
        room = trio.Semaphore(depth)

        async def one(op: Op) -> None:
            try:
                await self.send_mgr(client, op, "retry")
            finally:
                room.release()

        async with trio.open_nursery() as n:
            for op in ops:
                await room.acquire()
                n.start_soon(one, op)

    async def _pump_wallet(self, http: httpx.AsyncClient, port: int, ops: list[Op], depth: int) -> None:
        room = trio.Semaphore(depth)

        async def one(op: Op) -> None:
            try:
                await self.send_wallet(http, port, op, "retry")
            finally:
                room.release()

        async with trio.open_nursery() as n:
            for op in ops:
                await room.acquire()
                n.start_soon(one, op)

    async def check_online(self, where: str) -> None:
        """Quiescent: the journal against the ledger, GetUser on every node against the journaled sums, the
        live subscriber caught up with every event."""
        ledger = read_ledger(self.db)
        expected = check_journal(ledger, self.journal, where)
        for srv in self.nodes:
            async with connect("127.0.0.1", srv.tcp, self.token) as c:
                for login, (balance, credit) in expected.items():
                    r = await c.call("GetUser", {"login": login})
                    if not r.ok or (to_micro(r.data["balance"]), to_micro(r.data["credit"])) != (balance, credit):
                        self.fail(f"{where}: GetUser {login} = {r.data if r.ok else r}, the journal says "
                                  f"balance {balance} credit {credit} (micro-units)")
        n = len(ledger.events)
        with trio.move_on_after(20):
            while (self.seen[-1][0] if self.seen else 0) < n and not self.sub_problems:
                await trio.sleep(0.01)
        self.check_subscriber(ledger)
        if len(self.seen) != n:
            self.fail(f"{where}: the live subscriber saw {len(self.seen)} events, the ledger has {n}")

    def check_offline(self, where: str) -> Ledger:
        """The dead server's ledger (beside the other nodes, if any): verify, gap-free seq, the journal, what
        the subscriber saw."""
        run_verify(self.db)
        ledger = read_ledger(self.db)
        check_journal(ledger, self.journal, where)
        self.check_subscriber(ledger)
        return ledger

    # ---------------------------------------------------------------- cycles

    async def cycle_once(self, cycle: int, cycles: int, ledger: Ledger | None) -> Ledger:
        """Start what is not running (every node at first, then the one killed), resume, retry and check;
        then load and a kill (the last round: SIGTERM to every node instead). The ledger as checked."""
        self.cycle = cycle
        t0 = time.perf_counter()
        # now and then a sync timeout so short that …Sync requests answer 504 and are retried later
        if self.sync_timeouts is not None and cycle < min(cycles, len(self.sync_timeouts)):
            sync_ms = self.sync_timeouts[cycle]
        else:
            sync_ms = 5000 if cycle in (0, cycles) or self.rng.random() < 0.7 else 2
        if cycle < cycles and sync_ms < 5000:
            self.stats.short_sync_cycles += 1
        try:
            async with trio.open_nursery() as starting:  # (the nodes of a cluster at once)
                for i, node in enumerate(self.nodes):
                    if node is None or not node.alive():
                        # the writer in its own process, then in a thread of the server, by turns (killed: only
                        # the server)
                        start = next(self.starts)
                        writer = ("process", "thread")[start % 2]
                        self.nodes[i] = node = ServerProcess(self.db, self.workdir, start, sync_ms, writer,
                                                             cluster=len(self.nodes) > 1)
                        starting.start_soon(node.start)
            async with trio.open_nursery() as n:
                await n.start(self.follow, self.node(cycle))  # on the node to be killed: it ends with it
                if ledger is not None:
                    await self.replay_from_random_seq(self.node(cycle - 1), ledger)  # the one restarted
                    await self.retry_everything()
                    await self.check_online(f"cycle {cycle}: after restart and retries")
                else:
                    await self.setup_accounts()
                if cycle == cycles:
                    for node in self.nodes:
                        code = await node.stop()
                        if code != 0:
                            self.fail(f"SIGTERM: the server exited {code}\n{node.log_tail()}")
                    ledger = self.check_offline("after the final SIGTERM")
                    undecided = [op for op in self.journal.ops.values() if op.truth is None]
                    if undecided:
                        self.fail(f"{len(undecided)} requests still have no outcome after the final retries, "
                                  f"e.g. {undecided[0].describe()}")
                    return ledger
                await self.load_and_kill()
            ledger = self.check_offline(f"cycle {cycle}: after kill -9")
        except BaseException as e:
            failure = _failure_in(e)
            if failure is None:
                raise
            logs = "".join(node.log_tail() for node in self.nodes if node is not None)
            raise CrashTestFailure(f"{failure}\n(seed {self.seed}, cycle {cycle}; server log tail:\n{logs})") from None
        self.stats.cycles += 1
        # requests the kill left unanswered: committed before it (reply lost), or never applied
        cut = [op for op in self.journal.ops.values()
               if any(c == cycle and r is None for c, _, r in op.replies) and not op.answered()]
        applied = sum(1 for op in cut if op.truth is not None)
        self.stats.cut_applied += applied
        self.stats.cut_lost += len(cut) - applied
        self.log(f"cycle {cycle} (sync timeout {sync_ms} ms): {time.perf_counter() - t0:.1f} s, killed "
                 f"with {self.stats.in_flight_at_kill[-1]} in flight, {len(cut)} left unanswered "
                 f"({applied} of them committed); {len(ledger.events)} events, "
                 f"{len(self.journal.ops)} keys: ledger ok")
        return ledger

    async def run(self, cycles: int) -> Stats:
        started = time.perf_counter()
        self.prepare()
        ledger: Ledger | None = None
        try:
            for cycle in range(cycles + 1):  # the last round only restarts, checks and stops cleanly
                ledger = await self.cycle_once(cycle, cycles, ledger)
        finally:
            for node in self.nodes:
                if node is not None:
                    node.ensure_dead()
        self.stats.events = len(ledger.events) if ledger else 0
        self.stats.keys = len(self.journal.ops)
        self.stats.late_events = self.late_checked
        for op in self.journal.ops.values():
            name = op.command if op.kind == "mgr" else op.kind
            if op.truth in ("OK",) or (isinstance(op.truth, tuple) and op.truth[0] == "ok"):
                self.stats.applied[name] = self.stats.applied.get(name, 0) + 1
            elif op.truth is not None:
                what = f"{name}:{op.truth[2] if isinstance(op.truth, tuple) else op.truth}"
                self.stats.refused[what] = self.stats.refused.get(what, 0) + 1
        self.stats.seconds = time.perf_counter() - started
        return self.stats


async def run_crash_test(cycles: int = 20, seed: int | None = None, workdir: str | None = None,
                         db: str | None = None, keep: bool = False, load_seconds: tuple[float, float] = (0.3, 1.2),
                         retry_sample: int | None = None, log: Callable[[str], None] = print, *,
                         sync_timeouts: Sequence[int] | None = None, storms: Sequence[bool] | None = None,
                         nodes: int = 1) -> Stats:
    """Run ``cycles`` kill -9 / restart cycles on a new ledger; raises CrashTestFailure (naming the seed)
    on the first broken invariant. ``workdir`` (default: a temp dir, removed unless ``keep`` or a
    failure) holds the database, each server's log and, on failure, the journal (journal.json).
    ``sync_timeouts`` and ``storms`` fix, cycle by cycle, the sync timeout (ms) and whether the kill comes
    mid-storm (default: random choices). ``nodes`` > 1: that many ``serve --cluster`` nodes on a PostgreSQL ``db``."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="syncledger-crash-")
    db = db or os.path.join(workdir, "crash.db")
    if os.path.exists(db):
        raise ValueError(f"{db} exists: the crash test needs a new ledger (every row must be journaled)")
    log(f"crash test: seed {seed}, {cycles} cycles, ledger {db}")
    test = CrashTest(db=db, workdir=workdir, seed=seed, load_seconds=load_seconds, retry_sample=retry_sample,
                     log=log, sync_timeouts=sync_timeouts, storms=storms, nodes=nodes)
    failed = True
    try:
        stats = await test.run(cycles)
        failed = False
        return stats
    except BaseException:
        test.journal.dump(os.path.join(workdir, "journal.json"))
        log(f"crash test FAILED with seed {seed}; files kept in {workdir}")
        raise
    finally:
        if own_dir and not keep and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not failed:
            log(f"files kept in {workdir}")
        if not failed and os.path.dirname(db) != workdir:
            log(f"ledger kept in {db}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=20, help="kill -9 / restart cycles (default 20)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random choices (default: random, printed)")
    p.add_argument("--db", default=None, help="ledger path (must not exist; kept afterwards), or the URL of an empty "
                                             "PostgreSQL database")
    p.add_argument("--nodes", type=int, default=1, help="servers: 2 or more are nodes of a cluster on a PostgreSQL "
                                                       "--db, one killed each cycle while the others serve")
    p.add_argument("--keep", action="store_true", help="keep the work directory (ledger, server logs)")
    p.add_argument("--min-load", type=float, default=0.3, help="shortest load before a kill, seconds")
    p.add_argument("--max-load", type=float, default=1.2, help="longest load before a kill, seconds")
    p.add_argument("--retry-sample", type=int, default=None, metavar="N",
                   help="after each restart resend the last cycle's requests, every undecided one and N older "
                        "ones (default: resend every journaled request)")
    args = p.parse_args(argv)
    try:
        db = args.db if args.db is None or engine.is_postgres(args.db) else os.path.abspath(args.db)
        stats = trio.run(partial(run_crash_test, args.cycles, args.seed, None, db, args.keep,
                                 (args.min_load, args.max_load), args.retry_sample, nodes=args.nodes))
    except CrashTestFailure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
