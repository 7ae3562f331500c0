-- syncledger schema, version 8 (tracked in PRAGMA user_version): the whole schema of a new ledger.
-- An older ledger is brought here by the numbered steps of ledger/migrations.py.
-- Money columns hold signed integer micro-units (1 unit = 1_000_000).
-- Ledger tables (finance, events, idempotency, wallet_tx) are append-only:
-- triggers refuse UPDATE and DELETE, a change to an order is a new row. An
-- account is never deleted and its login, currency and creation time never
-- change (triggers again); verify checks that every one of these triggers is there.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- An account; password_hash (salted scrypt, NULL: none) lets it log in as a
-- USER session; enable = 0 refuses its finance commands and wallet calls.
CREATE TABLE IF NOT EXISTS accounts (
    login    INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL,
    "group"  TEXT    NOT NULL,
    currency TEXT    NOT NULL,
    created  INTEGER NOT NULL,
    leverage INTEGER NOT NULL DEFAULT 100,
    email    TEXT    NOT NULL DEFAULT '',
    enable   INTEGER NOT NULL DEFAULT 1,
    password_hash TEXT
);
-- The back-office page's search by name prefix (lower() folds ASCII letters only).
CREATE INDEX IF NOT EXISTS accounts_name ON accounts (lower(name), login);

-- A manager's tokens carry its key_version: re-adding it (new password or
-- session type) or removing it bumps the version, and older tokens are refused.
CREATE TABLE IF NOT EXISTS managers (
    login         INTEGER PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    session       INTEGER NOT NULL CHECK (session BETWEEN 0 AND 3),
    created       INTEGER NOT NULL,
    key_version   INTEGER NOT NULL DEFAULT 1,
    removed       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS game_sessions (
    sid       TEXT    PRIMARY KEY,
    login     INTEGER NOT NULL REFERENCES accounts(login),
    created   INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);

-- One row per version of a finance order. `amount` is the order's signed
-- amount at this version, `delta` what this version changed on the account,
-- `balance`/`credit` the account's totals after it. `hash` chains every row
-- to the one before it (SHA-256, see ledger/store.py: finance_hash).
CREATE TABLE IF NOT EXISTS finance (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    login      INTEGER NOT NULL REFERENCES accounts(login),
    cmd        INTEGER NOT NULL,
    state      INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    delta      INTEGER NOT NULL,
    balance    INTEGER NOT NULL,
    credit     INTEGER NOT NULL,
    comment    TEXT    NOT NULL,
    open_time  INTEGER NOT NULL,
    close_time INTEGER NOT NULL,
    source     TEXT    NOT NULL,
    ext_id     TEXT,
    created    INTEGER NOT NULL,
    hash       TEXT    NOT NULL,
    UNIQUE (order_id, version)
);
CREATE INDEX IF NOT EXISTS finance_login ON finance (login, id);

-- One row per trade:event, written in the same transaction as its record.
-- `seq` is gap-free from 1; `data` is the exact JSON sent on the wire.
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY,
    type      INTEGER NOT NULL,
    record_id INTEGER NOT NULL REFERENCES finance(id),
    data      TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- Manager requests by (manager login, extID): the outcome of the first
-- attempt, successful (finance: the seq of its event; AddUser: the login it
-- created) or not (status and error).
CREATE TABLE IF NOT EXISTS idempotency (
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
) WITHOUT ROWID;

-- Game providers: each calls the wallet API with its own token (its SHA-256
-- in token_hash; NULL: none stored, as for `default`, whose token is
-- SYNCLEDGER_WALLET_TOKEN) and settles rounds game-wise (a credit settles its
-- round) or mixed (a credit or cancel settles the debit its refId names).
-- currencies: the codes it may use, comma-separated ('': any); promo: it may
-- send promo_payout; removed: when it was removed (0: active).
CREATE TABLE IF NOT EXISTS providers (
    name       TEXT    PRIMARY KEY,
    token_hash TEXT    UNIQUE,
    settlement TEXT    NOT NULL DEFAULT 'gamewise' CHECK (settlement IN ('gamewise', 'mixed')),
    currencies TEXT    NOT NULL DEFAULT '',
    promo      INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL,
    removed    INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO providers (name, created) VALUES ('default', 0);

-- Game-wallet transactions by (provider, kind, transaction.id, login): every
-- id is its provider's own. kind is debit, credit, cancel, promo or tombstone
-- (a credit/cancel that came before its debit: txid is the id it named, which
-- that account can then never be debited with). A debit, credit or cancel id
-- names one transaction of its provider whatever the account. game_id is the
-- round (game.id), game_type and game_session the rest of the game object.
CREATE TABLE IF NOT EXISTS wallet_tx (
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
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wallet_tx_ref ON wallet_tx (provider, ref_id);
CREATE INDEX IF NOT EXISTS wallet_tx_round ON wallet_tx (provider, login, game_id);
CREATE INDEX IF NOT EXISTS wallet_tx_day ON wallet_tx (provider, created);

-- A provider's game round (provider, login, game.id) from its first accepted
-- debit: open while a debit of it is neither settled nor cancelled; cancelled
-- when every debit was cancelled and no credit accepted; else settled. Kept by
-- the wallet in the transaction of the move that changed it (wallet_tx is the
-- truth: verify derives every round again from it).
CREATE TABLE IF NOT EXISTS wallet_rounds (
    provider TEXT    NOT NULL,
    login    INTEGER NOT NULL,
    game_id  TEXT    NOT NULL,
    opened   INTEGER NOT NULL,
    updated  INTEGER NOT NULL,
    state    TEXT    NOT NULL CHECK (state IN ('open', 'settled', 'cancelled')),
    PRIMARY KEY (provider, login, game_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wallet_rounds_state ON wallet_rounds (provider, state, opened);

CREATE TRIGGER IF NOT EXISTS accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS accounts_fixed BEFORE UPDATE OF login, currency, created ON accounts
BEGIN SELECT RAISE(ABORT, 'the login, currency and creation time of an account never change'); END;
CREATE TRIGGER IF NOT EXISTS finance_no_update BEFORE UPDATE ON finance
BEGIN SELECT RAISE(ABORT, 'finance rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS finance_no_delete BEFORE DELETE ON finance
BEGIN SELECT RAISE(ABORT, 'finance rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS idempotency_no_update BEFORE UPDATE ON idempotency
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only'); END;
CREATE TRIGGER IF NOT EXISTS idempotency_no_delete BEFORE DELETE ON idempotency
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only'); END;
CREATE TRIGGER IF NOT EXISTS wallet_tx_no_update BEFORE UPDATE ON wallet_tx
BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS wallet_tx_no_delete BEFORE DELETE ON wallet_tx
BEGIN SELECT RAISE(ABORT, 'wallet transactions are append-only'); END;

PRAGMA user_version = 8;
