"""Administration of a ledger database (SQLite or PostgreSQL): managers and game sessions (the token secret's
key file is auth.py's)."""

from __future__ import annotations

import secrets
import time
from typing import Any


from ..auth import hash_password

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
