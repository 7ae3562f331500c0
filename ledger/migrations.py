"""Numbered schema migrations: a database at version N is brought to LATEST by steps N+1.., in one transaction.

A new database gets ``schema.sql`` (always the LATEST schema) in one go; tests check that both paths
give the same schema. To change the schema: edit ``schema.sql`` and append one step here; and for
PostgreSQL append the step, in its dialect, to PG_STEPS: a new PostgreSQL ledger is born at PG_BASE
(``schema.pg.sql``) and takes the steps as an older one does (a test checks that both engines reach LATEST).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from . import engine
from .errors import SchemaError

log = logging.getLogger("syncledger.ledger")




# The state of every round, from the wallet's rows (schema step 8; all of them settled game-wise then): open while
# an accepted debit has neither a later credit in its round nor its order deleted (cancelled, or by a manager).
_ROUNDS_OF_WALLET_TX = (
    """INSERT INTO wallet_rounds (provider, login, game_id, opened, updated, state)
    SELECT d.provider, d.login, d.game_id, MIN(d.created),
        (SELECT MAX(m.created) FROM wallet_tx m WHERE m.provider = d.provider AND m.login = d.login
            AND m.game_id = d.game_id AND m.status = 'OK' AND m.kind IN ('debit', 'credit', 'cancel')),
        CASE WHEN EXISTS (SELECT 1 FROM wallet_tx o WHERE o.provider = d.provider AND o.login = d.login
                AND o.game_id = d.game_id AND o.kind = 'debit' AND o.status = 'OK'
                AND NOT EXISTS (SELECT 1 FROM wallet_tx r WHERE r.provider = o.provider AND r.login = o.login
                    AND r.game_id = o.game_id AND r.kind = 'credit' AND r.status = 'OK' AND r.seq > o.seq)
                AND NOT EXISTS (SELECT 1 FROM finance f WHERE f.order_id = o.order_id AND f.state = 6)) THEN 'open'
            WHEN EXISTS (SELECT 1 FROM wallet_tx r WHERE r.provider = d.provider AND r.login = d.login
                AND r.game_id = d.game_id AND r.kind = 'credit' AND r.status = 'OK') THEN 'settled'
            ELSE 'cancelled' END
    FROM wallet_tx d WHERE d.kind = 'debit' AND d.status = 'OK' AND d.game_id IS NOT NULL
    GROUP BY d.provider, d.login, d.game_id""")

# (version it brings the database to, what it does, its SQL statements in order)
STEPS: list[tuple[int, str, list[str]]] = [
    (2, "wallet rounds: wallet_tx.game_id (from the stored request) and an index by (login, game_id)", [
        """CREATE TABLE wallet_tx_2 (
            kind     TEXT    NOT NULL,
            txid     TEXT    NOT NULL,
            login    INTEGER NOT NULL,
            ref_id   TEXT,
            game_id  TEXT,
            amount   INTEGER NOT NULL,
            payload  TEXT    NOT NULL,
            status   TEXT    NOT NULL,
            order_id INTEGER,
            seq      INTEGER REFERENCES events(seq),
            created  INTEGER NOT NULL,
            PRIMARY KEY (kind, txid)
        ) WITHOUT ROWID""",
        # payload is the canonical request [action, userId, currency, game.id, game.type, id, refId, amount]
        "INSERT INTO wallet_tx_2 SELECT kind, txid, login, ref_id, json_extract(payload, '$[3]'), amount, "
        "payload, status, order_id, seq, created FROM wallet_tx",
        "DROP TABLE wallet_tx",  # its index and triggers go with it; they are made again below
        "ALTER TABLE wallet_tx_2 RENAME TO wallet_tx",
        "CREATE INDEX wallet_tx_ref ON wallet_tx (ref_id)",
        "CREATE INDEX wallet_tx_round ON wallet_tx (login, game_id)",
        "CREATE TRIGGER wallet_tx_no_update BEFORE UPDATE ON wallet_tx "
        "BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END",
        "CREATE TRIGGER wallet_tx_no_delete BEFORE DELETE ON wallet_tx "
        "BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END",
    ]),
    (3, "accounts never deleted and their login, currency and creation fixed; AddUser idempotency keys", [
        "CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts "
        "BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END",
        "CREATE TRIGGER accounts_fixed BEFORE UPDATE OF login, currency, created ON accounts "
        "BEGIN SELECT RAISE(ABORT, 'the login, currency and creation time of an account never change'); END",
        """CREATE TABLE idempotency_3 (
            manager INTEGER NOT NULL,
            ext_id  TEXT    NOT NULL,
            payload TEXT    NOT NULL,
            status  INTEGER NOT NULL,
            error   TEXT,
            message TEXT,
            seq     INTEGER REFERENCES events(seq),
            created INTEGER NOT NULL,
            login   INTEGER REFERENCES accounts(login),
            PRIMARY KEY (manager, ext_id)
        ) WITHOUT ROWID""",
        "INSERT INTO idempotency_3 SELECT manager, ext_id, payload, status, error, message, seq, created, NULL "
        "FROM idempotency",
        "DROP TABLE idempotency",
        "ALTER TABLE idempotency_3 RENAME TO idempotency",
        "CREATE TRIGGER idempotency_no_update BEFORE UPDATE ON idempotency "
        "BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only'); END",
        "CREATE TRIGGER idempotency_no_delete BEFORE DELETE ON idempotency "
        "BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only'); END",
    ]),
    (4, "the SDKs' account fields: leverage, email, enable, password (a salted slow hash, for USER logins)", [
        "ALTER TABLE accounts ADD COLUMN leverage INTEGER NOT NULL DEFAULT 100",
        "ALTER TABLE accounts ADD COLUMN email TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE accounts ADD COLUMN enable INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE accounts ADD COLUMN password_hash TEXT",
    ]),
    (5, "wallet transactions keyed by (kind, txid, login): a tombstone names an id for one account only", [
        """CREATE TABLE wallet_tx_5 (
            kind     TEXT    NOT NULL,
            txid     TEXT    NOT NULL,
            login    INTEGER NOT NULL,
            ref_id   TEXT,
            game_id  TEXT,
            amount   INTEGER NOT NULL,
            payload  TEXT    NOT NULL,
            status   TEXT    NOT NULL,
            order_id INTEGER,
            seq      INTEGER REFERENCES events(seq),
            created  INTEGER NOT NULL,
            PRIMARY KEY (kind, txid, login)
        ) WITHOUT ROWID""",
        "INSERT INTO wallet_tx_5 SELECT * FROM wallet_tx",
        "DROP TABLE wallet_tx",
        "ALTER TABLE wallet_tx_5 RENAME TO wallet_tx",
        "CREATE INDEX wallet_tx_ref ON wallet_tx (ref_id)",
        "CREATE INDEX wallet_tx_round ON wallet_tx (login, game_id)",
        "CREATE TRIGGER wallet_tx_no_update BEFORE UPDATE ON wallet_tx "
        "BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END",
        "CREATE TRIGGER wallet_tx_no_delete BEFORE DELETE ON wallet_tx "
        "BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END",
    ]),
    (6, "managers: a key version that every token carries (re-adding or removing a manager revokes its tokens)", [
        "ALTER TABLE managers ADD COLUMN key_version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE managers ADD COLUMN removed INTEGER NOT NULL DEFAULT 0",
    ]),
    (7, "accounts searched by name prefix through an index (ASCII letters folded, as lower() does)", [
        "CREATE INDEX accounts_name ON accounts (lower(name), login)",
    ]),
    (8, "several game providers: providers, every wallet id scoped by provider, game type and session kept, "
        "wallet_rounds (the state of every round, derived from the wallet's rows: all of them the provider default's)", [
        """CREATE TABLE providers (
            name       TEXT    PRIMARY KEY,
            token_hash TEXT    UNIQUE,
            settlement TEXT    NOT NULL DEFAULT 'gamewise' CHECK (settlement IN ('gamewise', 'mixed')),
            currencies TEXT    NOT NULL DEFAULT '',
            promo      INTEGER NOT NULL DEFAULT 0,
            created    INTEGER NOT NULL,
            removed    INTEGER NOT NULL DEFAULT 0
        )""",
        "INSERT INTO providers (name, created) VALUES ('default', 0)",
        """CREATE TABLE wallet_tx_8 (
            kind         TEXT    NOT NULL,
            txid         TEXT    NOT NULL,
            login        INTEGER NOT NULL,
            ref_id       TEXT,
            game_id      TEXT,
            amount       INTEGER NOT NULL,
            payload      TEXT    NOT NULL,
            status       TEXT    NOT NULL,
            order_id     INTEGER,
            seq          INTEGER REFERENCES events(seq),
            created      INTEGER NOT NULL,
            provider     TEXT    NOT NULL,
            game_type    TEXT,
            game_session TEXT,
            PRIMARY KEY (provider, kind, txid, login)
        ) WITHOUT ROWID""",
        # payload is the canonical request [action, userId, currency, game.id, game.type, id, refId, amount]
        "INSERT INTO wallet_tx_8 SELECT *, 'default', NULLIF(json_extract(payload, '$[4]'), ''), NULL FROM wallet_tx",
        "DROP TABLE wallet_tx",
        "ALTER TABLE wallet_tx_8 RENAME TO wallet_tx",
        "CREATE INDEX wallet_tx_ref ON wallet_tx (provider, ref_id)",
        "CREATE INDEX wallet_tx_round ON wallet_tx (provider, login, game_id)",
        "CREATE INDEX wallet_tx_day ON wallet_tx (provider, created)",
        "CREATE TRIGGER wallet_tx_no_update BEFORE UPDATE ON wallet_tx "
        "BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END",
        "CREATE TRIGGER wallet_tx_no_delete BEFORE DELETE ON wallet_tx "
        "BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END",
        """CREATE TABLE wallet_rounds (
            provider TEXT    NOT NULL,
            login    INTEGER NOT NULL,
            game_id  TEXT    NOT NULL,
            opened   INTEGER NOT NULL,
            updated  INTEGER NOT NULL,
            state    TEXT    NOT NULL CHECK (state IN ('open', 'settled', 'cancelled')),
            PRIMARY KEY (provider, login, game_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX wallet_rounds_state ON wallet_rounds (provider, state, opened)",
        _ROUNDS_OF_WALLET_TX,
    ]),
]
LATEST = STEPS[-1][0]

# PostgreSQL: a ledger there is born at PG_BASE (schema.pg.sql) and brought to LATEST by these steps, numbered
# as SQLite's (PostgreSQL runs DDL inside the transaction, so a failed step leaves nothing behind).
PG_BASE = 6
PG_STEPS: list[tuple[int, str, list[str]]] = [
    (7, "accounts searched by name prefix through an index (lower() folds ASCII letters only under COLLATE \"C\")", [
        "CREATE INDEX accounts_name ON accounts (lower(name), login)",
    ]),
    (8, "several game providers (as SQLite's step 8)", [
        """CREATE TABLE providers (
            name       TEXT COLLATE "C" PRIMARY KEY,
            token_hash TEXT COLLATE "C" UNIQUE,
            settlement TEXT COLLATE "C" NOT NULL DEFAULT 'gamewise' CHECK (settlement IN ('gamewise', 'mixed')),
            currencies TEXT COLLATE "C" NOT NULL DEFAULT '',
            promo      BIGINT NOT NULL DEFAULT 0,
            created    BIGINT NOT NULL,
            removed    BIGINT NOT NULL DEFAULT 0
        )""",
        "INSERT INTO providers (name, created) VALUES ('default', 0)",
        "ALTER TABLE wallet_tx ADD COLUMN provider TEXT COLLATE \"C\" NOT NULL DEFAULT 'default'",
        "ALTER TABLE wallet_tx ALTER COLUMN provider DROP DEFAULT",
        "ALTER TABLE wallet_tx ADD COLUMN game_type TEXT COLLATE \"C\"",
        "ALTER TABLE wallet_tx ADD COLUMN game_session TEXT COLLATE \"C\"",
        "ALTER TABLE wallet_tx DISABLE TRIGGER wallet_tx_no_update",  # (the migration's own, in its transaction)
        "UPDATE wallet_tx SET game_type = NULLIF(payload::json ->> 4, '')",
        "ALTER TABLE wallet_tx ENABLE TRIGGER wallet_tx_no_update",
        "ALTER TABLE wallet_tx DROP CONSTRAINT wallet_tx_pkey",
        "ALTER TABLE wallet_tx ADD PRIMARY KEY (provider, kind, txid, login)",
        "DROP INDEX wallet_tx_ref",
        "DROP INDEX wallet_tx_round",
        "CREATE INDEX wallet_tx_ref ON wallet_tx (provider, ref_id)",
        "CREATE INDEX wallet_tx_round ON wallet_tx (provider, login, game_id)",
        "CREATE INDEX wallet_tx_day ON wallet_tx (provider, created)",
        """CREATE TABLE wallet_rounds (
            provider TEXT COLLATE "C" NOT NULL,
            login    BIGINT NOT NULL,
            game_id  TEXT COLLATE "C" NOT NULL,
            opened   BIGINT NOT NULL,
            updated  BIGINT NOT NULL,
            state    TEXT COLLATE "C" NOT NULL CHECK (state IN ('open', 'settled', 'cancelled')),
            PRIMARY KEY (provider, login, game_id)
        )""",
        "CREATE INDEX wallet_rounds_state ON wallet_rounds (provider, state, opened)",
        _ROUNDS_OF_WALLET_TX,
    ]),
]


def schema_sql() -> str:
    """The LATEST schema, for a new database."""
    return resources.files("syncledger.ledger").joinpath("schema.sql").read_text()


def schema_pg_sql() -> str:
    """The schema of a new PostgreSQL ledger at PG_BASE, which PG_STEPS then bring to LATEST (a new ledger and
    an upgraded one go the same way)."""
    return resources.files("syncledger.ledger").joinpath("schema.pg.sql").read_text()


def version_of(db: Any) -> int:
    """The schema version of ``db`` (0: no ledger schema in it)."""
    if isinstance(db, engine.PgConnection):
        if db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            return 0
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0
    return db.execute("PRAGMA user_version").fetchone()[0]


def _newer(path: str, version: int) -> SchemaError:
    return SchemaError(f"{path} has schema version {version}, newer than this syncledger understands "
                       f"({LATEST}): run a newer syncledger")


def migrate(db: Any, path: str = "the database") -> list[int]:
    """Bring ``db`` (autocommit mode) to LATEST; returns the steps applied ([] if it was current).
    A new, empty database gets schema.sql. Raises SchemaError for a database newer than this program."""
    if isinstance(db, engine.PgConnection):
        return _migrate_pg(db, path)
    version = version_of(db)
    if version > LATEST:
        raise _newer(path, version)
    if version == LATEST:
        return []
    if version == 0:
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise SchemaError(f"{path} is an SQLite database but not a syncledger ledger")
        db.executescript(f"BEGIN IMMEDIATE;\n{schema_sql()}\nCOMMIT;")
        return [LATEST]
    applied = []
    db.execute("BEGIN IMMEDIATE")
    try:
        version = version_of(db)  # again, under the write lock: another process may have just migrated it
        for step, _, statements in STEPS:
            if step > version:
                for statement in statements:
                    db.execute(statement)
                applied.append(step)
        db.execute(f"PRAGMA user_version = {LATEST}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    _logged(path, applied, STEPS)
    return applied


def _logged(path: str, applied: list[int], steps: list[tuple[int, str, list[str]]]) -> None:
    """One INFO line per step an upgrade applied (after its COMMIT: every one of them is in the file)."""
    what = {step: text for step, text, _ in steps}
    for step in applied:
        log.info("%s: schema version %d -> %d: %s", path, step - 1, step,
                 what[step])


def _migrate_pg(db: engine.PgConnection, path: str) -> list[int]:
    """:func:`migrate` for PostgreSQL: one transaction, under a lock that serialises concurrent openers."""
    if version_of(db) == LATEST:
        return []
    db.execute("BEGIN")
    try:
        db.execute("SELECT pg_advisory_xact_lock(hashtext('syncledger migrate'))")
        version = version_of(db)  # again, under the lock: another process may have just migrated it
        if version > LATEST:
            raise _newer(path, version)
        if version == 0:
            if db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0]:
                raise SchemaError(f"{path} is a PostgreSQL database whose schema holds tables, but not a syncledger "
                                  "ledger")
            db.script(schema_pg_sql())  # born at PG_BASE, then the steps as for an older ledger
        elif version < PG_BASE:
            raise SchemaError(f"{path} has schema version {version}, older than any PostgreSQL ledger")
        created, version, applied = version == 0, max(version, PG_BASE), []
        for step, _, statements in PG_STEPS:
            if step > version:
                for statement in statements:
                    db.execute(statement)
                applied.append(step)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(LATEST),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if not created:
        _logged(path, applied, PG_STEPS)
    return [LATEST] if created else applied
