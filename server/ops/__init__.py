"""The operator's commands on a ledger, one module a family: backup and restore, export, migrate to PostgreSQL,
managers and game sessions; here, what they share."""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote


class OpsError(Exception):
    """The operation cannot be done (one line for the operator)."""


def open_ro(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite ledger at ``path`` (OpsError if there is none)."""
    if not os.path.exists(path):
        raise OpsError(f"no ledger at {path}")
    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
