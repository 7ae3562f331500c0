#!/usr/bin/env python
"""CreditIn and CreditInSync throughput and p99 on SQLite (one node), PostgreSQL (one node) and PostgreSQL
(two ``serve --cluster`` nodes), in one run, each ledger durable (SQLite synchronous=FULL, PostgreSQL
synchronous_commit=on, fsync on).

Each node is a real ``syncledger serve`` process (writer in a process of its own, as shipped); the load is
closed loop from this process: K connections (spread over the nodes) with D requests in flight each, for S
seconds per scenario. Without ``--postgres URL`` a throwaway PostgreSQL cluster is started (tests/pgcluster.py,
Unix socket, fsync on). The client shares the machine with the servers and PostgreSQL: on a small machine it
is part of what is measured (the table says how many cores there are).

    python bench/cluster_bench.py                       # ~1 minute
    python bench/cluster_bench.py --seconds 2 --quick   # smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import trio

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]
from common import CLI, run_cli, start_process, stop_process  # noqa: E402

from syncledger.server.client import connect  # noqa: E402

SECRET = "cluster-bench-secret-of-at-least-32-bytes"
MANAGER = 1


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


async def _load(ports: list[int], token: str, logins: list[int], command: str, k: int, depth: int,
                seconds: float) -> tuple[int, list[float], int]:
    """Closed loop: K connections round-robin over the nodes, ``depth`` requests in flight on each."""
    latencies: list[float] = []
    errors = [0]
    deadline = trio.current_time() + seconds

    async def worker(client, w: int) -> None:
        i = 0
        while trio.current_time() < deadline:
            started = time.perf_counter()
            reply = await client.call(command, {"login": logins[(w + i) % len(logins)], "amount": 1,
                                                  "comment": "bench"})
            latencies.append(time.perf_counter() - started)
            errors[0] += not reply.ok
            i += 1

    async def connection(c: int) -> None:
        async with connect("127.0.0.1", ports[c % len(ports)], token) as client:
            async with trio.open_nursery() as workers:
                for w in range(depth):
                    workers.start_soon(worker, client, c * depth + w)

    started = trio.current_time()
    async with trio.open_nursery() as conns:
        for c in range(k):
            conns.start_soon(connection, c)
    return len(latencies) / (trio.current_time() - started), latencies, errors[0]


def _setup(db: str, nodes: int, workdir: str, env: dict) -> tuple[list, list[int], str]:
    run_cli("manager", "add", "--db", db, "--login", str(MANAGER), "--password", "bench-password-1",
            "--session", "ADMIN", env=env)
    token = run_cli("token", "--db", db, "--login", str(MANAGER), env=env)
    procs, ports = [], []
    for n in range(nodes):
        cmd = [*CLI, "serve", "--db", db, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
               "--admin-port", "-1", *(["--cluster"] if nodes > 1 else [])]
        proc, found = start_process(cmd, env, os.path.join(workdir, f"node-{len(os.listdir(workdir))}.log"),
                                    f"node {n}")
        procs.append(proc)
        ports.append(found["tcp"])
    return procs, ports, token


async def _accounts(port: int, token: str, n: int) -> list[int]:
    async with connect("127.0.0.1", port, token) as client:
        return [(await client.call("AddUser", {"name": f"b{i}", "currency": "EUR"})).data["login"] for i in range(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL schema's URL (default: a throwaway cluster)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--depth", type=int, default=32, help="requests in flight per connection")
    p.add_argument("--quick", action="store_true", help="fewer connections and seconds")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.connections, args.depth = min(args.seconds, 2.0), 4, 8
    env = {**os.environ, "SYNCLEDGER_SECRET": SECRET}
    pg = None
    if args.postgres is None:
        from tests.pgcluster import Cluster
        pg = Cluster()
        pg.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as workdir:
            setups = [("SQLite, one node", os.path.join(workdir, "ledger.db"), 1),
                      ("PostgreSQL, one node", args.postgres or pg.new_ledger(), 1),
                      ("PostgreSQL, two nodes", None, 2)]
            for name, db, nodes in setups:
                if db is None:
                    if args.postgres is not None:
                        raise SystemExit("two nodes need an empty schema of their own: run without --postgres")
                    db = pg.new_ledger()
                procs, ports, token = _setup(db, nodes, workdir, env)
                try:
                    logins = trio.run(_accounts, ports[0], token, 16)
                    for command in ("CreditIn", "CreditInSync"):
                        rate, lat, errors = trio.run(_load, ports, token, logins, command, args.connections,
                                                     args.depth, args.seconds)
                        rows.append((name, command, rate, percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3,
                                     errors))
                        print(f"{name:24} {command:13} {rate:9,.0f}/s  p50 {rows[-1][3]:7.1f} ms  "
                              f"p99 {rows[-1][4]:7.1f} ms  errors {errors}", flush=True)
                finally:
                    codes = [stop_process(proc) for proc in procs]
                if codes != [0] * nodes:
                    raise SystemExit(f"{name}: the nodes exited {codes}")
                print(f"{'':24} verify: {run_cli('verify', '--db', db, env=env)}", flush=True)
    finally:
        if pg is not None:
            pg.stop()
    print(f"\n{os.cpu_count()} cores; {args.connections} connections x {args.depth} in flight, "
          f"{args.seconds:g} s per scenario, client in this process")
    print("| ledger | command | requests/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|")
    for name, command, rate, p50, p99, errors in rows:
        print(f"| {name} | {command} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |" + (f" ({errors} errors)" if errors else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
