#!/usr/bin/env python
"""Benchmark of the syncledger manager TCP API (issue 3, "Benchmark").

Three processes, all on loopback:

* the real server, ``python -m syncledger.server.cli serve`` on a fresh temporary database (durable: WAL and
  ``synchronous=FULL``, as shipped), stopped with SIGTERM at the end (exit code must be 0), then
  ``python -m syncledger.server.cli verify`` must accept the ledger;
* a bare Trio JSON-lines echo server (this script with ``--echo-server``): it parses each request line
  with ``json`` (as the server's protocol does) and answers ``{"extID", "status": 200, "data": {...}}``
  with ``orjson`` (as the server does), one ``send_all`` per received chunk. It is the ceiling for a
  Trio JSON-lines server in Python on this machine: the ratio server/echo is the figure that matters;
* the load generator (this script with ``--client``): K raw Trio sockets, prebuilt request lines,
  orjson for replies, replies matched by extID, one ``send_all`` per refill of the pipeline.

Scenarios: (a) ``CreditIn`` closed loop with D requests outstanding per connection, (b) ``CreditInSync``
likewise, (c) ``CreditInSync`` open loop at each offered rate of ``--rate`` (200, 1,000 and 5,000/s by default;
latency counted from each request's scheduled send time, so a stall is never hidden, and the generator's own
pacing lag reported), (l) a lone ``CreditInSync``: one connection, one request at a time, (d) the echo server,
closed loop, at the same offered rates and alone (the client's own latency floor).

``--subscribers N``: N idle ``trade:event`` subscribers (no replay) are connected before the scenarios, in a
process of their own (this script with ``--subscribers-role``) that reads every socket with one epoll loop and
throws the bytes away; the server is then started with subscriber caps of N and no connect-rate limit. The
report gives that process's CPU, and the events each subscriber got (all of them, or the server dropped it).
``--ws``: they subscribe over the event WebSocket instead (``/events``, live only; one text frame an event).
With subscribers, each scenario that writes also waits until every subscriber has every event (the fan-out
can lag behind the answers): the report gives that drain, the requests a second delivered to all (answers and
events) and the server's CPU per request with the drain.

    python bench/server_bench.py                  # full run (~35 s on 2 cores)
    python bench/server_bench.py --quick          # smoke test (a few seconds)
    python bench/server_bench.py --py-spy prof.txt   # also sample the server with py-spy (raw stacks)
    python bench/server_bench.py --only a --count 20000 --subscribers 100   # fan-out: CreditIn, 100 subscribers
    python bench/server_bench.py --only a --count 20000 --subscribers 1000 --ws   # ... 1,000 on WebSocket
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CPU_HEADER, BaseTally, Run, add_common_args, checked_call, cpu_columns,  # noqa: E402
                    cpu_said, cpu_snapshot, fmt_ms, num,
                    percentile, print_footer, print_header, run_connections, run_role, say, split, summarize,
                    warn_busy)

ACCOUNTS = 5  # credits are spread round-robin over this many accounts

TARGET_CREDIT_IN = 50_000  # requests/s, durable
TARGET_RATIO = 0.5  # CreditIn / echo
# issue 24's targets at light load: CreditInSync p99 (ms) and CPU per request (µs, the server and its
# writer process) by offered rate, and a lone request's p50 (ms)
TARGET_SYNC_P99_MS = {1000: 3.0, 5000: 8.0}
TARGET_CPU_US = {1000: 200.0}
TARGET_LONE_P50_MS = 0.6


# ============================================================================ load generator (--client)

class Tally(BaseTally):
    """What one connection saw: latencies (s), errors, replies that matched nothing."""

    __slots__ = ("errors", "unmatched", "send_lag")

    def __init__(self) -> None:
        """Nothing seen yet."""
        super().__init__()
        self.errors = 0
        self.unmatched = 0
        self.send_lag: list[float] = []  # open loop: actual send time - scheduled time


def build_lines(command: str, tag: str, conn: int, n: int, logins: list[int], token: str) -> list[tuple[str, bytes]]:
    """(extID, request line) pairs, built before the clock starts. extIDs are unique in the whole run
    (the server keeps an idempotency key per (manager, extID) forever)."""
    cmd, tok = command.encode(), token.encode()
    out = []
    for q in range(n):
        ext = f"{tag}.{conn}.{q}"
        login = logins[(conn + q) % len(logins)]
        out.append((ext, b'{"command":"%s","extID":"%s","data":{"login":%d,"amount":1.25,"comment":"bench credit"},'
                         b'"__token":"%s"}\r\n' % (cmd, ext.encode(), login, tok)))
    return out


def _absorb(buf: bytes, data: bytes, sent: dict, t: Tally, now: float, loads) -> tuple[bytes, int]:
    """Split replies off the received bytes, match them to their send time by extID. -> (rest, answered)."""
    buf += data
    if b"\n" not in data:
        return buf, 0
    parts = buf.split(b"\n")
    buf = parts.pop()
    answered = 0
    lat = t.lat
    for part in parts:
        msg = loads(part)  # a trailing \r is JSON whitespace
        t0 = sent.pop(msg.get("extID"), None)
        if t0 is None:
            t.unmatched += 1
            if t.error_sample is None:
                t.error_sample = part[:300].decode(errors="replace")
            continue
        lat.append(now - t0)
        answered += 1
        if msg.get("status") != 200:
            t.errors += 1
            if t.error_sample is None:
                t.error_sample = part[:300].decode(errors="replace")
    t.last_reply = now
    return buf, answered


async def _receive(stream, buf: bytes, sent: dict, t: Tally, done: int, n: int, loads) -> tuple[bytes, int]:
    """Read one chunk and match the replies in it. -> (rest, replies so far)."""
    from time import perf_counter

    data = await stream.receive_some(1 << 16)
    now = perf_counter()
    if not data:
        raise ConnectionError(f"server closed the connection after {done} of {n} replies")
    buf, answered = _absorb(buf, data, sent, t, now, loads)
    return buf, done + answered


async def closed_loop_conn(stream, reqs: list[tuple[str, bytes]], depth: int, go, t: Tally) -> None:
    """Keep ``depth`` requests outstanding; refill after each received chunk with one send_all."""
    import orjson
    from time import perf_counter

    loads = orjson.loads
    n, i, done = len(reqs), 0, 0
    sent: dict[str, float] = {}
    buf = b""
    await go.wait()
    while done < n:
        room = depth - (i - done)
        if room > 0 and i < n:
            k = min(room, n - i)
            chunk = reqs[i:i + k]
            now = perf_counter()
            for ext, _ in chunk:
                sent[ext] = now
            if i == 0:
                t.first_send = now
            await stream.send_all(b"".join([line for _, line in chunk]))
            i += k
        buf, done = await _receive(stream, buf, sent, t, done, n, loads)


async def receive_replies(stream, n: int, sent: dict, t: Tally) -> None:
    """Open loop, one connection: match ``n`` replies to their scheduled send times."""
    import orjson

    done, buf = 0, b""
    while done < n:
        buf, done = await _receive(stream, buf, sent, t, done, n, orjson.loads)


async def pace(streams: list, reqs: list[list[tuple[str, bytes]]], sents: list[dict], rate: float, start: float,
               tallies: list[Tally], go) -> None:
    """Open loop: request q of the whole scenario is due at ``start + q / rate`` on connection ``q % K``,
    whatever the replies. One pacer wakes as often as the clock allows and sends, per connection, every
    request that is due with one send_all; each is stamped with its SCHEDULED time, so any delay (the
    server's or the client's own) counts in the latency."""
    import trio
    from time import perf_counter

    k = len(streams)
    n = sum(len(r) for r in reqs)
    sent_per_conn = [0] * k
    lag = tallies[0].send_lag
    for t in tallies:
        t.first_send = start
    await go.wait()
    q = 0  # requests of the whole scenario sent so far
    while q < n:
        now = perf_counter()
        due = min(n, int((now - start) * rate) + 1) if now >= start else 0
        if due > q:
            lag.append(now - (start + q / rate))  # the oldest request of this round
            for c in range(k):
                # connection c holds requests c, c+k, c+2k, ... of the scenario: those below ``due``
                upto = min(len(reqs[c]), (due - c + k - 1) // k)
                first = sent_per_conn[c]
                if upto > first:
                    sent = sents[c]
                    chunk = reqs[c][first:upto]
                    for i, (ext, _) in enumerate(chunk, first):
                        sent[ext] = start + (i * k + c) / rate
                    sent_per_conn[c] = upto
                    await streams[c].send_all(b"".join([line for _, line in chunk]))
            q = due
        if q < n:
            await trio.sleep(max(0.0, start + q / rate - perf_counter()))


class Fanout:
    """The idle subscribers' progress: their process writes the events they got, in all, to ``path``."""

    def __init__(self, path: str, subscribers: int) -> None:
        self.path, self.subscribers, self.events = path, subscribers, 0

    def got(self) -> int:
        try:
            with open(self.path) as f:
                return int(f.read() or 0)
        except (OSError, ValueError):
            return 0

    async def drain(self, events: int, patience: float = 10.0) -> float | None:
        """Wait until every subscriber has ``events`` more; -> the seconds waited (None: it stopped getting
        any for ``patience`` seconds, a subscriber was dropped)."""
        import trio
        from time import perf_counter

        self.events += events
        start = changed = perf_counter()
        seen = self.got()
        while seen < self.events * self.subscribers:
            await trio.sleep(0.005)
            if (now := self.got()) != seen:
                seen, changed = now, perf_counter()
            elif perf_counter() - changed > patience:
                return None
        return perf_counter() - start


async def run_scenario(spec: dict, host: str, logins: list[int], token: str, k: int, depth: int,
                       pids: dict[str, int] | None = None, fanout: Fanout | None = None) -> dict:
    """One scenario over ``k`` fresh connections; returns its summary (with ``fanout``, after the drain)."""
    from time import perf_counter

    n_total, mode = spec["count"], spec["mode"]
    shares = split(n_total, k)
    reqs = [build_lines(spec["command"], spec["tag"], c, shares[c], logins, token) for c in range(k)]
    tallies = [Tally() for _ in range(k)]

    def start(nursery, streams: list, go) -> None:
        """The connections' tasks: closed loop, or receivers and one pacer."""
        if mode == "closed":
            for c in range(k):
                nursery.start_soon(closed_loop_conn, streams[c], reqs[c], depth, go, tallies[c])
            return
        sents: list[dict] = [{} for _ in range(k)]
        for c in range(k):
            nursery.start_soon(receive_replies, streams[c], shares[c], sents[c], tallies[c])
        nursery.start_soon(pace, streams, reqs, sents, spec["rate"], perf_counter() + 0.05, tallies, go)

    failure, cpu_before, cpu_after = await run_connections(host, spec["port"], k, spec["limit_s"], pids, start)
    lag = sorted(x for t in tallies for x in t.send_lag)
    subs_cores = None
    if cpu_before and cpu_after and "subscribers" in cpu_before and cpu_after["wall"] > cpu_before["wall"]:
        subs_cores = (cpu_after["subscribers"] - cpu_before["subscribers"]) / (cpu_after["wall"] - cpu_before["wall"])
    drain = drained_us = None
    if fanout is not None and spec["target"] == "server":
        ok = sum(len(t.lat) - t.errors for t in tallies)  # (a CreditIn answered 200: one event)
        drain = await fanout.drain(ok)
        after = cpu_snapshot(pids or {})
        if drain is not None and cpu_before and after and ok:
            drained_us = (after["server"] - cpu_before["server"]) * 1e6 / ok
    return {"subscribers_cores": subs_cores, "drain_s": drain, "drained_us": drained_us,
        "name": spec["name"], "mode": mode, "command": spec["command"], "target": spec["target"],
        "requests": n_total, "errors": sum(t.errors for t in tallies),
        "unmatched": sum(t.unmatched for t in tallies), "offered": spec.get("rate"),
        "send_lag_p99_ms": percentile(lag, 0.99) * 1e3 if lag else None,
        **summarize(tallies, spec["target"], failure, cpu_before, cpu_after),
    }


async def client_main(cfg: dict) -> list[dict]:
    """The --client role: accounts, then every scenario in turn; -> their summaries."""
    from syncledger.server.client import connect

    host, token, k, depth = cfg["host"], cfg["token"], cfg["connections"], cfg["depth"]
    async with connect(host, cfg["server_port"], token) as c:
        logins = []
        for i in range(ACCOUNTS):
            reply = await checked_call(c, "AddUser", {"name": f"bench-{i}", "currency": "EUR"})
            logins.append(reply.data["login"])
    say(f"accounts {logins}")

    gc.disable()  # a collection over the prebuilt lines would stall the client for milliseconds
    fanout = Fanout(cfg["progress"], cfg["subscribers"]) if cfg.get("progress") else None
    results = []
    for spec in cfg["scenarios"]:
        gc.collect()
        say(f"{spec['name']}: {spec['count']} x {spec['command']} ({spec['mode']}"
            + (f", {spec['rate']}/s offered)" if spec["mode"] == "open" else f", depth {depth})"))
        r = await run_scenario(spec, host, logins, token, spec.get("k", k), spec.get("depth", depth), cfg.get("pids"),
                               fanout)
        if not spec.get("warmup"):
            results.append(r)
        say(f"  -> {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"max {r['max_ms']:.2f} ms, errors {r['errors']}, {cpu_said(r, spec['target'])}"
            + (f", fan-out drained {num(r['drain_s'])} s later" if fanout and spec["target"] == "server" else ""))
        if r["failure"] and not spec.get("warmup"):
            break  # the server is stuck or gone: later scenarios would only wait
    return results


# ============================================================================ idle subscribers (--subscribers-role)

def subscribers_main(cfg: dict) -> int:
    """The --subscribers-role: ``count`` connections, each subscribed to trade:event (live only: a Subscribe on
    the manager port, or with ``ws`` an upgrade to the event WebSocket); once all are subscribed it prints
    ``subscribed N``, then reads every socket (one epoll loop, the bytes thrown away) until SIGTERM (and what is
    still on its way), and prints a JSON line: the events each subscriber got (lines, or with ``ws`` the text
    frames, counted by the start of an event) and how many the server closed."""
    import resource
    import selectors
    import socket
    import time

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ws = cfg.get("ws", False)
    if ws:
        line = (b"GET /events?token=%s HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: YmVuY2gtc3Vic2NyaWJlcg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                % cfg["token"].encode())
    else:
        line = (b'{"command":"Subscribe","extID":"s","data":{"chanels":["trade:event"]},"__token":"%s"}\r\n'
                % cfg["token"].encode())
    end, accepted = (b"\r\n\r\n", b"HTTP/1.1 101") if ws else (b"\n", b'"status":200')
    socks = []
    for _ in range(cfg["count"]):
        s = socket.create_connection((cfg["host"], cfg["port"]))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(line)
        socks.append(s)
    for s in socks:  # each Subscribe's answer (the upgrade's), before anything else is sent to it
        got = b""
        while end not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("a subscriber's connection was closed before its Subscribe was answered")
            got += chunk
        answer, rest = got.split(end, 1)
        if accepted not in answer:
            raise SystemExit(f"Subscribe refused: {answer[:300]!r}")
        if rest:
            raise SystemExit("events before the scenarios: the bench expects a quiet ledger")
        s.setblocking(False)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print(f"subscribed {len(socks)}", flush=True)
    sel = selectors.EpollSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    mark = b'{"event":"trade:event"' if ws else b"\n"  # (a WebSocket's frames have no line end)
    k = len(mark) - 1
    tails = [b""] * len(socks)  # the last k bytes each socket gave: a mark cut between two reads is counted
    lines = [0] * len(socks)
    closed = received = 0
    buf = bytearray(1 << 20)
    heard = time.monotonic()  # once stopping, the events still on their way are read: until 0.5 s of silence
    progress, told, told_at = cfg.get("progress"), 0, 0.0
    while True:
        if progress and received != told and time.monotonic() - told_at >= 0.005:  # (for Fanout.drain)
            with open(progress + ".new", "w") as f:
                f.write(str(sum(lines)))
            os.replace(progress + ".new", progress)
            told, told_at = received, time.monotonic()
        ready = sel.select(0.005 if received != told else 0.1)
        if ready:
            heard = time.monotonic()
        elif stopping and time.monotonic() - heard >= 0.5:
            break
        for key, _ in ready:
            try:
                n = key.fileobj.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                closed += 1
                sel.unregister(key.fileobj)
                continue
            i = key.data
            lines[i] += buf.count(mark, 0, n)
            if k:
                lines[i] += (tails[i] + bytes(buf[:min(n, k)])).count(mark)
                tails[i] = (tails[i] + bytes(buf[max(0, n - k):n]))[-k:]
            received += n
    print(json.dumps({"subscribers": len(socks), "closed_by_server": closed, "events_min": min(lines, default=0),
                      "events_max": max(lines, default=0),
                      "bytes_per_event": round(received / max(1, sum(lines)))}), flush=True)
    return 0


class Subscribers:
    """The --subscribers process, started before the scenarios and stopped after them."""

    def __init__(self, run, host: str, port: int, count: int, ws: bool = False) -> None:
        """Start it and wait until every subscriber is subscribed (on the WebSocket port with ``ws``)."""
        import subprocess
        self.progress = os.path.join(run.tmp, "subscribers.progress")
        cfg = {"host": host, "port": port, "token": run.token, "count": count, "ws": ws, "progress": self.progress}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--subscribers-role", json.dumps(cfg)],
                                     stdout=subprocess.PIPE, env=run.env, cwd=os.path.dirname(os.path.abspath(__file__)))
        first = self.proc.stdout.readline().decode()
        if not first.startswith("subscribed"):
            self.proc.kill()
            raise SystemExit(f"the subscribers did not start: {first!r}")
        self.pid = self.proc.pid
        print(f"[bench] {count} idle trade:event subscribers{' on WebSocket' if ws else ''}, pid {self.pid}",
              flush=True)

    def stop(self) -> dict | None:
        """SIGTERM; -> what it reported."""
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out = self.proc.communicate(timeout=60)[0].decode().strip().splitlines()
        except subprocess.TimeoutExpired:  # (events still flowing: the server is far behind)
            self.proc.kill()
            self.proc.communicate()
            return None
        return json.loads(out[-1]) if out else None


# ============================================================================ echo server (--echo-server)

async def echo_handler(stream) -> None:
    """Answer each JSON request line with a fixed 200 reply, one send_all per received chunk."""
    import orjson

    loads, dumps = json.loads, orjson.dumps
    buf = b""
    order = 0
    try:
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                return
            buf += data
            parts = buf.split(b"\n")
            buf = parts.pop()
            out = []
            for part in parts:
                if not part.strip():
                    continue
                req = loads(part)
                d = req.get("data") or {}
                order += 1
                out.append(dumps({"extID": req.get("extID"), "status": 200,
                                  "data": {"accepted": True, "order": order, "state": 10, "login": d.get("login"),
                                           "cmd": 7, "amount": d.get("amount")}}) + b"\r\n")
            if out:
                await stream.send_all(b"".join(out))
    except Exception:
        pass


async def echo_main(host: str) -> None:
    """The --echo-server role: serve ``echo_handler`` on a free port until SIGINT/SIGTERM."""
    import trio

    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo_handler, listeners)
            print(f"listening tcp={host}:{port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


# ============================================================================ orchestration

def scenarios(args: argparse.Namespace, server_port: int, echo_port: int) -> list[dict]:
    """The scenarios to run (those of ``--only``), each with the warm-up of its target first."""
    n = args.count
    limit = max(60.0, n / 1000)  # give up on a scenario after this (a stuck server)
    warm = max(200, n // 20)
    base = {"mode": "closed", "rate": None, "limit_s": limit}
    specs = [
        {**base, "name": "warm-up CreditIn", "tag": "w", "command": "CreditIn", "port": server_port,
         "count": warm, "target": "server", "warmup": True},
        {**base, "name": "warm-up echo", "tag": "we", "command": "CreditIn", "port": echo_port,
         "count": warm, "target": "echo", "warmup": True},
        {**base, "name": "(a) CreditIn", "tag": "a", "command": "CreditIn", "port": server_port, "count": n,
         "target": "server"},
        {**base, "name": "(b) CreditInSync", "tag": "b", "command": "CreditInSync", "port": server_port,
         "count": n, "target": "server"},
        *({**base, "name": f"(c) CreditInSync @ {rate:,.0f}/s", "tag": f"c{rate:.0f}", "command": "CreditInSync",
           "port": server_port, "count": max(1, int(rate * args.rate_seconds)), "target": "server", "mode": "open",
           "rate": rate, "limit_s": args.rate_seconds + limit} for rate in args.rate),
        {**base, "name": "(l) lone CreditInSync", "tag": "l", "command": "CreditInSync", "port": server_port,
         "count": min(n, 2000), "target": "server", "k": 1, "depth": 1},
        {**base, "name": "(d) echo baseline", "tag": "d", "command": "CreditIn", "port": echo_port, "count": n,
         "target": "echo"},
        *({**base, "name": f"(d') echo @ {rate:,.0f}/s", "tag": f"e{rate:.0f}", "command": "CreditIn",
           "port": echo_port, "count": max(1, int(rate * args.rate_seconds)), "target": "echo", "mode": "open",
           "rate": rate, "limit_s": args.rate_seconds + limit} for rate in args.rate),
        {**base, "name": "(dl) lone echo", "tag": "le", "command": "CreditIn", "port": echo_port,
         "count": min(n, 2000), "target": "echo", "k": 1, "depth": 1},
    ]
    keep = set(args.only.replace(",", "")) if args.only else set("abcdl")
    wanted = [s for s in specs if not s.get("warmup") and s["name"][1] in keep]
    targets = {s["target"] for s in wanted}
    return [s for s in specs if (s.get("warmup") and s["target"] in targets) or s in wanted]


def print_report(results: list[dict], args: argparse.Namespace, server_exit: int | None, verify_out: str,
                 verify_ok: bool, cmdline: str) -> bool:
    """The final table, ratios and targets; -> whether the run was clean."""
    width = 118
    print_header(width, "syncledger server benchmark",
                 f"K={args.connections} connections; closed loop: D={args.depth} requests outstanding per connection, "
                 f"{args.count:,} requests per scenario;",
                 f"open loop: {', '.join(f'{r:,.0f}' for r in args.rate)} requests/s offered for {args.rate_seconds:g} s "
                 "each; (l): one connection, one request at a time",
                 "latency: closed loop from the send of each request's batch; open loop from its SCHEDULED send time")
    if args.subscribers:
        print(f"{args.subscribers:,} idle trade:event subscribers (no replay{', WebSocket' if args.ws else ''}) in a "
              "process of their own (its CPU: after the table, not in the columns)")
    print(f"{'scenario':<30} {'requests':>9} {'errors':>6} {'offered/s':>10} {'achieved/s':>11} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  " + CPU_HEADER)
    print("-" * width)
    for r in results:
        offered = f"{r['offered']:,.0f}" if r["offered"] else "max"
        errors = r["errors"] + r["unmatched"] + (r["requests"] - r["answered"])
        print(f"{r['name']:<30} {r['requests']:>9,} {errors:>6} {offered:>10} {r['rps']:>11,.0f} "
              f"{fmt_ms(r['p50_ms']):>8} {fmt_ms(r['p99_ms']):>8} {fmt_ms(r['max_ms']):>8}  " + cpu_columns(r))
    print("-" * width)
    for r in results:
        if r["error_sample"]:
            print(f"{r['name']}: first bad reply: {r['error_sample']}")
        if r["send_lag_p99_ms"] is not None:
            print(f"{r['name']:<30} client pacing lag p99 {r['send_lag_p99_ms']:.2f} ms (part of its latency)")
    if args.subscribers:
        for r in results:
            print(f"{r['name']:<30} subscribers' process: {num(r.get('subscribers_cores'))} cores")
            if r["target"] == "server":
                drain, us = r.get("drain_s"), r.get("drained_us")
                delivered = r["answered"] / (r["elapsed_s"] + drain) if drain is not None and r["answered"] else None
                print(f"{r['name']:<30} fan-out drained {num(drain)} s after the scenario: delivered to all "
                      f"{'-' if delivered is None else f'{delivered:,.0f}'}/s, server CPU "
                      f"{'-' if us is None else f'{us:,.0f}'} µs/req with the drain")
        subs = getattr(args, "subscribers_seen", None) or {}
        print(f"subscribers: {subs.get('subscribers', '-')}, events each got {subs.get('events_min', '-')}–"
              f"{subs.get('events_max', '-')} ({subs.get('bytes_per_event', '-')} bytes each), closed by the server "
              f"{subs.get('closed_by_server', '-')}")
    named = {r["name"].split(" ")[0]: r for r in results}
    a, b, lone, d = (named.get(x) for x in ("(a)", "(b)", "(l)", "(d)"))
    if a and d and d["rps"]:
        print(f"{'ratio CreditIn / echo':<30} {a['rps'] / d['rps']:>9.3f}")
    if b and d and d["rps"]:
        print(f"{'ratio CreditInSync / echo':<30} {b['rps'] / d['rps']:>9.3f}")
    warn_busy(results)
    print("-" * width)
    checks = []
    if a:
        checks.append((f"durable CreditIn >= {TARGET_CREDIT_IN:,}/s", a["rps"] >= TARGET_CREDIT_IN,
                       f"{a['rps']:,.0f}/s"))
    if a and d and d["rps"]:
        checks.append((f"CreditIn >= {TARGET_RATIO} x echo", a["rps"] >= TARGET_RATIO * d["rps"],
                       f"{a['rps'] / d['rps']:.3f} x"))
    for c in (r for r in results if r["name"].startswith("(c)")):
        rate = round(c["offered"])
        kept = not c["failure"] and c["answered"] == c["requests"] and c["rps"] >= 0.95 * c["offered"]
        if rate in TARGET_SYNC_P99_MS:
            checks.append((f"CreditInSync p99 <= {TARGET_SYNC_P99_MS[rate]:g} ms at {rate:,}/s offered",
                           kept and c["p99_ms"] <= TARGET_SYNC_P99_MS[rate],
                           f"p99 {c['p99_ms']:.2f} ms, achieved {c['rps']:,.0f}/s"))
        us = c["target_cores"] * 1e6 / c["rps"] if c["target_cores"] is not None and c["rps"] else None
        if rate in TARGET_CPU_US and us is not None:
            checks.append((f"CPU <= {TARGET_CPU_US[rate]:g} µs per CreditInSync at {rate:,}/s (server + writer)",
                           kept and us <= TARGET_CPU_US[rate], f"{us:,.0f} µs"))
    if lone:
        checks.append((f"a lone CreditInSync p50 <= {TARGET_LONE_P50_MS:g} ms", lone["p50_ms"] <= TARGET_LONE_P50_MS,
                       f"p50 {lone['p50_ms']:.2f} ms"))
    for label, ok, value in checks:
        print(f"target: {label:<52} {'met' if ok else 'NOT MET':>8}   ({value})")
    print(f"server exit code after SIGTERM: {server_exit} ({'ok' if server_exit == 0 else 'FAILED'})")
    print_footer(width, verify_out, cmdline)
    dropped = bool((getattr(args, "subscribers_seen", None) or {}).get("closed_by_server"))
    return (server_exit == 0 and verify_ok and not dropped and all(not r["failure"] and r["errors"] == 0 and r["unmatched"] == 0
                                                   and r["answered"] == r["requests"] for r in results))


def orchestrate(args: argparse.Namespace) -> int:
    """Server, echo server and client processes; the report; -> the exit code."""
    run = Run(args, "syncledger-bench-")
    caps = []
    if args.subscribers:
        caps = ["--max-subscribers-per-login", str(max(16, args.subscribers)), "--max-subscribers-per-address",
                str(max(64, args.subscribers)), "--max-connect-rate", "0"]
    server, ports = run.start_server("--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                                     "--admin-port", "0", *caps)
    echo, echo_ports = run.start_listener(__file__, "--echo-server", "echo", "echo server")
    server_port, echo_port = ports["tcp"], echo_ports["tcp"]
    print(f"[bench] server pid {server.pid} on {args.host}:{server_port}, echo pid {echo.pid} on "
          f"{args.host}:{echo_port}", flush=True)
    subscribers = (Subscribers(run, args.host, ports["ws"] if args.ws else server_port, args.subscribers, args.ws)
                   if args.subscribers else None)
    run.start_py_spy(server.pid)
    pids = {"server": server.pid, "echo": echo.pid}
    if subscribers is not None:
        pids["subscribers"] = subscribers.pid
    cfg = {"pids": pids, "host": args.host, "server_port": server_port,
           "token": run.token, "connections": args.connections, "depth": args.depth,
           "scenarios": scenarios(args, server_port, echo_port)}
    if subscribers is not None:
        cfg.update(progress=subscribers.progress, subscribers=args.subscribers)
    results: list[dict] = []
    try:
        results = run.run_client(__file__, cfg) or []
    finally:
        if subscribers is not None:
            args.subscribers_seen = subscribers.stop()
        _, server_exit = run.stop(echo, server)
    verify_out, verify_ok = run.verify()
    clean = print_report(results, args, server_exit, verify_out, verify_ok, run.cmdline)
    run.clean_up()
    return 0 if clean and results else 1


def main() -> int:
    """Parse the options; run the role asked for, or the whole benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", "-k", type=int, default=8, help="client connections (default 8)")
    p.add_argument("--depth", "-d", type=int, default=64, help="requests outstanding per connection (default 64)")
    p.add_argument("--count", "-n", type=int, default=None,
                   help="requests per closed-loop scenario (default 100000; 2000 with --quick)")
    p.add_argument("--rate", type=lambda text: [float(r) for r in text.split(",")], default=[200.0, 1000.0, 5000.0],
                   help="offered rates of the open-loop scenario, comma-separated (default 200,1000,5000/s)")
    p.add_argument("--rate-seconds", type=float, default=None, help="duration of the open-loop scenarios (default 5 s)")
    p.add_argument("--only", metavar="LETTERS", help="run only these scenarios, e.g. --only c or --only a,d")
    p.add_argument("--subscribers", type=int, default=0, metavar="N",
                   help="N idle trade:event subscribers, in a process of their own, during the scenarios (default 0)")
    p.add_argument("--ws", action="store_true", help="the subscribers are on the event WebSocket (default: TCP)")
    add_common_args(p)
    p.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--subscribers-role", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.subscribers_role:
        return subscribers_main(json.loads(args.subscribers_role))
    role = run_role(args, client_main, echo_main, args.echo_server)
    if role is not None:
        return role
    if args.count is None:
        args.count = 2_000 if args.quick else 100_000
    if args.rate_seconds is None:
        args.rate_seconds = 0.5 if args.quick else 5.0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
