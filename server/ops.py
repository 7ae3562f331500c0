"""An operator's commands on a ledger, safe beside a running server: online backup (SQLite's backup API),
restore, and export of a table as CSV, JSON or NDJSON (streamed, with sqlite-utils; on PostgreSQL from one
REPEATABLE READ snapshot). A PostgreSQL ledger is backed up and restored with PostgreSQL's own tools."""

from __future__ import annotations

import csv
import itertools
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Iterator
from urllib.parse import quote

import sqlite_utils

from syncledger.ledger import engine, head, make_private, migrations, verify_path

from .core.lockfile import LedgerLock, LedgerLocked


class OpsError(Exception):
    """The operation cannot be done (one line for the operator)."""


@dataclass(frozen=True)
class Copied:
    path: str
    bytes: int
    seconds: float
    head: str
    report: str
    kept: str | None = None  # restore: the ledger it replaced, kept beside it
    lost: int | None = 0  # restore: how many of that ledger's events the backup lacks (None: it was unreadable)


def _open_ro(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise OpsError(f"no ledger at {path}")
    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)


def _not_postgres(db_path: str, tool: str) -> None:
    if engine.is_postgres(db_path):
        raise OpsError(f"a PostgreSQL ledger is {'backed up' if tool == 'pg_dump' else 'restored'} with PostgreSQL's "
                       f"own tools: {tool} (then syncledger verify --db URL)")


def backup(db_path: str, to: str) -> Copied:
    """A consistent copy of the ledger while it serves (SQLite's online backup API reads one snapshot in
    pages; the server's writes go on), written to ``to`` (mode 0600) and verified."""
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
    return Copied(to, os.path.getsize(to), time.monotonic() - started, now_head, str(report))


def restore(backup_path: str, db_path: str, force: bool = False) -> Copied:
    """Put a verified backup in place of the ledger at ``db_path``: refused while a server holds that
    ledger, and (unless ``force``) when the backup lacks events the ledger holds. The ledger it replaces (if
    any) is kept whole beside it as ``PATH.replaced-TIME`` (``Copied.kept``; ``Copied.lost``: how many of its
    events the backup lacks, None if it could not be read)."""
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
    db = _open_ro(db_path)
    try:
        now_head = head(db)
    finally:
        db.close()
    return Copied(db_path, os.path.getsize(db_path), time.monotonic() - started, now_head, str(report), kept, lost)


def _events_lost(db_path: str, backup_path: str) -> int | None:
    """How many of the ledger's events the backup lacks (None: the ledger cannot be read, a corrupt file): those
    after the last event both hold (an event's hash covers every event before it, so what two chains share is
    a prefix). Read-only: SQLite opening a file it cannot read as a database read-write may delete its -wal."""
    ledger, backup = _open_ro(db_path), _open_ro(backup_path)
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
    source = _open_ro(source_path)
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


# ---- export

# What each name exports: a table (or a join) and the order it comes in; ``since`` filters by event seq.
EXPORTS = {
    "accounts": 'SELECT login, name, "group", currency, created, leverage, email, enable FROM accounts ORDER BY login',
    "finance": ("SELECT f.id, e.seq, f.order_id, f.version, f.login, f.cmd, f.state, f.amount, f.delta, f.balance, "
                "f.credit, f.comment, f.open_time, f.close_time, f.source, f.ext_id, f.created, f.hash "
                "FROM finance f JOIN events e ON e.record_id = f.id WHERE :since IS NULL OR e.seq > :since "
                "ORDER BY f.id"),
    "events": "SELECT seq, type, record_id, data, hash FROM events WHERE :since IS NULL OR seq > :since ORDER BY seq",
    "wallet": ("SELECT kind, txid, login, ref_id, game_id, amount, payload, status, order_id, seq, created "
               "FROM wallet_tx WHERE :since IS NULL OR seq > :since ORDER BY created, kind, txid"),
}
FORMATS = ("csv", "json", "ndjson")


def export_rows(db_path: str, what: str, since: int | None = None) -> Iterator[dict]:
    """The rows of ``what`` as dicts, streamed from one read snapshot. Money columns are micro-units."""
    if engine.is_postgres(db_path):
        yield from _export_pg(db_path, what, since)
        return
    db = sqlite_utils.Database(_open_ro(db_path))
    try:
        version = migrations.version_of(db.conn)
        if 0 < version < migrations.LATEST:  # (export reads only: it never migrates a ledger)
            raise OpsError(f"{db_path} has schema version {version}, older than this syncledger's "
                           f"({migrations.LATEST}): run syncledger serve on it once (it brings the ledger up to date), "
                           "then export")
        db.execute("BEGIN")
        yield from db.query(EXPORTS[what], {"since": since})
    except sqlite3.Error as e:  # not a ledger
        raise OpsError(f"cannot export from {db_path}: {engine.said(e)}") from None
    finally:
        db.conn.close()


def _pg_query(what: str) -> str:
    """An export's query in psycopg's notation (``:since`` is a typed parameter: NULL has no type of its own)."""
    return EXPORTS[what].replace(":since", "%(since)s::bigint")


def _export_pg(url: str, what: str, since: int | None) -> Iterator[dict]:
    try:
        db = engine.connect_ro(url)
    except (ImportError, *engine.errors()) as e:
        raise OpsError(f"cannot export from {engine.shown(url)}: {engine.said(e)}") from None
    try:
        db.execute(engine.PG_SNAPSHOT)
        cursor = db.conn.cursor(name="syncledger_export")  # server-side: rows stream in pages
        try:
            cursor.execute(_pg_query(what), {"since": since})
        except engine.errors() as e:  # not a ledger: no such table
            raise OpsError(f"cannot export from {engine.shown(url)}: {engine.said(e)}") from None
        names = None
        for row in cursor:
            names = names or [d[0] for d in cursor.description]
            yield dict(zip(names, row))
    finally:
        db.close()


def _columns(db_path: str, what: str, since: int | None) -> list[str]:
    """The columns of an export (for the header of an empty CSV)."""
    if engine.is_postgres(db_path):
        db = engine.connect_ro(db_path)
        try:
            return [d[0] for d in db.conn.execute(_pg_query(what) + " LIMIT 0", {"since": since}).description]
        finally:
            db.close()
    db = _open_ro(db_path)
    try:
        return [d[0] for d in db.execute(EXPORTS[what] + " LIMIT 0", {"since": since}).description]
    finally:
        db.close()


def export(db_path: str, what: str, out: IO[str], fmt: str = "ndjson", since: int | None = None) -> int:
    """Write ``what`` to ``out`` in ``fmt``; returns the number of rows."""
    rows = export_rows(db_path, what, since)
    n = 0
    if fmt == "csv":
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            n += 1
        if writer is None:  # no rows: the header alone
            csv.writer(out).writerow(_columns(db_path, what, since))
        return n
    if fmt == "json":
        out.write("[")
        for row in rows:
            out.write(("," if n else "") + "\n" + json.dumps(row, ensure_ascii=False))
            n += 1
        out.write("\n]\n")
        return n
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n
