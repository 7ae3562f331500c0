"""The journal of backups beside an SQLite ledger, ``PATH.backups``: one JSON line for each backup ``syncledger
backup`` wrote and verified (when it ended, where it went, the head it holds, its size, how long it took),
appended and fsynced, mode 0600. Never rewritten nor pruned: ``syncledger status`` and ``/metrics`` read its
last record."""

from __future__ import annotations

import errno
import json
import os
from typing import Any

TAIL = 64 * 1024  # bytes read from the journal's end to find its last record (a record is a few hundred)


def journal_path(db_path: str) -> str:
    """Where the backups of the ledger at ``db_path`` are recorded: beside it (as its key and lock files)."""
    return os.path.realpath(db_path) + ".backups"


def record(db_path: str, when: float, to: str, head: str, size: int, seconds: float) -> str:
    """Append one backup's record to the journal of ``db_path`` and make it durable (the file, and its name when
    this made it). The journal's path."""
    path = journal_path(db_path)
    line = json.dumps({"time": round(when, 3), "to": os.path.abspath(to), "head": head, "bytes": size,
                       "seconds": round(seconds, 3)}) + "\n"
    made = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        end, data = os.fstat(fd).st_size, line.encode()
        if os.write(fd, data) != len(data):  # a full disk: take the torn line back, so the next record reads
            os.ftruncate(fd, end)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)
    finally:
        os.close(fd)
    if made:
        folder = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def last(db_path: str) -> dict[str, Any] | None:
    """The journal's last record (None: no journal, or none in it that reads); OSError if it cannot be read. A
    torn or foreign line is passed over."""
    try:
        with open(journal_path(db_path), "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - TAIL, 0))
            tail = f.read(TAIL)
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict) and isinstance(found.get("time"), (int, float)) and isinstance(found.get("to"), str):
            return found
    return None
