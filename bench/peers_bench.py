#!/usr/bin/env python
"""syncledger beside a peer on the same PostgreSQL (issue 24, item 5): pgledger's transfers and syncledger's
``CreditIn``, by turns, on one throwaway PostgreSQL cluster, with the CPU of every process involved.

pgledger (https://github.com/pgr0ss/pgledger) is a ledger written in PostgreSQL functions; this script does
not ship it: ``--pgledger PATH`` names a checkout of it (or its ``pgledger.sql``, with the ``vendor/`` folder of
the checkout beside it), loaded as its README says: ``vendor/scoville-pgsql-ulid/ulid-to-uuid.sql``,
``vendor/scoville-pgsql-ulid/uuid-to-ulid.sql``, then ``pgledger.sql``, in one transaction::

    git clone https://github.com/pgr0ss/pgledger /tmp/pgledger
    python bench/peers_bench.py --pgledger /tmp/pgledger              # 3 rounds, about 5 minutes
    python bench/peers_bench.py --pgledger /tmp/pgledger --quick      # smoke run, about 30 s

What runs:

* one PostgreSQL cluster (``initdb`` in a temp dir, the server on a Unix socket only, as tests/pgcluster.py
  does), ``fsync=on``, ``synchronous_commit=on``, ``max_wal_size=2GB`` (as pgledger's docker-compose.yml), the
  rest PostgreSQL's defaults; database ``pgledger`` holds pgledger, database ``syncledger`` holds syncledger's
  ledger;
* pgledger: K psycopg connections (autocommit: each call is its own transaction, committed before it
  returns), each calling ``select id from pgledger_create_transfer(from, to, 1.25)`` between two accounts
  drawn at random from ``--accounts``, closed loop with K = each of ``--inflight`` (1, 8, 64); and an open
  loop at each ``--rate`` (request q due at start + q/rate, latency from that scheduled time, on 16
  connections);
* syncledger: ``syncledger serve --db postgresql://...`` (its writer in a process of its own, as shipped)
  and ``CreditIn`` over the manager TCP API (answered once its batch's COMMIT has returned), closed loop with
  the same number of requests in flight as pgledger's K (spread over at most 8 connections), and the same
  open-loop rates. A ``CreditIn`` is one balance change of one account: a row, its event and the hash chain;
  a pgledger transfer moves money between two accounts: two account rows updated, a transfer and two entries
  inserted. Neither is the other's operation: each is its ledger's basic write.

Each scenario runs for pgledger then syncledger (the order swapped every round), so the two figures of a
pair are taken a few seconds apart under the same load. CPU is read from /proc over each scenario's window:
this process (the client: psycopg threads, or the Trio load generator), the syncledger server and its writer
process, and every PostgreSQL process (postmaster, backends, WAL writer, checkpointer...: their utime +
stime, and their children's that ended); "other" is what the rest of the machine used meanwhile. What each
commits: PostgreSQL's WAL bytes and transaction ids taken per operation over the same window (pgledger: one
transaction a call; syncledger: one a batch). A CHECKPOINT precedes each scenario.

After the rounds: ``syncledger verify`` on its ledger, and pgledger's own books (transfers counted equal the
calls answered, two entries each, balances summing to zero).

Every child (PostgreSQL's postmaster, the server) is started with PR_SET_PDEATHSIG: none outlives this
process, even killed with SIGKILL (which leaves the temp dir behind); on an error, SIGTERM or ^C the cluster
and the server are stopped and the temp dir removed (kept with --keep).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import platform
import pwd
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # (bench/common, and tests/pgcluster's find_binary)
from common import (CLI, MANAGER_LOGIN, BaseTally, CLK_TCK, percentile, run_cli, say, split, tree_cpu,  # noqa: E402
                    start_process, stop_process, wait_quiet)

# The hidden first step of each child: set PR_SET_PDEATHSIG (after any change of user: a change of
# credentials clears it), then become the command. argv: signal number, command...
EXEC_CHILD = ("import ctypes, os, sys\n"
              "ctypes.CDLL(None).prctl(1, int(sys.argv[1]))  # PR_SET_PDEATHSIG\n"
              "if os.getppid() == 1:\n"
              "    os._exit(1)  # the parent is already gone\n"
              "os.setsid()  # a ^C at the terminal is the bench's to pass on\n"
              "os.execv(sys.argv[2], sys.argv[2:])\n")
PGLEDGER_FILES = ("vendor/scoville-pgsql-ulid/ulid-to-uuid.sql", "vendor/scoville-pgsql-ulid/uuid-to-ulid.sql",
                  "pgledger.sql")
TRANSFER_SQL = "select id from pgledger_create_transfer(%s, %s, %s)"
AMOUNT = Decimal("1.25")
SECRET = "peers-bench-secret-of-at-least-32-bytes!"
QUIET = 0.2  # "other" cores under which a pair counts as taken on a quiet machine
MAX_SYNC_CONNECTIONS = 8  # syncledger's in-flight requests are spread over at most this many connections


def exec_child(sig: int, cmd: list[str]) -> list[str]:
    """``cmd`` run through the PR_SET_PDEATHSIG step: it gets ``sig`` when this process dies."""
    return [sys.executable, "-I", "-c", EXEC_CHILD, str(int(sig)), *cmd]


def die_with_us(sig: int):
    """A preexec_fn that sets PR_SET_PDEATHSIG in the child, for a child of another user (this interpreter may
    not be readable by it). Popen calls it after the change of user, so the setting holds; libc is looked up
    here, before the fork."""
    import ctypes

    prctl, parent = ctypes.CDLL(None).prctl, os.getpid()

    def pre() -> None:
        prctl(1, int(sig))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)
    return pre


# ============================================================================ CPU from /proc



def snapshot(pids: dict[str, int]) -> dict[str, float]:
    """Wall clock, the machine's busy CPU seconds, this process's (the client's) and each listed tree's."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    snap = {"wall": time.perf_counter(), "machine": (sum(v[:3]) + sum(v[5:8])) / CLK_TCK,
            "client": time.process_time()}
    for name, pid in pids.items():
        try:
            snap[name] = tree_cpu(pid)
        except (OSError, ValueError, IndexError):
            snap[name] = math.nan
    try:  # kernel threads (kthreadd's children): the block layer's and the journal's share of each fsync
        snap["kthreads"] = tree_cpu(2)
    except (OSError, ValueError, IndexError):
        snap["kthreads"] = 0.0
    return snap


def cpu_figures(before: dict, after: dict, answered: int, counted: tuple[str, ...]) -> dict:
    """CPU µs per operation of each part in ``counted`` and of their sum, and the cores used by the rest of the
    machine ("other": busy CPU not of this process, the server or PostgreSQL) over the window."""
    dt = after["wall"] - before["wall"]
    d = {k: after[k] - before[k] for k in before if k != "wall"}
    ours = sum(v for k, v in d.items() if k != "machine")  # (kernel threads included: not "other")
    out = {"window_s": dt, "other_cores": max(0.0, d["machine"] - ours) / dt if dt > 0 else math.nan,
           "kthreads_cores": d["kthreads"] / dt if dt > 0 else math.nan}
    for part in ("client", "server", "postgres"):
        out[f"{part}_us"] = d[part] * 1e6 / answered if part in counted and answered else math.nan
        out[f"{part}_cores"] = d[part] / dt if part in counted and dt > 0 else math.nan
    out["total_us"] = sum(d[p] for p in counted) * 1e6 / answered if answered else math.nan
    out["total_cores"] = sum(d[p] for p in counted) / dt if dt > 0 else math.nan
    return out


# ============================================================================ the PostgreSQL cluster

from tests.pgcluster import find_binary  # noqa: E402


class Cluster:
    """A PostgreSQL server on a temporary directory, on a Unix socket only, as tests/pgcluster.py starts one, but
    with ``postgres`` run directly as this process's child (PR_SET_PDEATHSIG: SIGQUIT, an immediate shutdown,
    if this process dies). As root, the cluster belongs to ``nobody`` (initdb and postgres refuse root)."""

    SETTINGS = {"listen_addresses": "", "fsync": "on", "synchronous_commit": "on", "max_connections": "200",
                "max_wal_size": "2GB"}

    def __init__(self, parent: str) -> None:
        self.initdb, self.postgres = find_binary("initdb"), find_binary("postgres")
        if not self.initdb or not self.postgres:
            raise SystemExit("the PostgreSQL server binaries (initdb, postgres) are not installed: "
                             "apt-get install postgresql")
        self.dir = os.path.join(parent, "pg")
        os.mkdir(self.dir)
        self.data, self.log = os.path.join(self.dir, "data"), os.path.join(self.dir, "server.log")
        self.proc: subprocess.Popen | None = None
        self.owner: dict = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(parent, nobody.pw_uid, nobody.pw_gid)
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self.owner = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def start(self) -> None:
        done = subprocess.run([self.initdb, "-D", self.data, "-U", "bench", "--auth=trust", "--no-locale",
                               "-E", "UTF8", "--no-sync"], capture_output=True, text=True, cwd=self.dir,
                              **self.owner)  # (--no-sync: initdb's files; the server below runs with fsync on)
        if done.returncode != 0:
            raise SystemExit(f"initdb failed ({done.returncode}): {done.stdout}{done.stderr}")
        options = [f"-c{k}={v}" for k, v in {**self.SETTINGS, "unix_socket_directories": self.dir}.items()]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([self.postgres, "-D", self.data, *options], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, cwd=self.dir, preexec_fn=die_with_us(signal.SIGQUIT),
                                     start_new_session=True, **self.owner)  # (a ^C is ours to pass on)
        log.close()
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"PostgreSQL did not start:\n{open(self.log, errors='replace').read()[-3000:]}")
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://bench@/{database}?host={self.dir}"

    def stop(self) -> None:
        """A fast shutdown (SIGINT), an immediate one if that takes over 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


# ============================================================================ pgledger

def pgledger_files(path: str) -> list[str]:
    """The SQL files that install pgledger, from a checkout (or its pgledger.sql), in its README's order."""
    root = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
    files = [os.path.join(root, name) for name in PGLEDGER_FILES]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise SystemExit(f"--pgledger {path}: not a pgledger checkout, {', '.join(missing)} missing "
                         "(git clone https://github.com/pgr0ss/pgledger)")
    return files


def pgledger_commit(path: str) -> str:
    root = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
    done = subprocess.run(["git", "-C", root, "log", "-1", "--format=%h %cs"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown commit"


def load_pgledger(url: str, files: list[str], accounts: int) -> list[str]:
    """Install pgledger (one transaction) and make ``accounts`` accounts; -> their ids."""
    import psycopg

    with psycopg.connect(url) as db:
        for path in files:
            with open(path) as f:
                db.execute(f.read())
        db.commit()
        ids = [db.execute("select id from pgledger_create_account(%s, 'EUR')", (f"bench-{i}",)).fetchone()[0]
               for i in range(accounts)]
        db.commit()
    return ids


class PgTally(BaseTally):
    __slots__ = ("errors", "send_lag")

    def __init__(self) -> None:
        super().__init__()
        self.errors = 0
        self.send_lag: list[float] = []


def pgledger_scenario(url: str, ids: list[str], connections: int, seconds: float, rate: float | None,
                      pids: dict[str, int], seed: int, marks) -> dict:
    """K threads, a psycopg connection each (autocommit), calling pgledger_create_transfer: closed loop for
    ``seconds``, or open loop at ``rate`` per second for ``seconds`` (latency from the scheduled time)."""
    import psycopg

    conns = [psycopg.connect(url, autocommit=True) for _ in range(connections)]
    tallies = [PgTally() for _ in conns]
    go, stop = threading.Event(), threading.Event()
    n_open = int(rate * seconds) if rate else 0
    order = itertools.count()  # (next() on it is atomic under the interpreter lock)
    start = [0.0]

    def worker(c: int) -> None:
        db, t = conns[c], tallies[c]
        rng = random.Random(seed * 1000 + c)
        cur = db.cursor()
        pairs = [rng.sample(ids, 2) for _ in range(4096)]
        perf, lat = time.perf_counter, t.lat
        go.wait()
        i = 0
        while True:
            if rate:
                q = next(order)
                if q >= n_open:
                    break
                due = start[0] + q / rate
                wait = due - perf()
                if wait > 0:
                    time.sleep(wait)
                t0 = due
                t.send_lag.append(perf() - due)
            else:
                if stop.is_set():
                    break
                t0 = perf()
            a, b = pairs[i & 4095]
            i += 1
            try:
                cur.execute(TRANSFER_SQL, (a, b, AMOUNT))
                cur.fetchone()
            except psycopg.Error as e:
                t.errors += 1
                if t.error_sample is None:
                    t.error_sample = f"{type(e).__name__}: {e}"
                continue
            now = perf()
            lat.append(now - t0)
            t.first_send = min(t.first_send, t0)
            t.last_reply = now

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(connections)]
    for th in threads:
        th.start()
    time.sleep(0.05)
    gc.collect()
    gc.disable()
    try:
        mark0 = marks()
        before = snapshot(pids)
        start[0] = time.perf_counter() + 0.01
        go.set()
        if not rate:
            time.sleep(seconds)
            stop.set()
        for th in threads:
            th.join(seconds + 120)
        after = snapshot(pids)
        mark1 = marks()
    finally:
        gc.enable()
        stop.set()
        for db in conns:
            db.close()
    return {**summary(tallies, before, after, ("client", "postgres")), **wal_figures(mark0, mark1, tallies)}


def pgledger_books(url: str) -> tuple[int, str]:
    """pgledger's own check of its books; -> (transfers, verdict)."""
    import psycopg

    with psycopg.connect(url) as db:
        transfers = db.execute("select count(*) from pgledger_transfers").fetchone()[0]
        entries = db.execute("select count(*) from pgledger_entries").fetchone()[0]
        total = db.execute("select coalesce(sum(balance), 0) from pgledger_accounts").fetchone()[0]
        bad_rows = db.execute("select count(*) from pgledger_accounts a where balance <> "
                              "coalesce((select sum(amount) from pgledger_entries e where e.account_id = a.id), 0)"
                              ).fetchone()[0]
    ok = entries == 2 * transfers and total == 0 and bad_rows == 0
    return transfers, (f"{transfers:,} transfers, {entries:,} entries, balances sum to {total}, "
                       f"{bad_rows} accounts whose balance differs from their entries: " + ("ok" if ok else "BAD"))


# ============================================================================ syncledger

def credit_line(ext: str, login: int, token: bytes) -> bytes:
    return (b'{"command":"CreditIn","extID":"%s","data":{"login":%d,"amount":1.25,"comment":"bench credit"},'
            b'"__token":"%s"}\r\n' % (ext.encode(), login, token))


async def timed_closed_conn(stream, tag: str, logins: list[int], token: bytes, depth: int, go, stop_at: list,
                            t) -> None:
    """Closed loop on one connection for a time: ``depth`` requests outstanding, refilled after each received
    chunk with one send_all, until ``stop_at``; then the outstanding ones are awaited."""
    import orjson
    from server_bench import _absorb

    perf, loads = time.perf_counter, orjson.loads
    sent: dict[str, float] = {}
    buf, i, done = b"", 0, 0
    await go.wait()
    while True:
        now = perf()
        if now < stop_at[0]:
            room = depth - (i - done)
            if room > 0:
                lines = []
                for _ in range(room):
                    ext = f"{tag}.{i}"
                    sent[ext] = now
                    lines.append(credit_line(ext, logins[i % len(logins)], token))
                    i += 1
                if t.first_send == math.inf:
                    t.first_send = now
                await stream.send_all(b"".join(lines))
        elif done >= i:
            return
        data = await stream.receive_some(1 << 16)
        if not data:
            raise ConnectionError(f"server closed the connection after {done} of {i} replies")
        buf, answered = _absorb(buf, data, sent, t, perf(), loads)
        done += answered


async def syncledger_scenario(cfg: dict) -> dict:
    """``CreditIn`` over ``k`` new connections: closed loop with ``depth`` in flight each for ``seconds``, or
    open loop at ``rate`` (server_bench's pacer: latency from each request's scheduled send time)."""
    import trio
    from server_bench import Tally, pace, receive_replies

    k, depth, seconds, rate, token = cfg["k"], cfg["depth"], cfg["seconds"], cfg["rate"], cfg["token"].encode()
    logins, tag = cfg["logins"], cfg["tag"]
    tallies = [Tally() for _ in range(k)]
    streams = [await trio.open_tcp_stream(cfg["host"], cfg["port"]) for _ in range(k)]
    go = trio.Event()
    stop_at = [math.inf]
    try:
        async with trio.open_nursery() as nursery:
            if rate:
                n = int(rate * seconds)
                shares = split(n, k)
                reqs = [[(f"{tag}.{c}.{q}", credit_line(f"{tag}.{c}.{q}", logins[(c + q * k) % len(logins)], token))
                         for q in range(shares[c])] for c in range(k)]
                sents: list[dict] = [{} for _ in range(k)]
                for c in range(k):
                    nursery.start_soon(receive_replies, streams[c], shares[c], sents[c], tallies[c])
                begin = time.perf_counter() + 0.3  # (after the collection below and the go)
                nursery.start_soon(pace, streams, reqs, sents, rate, begin, tallies, go)
            else:
                for c in range(k):
                    nursery.start_soon(timed_closed_conn, streams[c], f"{tag}.{c}", logins[c % len(logins):]
                                       + logins[:c % len(logins)], token, depth, go, stop_at, tallies[c])
            await trio.sleep(0.05)
            gc.collect()
            gc.disable()
            mark0 = cfg["marks"]()
            before = snapshot(cfg["pids"])
            stop_at[0] = time.perf_counter() + seconds
            go.set()
        after = snapshot(cfg["pids"])
        mark1 = cfg["marks"]()
    finally:
        gc.enable()
        for s in streams:
            await s.aclose()
    r = {**summary(tallies, before, after, ("client", "server", "postgres")), **wal_figures(mark0, mark1, tallies)}
    r["errors"] += sum(t.unmatched for t in tallies)
    return r


async def make_accounts(host: str, port: int, token: str, n: int) -> list[int]:
    from syncledger.server.client import connect

    async with connect(host, port, token) as client:
        logins = []
        for i in range(n):
            reply = await client.call("AddUser", {"name": f"bench-{i}", "currency": "EUR"})
            if not reply.ok:
                raise SystemExit(f"AddUser failed: {reply}")
            logins.append(reply.data["login"])
        return logins


# ============================================================================ figures

def wal_marker(url: str):
    """A function that reads PostgreSQL's WAL insert position (bytes) and its next transaction id, on a
    connection of its own (a read: it takes no transaction id itself)."""
    import psycopg

    db = psycopg.connect(url, autocommit=True)

    def marks() -> tuple[int, int]:
        lsn, xid = db.execute("select pg_current_wal_insert_lsn() - '0/0'::pg_lsn, "
                              "pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
        return int(lsn), int(xid)
    marks.close = db.close
    return marks


def wal_figures(mark0: tuple[int, int], mark1: tuple[int, int], tallies: list) -> dict:
    """WAL bytes and transaction ids (one per write transaction; the whole cluster's, the other ledger idle)
    per operation answered over the window."""
    n = sum(len(t.lat) for t in tallies)
    return {"wal_bytes_op": (mark1[0] - mark0[0]) / n if n else math.nan,
            "xacts_op": (mark1[1] - mark0[1]) / n if n else math.nan}


def summary(tallies: list, before: dict, after: dict, counted: tuple[str, ...]) -> dict:
    lat = sorted(x for t in tallies for x in t.lat)
    answered = len(lat)
    elapsed = (max(t.last_reply for t in tallies) - min(t.first_send for t in tallies)) if answered else math.nan
    lag = sorted(x for t in tallies for x in getattr(t, "send_lag", []))
    return {"answered": answered, "errors": sum(t.errors for t in tallies),
            "error_sample": next((t.error_sample for t in tallies if t.error_sample), None),
            "rps": answered / elapsed if answered and elapsed > 0 else 0.0,
            "p50_ms": percentile(lat, 0.50) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
            "lag_p99_ms": percentile(lag, 0.99) * 1e3 if lag else None,
            **cpu_figures(before, after, answered, counted)}


def f0(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def f2(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.2f}"


def spread(values: list[float], fmt=f2) -> str:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(values[0])} / {fmt(statistics.median(values))} / {fmt(values[-1])}"


# ============================================================================ orchestration

def scenarios(args: argparse.Namespace) -> list[dict]:
    """The scenarios of a round, each run for pgledger and for syncledger."""
    out = []
    for inflight in args.inflight:
        k = min(inflight, MAX_SYNC_CONNECTIONS)
        out.append({"name": f"closed loop, {inflight} in flight", "rate": None,
                    "pg_k": inflight, "sl_k": k, "sl_depth": max(1, inflight // k)})
    for rate in args.rate:
        out.append({"name": f"open loop, {rate:,.0f}/s offered", "rate": rate,
                    "pg_k": args.open_connections, "sl_k": MAX_SYNC_CONNECTIONS, "sl_depth": None})
    return out


def checkpoint(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CHECKPOINT")
    time.sleep(0.3)


def settings(url: str) -> dict[str, str]:
    import psycopg

    names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
             "commit_delay", "shared_buffers", "max_wal_size")
    with psycopg.connect(url, autocommit=True) as db:
        return {n: db.execute(f"SHOW {n}").fetchone()[0] for n in names}


def print_row(system: str, spec: dict, r: dict, inflight: str) -> None:
    offered = f"{spec['rate']:,.0f}" if spec["rate"] else "max"
    print(f"  {system:<10} {inflight:>9} {offered:>8} {f0(r['rps']):>10} {f2(r['p50_ms']):>8} {f2(r['p99_ms']):>8}"
          f" {f2(r['lag_p99_ms']):>7} {f0(r['client_us']):>7} {f0(r['server_us']):>7} {f0(r['postgres_us']):>7}"
          f" {f0(r['total_us']):>7} {f2(r['total_cores']):>6} {f2(r['kthreads_cores']):>6} {f2(r['other_cores']):>6}"
          f" {f0(r['wal_bytes_op']):>6} {f2(r['xacts_op']):>6} {r['errors']:>6}", flush=True)


HEADER = (f"  {'system':<10} {'in flight':>9} {'offered':>8} {'achieved/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'lag p99':>7} {'client':>7} {'server':>7} {'pg':>7} {'total':>7} {'cores':>6} {'kthr':>6} {'other':>6}"
          f" {'WAL B':>6} {'xact':>6} {'errors':>6}")


def orchestrate(args: argparse.Namespace) -> int:
    import trio

    files = pgledger_files(args.pgledger)
    tmp = tempfile.mkdtemp(prefix="peers-bench-")
    print(f"[bench] temp dir {tmp}", flush=True)
    cluster = Cluster(tmp)
    server = None
    env = {**os.environ, "SYNCLEDGER_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    results: list[tuple[int, dict, str, dict]] = []  # (round, scenario, system, figures)
    failed = False
    try:
        cluster.start()
        import psycopg

        with psycopg.connect(cluster.url("postgres"), autocommit=True) as db:
            db.execute("CREATE DATABASE pgledger")
            db.execute("CREATE DATABASE syncledger")
        pg_url, sl_url = cluster.url("pgledger"), cluster.url("syncledger")
        conf = settings(pg_url)
        ids = load_pgledger(pg_url, files, args.accounts)
        run_cli("manager", "add", "--db", sl_url, "--login", str(MANAGER_LOGIN), "--password", "bench-password-1",
                "--session", "ADMIN", env=env)
        token = run_cli("token", "--db", sl_url, "--login", str(MANAGER_LOGIN), env=env)
        server, ports = start_process(exec_child(signal.SIGKILL, [*CLI, "serve", "--db", sl_url, "--host", args.host,
                                                                  "--tcp-port", "0", "--ws-port", "0",
                                                                  "--wallet-port", "0", "--admin-port", "-1"]),
                                      env, os.path.join(tmp, "server.log"), "syncledger server")
        port = ports["tcp"]
        logins = trio.run(make_accounts, args.host, port, token, args.accounts)
        pids = {"server": server.pid, "postgres": cluster.proc.pid}
        print(f"[bench] PostgreSQL {conf['server_version']} pid {cluster.proc.pid}, pgledger "
              f"{pgledger_commit(args.pgledger)} loaded, {args.accounts} accounts each; syncledger server pid "
              f"{server.pid} on {args.host}:{port}", flush=True)

        answered = {"pgledger": 0, "syncledger": 0}  # every call answered, warm-up included

        marks = wal_marker(cluster.url("postgres"))

        def run_pg(spec: dict, seconds: float, seed: int) -> dict:
            r = pgledger_scenario(pg_url, ids, spec["pg_k"], seconds, spec["rate"], pids, seed, marks)
            answered["pgledger"] += r["answered"]
            return r

        tags = itertools.count()

        def run_sl(spec: dict, seconds: float) -> dict:
            cfg = {"host": args.host, "port": port, "token": token, "logins": logins, "pids": pids, "marks": marks,
                   "k": spec["sl_k"], "depth": spec["sl_depth"] or 1, "rate": spec["rate"], "seconds": seconds,
                   "tag": f"t{next(tags)}"}
            r = trio.run(syncledger_scenario, cfg)
            answered["syncledger"] += r["answered"]
            return r

        # warm-up: both systems, closed loop, the first in-flight figure (caches, prepared statements)
        warm = scenarios(args)[0]
        say(f"warm-up {args.warmup:g} s each")
        run_pg(warm, args.warmup, 0)
        run_sl(warm, args.warmup)
        for rnd in range(args.rounds):
            print(f"[bench] round {rnd + 1} of {args.rounds}", flush=True)
            for spec in scenarios(args):
                order = ("pgledger", "syncledger") if rnd % 2 == 0 else ("syncledger", "pgledger")
                for system in order:
                    checkpoint(pg_url)
                    r = run_pg(spec, args.seconds, rnd + 1) if system == "pgledger" else run_sl(spec, args.seconds)
                    results.append((rnd, spec, system, r))
                    say(f"round {rnd + 1} {spec['name']}, {system}: {f0(r['rps'])}/s, p50 {f2(r['p50_ms'])} ms, p99 "
                        f"{f2(r['p99_ms'])} ms, {f0(r['total_us'])} µs CPU/op, other {f2(r['other_cores'])} cores, "
                        f"errors {r['errors']}" + (f" ({r['error_sample']})" if r["error_sample"] else ""))
        marks.close()
        stop_process(server)
        server_exit = server.returncode
        server = None
        verify = subprocess.run([*CLI, "verify", "--db", sl_url], capture_output=True, text=True, env=env)
        verify_out, verify_ok = (verify.stdout + verify.stderr).strip(), verify.returncode == 0
        transfers, books = pgledger_books(pg_url)
        rows = re.search(r"(\d+) finance rows", verify_out)
        counts_ok = transfers == answered["pgledger"] and rows is not None and int(rows[1]) == answered["syncledger"]
        books += (f"; calls answered: pgledger {answered['pgledger']:,}, syncledger {answered['syncledger']:,} "
                  f"(= its finance rows: {'yes' if counts_ok else 'NO'})")
        print_report(args, conf, results, server_exit, verify_out, books)
        failed = (server_exit != 0 or not verify_ok or "BAD" in books or not counts_ok
                  or any(r["errors"] or not r["answered"] for _, _, _, r in results))
    except BaseException:
        failed = True
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second ^C must not cut the clean-up short
        if server is not None:
            stop_process(server, timeout=20)
        cluster.stop()
        if args.keep or failed and args.keep_on_failure:
            print(f"[bench] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def print_report(args, conf: dict, results: list, server_exit, verify_out: str, books: str) -> None:
    width = 142
    print()
    print("=" * width)
    print(f"syncledger and pgledger on the same PostgreSQL  |  {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print("PostgreSQL " + ", ".join(f"{k}={v}" for k, v in conf.items()))
    print(f"pgledger {pgledger_commit(args.pgledger)}: select id from pgledger_create_transfer(a, b, 1.25), "
          f"autocommit (one transaction a call), {args.accounts} accounts, pairs at random")
    print(f"syncledger: CreditIn over the manager TCP API (answered after its batch's COMMIT), writer process, "
          f"{args.accounts} accounts round-robin")
    print(f"{args.rounds} round(s), {args.seconds:g} s a scenario, pgledger and syncledger by turns; "
          "latency: closed loop from each request's send, open loop from its scheduled time")
    print("CPU µs per operation from /proc: client = this process (psycopg threads / Trio load generator), "
          "server = syncledger serve + its writer,")
    print("pg = every PostgreSQL process; total = their sum; cores = total / window; kthr = cores of the kernel's "
          "threads (fsync's block and journal work, anyone's);")
    print("other = cores used by the rest of the machine meanwhile (other processes, interrupts, steal); lag p99: "
          "open loop, how late requests left (the generator, or no free connection): part of the latency;")
    print("WAL B = WAL bytes written per operation, xact = transaction ids taken per operation (a write transaction "
          "takes one, each ending in a COMMIT that waits for the WAL flush)")
    print("-" * width)
    print(HEADER)
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}")
        for r_rnd, spec, system, r in results:
            if r_rnd != rnd:
                continue
            inflight = str(spec["pg_k"]) if system == "pgledger" else (
                f"{spec['sl_k']}x{spec['sl_depth']}" if spec["sl_depth"] else f"{spec['sl_k']} conn")
            if spec["rate"] and system == "pgledger":
                inflight = f"{spec['pg_k']} conn"
            print_row(system, spec, r, inflight)
    print("-" * width)
    print("syncledger / pgledger, min / median / max over the rounds (each ratio within one round):")
    print(f"  {'scenario':<32} {'throughput':>24} {'CPU µs per op':>24} {'p99':>24} {'other cores':>14}")
    for spec in scenarios(args):
        by = {(rnd, system): r for rnd, s, system, r in results if s["name"] == spec["name"]}
        pairs = [(by[(n, "syncledger")], by[(n, "pgledger")]) for n in range(args.rounds)
                 if (n, "syncledger") in by and (n, "pgledger") in by]
        rate = [s["rps"] / p["rps"] if p["rps"] else math.nan for s, p in pairs]
        cpu = [s["total_us"] / p["total_us"] if p["total_us"] else math.nan for s, p in pairs]
        p99 = [s["p99_ms"] / p["p99_ms"] if p["p99_ms"] else math.nan for s, p in pairs]
        other = [x["other_cores"] for pair in pairs for x in pair]
        print(f"  {spec['name']:<32} {spread(rate):>24} {spread(cpu):>24} {spread(p99):>24} "
              f"{spread(other, f2):>14}")
        quiet = [(s, p) for s, p in pairs if max(s["other_cores"], p["other_cores"]) <= QUIET]
        if quiet and len(quiet) < len(pairs):
            print(f"    {len(quiet)} of {len(pairs)} pairs with other <= {QUIET:g} cores on both sides: "
                  f"throughput {spread([s['rps'] / p['rps'] for s, p in quiet])}, "
                  f"CPU {spread([s['total_us'] / p['total_us'] for s, p in quiet])}, "
                  f"p99 {spread([s['p99_ms'] / p['p99_ms'] for s, p in quiet])}")
    busy = [r["other_cores"] for _, _, _, r in results]
    if busy and max(busy) > 0.15:
        print(f"WARNING: other processes used up to {max(busy):.2f} cores during the run: the figures are distorted")
    print(f"syncledger server exit code after SIGTERM: {server_exit}")
    print(f"syncledger verify: {verify_out}")
    print(f"pgledger books: {books}")
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print("=" * width)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pgledger", required=True, metavar="PATH",
                   help="a pgledger checkout (git clone https://github.com/pgr0ss/pgledger), or its pgledger.sql")
    p.add_argument("--rounds", type=int, default=None, help="rounds of every scenario (default 3; 1 with --quick)")
    p.add_argument("--seconds", type=float, default=None, help="seconds a scenario (default 8; 1.5 with --quick)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds for each system (default 3)")
    p.add_argument("--inflight", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64],
                   help="closed loop: requests in flight, comma-separated (default 1,8,64): pgledger on that many "
                        "connections, syncledger on at most 8 connections with the rest pipelined")
    p.add_argument("--rate", type=lambda s: [float(x) for x in s.split(",")], default=[200.0, 1000.0],
                   help="open loop: offered operations a second, comma-separated (default 200,1000)")
    p.add_argument("--open-connections", type=int, default=16, help="pgledger's connections in the open loop")
    p.add_argument("--accounts", type=int, default=100, help="accounts of each ledger (default 100)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to leave the CPUs idle (shared machines)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (cluster, logs)")
    p.add_argument("--keep-on-failure", action="store_true", help="keep the temp dir if the run fails")
    args = p.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 8.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 3.0

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    try:
        return orchestrate(args)
    except KeyboardInterrupt as e:
        print(f"[bench] interrupted ({str(e) or 'SIGINT'}): the cluster and the server are stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
