"""Administration of a ledger database with sqlite-utils: managers, the token secret, game sessions."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time

import sqlite_utils

from .auth import hash_password


def load_secret(db: sqlite3.Connection) -> str:
    """``SYNCLEDGER_SECRET`` if set, else the secret kept in the database (generated on first use)."""
    secret = os.environ.get("SYNCLEDGER_SECRET")
    if secret:
        return secret
    meta = sqlite_utils.Database(db)["meta"]
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)", (secrets.token_hex(32),))
    return meta.get("secret")["value"]


def add_manager(db: sqlite3.Connection, login: int, password: str, session: int, now: int) -> None:
    """Store (or replace) a manager with a salted, slow password hash."""
    sqlite_utils.Database(db)["managers"].upsert(
        {"login": login, "password_hash": hash_password(password), "session": session, "created": now},
        pk="login",
    )


def get_manager(db: sqlite3.Connection, login: int) -> dict | None:
    try:
        return sqlite_utils.Database(db)["managers"].get(login)
    except sqlite_utils.db.NotFoundError:
        return None


def open_game_session(db: sqlite3.Connection, login: int) -> str:
    """Issue a game session id (sid) for an existing account; the server's idle expiry applies."""
    if db.execute("SELECT 1 FROM accounts WHERE login = ?", (login,)).fetchone() is None:
        raise LookupError(f"no account {login}")
    sid = secrets.token_urlsafe(18)
    now = int(time.time())
    sqlite_utils.Database(db)["game_sessions"].insert({"sid": sid, "login": login, "created": now, "last_seen": now})
    return sid
