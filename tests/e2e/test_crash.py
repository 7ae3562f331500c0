"""Crash-restart: the real server killed with SIGKILL under mixed load, restarted on the same ledger, three
times (bench/crash_test.py runs the long version). And a check that the checker itself catches a lost
acknowledgement, a double application, a phantom write and a wrong reply."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from bench.crash_test import MANAGER, CrashTestFailure, Journal, Op, check_journal, read_ledger, run_crash_test
from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store
from tests.pgcluster import backend, every_backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)

SEED = int(os.environ.get("SYNCLEDGER_CRASH_SEED", "20240605"))


@every_backend
async def test_kill_9_under_load_and_restart_3_cycles(tmp_path, backend, ledger_db):
    """Three kill -9 cycles, one of each kind, then a restart, the final checks and a SIGTERM (exit 0):

    - cycle 0: the kill comes a few milliseconds into a storm of pipelined requests (mid group commit);
    - cycle 1: the server runs with a 2 ms sync timeout (…Sync requests answer 504 SYNC_TIMEOUT and are
      settled by the retries after the next restart), and the kill comes in the middle of steady load;
    - cycle 2: a storm kill again, on a ledger that has already been recovered twice.

    After every kill: ``syncledger verify`` on the dead server's files, every acknowledged operation in
    the ledger exactly once, no phantom rows, every reply agreeing with the ledger, gap-free events; after
    every restart: a ``from_seq`` replay, every journaled request retried (same extID / transaction.id)
    plus changed repeats (refused), ``GetUser`` against the journal. The kinds of cycle are fixed rather
    than drawn, so that three cycles cover what five random ones usually do (five random cycles once ran
    no short-sync-timeout cycle at all). About 14 s on a quiet 2-core machine.

    On a ledger file, and on PostgreSQL (where the kill leaves the database server running: what it committed
    is what the restarted server finds); there the first cycle only (the storm kill mid group commit, then the
    restart, the checks and the SIGTERM), to keep the suite within its two minutes: the other two cycles test
    the mainLoop's sync timeouts and a twice-recovered ledger, which do not depend on the engine. And on two
    ``serve --cluster`` nodes, the load spread over both: two cycles, each killing one node while the other
    serves (and must answer a new request after the kill); the first cycles' kinds, so each node dies once.

    Longer runs: ``python bench/crash_test.py --cycles 50`` (random kinds and seed, printed), or
    ``SYNCLEDGER_CRASH_SEED=N pytest tests/e2e/test_crash.py`` for another seed here."""
    cycles = {"sqlite": 3, "postgresql": 1, "cluster": 2}[backend]
    stats = await run_crash_test(cycles=cycles, seed=SEED, workdir=str(tmp_path), db=ledger_db,
                                 load_seconds=(0.2, 0.7), sync_timeouts=[5000, 2, 5000][:cycles],
                                 storms=[True, False, True][:cycles], nodes=2 if backend == "cluster" else 1)
    print(stats.summary())
    assert stats.cycles == cycles and len(stats.in_flight_at_kill) == cycles and min(stats.in_flight_at_kill) > 0
    assert stats.storm_kills == (cycles + 1) // 2 and stats.short_sync_cycles == cycles // 2
    if cycles > 1:
        assert stats.transient.get("SYNC_TIMEOUT", 0) > 0, stats.summary()  # the 2 ms cycle answered 504s
    # the load really was mixed: every kind applied, and the refusals that must stay refused happened
    for kind in ("BalanceIn", "CreditIn", "BalanceOut", "debit", "credit", "cancel"):
        assert stats.applied.get(kind, 0) > 0, (kind, stats.summary())
    assert stats.refused.get("BalanceOut:NO_MONEY", 0) > 0 and stats.probes > 0


def test_the_checker_catches_what_it_is_there_to_catch(tmp_path):
    db = str(tmp_path / "c.db")
    store = Store(db)
    store.apply_batch([AddAccount("a", "EUR", 0)])
    [out] = store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 5_000_000), now=1, manager=MANAGER,
                                       ext_id="k1")])

    def journal(amount: str = "5", reply: tuple | None = ("ok", out.data.order, 1000, 6, 5_000_000)) -> Journal:
        j = Journal()
        op = j.add(Op("mgr", "k1", 1000, Decimal(amount), "BalanceIn", {}))
        op.replies.append((0, "load", reply))
        return j

    assert check_journal(read_ledger(db), journal(), "ok") == {1000: (5_000_000, 0)}
    with pytest.raises(CrashTestFailure, match="disagrees with the ledger"):
        check_journal(read_ledger(db), journal(reply=("ok", 99, 1000, 6, 5_000_000)), "wrong reply")
    with pytest.raises(CrashTestFailure, match="journaled sum|does not match"):
        check_journal(read_ledger(db), journal(amount="6"), "wrong amount")
    lost = journal()
    lost.add(Op("mgr", "k2", 1000, Decimal(1), "BalanceIn", {})).replies.append((0, "load", ("ok", 7, 1000, 6, 1)))
    with pytest.raises(CrashTestFailure, match="ACKNOWLEDGED .* but not in the ledger"):
        check_journal(read_ledger(db), lost, "lost")
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 1), now=2, manager=MANAGER, ext_id="nobody")])
    with pytest.raises(CrashTestFailure, match="phantom"):
        check_journal(read_ledger(db), journal(), "phantom")
    # the ledger refuses to apply k1 twice, so the double write comes from another manager's key scope
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 5_000_000), now=3, manager=MANAGER + 1,
                               ext_id="k1")])
    with pytest.raises(CrashTestFailure, match="APPLIED 2 TIMES"):
        check_journal(read_ledger(db), journal(), "double")
    store.close()
