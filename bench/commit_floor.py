"""The floor under a light-load request: what one durable SQLite commit, and one round trip to another
process, cost on this machine, alone.

One process, no server, no sockets: a WAL ledger-like table with ``synchronous=FULL`` (the server's
setting), and one INSERT + COMMIT per tick of an open-loop timer at each offered rate, then back to back
(a lone request's case). It prints the CPU µs per commit: the commit's own (the thread's CPU clock around INSERT +
COMMIT, the fsync's system time included) and the whole process's (``/proc/self/stat``, user and system,
the timer's wake-ups included), and the commit's p50/p99 wall time. A request at light load pays at least this in the writer (one commit per batch,
one request per batch) on top of the front end's share, which ``server_bench.py``'s echo at the same rates
measures: the two together are the floor of the design at that rate.

The round trip is the writer process's hop alone: one byte to a child process over a socket pair and one
byte back, at the same rates, with the CPU of both processes per round trip (``/proc``) and its p50/p99.

    python bench/commit_floor.py [--rate 200,1000,5000] [--seconds 5] [--dir DIR]

``--dir`` picks the file system (default: a temporary folder under the current one, on the disk a ledger
in this folder would use).
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import tempfile
import time

from common import percentile

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> tuple[float, float]:
    """This process's user and system CPU seconds (``/proc/self/stat``, all threads)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def run(db: sqlite3.Connection, rate: float | None, seconds: float) -> dict:
    """Commits at ``rate`` a second (open loop; None: back to back) for ``seconds``: CPU and wall time each."""
    n = max(50, int((rate or 2000) * seconds))
    took: list[float] = []
    cpu = 0.0  # the commits' own CPU (the thread's clock: the timer's sleeps are left out)
    u0, s0 = cpu_seconds()
    for _ in paced(rate, n):
        t, c = time.perf_counter(), time.thread_time()
        db.execute("INSERT INTO rows (body) VALUES (?)", (b"x" * 200,))
        db.commit()
        cpu += time.thread_time() - c
        took.append(time.perf_counter() - t)
    u1, s1 = cpu_seconds()
    took.sort()
    return {"n": n, "cpu": cpu / n * 1e6, "user": (u1 - u0) / n * 1e6, "sys": (s1 - s0) / n * 1e6,
            "p50": percentile(took, 0.50) * 1e3, "p99": percentile(took, 0.99) * 1e3}


def paced(rate: float | None, n: int):
    """0..n-1, each yielded at its time of an open loop at ``rate`` a second (None: at once)."""
    start = time.perf_counter()
    for i in range(n):
        if rate is not None and (wait := start + i / rate - time.perf_counter()) > 0:
            time.sleep(wait)
        yield i


def process_cpu(pid: int) -> float:
    """A process's user + system CPU seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def hops(rate: float | None, seconds: float) -> dict:
    """Round trips of one byte to a child process over a socket pair, at ``rate`` (None: back to back)."""
    n = max(50, int((rate or 2000) * seconds))
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: echo each byte until the parent closes its end
        ours.close()
        while theirs.recv(1):
            theirs.send(b"x")
        os._exit(0)
    theirs.close()
    took: list[float] = []
    before = process_cpu(os.getpid()) + process_cpu(pid)
    for _ in paced(rate, n):
        t = time.perf_counter()
        ours.send(b"x")
        ours.recv(1)
        took.append(time.perf_counter() - t)
    cpu = process_cpu(os.getpid()) + process_cpu(pid) - before
    ours.close()
    os.waitpid(pid, 0)
    took.sort()
    return {"n": n, "cpu": cpu / n * 1e6, "p50": percentile(took, 0.50) * 1e3, "p99": percentile(took, 0.99) * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", default="200,1000,5000", help="offered commits a second, comma-separated")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds at each rate")
    p.add_argument("--dir", default=".", help="where the throwaway database goes")
    args = p.parse_args()
    rates = [float(r) for r in args.rate.split(",")] + [None]
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        db = sqlite3.connect(os.path.join(folder, "floor.db"), isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        db.commit()
        print(f"one INSERT + COMMIT, WAL, synchronous=FULL, in {os.path.realpath(folder)}")
        print(f"{'offered':>10} {'commits':>8} {'commit CPU µs':>14} {'process µs':>11} {'(user':>7} {'sys)':>6}"
              f" {'p50 ms':>7} {'p99 ms':>7}")
        for rate in rates:
            r = run(db, rate, args.seconds)
            label = f"{rate:,.0f}/s" if rate else "lone"
            print(f"{label:>10} {r['n']:>8} {r['cpu']:>14.0f} {r['user'] + r['sys']:>11.0f} {r['user']:>7.0f}"
                  f" {r['sys']:>6.0f}"
                  f" {r['p50']:>7.3f} {r['p99']:>7.3f}")
        db.close()
    print("\none byte to a child process over a socket pair and back (both processes' CPU, timer included)")
    print(f"{'offered':>10} {'trips':>8} {'CPU µs':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for rate in rates:
        r = hops(rate, args.seconds)
        label = f"{rate:,.0f}/s" if rate else "lone"
        print(f"{label:>10} {r['n']:>8} {r['cpu']:>8.0f} {r['p50']:>7.3f} {r['p99']:>7.3f}")


if __name__ == "__main__":
    main()
