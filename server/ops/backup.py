"""``syncledger backup`` and ``restore``, safe beside a running server: an online, verified copy (SQLite's
backup API), and a restore that keeps whole the ledger it replaces. A PostgreSQL ledger is backed up and
restored with PostgreSQL's own tools."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from syncledger.ledger import engine, head, make_private, verify_path

from .. import backups
from ..core.lockfile import LedgerLock, LedgerLocked
from . import OpsError, open_ro


@dataclass(frozen=True)
class Copied:
    path: str
    bytes: int
    seconds: float
    head: str
    report: str
    kept: str | None = None  # restore: the ledger it replaced, kept beside it
    lost: int | None = 0  # restore: how many of that ledger's events the backup lacks (None: it was unreadable)


def _not_postgres(db_path: str, tool: str) -> None:
    if engine.is_postgres(db_path):
        raise OpsError(f"a PostgreSQL ledger is {'backed up' if tool == 'pg_dump' else 'restored'} with PostgreSQL's "
                       f"own tools: {tool} (then syncledger verify --db URL)")


def backup_path(db_path: str, folder: str) -> str:
    """The name of a new backup of ``db_path`` in the folder of backups ``folder``: ``NAME.backup-TIME.sqlite``
    (UTC, to the microsecond), the pattern :func:`prune` recognises."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return os.path.join(folder, f"{os.path.basename(db_path)}.backup-{stamp}.sqlite")


def prune(db_path: str, folder: str, keep: int) -> list[str]:
    """Keep the newest ``keep`` backups of ``db_path`` in ``folder`` and remove the older ones; only files whose
    name is exactly one :func:`backup_path` makes (nothing else in the folder is ever touched). The removed,
    oldest first."""
    pattern = re.compile(re.escape(os.path.basename(db_path)) + r"\.backup-\d{8}T\d{6}\.\d{6}Z\.sqlite")
    made = sorted(name for name in os.listdir(folder)
                  if pattern.fullmatch(name) and os.path.isfile(os.path.join(folder, name))
                  and not os.path.islink(os.path.join(folder, name)))
    removed = [os.path.join(folder, name) for name in made[:max(len(made) - keep, 0)]]  # (the stamp sorts by time)
    for path in removed:
        os.remove(path)
    if removed:
        _sync_dir(removed[0])
    return removed


def backup(db_path: str, to: str) -> Copied:
    """A consistent copy of the ledger while it serves (SQLite's online backup API reads one snapshot in
    pages; the server's writes go on), written to ``to`` (mode 0600), verified, then recorded in the journal
    beside the ledger (server/backups.py; a backup that fails or is interrupted records nothing)."""
    _not_postgres(db_path, "pg_dump")
    if os.path.exists(to):
        raise OpsError(f"{to} exists: a backup never overwrites a file")
    started = time.monotonic()
    partial = f"{to}.partial-{os.getpid()}"
    _copy(db_path, partial)
    try:
        report = verify_path(partial)
        if not report.ok:
            raise OpsError(f"the copy does not verify: {report}")
        os.rename(partial, to)
    except BaseException:
        os.remove(partial)
        raise
    _sync_dir(to)
    copy = sqlite3.connect(f"file:{quote(to)}?mode=ro", uri=True)
    try:
        now_head = head(copy)
    finally:
        copy.close()
    copied = Copied(to, os.path.getsize(to), time.monotonic() - started, now_head, str(report))
    try:
        backups.record(db_path, time.time(), to, copied.head, copied.bytes, copied.seconds)
    except OSError as e:
        raise OpsError(f"backed up {db_path} to {to} (verified, head {copied.head}), but cannot record it in "
                       f"{backups.journal_path(db_path)}: {e.strerror}") from None
    return copied


def restore(backup_path: str, db_path: str, force: bool = False) -> Copied:
    """Put a verified backup in place of the ledger at ``db_path``: refused while a server holds that
    ledger, and (unless ``force``) when the backup lacks events the ledger holds. The ledger it replaces (if
    any) is kept whole beside it as ``PATH.replaced-TIME`` (``Copied.kept``; ``Copied.lost``: how many of its
    events the backup lacks, None if it could not be read); the journal of backups beside it stays as it is."""
    _not_postgres(db_path, "pg_restore")
    started = time.monotonic()
    report = verify_path(backup_path) if os.path.exists(backup_path) else None
    if report is None:
        raise OpsError(f"no backup at {backup_path}")
    if not report.ok:
        raise OpsError(f"{backup_path} does not verify, nothing was restored: {report}")
    try:
        lock = LedgerLock.acquire(db_path)
    except LedgerLocked as e:
        raise OpsError(f"{e}: stop it before restoring") from None
    lost: int | None = 0
    try:
        if os.path.exists(db_path):
            lost = _events_lost(db_path, backup_path)
            if lost != 0 and not force:
                why = f"{db_path} cannot be read" if lost is None else (
                    f"restoring {backup_path} would roll back {lost} acknowledged events of {db_path} (not in the "
                    "backup)")
                raise OpsError(f"{why}: nothing was restored; restore --force does it, keeping the ledger it "
                               "replaces beside it")
            if lost is not None:
                _checkpoint(db_path)
        partial = f"{db_path}.restoring-{os.getpid()}"
        _copy(backup_path, partial)
        try:
            kept = _keep(db_path) if os.path.exists(db_path) else None
            os.rename(partial, db_path)  # the ledger's name moves from the old file to the new one at once
        except BaseException:
            os.remove(partial)
            raise
        _sync_dir(db_path)
    finally:
        if lock is not None:
            lock.release()
    db = open_ro(db_path)
    try:
        now_head = head(db)
    finally:
        db.close()
    return Copied(db_path, os.path.getsize(db_path), time.monotonic() - started, now_head, str(report), kept, lost)


def _events_lost(db_path: str, backup_path: str) -> int | None:
    """How many of the ledger's events the backup lacks (None: the ledger cannot be read, a corrupt file): those
    after the last event both hold (an event's hash covers every event before it, so what two chains share is
    a prefix). Read-only: SQLite opening a file it cannot read as a database read-write may delete its -wal."""
    ledger, backup = open_ro(db_path), open_ro(backup_path)
    try:
        end = ledger.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        shared, top = 0, min(end, backup.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
        while shared < top:  # a binary search for the last event both chains hold
            mid = (shared + top + 1) // 2
            query = "SELECT hash FROM events WHERE seq = ?"
            if ledger.execute(query, (mid,)).fetchone() == backup.execute(query, (mid,)).fetchone():
                shared = mid
            else:
                top = mid - 1
        return end - shared
    except sqlite3.Error:
        return None
    finally:
        ledger.close()
        backup.close()


def _checkpoint(db_path: str) -> None:
    """Move the ledger's write-ahead log into its file, which alone is then the whole ledger: the log that a
    crash left holds every commit since the last checkpoint, and a copy of the file without it would lose
    them (so would the file with its log deleted)."""
    make_private(db_path)
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        busy, logged, moved = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.close()
    if busy or logged != moved:
        raise OpsError(f"cannot move {db_path}-wal into {db_path} (another process has the ledger open): nothing "
                       "was restored")


def _copy(source_path: str, to: str) -> None:
    """A copy of the SQLite file ``source_path`` at ``to`` (a new file, 0600), by the backup API; nothing is left
    at ``to`` (nor a side file of it) when that fails, a full disk included."""
    source = open_ro(source_path)
    try:
        try:
            os.close(os.open(to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise OpsError(f"cannot create {to}: {e.strerror}") from None
        try:
            target = sqlite3.connect(to)
            try:
                # One step, one read snapshot: in WAL mode a reader never holds the writer, while a backup in
                # several steps starts over whenever the server commits between two of them (under a steady
                # load it never finished on a 1M-row ledger).
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # a self-contained single file
            finally:
                target.close()
        except BaseException as e:
            for name in (to, to + "-journal", to + "-wal", to + "-shm"):
                if os.path.exists(name):
                    os.remove(name)
            if isinstance(e, (OSError, sqlite3.Error)):  # a full disk, most likely
                raise OpsError(f"cannot copy {source_path} to {to}: {getattr(e, 'strerror', None) or e}; "
                               "nothing of the copy was kept") from None
            raise
    finally:
        source.close()


def _keep(db_path: str) -> str:
    """Give the ledger at ``db_path`` a name of its own beside it, ``PATH.replaced-TIME`` (UTC, to the
    microsecond, with a counter should that name be taken), its side files moved along with matching names:
    never deleted, so that even a ledger that could not be checkpointed is kept whole. A hard link: it never
    replaces a file, and ``db_path`` names the ledger until the restored copy takes its place."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    for n in itertools.count():
        kept = f"{db_path}.replaced-{stamp}" + (f"-{n}" if n else "")
        try:
            os.link(db_path, kept)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise OpsError(f"cannot keep {db_path} as {kept}: {e.strerror}; nothing was restored") from None
    for side in ("-wal", "-shm"):  # (the checkpoint's close usually removed them)
        if os.path.exists(db_path + side):
            os.rename(db_path + side, kept + side)
    return kept


def _sync_dir(path: str) -> None:
    """Make the renames in ``path``'s directory durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
