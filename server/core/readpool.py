"""Reads on read-only connections of their own, in worker threads: each read sees one committed snapshot (SQLite's
WAL, PostgreSQL's REPEATABLE READ), and neither a slow read nor a slow reader ever holds the writer or waits for it.
A read that does not answer within its bound (a stalled database or disk) is left to finish in its thread, its
connection closed when it does, and the caller is told so at once: the event loop never waits for it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import trio

from syncledger.ledger import engine

from ..health import Watch


class ReadStalled(Exception):
    """A read of the ledger did not answer within its bound: nothing was changed, and it may be asked again."""


def _in_snapshot(fn: Callable[..., Any], db: Any, *args: Any) -> Any:
    db.execute(engine.snapshot(db))  # every query of fn reads the same snapshot
    try:
        return fn(db, *args)
    finally:
        db.execute("ROLLBACK")


@dataclass(slots=True, eq=False)
class _Lent:
    """A connection lent to one read's thread; an abandoned one is closed by that thread when the read ends."""
    db: Any
    done: bool = False
    abandoned: bool = False


class ReadPool:
    def __init__(self, path: str, size: int = 2, *, threaded: bool = True, timeout: float,
                 watch: Watch | None = None):
        self.path, self.timeout, self.threaded = path, timeout, threaded  # threaded False: on the Trio thread
        self.watch = watch or Watch(trio.current_time)
        self._free = [self._connect() for _ in range(size)]
        self._limiter = trio.CapacityLimiter(size)
        self._guard = threading.Lock()
        self.abandoned = 0  # reads left to their threads after their bound

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)`` on one of the pool's connections, in a worker thread (ReadStalled after
        ``timeout`` seconds)."""
        if not self.threaded:
            return _in_snapshot(fn, self._free[0], *args)
        async with self._limiter:
            # A cancel seen here, not in to_thread's own first checkpoint: from here on, the thread runs
            # whatever happens, so it is the one that ends the read's watch entry and closes what is abandoned.
            await trio.lowlevel.checkpoint_if_cancelled()
            lent = _Lent(self._free.pop() if self._free else None)  # (None: one was abandoned; open another)
            watched = self.watch.begin("a read of the ledger")
            try:
                with trio.fail_after(self.timeout):
                    result = await trio.to_thread.run_sync(self._read, lent, watched, fn, args,
                                                           abandon_on_cancel=True)
            except BaseException as e:
                with self._guard:
                    lent.abandoned = not lent.done
                if not lent.abandoned:
                    self._give_back(lent)
                else:
                    self.abandoned += 1
                    if isinstance(e, trio.TooSlowError):
                        raise ReadStalled(f"the ledger did not answer a read within {self.timeout:g} s") from None
                raise
            self._give_back(lent)
            return result

    def _read(self, lent: _Lent, watched: int, fn: Callable[..., Any], args: tuple) -> Any:
        """In the worker thread: the read, on the lent connection (opened first if need be)."""
        try:
            if lent.db is None:
                lent.db = self._connect()
            return _in_snapshot(fn, lent.db, *args)
        finally:
            self.watch.end(watched)
            with self._guard:
                lent.done = True
                close = lent.abandoned
            if close and lent.db is not None:
                lent.db.close()

    def _connect(self) -> Any:
        return engine.connect_ro(self.path, on_open=engine.bound_session)

    def _give_back(self, lent: _Lent) -> None:
        if lent.db is not None:
            self._free.append(lent.db)

    def close(self) -> None:
        for db in self._free:
            db.close()
        self._free.clear()
