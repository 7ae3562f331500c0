"""Reads on read-only connections of their own, in worker threads: each read sees one committed snapshot (SQLite's
WAL, PostgreSQL's REPEATABLE READ), and neither a slow read nor a slow reader ever holds the writer or waits for it."""

from __future__ import annotations

from typing import Any, Callable

import trio

from syncledger.ledger import engine


def _in_snapshot(fn: Callable[..., Any], db: Any, *args: Any) -> Any:
    db.execute(engine.snapshot(db))  # every query of fn reads the same snapshot
    try:
        return fn(db, *args)
    finally:
        db.execute("ROLLBACK")


class ReadPool:
    def __init__(self, path: str, size: int = 2, *, threaded: bool = True):
        self.threaded = threaded  # False: on the Trio thread (the single-threaded mode the MockClock tests use)
        self._free = [engine.connect_ro(path) for _ in range(size)]
        self._all = list(self._free)
        self._limiter = trio.CapacityLimiter(size)

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)`` on one of the pool's connections, in a worker thread."""
        if not self.threaded:
            return _in_snapshot(fn, self._free[0], *args)
        async with self._limiter:
            db = self._free.pop()
            try:
                return await trio.to_thread.run_sync(_in_snapshot, fn, db, *args)
            finally:
                self._free.append(db)

    def close(self) -> None:
        for db in self._all:
            db.close()
