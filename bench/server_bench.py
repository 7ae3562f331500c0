#!/usr/bin/env python
"""Benchmark of the syncledger manager TCP API (issue 3, "Benchmark").

Three processes, all on loopback:

* the real server, ``python -m server.cli serve`` on a fresh temporary database (durable: WAL and
  ``synchronous=FULL``, as shipped), stopped with SIGTERM at the end (exit code must be 0), then
  ``python -m server.cli verify`` must accept the ledger;
* a bare Trio JSON-lines echo server (this script with ``--echo-server``): it parses each request line
  with ``json`` (as the server's protocol does) and answers ``{"extID", "status": 200, "data": {...}}``
  with ``orjson`` (as the server does), one ``send_all`` per received chunk. It is the ceiling for a
  Trio JSON-lines server in Python on this machine: the ratio server/echo is the figure that matters;
* the load generator (this script with ``--client``): K raw Trio sockets, prebuilt request lines,
  orjson for replies, replies matched by extID, one ``send_all`` per refill of the pipeline.

Scenarios: (a) ``CreditIn`` closed loop with D requests outstanding per connection, (b) ``CreditInSync``
likewise, (c) ``CreditInSync`` open loop at a fixed offered rate (latency counted from each request's
scheduled send time, so a stall is never hidden), (d) the echo server, closed loop and at the same
offered rate (the client's own latency floor).

    python bench/server_bench.py                  # full run (~35 s on 2 cores)
    python bench/server_bench.py --quick          # smoke test (a few seconds)
    python bench/server_bench.py --py-spy prof.txt   # also sample the server with py-spy (raw stacks)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLI = [sys.executable, "-m", "server.cli"]
MANAGER_LOGIN = 1
ACCOUNTS = 5  # credits are spread round-robin over this many accounts

TARGET_CREDIT_IN = 50_000  # requests/s, durable
TARGET_RATIO = 0.5  # CreditIn / echo
TARGET_SYNC_P99_MS = 5.0  # CreditInSync p99 at the offered rate


# ============================================================================ load generator (--client)

def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, min(len(sorted_values) - 1, math.ceil(p * len(sorted_values)) - 1))]


class Tally:
    """What one connection saw: latencies (s), errors, replies that matched nothing."""

    __slots__ = ("lat", "errors", "error_sample", "unmatched", "first_send", "last_reply", "send_lag")

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.errors = 0
        self.error_sample: str | None = None
        self.unmatched = 0
        self.first_send = math.inf
        self.last_reply = 0.0
        self.send_lag: list[float] = []  # open loop: actual send time - scheduled time


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_snapshot(pids: dict[str, int]) -> dict | None:
    """CPU seconds used so far by the machine (all cores, busy only), by each listed process and by this
    one; None where /proc is not available."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        snap = {"wall": time.perf_counter(), "machine": (sum(v[:3]) + sum(v[5:8])) / CLK_TCK,
                "client": time.process_time()}
        for name, pid in pids.items():
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            snap[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return snap
    except (OSError, ValueError, IndexError):
        return None


def cpu_usage(before: dict | None, after: dict | None, target: str) -> dict:
    """Average cores used during a scenario: by the process under test, by the client, by everything
    else on the machine (other benchmarks or test runs distort the figures: it is reported)."""
    dt = after["wall"] - before["wall"] if before and after else 0.0
    if dt < 0.5:  # /proc counts in clock ticks (10 ms): too coarse for a shorter scenario
        return {"target_cores": None, "client_cores": None, "other_cores": None}
    d = {k: after[k] - before[k] for k in before if k != "wall"}
    ours = sum(v for k, v in d.items() if k != "machine")
    return {"target_cores": d.get(target, math.nan) / dt, "client_cores": d["client"] / dt,
            "other_cores": max(0.0, d["machine"] - ours) / dt}


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
        data = await stream.receive_some(1 << 16)
        now = perf_counter()
        if not data:
            raise ConnectionError(f"server closed the connection after {done} of {n} replies")
        buf, answered = _absorb(buf, data, sent, t, now, loads)
        done += answered


async def receive_replies(stream, n: int, sent: dict, t: Tally) -> None:
    """Open loop, one connection: match ``n`` replies to their scheduled send times."""
    import orjson
    from time import perf_counter

    loads = orjson.loads
    done, buf = 0, b""
    while done < n:
        data = await stream.receive_some(1 << 16)
        now = perf_counter()
        if not data:
            raise ConnectionError(f"server closed the connection after {done} of {n} replies")
        buf, answered = _absorb(buf, data, sent, t, now, loads)
        done += answered


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


async def run_scenario(spec: dict, host: str, logins: list[int], token: str, k: int, depth: int,
                       pids: dict[str, int] | None = None) -> dict:
    """One scenario over ``k`` fresh connections; returns its summary."""
    import trio
    from time import perf_counter

    n_total, port, mode = spec["count"], spec["port"], spec["mode"]
    shares = [n_total // k + (1 if c < n_total % k else 0) for c in range(k)]
    reqs = [build_lines(spec["command"], spec["tag"], c, shares[c], logins, token) for c in range(k)]
    streams = [await trio.open_tcp_stream(host, port) for _ in range(k)]
    tallies = [Tally() for _ in range(k)]
    go = trio.Event()
    limit = spec["limit_s"]
    error = None
    cpu_before = cpu_after = None
    try:
        with trio.move_on_after(limit) as guard:
            async with trio.open_nursery() as nursery:
                if mode == "closed":
                    for c in range(k):
                        nursery.start_soon(closed_loop_conn, streams[c], reqs[c], depth, go, tallies[c])
                else:
                    sents: list[dict] = [{} for _ in range(k)]
                    for c in range(k):
                        nursery.start_soon(receive_replies, streams[c], shares[c], sents[c], tallies[c])
                    nursery.start_soon(pace, streams, reqs, sents, spec["rate"], perf_counter() + 0.05, tallies, go)
                await trio.sleep(0.01)
                cpu_before = cpu_snapshot(pids or {})
                go.set()
        cpu_after = cpu_snapshot(pids or {})
        if guard.cancelled_caught:
            error = f"gave up after {limit:.0f} s"
    except Exception as e:  # a broken connection: report it, keep what was measured
        error = f"{type(e).__name__}: {e}"
    finally:
        for s in streams:
            await s.aclose()

    lat = sorted(x for t in tallies for x in t.lat)
    answered = len(lat)
    t0 = min(t.first_send for t in tallies)
    t1 = max(t.last_reply for t in tallies)
    elapsed = t1 - t0 if answered else math.nan
    lag = sorted(x for t in tallies for x in t.send_lag)
    result = {
        "name": spec["name"], "mode": mode, "command": spec["command"], "target": spec["target"],
        "requests": n_total, "answered": answered, "errors": sum(t.errors for t in tallies),
        "unmatched": sum(t.unmatched for t in tallies),
        "error_sample": next((t.error_sample for t in tallies if t.error_sample), None),
        "failure": error, "elapsed_s": elapsed,
        "rps": answered / elapsed if answered and elapsed > 0 else 0.0,
        "p50_ms": _percentile(lat, 0.50) * 1e3, "p99_ms": _percentile(lat, 0.99) * 1e3,
        "max_ms": (lat[-1] * 1e3) if lat else math.nan,
        "offered": spec.get("rate"),
        "send_lag_p99_ms": _percentile(lag, 0.99) * 1e3 if lag else None,
        **cpu_usage(cpu_before, cpu_after, spec["target"]),
    }
    return result


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


async def client_main(cfg: dict) -> list[dict]:
    from server.client import connect

    host, token, k, depth = cfg["host"], cfg["token"], cfg["connections"], cfg["depth"]

    def say(msg: str) -> None:
        print(f"[client] {msg}", file=sys.stderr, flush=True)

    async with connect(host, cfg["server_port"], token) as c:
        logins = []
        for i in range(ACCOUNTS):
            reply = await c.call("AddUser", {"name": f"bench-{i}", "currency": "EUR"})
            if not reply.ok:
                raise SystemExit(f"AddUser failed: {reply}")
            logins.append(reply.data["login"])
    say(f"accounts {logins}")

    gc.disable()  # a collection over the prebuilt lines would stall the client for milliseconds
    results = []
    for spec in cfg["scenarios"]:
        gc.collect()
        say(f"{spec['name']}: {spec['count']} x {spec['command']} ({spec['mode']}"
            + (f", {spec['rate']}/s offered)" if spec["mode"] == "open" else f", depth {depth})"))
        r = await run_scenario(spec, host, logins, token, k, depth, cfg.get("pids"))
        if not spec.get("warmup"):
            results.append(r)
        say(f"  -> {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"max {r['max_ms']:.2f} ms, errors {r['errors']}, CPU cores: {spec['target']} "
            f"{_num(r['target_cores'])}, client {_num(r['client_cores'])}, others {_num(r['other_cores'])}"
            + (f", FAILED: {r['failure']}" if r["failure"] else ""))
        if r["failure"] and not spec.get("warmup"):
            break  # the server is stuck or gone: later scenarios would only wait
    return results


# ============================================================================ echo server (--echo-server)

async def echo_handler(stream) -> None:
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

def run_cli(*args: str, env: dict) -> str:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{shlex.join(['python', '-m', 'server.cli', *args])} failed ({r.returncode}):\n"
                         f"{r.stdout}{r.stderr}")
    return r.stdout.strip()


def start_process(cmd: list[str], env: dict, log_path: str, what: str) -> tuple[subprocess.Popen, int]:
    """Start a listener process; parse the port from its first stdout line (``listening tcp=HOST:PORT …``)."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT)
    log.close()
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.match(r"listening tcp=(\S+):(\d+)(?: ws=(\S+):(\d+))?", line)
    if not match:
        proc.kill()
        proc.wait()
        with open(log_path, errors="replace") as f:
            raise SystemExit(f"{what} did not start: first line {line!r}\n{f.read()[-3000:]}")
    # keep draining stdout so that the process can never block on a full pipe
    sink = open(log_path + ".stdout", "wb")
    threading.Thread(target=shutil.copyfileobj, args=(proc.stdout, sink), daemon=True).start()
    return proc, int(match[2])


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
    return proc.returncode


def scenarios(args: argparse.Namespace, server_port: int, echo_port: int) -> list[dict]:
    n, rate = args.count, args.rate
    n_open = max(1, int(rate * args.rate_seconds))
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
        {**base, "name": f"(c) CreditInSync @ {rate:,.0f}/s", "tag": "c", "command": "CreditInSync",
         "port": server_port, "count": n_open, "target": "server", "mode": "open", "rate": rate,
         "limit_s": args.rate_seconds + limit},
        {**base, "name": "(d) echo baseline", "tag": "d", "command": "CreditIn", "port": echo_port, "count": n,
         "target": "echo"},
        {**base, "name": f"(d') echo @ {rate:,.0f}/s", "tag": "e", "command": "CreditIn", "port": echo_port,
         "count": n_open, "target": "echo", "mode": "open", "rate": rate, "limit_s": args.rate_seconds + limit},
    ]
    keep = set(args.only.replace(",", "")) if args.only else set("abcd")
    wanted = [s for s in specs if not s.get("warmup") and s["name"][1] in keep]
    targets = {s["target"] for s in wanted}
    return [s for s in specs if (s.get("warmup") and s["target"] in targets) or s in wanted]


def fmt_ms(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.2f}"


def print_report(results: list[dict], args: argparse.Namespace, server_exit: int | None, verify_out: str,
                 verify_ok: bool, cmdline: str) -> bool:
    width = 118
    print()
    print("=" * width)
    print(f"syncledger server benchmark  |  {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"K={args.connections} connections; closed loop: D={args.depth} requests outstanding per connection, "
          f"{args.count:,} requests per scenario;")
    print(f"open loop: {args.rate:,.0f} requests/s offered for {args.rate_seconds:g} s")
    print("latency: closed loop from the send of each request's batch; open loop from its SCHEDULED send time")
    print("CPU: average cores used during the scenario by the process under test / the client / all other processes")
    print("-" * width)
    print(f"{'scenario':<30} {'requests':>9} {'errors':>6} {'offered/s':>10} {'achieved/s':>11} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  {'CPU: tested':>11} {'client':>6} {'others':>6}")
    print("-" * width)
    for r in results:
        offered = f"{r['offered']:,.0f}" if r["offered"] else "max"
        errors = r["errors"] + r["unmatched"] + (r["requests"] - r["answered"])
        print(f"{r['name']:<30} {r['requests']:>9,} {errors:>6} {offered:>10} {r['rps']:>11,.0f} "
              f"{fmt_ms(r['p50_ms']):>8} {fmt_ms(r['p99_ms']):>8} {fmt_ms(r['max_ms']):>8}  "
              f"{_num(r['target_cores']):>11} {_num(r['client_cores']):>6} {_num(r['other_cores']):>6}"
              + (f"   FAILED: {r['failure']}" if r["failure"] else ""))
    print("-" * width)
    for r in results:
        if r["error_sample"]:
            print(f"{r['name']}: first bad reply: {r['error_sample']}")
        if r["send_lag_p99_ms"] is not None:
            print(f"{r['name']:<30} client pacing lag p99 {r['send_lag_p99_ms']:.2f} ms (part of its latency)")
    named = {r["name"].split(" ")[0]: r for r in results}
    a, b, c, d = (named.get(x) for x in ("(a)", "(b)", "(c)", "(d)"))
    if a and d and d["rps"]:
        print(f"{'ratio CreditIn / echo':<30} {a['rps'] / d['rps']:>9.3f}")
    if b and d and d["rps"]:
        print(f"{'ratio CreditInSync / echo':<30} {b['rps'] / d['rps']:>9.3f}")
    busy = [r["other_cores"] for r in results if r["other_cores"] is not None]
    if busy and max(busy) > 0.15:
        print(f"WARNING: other processes used up to {max(busy):.2f} cores during the run: the figures are distorted")
    print("-" * width)
    checks = []
    if a:
        checks.append((f"durable CreditIn >= {TARGET_CREDIT_IN:,}/s", a["rps"] >= TARGET_CREDIT_IN,
                       f"{a['rps']:,.0f}/s"))
    if a and d and d["rps"]:
        checks.append((f"CreditIn >= {TARGET_RATIO} x echo", a["rps"] >= TARGET_RATIO * d["rps"],
                       f"{a['rps'] / d['rps']:.3f} x"))
    if c:
        ok = (c["p99_ms"] <= TARGET_SYNC_P99_MS and not c["failure"] and c["answered"] == c["requests"]
              and c["rps"] >= 0.95 * c["offered"])
        checks.append((f"CreditInSync p99 <= {TARGET_SYNC_P99_MS:g} ms at {args.rate:,.0f}/s offered", ok,
                       f"p99 {c['p99_ms']:.2f} ms, achieved {c['rps']:,.0f}/s"))
    for label, ok, value in checks:
        print(f"target: {label:<52} {'met' if ok else 'NOT MET':>8}   ({value})")
    print(f"server exit code after SIGTERM: {server_exit} ({'ok' if server_exit == 0 else 'FAILED'})")
    print(f"verify: {verify_out}")
    print(f"command: {cmdline}")
    print("=" * width)
    return (server_exit == 0 and verify_ok and all(not r["failure"] and r["errors"] == 0 and r["unmatched"] == 0
                                                   and r["answered"] == r["requests"] for r in results))


def machine_busy_cores(seconds: float = 1.0) -> float | None:
    a = cpu_snapshot({})
    time.sleep(seconds)
    b = cpu_snapshot({})
    return None if not a or not b else (b["machine"] - a["machine"]) / (b["wall"] - a["wall"])


def wait_quiet(limit: float, threshold: float = 0.2) -> None:
    """Wait (at most ``limit`` seconds) until other processes use less than ``threshold`` cores."""
    deadline = time.monotonic() + limit
    while True:
        busy = machine_busy_cores()
        if busy is None or busy < threshold:
            return
        if time.monotonic() > deadline:
            print(f"[bench] the machine is still busy ({busy:.2f} cores): running anyway", flush=True)
            return
        print(f"[bench] waiting for a quiet machine: {busy:.2f} cores busy", flush=True)
        time.sleep(4)


def orchestrate(args: argparse.Namespace) -> int:
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    cmdline = f"(cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])})"
    tmp = tempfile.mkdtemp(prefix="syncledger-bench-")
    db = os.path.join(tmp, "bench.db")
    env = {**os.environ, "SYNCLEDGER_SECRET": secrets.token_hex(32), "PYTHONUNBUFFERED": "1"}
    print(f"[bench] temp dir {tmp}", flush=True)
    run_cli("manager", "add", "--db", db, "--login", str(MANAGER_LOGIN), "--password", "x", "--session", "ADMIN",
            env=env)
    token = run_cli("token", "--db", db, "--login", str(MANAGER_LOGIN), env=env)

    serve = [*CLI, "serve", "--db", db, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0"]
    if args.cprofile:
        serve = [sys.executable, "-m", "cProfile", "-o", os.path.abspath(args.cprofile), *serve[1:]]
    server, server_port = start_process(serve, env, os.path.join(tmp, "server.log"), "server")
    echo, echo_port = start_process([sys.executable, os.path.abspath(__file__), "--echo-server", "--host", args.host],
                                    env, os.path.join(tmp, "echo.log"), "echo server")
    print(f"[bench] server pid {server.pid} on {args.host}:{server_port}, echo pid {echo.pid} on "
          f"{args.host}:{echo_port}", flush=True)
    spy = None
    if args.py_spy:
        fmt = {"svg": "flamegraph", "json": "speedscope"}.get(args.py_spy.rsplit(".", 1)[-1], "raw")
        spy_cmd = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid", str(server.pid),
                   "--rate", "250", "--format", fmt, "--threads", "-o", os.path.abspath(args.py_spy)]
        if args.py_spy_gil:
            spy_cmd.append("--gil")
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(tmp, "py-spy.log"), "wb"))

    cfg = {"pids": {"server": server.pid, "echo": echo.pid}, "host": args.host, "server_port": server_port,
           "token": token, "connections": args.connections, "depth": args.depth,
           "scenarios": scenarios(args, server_port, echo_port)}
    results: list[dict] = []
    try:
        client = subprocess.run([sys.executable, os.path.abspath(__file__), "--client", json.dumps(cfg)],
                                stdout=subprocess.PIPE, env=env, cwd=ROOT)
        out = client.stdout.decode().strip().splitlines()
        if client.returncode != 0 or not out:
            print(f"[bench] client failed with exit code {client.returncode}", file=sys.stderr)
        else:
            results = json.loads(out[-1])
    finally:
        if spy is not None:
            stop_process(spy, signal.SIGINT)
            print(f"[bench] py-spy profile written to {args.py_spy}", flush=True)
        stop_process(echo)
        server_exit = stop_process(server)
    if server_exit != 0:
        with open(os.path.join(tmp, "server.log"), errors="replace") as f:
            print(f"[bench] server log tail:\n{f.read()[-3000:]}", file=sys.stderr)
    ver = subprocess.run([*CLI, "verify", "--db", db], capture_output=True, text=True, env=env, cwd=ROOT)
    verify_out = (ver.stdout + ver.stderr).strip()
    clean = print_report(results, args, server_exit, verify_out, ver.returncode == 0, cmdline)
    if args.keep:
        print(f"[bench] kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if clean and results else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", "-k", type=int, default=8, help="client connections (default 8)")
    p.add_argument("--depth", "-d", type=int, default=64, help="requests outstanding per connection (default 64)")
    p.add_argument("--count", "-n", type=int, default=None,
                   help="requests per closed-loop scenario (default 100000; 2000 with --quick)")
    p.add_argument("--rate", type=float, default=10_000,
                   help="offered rate of the open-loop scenario (default 10000/s)")
    p.add_argument("--rate-seconds", type=float, default=None, help="duration of the open-loop scenarios (default 5 s)")
    p.add_argument("--only", metavar="LETTERS", help="run only these scenarios, e.g. --only c or --only a,d")
    p.add_argument("--quick", action="store_true", help="a tiny run for smoke testing")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to leave the CPUs idle (shared machines)")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (database, server log)")
    p.add_argument("--py-spy", metavar="OUT", help="sample the server with py-spy while the client runs "
                   "(.svg flamegraph, .json speedscope, else raw collapsed stacks)")
    p.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only samples holding the GIL")
    p.add_argument("--cprofile", metavar="OUT", help="run the server under cProfile, stats written to OUT")
    p.add_argument("--client", metavar="JSON", help=argparse.SUPPRESS)
    p.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        import trio

        results = trio.run(client_main, json.loads(args.client))
        print(json.dumps(results))
        return 0
    if args.echo_server:
        import trio

        trio.run(echo_main, args.host)
        return 0
    if args.count is None:
        args.count = 2_000 if args.quick else 100_000
    if args.rate_seconds is None:
        args.rate_seconds = 0.5 if args.quick else 5.0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
