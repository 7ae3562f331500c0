"""An operator's commands on a ledger, safe beside a running server: online backup (SQLite's backup API),
restore, and export of a table as CSV, JSON or NDJSON (streamed, with sqlite-utils; on PostgreSQL from one
REPEATABLE READ snapshot). A PostgreSQL ledger is backed up and restored with PostgreSQL's own tools."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import IO, Iterator
from urllib.parse import quote

import sqlite_utils

from syncledger.ledger import engine, head, verify_path

from .lockfile import LedgerLock, LedgerLocked


class OpsError(Exception):
    """The operation cannot be done (one line for the operator)."""


@dataclass(frozen=True)
class Copied:
    path: str
    bytes: int
    seconds: float
    head: str
    report: str


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
    source = _open_ro(db_path)
    partial = f"{to}.partial-{os.getpid()}"
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        target = sqlite3.connect(partial)
        try:
            # One step, one read snapshot: in WAL mode a reader never holds the writer, while a backup in
            # several steps starts over whenever the server commits between two of them (under a steady
            # load it never finished on a 1M-row ledger).
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # a self-contained single file
        finally:
            target.close()
        report = verify_path(partial)
        if not report.ok:
            raise OpsError(f"the copy does not verify: {report}")
        os.rename(partial, to)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    finally:
        source.close()
    copy = sqlite3.connect(f"file:{quote(to)}?mode=ro", uri=True)
    try:
        now_head = head(copy)
    finally:
        copy.close()
    return Copied(to, os.path.getsize(to), time.monotonic() - started, now_head, str(report))


def restore(backup_path: str, db_path: str) -> Copied:
    """Put a verified backup in place of the ledger at ``db_path``: refused while a server holds that
    ledger; the ledger it replaces (if any) is kept beside it as ``PATH.replaced-TIME``."""
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
    try:
        partial = f"{db_path}.restoring-{os.getpid()}"
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        source = _open_ro(backup_path)
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        if os.path.exists(db_path):
            os.rename(db_path, f"{db_path}.replaced-{int(time.time())}")
        for stale in (db_path + "-wal", db_path + "-shm"):  # they belonged to the ledger just moved aside
            if os.path.exists(stale):
                os.remove(stale)
        os.rename(partial, db_path)
    finally:
        if lock is not None:
            lock.release()
    db = _open_ro(db_path)
    try:
        now_head = head(db)
    finally:
        db.close()
    return Copied(db_path, os.path.getsize(db_path), time.monotonic() - started, now_head, str(report))


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
        db.execute("BEGIN")
        yield from db.query(EXPORTS[what], {"since": since})
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
