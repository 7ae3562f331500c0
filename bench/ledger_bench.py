"""Benchmark (not a test): rows/s of Store.apply_batch at several batch sizes with synchronous=FULL, beside
a bare executemany of equally-sized rows into a plain table with the same settings, and their ratio.

    python bench/ledger_bench.py [--rows 4096] [--accounts 100] [--sizes 1,64,512] [--dir DIR]

With ``--postgres URL`` the same on PostgreSQL (each run in a schema of its own in that database, dropped after;
the bare baseline is psycopg's executemany, one transaction per batch), with the server's synchronous_commit:

    python bench/ledger_bench.py --postgres postgresql:///bench?host=/tmp/pg [--rows 4096] [--sizes 1,64,512]

With ``--verify-rows N`` it instead builds an N-row ledger through the real Store (synchronous=OFF, big
batches; a mix of new orders, updates, deletes, keyed manager requests and wallet rounds) and times
``syncledger verify`` on it in a fresh process (rows/s, peak memory), then ``head``:

    python bench/ledger_bench.py --verify-rows 1000000 [--accounts 1000] [--dir DIR] [--keep PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, verify
from syncledger.ledger.wallet import OpenSession, WalletCall

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


def _plain_rows(rows: int) -> list[tuple]:
    """Rows shaped like finance rows, for the bare baselines."""
    return [(i + 1, i + 1, 1, 1000 + i % 100, 7, 3, 1_000_000 + i, 1_000_000 + i, 0, 1_000_000 * i, "bench",
             NOW + i, NOW + i, "manager", None, NOW + i, f"{i:064x}") for i in range(rows)]


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
        data = _plain_rows(rows)
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


def _pg_schema(url: str, name: str) -> str:
    """A new schema in the database at ``url``, and the URL that uses it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        db.execute(f"CREATE SCHEMA {name}")
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"


def _pg_drop(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def bench_bare_pg(url: str, rows: int, size: int) -> float:
    """bench_bare on PostgreSQL: psycopg's executemany (pipelined), one transaction per batch."""
    import psycopg

    db = psycopg.connect(url, autocommit=True)
    try:
        db.execute(
            "CREATE TABLE plain (id BIGINT PRIMARY KEY, order_id BIGINT, version BIGINT, login BIGINT, cmd BIGINT, "
            "state BIGINT, amount BIGINT, delta BIGINT, balance BIGINT, credit BIGINT, comment TEXT, "
            "open_time BIGINT, close_time BIGINT, source TEXT, ext_id TEXT, created BIGINT, hash TEXT)")
        data = _plain_rows(rows)
        sql = f"INSERT INTO plain VALUES ({','.join(['%s'] * FINANCE_COLUMNS)})"
        start = time.perf_counter()
        for i in range(0, rows, size):
            db.execute("BEGIN")
            db.cursor().executemany(sql, data[i:i + size])
            db.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        db.close()


def bench_postgres(args: argparse.Namespace, sizes: list[int]) -> int:
    import psycopg

    with psycopg.connect(args.postgres, autocommit=True) as db:
        version = db.execute("SHOW server_version").fetchone()[0]
        settings = {name: db.execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "synchronous_commit")}
    print(f"syncledger ledger benchmark on PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())})"
          f": {args.rows} rows per run, {args.accounts} accounts, psycopg {psycopg.__version__}, "
          f"Python {sys.version.split()[0]}")
    header = f"{'batch':>6} {'store rows/s':>13} {'bare rows/s':>13} {'store/bare':>11} {'store ms/batch':>15}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        name = f"ledger_bench_{os.getpid()}_{size}"
        try:
            store_s = bench_store(_pg_schema(args.postgres, name), args.rows, size, args.accounts)
            bare_s = bench_bare_pg(_pg_schema(args.postgres, name + "_bare"), args.rows, size)
        finally:
            _pg_drop(args.postgres, name)
            _pg_drop(args.postgres, name + "_bare")
        store_rate, bare_rate = args.rows / store_s, args.rows / bare_s
        batches = -(-args.rows // size)
        print(f"{size:>6} {store_rate:>13,.0f} {bare_rate:>13,.0f} {store_rate / bare_rate:>11.2f} "
              f"{store_s / batches * 1000:>15.3f}", flush=True)
    return 0


def build_ledger(path: str, rows: int, accounts: int, batch: int = 5000) -> tuple[float, int]:
    """Write a ledger of at least ``rows`` finance rows through the Store (synchronous=OFF): per 100 commands
    about 85 new deposits or credits, 2 updates of a deposit, 1 delete of a credit, 5 keyed manager requests
    and a wallet round (a debit, then its credit) every 25. Returns the seconds it took and the rows written."""
    start = time.perf_counter()
    store = Store(path, synchronous="OFF")
    try:
        logins = [o.data["login"] for o in store.apply_batch(
            [AddAccount(f"bench{i}", "USD", NOW) for i in range(accounts)])]
        store.apply_batch([OpenSession(login, f"sid-{login}", NOW, 10**9) for login in logins])
        deposits: collections.deque = collections.deque(maxlen=5000)  # (order, login, amount) of recent deposits
        credits: collections.deque = collections.deque(maxlen=5000)  # (order, login) of live credits
        i = 0
        while store.finance_id < rows:
            commands: list = []
            size = min(batch, rows - store.finance_id)
            while len(commands) < size:
                i += 1
                login, now = logins[(i + i // 100) % accounts], NOW + i  # (not tied to the kind)
                kind = i % 100
                if kind in (10, 60) and deposits:
                    order, login, amount = deposits.popleft()
                    commands.append(Finance(FinanceRequest("BalanceIn", login, amount + 1, "bench fix", order=order),
                                            now=now))
                elif kind == 20 and credits:
                    order, _ = credits.popleft()
                    commands.append(Finance(FinanceRequest("DeleteCredit", order=order), now=now))
                elif kind % 20 == 5:
                    commands.append(Finance(FinanceRequest("BalanceIn", login, 2_000_000 + i, "keyed"), now=now,
                                            manager=1, ext_id=f"bench-{i}"))
                elif kind % 25 == 7:
                    game = f"g{i}"
                    commands.append(WalletCall("debit", login, now, 10**9, sid=f"sid-{login}", currency="USD",
                                               txid=f"D{i}", ref_id=f"R{i}", game_id=game, amount=1_000, payload="d"))
                    commands.append(WalletCall("credit", login, now, 10**9, sid=f"sid-{login}", currency="USD",
                                               txid=f"C{i}", ref_id=f"R{i}", game_id=game, amount=1_500,
                                               payload="c"))
                elif kind % 2:
                    commands.append(Finance(FinanceRequest("CreditIn", login, 1_000_000 + i, "bench"), now=now))
                else:
                    commands.append(Finance(FinanceRequest("BalanceIn", login, 1_000_000 + i, "bench"), now=now))
            for command, outcome in zip(commands, store.apply_batch(commands)):
                if outcome.error is not None or not isinstance(command, Finance):
                    continue
                receipt, request = outcome.data, command.request
                if request.op == "BalanceIn":
                    deposits.append((receipt.order, receipt.login, receipt.amount))
                elif request.op == "CreditIn":
                    credits.append((receipt.order, receipt.login))
        written = store.finance_id
    finally:
        store.close()
    return time.perf_counter() - start, written


_VERIFY_CHILD = """
import json, resource, sys, time
from syncledger.ledger import head_path, verify_path
start = time.perf_counter()
report = verify_path(sys.argv[1])
verify_s = time.perf_counter() - start
start = time.perf_counter()
head = head_path(sys.argv[1])
head_s = time.perf_counter() - start
print(json.dumps({"report": str(report), "ok": report.ok, "rows": report.finance_rows, "verify_s": verify_s,
                  "head": head, "head_s": head_s, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def bench_verify(args: argparse.Namespace) -> int:
    work = tempfile.mkdtemp(prefix="ledger-bench-", dir=args.dir)
    path = args.keep or os.path.join(work, "verify.db")
    try:
        if args.keep and os.path.exists(path):
            print(f"using the existing ledger {path}")
        else:
            built, written = build_ledger(path, args.verify_rows, args.accounts)
            print(f"built {written:,} finance rows (+ their events) in {built:.1f} s "
                  f"({written / built:,.0f} rows/s, synchronous=OFF); file "
                  f"{os.path.getsize(path) / 2**20:,.0f} MiB", flush=True)
        child = subprocess.run([sys.executable, "-P", "-c", _VERIFY_CHILD, path], capture_output=True, text=True,
                               check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result = json.loads(child.stdout)
        print(result["report"])
        print(f"verify: {result['rows']:,} rows in {result['verify_s']:.1f} s = "
              f"{result['rows'] / result['verify_s']:,.0f} rows/s; peak RSS {result['maxrss_kib'] / 1024:,.0f} MiB "
              f"(SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
        print(f"head: {result['head']} in {result['head_s'] * 1000:.2f} ms")
        return 0 if result["ok"] else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="finance commands (rows) per measurement")
    parser.add_argument("--accounts", type=int, default=100, help="accounts the commands are spread over")
    parser.add_argument("--sizes", default="1,64,512", help="comma-separated batch sizes")
    parser.add_argument("--dir", default=None, help="directory for the temporary databases (default: system temp)")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="instead: the same on the PostgreSQL database at URL (a schema of its own per run)")
    parser.add_argument("--verify-rows", type=int, default=None, metavar="N",
                        help="instead: build an N-row ledger and time verify on it (use --accounts 1000 or so)")
    parser.add_argument("--keep", default=None, metavar="PATH",
                        help="with --verify-rows: build the ledger at PATH and keep it (reused if it exists)")
    args = parser.parse_args(argv)
    if args.verify_rows is not None:
        return bench_verify(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.postgres is not None:
        return bench_postgres(args, sizes)
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
