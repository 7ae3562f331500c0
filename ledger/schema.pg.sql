-- syncledger schema for PostgreSQL, version 6 (meta 'schema_version'): the same tables, columns and
-- append-only triggers as schema.sql (SQLite), in PostgreSQL's dialect, so that both engines hold the same
-- rows and hash chains. A PostgreSQL ledger is born at version 6, a new one too; later versions come by the
-- numbered steps of ledger/migrations.py (PG_STEPS), beside SQLite's (the index accounts_name: step 7).
-- Integers are BIGINT (SQLite's INTEGER is 64-bit); text compares byte by byte (COLLATE "C", as SQLite's
-- BINARY), so that every ORDER BY gives the same order on both engines.
-- Money columns hold signed integer micro-units (1 unit = 1_000_000).
-- The append-only triggers are statement triggers: they also refuse TRUNCATE, which skips row triggers.

CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
-- 'batch' is the ledger's head row: every batch locks it first (SELECT ... FOR UPDATE) and sets it last.
INSERT INTO meta VALUES ('schema_version', '6'), ('batch', '0');

CREATE TABLE accounts (
    login    BIGINT PRIMARY KEY,
    name     TEXT COLLATE "C" NOT NULL,
    "group"  TEXT COLLATE "C" NOT NULL,
    currency TEXT COLLATE "C" NOT NULL,
    created  BIGINT NOT NULL,
    leverage BIGINT NOT NULL DEFAULT 100,
    email    TEXT COLLATE "C" NOT NULL DEFAULT '',
    enable   BIGINT NOT NULL DEFAULT 1,
    password_hash TEXT COLLATE "C"
);

CREATE TABLE managers (
    login         BIGINT PRIMARY KEY,
    password_hash TEXT COLLATE "C" NOT NULL,
    session       BIGINT NOT NULL CHECK (session BETWEEN 0 AND 3),
    created       BIGINT NOT NULL,
    key_version   BIGINT NOT NULL DEFAULT 1,
    removed       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE game_sessions (
    sid       TEXT COLLATE "C" PRIMARY KEY,
    login     BIGINT NOT NULL REFERENCES accounts(login),
    created   BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE TABLE finance (
    id         BIGINT PRIMARY KEY,
    order_id   BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    login      BIGINT NOT NULL REFERENCES accounts(login),
    cmd        BIGINT NOT NULL,
    state      BIGINT NOT NULL,
    amount     BIGINT NOT NULL,
    delta      BIGINT NOT NULL,
    balance    BIGINT NOT NULL,
    credit     BIGINT NOT NULL,
    comment    TEXT COLLATE "C" NOT NULL,
    open_time  BIGINT NOT NULL,
    close_time BIGINT NOT NULL,
    source     TEXT COLLATE "C" NOT NULL,
    ext_id     TEXT COLLATE "C",
    created    BIGINT NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL,
    UNIQUE (order_id, version)
);
CREATE INDEX finance_login ON finance (login, id);

CREATE TABLE events (
    seq       BIGINT PRIMARY KEY,
    type      BIGINT NOT NULL,
    record_id BIGINT NOT NULL REFERENCES finance(id),
    data      TEXT COLLATE "C" NOT NULL,
    hash      TEXT COLLATE "C" NOT NULL
);

CREATE TABLE idempotency (
    manager BIGINT NOT NULL,
    ext_id  TEXT COLLATE "C" NOT NULL,
    payload TEXT COLLATE "C" NOT NULL,
    status  BIGINT NOT NULL,
    error   TEXT COLLATE "C",
    message TEXT COLLATE "C",
    seq     BIGINT REFERENCES events(seq),
    created BIGINT NOT NULL,
    login   BIGINT REFERENCES accounts(login),
    PRIMARY KEY (manager, ext_id)
);

CREATE TABLE wallet_tx (
    kind     TEXT COLLATE "C" NOT NULL,
    txid     TEXT COLLATE "C" NOT NULL,
    login    BIGINT NOT NULL,
    ref_id   TEXT COLLATE "C",
    game_id  TEXT COLLATE "C",
    amount   BIGINT NOT NULL,
    payload  TEXT COLLATE "C" NOT NULL,
    status   TEXT COLLATE "C" NOT NULL,
    order_id BIGINT,
    seq      BIGINT REFERENCES events(seq),
    created  BIGINT NOT NULL,
    PRIMARY KEY (kind, txid, login)
);
CREATE INDEX wallet_tx_ref ON wallet_tx (ref_id);
CREATE INDEX wallet_tx_round ON wallet_tx (login, game_id);

-- Refuses the statement with the trigger's argument as the message. verify checks this body too: a
-- function that returned instead of raising would silently let every change through.
CREATE FUNCTION syncledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER accounts_no_delete BEFORE DELETE OR TRUNCATE ON accounts FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('accounts are never deleted');
CREATE TRIGGER accounts_fixed BEFORE UPDATE OF login, currency, created ON accounts FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('the login, currency and creation time of an account never change');
CREATE TRIGGER finance_no_update BEFORE UPDATE ON finance FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('finance rows are append-only');
CREATE TRIGGER finance_no_delete BEFORE DELETE OR TRUNCATE ON finance FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('finance rows are append-only');
CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('events are append-only');
CREATE TRIGGER events_no_delete BEFORE DELETE OR TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('events are append-only');
CREATE TRIGGER idempotency_no_update BEFORE UPDATE ON idempotency FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('idempotency keys are append-only');
CREATE TRIGGER idempotency_no_delete BEFORE DELETE OR TRUNCATE ON idempotency FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('idempotency keys are append-only');
CREATE TRIGGER wallet_tx_no_update BEFORE UPDATE ON wallet_tx FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('wallet transactions are append-only');
CREATE TRIGGER wallet_tx_no_delete BEFORE DELETE OR TRUNCATE ON wallet_tx FOR EACH STATEMENT EXECUTE FUNCTION syncledger_refuse('wallet transactions are append-only');
