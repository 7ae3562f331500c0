"""End to end: the real ``syncledger`` command as a separate process on real sockets, stopped by SIGTERM."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal

import pytest
import trio

from server.client import connect

CLI = [sys.executable, "-m", "server.cli"]


def run_cli(*args: str, env: dict | None = None) -> str:
    return subprocess.run([*CLI, *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


async def start_server(db: str, env: dict) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([*CLI, "serve", "--db", db, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = await trio.to_thread.run_sync(proc.stdout.readline)
    match = re.fullmatch(r"listening tcp=127\.0\.0\.1:(\d+) ws=127\.0\.0\.1:(\d+)( wallet=\S+)?\n", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(match[1]), int(match[2])


async def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(proc.wait)


async def test_serve_credit_sync_sigterm_and_verify(tmp_path):
    db = str(tmp_path / "e2e.db")
    env = {**os.environ, "SYNCLEDGER_SECRET": "e2e-secret-e2e-secret-e2e-secret-e2e"}
    run_cli("manager", "add", "--db", db, "--login", "7", "--password", "pw", "--session", "MANAGER", env=env)
    token = run_cli("token", "--db", db, "--login", "7", env=env)
    proc, port, _ = await start_server(db, env)
    try:
        async with connect("127.0.0.1", port, token) as c:
            login = (await c.call("AddUser", {"name": "e2e", "currency": "EUR"})).data["login"]
            sync = await c.call("CreditInSync", {"login": login, "amount": Decimal("300.0"),
                                                 "comment": "Promotion credit"}, ext_id="credit-req-1001")
            assert sync.ok and sync.data["cmd"] == 7 and sync.data["profit"] == Decimal("300.0")
            # SIGTERM while requests are in flight: everything acknowledged stays, everything is answered
            calls = [c.start("BalanceIn", {"login": login, "amount": 1}, ext_id=f"b{i}") for i in range(2000)]
            await trio.sleep(0.05)
            code = await stop(proc)
            replies = []
            for call in calls:
                try:
                    replies.append(await call.reply())
                except Exception:
                    replies.append(None)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read()
    acknowledged = sum(1 for r in replies if r is not None and r.ok)
    assert None not in replies  # every request sent before SIGTERM got an answer
    assert all(r.ok or (r.status, r.error) == (503, "SHUTTING_DOWN") for r in replies)
    out = run_cli("verify", "--db", db)
    assert out.startswith("ok:")
    # restart: what was acknowledged is there, exactly once
    proc, port, _ = await start_server(db, env)
    try:
        async with connect("127.0.0.1", port, token) as c:
            user = await c.call("GetUser", {"login": login})
            assert user.data["balance"] >= acknowledged
            retry = await c.call("CreditInSync", {"login": login, "amount": Decimal("300.0"),
                                                  "comment": "Promotion credit"}, ext_id="credit-req-1001")
            assert retry.ok and retry.data["order"] == sync.data["order"]
            assert (await c.call("GetUser", {"login": login})).data["credit"] == Decimal("300.0")
    finally:
        assert await stop(proc) == 0


def test_verify_cli_names_a_tampered_row(tmp_path):
    import sqlite3

    from ledger import AddAccount, Finance, FinanceRequest, Store

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
    from ledger import AddAccount, Store

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
    (In-process: signals go to the main thread; shutdown is slowed so the second one lands inside it.)"""
    import threading
    import time

    from server import cli
    from server.app import Server

    real_shutdown = Server.shutdown

    async def slow_shutdown(self):
        await trio.sleep(0.5)
        await real_shutdown(self)

    monkeypatch.setattr(Server, "shutdown", slow_shutdown)

    def signal_twice():
        time.sleep(1.5)  # started by then
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # inside the shutdown
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=signal_twice, daemon=True).start()
    argv = ["serve", "--db", str(tmp_path / "twice.db"), "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0"]
    threshold = gc.get_threshold()
    try:
        assert cli.main(argv) == 0
    except KeyboardInterrupt:
        pytest.fail("the second signal escaped as KeyboardInterrupt after a clean shutdown")
    finally:
        gc.unfreeze()  # serve tunes the collector for its process; give the test process its own back
        gc.set_threshold(*threshold)
