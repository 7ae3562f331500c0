"""``syncledger rounds``, ``report`` and ``reconcile``: a game provider's rounds, its day totals, and its own
transaction report (a CSV file) compared with the ledger. Read-only, on one read snapshot of the ledger (an SQLite
file opened read-only, or a PostgreSQL URL): they work beside a running server. The reads are ledger/report.py's."""

from __future__ import annotations

import csv
import os
import re
import signal
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import IO, Any, Callable, Iterator

import click
import orjson

from syncledger.ledger import engine, migrations, report
from syncledger.ledger.money import MoneyError, to_micro, to_text

from . import OpsError, Parsed, option, runs

# The provider's CSV: our field -> its column (the default header), and its type names -> ours.
COLUMNS = {"txid": "transaction_id", "type": "type", "amount": "amount", "round": "round", "time": "time"}
REQUIRED = ("txid", "type", "amount")  # round and time may be left out (no round compared; --day needed)
SKIP = "skip"  # a type mapped to it is not compared (a provider's balance checks, its own bookkeeping rows)
LATEST_UNIX = 253402300799  # 9999-12-31T23:59:59Z: a larger "unix time" is milliseconds, not seconds
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadInput(OpsError):
    """A file or an argument the command cannot read (one line, exit 2)."""


# ---- the ledger, read-only, in one snapshot


def open_snapshot(path: str) -> Any:
    """A read-only connection to the ledger at ``path`` in one read snapshot (the caller closes it)."""
    try:
        db = engine.connect_ro(path)
    except FileNotFoundError as e:
        raise OpsError(str(e)) from None
    except (OSError, ImportError, *engine.errors()) as e:
        raise OpsError(f"cannot read {engine.shown(path)}: {engine.said(e)}") from None
    try:
        version = migrations.version_of(db)
        if version == 0:
            raise OpsError(f"{engine.shown(path)} is not a syncledger ledger")
        if version < migrations.LATEST:  # (read-only: it never migrates a ledger)
            raise OpsError(f"{engine.shown(path)} has schema version {version}, older than this syncledger's "
                           f"({migrations.LATEST}): run syncledger serve on it once (it brings the ledger up to "
                           "date), then ask again")
        if version > migrations.LATEST:
            raise OpsError(f"{engine.shown(path)} has schema version {version}, newer than this syncledger "
                           f"understands ({migrations.LATEST}): run a newer syncledger")
        db.execute(engine.snapshot(db))
    except BaseException as e:
        db.close()
        if isinstance(e, engine.errors()):
            raise OpsError(f"cannot read {engine.shown(path)}: {engine.said(e)}") from None
        raise
    return db


def _provider(db: Any, name: str, path: str) -> None:
    known = report.providers(db)
    if name not in known:
        raise BadInput(f"no provider {name!r} in {engine.shown(path)} (its providers: {', '.join(known) or 'none'})")


def _reading(path: str, provider: str, work: Callable[[Any], int]) -> int:
    """``work(db)`` on a snapshot of the ledger, for a provider it has; a database error is one line (exit 2),
    a reader that stops early (``| head``) ends it quietly with status 141, as ``export`` does."""
    db = open_snapshot(path)
    try:
        _provider(db, provider, path)
        status = work(db)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # (what is still buffered can never be written)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except engine.errors() as e:
        raise OpsError(f"cannot read {engine.shown(path)}: {engine.said(e)}") from None
    finally:
        try:
            db.close()
        except engine.errors():
            pass


# ---- rounds


def duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d``, ``1w`` as seconds (ValueError otherwise)."""
    found = re.fullmatch(r"\s*(\d{1,12})\s*([smhdw]?)\s*", text.lower())
    if found is None:
        raise ValueError("a duration such as 90s, 15m, 1h or 2d")
    return int(found[1]) * _UNITS[found[2] or "s"]


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def round_text(r: report.Round, now: int) -> str:
    age = f" (open for {_age(max(0, now - r.opened))})" if r.state == "open" else ""
    lines = [f"round {r.game_id} login {r.login}: {r.state}{age}, opened {report.utc(r.opened)}, last move "
             f"{report.utc(r.updated)}; bets {to_text(r.total('debit'))}, wins {to_text(r.total('credit'))}, "
             f"cancelled {to_text(r.total('cancel'))}"]
    for m in r.moves:
        ref = f" ref {m.ref_id}" if m.ref_id and m.type != "cancel" else ""
        lines.append(f"  {m.type:<6} {m.txid}{ref} {to_text(m.amount)} at {report.utc(m.time)} order {m.order}")
    return "\n".join(lines)


def all_rounds(db: Any, provider: str, **filters: Any) -> Iterator[report.Round]:
    """Every round of the provider the filters keep, page by page (report.rounds), oldest opened first."""
    after = None
    while True:
        page, after = report.rounds(db, provider, after=after, limit=report.MAX_ROUNDS, **filters)
        yield from page
        if after is None:
            return


def _rounds(args: SimpleNamespace) -> int:
    now = int(time.time())
    filters = {"open_only": args.open, "game_id": args.game_id, "login": args.login,
               "opened_before": None if args.older_than is None else now - args.older_than}

    def work(db: Any) -> int:
        out, n = sys.stdout, 0
        if args.format == "json":
            out.write("[")
        for r in all_rounds(db, args.provider, **filters):
            if args.format == "json":
                out.write(("," if n else "") + "\n" + orjson.dumps(r.json()).decode())
            else:
                out.write(round_text(r, now) + "\n")
            n += 1
        if args.format == "json":
            out.write("\n]\n")
        else:
            which = "open rounds" if args.open else "rounds"
            print(f"{n} {which} of provider {args.provider}", file=sys.stderr)
        return 0
    return _reading(args.db, args.provider, work)


# ---- the day report


def day(text: str) -> date:
    """A UTC day, ``YYYY-MM-DD`` (ValueError otherwise)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError("a day as YYYY-MM-DD")
    return date.fromisoformat(text)


def _report(args: SimpleNamespace) -> int:
    def work(db: Any) -> int:
        done = report.day_report(db, args.provider, args.day)
        if args.format == "json":
            sys.stdout.write(orjson.dumps(done.json(), option=orjson.OPT_INDENT_2).decode() + "\n")
            return 0
        writer = csv.DictWriter(sys.stdout, fieldnames=report.CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for totals in done.currencies:
            writer.writerow({"provider": done.provider, "day": done.day.isoformat(), **totals.row()})
        return 0
    return _reading(args.db, args.provider, work)


# ---- reconcile: the provider's CSV


def mapping(text: str, what: str) -> dict[str, str]:
    """``a=B,c=D`` as {a: B, c: D} (ValueError naming ``what`` otherwise)."""
    found = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} as NAME=VALUE,NAME=VALUE (not {part.strip()!r})")
        found[key.strip()] = value.strip()
    return found


def columns(text: str) -> dict[str, str]:
    given = mapping(text, "columns")
    unknown = sorted(set(given) - set(COLUMNS))
    if unknown:
        raise ValueError(f"{unknown[0]} is not a field: the fields are {', '.join(COLUMNS)}")
    missing = [f for f in REQUIRED if f in given and not given[f]]
    if missing:
        raise ValueError(f"{missing[0]} needs a column")
    return given


def types(text: str) -> dict[str, str]:
    given = mapping(text, "types")
    for value in given.values():
        if value not in (*report.TYPES, SKIP):
            raise ValueError(f"{value!r} is not a type: the types are {', '.join(report.TYPES)} (or {SKIP})")
    return {key.casefold(): value for key, value in given.items()}


def parse_amount(text: str) -> int:
    """A decimal string (``12.5``, ``0.000001``), exactly, as micro-units (ValueError saying why not)."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"amount {text.strip()!r} is not a decimal number") from None
    try:
        micro = to_micro(number)
    except MoneyError as e:
        raise ValueError(f"{e} (got {text.strip()!r})") from None
    if micro < 0:
        raise ValueError(f"amount {text.strip()!r} is negative: give the amount as the wallet call carried it")
    return micro


def parse_time(text: str) -> float:
    """ISO 8601 (``2024-05-01T12:30:00Z``; no offset: UTC) or Unix seconds (``1714566600``, ``1714566600.25``)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = Decimal(text)
        if seconds > LATEST_UNIX:
            raise ValueError(f"time {text!r} is past the year 9999 in seconds (milliseconds? give seconds)")
        return float(seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is neither ISO 8601 (2024-05-01T12:30:00Z) nor Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_report(lines: IO[str], given_columns: dict[str, str], given_types: dict[str, str], delimiter: str = ",",
                name: str = "the file") -> tuple[list[report.Row], bool, bool]:
    """The provider's rows (those of a type mapped to ``skip`` left out), whether it has rounds and whether it has
    times. BadInput names the first line that cannot be read."""
    wanted = {**COLUMNS, **given_columns}
    known_types = {t: t for t in report.TYPES} | given_types
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise BadInput(f"{name} is empty: its first line is the header ({','.join(COLUMNS.values())})")
        names = [h.strip().lstrip("\ufeff").casefold() for h in header]
        where: dict[str, int] = {}
        for field, column in wanted.items():
            if not column:  # mapped to nothing: left out
                continue
            if column.casefold() in names:
                where[field] = names.index(column.casefold())
            elif field in REQUIRED or field in given_columns:
                raise BadInput(f"{name} has no column {column!r} for the {field} (its header: {','.join(header)}; "
                               f"map the columns with --columns {field}=NAME)")
        rows: list[report.Row] = []
        for fields in reader:
            if not fields or fields == [""]:
                continue
            line = reader.line_num
            try:
                rows += _row(fields, where, known_types, line)
            except (ValueError, IndexError) as e:
                raise BadInput(f"{name}, line {line}: {e}") from None
    except csv.Error as e:
        raise BadInput(f"{name}, line {reader.line_num}: {e}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{name} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return rows, "round" in where, "time" in where


def _row(fields: list[str], where: dict[str, int], known_types: dict[str, str], line: int) -> list[report.Row]:
    if len(fields) <= max(where.values()):
        raise ValueError(f"{len(fields)} field(s), the header has more")
    kind = fields[where["type"]].strip()
    ours = known_types.get(kind) or known_types.get(kind.casefold())
    if ours is None:
        raise ValueError(f"type {kind!r} is not one of {', '.join(report.TYPES)} (map it with --types "
                         f"{kind or 'NAME'}=debit, or ={SKIP} to leave such rows out)")
    if ours == SKIP:
        return []
    txid = fields[where["txid"]].strip()
    if not txid:
        raise ValueError("the transaction id is empty")
    game = fields[where["round"]].strip() if "round" in where else ""
    at = parse_time(fields[where["time"]]) if "time" in where else None
    return [report.Row(ours, txid, parse_amount(fields[where["amount"]]), game or None, at, line=line)]


def _reconcile(args: SimpleNamespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    try:
        lines = sys.stdin if args.file == "-" else open(args.file, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise BadInput(f"cannot read {args.file}: {e.strerror}") from None
    with lines:
        rows, has_rounds, has_times = read_report(lines, args.columns, args.types, args.delimiter, name)
    if args.day is None and not has_times:
        raise BadInput(f"{name} has no time column: give --day (the ledger's rows of that UTC day are compared)")
    if args.day is None and not rows:
        raise BadInput(f"{name} has no rows: give --day to compare it with a day of the ledger")
    start, end = report.day_span(args.day) if args.day is not None else (None, None)

    def work(db: Any) -> int:
        done = report.reconcile(db, args.provider, rows, start, end, compare_rounds=has_rounds)
        if args.format == "json":
            sys.stdout.write(orjson.dumps(done.json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            for difference in done.differences:
                sys.stdout.write(difference.text() + "\n")
            print(done.summary() + ("" if has_rounds else " (the file has no rounds: not compared)"))
        return 0 if done.ok else 1
    return _reading(args.db, args.provider, work)


# ---- the commands


def register(group: click.Group, db_option: Callable[[Callable], Callable], login: click.ParamType) -> None:
    """Add ``rounds``, ``report`` and ``reconcile`` to the ``syncledger`` command ``group`` (their ``--db`` by
    ``db_option``, a login by ``login``: the CLI's own)."""
    provider = option("--provider", required=True, metavar="NAME", help="the game provider")

    @group.command("rounds", short_help="a game provider's rounds with their debits, credits and cancels "
                                        "(read-only, one snapshot: safe beside a live server)")
    @db_option
    @provider
    @option("--open", is_flag=True, help="only rounds still open (a debit neither settled nor cancelled)")
    @option("--older-than", type=Parsed(duration), default=None, metavar="AGE",
            help="only rounds opened at least this long ago: 90s, 15m, 1h, 2d")
    @option("--game-id", default=None, metavar="ID", help="only this round (game.id)")
    @option("--login", type=login, default=None, help="only this account's rounds")
    @option("--format", type=click.Choice(("text", "json")), default="text", show_default=True,
            help="how the answer is printed")
    @runs
    def rounds(args: SimpleNamespace) -> int:
        """A game provider's rounds with their debits, credits and cancels, oldest opened first (as text, their
        number on stderr). Read-only, on one snapshot: safe beside a live server."""
        return _rounds(args)

    @group.command("report", short_help="a game provider's totals of a UTC day, per currency: bets, wins, cancels, "
                                        "promo payouts, GGR, rounds (read-only)")
    @db_option
    @provider
    @option("--day", required=True, type=Parsed(day, "day"), metavar="YYYY-MM-DD", help="the UTC day")
    @option("--format", type=click.Choice(("csv", "json")), default="csv", show_default=True,
            help="how the answer is printed")
    @runs
    def day_report(args: SimpleNamespace) -> int:
        """A game provider's totals of a UTC day, per currency: bets, wins, cancels, promo payouts, GGR, rounds.
        Read-only, on one snapshot."""
        return _report(args)

    @group.command("reconcile", short_help="compare a game provider's transaction report (CSV) with the ledger; "
                                           "exit 1 when anything differs (read-only)")
    @db_option
    @provider
    @option("--file", required=True, type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
            help="the provider's CSV (- : standard input); its header names the columns, by default "
                 + ",".join(COLUMNS.values()))
    @option("--day", type=Parsed(day, "day"), default=None, metavar="YYYY-MM-DD",
            help="compare with the ledger's rows of this UTC day (default: the span of the file's times)")
    @option("--columns", type=Parsed(columns), default="", metavar="FIELD=COLUMN,...",
            help=f"the file's column of each field, e.g. txid=TxID,type=Kind (the fields: {', '.join(COLUMNS)}; "
                 "round= or time= : the file has none)")
    @option("--types", type=Parsed(types), default="", metavar="NAME=TYPE,...",
            help=f"the file's type names, e.g. BET=debit,WIN=credit (the types: {', '.join(report.TYPES)}; "
                 f"={SKIP}: rows left out)")
    @option("--delimiter", type=Parsed(_delimiter), default=",", show_default=True, metavar="CHAR",
            help="the file's field separator (\\t: a tab)")
    @option("--format", type=click.Choice(("text", "json")), default="text", show_default=True,
            help="how the answer is printed")
    @runs
    def reconcile(args: SimpleNamespace) -> int:
        """Compare a game provider's transaction report (a CSV file) with the ledger, row by row and round by
        round; exit 1 when anything differs. Read-only, on one snapshot."""
        return _reconcile(args)


def _delimiter(text: str) -> str:
    text = "\t" if text in ("\\t", "tab") else text
    if len(text) != 1 or text in "\"\r\n":
        raise ValueError("one character (\\t for a tab)")
    return text

