"""The operator's commands on a ledger, one module a family: backup and restore, export, migrate to PostgreSQL,
managers and game sessions; here, what they share."""

from __future__ import annotations

import functools
import os
import sqlite3
from types import SimpleNamespace
from typing import Any, Callable
from urllib.parse import quote

import click


class OpsError(Exception):
    """The operation cannot be done (one line for the operator)."""


class Parsed(click.ParamType):
    """A click type from a parse that raises ValueError saying what it wants (said with the text it got, unless it
    says it). A value that is not text (a config file's, parsed already) is taken as it is."""

    def __init__(self, parse: Callable[[str], Any], name: str = "text") -> None:
        self.parse, self.name = parse, name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as e:
            said = str(e)
            self.fail(said if repr(value) in said else f"{said} (got {value!r})", param, ctx)


def runs(command: Callable[[SimpleNamespace], int]) -> Callable[..., int]:
    """A click callback that runs ``command(args)``, ``args`` holding the command's parameters by name."""
    @functools.wraps(command)
    def callback(**params: Any) -> int:
        return command(SimpleNamespace(**params))
    return callback


def open_ro(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite ledger at ``path`` (OpsError if there is none)."""
    if not os.path.exists(path):
        raise OpsError(f"no ledger at {path}")
    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
