"""The ledger on PostgreSQL: the same random batches as tests/ledger/test_batch_writer.py (finance commands, repeated
extIDs, refusals, AddAccount, wallet calls, rows that cannot be written, a command failing after it wrote, a
batch that crashes) give bit for bit the same answers, events, rows and hash chain heads on SQLite and on
PostgreSQL; and what only PostgreSQL has: its schema, triggers (TRUNCATE too), the head-row lock that keeps a
second writer from forking the chain, a refused or unknowable COMMIT, a lost connection."""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3

import psycopg
import pytest
import trio

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, engine, migrations, verify, verify_path
from syncledger.ledger import store as store_module
from syncledger.ledger.migrations import SchemaError
from syncledger.ledger.store import LedgerOpenError, Unsure
from syncledger.server.core.lockfile import LedgerLock, LedgerLocked
from syncledger.server.testing import Harness
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)
from tests.ledger.test_batch_writer import NOW, TABLES, U, _command, _generator, _kinds, _outcome, _setup

LEDGER_TABLES = tuple(t for t in TABLES if t != "meta")


def _answers(store: Store, commands: list) -> list[tuple] | str:
    """Each command's outcome; an INTERNAL error by status and code alone (its message is the engine's own
    words: 'UNIQUE constraint failed' or 'duplicate key value')."""
    try:
        outcomes = store.apply_batch(commands)
    except sqlite3.OperationalError as e:  # the test's Crash command, on either engine
        return f"batch failed: {e}"
    answers = []
    for o in outcomes:
        error, data, events, replay = _outcome(o)
        if error and error[1] == "INTERNAL":
            error = error[:2]
        answers.append((error, data, events, replay))
    return answers


def _state(store: Store) -> dict:
    """Every row of every ledger table (sorted here: the same order whatever the engine's collation), the
    batch number in meta, and the store's memory (totals, heads, next order)."""
    state = {t: sorted(tuple(r) for r in store.db.execute(f"SELECT * FROM {t}").fetchall()) for t in LEDGER_TABLES}
    state["batch"] = store._batch_in(store.db)
    state["memory"] = (dict(store.accounts), set(store.disabled), store.seq, store.event_head, store.finance_id,
                       store.finance_head, store.batch_no)
    return state


@pytest.mark.parametrize("seed", range(3))
def test_same_answers_events_rows_and_hashes_on_sqlite_and_postgresql(tmp_path, pg_url, seed):
    lite, pg = _setup(store_module, str(tmp_path / "lite.db")), _setup(store_module, pg_url)
    batch = _generator(seed, hard=True)
    seen: set = set()
    try:
        assert pg.postgres and not lite.postgres
        for n in range(50):
            specs = batch(lite)
            got = _answers(pg, [_command(store_module, s) for s in specs])
            want = _answers(lite, [_command(store_module, s) for s in specs])
            assert got == want, f"batch {n}: {specs}"
            assert _state(pg) == _state(lite), f"batch {n}: {specs}"
            assert pg.reserve_order() == lite.reserve_order()
            seen |= _kinds(got)
        assert verify(pg.db).ok and verify(lite.db).ok
        assert verify(pg.db).head == verify(lite.db).head  # the same chain, to its last hash
        events = "SELECT seq, type, record_id, data, hash FROM events ORDER BY seq"
        assert pg.db.execute(events).fetchall() == lite.db.execute(events).fetchall()
        # the batches reached the rare paths: replays, conflicts, refusals, rows that could not be written
        assert {"applied", "replay", "IDEMPOTENCY_CONFLICT", "NO_MONEY", "ORDER_NOT_FOUND", "INTERNAL",
                "ACCOUNT_EXISTS"} <= seen, seen
        assert pg.seq > 40 and pg.db.execute("SELECT COUNT(*) FROM finance WHERE source LIKE 'wallet:%'").fetchone()[0]
    finally:
        lite.close()
        pg.close()


def test_a_store_reopened_on_postgresql_carries_on_the_same_chain(tmp_path, pg_url):
    """Idempotency and totals across a reopen: memory is rebuilt from the database, the chain goes on."""
    pg = _setup(store_module, pg_url)
    keyed = Finance(FinanceRequest("BalanceIn", 1000, 3 * U), NOW + 1, manager=1, ext_id="k")
    [first] = pg.apply_batch([keyed])
    pg.close()
    pg = Store(pg_url)
    try:
        assert not pg.created and pg.migrated == []
        [again] = pg.apply_batch([keyed])
        assert again.replay and again.data == first.data
        [more] = pg.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW + 2)])
        assert more.events[0].seq == first.events[0].seq + 1
        assert pg.accounts[1000][1] == 64 * U
        assert verify(pg.db).ok
    finally:
        pg.close()


def test_the_schema_and_its_migrations_reach_the_same_version_as_sqlite(pg_url):
    assert [step for step, _, _ in migrations.PG_STEPS] == list(range(migrations.PG_BASE + 1, migrations.LATEST + 1))
    assert f"('schema_version', '{migrations.PG_BASE}')" in migrations.schema_pg_sql()
    store = Store(pg_url)
    try:
        assert store.created and store.migrated == [migrations.LATEST]
        assert migrations.version_of(store.db) == migrations.LATEST
        # the same columns, in the same order, as SQLite's schema
        lite = sqlite3.connect(":memory:")
        lite.executescript(migrations.schema_sql())
        for table in ("meta", *LEDGER_TABLES, "managers"):
            ours = [c for (c,) in store.db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]
            assert ours == [c[1] for c in lite.execute(f"PRAGMA table_info({table})")], table
    finally:
        store.close()


def test_a_database_that_is_not_a_ledger_or_not_there(pg_cluster, pg_url):
    other = psycopg.connect(pg_url, autocommit=True)
    try:
        with pytest.raises(LedgerOpenError, match="no ledger at"):
            Store(pg_url, create=False)
        other.execute("CREATE TABLE something_else (x int)")
        with pytest.raises(SchemaError, match="not a syncledger ledger"):
            Store(pg_url)
        with pytest.raises(LedgerOpenError, match="cannot open ledger"):
            Store(pg_cluster.url("no_such_database"))
    finally:
        other.close()


def test_the_append_only_triggers_refuse_changes_and_truncate(pg_url):
    store = _setup(store_module, pg_url)
    try:
        for statement in ("UPDATE finance SET amount = 1", "DELETE FROM finance", "TRUNCATE finance CASCADE",
                          "UPDATE events SET data = ''", "DELETE FROM events", "TRUNCATE events CASCADE",
                          "UPDATE idempotency SET status = 1", "DELETE FROM idempotency", "TRUNCATE idempotency",
                          "UPDATE wallet_tx SET amount = 1", "DELETE FROM wallet_tx", "TRUNCATE wallet_tx",
                          "DELETE FROM accounts", "UPDATE accounts SET currency = 'USD'", "TRUNCATE accounts CASCADE"):
            with pytest.raises(psycopg.IntegrityError):
                store.db.execute(statement)
        assert verify(store.db).ok and store.seq == 4
        store.db.execute("UPDATE accounts SET name = 'renamed' WHERE login = 1000")  # not a ledger column
    finally:
        store.close()


@pytest.mark.parametrize("tamper, problem", [
    ("ALTER TABLE finance DISABLE TRIGGER finance_no_update", "trigger finance_no_update is disabled"),
    ("DROP TRIGGER events_no_delete ON events", "trigger events_no_delete is missing"),
    ("CREATE OR REPLACE FUNCTION syncledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
     "function syncledger_refuse is not the schema's"),
    ("CREATE TRIGGER extra BEFORE INSERT ON finance FOR EACH ROW EXECUTE FUNCTION syncledger_refuse('x')",
     "trigger extra on finance is not part of the schema"),
])
def test_verify_names_a_weakened_trigger(pg_url, tamper, problem):
    store = _setup(store_module, pg_url)
    try:
        store.db.execute(tamper)
        report = verify_path(pg_url)
        assert not report.ok and problem in report.problem, report
    finally:
        store.close()


def test_verify_names_a_tampered_row(pg_url):
    store = _setup(store_module, pg_url)
    try:
        store.db.execute("ALTER TABLE finance DISABLE TRIGGER finance_no_update")
        store.db.execute("UPDATE finance SET amount = amount + 1 WHERE id = 2")
        store.db.execute("ALTER TABLE finance ENABLE TRIGGER finance_no_update")
        report = verify_path(pg_url)
        assert not report.ok and report.problem.startswith("finance row 2"), report
    finally:
        store.close()


def test_a_second_writer_cannot_fork_the_chain(pg_url):
    """Two stores writing one database (two servers, no lock between them): the one whose head is stale
    finds the head row moved under it, and stops (Unsure) without writing."""
    first, second = _setup(store_module, pg_url), Store(pg_url)
    try:
        first.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
        with pytest.raises(Unsure, match="another writer"):
            second.apply_batch([Finance(FinanceRequest("BalanceIn", 1001, U), NOW)])
        assert verify(first.db).ok and first.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 5
    finally:
        first.close()
        second.close()


def test_a_commit_answered_rollback_applied_nothing(pg_url):
    store = _setup(store_module, pg_url)
    try:
        def refused() -> None:
            del store._sql_commit
            store.db.execute("ROLLBACK")
            raise engine.RolledBack("COMMIT was answered ROLLBACK (injected)")
        store._sql_commit = refused
        with pytest.raises(engine.RolledBack):
            store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
        assert store.seq == 4 and store.accounts[1000][1] == 60 * U
        [ok] = store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
        assert ok.events[0].seq == 5 and verify(store.db).ok
    finally:
        store.close()


def _kill(url: str, pid: int) -> None:
    """End the database session ``pid`` (as a database restart or a dropped connection would)."""
    with psycopg.connect(url, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _events(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def _next_batch_is_whole(store: Store, url: str, seq: int) -> None:
    """A batch after the loss: on a new connection, chained to the ledger's head; the ledger verifies."""
    [ok] = store.apply_batch([Finance(FinanceRequest("BalanceIn", 1001, U), NOW)])
    assert ok.error is None and ok.events[0].seq == seq == store.seq == _events(url), ok
    assert verify_path(url).ok


def test_a_connection_lost_between_batches_is_opened_again(pg_url, caplog):
    """The database ends the store's idle session (a restart, an idle cut): the next batch finds it lost at
    its BEGIN, before anything of it was sent, and runs whole on a new connection."""
    store = _setup(store_module, pg_url)
    try:
        old = store.db.conn.info.backend_pid
        _kill(pg_url, old)
        [ok] = store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
        assert ok.error is None and ok.events[0].seq == 5 and store.db.conn.info.backend_pid != old
        assert "connection was lost" in caplog.text
        _next_batch_is_whole(store, pg_url, 6)
    finally:
        store.close()


def test_a_connection_lost_mid_batch_fails_it_and_the_next_batch_reconnects(pg_url):
    """The server ends the store's session mid-batch: the batch fails with the driver's error (not Unsure:
    nothing of it can be in the database, its COMMIT was never sent), memory is as before it, and the next
    batch runs on a new connection."""
    store = _setup(store_module, pg_url)
    try:
        pid = store.db.conn.info.backend_pid

        def kill(c):
            _kill(pg_url, pid)
            return store._handlers[AddAccount](c)
        store.register(Kill, kill)
        with pytest.raises(psycopg.OperationalError):
            store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW), Kill("x", "EUR", NOW)])
        assert _events(pg_url) == 4 and store.seq == 4 and store.accounts[1000][1] == 60 * U
        _next_batch_is_whole(store, pg_url, 5)
    finally:
        store.close()


@pytest.mark.parametrize("fate", ["committed", "aborted", "cut"])
def test_a_commit_whose_answer_was_lost_is_read_back(pg_url, fate):
    """The connection is lost at COMMIT; a new one asks the database what became of the batch's transaction
    (txid_status). ``committed``: the COMMIT was done, its answer lost: the batch stands and is answered.
    ``aborted``: the session ended before the COMMIT reached it: the batch fails, nothing applied. ``cut``:
    the client's end of the connection is gone but the database still keeps the session, in its transaction
    and holding the head row (a cut it has not noticed): the store ends that session, which rolls back."""
    store = _setup(store_module, pg_url)
    try:
        pid = store.db.conn.info.backend_pid
        lost = psycopg.OperationalError("server closed the connection unexpectedly (simulated)")

        def commit() -> None:
            del store._sql_commit
            if fate == "committed":
                store.db.execute("COMMIT")
                _kill(pg_url, pid)
                raise lost
            if fate == "aborted":
                _kill(pg_url, pid)
                store.db.execute("COMMIT")
            # cut: the client's descriptor now holds a socket whose far end is closed (the COMMIT goes nowhere),
            # and a copy of the real one keeps the session open on the database's side
            sock = store.db.conn.pgconn.socket
            held.append(os.dup(sock))
            ours, theirs = socket.socketpair()
            os.dup2(ours.fileno(), sock)
            ours.close()
            theirs.close()
            store.db.execute("COMMIT")
        held: list[int] = []
        store._sql_commit = commit
        try:
            if fate == "committed":
                [ok] = store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
                assert ok.error is None and ok.events[0].seq == 5 and store.accounts[1000][1] == 61 * U
            else:
                with pytest.raises(psycopg.OperationalError):
                    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
                assert store.seq == 4 and store.accounts[1000][1] == 60 * U
        finally:
            for fd in held:
                os.close(fd)
        seq = 5 if fate == "committed" else 4
        assert _events(pg_url) == seq and store.db.conn.info.backend_pid != pid
        _next_batch_is_whole(store, pg_url, seq + 1)
    finally:
        store.close()


def test_a_commit_that_cannot_be_read_back_is_unsure(pg_url, monkeypatch):
    """Lost at COMMIT, and no new connection can be had (the database is down): the store cannot know."""
    store = _setup(store_module, pg_url)
    try:
        def commit() -> None:
            del store._sql_commit
            store.db.conn.close()
            monkeypatch.setattr(store.db, "_reopen", _refused)
            raise psycopg.OperationalError("server closed the connection unexpectedly (simulated)")
        store._sql_commit = commit
        with pytest.raises(Unsure, match="cannot be read back"):
            store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, U), NOW)])
        assert _events(pg_url) == 4
    finally:
        store.close()


def _refused():
    raise psycopg.OperationalError("connection refused (simulated)")


@dataclasses.dataclass(frozen=True)
class Kill(AddAccount):
    """An AddAccount during which the database ends the store's session."""



def test_one_server_per_ledger_and_one_lock_per_schema(pg_cluster, pg_url, monkeypatch):
    """The server lock of a PostgreSQL ledger: a second server is refused, naming the holder's pid; a ledger in
    another schema of the same database has its own lock; a released lock is free at once."""
    import os

    from syncledger.server.core import lockfile
    from syncledger.server.core.lockfile import LedgerLock, LedgerLocked

    monkeypatch.setattr(lockfile, "PG_LOCK_GRACE", 0.1)

    Store(pg_url).close()
    lock = LedgerLock.acquire(pg_url)
    other = LedgerLock.acquire(pg_cluster.new_ledger())
    try:
        with pytest.raises(LedgerLocked, match=f"already served by another syncledger \\(pid {os.getpid()}\\)"):
            LedgerLock.acquire(pg_url)
    finally:
        other.release()
        lock.release()
    LedgerLock.acquire(pg_url).release()


def test_the_command_line_on_postgresql(tmp_path, pg_cluster, pg_url, capsys, monkeypatch):
    """Every command that takes --db works on a postgresql:// URL: manager add (which creates the ledger, and
    says so), token, session open, verify, head, export; backup and restore say what to use instead; serve
    without SYNCLEDGER_SECRET is one line; exports are the same as from an SQLite ledger of the same rows."""
    import io
    import json

    from syncledger.server.ops import export
    from syncledger.server.cli import main

    monkeypatch.setenv("SYNCLEDGER_SECRET", "cli-secret-cli-secret-cli-secret-0123")
    assert main(["manager", "add", "--db", pg_url, "--login", "3", "--password", "pw-long-enough-3"]) == 0
    assert capsys.readouterr().err == f"created new ledger at {pg_url}\n"
    assert main(["manager", "add", "--db", pg_url, "--login", "4", "--password", "pw-long-enough-4"]) == 0
    assert capsys.readouterr().err == ""  # made once
    assert main(["token", "--db", pg_url, "--login", "3"]) == 0
    assert capsys.readouterr().out.strip().count(".") == 2  # a JWT
    assert main(["manager", "remove", "--db", pg_url, "--login", "4"]) == 0
    assert main(["token", "--db", pg_url, "--login", "4"]) == 1
    store, lite = _setup(store_module, pg_url), _setup(store_module, str(tmp_path / "same.db"))
    try:
        capsys.readouterr()
        assert main(["session", "open", "--db", pg_url, "--login", "1000"]) == 0
        assert len(capsys.readouterr().out.strip()) >= 20
        assert main(["verify", "--db", pg_url]) == 0 and capsys.readouterr().out.startswith("ok: 4 finance rows")
        assert main(["head", "--db", pg_url]) == 0 and capsys.readouterr().out.strip() == verify(lite.db).head
        for what in export.EXPORTS:
            for fmt in export.FORMATS:
                ours, theirs = io.StringIO(), io.StringIO()
                assert export.export(pg_url, what, ours, fmt) == export.export(lite.path, what, theirs, fmt)
                if what != "wallet":  # (wallet: the session sids and times differ; none here)
                    assert ours.getvalue() == theirs.getvalue(), (what, fmt)
        assert main(["export", "events", "--db", pg_url, "--since", "2"]) == 0
        assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [3, 4]
        assert main(["export", "wallet", "--db", pg_url, "--format", "csv"]) == 0
        assert capsys.readouterr().out.startswith("kind,txid,login")  # no rows: the header alone
    finally:
        store.close()
        lite.close()
    assert main(["backup", "--db", pg_url, "--to", str(tmp_path / "copy")]) == 2
    assert "pg_dump" in capsys.readouterr().err
    assert main(["restore", "--db", pg_url, "--from", str(tmp_path / "same.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pg_restore" in err
    assert main(["verify", "--db", pg_cluster.url("no_such_database")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("syncledger: cannot verify postgresql://")
    monkeypatch.delenv("SYNCLEDGER_SECRET")
    assert main(["serve", "--db", pg_url, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0",
                 "--admin-port", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SYNCLEDGER_SECRET" in err


def test_a_reader_whose_connection_was_cut_reconnects(pg_url):
    """The read-only connections beside the writer (read pool, manager keys, verify) open again after their
    session was ended between two statements; a session ended inside a snapshot fails that read only."""
    store = _setup(store_module, pg_url)
    reader = engine.connect_ro(pg_url)
    try:
        killer = store.db
        for inside in (False, True):
            if inside:
                reader.execute(engine.PG_SNAPSHOT)
            killer.execute("SELECT pg_terminate_backend(?)", (reader.conn.info.backend_pid,))
            if inside:
                with pytest.raises(psycopg.OperationalError):
                    reader.execute("SELECT COUNT(*) FROM events")
            else:
                assert reader.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4
        assert reader.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4  # reopened at the next one
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("INSERT INTO meta VALUES ('x', 'y')")
    finally:
        reader.close()
        store.close()


def _sessions(h) -> list[str]:
    """The application names of a server's database sessions (its own process's, and its writer process's)."""
    return [f"syncledger pid {pid}" for pid in (os.getpid(), h.server.writer and h.server.writer.process.pid) if pid]


def _end_sessions(db, names: list[str]) -> int:
    """End every session with one of these application names; how many there were."""
    return len(db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                          "ANY(%s)", (names,)).fetchall())


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_a_server_whose_database_sessions_all_end_serves_on(start_server, pg_url, caplog, writer):
    """Every session of the server's is ended at once, as a database restart does: the writer's, the readers'
    and the lock's (the writer's in the server's process, or in its writer process). The next CreditIn commits
    on a new connection, reads work, the lock is held again (a second server is still refused) and the ledger
    verifies."""
    async with trio.open_nursery() as nursery:
        h = Harness(await start_server(nursery=nursery, mem=True, db=pg_url, threaded=True, writer=writer))
        async with h.client() as c:
            login = await h.add_account(c)
            ours = _sessions(h)
            with psycopg.connect(pg_url, autocommit=True) as killer:
                assert _end_sessions(killer, ours) >= 3  # (the writer's, a reader's, the lock's)
                for _ in range(500):  # the lock taken again on a session of its own
                    if killer.execute("SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE "
                                      "l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
                                      (ours[0],)).fetchone()[0]:
                        break
                    await trio.sleep(0.01)
                else:
                    pytest.fail("the server did not take its lock again")
            reply = await c.call("CreditIn", {"login": login, "amount": 5, "comment": "after the restart"})
            assert reply.ok, reply
            user = await c.call("GetUser", {"login": login})
            assert user.ok and user.data["credit"] == 5, user
            with pytest.raises(LedgerLocked):
                LedgerLock.acquire(pg_url)
        assert "lock is held again" in caplog.text
        assert (await h.verify()).ok
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_sessions_ended_again_and_again_under_load_answer_truthfully(start_server, pg_url, writer):
    """300 CreditIns in flight while the server's database sessions are ended again and again (each time 20
    more answers came): each answer is true. Every 200 is in the ledger once; every 500 ("nothing was
    applied") is not there at all, and its retry (same extID) applies it once; the total is the sum of the
    credits, and the ledger verifies."""
    async with trio.open_nursery() as nursery:
        h = Harness(await start_server(nursery=nursery, mem=True, db=pg_url, threaded=True, writer=writer))
        async with h.client() as c:
            login = await h.add_account(c)
            ours = _sessions(h)
            replies: dict[str, object] = {}
            ended = 0

            async def credit(i: int) -> None:
                replies[f"c{i}"] = await c.call("CreditIn", {"login": login, "amount": 1 + i % 5, "comment": "x"},
                                                ext_id=f"c{i}")

            async def end_sessions(done: trio.Event) -> None:
                """End the server's sessions, then again each time 20 more answers came."""
                nonlocal ended
                with psycopg.connect(pg_url, autocommit=True) as killer:
                    while not done.is_set():
                        ended += _end_sessions(killer, ours)
                        answered = len(replies)
                        while len(replies) < answered + 20 and not done.is_set():
                            await trio.sleep(0.001)

            done = trio.Event()
            async with trio.open_nursery() as load:
                load.start_soon(end_sessions, done)
                async with trio.open_nursery() as calls:
                    for i in range(300):
                        calls.start_soon(credit, i)
                        if i % 10 == 9:
                            await trio.sleep(0.002)
                done.set()
            failed = [k for k, r in replies.items() if not r.ok]
            assert all((r.status, r.error) == (500, "INTERNAL") and "nothing was applied" in r.message
                       for k, r in replies.items() if k in failed), {k: replies[k] for k in failed}
            with psycopg.connect(pg_url, autocommit=True) as db:
                rows = dict(db.execute("SELECT ext_id, COUNT(*) FROM finance WHERE ext_id IS NOT NULL GROUP BY "
                                       "ext_id").fetchall())
            assert {k for k, r in replies.items() if r.ok} == set(rows) and set(rows.values()) <= {1}
            for k in failed:  # the retries, now that nothing ends the sessions
                retry = await c.call("CreditIn", {"login": login, "amount": 1 + int(k[1:]) % 5, "comment": "x"},
                                     ext_id=k)
                assert retry.ok, retry
            user = await c.call("GetUser", {"login": login})
            assert user.data["credit"] == sum(1 + i % 5 for i in range(300)), user
        assert ended > 0 and len(failed) < 300 and (await h.verify()).ok
        print(f"{writer}: {ended} sessions ended, {len(failed)} of 300 answered 500 and retried")
        nursery.cancel_scope.cancel()
