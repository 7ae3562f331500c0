"""What may stall the server without the event loop noticing (issue 21): a database read that hangs, the
managers' keys read against a silent database, a cluster node that holds the head row and goes silent, a
writer process that dies or is stopped. The event loop goes on answering, /readyz says what is stuck, SIGTERM
ends the server, and every answer stays true."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import trio

from syncledger.ledger import Store, engine, reads, verify_path
from syncledger.server import app as app_module
from syncledger.server import cli
from syncledger.server.app import FailStop
from syncledger.server.client import ConnectionLost
from syncledger.server.core.lockfile import LedgerLock, LedgerLocked
from syncledger.server.testing import SECRET
from syncledger.server.core.writer import WriterEnded, WriterProcess
from tests.conftest import add_account, tcp_client
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)


class Proxy:
    """A Unix-socket proxy in front of the test cluster's PostgreSQL that can go silent (``freeze``: bytes are
    held, both ways, as a network cut holds them) and speak again (``thaw``). Threads of its own: it keeps
    going whatever the event loop under test does."""

    def __init__(self, target_dir: str, here: str):
        self.target = os.path.join(target_dir, ".s.PGSQL.5432")
        self.dir = here
        self.flowing = threading.Event()
        self.flowing.set()
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(os.path.join(here, ".s.PGSQL.5432"))
        self._listener.listen(64)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str, cluster_dir: str) -> str:
        return url.replace(f"host={cluster_dir}", f"host={self.dir}")

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self._closed = True
        self.flowing.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        ends = {a: b, b: a}
        try:
            while not self._closed:
                ready, _, _ = select.select(list(ends), [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    self.flowing.wait()
                    ends[sock].sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()


@pytest.fixture
def proxy(pg_cluster, tmp_path):  # noqa: F811
    p = Proxy(pg_cluster.dir, str(tmp_path))
    yield p
    p.close()


async def _get(srv, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"http://127.0.0.1:{srv.ports.admin}{path}")


# ---- SQLite: a read that hangs, the managers' keys read that hangs


async def test_a_read_that_hangs_is_answered_503_while_everything_else_is_served(start_server, monkeypatch):
    held = threading.Event()
    real = reads.account

    def hanging(db, login):
        held.wait(10)
        return real(db, login)
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, read_timeout=0.5, stall_after=0.2)
        async with tcp_client(srv) as c:
            login = await add_account(c)
            monkeypatch.setattr(reads, "account", hanging)
            with trio.fail_after(5):
                async with trio.open_nursery() as calls:
                    answers = []

                    async def ask():
                        answers.append(await c.call("GetUser", {"login": login}))
                    calls.start_soon(ask)
                    await trio.sleep(0.3)
                    assert (await _get(srv, "/healthz")).status_code == 200  # the event loop is free
                    assert (await c.call("Ping")).ok
                    ready = await _get(srv, "/readyz")
                    assert ready.status_code == 503
                    assert any("a read of the ledger has not answered" in p for p in ready.json()["problems"])
            assert (answers[0].status, answers[0].error) == (503, "LEDGER_UNAVAILABLE"), answers[0]
            held.set()
            monkeypatch.setattr(reads, "account", real)
            with trio.fail_after(5):
                while (await _get(srv, "/readyz")).status_code != 200:  # the read ended in its thread
                    await trio.sleep(0.05)
            reply = await c.call("GetUser", {"login": login})  # on a connection opened again
            assert reply.ok, reply
            assert srv._reads.abandoned == 1
        nursery.cancel_scope.cancel()


async def test_a_stalled_read_of_the_managers_keys_holds_no_request(start_server, monkeypatch):
    """A request that finds the managers' keys due for a read waits for it at most KEYS_WAIT; the read that
    hangs goes on alone (never two at once), /readyz names it, and once it ends the keys are read again."""
    monkeypatch.setattr(app_module, "KEYS_WAIT", 0.2)
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, stall_after=0.3)
        held, calls = threading.Event(), []
        changed = srv._keys_changed

        def hanging():
            calls.append(1)
            held.wait(10)
            return changed()
        srv._keys_changed = hanging
        async with tcp_client(srv) as c:
            await trio.sleep(0.3)  # the keys are due
            started = trio.current_time()
            with trio.fail_after(5):
                for _ in range(20):
                    assert (await c.call("Ping")).ok
                    await trio.sleep(0.03)
            assert trio.current_time() - started < 2.0  # (one request waited 0.2 s, none more)
            assert calls == [1]  # never a second read while one hangs
            ready = await _get(srv, "/readyz")
            assert any("a read of the managers' keys has not answered" in p for p in ready.json()["problems"])
            held.set()
            srv._keys_changed = changed
            with trio.fail_after(5):
                while srv.keys.reading:
                    await trio.sleep(0.02)
            assert (await _get(srv, "/readyz")).status_code == 200
        nursery.cancel_scope.cancel()


# ---- the writer process: its end seen at once, stopped, the lock naming it


def _writer_process(tmp_path) -> dict[str, str]:
    """The overrides of a server whose writer is a process of its own, on ``w.db``."""
    return {"db": str(tmp_path / "w.db"), "writer": "process"}


async def test_a_writer_that_dies_idle_stops_the_server_at_once_saying_why(start_server, tmp_path, caplog):
    started = None
    with pytest.raises(BaseExceptionGroup) as stopped:
        async with trio.open_nursery() as nursery:
            srv = await start_server(nursery=nursery, **_writer_process(tmp_path))
            async with tcp_client(srv) as c:
                await add_account(c)
            os.kill(srv.writer.process.pid, signal.SIGKILL)
            started = trio.current_time()
            with trio.fail_after(5):
                await trio.sleep_forever()  # serve ends by itself
    assert stopped.group_contains(FailStop)
    assert trio.current_time() - started < 2
    critical = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1 and "the writer process ended (killed by SIGKILL) with no batch in it" in critical[0]
    assert "unknown" not in critical[0]
    assert verify_path(str(tmp_path / "w.db")).ok


def test_a_batch_sent_to_a_writer_that_has_ended_is_known_unapplied(tmp_path):
    """Not Unsure: the writer had ended before the batch was in its socket, so it never saw it."""
    path = str(tmp_path / "w.db")
    Store(path).close()
    writer = WriterProcess(path)
    writer.process.kill()
    writer.process.wait()
    with pytest.raises(WriterEnded, match="killed by SIGKILL.*nothing of that batch was applied"):
        writer.apply_batch([])
    writer.close()


async def test_readyz_names_a_stopped_writer(start_server, tmp_path):
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, **_writer_process(tmp_path))
        pid = srv.writer.process.pid
        assert (await _get(srv, "/readyz")).status_code == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            with trio.fail_after(5):
                while (ready := await _get(srv, "/readyz")).status_code == 200:
                    await trio.sleep(0.02)
            assert any("the writer process is stopped" in p for p in ready.json()["problems"])
        finally:
            os.kill(pid, signal.SIGCONT)
        with trio.fail_after(5):
            while (await _get(srv, "/readyz")).status_code != 200:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def test_shutdown_gives_up_a_batch_that_never_answers(start_server, tmp_path, caplog):
    """A stopped writer holds a batch: SIGTERM's shutdown waits out its grace, then stops (exit 3), saying
    that batch's fate is unknown; the writer, let go, finishes it alone and the file tells the truth."""
    with pytest.raises(BaseExceptionGroup) as stopped:
        async with trio.open_nursery() as nursery:
            srv = await start_server(nursery=nursery, **_writer_process(tmp_path), shutdown_grace=0.3)
            pid = srv.writer.process.pid
            async with tcp_client(srv) as c:
                login = await add_account(c)
                os.kill(pid, signal.SIGSTOP)
                nursery.start_soon(_unanswered, c, login)
                with trio.fail_after(5):
                    while not srv.mainloop.applying:
                        await trio.sleep(0.01)
                    await srv.shutdown()
                    await trio.sleep_forever()
    try:
        assert stopped.group_contains(FailStop)
        critical = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
        assert len(critical) == 1 and "grace ran out" in critical[0] and "unknown" in critical[0]
    finally:
        os.kill(pid, signal.SIGCONT)
    with trio.fail_after(10):
        while _alive(pid):
            await trio.sleep(0.02)
    assert verify_path(str(tmp_path / "w.db")).ok


async def _unanswered(c, login: int) -> None:
    """A credit whose batch will never be answered (the server stops without knowing its fate)."""
    with pytest.raises(ConnectionLost):
        await c.call("CreditIn", {"login": login, "amount": 5, "comment": "held"})


def _alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def test_a_writer_that_outlived_its_server_is_named_as_the_holder(tmp_path):
    """kill -9 of the server while its writer is stopped in a batch: the writer holds the lock, and a second
    server says so, naming the writer's pid (not the dead server's)."""
    path = str(tmp_path / "w.db")
    lock = LedgerLock.acquire(path)
    Store(path).close()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lock.fd,))
    lock.note_writer(child.pid)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.pwrite(lock.fd, f"{dead.pid} {child.pid}\n".encode(), 0)  # as a killed server leaves it
    lock.release()  # only the "writer" holds it now
    try:
        with pytest.raises(LedgerLocked, match=f"held by the writer process \\(pid {child.pid}\\).*kill {child.pid}"):
            LedgerLock.acquire(path)
    finally:
        child.kill()
        child.wait()
    LedgerLock.acquire(path).release()


async def test_the_lock_file_names_the_server_and_its_writer(start_server, tmp_path):
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, **_writer_process(tmp_path))
        with open(str(tmp_path / "w.db") + ".lock") as f:
            assert f.read().split() == [str(os.getpid()), str(srv.writer.process.pid)]
        with pytest.raises(LedgerLocked, match=f"pid {os.getpid()}, its writer process pid {srv.writer.process.pid}"):
            LedgerLock.acquire(str(tmp_path / "w.db"))
        nursery.cancel_scope.cancel()


# ---- PostgreSQL: bounded sessions, a database gone silent, a node holding the head row


def test_every_session_is_bounded_and_the_urls_own_settings_win(pg_url):  # noqa: F811
    store = Store(pg_url)
    try:
        params = store.db.conn.info.get_parameters()
        assert (params["connect_timeout"], params["keepalives"], params["tcp_user_timeout"]) == ("10", "1", "20000")
        show = lambda name: store.db.execute(f"SHOW {name}").fetchone()[0]  # noqa: E731
        assert (show("idle_in_transaction_session_timeout"), show("lock_timeout")) == ("5s", "2s")
    finally:
        store.close()
    own = f"{pg_url}&connect_timeout=3".replace("options=", "options=-clock_timeout%3D7s%20")
    store = Store(own)
    try:
        assert store.db.conn.info.get_parameters()["connect_timeout"] == "3"
        assert store.db.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    finally:
        store.close()


async def test_a_silent_database_leaves_the_server_answering_and_stoppable(pg_cluster, pg_url, proxy,  # noqa: F811
                                                                            start_server, monkeypatch):
    """The network to PostgreSQL goes silent (bytes held): reads answer 503 within their bound, /healthz and
    Ping are answered (the managers' keys, read about four times a second on PostgreSQL, never hold the event
    loop), /readyz names what is stuck, and a shutdown with a batch stuck in the database ends the server
    (exit 3: that batch's fate is unknown) instead of waiting for the network."""
    monkeypatch.setattr(app_module, "KEYS_WAIT", 0.2)
    monkeypatch.setenv("SYNCLEDGER_SECRET", SECRET)
    url = proxy.url(pg_url, pg_cluster.dir)
    with pytest.raises(BaseExceptionGroup) as stopped:
        async with trio.open_nursery() as nursery:
            srv = await start_server(nursery=nursery, db=url, read_timeout=0.5, stall_after=0.3, shutdown_grace=0.3)
            async with tcp_client(srv) as c:
                login = await add_account(c)
                proxy.freeze()
                with trio.fail_after(10):
                    reply = await c.call("GetUser", {"login": login})
                    assert (reply.status, reply.error) == (503, "LEDGER_UNAVAILABLE"), reply
                    for _ in range(5):
                        assert (await c.call("Ping")).ok
                        await trio.sleep(0.1)
                    assert (await _get(srv, "/healthz")).status_code == 200
                    nursery.start_soon(_unanswered, c, login)
                    while not srv.mainloop.applying:
                        await trio.sleep(0.01)
                    await trio.sleep(0.4)
                    problems = (await _get(srv, "/readyz")).json()["problems"]
                    assert any("a batch in the ledger's writer has not answered" in p for p in problems), problems
                    await srv.shutdown()
                    await trio.sleep_forever()
    assert stopped.group_contains(FailStop)
    proxy.thaw()
    srv.store.close()  # (left open by the abandoned batch's thread)


def test_sigterm_ends_a_server_whose_database_has_gone_silent(pg_cluster, pg_url, proxy, tmp_path,  # noqa: F811
                                                               monkeypatch, capsys):
    """The operator's view of the case above: `syncledger serve` on PostgreSQL, the network cut while a
    manager sends requests; SIGTERM stops it within seconds, exit 0 (no batch was in the database)."""
    env = {**os.environ, "SYNCLEDGER_SECRET": SECRET}
    url = proxy.url(pg_url, pg_cluster.dir)
    monkeypatch.setenv("SYNCLEDGER_SECRET", SECRET)
    assert cli.main(["manager", "add", "--db", url, "--login", "1", "--password", "a-long-password-1",
                     "--session", "ADMIN"]) == 0
    assert cli.main(["token", "--db", url, "--login", "1"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    server = subprocess.Popen([sys.executable, "-P", "-m", "syncledger.server.cli", "serve", "--db", url,
                               "--writer", "thread", "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                               "--admin-port", "-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=str(tmp_path))
    try:
        line = server.stdout.readline()
        port = int(line.split("tcp=")[1].split()[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            proxy.freeze()
            request = b'{"command":"Ping","__token":"%s"}\n' % token.encode()
            for _ in range(3):
                conn.sendall(request)
                time.sleep(0.3)  # (the keys are due again: on PostgreSQL they are read each time)
            began = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=15)
        assert code == 0, server.stderr.read()
        assert time.monotonic() - began < 8
    finally:
        proxy.thaw()
        if server.poll() is None:
            server.kill()
            server.wait()


async def test_a_node_that_holds_the_head_row_and_goes_silent_is_cut(start_server, pg_url, monkeypatch):  # noqa: F811
    """One node's batch session holds the head row and says nothing more (SIGSTOP, a cut): the database ends
    it after idle_in_transaction_session_timeout; meanwhile the other node's writes fail fast with a true 500
    (nothing applied, lock_timeout) instead of waiting, and its retry applies once."""
    monkeypatch.setitem(engine.PG_SESSION_BOUNDS, "idle_in_transaction_session_timeout", "1500ms")
    monkeypatch.setitem(engine.PG_SESSION_BOUNDS, "lock_timeout", "300ms")
    monkeypatch.setenv("SYNCLEDGER_SECRET", SECRET)
    silent = Store(pg_url, cluster=True, node="silent")
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, db=pg_url, cluster=True)
        async with tcp_client(srv) as c:
            login = await add_account(c)
            silent.db.execute("BEGIN")
            silent.db.execute(engine.PG_LOCK_HEAD)  # ... and nothing more
            with trio.fail_after(10):
                began = trio.current_time()
                failed = await c.call("CreditIn", {"login": login, "amount": 5, "comment": "c"}, ext_id="e1")
                assert failed.status == 500 and "nothing was applied" in failed.message, failed
                assert trio.current_time() - began < 1.5
                while not (reply := await c.call("CreditIn", {"login": login, "amount": 5, "comment": "c"},
                                                 ext_id="e1")).ok:
                    assert reply.status == 500
                    await trio.sleep(0.1)
            account = await c.call("GetUser", {"login": login})
            assert account.data["credit"] == 5  # once
        nursery.cancel_scope.cancel()
    with pytest.raises(engine.errors()):
        silent.db.execute("COMMIT")  # its session was ended by the database
    silent.db.conn.close()
    assert verify_path(pg_url).ok
