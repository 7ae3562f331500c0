"""One server per ledger: an exclusive ``flock`` on ``PATH.lock`` beside the database (the real path, so a
symlink to the ledger finds the same lock), holding the pid."""

from __future__ import annotations

import fcntl
import os

from syncledger.ledger.store import LedgerOpenError


class LedgerLocked(Exception):
    """Another process serves this ledger."""


class LedgerLock:
    """Held for as long as the server runs; the kernel releases it when the process dies (even by kill -9)."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, db: str) -> LedgerLock | None:
        """Lock ``db`` for this process (None for an in-memory ledger); LedgerLocked names the holder."""
        if db == ":memory:" or db.startswith("file::memory:"):
            return None
        path = os.path.realpath(db) + ".lock"  # a symlink to the ledger finds the same lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:  # a missing directory, no permission: the ledger itself cannot be used
            raise LedgerOpenError(f"cannot open ledger {db}: {e.strerror} ({path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LedgerLocked(f"{db} is already served by another syncledger (pid {holder})") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1
