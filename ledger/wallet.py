"""Game-wallet commands on the store: game sessions (sid) issued to a provider's players."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rules import LedgerError
from .store import Outcome

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True, slots=True)
class OpenSession:
    login: int
    sid: str
    now: int
    ttl: int  # idle seconds before the sid expires (reported back, enforced by the wallet)


def install(store: Store) -> None:
    """Teach ``store`` the wallet commands."""

    def open_session(c: OpenSession) -> Outcome:
        if c.login not in store.accounts:
            raise LedgerError(404, "ACCOUNT_NOT_FOUND", f"no account {c.login}")
        store.db.execute("INSERT INTO game_sessions VALUES (?,?,?,?)", (c.sid, c.login, c.now, c.now))
        return Outcome(data={"sid": c.sid, "login": c.login, "expires_at": c.now + c.ttl})

    store.register(OpenSession, open_session)
