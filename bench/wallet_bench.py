#!/usr/bin/env python
"""Benchmark of the syncledger game-wallet HTTP API (issue 4, "Benchmark").

Three processes, all on loopback:

* the real server, ``python -m syncledger.server.cli serve`` on a fresh temporary database (durable: WAL and
  ``synchronous=FULL``, as shipped), ``SYNCLEDGER_SECRET`` and ``SYNCLEDGER_WALLET_TOKEN`` set, every port
  0; stopped with SIGTERM at the end (exit code must be 0), then ``python -m syncledger.server.cli verify`` must
  accept the ledger;
* a bare app on the same HTTP stack (this script with ``--bare-server``): the server's own HTTP/1.1 driver
  (``server.http``: httptools (llhttp) and one Trio task per connection) with the same limits and GC settings as
  ``syncledger serve``; the app reads the body and answers a fixed 200 JSON body. It is the ceiling of that
  HTTP stack on this machine: the ratio wallet/bare is the figure that matters;
* the load generator (this script with ``--client``): K raw Trio sockets, HTTP/1.1 keep-alive, each
  connection sends one prebuilt request, reads its response with a minimal parser (Content-Length or
  chunked), then sends the next (no pipelining, as real HTTP/1.1 clients). Latency is from the send of
  a request to the last byte of its response; every response must be HTTP 200 with ``"status":"OK"``.

Set-up (not timed): accounts with balance (``BalanceIn``) and a game session each (``OpenGameSession``),
over the manager TCP API. Scenarios:

  (s) the debits that (a) settles, one per credit (a set-up phase: shown for information only);
  (a) ``POST /v1/credit``, each with its own debit as ``refId``: every credit writes a record and an event
      (a repeated or late credit would answer BET_ALREADY_SETTLED without writing and flatter the figures);
  (b) the bare app, same client, same request shape as (a), run right after (a);
  (c) full rounds, debit then credit on the same connection: rounds/s, latency of the whole round.

At the end the client reads every account back (``GetUser``) and checks that its balance equals the
opening balance plus every credit minus every debit that answered OK: each credit really moved money.

    python bench/wallet_bench.py                  # full run
    python bench/wallet_bench.py --quick          # smoke test (a few seconds)
    python bench/wallet_bench.py --py-spy prof.txt   # also sample the server with py-spy
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import signal
import sys
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from common import (CPU_HEADER, BaseTally, Run, add_common_args, checked_call, cpu_columns,  # noqa: E402
                    cpu_said, fmt_ms,
                    print_footer, print_header, run_connections, run_role, say, split, summarize, warn_busy)

TARGET_CREDITS = 10_000  # credits/s over HTTP keep-alive
CURRENCY = "EUR"
OPENING_BALANCE = 10_000_000  # per account, units
DEBIT = "1.25"  # a bet
CREDIT = "2.5"  # a win
MICRO = 10**6
BARE_BODY = b'{"status":"OK","balance":1000.5,"bonus":0,"uuid":"bare"}'
JSON_HEADERS = [(b"content-type", b"application/json")]  # what server/wallet.py sends


# ============================================================================ HTTP/1.1 on raw sockets

def http_request(host: str, port: int, token: str, action: str, body: bytes) -> bytes:
    """A complete POST /v1/ACTION request with its bearer token."""
    return (b"POST /v1/%s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (action.encode(), host.encode(), port, token.encode(), len(body), body))


def parse_response(buf: bytes) -> tuple[int, int, bytes, bool] | None:
    """One HTTP/1.1 response at the start of ``buf``: (its length, status code, body, connection closes),
    or None while incomplete. Content-Length and chunked framing (an HTTP server may chunk a response that does
    not announce its length)."""
    he = buf.find(b"\r\n\r\n")
    if he < 0:
        return None
    head = buf[:he].lower()
    code = int(head[9:12])
    close = b"\r\nconnection: close" in head
    pos = he + 4
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        n = int(head[i + 17:j if j >= 0 else len(head)])
        if len(buf) < pos + n:
            return None
        return pos + n, code, buf[pos:pos + n], close
    if b"\r\ntransfer-encoding: chunked" not in head:
        raise ValueError(f"response without length: {buf[:200]!r}")
    chunks = []
    while True:
        j = buf.find(b"\r\n", pos)
        if j < 0:
            return None
        size = int(buf[pos:j].split(b";", 1)[0], 16)
        if size == 0:
            k = buf.find(b"\r\n\r\n", j)  # end of the (usually empty) trailer section
            if k < 0:
                return None
            return k + 4, code, b"".join(chunks), close
        end = j + 2 + size
        if len(buf) < end + 2:
            return None
        chunks.append(buf[j + 2:end])
        pos = end + 2


# ============================================================================ load generator (--client)

class Tally(BaseTally):
    """What one connection saw: latency of each item (s), its statuses, what went wrong."""

    __slots__ = ("ok", "statuses", "moved", "reconnects")

    def __init__(self) -> None:
        """Nothing seen yet."""
        super().__init__()
        self.ok = 0  # responses that were HTTP 200 with status OK
        self.statuses: dict[str, int] = {}  # everything else, by "HTTP code status"
        self.moved: dict[int, int] = {}  # login -> micro-units moved by the calls that answered OK
        self.reconnects = 0  # new connections after a response with Connection: close


def build_items(kind: str, tag: str, conn: int, n: int, accounts: list[tuple[int, str]], host: str, port: int,
                token: str) -> list[tuple[tuple[bytes, ...], tuple[tuple[int, int], ...]]]:
    """Prebuilt work for one connection, before the clock starts: ``n`` items, each a tuple of requests
    sent one after another (latency is per item) and the money each moves if answered OK.

    kind: ``debit`` (txid ``{tag}d.{conn}.{q}``), ``credit`` (settles ``{ref}d.{conn}.{q}``: tag is
    ``"{tag}/{ref}"``), ``round`` (a debit then its credit), ``bare`` (credit-shaped, to the bare app)."""
    import orjson

    tag, _, ref = tag.partition("/")
    out = []
    for q in range(n):
        login, sid = accounts[(conn + q) % len(accounts)]
        base = {"sid": sid, "userId": str(login), "currency": CURRENCY,
                "game": {"id": f"g-{tag}.{conn}.{q}", "type": "slots", "session": "bench"}}

        def debit(txid: str) -> bytes:
            body = {**base, "transaction": {"id": txid, "amount": orjson.Fragment(DEBIT)}, "uuid": f"u-{txid}"}
            return http_request(host, port, token, "debit", orjson.dumps(body))

        def credit(txid: str, ref_id: str) -> bytes:
            body = {**base, "transaction": {"id": txid, "refId": ref_id, "amount": orjson.Fragment(CREDIT)},
                    "uuid": f"u-{txid}"}
            return http_request(host, port, token, "credit", orjson.dumps(body))

        d, c = int(Decimal(DEBIT) * MICRO), int(Decimal(CREDIT) * MICRO)
        if kind == "debit":
            out.append(((debit(f"{tag}d.{conn}.{q}"),), ((login, -d),)))
        elif kind == "credit":
            out.append(((credit(f"{tag}c.{conn}.{q}", f"{ref}d.{conn}.{q}"),), ((login, c),)))
        elif kind == "round":
            out.append(((debit(f"{tag}d.{conn}.{q}"), credit(f"{tag}c.{conn}.{q}", f"{tag}d.{conn}.{q}")),
                        ((login, -d), (login, c))))
        else:  # bare: the same bytes as a credit; moves nothing
            out.append(((credit(f"{tag}c.{conn}.{q}", f"{tag}d.{conn}.{q}"),), ()))
    return out


async def drive_conn(streams: list, c: int, host: str, port: int, items: list, go, t: Tally) -> None:
    """Closed loop on one keep-alive connection: send a request, read its whole response, send the next.
    A response with ``Connection: close`` (a server may close a connection after some number of requests)
    is followed by a new connection, as any HTTP client would; its set-up counts in the next latency."""
    import orjson
    import trio
    from time import perf_counter

    loads = orjson.loads
    lat, statuses, moved = t.lat, t.statuses, t.moved
    stream = streams[c]
    buf = b""
    reconnect = False
    await go.wait()
    t.first_send = perf_counter()
    for requests, moves in items:
        t0 = perf_counter()
        good = True
        for req in requests:
            if reconnect:
                await stream.aclose()
                stream = streams[c] = await trio.open_tcp_stream(host, port)
                t.reconnects += 1
                buf, reconnect = b"", False
            await stream.send_all(req)
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionError(f"the server closed connection {c} after {len(lat)} items")
                buf += data
                r = parse_response(buf)
                if r is not None:
                    break
            end, code, body, reconnect = r
            buf = buf[end:]
            status = None
            if code == 200:
                try:
                    status = loads(body).get("status")
                except (ValueError, AttributeError):
                    pass
            if status == "OK":
                t.ok += 1
            else:
                good = False
                key = f"HTTP {code} {status}"
                statuses[key] = statuses.get(key, 0) + 1
                if t.error_sample is None:
                    t.error_sample = f"HTTP {code}: {body[:300].decode(errors='replace')}"
        now = perf_counter()
        lat.append(now - t0)
        t.last_reply = now
        if good:
            for login, micro in moves:
                moved[login] = moved.get(login, 0) + micro


async def run_scenario(spec: dict, cfg: dict, accounts: list[tuple[int, str]]) -> dict:
    """One scenario over ``k`` fresh keep-alive connections; returns its summary."""
    host, k, n_total, port = cfg["host"], cfg["connections"], spec["count"], spec["port"]
    shares = split(n_total, k)
    items = [build_items(spec["kind"], spec["tag"], c, shares[c], accounts, host, port, cfg["wallet_token"])
             for c in range(k)]
    tallies = [Tally() for _ in range(k)]

    def start(nursery, streams: list, go) -> None:
        """One closed-loop task per connection."""
        for c in range(k):
            nursery.start_soon(drive_conn, streams, c, host, port, items[c], go, tallies[c])

    gc.collect()
    failure, cpu_before, cpu_after = await run_connections(host, port, k, spec["limit_s"], cfg.get("pids"), start,
                                                           unwrap=True)
    statuses: dict[str, int] = {}
    moved: dict[int, int] = {}
    for t in tallies:
        for key, v in t.statuses.items():
            statuses[key] = statuses.get(key, 0) + v
        for login, v in t.moved.items():
            moved[login] = moved.get(login, 0) + v
    return {
        "name": spec["name"], "kind": spec["kind"], "target": spec["target"], "info": spec.get("info", False),
        "requests": n_total, "calls": n_total * (2 if spec["kind"] == "round" else 1),
        "ok": sum(t.ok for t in tallies), "errors": sum(statuses.values()), "statuses": statuses,
        "moved": {str(login): v for login, v in moved.items()},
        "reconnects": sum(t.reconnects for t in tallies),
        **summarize(tallies, spec["target"], failure, cpu_before, cpu_after),
    }


async def set_up_accounts(cfg: dict) -> list[tuple[int, str]]:
    """Accounts with an opening balance and a game session each, over the manager TCP API."""
    from syncledger.server.client import connect

    accounts = []
    async with connect(cfg["host"], cfg["tcp_port"], cfg["manager_token"]) as c:
        for i in range(cfg["accounts"]):
            reply = await checked_call(c, "AddUser", {"name": f"player-{i}", "currency": CURRENCY})
            login = reply.data["login"]
            await checked_call(c, "BalanceIn", {"login": login, "amount": OPENING_BALANCE, "comment": "bench"})
            reply = await checked_call(c, "OpenGameSession", {"login": login})
            accounts.append((login, reply.data["sid"]))
    return accounts


async def check_balances(cfg: dict, accounts: list[tuple[int, str]], results: list[dict]) -> dict:
    """Every account's balance must be its opening balance plus what the OK calls moved."""
    from syncledger.server.client import connect

    expected = {login: OPENING_BALANCE * MICRO for login, _ in accounts}
    for r in results:
        for login, v in r["moved"].items():
            expected[int(login)] += v
    bad = []
    async with connect(cfg["host"], cfg["tcp_port"], cfg["manager_token"]) as c:
        for login, _ in accounts:
            reply = await c.call("GetUser", {"login": login})
            got = reply.data["balance"] if reply.ok else None
            if got is None or Decimal(got) * MICRO != expected[login]:
                bad.append(f"{login}: balance {got}, expected {Decimal(expected[login]) / MICRO}")
    return {"ok": not bad, "accounts": len(accounts), "bad": bad}


async def client_main(cfg: dict) -> dict:
    """The --client role: accounts, every scenario in turn, then the balances check."""
    accounts = await set_up_accounts(cfg)
    say(f"accounts {[login for login, _ in accounts]}, {OPENING_BALANCE:,} {CURRENCY} each, a sid each")
    gc.disable()  # a collection over the prebuilt requests would stall the client for milliseconds
    all_results, results = [], []
    for spec in cfg["scenarios"]:
        say(f"{spec['name']}: {spec['count']:,} x {spec['kind']} on port {spec['port']}, "
            f"K={cfg['connections']}")
        r = await run_scenario(spec, cfg, accounts)
        all_results.append(r)
        if not spec.get("warmup"):
            results.append(r)
        say(f"  -> {r['rps']:,.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms, "
            f"not OK {r['errors']}, {cpu_said(r, spec['target'])}")
        if r["failure"]:
            break  # the server is stuck or gone: later scenarios would only wait
    gc.enable()
    balances = await check_balances(cfg, accounts, all_results)
    say(f"balances: {'ok' if balances['ok'] else 'WRONG'} ({balances['accounts']} accounts)")
    return {"results": results, "balances": balances}


# ============================================================================ bare app (--bare-server)

class BareApp:
    """The least an app of server.http can do for a POST: take the body, answer a fixed JSON body."""

    def head(self, request, arrived):
        return None

    def too_large(self, request):
        from syncledger.server.http import Response
        return Response(413, b"{}")

    async def handle(self, request, body: bytes):
        from syncledger.server.http import Response
        return Response(200, BARE_BODY)


async def bare_main(host: str) -> None:
    """The --bare-server role: ``BareApp`` on the server's HTTP driver and limits, until SIGINT/SIGTERM."""
    import logging
    from functools import partial

    import trio

    from syncledger.server.http import HttpServer
    from syncledger.server.limits import Gate
    from syncledger.server.listen import Listener

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    http = HttpServer(BareApp())
    listener = Listener("bare", host, 0, Gate("bare", 100_000, trio.current_time), None, https=False, handshakes=1,
                        handshake_timeout=10, handshake_rate=None)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(http.serve, listener, connections=nursery))
            gc.collect()  # as `syncledger serve` does
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            print(f"listening tcp={host}:{port}", flush=True)
            async for _ in signals:
                http.stop()
                nursery.cancel_scope.cancel()
                break


# ============================================================================ orchestration

def scenarios(args: argparse.Namespace, wallet_port: int, bare_port: int) -> list[dict]:
    """The scenarios, warm-ups first."""
    n = args.count
    limit = max(120.0, n / 200)  # give up on a scenario after this (a stuck server)
    warm = max(200, n // 20)
    base = {"limit_s": limit, "target": "server", "port": wallet_port}
    return [
        {**base, "name": "warm-up rounds", "tag": "w", "kind": "round", "count": warm, "warmup": True},
        {**base, "name": "warm-up bare", "tag": "wb", "kind": "bare", "count": warm, "warmup": True,
         "target": "bare", "port": bare_port},
        {**base, "name": "(s) debits, set-up of (a)", "tag": "a", "kind": "debit", "count": n, "info": True},
        {**base, "name": "(a) credits", "tag": "a/a", "kind": "credit", "count": n},
        # right after (a), so that both see the same machine (others' load comes and goes)
        {**base, "name": "(b) bare app, same HTTP stack", "tag": "b", "kind": "bare", "count": n, "target": "bare",
         "port": bare_port},
        {**base, "name": "(c) rounds debit+credit", "tag": "c", "kind": "round", "count": max(1, n // 2)},
    ]


def print_report(out: dict, args: argparse.Namespace, server_exit: int | None, bare_exit: int | None,
                 verify_out: str, verify_ok: bool, cmdline: str) -> bool:
    """The final table, ratios, target and balances check; -> whether the run was clean."""
    results, balances = out.get("results", []), out.get("balances")
    width = 122
    print_header(width, "syncledger wallet HTTP benchmark",
                 f"K={args.connections} HTTP/1.1 keep-alive connections, one request at a time on each (closed loop); "
                 f"{args.count:,} requests per scenario, {args.accounts} accounts",
                 "latency: from the send of a request to the last byte of its response ((c): of the whole round)",
                 "not OK: calls not answered HTTP 200 status OK, or not answered; reconn: new connections after the "
                 "server's Connection: close")
    print(f"{'scenario':<28} {'requests':>9} {'not OK':>6} {'achieved/s':>11} {'calls/s':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'reconn':>6}  " + CPU_HEADER)
    print("-" * width)
    for r in results:
        bad = r["errors"] + (r["calls"] - r["ok"] - r["errors"])
        calls_rate = r["rps"] * r["calls"] / r["requests"] if r["requests"] else 0.0
        print(f"{r['name']:<28} {r['requests']:>9,} {bad:>6} {r['rps']:>11,.0f} {calls_rate:>8,.0f} "
              f"{fmt_ms(r['p50_ms']):>7} {fmt_ms(r['p99_ms']):>7} {fmt_ms(r['max_ms']):>7} {r['reconnects']:>6}  "
              + cpu_columns(r))
    print("-" * width)
    for r in results:
        if r["statuses"]:
            print(f"{r['name']}: not OK: " + ", ".join(f"{k} x{v}" for k, v in sorted(r["statuses"].items())))
        if r["error_sample"]:
            print(f"{r['name']}: first bad response: {r['error_sample']}")
    named = {r["name"].split(" ")[0]: r for r in results}
    a, b, c = (named.get(x) for x in ("(a)", "(b)", "(c)"))
    if a and b and b["rps"]:
        print(f"{'ratio credits (a) / bare (b)':<36} {a['rps'] / b['rps']:>7.3f}")
    if c and b and b["rps"]:
        print(f"{'ratio round calls (c) / bare (b)':<36} {2 * c['rps'] / b['rps']:>7.3f}")
    warn_busy(results)
    print("-" * width)
    if a:
        met = a["rps"] >= TARGET_CREDITS and not a["failure"] and a["ok"] == a["requests"]
        print(f"target: credits >= {TARGET_CREDITS:,}/s over HTTP keep-alive {'met' if met else 'NOT MET':>20}   "
              f"({a['rps']:,.0f}/s = {a['rps'] / TARGET_CREDITS:.0%} of it)")
    if balances:
        print(f"balances read back (GetUser) = opening + OK credits - OK debits: "
              f"{'ok' if balances['ok'] else 'WRONG'} ({balances['accounts']} accounts)"
              + (" -- a scenario failed: calls in flight then have an unknown outcome"
                 if not balances["ok"] and any(r["failure"] for r in results) else "")
              + ("".join(f"\n  {line}" for line in balances["bad"])))
    print(f"server exit code after SIGTERM: {server_exit} ({'ok' if server_exit == 0 else 'FAILED'}); "
          f"bare HTTP server: {bare_exit}")
    print_footer(width, verify_out, cmdline)
    return (server_exit == 0 and verify_ok and bool(balances and balances["ok"]) and bool(results)
            and all(not r["failure"] and r["errors"] == 0 and r["ok"] == r["calls"] for r in results))


def orchestrate(args: argparse.Namespace) -> int:
    """Server, bare HTTP server and client processes; the report; -> the exit code."""
    wallet_token = secrets.token_urlsafe(24)
    run = Run(args, "syncledger-wallet-bench-", SYNCLEDGER_WALLET_TOKEN=wallet_token)
    server, ports = run.start_server("--host", args.host, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                                     "--admin-port", "0")
    bare, bare_ports = run.start_listener(__file__, "--bare-server", "bare", "bare HTTP server")
    print(f"[bench] server pid {server.pid} (tcp {ports['tcp']}, wallet {ports.get('wallet')}), "
          f"bare HTTP pid {bare.pid} (port {bare_ports['tcp']})", flush=True)
    run.start_py_spy(server.pid)
    cfg = {"pids": {"server": server.pid, "bare": bare.pid}, "host": args.host, "tcp_port": ports["tcp"],
           "manager_token": run.token, "wallet_token": wallet_token, "connections": args.connections,
           "accounts": args.accounts, "scenarios": scenarios(args, ports["wallet"], bare_ports["tcp"])}
    out: dict = {}
    try:
        out = run.run_client(__file__, cfg) or {}
    finally:
        bare_exit, server_exit = run.stop(bare, server)
    verify_out, verify_ok = run.verify()
    clean = print_report(out, args, server_exit, bare_exit, verify_out, verify_ok, run.cmdline)
    run.clean_up()
    return 0 if clean else 1


def main() -> int:
    """Parse the options; run the role asked for, or the whole benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", "-k", type=int, default=16, help="keep-alive connections (default 16)")
    p.add_argument("--count", "-n", type=int, default=None,
                   help="requests per scenario, (c): rounds = count/2 (default 20000; 1000 with --quick)")
    p.add_argument("--accounts", type=int, default=8, help="players the calls are spread over (default 8)")
    add_common_args(p)
    p.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    role = run_role(args, client_main, bare_main, args.bare_server)
    if role is not None:
        return role
    if args.count is None:
        args.count = 1_000 if args.quick else 20_000
    if args.connections < 1 or args.count < 1 or args.accounts < 1:
        p.error("--connections, --count and --accounts must be at least 1")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
