"""Benchmark (not a test): rows/s of Store.apply_batch at several batch sizes with synchronous=FULL, beside
a bare executemany of equally-sized rows into a plain table with the same settings, and their ratio.

    python bench/ledger_bench.py [--rows 4096] [--accounts 100] [--sizes 1,64,512] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time

from ledger import AddAccount, Finance, FinanceRequest, Store, verify

NOW = 1_700_000_000
FINANCE_COLUMNS = 17  # columns of the finance table (id, order_id, ..., hash)


def bench_store(path: str, rows: int, size: int, accounts: int) -> float:
    """Seconds spent in apply_batch for ``rows`` CreditIn commands, ``size`` per batch."""
    store = Store(path, synchronous="FULL")
    try:
        logins = [o.data["login"] for o in store.apply_batch(
            [AddAccount(f"bench{i}", "USD", NOW) for i in range(accounts)])]
        commands = [
            Finance(FinanceRequest("CreditIn", logins[i % accounts], 1_000_000 + i, "bench"), now=NOW + i)
            for i in range(rows)
        ]
        batches = [commands[i:i + size] for i in range(0, rows, size)]
        results = []
        start = time.perf_counter()
        for batch in batches:
            results.append(store.apply_batch(batch))
        elapsed = time.perf_counter() - start
        errors = [o.error for outcomes in results for o in outcomes if o.error]
        assert store.seq == rows and not errors, f"the benchmark's commands must all apply: {errors[:3]}"
        report = verify(store.db)
        assert report.ok, report
        return elapsed
    finally:
        store.close()


def bench_bare(path: str, rows: int, size: int) -> float:
    """Seconds for the same number of equally-sized rows by executemany, one transaction per batch."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE plain (id INTEGER PRIMARY KEY, order_id INTEGER, version INTEGER, login INTEGER, "
            "cmd INTEGER, state INTEGER, amount INTEGER, delta INTEGER, balance INTEGER, credit INTEGER, "
            "comment TEXT, open_time INTEGER, close_time INTEGER, source TEXT, ext_id TEXT, created INTEGER, "
            "hash TEXT)")
        data = [
            (i + 1, i + 1, 1, 1000 + i % 100, 7, 3, 1_000_000 + i, 1_000_000 + i, 0, 1_000_000 * i, "bench",
             NOW + i, NOW + i, "manager", None, NOW + i, f"{i:064x}")
            for i in range(rows)
        ]
        assert len(data[0]) == FINANCE_COLUMNS
        batches = [data[i:i + size] for i in range(0, rows, size)]
        sql = f"INSERT INTO plain VALUES ({','.join('?' * FINANCE_COLUMNS)})"
        start = time.perf_counter()
        for batch in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, batch)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        assert db.execute("SELECT COUNT(*) FROM plain").fetchone()[0] == rows
        return elapsed
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="finance commands (rows) per measurement")
    parser.add_argument("--accounts", type=int, default=100, help="accounts the commands are spread over")
    parser.add_argument("--sizes", default="1,64,512", help="comma-separated batch sizes")
    parser.add_argument("--dir", default=None, help="directory for the temporary databases (default: system temp)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="ledger-bench-", dir=args.dir)
    print(f"syncledger ledger benchmark: {args.rows} rows per run, {args.accounts} accounts, "
          f"WAL + synchronous=FULL, SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}")
    print(f"temp dir: {work}")
    header = f"{'batch':>6} {'store rows/s':>13} {'bare rows/s':>13} {'store/bare':>11} {'store ms/batch':>15}"
    print(header)
    print("-" * len(header))
    try:
        for size in sizes:
            store_s = bench_store(os.path.join(work, f"store-{size}.db"), args.rows, size, args.accounts)
            bare_s = bench_bare(os.path.join(work, f"bare-{size}.db"), args.rows, size)
            store_rate, bare_rate = args.rows / store_s, args.rows / bare_s
            batches = -(-args.rows // size)
            print(f"{size:>6} {store_rate:>13,.0f} {bare_rate:>13,.0f} {store_rate / bare_rate:>11.2f} "
                  f"{store_s / batches * 1000:>15.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("store rows: each command also writes its event row and chains two SHA-256 hashes; "
          "bare rows: one plain INSERT each.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
