"""One server per ledger: an exclusive ``flock`` on ``PATH.lock`` beside the database (the real path, so a
symlink to the ledger finds the same lock), holding the pid; for PostgreSQL, a session advisory lock on the
ledger's schema, held by a connection of its own: exclusive for one server, shared by the nodes of a cluster."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from typing import Any, Callable

import trio

from syncledger.ledger import LedgerOpenError, engine

# The advisory lock's keys: this constant ("SYNC") and hashtext(the ledger's schema), so that each ledger of a
# database (one per schema) has its own.
log = logging.getLogger("syncledger.lock")
PG_LOCK_CLASS = 0x53594E43
PG_LOCK_GRACE = 1.0  # seconds a held lock is tried again (the session of a server that just stopped may linger)


class LedgerLocked(Exception):
    """Another process serves this ledger."""


class LedgerLock:
    """Held for as long as the server runs; the kernel releases it when the process dies (even by kill -9)."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, db: str, cluster: bool = False) -> LedgerLock | PgLock | None:
        """Lock ``db`` for this process (None for an in-memory ledger); LedgerLocked names the holder. With
        ``cluster``, this server is one node of several on a PostgreSQL ledger: the lock is shared with the other
        nodes, and still refused while a lone server holds the ledger (and the other way round)."""
        if db == ":memory:" or db.startswith("file::memory:"):
            return None
        if engine.is_postgres(db):
            return PgLock.acquire(db, shared=cluster)
        if cluster:
            raise LedgerOpenError(f"several servers cannot share the SQLite ledger {db}: a cluster needs PostgreSQL")
        path = os.path.realpath(db) + ".lock"  # a symlink to the ledger finds the same lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:  # a missing directory, no permission: the ledger itself cannot be used
            raise LedgerOpenError(f"cannot open ledger {db}: {e.strerror} ({path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace")
            os.close(fd)
            raise LedgerLocked(_held_by(db, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def note_writer(self, pid: int) -> None:
        """Name the writer process beside the server: it holds the lock too (inherited) until it ends."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()} {pid}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def _held_by(db: str, holder: str) -> str:
    """Why ``db`` cannot be locked, from the lock file's ``SERVER_PID [WRITER_PID]``: a writer process that
    outlived its server (killed while the writer was in a batch) is named as the holder it is."""
    pids = [int(p) for p in holder.split() if p.isdigit()]
    if len(pids) < 2:
        return f"{db} is already served by another syncledger (pid {pids[0] if pids else 'unknown'})"
    server, writer = pids[:2]
    if _alive(server):
        return f"{db} is already served by another syncledger (pid {server}, its writer process pid {writer})"
    return (f"{db} is still held by the writer process (pid {writer}) of a syncledger that has ended (pid {server}): "
            f"it ends by itself once its batch does; if it does not, stop it (kill {writer})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PgLock:
    """A PostgreSQL ledger's server lock: ``pg_try_advisory_lock`` on a connection kept open for the server's
    life (the database drops it when that connection ends, also when the process is killed). The connection's
    application_name carries the pid, so a second server names the holder. A session that has just ended may
    hold the lock a moment longer (its backend exits after its client): it is tried again for PG_LOCK_GRACE.
    The nodes of a cluster hold it shared (``pg_try_advisory_lock_shared``)."""

    def __init__(self, db: Any, url: str, shared: bool = False):
        self.db, self.url, self.shared = db, url, shared

    @classmethod
    def acquire(cls, url: str, shared: bool = False) -> PgLock:
        try:
            db = engine.connect_postgres(url)
        except (ImportError, *engine.errors()) as e:
            raise LedgerOpenError(f"cannot open ledger {engine.shown(url)}: {engine.said(e)}") from None
        try:
            if db.execute("SELECT current_schema()").fetchone()[0] is None:
                raise LedgerOpenError(f"cannot open ledger {engine.shown(url)}: the schema its search_path names "
                                      "does not exist")
            deadline = time.monotonic() + PG_LOCK_GRACE
            while True:
                if _try_lock(db, shared):
                    return cls(db, url, shared)
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            row = db.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) AND l.classid::bigint = ? "
                "AND l.objid::bigint = hashtext(current_schema())::bigint & 4294967295", (PG_LOCK_CLASS,)).fetchone()
        except BaseException:
            db.close()
            raise
        db.close()
        holder = row[0].removeprefix("syncledger pid ") if row and row[0].startswith("syncledger pid ") else "unknown"
        raise LedgerLocked(f"{engine.shown(url)} is already served by another syncledger (pid {holder})"
                           + (": nodes of a cluster cannot join a lone server" if shared else ""))

    async def keep(self, taken: Callable[[str], None]) -> None:
        """Hold the lock for the server's life. Its session lost (a database restart, the session ended), the
        lock is gone with it: take it again on a new session (tried again, up to every second, while that
        fails); should another server have taken it meanwhile, ``taken(reason)`` (the server stops)."""
        while True:
            conn = self.db.conn
            await trio.lowlevel.wait_readable(conn.pgconn.socket)  # (a notice, or the session's end)
            try:
                conn.pgconn.consume_input()
                if not conn.broken and conn.pgconn.status == engine.pg_ok():
                    continue
            except engine.errors():
                pass
            log.warning("the ledger's lock was lost with its database session: taking it again")
            pause = 0.0
            while True:
                await trio.sleep(pause)
                try:
                    held = await trio.to_thread.run_sync(self._take_again)
                    break
                except engine.errors():
                    pause = min(1.0, pause * 2 or 0.05)
            if not held:
                taken("the ledger's lock was lost with its database session, and another server has taken it")
                return
            log.warning("the ledger's lock is held again")

    def _take_again(self) -> bool:
        self.db.close()
        self.db = engine.connect_postgres(self.url)
        return _try_lock(self.db, self.shared)

    def release(self) -> None:
        """Let go of the lock by ending its session (the database drops a session's advisory locks with it):
        no statement to wait for, should the database have stalled."""
        if self.db is not None:
            self.db.close()
            self.db = None


def _try_lock(db: Any, shared: bool) -> bool:
    """Take the ledger's advisory lock on ``db``'s session, if no other session holds it (exclusively)."""
    return db.execute(f"SELECT pg_try_advisory_lock{'_shared' if shared else ''}(?, hashtext(current_schema()))",
                      (PG_LOCK_CLASS,)).fetchone()[0]
