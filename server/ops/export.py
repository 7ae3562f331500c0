"""``syncledger export``: a table of the ledger as CSV, JSON or NDJSON, streamed from one read snapshot (with
sqlite-utils; on PostgreSQL from one REPEATABLE READ snapshot)."""

from __future__ import annotations

import csv
import json
import sqlite3
from typing import IO, Iterator

from syncledger.ledger import engine, migrations

from . import OpsError, open_ro


# What each name exports: a table (or a join) and the order it comes in; ``since`` filters by event seq.
EXPORTS = {
    "accounts": 'SELECT login, name, "group", currency, created, leverage, email, enable FROM accounts ORDER BY login',
    "finance": ("SELECT f.id, e.seq, f.order_id, f.version, f.login, f.cmd, f.state, f.amount, f.delta, f.balance, "
                "f.credit, f.comment, f.open_time, f.close_time, f.source, f.ext_id, f.created, f.hash "
                "FROM finance f JOIN events e ON e.record_id = f.id WHERE :since IS NULL OR e.seq > :since "
                "ORDER BY f.id"),
    "events": "SELECT seq, type, record_id, data, hash FROM events WHERE :since IS NULL OR seq > :since ORDER BY seq",
    "wallet": ("SELECT kind, txid, login, ref_id, game_id, amount, payload, status, order_id, seq, created, provider, "
               "game_type, game_session FROM wallet_tx WHERE :since IS NULL OR seq > :since ORDER BY created, kind, txid"),
}
FORMATS = ("csv", "json", "ndjson")


def export_rows(db_path: str, what: str, since: int | None = None) -> Iterator[dict]:
    """The rows of ``what`` as dicts, streamed from one read snapshot. Money columns are micro-units."""
    if engine.is_postgres(db_path):
        yield from _export_pg(db_path, what, since)
        return
    import sqlite_utils  # (here: the CLI imports this module at every start, for the names above)
    db = sqlite_utils.Database(open_ro(db_path))
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
    db = open_ro(db_path)
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
