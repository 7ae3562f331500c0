"""The operator's commands on a ledger, one module a family: backup and restore, export, migrate to PostgreSQL,
managers and game sessions; here, what they share."""

from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Any, Callable
from urllib.parse import quote


class OpsError(Exception):
    """The operation cannot be done (one line for the operator)."""


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parse that raises ValueError (its message is what argparse says)."""
    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return typed


def open_ro(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite ledger at ``path`` (OpsError if there is none)."""
    if not os.path.exists(path):
        raise OpsError(f"no ledger at {path}")
    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
