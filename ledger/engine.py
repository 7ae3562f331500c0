"""The two database engines under the ledger: SQLite (a file, or ``:memory:``) and PostgreSQL (a
``postgresql://`` URL, through psycopg 3). Opens their connections and hides the few ways they differ.

The ledger's SQL is written once, in the dialect both understand (``?`` placeholders; upserts with
``ON CONFLICT``). A PostgreSQL connection is wrapped in :class:`PgConnection`, which speaks to the store like
an ``sqlite3`` connection in autocommit mode (``execute``, ``executemany``, ``in_transaction``,
``total_changes``); what remains different (opening, read snapshots, locking the head, errors) is here.
psycopg is imported only for a PostgreSQL ledger: SQLite needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import RolledBack

# A read snapshot (every query of a read or an audit sees the same committed state).
SQLITE_SNAPSHOT = "BEGIN"
PG_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# A PostgreSQL batch locks the ledger's head row (meta 'batch') first: batches serialise on it, and it
# tells whether anyone else wrote since this store's last batch.
# It also gives the batch's transaction id: asked after a COMMIT whose answer was lost (txid_status).
PG_LOCK_HEAD = "SELECT value, txid_current() FROM meta WHERE key = 'batch' FOR UPDATE"
PG_XACT_STATUS = "SELECT txid_status(?)"
# A session, known by its pid and start (a pid alone may be another's by now): the store's own, to end it
# when its connection was lost but the database still keeps it (a cut it has not noticed yet).
PG_SESSION = "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
PG_END_SESSION = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ? AND backend_start = ?"
PG_SET_BATCH = "UPDATE meta SET value = ? WHERE key = 'batch'"
# A node of a cluster (several servers on one ledger) also keeps the next order number beside the head, and
# tells the other nodes when its batch commits (payload: the schema, and the batch's last seq).
PG_NEXT_ORDER = "SELECT value FROM meta WHERE key = 'order'"
PG_SET_HEAD = "UPDATE meta SET value = CASE key WHEN 'batch' THEN ? ELSE ? END WHERE key IN ('batch', 'order')"
PG_NOTIFY = "SELECT pg_notify('syncledger', ?)"
PG_CHANNEL = "syncledger"
# Every session's bounds against a network or a database that stalls (the URL's own settings win): a connect
# that does not answer, and a connection that goes silent, fail within seconds instead of hanging a thread.
PG_CONNECT_BOUNDS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "10",
                     "keepalives_interval": "5", "keepalives_count": "3", "tcp_user_timeout": "20000"}
# A server's sessions (the batch's, the readers'): a transaction whose client stalled (SIGSTOP, a cut) is
# ended by the database after IDLE_IN_TRANSACTION, letting go of the head row it holds, and a batch waiting
# for that row gives up after LOCK_WAIT (500: nothing applied). Settings of the database's own win.
PG_SESSION_BOUNDS = {"idle_in_transaction_session_timeout": "5s", "lock_timeout": "2s"}


def is_postgres(db: str) -> bool:
    """Does ``db`` name a PostgreSQL ledger (a ``postgresql://`` or ``postgres://`` URL)?"""
    return db.startswith(("postgresql://", "postgres://"))


def shown(db: str) -> str:
    """``db`` as it may be printed or logged: a URL's password is replaced by ``***``."""
    if not is_postgres(db):
        return db
    url = urlsplit(db)
    if url.password is None:
        return db
    user = url.username or ""
    host = url.netloc.rpartition("@")[2]
    return urlunsplit(url._replace(netloc=f"{user}:***@{host}"))


def said(error: BaseException) -> str:
    """An error's message on one line (PostgreSQL's add DETAIL, HINT and LINE lines)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def errors() -> tuple[type[Exception], ...]:
    """The exception classes of the database drivers (psycopg's only once it is imported)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ImportError("a PostgreSQL ledger needs psycopg 3: pip install 'psycopg[binary]'") from None
    return psycopg




class PgConnection:
    """A psycopg connection in autocommit mode (transactions are explicit, as with the store's sqlite3
    connections) with the part of sqlite3's interface the ledger uses: ``?`` placeholders become ``%s``,
    ``total_changes`` counts the rows that writes changed, ``in_transaction`` is libpq's status. Rows of a whole
    table (``INSERT INTO t VALUES (?, ...)``) given to :meth:`executemany` go in by COPY: 2-4x the rows/s of
    psycopg's pipelined executemany, in one round trip.

    A connection with ``reopen`` (the readers, and the store's own) that was lost between two transactions (a
    database restart, an idle connection cut) is opened again when the next statement outside a transaction
    finds it lost, and the statement runs there: nothing of a transaction was sent yet. Inside a transaction
    the loss is the caller's to judge (the store asks what became of its batch's COMMIT: ``Store._landed``)."""

    def __init__(self, conn: Any, reopen: Any = None):
        self.conn, self._reopen = conn, reopen
        self.total_changes = 0
        self._sql: dict[str, tuple[str, bool]] = {}  # the ledger's text -> (psycopg's, does it write)
        self._copy: dict[str, str | None] = {}  # an executemany's text -> its COPY statement, if it has one
        status = _psycopg().pq.TransactionStatus
        self._idle = status.IDLE
        self._outside = (status.IDLE, status.UNKNOWN)  # no transaction (UNKNOWN: the connection is already lost)
        self._cursors = 0

    def _text(self, sql: str) -> tuple[str, bool]:
        known = self._sql.get(sql)
        if known is None:
            known = self._sql[sql] = (to_psycopg(sql), sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"))
        return known

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        text, writes = self._text(sql)
        idle = self._reopen is not None and self.conn.info.transaction_status in self._outside
        try:
            cursor = self.conn.execute(text, tuple(params))
        except _psycopg().OperationalError:
            if not (idle and lost(self)):  # (inside a transaction: its snapshot cannot be resumed)
                raise
            self.reopen()
            cursor = self.conn.execute(text, tuple(params))
        if writes:
            self.total_changes += max(cursor.rowcount, 0)
        elif text == "COMMIT" and cursor.statusmessage != "COMMIT":
            raise RolledBack("COMMIT was answered ROLLBACK: the transaction had failed")
        return cursor

    def reopen(self) -> None:
        """A new session in place of this one (which is closed). Should the database be out of reach, the
        next statement outside a transaction tries again."""
        try:
            self.conn.close()
        except _psycopg().Error:
            pass
        self.conn = self._reopen()

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        copy = self._copy.get(sql, "")
        if copy == "":
            whole = re.fullmatch(r"INSERT INTO (\w+) VALUES \(\?(?:,\?)*\)", sql)
            copy = self._copy[sql] = f"COPY {whole[1]} FROM STDIN" if whole else None
        cursor = self.conn.cursor()
        if copy is None:
            cursor.executemany(self._text(sql)[0], rows)  # pipelined by psycopg: one round trip for the rows
        else:
            with cursor.copy(copy) as out:
                for row in rows:
                    out.write_row(row)
        self.total_changes += max(cursor.rowcount, 0)
        return cursor

    def stream(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """A server-side cursor (inside a transaction): rows arrive in pages, never all at once."""
        self._cursors += 1
        cursor = self.conn.cursor(name=f"syncledger_{self._cursors}")
        cursor.itersize = 5000
        cursor.execute(self._text(sql)[0], tuple(params))
        return cursor

    def script(self, sql: str) -> None:
        """Several statements in one go (no parameters)."""
        self.conn.execute(sql.encode())

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != self._idle

    def close(self) -> None:
        self._reopen = None
        self.conn.close()


def to_psycopg(sql: str) -> str:
    """A statement in psycopg's notation: ``?`` outside quotes becomes ``%s``, a literal ``%`` is doubled."""
    if "?" not in sql and "%" not in sql:
        return sql
    out, quote_ = [], ""
    for ch in sql:
        if quote_:
            if ch == quote_:
                quote_ = ""
        elif ch in "'\"":
            quote_ = ch
        elif ch == "?":
            ch = "%s"
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


def connect_postgres(url: str, *, read_only: bool = False, on_open: Callable[[Any], None] | None = None
                     ) -> PgConnection:
    """A connection to the PostgreSQL database at ``url`` (OperationalError if it cannot be reached). A
    read-only one, or one with ``on_open`` (run on each new session: the first and those that replace a lost
    one), is opened again when lost between two transactions (see :class:`PgConnection`)."""
    psycopg = _psycopg()
    given = psycopg.conninfo.conninfo_to_dict(url)
    bounds = {key: value for key, value in PG_CONNECT_BOUNDS.items() if key not in given}

    def connect() -> Any:
        conn = psycopg.connect(url, autocommit=True, application_name=f"syncledger pid {os.getpid()}", **bounds)
        try:
            if read_only:
                conn.execute("SET default_transaction_read_only = on")
            if on_open is not None:
                on_open(conn)
        except BaseException:
            conn.close()
            raise
        return conn
    return PgConnection(connect(), connect if read_only or on_open is not None else None)


def bound_session(conn: Any) -> None:
    """Give a server's PostgreSQL session (psycopg's connection) PG_SESSION_BOUNDS, where the database's
    own settings (the URL's options, the role's, the database's) leave them off."""
    for name, value in PG_SESSION_BOUNDS.items():
        if conn.execute(f"SHOW {name}").fetchone()[0] in ("0", "0ms"):
            conn.execute(f"SET {name} = '{value}'")


def connect_ro(db: str, on_open: Callable[[Any], None] | None = None) -> Any:
    """A read-only connection of its own to the ledger ``db`` (autocommit; open a snapshot with
    :func:`snapshot`). FileNotFoundError if an SQLite ledger file is not there (nothing is created).
    ``on_open``: run on each new PostgreSQL session (see :func:`connect_postgres`)."""
    if is_postgres(db):
        return connect_postgres(db, read_only=True, on_open=on_open)
    if not os.path.isfile(db):
        raise FileNotFoundError(f"no ledger at {db}")
    # Quote the path: a "?" or "#" in it would otherwise end the URI's path and open another file.
    return sqlite3.connect(f"file:{quote(db)}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)


def connect(db: str) -> Any:
    """A read-write connection of its own (autocommit), beside the store's: for small administrative writes."""
    if is_postgres(db):
        return connect_postgres(db)
    return sqlite3.connect(db, isolation_level=None)


def snapshot(db: Any) -> str:
    """The statement that opens one read snapshot on connection ``db``."""
    return PG_SNAPSHOT if isinstance(db, PgConnection) else SQLITE_SNAPSHOT


def data_version(db: Any) -> int | None:
    """A number that changes when another connection commits to the ledger (SQLite's data_version); None
    for PostgreSQL, which has none: the caller reads again."""
    if isinstance(db, PgConnection):
        return None
    return db.execute("PRAGMA data_version").fetchone()[0]


def writable(db: str) -> bool:
    """Is the ledger there for this process to write? A file: it exists and may be written; memory always;
    PostgreSQL: its connection's failures show in the batches themselves."""
    if db == ":memory:" or is_postgres(db):
        return True
    return os.path.exists(db) and os.access(db, os.W_OK)


def fatal(error: BaseException) -> bool:
    """Did the database itself fail (disk, I/O, a lost connection, corruption), rather than refuse one
    statement's rows (a constraint, a value out of range)? Then the whole batch fails."""
    if isinstance(error, sqlite3.DatabaseError):
        return not isinstance(error, sqlite3.IntegrityError)
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(error, psycopg.Error) and \
        not isinstance(error, (psycopg.IntegrityError, psycopg.DataError))


def integrity(error: BaseException) -> bool:
    """A constraint refused the statement's rows (a unique key, an append-only trigger)."""
    psycopg = sys.modules.get("psycopg")
    return isinstance(error, sqlite3.IntegrityError) or (psycopg is not None and isinstance(error, psycopg.IntegrityError))


def pg_ok() -> int:
    """libpq's status of a connection in order (ConnStatus.OK)."""
    return _psycopg().pq.ConnStatus.OK


def lost(db: PgConnection) -> bool:
    """Is the connection gone (the server ended the session, or the network failed)?"""
    return db.conn.closed or db.conn.broken


def refused_commit(db: PgConnection, error: BaseException) -> bool:
    """After a failed COMMIT on PostgreSQL: is it certain that nothing was written? True when the server
    itself answered (an error with an SQLSTATE, or ROLLBACK) and the connection is fine and idle; a lost
    connection leaves the outcome unknown."""
    psycopg = _psycopg()
    status = db.conn.info.status
    answered = isinstance(error, RolledBack) or getattr(error, "sqlstate", None) is not None
    return answered and status == psycopg.pq.ConnStatus.OK and not db.in_transaction


# ---------------------------------------------------------------- the PostgreSQL schema's triggers, for verify

def normalise_trigger(definition: str) -> str:
    """A trigger's definition as PostgreSQL prints it (pg_get_triggerdef), without schema names."""
    return re.sub(r'\b(?:\w+|"[^"]+")\.(?=\w)', "", " ".join(definition.split()).rstrip(";").rstrip())
