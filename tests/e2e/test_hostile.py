"""A local user cannot become ADMIN, and a revoked manager's token stops working at once (issue 12):
files made 0600, the signing secret kept outside the database, key versions, password rules."""

from __future__ import annotations

import io
import os
import sqlite3
import stat

import pytest
import trio

from syncledger.ledger import Store
from syncledger.server import auth
from syncledger.server.ops import managers
from syncledger.server.auth import SESSION_ADMIN, SESSION_DEALER, SESSION_MANAGER
from syncledger.server.cli import main
from syncledger.server.client import ConnectionLost, open_client
from syncledger.server.testing import connect_memory


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_ledger_and_its_files_are_the_owners_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNCLEDGER_SECRET", raising=False)
    monkeypatch.setattr(os, "umask", os.umask)  # (whatever the umask, the files are 0600)
    old = os.umask(0o022)
    try:
        path = str(tmp_path / "l.db")
        assert main(["manager", "add", "--db", path, "--login", "1", "--password", "correct-horse-1",
                     "--session", "ADMIN"]) == 0
        assert main(["token", "--db", path, "--login", "1"]) == 0
    finally:
        os.umask(old)
    for name in (path, path + "-wal", path + "-shm", path + ".key"):
        if os.path.exists(name):
            assert mode(name) == 0o600, name
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM meta WHERE key = 'secret'").fetchone()[0] == 0  # not in the ledger
    finally:
        db.close()


def test_a_secret_an_older_release_kept_in_the_database_moves_out_once(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNCLEDGER_SECRET", raising=False)
    path = str(tmp_path / "old.db")
    store = Store(path)
    store.db.execute("INSERT INTO meta VALUES ('secret', 'the-old-secret-from-the-database-0123456')")
    assert auth.load_secret(path, store.db) == "the-old-secret-from-the-database-0123456"  # tokens stay valid
    assert store.db.execute("SELECT count(*) FROM meta WHERE key = 'secret'").fetchone()[0] == 0
    assert open(auth.key_path(path)).read().strip() == "the-old-secret-from-the-database-0123456"
    assert auth.load_secret(path, store.db) == "the-old-secret-from-the-database-0123456"
    store.close()


def test_serve_refuses_a_key_file_others_can_read(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SYNCLEDGER_SECRET", raising=False)
    path = str(tmp_path / "l.db")
    store = Store(path)
    managers.add_manager(store.db, 1, "a-good-password-1", SESSION_ADMIN, 0)
    auth.load_secret(path, store.db)
    store.close()
    os.chmod(auth.key_path(path), 0o644)
    assert main(["serve", "--db", path, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                 "--admin-port", "0"]) == 2
    assert main(["token", "--db", path, "--login", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("chmod 600" in line for line in err)


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import socket
    monkeypatch.setenv("SYNCLEDGER_SECRET", "s" * 32)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        assert main(["serve", "--db", str(tmp_path / "l.db"), "--tcp-port", "0", "--ws-port", "0",
                     "--wallet-port", "0", "--admin-port", str(port)]) == 2
    finally:
        held.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"syncledger: cannot listen on 127.0.0.1:{port}: Address already in use", err
    assert not any("Traceback" in line for line in err)


async def _call(srv, token: str) -> tuple[int, str | None]:
    async with open_client(connect_memory(srv), token) as c:
        reply = await c.call("GetUsers", {})
    return reply.status, reply.error


async def test_tokens_are_revoked_at_once_when_a_manager_changes_or_goes(start_server, tmp_path, autojump_clock):
    path = str(tmp_path / "l.db")
    store = Store(path)
    managers.add_manager(store.db, 7, "first-password-7", SESSION_ADMIN, 0)
    store.close()
    srv = await start_server(db=path, threaded=False)
    async with open_client(connect_memory(srv)) as c:
        admin_token = (await c.login(7, "first-password-7")).data["token"]
    assert await _call(srv, admin_token) == (200, None)
    db = sqlite3.connect(path, isolation_level=None)  # the operator's CLI, another process
    managers.add_manager(db, 7, "second-password-7", SESSION_DEALER, 1)  # re-added as DEALER
    await trio.sleep(0.3)  # within the keys' refresh period
    assert await _call(srv, admin_token) == (401, "TOKEN_REVOKED")
    async with open_client(connect_memory(srv)) as c:
        assert (await c.login(7, "first-password-7")).status == 401
        dealer_token = (await c.login(7, "second-password-7")).data["token"]
    assert await _call(srv, dealer_token) == (200, None)
    assert managers.remove_manager(db, 7) and not managers.remove_manager(db, 7)
    await trio.sleep(0.3)
    assert await _call(srv, dealer_token) == (401, "TOKEN_REVOKED")
    async with open_client(connect_memory(srv)) as c:
        assert (await c.login(7, "second-password-7")).status == 401  # a removed manager cannot log in
    forged = srv.tokens.issue(99, SESSION_ADMIN)[0]  # signed with the secret, for no manager at all
    assert await _call(srv, forged) == (401, "TOKEN_REVOKED")
    db.close()


async def test_revocation_survives_a_restart(start_server, tmp_path, autojump_clock):
    path = str(tmp_path / "l.db")
    store = Store(path)
    managers.add_manager(store.db, 7, "first-password-7", SESSION_MANAGER, 0)
    store.close()
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, db=path, threaded=False)
        token = srv.tokens.issue(7, SESSION_MANAGER, kv=srv.keys.versions[7])[0]
        assert await _call(srv, token) == (200, None)
        nursery.cancel_scope.cancel()
    store = Store(path)
    managers.remove_manager(store.db, 7)
    store.close()
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, db=path, threaded=False)
        assert await _call(srv, token) == (401, "TOKEN_REVOKED")
        nursery.cancel_scope.cancel()


def test_passwords_come_from_stdin_or_a_prompt_and_are_long(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "l.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("a-password-from-stdin\n"))
    assert main(["manager", "add", "--db", path, "--login", "3", "--password-stdin"]) == 0
    store = Store(path)
    assert managers.get_manager(store.db, 3) is not None
    store.close()
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["manager", "add", "--db", path, "--login", "4", "--password-stdin"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, nothing given: no silent default
    assert main(["manager", "add", "--db", path, "--login", "5"]) == 2
    err = capsys.readouterr().err
    assert "at least 12 characters" in err and "--password-stdin" in err
    assert main(["manager", "remove", "--db", path, "--login", "3"]) == 0
    assert main(["manager", "remove", "--db", path, "--login", "3"]) == 1


async def _login(srv, password: str):
    async with open_client(connect_memory(srv)) as c:
        return await c.call("Login", {"login": 1, "password": password}, token=None)


async def test_failed_logins_are_throttled_and_logged(mem_server, autojump_clock, caplog):
    caplog.set_level("WARNING", logger="syncledger")
    from syncledger.server.testing import add_test_manager
    add_test_manager(mem_server, 1)
    async with open_client(connect_memory(mem_server)) as c:
        answers = [(await c.call("Login", {"login": 1, "password": f"guess-{i}"}, token=None)) for i in range(6)]
        assert [a.status for a in answers] == [401] * 5 + [429]  # the sixth try waits
        assert "retry in 1 s" in answers[5].message
        with pytest.raises(ConnectionLost):  # and a throttled, unauthenticated connection is closed
            await c.call("Login", {"login": 1, "password": "guess-6"}, token=None)
    await trio.sleep(1.01)
    assert (await _login(mem_server, "guess-again")).status == 401
    waits = []
    for _ in range(4):  # each further failure doubles the wait
        refused = await _login(mem_server, "x")
        waits.append(int(refused.message.rsplit("in ", 1)[1].split()[0]))
        await trio.sleep(waits[-1])
        assert (await _login(mem_server, "guess")).status == 401
    assert waits == [2, 4, 8, 16]
    failures = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
    assert len(failures) == 10 and all("from memory" in line for line in failures)
    assert not any("guess" in r.getMessage() for r in caplog.records)  # never the password


async def test_concurrent_logins_from_one_address_cannot_outrun_the_throttle(start_server):
    """Forty tries at once from one address: only the free five are hashed, the rest wait (429)."""
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, threaded=True)
        from syncledger.server.testing import add_test_manager
        add_test_manager(srv, 1)
        statuses = []

        async def one(i: int) -> None:
            statuses.append((await _login(srv, f"guess-{i}")).status)

        async with trio.open_nursery() as tries:
            for i in range(40):
                tries.start_soon(one, i)
        assert sorted(statuses) == [401] * 5 + [429] * 35
        nursery.cancel_scope.cancel()


def test_the_throttle_forgets_and_stays_bounded():
    from syncledger.server.auth import LoginThrottle
    now = [0.0]
    t = LoginThrottle(lambda: now[0], free=2, window=100, size=3)
    for _ in range(3):
        t.failed("a")
    assert t.wait("a") == 2.0
    now[0] = 150  # past the window: forgotten
    assert t.wait("a") == 0
    for address in "bcdef":
        t.failed(address)
    assert len(t._failures) <= 3


async def test_each_listener_has_a_connection_cap_and_refusals_are_logged_once_a_second(start_server,
                                                                                         caplog):
    caplog.set_level("WARNING", logger="syncledger.limits")
    srv = await start_server(max_connections=3, wallet_token="t")
    for name, port in zip(srv.ports._fields, srv.ports):  # tcp, ws, wallet, admin
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        await trio.sleep(0.1)
        for _ in range(20):  # over the cap: closed at once
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            with trio.fail_after(5):
                assert await extra.receive_some(10) == b""
            await extra.aclose()
        await held[0].aclose()
        await trio.sleep(0.1)
        again = await trio.open_tcp_stream("127.0.0.1", port)  # room again
        with trio.move_on_after(0.3) as still_open:
            await again.receive_some(10)
        assert still_open.cancelled_caught, name
        for s in [again, *held[1:]]:
            await s.aclose()
        await trio.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records]
    assert 4 <= len(lines) <= 8 and all("at the cap of 3" in line for line in lines), lines  # not one per refusal


def test_the_default_cap_fits_the_descriptor_limit():
    from syncledger.server.limits import default_cap, raise_descriptor_limit
    limit = raise_descriptor_limit()
    import resource
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == limit
    assert 3 * default_cap(limit) + 200 <= max(limit, 3 * 16 + 200)


# ---- memory per client is bounded in bytes


def _line(command: str, data: dict, token: str, ext_id: str) -> bytes:
    import json
    return json.dumps({"command": command, "extID": ext_id, "data": data, "__token": token}).encode() + b"\n"


async def _account_with_trades(srv, n: int) -> int:
    from syncledger.server.testing import Harness
    h = Harness(srv)
    async with h.client() as c:
        login = await h.add_account(c)
        calls = [c.start("BalanceIn", {"login": login, "amount": 1, "comment": "x" * 200}) for _ in range(n)]
        for call in calls:
            assert (await call.reply()).ok
    return login


async def test_a_client_that_pipelines_reads_without_reading_is_dropped_at_a_byte_cap(start_server, autojump_clock,
                                                                                      caplog):
    caplog.set_level("INFO", logger="syncledger")
    from syncledger.server.testing import Harness
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, outbox_bytes=1 << 20)
        login = await _account_with_trades(srv, 500)  # GetTrades answers ~190 KB
        token = Harness(srv).token
        stream = connect_memory(srv, lockstep=True)  # the server's writes wait for reads that never come
        for i in range(200):
            try:
                await stream.send_all(_line("GetTrades", {"login": login}, token, f"t{i}"))
            except trio.BrokenResourceError:
                break
            await trio.sleep(0.01)
        await trio.sleep(1)
        conns = [c for c in srv.connections if c.closed_reason is None]
        assert all(c.outbox.buffered <= c.outbox_bytes for c in srv.connections)
        assert "too many unread bytes" in caplog.text and not conns
        nursery.cancel_scope.cancel()


async def test_an_answer_over_the_cap_is_refused_with_a_clear_error(start_server, autojump_clock):
    from syncledger.server.testing import Harness
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, outbox_bytes=200_000)
        login = await _account_with_trades(srv, 500)
        async with Harness(srv).client() as c:
            big = await c.call("GetTrades", {"login": login})
            assert (big.status, big.error) == (400, "REPLY_TOO_LARGE") and "from/to" in big.message
            assert (await c.call("GetTrades", {"login": login, "from": 0, "to": 0})).ok  # the connection goes on
        nursery.cancel_scope.cancel()


async def test_a_replaying_subscriber_that_takes_nothing_is_dropped(start_server, autojump_clock, caplog):
    caplog.set_level("INFO", logger="syncledger")
    from syncledger.server.testing import Harness
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, outbox_bytes=100_000, replay_stall=30)
        await _account_with_trades(srv, 2000)
        stream = connect_memory(srv, lockstep=True)
        await stream.send_all(_line("Subscribe", {"chanels": ["trade:event"], "from_seq": 0}, Harness(srv).token,
                                    "s"))
        start = trio.current_time()
        while not any("while replaying" in r.getMessage() for r in caplog.records):
            await trio.sleep(1)
            assert trio.current_time() - start < 60
        assert 30 <= trio.current_time() - start <= 32
        nursery.cancel_scope.cancel()


async def test_a_replay_holds_little_memory_for_a_client_that_does_not_read(start_server, autojump_clock, monkeypatch):
    """Replayed events wait in the outbox only up to REPLAY_BYTES (and one piece of 100 lines), however large
    the outbox may grow for replies: two hundred stalled replays hold 200 x REPLAY_BYTES (and the rest of the
    page each is at), not 200 x half the outbox."""
    from syncledger.server.core import broker
    from syncledger.server.testing import Harness
    monkeypatch.setattr(broker, "REPLAY_BYTES", 200_000)
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, outbox_bytes=16 << 20, replay_stall=30)
        await _account_with_trades(srv, 2000)
        stream = connect_memory(srv, lockstep=True)
        await stream.send_all(_line("Subscribe", {"chanels": ["trade:event"], "from_seq": 0}, Harness(srv).token,
                                    "s"))
        await trio.sleep(5)  # the replay has filled what it may, and waits
        (conn,) = [c for c in srv.connections if c.channels]
        assert 100_000 < conn.outbox.buffered < 200_000 + 50_000  # at most one piece (100 lines) past the bound
        nursery.cancel_scope.cancel()


async def test_a_replay_overtaken_by_new_events_pages_on_and_misses_nothing(start_server, autojump_clock, monkeypatch):
    from syncledger.server.core import broker
    from syncledger.server.testing import Harness
    monkeypatch.setattr(broker, "REPLAY_PAGE", 10)
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True)
        h = Harness(srv)
        async with h.client() as writer, h.client() as reader:
            login = await h.add_account(writer)

            async def keep_writing() -> None:
                for _ in range(200):
                    await writer.call("BalanceIn", {"login": login, "amount": 1})
                    await trio.sleep(0.001)
            nursery.start_soon(keep_writing)
            await trio.sleep(0.05)
            assert (await reader.call("Subscribe", {"chanels": ["trade:event"], "from_seq": 0})).ok
            seqs = []
            while len(seqs) < 200:
                seqs.append((await reader.receive_event())["seq"])
                await trio.sleep(0.002)  # a slower reader than the writer: its replay is overtaken
        assert seqs == list(range(1, 201))
        nursery.cancel_scope.cancel()


# ---- readers never hold the writer


async def test_a_stuck_read_does_not_hold_the_writer(server, monkeypatch):
    """Reads run on read-only connections of their own: a read that takes its time (a big GetTrades, a
    replay page) never delays a commit. (They used to hold the lock that batches take.)"""
    import threading
    from syncledger.ledger import reads
    from tests.conftest import add_account, tcp_client
    release = threading.Event()
    real = reads.records

    def slow_records(*args, **kw):
        release.wait(10)
        return real(*args, **kw)
    monkeypatch.setattr(reads, "records", slow_records)
    async with tcp_client(server) as c, tcp_client(server) as reader:
        login = await add_account(c)
        stuck = reader.start("GetTrades", {"login": login})
        await trio.sleep(0.1)
        with trio.fail_after(5):  # in the old design: every one waits for the stuck read
            for _ in range(20):
                assert (await c.call("CreditInSync", {"login": login, "amount": 1, "comment": "c"})).ok
            assert (await c.call("GetUser", {"login": login})).data["credit"] == 20  # reads go on too
        release.set()
        trades = await stuck.reply()
        assert trades.ok and len(trades.data["trades"]) in range(21)  # a snapshot, old or new


def test_connection_lines_are_logged_at_a_bounded_rate():
    from syncledger.server.limits import LineBudget, left_out
    now = [0.0]
    budget = LineBudget(3, lambda: now[0])
    taken = [budget.take() for _ in range(10)]
    assert taken == [0, 0, 0] + [None] * 7  # a flood: three lines this second
    now[0] = 1.0
    assert budget.take() == 7 and left_out(7) == " (7 similar lines left out)"  # the next says what was left out
    assert budget.take() == 0 and left_out(0) == ""


def test_new_connections_from_one_address_are_rate_limited(caplog):
    from syncledger.server.limits import Gate
    caplog.set_level("WARNING", logger="syncledger.limits")
    now = [0.0]
    gate = Gate("tcp", 100, lambda: now[0], rate=2, burst=3)
    assert [gate.enter("10.0.0.1") for _ in range(5)] == [True] * 3 + [False] * 2  # the burst, then refused
    assert gate.enter("10.0.0.2")  # another address has its own bucket
    assert gate.enter(None)  # in-process connections are not rate limited
    now[0] = 1.0  # two more a second
    assert [gate.enter("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert gate.open == 7
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "1 over 2 a second from one address" in lines[0]  # once a second at most:
    assert "2 over 2 a second" in lines[1]  # the next line counts what came between


# ---- a connection that has sent nothing yet (the SDKs connect in their constructors)


async def test_a_silent_connection_is_kept_longer_than_one_that_sends_bytes_without_a_token(start_server,
                                                                                          autojump_clock, caplog):
    """An application builds its SDK client at start-up and makes its first call minutes later: a connection
    that has sent nothing is closed only at the silent timeout, and its first request, when it comes, is
    answered. One that sends bytes (here a partial line) and no valid token is closed at the idle timeout."""
    caplog.set_level("INFO", logger="syncledger")
    from syncledger.server.testing import Harness
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, idle_timeout=60, silent_timeout=600)
        talking, late, mute = connect_memory(srv), connect_memory(srv), connect_memory(srv)
        start = trio.current_time()
        await talking.send_all(b'{"command":"Ping","data":{')
        assert await talking.receive_some(100) == b""
        assert 60 <= trio.current_time() - start < 61
        await trio.sleep(240)  # past the idle timeout: the silent ones are still open
        async with open_client(late, Harness(srv).token) as client:
            assert (await client.call("Ping")).ok
            assert await mute.receive_some(100) == b""  # closed at its own deadline
            assert 600 <= trio.current_time() - start < 601
            await trio.sleep(3600)
            assert (await client.call("Ping")).ok  # (a valid token: never closed for idleness)
        nursery.cancel_scope.cancel()
    assert "no valid token within 60 s" in caplog.text and "nothing received within 600 s" in caplog.text
