#!/usr/bin/env python
"""Hostile-traffic benchmark of syncledger (issue 12, "Tests and figures").

Does hostile traffic on loopback hurt a well-behaved client? Four kinds of processes, all on 127.0.0.1:

* the real server, ``python -m syncledger.server.cli serve`` on a fresh temporary database (durable: WAL and
  ``synchronous=FULL``, as shipped), every port 0, ``--idle-timeout 5`` and an explicit
  ``--max-connections`` (4,000 per listener) so that every attack is bounded; ``SYNCLEDGER_SECRET`` and
  ``SYNCLEDGER_WALLET_TOKEN`` set (``--admin-port 0`` too, when serve has it). Stopped with SIGTERM at the end (exit code must be 0), then
  ``python -m syncledger.server.cli verify`` must accept the ledger;
* the well-behaved client (this script with ``--client``), one process for the whole run: two manager TCP
  connections opened (ADMIN token) before any attack and kept, ``CreditInSync`` open loop at a steady
  500/s spread over 5 accounts, each request with a fresh extID. Latency is counted from each request's
  SCHEDULED send time (a stall is never hidden); a reply that is not 200, a request that got no answer
  within 5 s, or one that could not be sent (connection lost) is a failure. A lost connection is reopened.
  Beside it, once a second, two probes open NEW connections: a manager ``Ping`` and a wallet
  ``/v1/balance`` (valid token and sid); their failures are shown but are not part of the verdict (a
  listener at its cap refuses new connections by design);
* one attacker process per attack (this script with ``--attack``), run under ``nice 10`` (so that the
  attacker's own CPU is bounded and the server and the measuring client get the CPUs first: on a small
  machine an un-niced attacker would measure the scheduler, not the server) with its open-file limit
  raised to its hard limit. Each attack stops by itself after its time, or when the orchestrator sends
  SIGTERM, and prints what it did and saw;
* this orchestrator: starts everything, seeds the ledger (a "big" account with ``--records`` trade records,
  a DEALER manager for the attackers, a game session for the wallet probe), then runs the phases one after
  the other. It samples the server every 0.2 s: peak RSS (``VmHWM``, reset per phase through
  ``/proc/PID/clear_refs``; sampled ``VmRSS`` if that is refused), open descriptors (``/proc/PID/fd``),
  CPU, and the growth of its log.

Phases: "no attack" first, then each attack, then "no attack" again (recovery). In each attack phase the
attacker starts, gets a ramp of 1 s, then the client runs for ``--seconds``; the attacker runs on until
the client's stragglers are answered (5 s at most), is stopped, and the server is given up to 10 s to
close what the attacker left before the next phase. The attacks:

  1  login flood: 40 connections each sending ``Login`` with a wrong password to the ADMIN manager, one
     outstanding per connection (the server throttles by address and hashes two at a time);
  1b the same from 64 source addresses (127.0.0.2-65: loopback stands in for a botnet or an IPv6 /64);
  2  connection flood: as many plain TCP connections to the manager port as the attacker's descriptors
     allow (19,000), opened at 3,000/s at most, each sending ``\\n`` every 2 s and never a token; one the
     server closes is reopened after 1 s;
  3  wallet slowloris: 6,000 connections (over the wallet's cap), a quarter each: silent; a request head
     sent a header per second; a complete head with a valid token and a body sent a byte per second; the
     same with a wrong token. Each closed one is reopened after 1 s;
  4  pipelined ``GetTrades`` on the big account by one DEALER connection that writes and never reads
     (reconnects when dropped);
  5  200 DEALER connections ``Subscribe {"chanels":["trade:event"],"from_seq":0}`` that never read (a
     blank line every 2 s to notice a drop; resubscribe when dropped); under the default caps 16 of them
     replay (one login), the others are refused 429; ``--subscribers N``: N connections, all replaying;
  6  16 DEALER connections looping ``GetTrades`` on the big account, reading every answer;
  7  HTTP/2 prior knowledge on the wallet port: 16 workers, each connection sends the preface, a SETTINGS
     frame and 100 HEADERS+RST_STREAM pairs, and reads the answer (505 expected at once).
  8  ``GET /metrics`` flood on the admin listener: 16 kept-alive connections, no credentials, closed loop;
  9  account search: 16 DEALER connections looping ``GET /api/accounts?q=…&limit=100`` over ``--accounts``
     accounts (20,000), each q three letters and digits that match next to nothing (a scan, where search is one);
 10  history: 16 DEALER connections paging ``GET /api/history?login=BIG&limit=1000`` through the big account;
 11  verify: 2 ADMIN connections looping ``POST /api/verify`` (a second call joins the one running);
 12  cross-site login lockout: what a page the operator visits can send, 8 connections of ``POST /api/login``
     with ``Content-Type: text/plain``, ``Origin: http://evil.example`` and a wrong password for manager 1;
     once a second the attacker logs in as the DEALER (another manager) with its right password, as the page
     would, and counts the answers (``other_login_429``: every manager locked out).
  13 (with ``--tls``) full TLS handshakes on the manager port from 4 source addresses (127.0.0.2-5), 170 a
     second from each (680 in all, each address under the connect rate), 32 at once per address: connect,
     handshake, close.

``--tls [ecdsa|rsa]`` serves TLS on every listener (a trustme certificate): the well-behaved client, its
probes and every attacker then connect over TLS.

Every child (the server too, started through ``--exec-child``) gets ``PR_SET_PDEATHSIG``: none outlives the
orchestrator, even one killed with SIGKILL; on an error or a signal the orchestrator stops them all, prints
what it measured and keeps the temp dir (logs). ``--quick``: 1.5 s phases, smaller attacks, a cap of 400.

Goal (issue 12): under every attack the well-behaved p99 stays within 3x its no-attack p99 and no
well-behaved request fails. A PASS/FAIL is printed for each attack against that.

    python bench/hostile_bench.py                 # full run (about 5 minutes)
    python bench/hostile_bench.py --quick         # smoke test (about 35 s)
    python bench/hostile_bench.py --only flood,h2 --seconds 5
    python bench/hostile_bench.py --tls --only tls     # the TLS handshake flood (every connection TLS)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import select
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:  # (not ROOT: its syncledger/ folder would shadow a non-editable install of the package)
    sys.path.insert(0, HERE)

from common import (CLI, Run, add_common_args, cpu_snapshot, fmt_ms, num, percentile, print_footer,  # noqa: E402
                    print_header, run_cli, run_role, say, start_process, stop_process)

RATE = 500.0  # well-behaved CreditInSync per second
ANSWER_LIMIT = 5.0  # seconds: a request not answered within this is a failure
ACCOUNTS = 5
CURRENCY = "EUR"
DEALER_LOGIN = 2
DEALER_PASSWORD = "dealer-password-1"
TARGET_P99_RATIO = 3.0
RAMP = 1.0  # seconds an attack runs before the measurement starts
SETTLE_MAX = 10.0  # seconds the server gets to close what an attacker left

# name -> (label, sizes for a full run, sizes for --quick)
ATTACKS: dict[str, tuple[str, dict, dict]] = {
    "login": ("1 login flood", {"conns": 40}, {"conns": 10}),
    "login-many": ("1b login flood 64 addrs", {"conns": 64, "addresses": 64}, {"conns": 16, "addresses": 16}),
    "flood": ("2 connection flood", {"conns": 19_000, "rate": 3000, "every": 2.0},
              {"conns": 1500, "rate": 3000, "every": 1.0}),
    "slowloris": ("3 wallet slowloris", {"conns": 6000, "rate": 3000}, {"conns": 800, "rate": 3000}),
    "pipeline": ("4 GetTrades piped no read", {"conns": 1}, {"conns": 1}),
    "subscribers": ("5 replaying subs no read", {"conns": 200}, {"conns": 50}),
    "gettrades": ("6 GetTrades loops", {"conns": 16}, {"conns": 4}),
    "h2": ("7 HTTP/2 prior knowledge", {"conns": 16, "streams": 100}, {"conns": 8, "streams": 100}),
    "metrics": ("8 /metrics flood", {"conns": 16}, {"conns": 4}),
    "search": ("9 account search loops", {"conns": 16}, {"conns": 4}),
    "history": ("10 history loops", {"conns": 16}, {"conns": 4}),
    "verify": ("11 verify loop", {"conns": 2}, {"conns": 2}),
    "xsite": ("12 cross-site lockout", {"conns": 8}, {"conns": 4}),
    "tls": ("13 TLS handshakes 4 addrs", {"addresses": 4, "rate": 170, "workers": 32},
            {"addresses": 4, "rate": 170, "workers": 8}),
}
ADMIN_ATTACKS = ("metrics", "search", "history", "verify", "xsite")  # on the admin listener


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the orchestrator dies (no orphan load generators)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(1)


def credit_line(ext: str, login: int, token: str) -> bytes:
    return (b'{"command":"CreditInSync","extID":"%s","data":{"login":%d,"amount":1.25,"comment":"well-behaved"},'
            b'"__token":"%s"}\r\n' % (ext.encode(), login, token.encode()))


def wallet_request(path: str, body: bytes, token: str, close: bool = True) -> bytes:
    return (b"POST %s?authToken=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (path.encode(), token.encode(), len(body),
                                                 b"Connection: close\r\n" if close else b"", body))


TLS: list = [None]  # the client side's ssl.SSLContext in a --tls run (set by each role from cfg["tls_ca"])


def use_tls(ca_path: str | None) -> None:
    """Make every connection of this process TLS, trusting ``ca_path`` (None: plain TCP)."""
    import ssl

    TLS[0] = ssl.create_default_context(cafile=ca_path) if ca_path else None


async def raw_connect(host: str, port: int, local: str | None = None):
    """A Trio stream to (host, port), from ``local`` if given (no resolver, no happy eyeballs); in a --tls run
    a TLS stream, its (full) handshake done: a failed one is a ConnectionError."""
    import trio

    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        if local:
            await sock.bind((local, 0))
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    if TLS[0] is None:
        return stream
    tls = trio.SSLStream(stream, TLS[0], server_hostname=host, https_compatible=True)  # (an HTTPS server's end)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as e:
        await trio.aclose_forcefully(stream)
        raise ConnectionError(f"TLS handshake failed: {e.__cause__ or e}") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


# ============================================================================ the well-behaved client (--client)

class Phase:
    """What the well-behaved client saw in one phase."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[float, int]] = {}  # extID -> (scheduled send time, connection)
        self.lat: list[float] = []
        self.errors = self.timeouts = self.lost = self.unsent = 0
        self.error_sample: str | None = None
        self.probes = {"tcp_ok": 0, "tcp_fail": 0, "wallet_ok": 0, "wallet_fail": 0}
        self.probe_sample: str | None = None

    def fail(self, what: str) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = what[:200]


class WellBehaved:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.host, self.port, self.token = cfg["host"], cfg["tcp_port"], cfg["token"]
        self.streams: list = [None] * cfg["connections"]
        self.phase = Phase()
        self.nonce = secrets.token_hex(4)
        self.reconnects = 0

    async def keep_connection(self, c: int) -> None:
        """Connection ``c``: receive and match replies; when it is lost, fail what it had and reopen it."""
        import orjson
        import trio
        from time import perf_counter

        while True:
            try:
                stream = await raw_connect(self.host, self.port)
            except OSError:
                await trio.sleep(0.5)
                continue
            self.streams[c] = stream
            buf = b""
            try:
                while True:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        break
                    now = perf_counter()
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    ph = self.phase
                    for line in lines:
                        if not line.strip():
                            continue
                        msg = orjson.loads(line)
                        entry = ph.sent.pop(msg.get("extID"), None)
                        if entry is None:
                            continue  # a late answer of an earlier phase (counted there as a timeout)
                        lat = now - entry[0]
                        ph.lat.append(lat)
                        if msg.get("status") != 200:
                            ph.fail(f"{msg.get('status')} {msg.get('error')}: {msg.get('message')}")
                        elif lat > ANSWER_LIMIT:
                            ph.timeouts += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            self.streams[c] = None
            await stream.aclose()
            ph = self.phase
            for ext in [e for e, (_, cc) in ph.sent.items() if cc == c]:
                del ph.sent[ext]
                ph.lost += 1
                ph.fail("connection lost before the answer")
            self.reconnects += 1
            say(f"well-behaved connection {c} lost: reopening it")
            await trio.sleep(0.2)

    async def probe(self, ph: Phase, kind: str) -> None:
        """One new connection: a manager Ping, or a wallet /v1/balance; ok within ANSWER_LIMIT or a failure."""
        import trio

        ok, why = False, "no answer within 5 s"
        with trio.move_on_after(ANSWER_LIMIT):
            try:
                if kind == "tcp":
                    s = await raw_connect(self.host, self.port)
                    line = b'{"command":"Ping","extID":"probe","__token":"%s"}\r\n' % self.token.encode()
                else:
                    s = await raw_connect(self.host, self.cfg["wallet_port"])
                    body = json.dumps({"userId": str(self.cfg["probe_login"]), "sid": self.cfg["sid"],
                                       "currency": CURRENCY, "uuid": "probe"}).encode()
                    line = wallet_request("/v1/balance", body, self.cfg["wallet_token"])
                async with s:
                    await s.send_all(line)
                    got = b""
                    while (b"\n" not in got) if kind == "tcp" else True:
                        data = await s.receive_some(1 << 16)
                        if not data:
                            break
                        got += data
                ok = (b'"status":200' in got) if kind == "tcp" else (got.startswith(b"HTTP/1.1 200")
                                                                      and b'"status":"OK"' in got)
                why = f"answer {got[:12]!r}...{got.partition(b'{')[2][:80]!r}" if got else "closed without an answer"
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
                why = f"{type(e).__name__}: {e}"
        ph.probes[f"{kind}_{'ok' if ok else 'fail'}"] += 1
        if not ok and ph.probe_sample is None:
            ph.probe_sample = f"{kind}: {why}"[:160]

    async def run_phase(self, name: str, seconds: float, probes: bool) -> dict:
        """``seconds`` of CreditInSync at RATE/s (open loop), then at most ANSWER_LIMIT for the stragglers."""
        import trio
        from time import perf_counter

        ph = self.phase = Phase()
        k, logins, token = len(self.streams), self.cfg["logins"], self.token
        n = max(1, int(RATE * seconds))
        start = perf_counter() + 0.05
        tag = f"{self.nonce}.{name}"
        async with trio.open_nursery() as nursery:
            if probes:
                async def prober() -> None:
                    while True:
                        nursery.start_soon(self.probe, ph, "tcp")
                        nursery.start_soon(self.probe, ph, "wallet")
                        await trio.sleep(1.0)
                probe_scope = trio.CancelScope()

                async def run_prober() -> None:
                    with probe_scope:
                        await prober()
                nursery.start_soon(run_prober)
            q = 0
            while q < n:
                now = perf_counter()
                due = min(n, int((now - start) * RATE) + 1) if now >= start else 0
                if due > q:
                    out: list[list[bytes]] = [[] for _ in range(k)]
                    for i in range(q, due):
                        c = i % k
                        ext = f"{tag}.{i}"
                        if self.streams[c] is None:
                            ph.unsent += 1
                            ph.fail("not sent: no connection")
                            continue
                        ph.sent[ext] = (start + i / RATE, c)
                        out[c].append(credit_line(ext, logins[i % len(logins)], token))
                    for c in range(k):
                        if out[c] and self.streams[c] is not None:
                            try:
                                await self.streams[c].send_all(b"".join(out[c]))
                            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                                pass  # its receiver fails what was in flight and reopens it
                    q = due
                if q < n:
                    await trio.sleep(max(0.0, start + q / RATE - perf_counter()))
            last_due = start + (n - 1) / RATE
            while ph.sent and perf_counter() < last_due + ANSWER_LIMIT:
                await trio.sleep(0.02)
            if probes:
                probe_scope.cancel()
        for _ in list(ph.sent):
            ph.timeouts += 1
        unanswered = len(ph.sent)
        ph.sent.clear()
        lat = sorted(ph.lat)
        return {"name": name, "requests": n, "answered": len(lat), "unanswered": unanswered,
                "errors": ph.errors, "timeouts": ph.timeouts, "lost": ph.lost, "unsent": ph.unsent,
                "error_sample": ph.error_sample, "p50_ms": percentile(lat, 0.50) * 1e3,
                "p99_ms": percentile(lat, 0.99) * 1e3, "max_ms": lat[-1] * 1e3 if lat else math.nan,
                "probes": ph.probes, "probe_sample": ph.probe_sample, "reconnects": self.reconnects}


async def client_main(cfg: dict) -> dict:
    """The --client role: connect, then run each phase asked for on stdin (one JSON line each), answering
    each with a JSON line on stdout; ends at EOF."""
    import gc

    import trio

    die_with_parent()
    use_tls(cfg.get("tls_ca"))
    wb = WellBehaved(cfg)
    async with trio.open_nursery() as nursery:
        for c in range(len(wb.streams)):
            nursery.start_soon(wb.keep_connection, c)
        while any(s is None for s in wb.streams):
            await trio.sleep(0.01)
        print(json.dumps({"ready": True}), flush=True)
        gc.disable()  # a full collection would stall the client for milliseconds inside a phase
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line.strip():
                break
            cmd = json.loads(line)
            gc.collect()
            r = await wb.run_phase(cmd["name"], cmd["seconds"], cmd.get("probes", True))
            print(json.dumps(r), flush=True)
        nursery.cancel_scope.cancel()
    return {"done": True}


# ============================================================================ the attackers (--attack)

class Bucket:
    """At most ``rate`` starts per second, shared by every task of an attack."""

    def __init__(self, rate: float) -> None:
        self.rate, self.next = rate, 0.0

    async def take(self) -> None:
        import trio

        t = max(trio.current_time(), self.next)
        self.next = t + 1 / self.rate
        await trio.sleep_until(t)


class Stats(dict):
    """Counters of an attack, peaks, and means (``key_mean``)."""

    def add(self, key: str, n: float = 1) -> None:
        self[key] = self.get(key, 0) + n

    def mean(self, key: str, value: float) -> None:
        n = self.get(f"{key}_n", 0) + 1
        self[f"{key}_mean"] = self.get(f"{key}_mean", 0.0) + (value - self.get(f"{key}_mean", 0.0)) / n
        self[f"{key}_n"] = n

    def final(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.items() if not k.endswith("_n")}

    def peak(self, key: str, value: float) -> None:
        self[key] = max(self.get(key, 0), value)




async def read_line(stream, buf: bytes) -> tuple[bytes | None, bytes]:
    """One reply line (None at EOF) and what follows it."""
    while b"\n" not in buf:
        data = await stream.receive_some(1 << 16)
        if not data:
            return None, buf
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line, rest


async def attack_login(cfg: dict, st: Stats) -> None:
    """Closed-loop wrong-password Logins on ``conns`` connections (from ``addresses`` source addresses)."""
    import orjson
    import trio

    n_addr = cfg.get("addresses")
    bucket = Bucket(200)  # (re)connections per second

    async def worker(i: int) -> None:
        local = f"127.0.0.{2 + i % n_addr}" if n_addr else None
        q = 0
        while True:
            await bucket.take()
            try:
                s = await raw_connect(cfg["host"], cfg["tcp_port"], local)
            except OSError:
                st.add("connect_failed")
                await trio.sleep(0.5)
                continue
            st.add("connections")
            buf = b""
            try:
                while True:
                    q += 1
                    await s.send_all(b'{"command":"Login","extID":"L%d.%d","data":{"login":%d,"password":'
                                     b'"wrong-password-%d"}}\r\n' % (i, q, cfg["admin_login"], q))
                    st.add("sent")
                    line, buf = await read_line(s, buf)
                    if line is None:
                        break
                    st.add(f"answer_{orjson.loads(line).get('status')}")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            st.add("closed_by_server")
            await s.aclose()

    async with trio.open_nursery() as nursery:
        for i in range(cfg["conns"]):
            nursery.start_soon(worker, i)


async def attack_flood(cfg: dict, st: Stats) -> None:
    """Hold as many plain TCP connections to the manager port as possible, a ``\\n`` every few seconds."""
    import trio

    bucket = Bucket(cfg["rate"])
    held = [0]

    async def slot() -> None:
        while True:
            await bucket.take()
            try:
                s = await raw_connect(cfg["host"], cfg["tcp_port"])
            except OSError as e:
                st.add(f"connect_failed_{e.errno}")
                await trio.sleep(1)
                continue
            st.add("connections")
            held[0] += 1
            st.peak("open_peak", held[0])  # as the attacker sees it: the server's listen backlog included
            opened = trio.current_time()
            try:
                while True:
                    await s.send_all(b"\n")
                    with trio.move_on_after(cfg["every"]):
                        if not await s.receive_some(4096):
                            break
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            held[0] -= 1
            st.add("closed_by_server")
            st.mean("life_s", trio.current_time() - opened)  # from the handshake (backlog included) to the close
            await s.aclose()
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for _ in range(cfg["conns"]):
            nursery.start_soon(slot)


async def attack_slowloris(cfg: dict, st: Stats) -> None:
    """Wallet connections that never finish a request: silent, slow head, slow body (good and bad token)."""
    import trio

    bucket = Bucket(cfg["rate"])
    kinds = ("silent", "slow_head", "slow_body_token", "slow_body_badtoken")

    async def slot(kind: str) -> None:
        while True:
            await bucket.take()
            try:
                s = await raw_connect(cfg["host"], cfg["wallet_port"])
            except OSError as e:
                st.add(f"connect_failed_{e.errno}")
                await trio.sleep(1)
                continue
            st.add(f"{kind}_conns")
            opened = trio.current_time()
            answer = b""
            try:
                if kind == "slow_head":
                    await s.send_all(b"POST /v1/balance HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                elif kind.startswith("slow_body"):
                    token = cfg["wallet_token"] if kind == "slow_body_token" else "wrong-token"
                    await s.send_all(b"POST /v1/balance?authToken=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n"
                                     b'{"userId":' % token.encode())
                while True:
                    with trio.move_on_after(1.0):
                        data = await s.receive_some(4096)
                        if not data:
                            break
                        answer += data
                        continue
                    if kind == "slow_head":
                        await s.send_all(b"X-Slow: 1\r\n")
                    elif kind != "silent":
                        await s.send_all(b" ")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            life = trio.current_time() - opened
            status = answer[9:12].decode(errors="replace") if answer.startswith(b"HTTP/1.") else "none"
            st.add(f"{kind}_closed_answer_{status}")
            st.mean(f"{kind}_life_s", life)
            await s.aclose()
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for i in range(cfg["conns"]):
            nursery.start_soon(slot, kinds[i % len(kinds)])


async def attack_pipeline(cfg: dict, st: Stats) -> None:
    """One authenticated connection writes GetTrades on the big account and never reads."""
    import trio

    line = (b'{"command":"GetTrades","extID":"P","data":{"login":%d},"__token":"%s"}\r\n'
            % (cfg["big_login"], cfg["dealer_token"].encode()))
    chunk = line * 50

    async def conn() -> None:
        while True:
            try:
                s = await raw_connect(cfg["host"], cfg["tcp_port"])
            except OSError:
                st.add("connect_failed")
                await trio.sleep(0.5)
                continue
            st.add("connections")
            try:
                while True:
                    await s.send_all(chunk)
                    st.add("requests_written", 50)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                st.add("dropped_by_server")
            await s.aclose()
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        for _ in range(cfg["conns"]):
            nursery.start_soon(conn)


async def attack_subscribers(cfg: dict, st: Stats) -> None:
    """Subscribers replaying from seq 0 that never read (a blank line every 2 s notices a drop)."""
    import trio

    line = (b'{"command":"Subscribe","extID":"S","data":{"chanels":["trade:event"],"from_seq":0},"__token":"%s"}\r\n'
            % cfg["dealer_token"].encode())
    bucket = Bucket(100)

    async def conn() -> None:
        while True:
            await bucket.take()
            try:
                s = await raw_connect(cfg["host"], cfg["tcp_port"])
            except OSError:
                st.add("connect_failed")
                await trio.sleep(0.5)
                continue
            st.add("subscriptions")
            try:
                await s.send_all(line)
                while True:
                    await trio.sleep(2)
                    await s.send_all(b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                st.add("dropped_by_server")
            await s.aclose()
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for _ in range(cfg["conns"]):
            nursery.start_soon(conn)


async def attack_gettrades(cfg: dict, st: Stats) -> None:
    """Closed-loop GetTrades on the big account, reading every answer."""
    import trio

    line = (b'{"command":"GetTrades","extID":"G","data":{"login":%d},"__token":"%s"}\r\n'
            % (cfg["big_login"], cfg["dealer_token"].encode()))

    async def session(s) -> None:
        buf = b""
        while True:
            await s.send_all(line)
            reply, buf = await read_line(s, buf)
            if reply is None:
                return
            st.add("answers_200" if reply.startswith(b'{"extID":"G","status":200') else "answers_other")
            st.add("answer_MB", len(reply) / 1e6)

    async with trio.open_nursery() as nursery:
        for _ in range(cfg["conns"]):
            nursery.start_soon(reconnecting, cfg, st, cfg["tcp_port"], session)


async def reconnecting(cfg: dict, st: Stats, port: int, session) -> None:
    """``session(stream)`` on a connection to ``port``, again on a new one (0.5 s later) whenever it ends."""
    import trio

    while True:
        try:
            s = await raw_connect(cfg["host"], port)
        except OSError:
            st.add("connect_failed")
            await trio.sleep(0.5)
            continue
        try:
            await session(s)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        st.add("closed_by_server")
        await s.aclose()
        await trio.sleep(0.5)


def h2_preface(streams: int) -> bytes:
    """The HTTP/2 connection preface, an empty SETTINGS frame, then ``streams`` HEADERS+RST_STREAM pairs."""
    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frame(4, 0, 0, b"")]
    block = bytes([0x83, 0x86, 0x84, 0x41, 0x09]) + b"127.0.0.1"  # :method POST, :scheme http, :path /, :authority
    for i in range(streams):
        sid = 2 * i + 1
        out.append(frame(1, 0x4, sid, block))  # HEADERS, END_HEADERS
        out.append(frame(3, 0, sid, (8).to_bytes(4, "big")))  # RST_STREAM CANCEL
    return b"".join(out)


async def attack_h2(cfg: dict, st: Stats) -> None:
    """HTTP/2 prior-knowledge connections to the wallet port, each answered (505 expected) and closed."""
    import trio
    from time import perf_counter

    data = h2_preface(cfg["streams"])
    lat: list[float] = []

    async def worker() -> None:
        while True:
            t = perf_counter()
            try:
                s = await raw_connect(cfg["host"], cfg["wallet_port"])
            except OSError:
                st.add("connect_failed")
                await trio.sleep(0.5)
                continue
            got = b""
            try:
                await s.send_all(data)
                with trio.move_on_after(10):
                    while True:
                        chunk = await s.receive_some(1 << 16)
                        if not chunk:
                            break
                        got += chunk
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            lat.append(perf_counter() - t)
            st.add(f"answer_{got[9:12].decode(errors='replace') if got.startswith(b'HTTP/') else 'none'}")
            await s.aclose()

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(cfg["conns"]):
                nursery.start_soon(worker)
    finally:
        lat.sort()
        st["answer_p50_ms"] = round(percentile(lat, 0.5) * 1e3, 2) if lat else None
        st["answer_p99_ms"] = round(percentile(lat, 0.99) * 1e3, 2) if lat else None


async def attack_tls(cfg: dict, st: Stats) -> None:
    """Full TLS handshakes on the manager port from ``addresses`` source addresses, each at ``rate`` a second
    (under the server's per-address connect rate), ``workers`` at once per address: connect, handshake, close."""
    import trio
    from time import perf_counter

    if TLS[0] is None:
        raise SystemExit("the TLS handshake flood needs a --tls run")
    lat: list[float] = []

    async def worker(bucket: Bucket, local: str) -> None:
        while True:
            await bucket.take()
            t = perf_counter()
            try:
                s = await raw_connect(cfg["host"], cfg["tcp_port"], local)
            except OSError:
                st.add("handshakes_failed")
                continue
            lat.append(perf_counter() - t)
            st.add("handshakes")
            await trio.aclose_forcefully(s)

    try:
        async with trio.open_nursery() as nursery:
            for a in range(cfg["addresses"]):
                bucket = Bucket(cfg["rate"])
                for _ in range(cfg["workers"]):
                    nursery.start_soon(worker, bucket, f"127.0.0.{2 + a}")
    finally:
        lat.sort()
        st["handshake_p50_ms"] = round(percentile(lat, 0.5) * 1e3, 2) if lat else None
        st["handshake_p99_ms"] = round(percentile(lat, 0.99) * 1e3, 2) if lat else None


def admin_request(cfg: dict, method: str, target: str, token: str | None = None, body: bytes = b"",
                  extra: str = "") -> bytes:
    """An HTTP/1.1 request to the admin listener, kept alive, as the page (or a script) sends it."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    kind = "Content-Type: application/json\r\n" if body and "Content-Type" not in extra else ""
    return (f"{method} {target} HTTP/1.1\r\nHost: {cfg['host']}:{cfg['admin_port']}\r\n{auth}{kind}{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def http_exchange(s, request: bytes, buf: bytes) -> tuple[int | None, bytes, bytes]:
    """One request on a kept-alive connection; -> (status, body, what came after it); status None at EOF."""
    await s.send_all(request)
    while b"\r\n\r\n" not in buf:
        data = await s.receive_some(1 << 16)
        if not data:
            return None, b"", buf
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = next((int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")), 0)
    while len(buf) < length:
        data = await s.receive_some(1 << 16)
        if not data:
            return None, b"", buf
        buf += data
    return int(head[9:12]), buf[:length], buf[length:]


async def admin_loops(cfg: dict, st: Stats, next_request) -> None:
    """``conns`` closed loops on the admin listener: ``next_request(i, n, last_body)`` gives connection
    ``i``'s ``n``-th request; answers counted by status (reconnects when closed)."""
    import trio

    def loop(i: int):
        state = [0, b""]  # requests answered on connection i, and the last answer's body (across reconnects)

        async def session(s) -> None:
            buf = b""
            while True:
                status, state[1], buf = await http_exchange(s, next_request(i, *state), buf)
                if status is None:
                    return
                state[0] += 1
                st.add(f"answer_{status}")
                st.add("answer_MB", len(state[1]) / 1e6)
        return session

    async with trio.open_nursery() as nursery:
        for i in range(cfg["conns"]):
            nursery.start_soon(reconnecting, cfg, st, cfg["admin_port"], loop(i))


async def attack_metrics(cfg: dict, st: Stats) -> None:
    """Unauthenticated GET /metrics, closed loop."""
    request = admin_request(cfg, "GET", "/metrics")
    await admin_loops(cfg, st, lambda i, n, body: request)


async def attack_search(cfg: dict, st: Stats) -> None:
    """DEALER account searches for text that matches next to nothing (a page of 100 asked)."""
    letters = "bcdfghjklmnpqrstvwxz0123456789"

    def request(i: int, n: int, body: bytes) -> bytes:
        q = "".join(letters[(i * 7919 + n * 31 + k * 13) % len(letters)] for k in range(3))
        return admin_request(cfg, "GET", f"/api/accounts?q={q}&limit=100", cfg["dealer_token"])
    await admin_loops(cfg, st, request)


async def attack_history(cfg: dict, st: Stats) -> None:
    """DEALER history pages of 1,000 rows through the big account, newest first, then again."""
    import orjson

    def request(i: int, n: int, body: bytes) -> bytes:
        older = (orjson.loads(body).get("data") or {}).get("older") if body else None
        before = f"&before={older}" if older else ""
        return admin_request(cfg, "GET", f"/api/history?login={cfg['big_login']}&limit=1000{before}",
                             cfg["dealer_token"])
    await admin_loops(cfg, st, request)


async def attack_verify(cfg: dict, st: Stats) -> None:
    """ADMIN POST /api/verify, closed loop."""
    request = admin_request(cfg, "POST", "/api/verify", cfg["token"], b"{}")
    await admin_loops(cfg, st, lambda i, n, body: request)


async def attack_xsite(cfg: dict, st: Stats) -> None:
    """What a cross-site page can send: text/plain Login POSTs with a wrong password for manager 1; beside
    them, once a second, the DEALER logs in with its right password (every manager locked out: 429)."""
    import trio

    forged = admin_request(cfg, "POST", "/api/login", body=b'{"login":%d,"password":"wrong-password"}'
                           % cfg["admin_login"], extra="Content-Type: text/plain\r\nOrigin: http://evil.example\r\n")
    honest = admin_request(cfg, "POST", "/api/login", body=b'{"login":%d,"password":"%s"}'
                           % (DEALER_LOGIN, DEALER_PASSWORD.encode()))

    async def other_manager() -> None:
        while True:
            await trio.sleep(1.0)
            try:
                s = await raw_connect(cfg["host"], cfg["admin_port"])
                async with s:
                    status, _, _ = await http_exchange(s, honest, b"")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                status = None
            st.add(f"other_login_{status}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_manager)
        await admin_loops(cfg, st, lambda i, n, body: forged)


ATTACK_FUNCS = {"login": attack_login, "login-many": attack_login, "flood": attack_flood,
                "slowloris": attack_slowloris, "pipeline": attack_pipeline, "subscribers": attack_subscribers,
                "gettrades": attack_gettrades, "h2": attack_h2, "metrics": attack_metrics, "search": attack_search,
                "history": attack_history, "verify": attack_verify, "xsite": attack_xsite, "tls": attack_tls}


async def attack_main(cfg: dict) -> Stats:
    """The --attack role: run one attack until its time is up or SIGTERM; -> what it did and saw."""
    import trio

    st = Stats()
    t0, cpu0 = time.perf_counter(), time.process_time()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            async def attack() -> None:
                with trio.move_on_after(cfg["limit_s"]):
                    await ATTACK_FUNCS[cfg["attack"]](cfg, st)
                nursery.cancel_scope.cancel()
            nursery.start_soon(stop_on_signal)
            nursery.start_soon(attack)
    wall = time.perf_counter() - t0
    st["cpu_cores"] = (time.process_time() - cpu0) / wall if wall > 0 else None
    return st


def attacker_role(cfg: dict) -> int:
    import resource

    import trio

    die_with_parent()
    use_tls(cfg.get("tls_ca"))
    os.nice(cfg.get("nice", 10))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    st = trio.run(attack_main, cfg)
    print(json.dumps(st.final()), flush=True)
    return 0


# ============================================================================ orchestration

class Lines:
    """JSON lines from a child's stdout, each awaited with a deadline (never blocks for ever)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.fd, self.buf = proc.stdout.fileno(), b""

    def next(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                data = os.read(self.fd, 1 << 16)
                if not data:
                    return None
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return self.next(max(0.0, deadline - time.monotonic()))


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1])
    return out


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Samples the server every 0.2 s in a thread: peak RSS (VmHWM reset per phase when allowed), peak fds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_peak = self.fds_peak = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.rss_peak = self.fds_peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            st = proc_status(self.pid)
            self.rss_peak = max(self.rss_peak, st.get("VmHWM", 0) if self.hwm_reset else 0, st.get("VmRSS", 0))
            self.fds_peak = max(self.fds_peak, count_fds(self.pid))
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


class Bench:
    """The processes of one run, and everything needed to end them whatever happens."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[subprocess.Popen] = []
        self.server: subprocess.Popen | None = None
        self.client: subprocess.Popen | None = None
        self.run: Run | None = None

    def spawn(self, role: str, cfg: dict, log_name: str, stdin: bool = False) -> subprocess.Popen:
        log = open(os.path.join(self.run.tmp, log_name), "ab")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), role, json.dumps(cfg)],
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, env=self.run.env, cwd=ROOT)
        log.close()
        self.children.append(proc)
        return proc

    def kill_children(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.children.clear()

    def cleanup(self) -> int | None:
        """Stop everything this run started; -> the server's exit code after SIGTERM (None if killed)."""
        if self.client is not None and self.client.poll() is None:
            try:
                self.client.stdin.close()
                self.client.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill_children()
        exit_code = None
        if self.server is not None:
            exit_code = stop_process(self.server, timeout=30)
        if self.run is not None and self.run.spy is not None:
            stop_process(self.run.spy, signal.SIGINT)
        return exit_code


async def seed(host: str, port: int, token: str, records: int) -> dict:
    """Accounts of the well-behaved client, the big account with ``records`` trade records, a game session."""
    import trio
    from syncledger.server.client import open_client

    async with open_client(await raw_connect(host, port), token) as c:
        logins = []
        for i in range(ACCOUNTS + 1):
            reply = await c.call("AddUser", {"name": f"hostile-{i}", "currency": CURRENCY})
            if not reply.ok:
                raise SystemExit(f"AddUser failed: {reply}")
            logins.append(reply.data["login"])
        big = logins.pop()
        done = 0
        while done < records:  # in slices of 2,000 pipelined requests
            calls = [c.start("CreditIn", {"login": big, "amount": 1, "comment": f"seed record {done + i}"})
                     for i in range(min(2000, records - done))]
            for call in calls:
                reply = await call.reply()
                if not reply.ok:
                    raise SystemExit(f"CreditIn failed: {reply}")
            done += len(calls)
        reply = await c.call("OpenGameSession", {"login": logins[0]})
        if not reply.ok:
            raise SystemExit(f"OpenGameSession failed: {reply}")
        await trio.sleep(0)
        return {"logins": logins, "big_login": big, "sid": reply.data["sid"]}


def make_certificate(tmp: str, key_type: str) -> tuple[str, str, str]:
    """A CA and a certificate for 127.0.0.1 that it signed (trustme), written in ``tmp``: -> (CA, chain, key)."""
    import trustme

    kind = trustme.KeyType[key_type.upper()]
    ca = trustme.CA(key_type=kind)
    cert = ca.issue_cert("127.0.0.1", key_type=kind)
    paths = tuple(os.path.join(tmp, name) for name in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(paths[0])
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(paths[1], append=i > 0)
    cert.private_key_pem.write_to_path(paths[2])
    return paths


async def seed_accounts(host: str, port: int, token: str, n: int) -> None:
    """``n`` accounts for the search attack, named in vowels only (no consonant or digit in any name)."""
    from syncledger.server.client import connect

    async with connect(host, port, token) as c:
        for first in range(0, n, 2000):
            calls = [c.start("AddUser", {"name": "".join("aeiou"[(i // 5 ** k) % 5] for k in range(8)),
                                         "currency": CURRENCY}) for i in range(first, min(n, first + 2000))]
            for call in calls:
                reply = await call.reply()
                if not reply.ok:
                    raise SystemExit(f"AddUser failed: {reply}")


def cpu_figures(before: dict | None, after: dict | None) -> dict:
    """Cores used in a window by the server, the well-behaved client, the attacker and everything else."""
    if not before or not after or after["wall"] - before["wall"] < 0.5:
        return {"srv": None, "wb": None, "atk": None, "other": None}
    dt = after["wall"] - before["wall"]
    d = {k: after[k] - before[k] for k in before if k != "wall" and k in after}
    ours = sum(v for k, v in d.items() if k != "machine")
    return {"srv": d.get("server", 0) / dt, "wb": d.get("wb", 0) / dt,
            "atk": d["atk"] / dt if "atk" in d else None, "other": max(0.0, d["machine"] - ours) / dt}


def settle(pid: int, fds_target: int, limit: float) -> float:
    """Wait until the server is back to ``fds_target`` descriptors (at most ``limit`` s); -> seconds waited."""
    t0 = time.monotonic()
    time.sleep(0.5)
    while time.monotonic() - t0 < limit:
        try:
            if count_fds(pid) <= fds_target:
                break
        except OSError:
            break
        time.sleep(0.2)
    return time.monotonic() - t0


def run_phase(b: Bench, lines: Lines, sampler: Sampler, name: str, attack: str | None, label: str,
              attack_cfg: dict) -> dict:
    """One phase: the attacker (if any), then the measured window of the well-behaved client; -> its row."""
    args = b.args
    log_path = os.path.join(b.run.tmp, "server.log")
    log_before = os.path.getsize(log_path)
    sampler.start()
    atk = None
    if attack:
        cfg = {**attack_cfg, "attack": attack, "limit_s": RAMP + args.seconds + ANSWER_LIMIT + 10}
        atk = b.spawn("--attack", cfg, f"attack-{attack}.log")
        time.sleep(RAMP / 2 if args.quick else RAMP)
        if atk.poll() is not None:
            print(f"[bench] attacker {attack} exited early with {atk.returncode}", file=sys.stderr, flush=True)
    pids = {"server": b.server.pid, "wb": b.client.pid, **({"atk": atk.pid} if atk and atk.poll() is None else {})}
    before = cpu_snapshot(pids)
    b.client.stdin.write((json.dumps({"name": name, "seconds": args.seconds}) + "\n").encode())
    b.client.stdin.flush()
    r = lines.next(args.seconds + ANSWER_LIMIT + 30)
    after = cpu_snapshot(pids)
    if r is None:
        raise SystemExit(f"the well-behaved client did not report phase {name}")
    atk_stats: dict = {}
    if atk is not None:
        if atk.poll() is None:
            atk.send_signal(signal.SIGTERM)
        atk_stats = Lines(atk).next(15) or {"note": "the attacker printed nothing"}
        try:
            atk.wait(5)
        except subprocess.TimeoutExpired:
            atk.kill()
            atk.wait()
        b.children.remove(atk)
    sampler.stop()
    r.update(label=label, attack=attack, rss_mb=sampler.rss_peak / 1024, fds=sampler.fds_peak,
             log_kb=(os.path.getsize(log_path) - log_before) / 1024, attacker=atk_stats, **cpu_figures(before, after))
    return r


def verdict(r: dict, base: dict | None) -> tuple[bool, float | None]:
    """Whether a phase meets the goal: p99 within 3x the no-attack p99, and no failure."""
    ratio = r["p99_ms"] / base["p99_ms"] if base and base["p99_ms"] > 0 else None
    failures = r["errors"] + r["timeouts"]
    return (ratio is not None and ratio <= TARGET_P99_RATIO and failures == 0), ratio


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_report(rows: list[dict], b: Bench, server_exit: int | None, verify_out: str, setup: str) -> bool:
    args = b.args
    width = 150
    print_header(width, "syncledger hostile-traffic benchmark",
                 f"CPU model: {cpu_model()}; server --max-connections {args.max_connections} --idle-timeout "
                 f"{args.idle_timeout:g}{f'; TLS ({args.tls} certificate)' if args.tls else ''}; {setup}",
                 f"well-behaved: CreditInSync open loop at {RATE:,.0f}/s on 2 connections for {args.seconds:g} s per "
                 f"phase, latency from the SCHEDULED send; a failure = not 200, or no answer within "
                 f"{ANSWER_LIMIT:g} s",
                 f"attackers: one process per attack, nice {args.attacker_nice}, {RAMP:g} s ramp before measuring; "
                 f"RSS/fds: server peaks in the phase; log: server log growth",
                 "CPU srv / atk / other: cores used in the measured window by the server / the attacker / everything "
                 "else (/proc/stat: the whole machine, other tenants included)",
                 f"goal: p99 <= {TARGET_P99_RATIO:g} x the first no-attack p99 and no failure; probes (new "
                 f"connections, once a second, not in the verdict): failed tcp Ping / failed wallet balance")
    print(f"{'phase':<26} {'reqs':>5} {'err':>4} {'t/o':>4} {'p50 ms':>8} {'p99 ms':>9} {'max ms':>9} "
          f"{'p99/base':>8} {'RSS MB':>7} {'fds':>6} {'log KB':>7} {'CPU srv':>7} {'atk':>5} {'other':>5} "
          f"{'probes':>9}  verdict")
    print("-" * width)
    base = rows[0] if rows and rows[0]["attack"] is None else None
    clean = True
    for r in rows:
        ok, ratio = verdict(r, base)
        is_base = r is base
        v = "(baseline)" if is_base else ("PASS" if ok else "FAIL")
        if not is_base and not ok:
            clean = False
        p = r["probes"]
        probes = f"{p['tcp_fail']}/{p['wallet_fail']}"
        print(f"{r['label']:<26} {r['requests']:>5} {r['errors']:>4} {r['timeouts']:>4} {fmt_ms(r['p50_ms']):>8} "
              f"{fmt_ms(r['p99_ms']):>9} {fmt_ms(r['max_ms']):>9} {num(ratio):>8} {r['rss_mb']:>7.0f} "
              f"{r['fds']:>6} {r['log_kb']:>7.0f} {num(r['srv']):>7} {num(r['atk']):>5} {num(r['other']):>5} "
              f"{probes:>9}  {v}")
    print("-" * width)
    for r in rows:
        notes = []
        if r["error_sample"]:
            notes.append(f"first failure: {r['error_sample']}")
        if r["lost"] or r["unsent"]:
            notes.append(f"{r['lost']} lost with a connection, {r['unsent']} not sent")
        if r["probe_sample"]:
            notes.append(f"probe: {r['probe_sample']}")
        if r["attacker"]:
            st = r["attacker"]
            notes.append("attacker: " + ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}"
                                                   if isinstance(v, int) else f"{k} {v}"
                                                   for k, v in st.items() if k != "cpu_cores"))
        for note in notes:
            print(f"{r['label']:<26} {note}")
    busy = [r["other"] for r in rows if r["other"] is not None]
    if busy and max(busy) > 0.15:
        print(f"WARNING: other processes used up to {max(busy):.2f} cores during the run: the figures are distorted")
    print("-" * width)
    for r in rows:
        if r is base:
            continue
        ok, ratio = verdict(r, base)
        fails = r["errors"] + r["timeouts"]
        print(f"goal {r['label']:<26} {'PASS' if ok else 'FAIL':>5}   (p99 {fmt_ms(r['p99_ms'])} ms = {num(ratio)} x "
              f"base, {fails} failed of {r['requests']})")
    print(f"server exit code after SIGTERM: {server_exit} ({'ok' if server_exit == 0 else 'FAILED'})")
    print_footer(width, verify_out, b.run.cmdline)
    return clean and server_exit == 0


def orchestrate(args: argparse.Namespace) -> int:
    b = Bench(args)

    def on_signal(signum, frame):  # noqa: ANN001
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    wallet_token = secrets.token_urlsafe(24)
    rows: list[dict] = []
    server_exit = None
    verify_out = "not run"
    setup = ""
    failure = None
    try:
        b.run = run = Run(args, "syncledger-hostile-", SYNCLEDGER_WALLET_TOKEN=wallet_token)
        run_cli("manager", "add", "--db", run.db, "--login", str(DEALER_LOGIN), "--password", DEALER_PASSWORD,
                "--session", "DEALER", env=run.env)
        dealer_token = run_cli("token", "--db", run.db, "--login", str(DEALER_LOGIN), env=run.env)
        options = ["--host", args.host, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                   "--idle-timeout", f"{args.idle_timeout:g}", "--max-connections", str(args.max_connections)]
        if args.subscribers:  # every one of attack 5's connections subscribes (one login, one address)
            options += ["--max-subscribers-per-login", str(args.subscribers), "--max-subscribers-per-address",
                        str(args.subscribers)]
        if args.tls:
            ca, cert, key = make_certificate(run.tmp, args.tls)
            options += ["--tls-cert", cert, "--tls-key", key]
            use_tls(ca)  # (this process seeds the ledger)
        if "--admin-port" in run_cli("serve", "--help", env=run.env):
            options += ["--admin-port", "0"]  # (its default is a fixed port: never collide with another run)
        if args.cprofile:
            b.server, ports = run.start_server(*options)
        else:  # through --exec-child, so that the server dies with this process even on SIGKILL
            b.server, ports = start_process([sys.executable, os.path.abspath(__file__), "--exec-child", *CLI, "serve",
                                             "--db", run.db, *options], run.env,
                                            os.path.join(run.tmp, "server.log"), "server")
        print(f"[bench] server pid {b.server.pid}: {ports}", flush=True)
        import trio

        t0 = time.monotonic()
        seeded = trio.run(seed, args.host, ports["tcp"], run.token, args.records)
        setup = f"big account {seeded['big_login']}: {args.records:,} records (seeded in {time.monotonic() - t0:.1f} s)"
        if not args.only or "search" in args.only.split(","):
            t0 = time.monotonic()
            trio.run(seed_accounts, args.host, ports["tcp"], run.token, args.accounts)
            setup += f"; {args.accounts:,} more accounts for the search (seeded in {time.monotonic() - t0:.1f} s)"
        print(f"[bench] {setup}", flush=True)
        run.start_py_spy(b.server.pid)
        base_cfg = {"host": args.host, "tcp_port": ports["tcp"], "wallet_port": ports["wallet"],
                    "token": run.token, "dealer_token": dealer_token, "wallet_token": wallet_token,
                    "admin_login": 1, "big_login": seeded["big_login"], "nice": args.attacker_nice,
                    "tls_ca": ca if args.tls else None, "admin_port": ports.get("admin")}
        b.client = b.spawn("--client", {**base_cfg, "connections": 2, "logins": seeded["logins"],
                                        "probe_login": seeded["logins"][0], "sid": seeded["sid"]},
                           "client.log", stdin=True)
        lines = Lines(b.client)
        if not (lines.next(30) or {}).get("ready"):
            raise SystemExit("the well-behaved client did not connect")
        b.client.stdin.write(b'{"name": "warmup", "seconds": 1, "probes": false}\n')
        b.client.stdin.flush()
        lines.next(40)
        sampler = Sampler(b.server.pid)
        fds_idle = count_fds(b.server.pid)
        wanted = [a for a in ATTACKS if a in args.only.split(",")] if args.only else \
            [a for a in ATTACKS if a != "tls" or args.tls]  # (the TLS flood: in a --tls run only)
        unknown = set(args.only.split(",")) - set(ATTACKS) if args.only else set()
        if unknown:
            raise SystemExit(f"unknown attack(s) {sorted(unknown)}: choose among {', '.join(ATTACKS)}")
        plan = [("base", None, "0 no attack")] + [(a, a, ATTACKS[a][0]) for a in wanted] + \
               [("base-end", None, "0 no attack (end)")]
        for name, attack, label in plan:
            say(f"phase {label}")
            sizes = ATTACKS[attack][2 if args.quick else 1] if attack else {}
            if attack == "subscribers" and args.subscribers:
                sizes = {**sizes, "conns": args.subscribers}
            r = run_phase(b, lines, sampler, name, attack, label, {**base_cfg, **sizes})
            say(f"  -> p50 {fmt_ms(r['p50_ms'])} ms, p99 {fmt_ms(r['p99_ms'])} ms, errors {r['errors']}, "
                f"timeouts {r['timeouts']}, RSS {r['rss_mb']:.0f} MB, fds {r['fds']}")
            rows.append(r)
            waited = settle(b.server.pid, fds_idle + 16, SETTLE_MAX if attack else 0.5)
            if attack and waited >= SETTLE_MAX:
                say(f"  the server still has {count_fds(b.server.pid)} descriptors {SETTLE_MAX:g} s after the attack")
            if b.server.poll() is not None:
                raise SystemExit(f"the server exited ({b.server.returncode}) during phase {label}")
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # report what was measured, then fail
        failure = f"{type(e).__name__}: {e}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        server_exit = b.cleanup()  # every process this run started, whatever happened
        if b.run is not None and server_exit is not None:
            verify_out, _ = b.run.verify()
    clean = print_report(rows, b, server_exit, verify_out, setup) if rows and b.run is not None else False
    if failure:
        print(f"[bench] stopped early: {failure}" + (f"; logs kept in {b.run.tmp}" if b.run else ""), file=sys.stderr)
    elif b.run is not None:
        b.run.clean_up()
    return 0 if clean and not failure else 1


def main() -> int:
    if sys.argv[1:2] == ["--exec-child"]:  # (hidden) become the given command, dying with the orchestrator
        die_with_parent()
        os.execv(sys.argv[2], sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=None,
                   help="measured seconds per phase (default 10; 1.5 with --quick)")
    p.add_argument("--only", metavar="NAMES", help=f"only these attacks, comma-separated: {', '.join(ATTACKS)}")
    p.add_argument("--records", type=int, default=None,
                   help="trade records of the big account (default 5000; 1000 with --quick)")
    p.add_argument("--accounts", type=int, default=None,
                   help="accounts seeded for the search attack (default 20000; 2000 with --quick)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="serve --max-connections (default 4000; 400 with --quick)")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="serve --idle-timeout (default 5)")
    p.add_argument("--subscribers", type=int, default=None, metavar="N",
                   help="attack 5 with N connections, and serve with subscriber caps of N so that every one of them "
                        "replays (default: 200 connections under the default caps, 16 per login)")
    p.add_argument("--attacker-nice", type=int, default=10, help="niceness of the attacker processes (default 10)")
    p.add_argument("--tls", nargs="?", const="ecdsa", choices=("ecdsa", "rsa"),
                   help="serve TLS (a certificate of this key type, default ecdsa, made with trustme): every "
                        "connection of the run, the well-behaved client's too, is TLS")
    add_common_args(p)
    p.add_argument("--attack", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.attack:
        return attacker_role(json.loads(args.attack))
    role = run_role(args, client_main, None, False)
    if role is not None:
        return role
    if args.only and "tls" in args.only.split(",") and not args.tls:
        p.error("attack tls (the TLS handshake flood) needs --tls")
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 10.0
    if args.records is None:
        args.records = 1000 if args.quick else 5000
    if args.accounts is None:
        args.accounts = 2000 if args.quick else 20_000
    if args.max_connections is None:
        args.max_connections = 400 if args.quick else 4000
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
