"""Game providers in a ledger database (SQLite or PostgreSQL): add, list, rotate, remove, set. A provider's token
is shown once, when it is made, and stored only as its SHA-256 (``providers.token_hash``); a running server reads
the table again within a second (``ProviderKeys``), so a change needs no restart."""

from __future__ import annotations

import secrets
from typing import Any

from ..auth import token_hash
from ..config import SETTLEMENTS
from . import OpsError

COLUMNS = ("name", "token_hash", "settlement", "currencies", "promo", "created", "removed")


class NoProvider(LookupError):
    """No provider of that name (or it was removed)."""


class Exists(Exception):
    """A provider of that name is there already."""


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def _row(db: Any, name: str) -> dict | None:
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM providers WHERE name = ?", (name,)).fetchone()
    return None if row is None else dict(zip(COLUMNS, row))


def _check(settlement: str | None) -> None:
    if settlement is not None and settlement not in SETTLEMENTS:
        raise OpsError(f"a provider settles {' or '.join(SETTLEMENTS)}, not {settlement}")


def add_provider(db: Any, name: str, now: int, settlement: str = "gamewise", currencies: tuple[str, ...] = (),
                 promo: bool = False) -> str:
    """Store a new provider (or bring back a removed one, under its old name and ids) and return its token."""
    _check(settlement)
    token, digest = _new_token()
    added = db.execute(
        "INSERT INTO providers (name, token_hash, settlement, currencies, promo, created, removed) "
        "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, "
        "settlement = excluded.settlement, currencies = excluded.currencies, promo = excluded.promo, "
        "created = excluded.created, removed = 0 WHERE providers.removed <> 0",
        (name, digest, settlement, ",".join(currencies), int(promo), now)).rowcount
    if added != 1:
        raise Exists(f"provider {name} exists (provider rotate gives it a new token, provider set changes it)")
    return token


def list_providers(db: Any) -> list[dict]:
    """Every provider, removed ones too, by name: its settings, and whether a token is stored (never its hash)."""
    found = []
    for row in db.execute(f"SELECT {', '.join(COLUMNS)} FROM providers ORDER BY name"):
        p = dict(zip(COLUMNS, row))
        found.append({"name": p["name"], "settlement": p["settlement"],
                      "currencies": [c for c in p["currencies"].split(",") if c], "promo": bool(p["promo"]),
                      "created": p["created"], "removed": p["removed"] or None,
                      "token_stored": p["token_hash"] is not None})
    return found


def rotate_provider(db: Any, name: str) -> str:
    """A new token for a provider; the one it had is refused from now on (a running server: within a second)."""
    token, digest = _new_token()
    if db.execute("UPDATE providers SET token_hash = ? WHERE name = ? AND removed = 0",
                  (digest, name)).rowcount != 1:
        raise NoProvider(name)
    return token


def remove_provider(db: Any, name: str, now: int) -> None:
    """Remove a provider: its token is refused (the default one's SYNCLEDGER_WALLET_TOKEN too); its rows stay,
    and ``add`` brings it back with a new token and the ids it had."""
    if db.execute("UPDATE providers SET removed = ?, token_hash = NULL WHERE name = ? AND removed = 0",
                  (max(now, 1), name)).rowcount != 1:
        raise NoProvider(name)


def set_provider(db: Any, name: str, settlement: str | None = None, currencies: tuple[str, ...] | None = None,
                 promo: bool | None = None) -> dict:
    """Change a provider's settings (those given); a running server applies them to the calls that follow.
    Returns its row as it is now."""
    _check(settlement)
    old = _row(db, name)
    if old is None or old["removed"]:
        raise NoProvider(name)
    new = {"settlement": old["settlement"] if settlement is None else settlement,
           "currencies": old["currencies"] if currencies is None else ",".join(currencies),
           "promo": old["promo"] if promo is None else int(promo)}
    db.execute("UPDATE providers SET settlement = ?, currencies = ?, promo = ? WHERE name = ?",
               (new["settlement"], new["currencies"], new["promo"], name))
    return {**old, **new}
