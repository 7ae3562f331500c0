"""``syncledger migrate``: copy a verified SQLite ledger, row for row, into a new PostgreSQL ledger in one
transaction, then verify it there and check that both sides end at the same head."""

from __future__ import annotations

from dataclasses import dataclass

from syncledger.ledger import Store, engine, verify_path

from ..core.lockfile import LedgerLock

# Parents before the rows that reference them; meta is set apart (its 'batch' row is the head's batch number).
# providers first: a new PostgreSQL ledger has its own row for `default`, replaced by the source's.
TABLES = ("providers", "accounts", "managers", "game_sessions", "finance", "events", "idempotency", "wallet_tx",
          "wallet_rounds")


class MigrateError(Exception):
    """The migration cannot start, or its result does not match its source: nothing was kept."""


@dataclass
class Migrated:
    rows: dict[str, int]
    head: str  # "SEQ:HASH", the same on both sides


def migrate(source: str, target: str) -> Migrated:
    """Copy the SQLite ledger ``source`` (no server may hold it; an older release's is migrated first, as serve
    would) into the PostgreSQL ledger ``target``, which must hold no ledger rows yet (its schema is made if
    missing). Both are verified; the copy is one transaction, so a failure leaves the target as it was."""
    if engine.is_postgres(source) or not engine.is_postgres(target):
        raise MigrateError("migrate copies an SQLite ledger file (--from) into PostgreSQL (--to postgresql://...)")
    lock = LedgerLock.acquire(source)  # LedgerLocked if a server holds it: rows written meanwhile would be lost
    try:
        Store(source, create=False).close()  # an older ledger is brought to this release's schema first
        before = _verified(source, "the source")
        target_lock = LedgerLock.acquire(target)
        try:
            Store(target).close()  # the schema and its migrations, if the target has none yet
            rows = _copy(source, target)
        finally:
            target_lock.release()
        after = _verified(target, "the copy")
        if after != before:
            raise MigrateError(f"the copy ends at {after}, the source at {before}")
        return Migrated(rows, after)
    finally:
        lock.release()


def _verified(db: str, which: str) -> str:
    report = verify_path(db)
    if not report.ok:
        raise MigrateError(f"{which} does not verify: {report.problem}")
    return report.head or "0:" + "0" * 64


def _copy(source: str, target: str) -> dict[str, int]:
    src = engine.connect_ro(source)
    dst = engine.connect_postgres(target)
    try:
        src.execute(engine.SQLITE_SNAPSHOT)  # one snapshot of the source for the whole copy
        if any(dst.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in TABLES if t != "providers"):
            raise MigrateError(f"{engine.shown(target)} already holds a ledger: migrate only into a new one")
        rows: dict[str, int] = {}
        dst.execute("BEGIN")
        try:
            dst.execute("DELETE FROM providers")  # (only the new ledger's `default`: the source has its own)
            for table in TABLES:
                columns = [name for (name,) in dst.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = ? ORDER BY ordinal_position", (table,))]
                names = ", ".join(f'"{c}"' for c in columns)
                count = 0
                with dst.conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as out:
                    for row in src.execute(f"SELECT {names} FROM {table}"):
                        out.write_row(row)
                        count += 1
                rows[table] = count
            batch = src.execute("SELECT value FROM meta WHERE key = 'batch'").fetchone()
            dst.execute(engine.PG_SET_BATCH, (batch[0] if batch else "0",))
            dst.execute("COMMIT")
        except BaseException:
            if dst.in_transaction:
                dst.execute("ROLLBACK")
            raise
        return rows
    except engine.errors() as e:
        raise MigrateError(f"copying into {engine.shown(target)} failed, nothing was kept: {engine.said(e)}") from None
    finally:
        src.close()
        dst.close()

