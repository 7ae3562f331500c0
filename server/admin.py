"""Administration of a ledger database (SQLite or PostgreSQL): managers, the token secret, game sessions."""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any

from syncledger.ledger import engine

from .auth import hash_password

log = logging.getLogger("syncledger.admin")


class SecretExposed(Exception):
    """The token-signing key file can be read by other users: anyone of them could mint an ADMIN token."""


class SecretMissing(Exception):
    """A PostgreSQL ledger has no file to keep a secret beside: SYNCLEDGER_SECRET must be set."""


def key_path(db_path: str) -> str:
    """Where the token-signing secret of a ledger is kept: beside it, mode 0600."""
    return os.path.realpath(db_path) + ".key"


def load_secret(db_path: str, db: Any) -> str:
    """``SYNCLEDGER_SECRET`` if set; else the key file beside the ledger (made on first use, 0600, and
    refused if others can read it); a secret that an earlier release kept in the database is moved there
    once. An in-memory ledger gets a secret for this process only; a PostgreSQL ledger needs the variable
    (every node of it signs with the same secret, and the database is no place for it)."""
    secret = os.environ.get("SYNCLEDGER_SECRET")
    if secret:
        return secret
    if db_path == ":memory:":
        return secrets.token_hex(32)
    if engine.is_postgres(db_path):
        raise SecretMissing("a PostgreSQL ledger signs tokens with SYNCLEDGER_SECRET: set it (the same on every "
                            "node), e.g. to the output of: openssl rand -hex 32")
    path = key_path(db_path)
    row = db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write((row[0] if row else secrets.token_hex(32)) + "\n")
            f.flush()
            os.fsync(f.fileno())
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise SecretExposed(f"{path} holds the token secret but others may read it (mode {mode & 0o777:o}): "
                            f"chmod 600 {path}")
    with open(path) as f:
        secret = f.read().strip()
    if row is not None:  # moved out of the database (which any reader of the file could see)
        # secure_delete overwrites the row's bytes in its page (SQLite's own default leaves them in the free
        # space); the checkpoint then writes that page over the old one in the file and empties the -wal, which
        # may hold other copies of it.
        was = db.execute("PRAGMA secure_delete").fetchone()[0]
        db.execute("PRAGMA secure_delete = ON")
        db.execute("DELETE FROM meta WHERE key = 'secret'")
        db.execute(f"PRAGMA secure_delete = {was}")
        busy, logged, moved = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or logged != moved:
            log.warning("the token secret moved out of %s may still be read in its -wal until its next checkpoint "
                        "(another process has the ledger open)", db_path)
    return secret


MIN_PASSWORD = 12


def add_manager(db: Any, login: int, password: str, session: int, now: int) -> None:
    """Store a manager with a salted, slow password hash. Adding it again (a new password, another
    session type) or after its removal bumps its key version: every token issued before is refused."""
    db.execute(
        "INSERT INTO managers (login, password_hash, session, created, key_version, removed) VALUES (?,?,?,?,1,0) "
        "ON CONFLICT (login) DO UPDATE SET password_hash = excluded.password_hash, session = excluded.session, "
        "key_version = managers.key_version + 1, removed = 0",
        (login, hash_password(password), session, now))


def remove_manager(db: Any, login: int) -> bool:
    """Remove a manager: it can no longer log in and its tokens are refused at once. False if unknown."""
    return db.execute("UPDATE managers SET removed = 1, key_version = key_version + 1 "
                      "WHERE login = ? AND removed = 0", (login,)).rowcount == 1


def get_manager(db: Any, login: int) -> dict | None:
    """A manager that has not been removed."""
    cursor = db.execute("SELECT * FROM managers WHERE login = ? AND removed = 0", (login,))
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row))


def open_game_session(db: Any, login: int) -> str:
    """Issue a game session id (sid) for an existing account; the server's idle expiry applies."""
    if db.execute("SELECT 1 FROM accounts WHERE login = ?", (login,)).fetchone() is None:
        raise LookupError(f"no account {login}")
    sid = secrets.token_urlsafe(18)
    now = int(time.time())
    db.execute("INSERT INTO game_sessions (sid, login, created, last_seen) VALUES (?, ?, ?, ?)", (sid, login, now, now))
    return sid
