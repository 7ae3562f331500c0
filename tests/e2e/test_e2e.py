"""End to end: the real ``syncledger`` command as a separate process on real sockets, stopped by SIGTERM."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
from contextlib import AsyncExitStack, closing
from decimal import Decimal

import pytest
import trio

from syncledger.ledger import engine
from syncledger.server.client import Call, ConnectionLost, Reply, connect
from tests.pgcluster import backend, every_backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)

CLI = [sys.executable, "-P", "-m", "syncledger.server.cli"]  # -P: the current folder never shadows the package


def run_cli(*args: str, env: dict | None = None) -> str:
    return subprocess.run([*CLI, *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


async def spawn_server(db: str, env: dict, cluster: bool = False) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([*CLI, "serve", "--db", db, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                             "--admin-port", "0", *(["--cluster"] if cluster else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = await trio.to_thread.run_sync(proc.stdout.readline)
    match = re.fullmatch(r"listening tcp=127\.0\.0\.1:(\d+) ws=127\.0\.0\.1:(\d+) wallet=\S+ admin=127\.0\.0\.1:\d+\n", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(match[1]), int(match[2])


async def spawn_servers(db: str, env: dict, nodes: int) -> list[tuple[subprocess.Popen, int, int]]:
    """One server, or that many ``serve --cluster`` nodes started at once."""
    servers: list[tuple[subprocess.Popen, int, int]] = []

    async def one() -> None:
        servers.append(await spawn_server(db, env, nodes > 1))
    async with trio.open_nursery() as starting:
        for _ in range(nodes):
            starting.start_soon(one)
    return servers


async def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(proc.wait)


@every_backend
async def test_serve_credit_sync_sigterm_and_verify(backend, ledger_db):
    """The ``syncledger`` command on a ledger file and real sockets: a stored manager's token, AddUser,
    CreditInSync; then SIGTERM while a stream of pipelined BalanceIn is in flight (at most 500 unanswered
    at a time, sent until the server closes the connection; the signal goes once 200 are answered, so
    it always lands mid-stream). The contract, whatever the timing: exit 0; ``syncledger verify`` ok;
    every request answered 200 is in the ledger, every one answered 503 SHUTTING_DOWN is not; a request
    left unanswered (the server had stopped reading, or its answer was lost with the connection) may be
    either. After a restart, nothing acknowledged is lost: the balance is exactly what the ledger
    applied, and retrying every request with its extID applies each exactly once. No count of 200s or
    503s is asserted: those depend on timing. On a ledger file, on PostgreSQL, and on two ``serve --cluster``
    nodes: a stream into each, the nodes stopped one after the other (the second serving on meanwhile), the
    reads, the …Sync retry and half of the retries on the node that did not take them first."""
    db = ledger_db
    nodes = 2 if backend == "cluster" else 1
    env = {**os.environ, "SYNCLEDGER_SECRET": "e2e-secret-e2e-secret-e2e-secret-e2e"}
    run_cli("manager", "add", "--db", db, "--login", "7", "--password", "pw-long-enough-1", "--session", "MANAGER", env=env)
    token = run_cli("token", "--db", db, "--login", "7", env=env)
    servers = await spawn_servers(db, env, nodes)
    replies: dict[str, Reply | None] = {}  # extID -> its answer (None: none came before the close)
    try:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect("127.0.0.1", port, token)) for _, port, _ in servers]
            c = clients[0]
            login = (await c.call("AddUser", {"name": "e2e", "currency": "EUR"})).data["login"]
            sync = await c.call("CreditInSync", {"login": login, "amount": Decimal("300.0"),
                                                 "comment": "Promotion credit"}, ext_id="credit-req-1001")
            assert sync.ok and sync.data["cmd"] == 7 and sync.data["profit"] == Decimal("300.0")
            busy = trio.Event()

            async def answer(call: Call, window: trio.Semaphore) -> None:
                try:
                    replies[call.ext_id] = await call.reply()
                except ConnectionLost:
                    replies[call.ext_id] = None
                finally:
                    window.release()
                if len(replies) >= 200:
                    busy.set()

            async def send_until_closed(c, node: int) -> None:
                window = trio.Semaphore(500)
                async with trio.open_nursery() as waiting:
                    for i in range(1_000_000):
                        await window.acquire()
                        try:
                            call = c.start("BalanceIn", {"login": login, "amount": 1}, ext_id=f"b{node}.{i}")
                        except ConnectionLost:
                            return
                        waiting.start_soon(answer, call, window)

            with trio.fail_after(120):  # a guard against a hang, far above the run's ~1 s
                async with trio.open_nursery() as nursery:
                    for node, client in enumerate(clients):
                        nursery.start_soon(send_until_closed, client, node)
                    await busy.wait()
                    codes = [await stop(proc) for proc, _, _ in servers]
    finally:
        for proc, _, _ in servers:
            if proc.poll() is None:
                proc.kill()
    assert codes == [0] * nodes, [proc.stderr.read() for proc, _, _ in servers]
    assert all(r is None or r.ok or (r.status, r.error) == (503, "SHUTTING_DOWN") for r in replies.values()), \
        {(r.status, r.error) for r in replies.values() if r is not None}
    acknowledged = {k for k, r in replies.items() if r is not None and r.ok}
    refused = {k for k, r in replies.items() if r is not None and not r.ok}
    out = run_cli("verify", "--db", db)
    assert out.startswith("ok:")
    with closing(engine.connect_ro(db)) as ledger:
        applied = {row[0] for row in ledger.execute(
            "SELECT ext_id FROM finance WHERE login = ? AND ext_id LIKE 'b%'", (login,))}
    print(f"{len(replies)} sent: {len(acknowledged)} answered 200, {len(refused)} answered 503, "
          f"{len(replies) - len(acknowledged) - len(refused)} unanswered; {len(applied)} applied")
    assert acknowledged <= applied, f"acknowledged but not in the ledger: {sorted(acknowledged - applied)[:10]}"
    assert not refused & applied, f"answered 503 yet applied: {sorted(refused & applied)[:10]}"
    assert applied <= set(replies)
    # restart: what was acknowledged is there, exactly once; every request retried applies once in all
    servers = await spawn_servers(db, env, nodes)
    try:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect("127.0.0.1", port, token)) for _, port, _ in servers]
            user = await clients[-1].call("GetUser", {"login": login})
            assert user.data["balance"] == len(applied)
            retry = await clients[-1].call("CreditInSync", {"login": login, "amount": Decimal("300.0"),
                                                            "comment": "Promotion credit"}, ext_id="credit-req-1001")
            assert retry.ok and retry.data["order"] == sync.data["order"]
            calls = [clients[i % nodes].start("BalanceIn", {"login": login, "amount": 1}, ext_id=k)
                     for i, k in enumerate(replies)]
            assert all([(await call.reply()).ok for call in calls])
            user = await clients[0].call("GetUser", {"login": login})
            assert (user.data["credit"], user.data["balance"]) == (Decimal("300.0"), len(replies))
    finally:
        assert [await stop(proc) for proc, _, _ in servers] == [0] * nodes


def test_verify_cli_names_a_tampered_row(tmp_path):
    import sqlite3

    from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store

    db = str(tmp_path / "t.db")
    store = Store(db)
    store.apply_batch([AddAccount("a", "EUR", 0)])
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 5_000_000), now=1) for _ in range(3)])
    store.close()
    assert run_cli("verify", "--db", db).startswith("ok:")
    raw = sqlite3.connect(db)
    raw.execute("DROP TRIGGER finance_no_update")
    raw.execute("UPDATE finance SET amount = 6000000, delta = 6000000 WHERE id = 2")
    raw.commit()
    raw.close()
    result = subprocess.run([*CLI, "verify", "--db", db], capture_output=True, text=True)
    assert result.returncode == 1 and "finance row 2" in result.stderr


def test_session_open_cli(tmp_path):
    from syncledger.ledger import AddAccount, Store

    db = str(tmp_path / "s.db")
    store = Store(db)
    store.apply_batch([AddAccount("a", "EUR", 0)])
    store.close()
    sid = run_cli("session", "open", "--db", db, "--login", "1000")
    assert len(sid) >= 20
    missing = subprocess.run([*CLI, "session", "open", "--db", db, "--login", "5"], capture_output=True, text=True)
    assert missing.returncode == 1 and "no account 5" in missing.stderr


def test_a_second_signal_during_shutdown_still_exits_0(tmp_path, monkeypatch):
    """Ctrl-C twice, or a supervisor forwarding the same signal: the shutdown stays clean and exits 0.
    (In-process: signals go to the main thread. A helper thread sends the first SIGINT once the server
    is listening, the second once the shutdown has begun; the shutdown waits until the second one has
    been sent, so it always lands inside it. No fixed sleeps: the same on a loaded machine.)"""
    import threading

    from syncledger.server import app, cli
    from syncledger.server.app import Server

    listening, shutting_down, second_sent = threading.Event(), threading.Event(), threading.Event()
    real_serve, real_shutdown = app.serve, Server.shutdown

    async def serve_and_tell(config, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(real_serve, config)
            task_status.started(server)
            listening.set()

    async def slow_shutdown(self):
        shutting_down.set()
        await trio.to_thread.run_sync(second_sent.wait, abandon_on_cancel=True)
        await trio.sleep(0.05)  # the signal's Python-level handler runs on the main thread meanwhile
        await real_shutdown(self)

    monkeypatch.setattr(app, "serve", serve_and_tell)  # (the CLI imports it when serve runs)
    monkeypatch.setattr(Server, "shutdown", slow_shutdown)

    def signal_twice():
        if listening.wait(60):
            os.kill(os.getpid(), signal.SIGINT)
            if shutting_down.wait(60):
                os.kill(os.getpid(), signal.SIGINT)
        second_sent.set()

    threading.Thread(target=signal_twice, daemon=True).start()
    argv = ["serve", "--db", str(tmp_path / "twice.db"), "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
            "--admin-port", "0"]
    threshold = gc.get_threshold()
    try:
        assert cli.main(argv) == 0
    except KeyboardInterrupt:
        pytest.fail("the second signal escaped as KeyboardInterrupt after a clean shutdown")
    finally:
        gc.unfreeze()  # serve tunes the collector for its process; give the test process its own back
        gc.set_threshold(*threshold)
    assert listening.is_set() and shutting_down.is_set()


async def test_sighup_stops_serve_cleanly_and_python_m_syncledger_is_the_command(tmp_path):
    """A SIGHUP (the terminal closed, ``systemctl reload`` by mistake) stops ``serve`` as SIGTERM does: exit 0,
    everything acknowledged in the ledger; ``python -m syncledger`` is the same command, ``--version`` its version."""
    db = str(tmp_path / "hup.db")
    env = {**os.environ, "SYNCLEDGER_SECRET": "e2e-secret-e2e-secret-e2e-secret-e2e"}
    run_cli("manager", "add", "--db", db, "--login", "7", "--password", "pw-long-enough-1", "--session", "MANAGER", env=env)
    token = run_cli("token", "--db", db, "--login", "7", env=env)
    proc, port, _ = await spawn_server(db, env)
    try:
        async with connect("127.0.0.1", port, token) as c:
            login = (await c.call("AddUser", {"name": "hup", "currency": "EUR"})).data["login"]
            assert (await c.call("CreditIn", {"login": login, "amount": 5, "comment": "hup"}, ext_id="hup-1")).ok
        proc.send_signal(signal.SIGHUP)
        with trio.fail_after(30):
            assert await trio.to_thread.run_sync(proc.wait) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    module = [sys.executable, "-P", "-m", "syncledger"]
    assert subprocess.run([*module, "verify", "--db", db], capture_output=True, text=True).stdout.startswith("ok: 1 ")
    from importlib.metadata import version
    shown = subprocess.run([*module, "--version"], capture_output=True, text=True, check=True).stdout
    assert shown == f"syncledger {version('syncledger')}\n"
