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
from click.core import ParameterSource


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


class Option(click.Option):
    """click's option with its environment variable in its help: its own (``envvar``), or the one click names
    from the command it belongs to (the ``syncledger`` group's ``auto_envvar_prefix``: ``SYNCLEDGER_BACKUP_KEEP``
    for ``backup --keep``). A bad value is said with where it came from: the flag, or the variable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"show_envvar": True, **kwargs})

    def get_error_hint(self, ctx: click.Context | None) -> str:
        if ctx is not None and ctx.get_parameter_source(self.name or "") is ParameterSource.ENVIRONMENT:
            return given_as(ctx, self.name or "")
        return click.Parameter.get_error_hint(self, ctx)  # (not click.Option's, which names both)


def option(*decls: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """``click.option`` of an :class:`Option`."""
    return click.option(*decls, cls=Option, **kwargs)


def given_as(ctx: click.Context, name: str) -> str:
    """What gave the parameter ``name`` of ``ctx``'s command its value: its flag, or its environment variable."""
    param = next(p for p in ctx.command.params if p.name == name)
    if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT and isinstance(param, click.Option):
        return param.get_help_extra(ctx).get("envvars", param.opts)[0]  # (as the help names it)
    return param.opts[0]


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
