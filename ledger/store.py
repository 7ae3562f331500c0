"""The ledger store: one database connection (SQLite or PostgreSQL, see ledger/engine.py), batches of commands
in one transaction, hash-chained rows.

No Trio here; the caller serialises every call (the server's mainLoop owns the Store).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import sqlite3
import time
from typing import Any, Callable, Sequence
from urllib.parse import quote


from . import engine, finance, migrations, reads, rules, wallet
from .chain import GENESIS, event_hash, finance_hash
from .commands import AddAccount, CatchUp, Finance, Outcome, ReceiptRow, receipt_outcome
from .errors import LedgerOpenError, Unsure
from .rules import Event, FinanceRequest, LedgerError, Version

log = logging.getLogger("syncledger.ledger")
SCHEMA_VERSION = migrations.LATEST
from .finance import MAX_ID  # (the largest login or order: the ledger package has it from here)
_ABSENT = object()  # in the undo log: the key was not in its mapping
_KEYS_PER_QUERY = 900  # ext_ids per prefetch query (SQLite's smallest bound on variables is 999)
_KEY_QUERY_SIZES = (1, 4, 16, 64, 256, _KEYS_PER_QUERY)
CATCH_UP_HELD = 10_000  # other nodes' events a node of a cluster holds to publish (more: its subscribers replay)
PG_READ_BACK_WAIT = 10.0  # seconds a lost session may take to end before its batch is called unknowable


class _Isolate(Exception):
    """Run the batch again, each command's rows written as it ends: a command failed after writing (then with
    a SAVEPOINT per command), or staged rows could not be written (``unstaged``: then the command they belong
    to fails alone, and the commands take the order numbers they took in the first run)."""

    def __init__(self, unstaged: bool = False):
        super().__init__()
        self.unstaged = unstaged






def make_private(path: str) -> None:
    """Make the ledger file at ``path`` and its side files the owner's alone (0600: an older release left them
    0644), before it is opened to write: the -wal, -shm and -journal SQLite makes then take the file's mode. A
    file this process cannot change (another user's) stays as it is, with a warning."""
    real = os.path.realpath(path)
    for name in (real, real + "-wal", real + "-shm", real + "-journal", real + ".lock"):
        try:
            st = os.stat(name)
        except OSError:  # not there (a file that cannot be reached fails the open itself)
            continue
        mode = st.st_mode & 0o777
        if mode & 0o077:
            try:
                if st.st_uid != os.geteuid():
                    raise PermissionError(errno.EPERM, "owned by another user")
                os.chmod(name, mode & 0o700)
            except OSError as e:
                log.warning("%s stays readable by other users (mode %o): %s", name, mode, e.strerror)


# A failed COMMIT with one of these did not reach the file, or did so completely (it is read back); any
# other error (an I/O error: the fsync may have failed) leaves the file's content unknowable.
_READ_BACK = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM}


class Store:
    """Owns the ledger database. Every write goes through :meth:`apply_batch`."""

    def __init__(self, path: str, *, synchronous: str = "FULL", create: bool = True, cluster: bool = False,
                 node: str = ""):
        """``cluster``: one node of several on a PostgreSQL ledger; each batch first takes in what the others
        committed (see :meth:`_catch_up`) instead of stopping because another writer moved the head. ``node``
        signs its notifications (its own tail leaves them alone)."""
        self.path = path
        # What differs by engine in a batch: how it begins; PostgreSQL also locks the head row first, and gives
        # a command that runs SQL of its own a savepoint (a failed statement aborts the whole transaction).
        self.postgres = engine.is_postgres(path)
        self._begin = "BEGIN" if self.postgres else "BEGIN IMMEDIATE"
        self._set_batch = engine.PG_SET_BATCH if self.postgres else "INSERT OR REPLACE INTO meta VALUES ('batch', ?)"
        self.cluster, self.node = cluster, node
        if cluster and not self.postgres:
            raise LedgerOpenError(f"several servers cannot share the SQLite ledger {path}: a cluster needs PostgreSQL")
        if self.postgres:
            self.db = self._open_postgres(path, synchronous, create)
        else:
            self._open_sqlite(path, synchronous, create)
        self._errors = engine.errors()  # the driver's errors (psycopg's are known once it is imported)
        self._handlers: dict[type, Callable[[Any], Outcome]] = {}
        self._undo: list[tuple[dict, Any, Any]] = []  # (mapping, key, old value or _ABSENT), undone by _revert
        # Inside a batch: rows not yet written (finance, events, idempotency, and the idempotency rows of applied
        # finance requests without their NULL columns: see _flush), the idempotency rows of the batch's keys
        # (prefetched, then as the batch leaves them), the newest version of each order it wrote.
        self._staged: tuple[list, list, list, list] = ([], [], [], [])
        self._keys: dict[tuple[int, str], tuple] = {}
        self._versions: dict[int, Version] = {}
        self._reserved: list[int] = []  # order numbers the batch's commands took (a rerun takes them again)
        self._replayed: list[int] = []
        self._foreign: list[Event] = []  # a cluster's: events other nodes committed, for the next CatchUp outcome
        self._skipped: int | None = None  # ... or the seq up to which they were too many to hold (see _catch_up)
        self._xid: int | None = None  # PostgreSQL: the id of the batch's transaction
        self._load()
        self._check_files()
        finance.install(self)
        wallet.install(self)

    def _open_sqlite(self, path: str, synchronous: str, create: bool) -> None:
        memory = path == ":memory:" or path.startswith("file::memory:")
        if not memory and not os.path.exists(path):
            if not create:
                raise LedgerOpenError(f"no ledger at {path}")
            try:  # a new ledger is the owner's alone (SQLite gives its -wal and -shm the same mode)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as e:
                raise LedgerOpenError(f"cannot create ledger {path}: {e.strerror}") from None
        if not memory:
            make_private(path)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise LedgerOpenError(f"cannot open ledger {path}: {e}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.created = migrations.version_of(self.db) == 0
            self.migrated = migrations.migrate(self.db, path)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise LedgerOpenError(f"cannot use ledger {path}: {e}") from None
        except BaseException:
            self.db.close()
            raise
        # The files this connection writes, to notice one unlinked or replaced under it (None: in memory).
        self._files: dict[str, tuple[int, int] | None] | None = None if memory else {path: None, path + "-wal": None}

    def _open_postgres(self, url: str, synchronous: str, create: bool) -> engine.PgConnection:
        """The ledger in the PostgreSQL database at ``url`` (its schema made there if ``create``). Durable
        commits unless ``synchronous`` is OFF (tests, benchmarks): synchronous_commit is never left off."""
        self._files = None  # no file of ours: the database server keeps its own
        self._synchronous, self._session = synchronous, None
        name = engine.shown(url)
        try:
            db = engine.connect_postgres(url, on_open=self._opened)
        except ImportError as e:
            raise LedgerOpenError(f"cannot open ledger {name}: {e}") from None
        except engine.errors() as e:
            raise LedgerOpenError(f"cannot open ledger {name}: {engine.said(e)}") from None
        try:
            self.created = migrations.version_of(db) == 0
            if self.created and not create:
                raise LedgerOpenError(f"no ledger at {name}")
            self.migrated = migrations.migrate(db, name)
        except engine.errors() as e:
            db.close()
            raise LedgerOpenError(f"cannot use ledger {name}: {engine.said(e)}") from None
        except BaseException:
            db.close()
            raise
        return db

    def _opened(self, conn: Any) -> None:
        """Each new session of the store's PostgreSQL connection (psycopg's own): durable commits unless
        ``synchronous`` is OFF (tests, benchmarks: synchronous_commit is never left off), plans made per
        execution, and its identity kept. A session that replaces a lost one first ends the old, should the
        database still keep it (a network cut it has not noticed): its open transaction, if any, rolls back
        and lets go of the head row; it could never commit, its client being gone."""
        # Plans made per execution: psycopg prepares a statement run five times, and PostgreSQL may then keep
        # a generic plan chosen while the ledger was small (the key prefetch's became a sequential scan: a
        # batch slowed in proportion to the ledger, 7,757 rows/s at 5,000 keys to 717 at 41,000).
        conn.prepare_threshold = None
        engine.bound_session(conn)
        if self._synchronous.upper() == "OFF":
            conn.execute("SET synchronous_commit = off")
        elif conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
            conn.execute("SET synchronous_commit = on")
        session = tuple(conn.execute(engine.PG_SESSION).fetchone())
        if self._session is not None:
            conn.execute(engine.to_psycopg(engine.PG_END_SESSION), self._session)
            log.warning("the ledger's database connection was lost; a new one is open")
        self._session = session

    def _load(self) -> None:
        db = self.db
        if self.cluster:  # the next order number is kept beside the head row, and the state read in one snapshot
            db.execute("INSERT INTO meta SELECT 'order', (COALESCE(MAX(order_id), 0) + 1)::text FROM finance "
                       "ON CONFLICT (key) DO NOTHING")
            self._schema = db.execute("SELECT current_schema()").fetchone()[0]
            db.execute(engine.PG_SNAPSHOT)  # (other nodes commit meanwhile)
        # login -> (currency, balance, credit); totals from each account's latest finance row.
        self.accounts: dict[int, tuple[str, int, int]] = {
            login: (currency, balance, credit)
            for login, currency, balance, credit in db.execute(
                "SELECT a.login, a.currency, COALESCE(f.balance, 0), COALESCE(f.credit, 0) FROM accounts a "
                "LEFT JOIN finance f ON f.id = (SELECT MAX(id) FROM finance WHERE login = a.login)"
            )
        }
        self.disabled = {login for (login,) in db.execute("SELECT login FROM accounts WHERE enable = 0")}
        row = db.execute("SELECT id, hash FROM finance ORDER BY id DESC LIMIT 1").fetchone()
        self.finance_id, self.finance_head = row if row else (0, GENESIS)
        row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self.seq, self.event_head = row if row else (0, GENESIS)
        max_order = db.execute("SELECT COALESCE(MAX(order_id), 0) FROM finance").fetchone()[0]
        self._orders = itertools.count(max_order + 1)  # only ever advanced: a number is never handed out twice
        self.batch_no = self._batch_in(db)
        if self.cluster:
            kept = int(db.execute("SELECT value FROM meta WHERE key = 'order'").fetchone()[0])
            self._orders = itertools.count(max(max_order + 1, kept))
            db.execute("COMMIT")

    @staticmethod
    def _batch_in(db: sqlite3.Connection) -> int:
        """The number of the last batch that wrote to the file (kept in meta by every such batch)."""
        row = db.execute("SELECT value FROM meta WHERE key = 'batch'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()

    def reserve_order(self) -> int:
        """A fresh order number (thread-safe; a number whose command fails is simply skipped)."""
        return next(self._orders)

    def register(self, command_type: type, handler: Callable[[Any], Outcome]) -> None:
        """Teach the store another command (used by ledger.wallet). On a node of a cluster, a command that names
        an account (``login``) first has it read, should another node have made it (see :meth:`account`)."""
        if self.cluster and "login" in getattr(command_type, "__dataclass_fields__", ()):
            run = handler

            def handler(c: Any) -> Outcome:
                self.account(c.login)
                return run(c)
        self._handlers[command_type] = handler

    # ------------------------------------------------------------------ batches

    def apply_batch(self, commands: Sequence[Any], rows: bool = False) -> list[Any]:
        """Apply ``commands`` in ONE transaction, one failure never sinking the others; returns one
        Outcome per command once committed (``rows``: an applied Finance command's is its receipt row instead,
        see commands.ReceiptRow, which the writer process sends as it is). A COMMIT that reports an error is
        read back: if the batch is in the file its outcomes are returned; if it is not, the error propagates
        (nothing was applied); if that cannot be known (an I/O error, a failed ROLLBACK, the file unlinked or
        replaced), Unsure is raised.

        The idempotency rows of the whole batch are read in one query per manager. Finance commands write
        nothing while they run: their finance, event and key rows are staged and written with executemany
        before any other command runs (it may read them back or reference them) and before COMMIT, so a
        refusal by the rules (they run on in-memory totals) has nothing to undo and needs no savepoint. Two
        rare cases roll the batch back and run it again (see _Isolate), leaving the same rows and answers as
        writing every row at once would: staged rows that cannot be written (an order number already taken,
        a number beyond SQLite's INTEGER), and a command that fails after writing."""
        if self.cluster and all(type(c) is CatchUp for c in commands):
            return self._catch_up_only(len(commands))
        self._replayed = []  # order numbers a rerun's commands take again (popped: the next one last)
        defer, isolate = True, False
        while True:
            self._reserved = []
            try:
                outcomes = self._apply(commands, defer, isolate)
                return outcomes if rows else [receipt_outcome(o) if type(o) is tuple else o for o in outcomes]
            except _Isolate as rerun:
                if rerun.unstaged:
                    self._replayed += self._reserved[::-1]
                defer, isolate = False, not rerun.unstaged

    def _apply(self, commands: Sequence[Any], defer: bool, isolate: bool) -> list[Any]:
        """One run of a batch, in phases: begin (PostgreSQL: lock the head), execute each command, write what
        is staged, stamp the batch's number, commit, and settle its fate; asserts at the phase boundaries."""
        db = self.db
        db.execute(self._begin)  # (PostgreSQL: on a new session, should the store's have been lost)
        self._staged = ([], [], [], [])
        heads, batch_no, start = self._mark(), self.batch_no, db.total_changes
        committing = False
        try:
            if self.postgres:
                self._lock_head()
                heads, batch_no = self._mark(), self.batch_no  # (a node of a cluster may have caught up)
            next_order = self._peek_order() if self.cluster else 0
            self._prefetch_keys(commands)
            outcomes, foreign, own = self._execute(commands, defer, isolate)
            self._write_staged()
            assert self.seq == heads[3] + own and self.finance_id == heads[1] + own, "seq and ids: one each per event"
            self._stamp(db.total_changes != start or (self.cluster and self._peek_order() != next_order))
            assert self._staged == ([], [], [], []), "nothing is left staged at COMMIT"
            committing = True
            self._sql_commit()
        except BaseException as error:
            landed = committing and self._landed(error, batch_no)
            if not committing and db.in_transaction and not (self.postgres and engine.lost(db)):
                self._rollback()  # (a lost session's transaction is ended by the database, unfinished)
            if not landed:
                self.batch_no = batch_no
                self._revert(heads)
                self._keys, self._versions = {}, {}
                raise
            log.warning("COMMIT reported %r, but the batch is in the ledger file: it stands", error)
        self._settle(foreign)
        return outcomes

    def _execute(self, commands: Sequence[Any], defer: bool, isolate: bool) -> tuple[list[Any], list[Event], int]:
        """Each command's outcome (an Outcome or a receipt row), one failure never sinking the others (a failure
        that only a rerun can undo raises _Isolate); also the other nodes' events, if no CatchUp took them, and
        the count of the batch's own."""
        db, handlers, mark_now = self.db, self._handlers, self._mark
        outcomes, foreign, own = [], self._foreign, 0
        savepoints = self.postgres
        for command in commands:
            if type(command) is CatchUp:  # the first one carries what other nodes committed
                outcomes.append(Outcome(data=self._skipped, events=foreign))
                foreign = []
                continue
            if type(command) is not Finance:
                self._write_staged()  # it may read rows back or reference them: they must be in SQL
            mark = mark_now()
            changes = db.total_changes
            # PostgreSQL: a savepoint for every command that runs SQL of its own (a deferred Finance only reads)
            guarded = isolate or (savepoints and (not defer or type(command) is not Finance))
            if guarded:
                db.execute("SAVEPOINT cmd")
            try:
                outcome = handlers[type(command)](command)
                if not defer:
                    self._flush()
            except Exception as error:
                if engine.fatal(error):
                    raise  # the database itself failed (disk, I/O, corruption): the whole batch fails
                if isolate:
                    db.execute("ROLLBACK TO cmd")
                elif db.total_changes != changes:
                    raise _Isolate() from error  # it wrote before failing: only a savepoint can undo that
                elif guarded:
                    db.execute("ROLLBACK TO cmd")  # PostgreSQL: the failed statement aborted the transaction
                elif savepoints and isinstance(error, self._errors):
                    raise _Isolate(unstaged=True) from error  # aborted with no savepoint: again, with them
                self._revert(mark)  # its staged rows too: they were never written
                if not isinstance(error, LedgerError):
                    if not engine.integrity(error):
                        log.exception("command %r failed; the others in its batch go on", command)
                    error = LedgerError(500, "INTERNAL", f"ledger refused the command: {error}")
                outcome = Outcome(error=error)
                self._remember_failure(command, error)
            if not defer:
                self._flush()
            if guarded:
                db.execute("RELEASE cmd")
            outcomes.append(outcome)
            own += 1 if type(outcome) is tuple else len(outcome.events)  # (a receipt row: its one event)
        assert len(outcomes) == len(commands), "one outcome per command"
        return outcomes, foreign, own

    def _stamp(self, wrote: bool) -> None:
        """Leave the batch's number in the ledger if it wrote anything, to be read back should its COMMIT fail
        (a node of a cluster: also the next order number, and a notification to the other nodes at COMMIT)."""
        if not wrote:
            return
        self.batch_no += 1
        if self.cluster:
            self.db.execute(engine.PG_SET_HEAD, (str(self.batch_no), str(self._peek_order())))
            self.db.execute(engine.PG_NOTIFY, (f"{self._schema} {self.seq} {self.node}",))
        else:
            self.db.execute(self._set_batch, (str(self.batch_no),))

    def _settle(self, foreign: list[Event]) -> None:
        """After a batch is in the ledger: nothing to undo, and the file checked (what it holds is unknown if
        it cannot be)."""
        self._undo.clear()
        self._keys, self._versions = {}, {}
        if foreign is not self._foreign:  # published with this batch
            self._foreign, self._skipped = [], None
        try:
            self._check_files()
        except Unsure:
            raise
        except Exception as e:  # committed, yet the file cannot be checked: what it holds is unknown
            raise Unsure(f"the ledger file could not be checked after a commit ({e})") from e

    def _lock_head(self) -> None:
        """PostgreSQL: lock the ledger's head row for this batch (batches serialise on it). It must hold this
        store's last batch number: anything else means another writer moved the ledger, and a batch chained
        to this store's heads would fork the hash chain. A node of a cluster takes in what the other nodes
        committed instead (the lock is held: nobody commits meanwhile)."""
        row = self.db.execute(engine.PG_LOCK_HEAD).fetchone()
        found, self._xid = (int(row[0]), row[1]) if row else (None, None)
        if self.cluster and found != self.batch_no:  # ('order' is written only under the head row's lock)
            self._catch_up(found, int(self.db.execute(engine.PG_NEXT_ORDER).fetchone()[0]))
        elif found != self.batch_no:
            raise Unsure(f"the ledger's head is at batch {found}, not at this server's {self.batch_no}: another "
                         "writer changed the ledger")

    def _catch_up(self, batch: int, order: int) -> None:
        """A node of a cluster: take in the rows other nodes committed after this store's heads (their batch
        ``batch``, the next order number ``order``): totals of the accounts in memory (the others are read when
        first needed, see :meth:`account`), both chain heads, seq, and the events, kept for the next CatchUp.
        More than CATCH_UP_HELD events are not held: the finance rows are streamed and the next CatchUp says
        up to which seq it skipped publishing (the node's subscribers then replay from the ledger). Memory
        changes only once everything was read."""
        if batch < self.batch_no:
            raise Unsure(f"the ledger's head went back from batch {self.batch_no} to {batch}: it was replaced")
        db = self.db
        events = db.execute("SELECT e.seq, e.type, f.order_id, e.data, e.hash FROM events e JOIN finance f ON "
                            "f.id = e.record_id WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                            (self.seq, CATCH_UP_HELD + 1)).fetchall()
        held = len(events) <= CATCH_UP_HELD
        if not held:
            events, head = [], tuple(db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone())
        else:
            head = (events[-1][0], events[-1][4]) if events else (self.seq, self.event_head)
        if events and events[0][0] != self.seq + 1:
            raise Unsure(f"the ledger's events go on at seq {events[0][0]}, not at {self.seq + 1}")
        sql, after = "SELECT id, order_id, login, balance, credit, hash FROM finance WHERE id > ? ORDER BY id", \
            (self.finance_id,)
        totals, last, replayed, used = {}, None, set(self._replayed), set()
        for last in (db.execute(sql, after).fetchall() if held else db.stream(sql, after)):
            if last[2] in self.accounts:
                totals[last[2]] = last[3:5]
            if last[1] in replayed:
                used.add(last[1])
        for login, (balance, credit) in totals.items():
            self.accounts[login] = (self.accounts[login][0], balance, credit)
        if last is not None:
            self.finance_id, self.finance_head = last[0], last[5]
        if head[0] > self.seq:
            if held:
                self._foreign += [Event(s, t, o, rules.with_seq(data.encode(), s)) for s, t, o, data, _ in events]
            else:  # (with what was held before: the subscribers replay it all)
                self._foreign, self._skipped = [], head[0]
            self.seq, self.event_head = head
        self._orders = itertools.count(max(self._peek_order(), order))  # (no node gives a number below it)
        self._replayed = [n for n in self._replayed if n not in used]  # a rerun's numbers nobody else took
        self.batch_no = batch

    def _catch_up_only(self, n: int) -> list[Outcome]:
        """A batch of CatchUp commands alone (a node of a cluster with nothing else to do): what other nodes
        committed, read from one snapshot without the head lock."""
        db = self.db
        db.execute(engine.PG_SNAPSHOT)
        try:
            head = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('batch', 'order')").fetchall())
            if int(head["batch"]) != self.batch_no:
                self._catch_up(int(head["batch"]), int(head["order"]))
        finally:
            if not engine.lost(db):
                db.execute("ROLLBACK")
        foreign, skipped, self._foreign, self._skipped = self._foreign, self._skipped, [], None
        return [Outcome(data=skipped, events=foreign)] + [Outcome() for _ in range(n - 1)]

    def _peek_order(self) -> int:
        """The order number :meth:`reserve_order` gives next (without taking it)."""
        n = next(self._orders)
        self._orders = itertools.count(n)
        return n

    def _prefetch_keys(self, commands: Sequence[Any]) -> None:
        """The idempotency rows of the batch's keyed commands: one primary-key query per manager (a row-value
        ``(manager, ext_id) IN (VALUES ...)`` would scan the whole table)."""
        wanted: dict[int, set[str]] = {}
        for c in commands:
            if isinstance(c, (Finance, AddAccount)) and c.manager is not None and c.ext_id is not None:
                wanted.setdefault(c.manager, set()).add(c.ext_id)
        self._keys = keys = {}
        for manager, ext_ids in wanted.items():
            ext_ids = list(ext_ids)
            for i in range(0, len(ext_ids), _KEYS_PER_QUERY):
                part = ext_ids[i:i + _KEYS_PER_QUERY]
                # padded to one of a few sizes: each distinct text is a prepared statement in sqlite3's cache
                part += part[-1:] * (next(n for n in _KEY_QUERY_SIZES if n >= len(part)) - len(part))
                for ext_id, *row in self.db.execute(
                        "SELECT ext_id, payload, status, error, message, seq, login FROM idempotency "
                        f"WHERE manager = ? AND ext_id IN ({','.join('?' * len(part))})", (manager, *part)):
                    keys[(manager, ext_id)] = (*row, None)

    def _flush(self) -> None:
        """Write the staged rows: finance, then the events that reference them, then the keys. (An applied
        finance request's key has its NULLs in the statement: Python 3.11's sqlite3 binds a None parameter
        through a failed adapter lookup, a raised and cleared AttributeError, half a microsecond each.)"""
        finance, events, keys, applied = self._staged
        self._staged = ([], [], [], [])
        if finance:
            self.db.executemany("INSERT INTO finance VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", finance)
            self.db.executemany("INSERT INTO events VALUES (?,?,?,?,?)", events)
        if applied:
            self.db.executemany("INSERT INTO idempotency VALUES (?,?,?,?,NULL,NULL,?,?,NULL)", applied)
        if keys:
            self.db.executemany("INSERT INTO idempotency VALUES (?,?,?,?,?,?,?,?,?)", keys)

    def _write_staged(self) -> None:
        """:meth:`_flush` between commands: a row that cannot be written belongs to no command known here, so
        the batch runs again writing each command's rows as it ends."""
        try:
            self._flush()
        except Exception as error:
            if engine.fatal(error):
                raise
            raise _Isolate(unstaged=True) from error

    def _sql_commit(self) -> None:  # the statements themselves: a test's fault switch may stand in for them
        self.db.execute("COMMIT")

    def _sql_rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def _rollback(self) -> None:
        """Roll back the open transaction; a ROLLBACK that fails leaves the file's state unknown."""
        try:
            self._sql_rollback()
        except self._errors as e:
            raise Unsure(f"ROLLBACK failed ({e}): the ledger's state is unknown") from e

    def _landed(self, error: BaseException, before: int) -> bool:
        """After ``error`` in a batch: did the batch reach the file? Rolls back what is still open; raises
        Unsure when it cannot know."""
        if self.postgres:
            return self._landed_postgres(error)
        if self.db.in_transaction:  # whatever failed, the transaction is still open: nothing is in the file
            self._rollback()
            return False
        if getattr(error, "sqlite_errorcode", None) not in _READ_BACK:
            raise Unsure(f"COMMIT failed ({error}): whether the batch is in the ledger file cannot be known")
        try:
            found = self._read_back()
        except sqlite3.Error as e:
            raise Unsure(f"COMMIT failed ({error}) and the ledger file cannot be read back ({e})") from e
        if found == self.batch_no:
            return True
        if found == before:
            return False
        raise Unsure(f"COMMIT failed ({error}) and the ledger file holds batch {found}, "
                     f"neither {before} nor {self.batch_no}")

    def _landed_postgres(self, error: BaseException) -> bool:
        """:meth:`_landed` on PostgreSQL. A COMMIT the server answered with an error (or ROLLBACK) applied
        nothing; one whose answer never came (a lost connection) is asked about on a new connection, by the
        batch's transaction id (txid_status), once the old session is gone."""
        db = self.db
        if not engine.lost(db):
            if db.in_transaction:  # (the COMMIT was never sent)
                self._rollback()
                return False
            if engine.refused_commit(db, error):
                return False
        deadline = time.monotonic() + PG_READ_BACK_WAIT
        try:
            db.reopen()
            while (status := db.execute(engine.PG_XACT_STATUS, (self._xid,)).fetchone()[0]) == "in progress" \
                    and time.monotonic() < deadline:
                time.sleep(0.005)  # the old session, told to end, has not yet rolled back
        except self._errors as e:
            raise Unsure(f"COMMIT failed ({engine.said(error)}) and whether the batch is in the ledger cannot "
                         f"be read back ({engine.said(e)})") from e
        if status in ("committed", "aborted"):
            return status == "committed"
        raise Unsure(f"COMMIT failed ({engine.said(error)}) and the ledger says its transaction is {status!r}")

    def _read_back(self) -> int:
        """The last batch number in the file, through a connection of its own (memory: this one)."""
        if self._files is None:
            return self._batch_in(self.db)
        db = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True)
        try:
            return self._batch_in(db)
        finally:
            db.close()

    def _check_files(self) -> None:
        """Fail (Unsure) if the database or its WAL was unlinked or replaced since it was opened: what was
        just committed would then be in no file that a restart reads."""
        if self._files is None:
            return
        for name, known in self._files.items():
            try:
                st = os.stat(name)
            except FileNotFoundError:
                if known is None:  # not made yet (a WAL appears with the first transaction)
                    continue
                raise Unsure(f"{name} was removed while the server had the ledger open") from None
            except OSError as e:  # its directory replaced by a file, no permission any more, ...
                raise Unsure(f"{name} can no longer be checked ({e.strerror})") from None
            identity = (st.st_dev, st.st_ino)
            if known is None:
                self._files[name] = identity
            elif identity != known:
                raise Unsure(f"{name} was replaced by another file while the server had the ledger open")

    def _mark(self) -> tuple:
        """What :meth:`_revert` goes back to."""
        finance, events, keys, applied = self._staged
        return len(self._undo), self.finance_id, self.finance_head, self.seq, self.event_head, len(finance), \
            len(events), len(keys), len(applied)

    def _revert(self, mark: tuple) -> None:
        """Undo in-memory changes and drop rows staged after ``mark`` (its SQL was rolled back)."""
        undo_len, self.finance_id, self.finance_head, self.seq, self.event_head, *staged = mark
        for rows, n in zip(self._staged, staged):
            del rows[n:]
        while len(self._undo) > undo_len:
            mapping, key, old = self._undo.pop()
            if old is not _ABSENT:
                mapping[key] = old
            else:
                del mapping[key]
                if mapping is self.accounts:
                    self.disabled.discard(key)

    def remember(self, mapping: dict, key: Any, value: Any) -> None:
        """Set ``mapping[key]``, undone should the command (or the batch) fail."""
        self._undo.append((mapping, key, mapping.get(key, _ABSENT)))
        mapping[key] = value

    # ------------------------------------------------------------------ writes

    def append(self, v: Version, now: int, source: str, ext_id: str | None) -> Event:
        """Append a finance version and its event, written at once; move the account's totals. Inside a batch
        only (a command other than Finance: the batch's earlier rows are written before it runs)."""
        event = self.stage(v, now, source, ext_id)
        self._flush()
        return event

    def stage(self, v: Version, now: int, source: str, ext_id: str | None) -> Event:
        """Chain a finance version and its event to the heads and stage their rows (see :meth:`_flush`)."""
        seq, etype, record = self.stage_record(v, now, source, ext_id)
        return Event(seq, etype, v.order, record)

    def stage_record(self, v: Version, now: int, source: str, ext_id: str | None) -> tuple[int, int, bytes]:
        """:meth:`stage`, giving the event's (seq, type, record) rather than an Event."""
        currency = self.accounts[v.login][0]
        row_id = self.finance_id + 1
        fhash = finance_hash(self.finance_head, row_id, v, source, ext_id, now)
        seq, etype, data = self.seq + 1, v.event_type, rules.record_json(v, rules.provider_of(source))
        ehash = event_hash(self.event_head, seq, etype, row_id, data)
        finance, events, _, _ = self._staged
        finance.append((row_id, v.order, v.version, v.login, v.cmd, v.state, v.amount, v.delta, v.balance, v.credit,
                        v.comment, v.open_time, v.close_time, source, ext_id, now, fhash))
        events.append((seq, etype, row_id, data.decode(), ehash))
        self.finance_id, self.finance_head, self.seq, self.event_head = row_id, fhash, seq, ehash
        self.remember(self.accounts, v.login, (currency, v.balance, v.credit))
        self.remember(self._versions, v.order, v)
        return seq, etype, rules.with_seq(data, seq)

    def stage_key(self, c: Finance | AddAccount, payload: str, status: int, error: str | None = None,
                   message: str | None = None, seq: int | None = None, login: int | None = None,
                   receipt: ReceiptRow | None = None) -> None:
        """Stage an idempotency row; the batch's later commands see it at once (with ``receipt``: no read)."""
        if error is None and message is None and login is None and seq is not None:
            self._staged[3].append((c.manager, c.ext_id, payload, status, seq, c.now))
        else:
            self._staged[2].append((c.manager, c.ext_id, payload, status, error, message, seq, c.now, login))
        self.remember(self._keys, (c.manager, c.ext_id), (payload, status, error, message, seq, login, receipt))

    def apply_finance(self, req: FinanceRequest, now: int, source: str, ext_id: str | None,
                      new_order: int | None = None) -> tuple[Version, Event]:
        """Apply one finance request by the rules and write its version and event (a handler's, see finance.py)."""
        return finance.apply_finance(self, req, now, source, ext_id, new_order)

    def reserve(self) -> int:
        """An order number for a command of the batch (on a rerun, see apply_batch)."""
        order = self._replayed.pop() if self._replayed else self.reserve_order()
        self._reserved.append(order)
        return order

    def _remember_failure(self, command: Any, error: LedgerError) -> None:
        """A keyed request that failed by the ledger's rules stays failed on replay."""
        if (isinstance(command, (Finance, AddAccount)) and command.manager is not None
                and command.ext_id is not None and error.status < 500 and error.code != "IDEMPOTENCY_CONFLICT"
                and (command.manager, command.ext_id) not in self._keys):
            payload = command.request.payload() if isinstance(command, Finance) else command.payload()
            self.stage_key(command, payload, error.status, error.code, error.message)

    def stored_key(self, manager: int, ext_id: str, payload: str) -> Outcome | tuple | None:
        """The stored outcome row of an earlier request with this (manager, extID): None if there is none,
        a conflict Outcome if it asked something else, else (status, error, message, seq, login, receipt)."""
        row = self._keys.get((manager, ext_id))
        if row is None:
            return None
        if row[0] != payload:
            return Outcome(error=LedgerError(
                409, "IDEMPOTENCY_CONFLICT", f"extID \"{ext_id}\" was used for a different request"), replay=True)
        return row[1:]

    # ------------------------------------------------------------------ reads

    def account(self, login: int | None) -> tuple[str, int, int] | None:
        """(currency, balance, credit) of account ``login``, None if there is none. A node of a cluster reads an
        account another node made when it is first needed (inside a batch: under the head lock)."""
        found = self.accounts.get(login)
        if found is None and self.cluster and login is not None and -MAX_ID <= login <= MAX_ID:
            row = self.db.execute(
                "SELECT a.currency, COALESCE(f.balance, 0), COALESCE(f.credit, 0), a.enable FROM accounts a LEFT "
                "JOIN finance f ON f.id = (SELECT MAX(id) FROM finance WHERE login = a.login) WHERE a.login = ?",
                (login,)).fetchone()
            if row is not None:
                found = self.accounts[login] = row[:3]
                if not row[3]:
                    self.disabled.add(login)
        return found

    def current_version(self, order: int) -> Version | None:
        v = self._versions.get(order)  # written in this batch: maybe staged, not yet in SQL
        return v if v is not None else reads.current_version(self.db, order)
