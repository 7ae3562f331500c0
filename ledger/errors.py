"""Every error the ledger raises, under one base: a typed refusal of one command (LedgerError), a state the
store cannot know (Unsure), a ledger that cannot be used (LedgerOpenError, SchemaError), a COMMIT that
PostgreSQL rolled back (RolledBack)."""

from __future__ import annotations


class LedgerException(Exception):
    """Something the ledger raises (MoneyError, an amount refused before it reaches the ledger, is a ValueError)."""


class LedgerError(LedgerException):
    """A typed refusal: ``status`` (HTTP-like), ``code`` (wire error) and a readable message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LedgerError) and (self.status, self.code) == (other.status, other.code)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LedgerError({self.status}, {self.code!r}, {self.message!r})"


class Unsure(LedgerException):
    """The store cannot know what the ledger file holds: a ROLLBACK failed, a failed COMMIT cannot be read
    back with certainty, or the file was unlinked or replaced (PostgreSQL: the connection was lost, or
    another writer moved the ledger's head). Nothing it has in memory may be served; the only safe move is to
    stop and let a restart read the truth from the ledger."""


class LedgerOpenError(LedgerException):
    """The ledger file cannot be opened or created (a missing directory, no permission, not a database)."""


class SchemaError(LedgerException, RuntimeError):
    """The database cannot be used by this program (newer than it, or not a syncledger ledger)."""


class RolledBack(LedgerException):
    """PostgreSQL answered a COMMIT with ROLLBACK: the transaction had failed, nothing of it was written."""
