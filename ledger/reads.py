"""Reads of committed ledger state, as plain functions of a connection (sqlite3, or ledger.engine's PostgreSQL
one): the store runs them on its own connection, the server on read-only connections of their own (outside the
writer's lock)."""

from __future__ import annotations

import sqlite3
import string

import orjson

from . import rules
from .money import to_text
from .rules import Event, Version

_VERSION = ("SELECT order_id, version, login, cmd, state, amount, delta, balance, credit, comment, open_time, "
            "close_time FROM finance")
# An account and its totals: those of its newest finance row (the index finance_login finds it).
_ACCOUNT = ('SELECT a.login, a.name, a."group", a.currency, a.created, a.leverage, a.email, a.enable, '
            "COALESCE((SELECT balance FROM finance WHERE login = a.login ORDER BY id DESC LIMIT 1), 0), "
            "COALESCE((SELECT credit FROM finance WHERE login = a.login ORDER BY id DESC LIMIT 1), 0) "
            "FROM accounts a")


def current_version(db: sqlite3.Connection, order: int) -> Version | None:
    row = db.execute(_VERSION + " WHERE order_id = ? ORDER BY version DESC LIMIT 1", (order,)).fetchone()
    return Version(*row) if row else None


def _account_json(row: tuple) -> dict:
    return {"login": row[0], "name": row[1], "group": row[2], "currency": row[3], "created": row[4],
            "leverage": row[5], "email": row[6], "enable": bool(row[7]),
            "balance": orjson.Fragment(to_text(row[8])), "credit": orjson.Fragment(to_text(row[9]))}


def account(db: sqlite3.Connection, login: int) -> dict | None:
    row = db.execute(_ACCOUNT + " WHERE a.login = ?", (login,)).fetchone()
    return None if row is None else _account_json(row)


def accounts(db: sqlite3.Connection, group: str | None, from_login: int, limit: int) -> tuple[list[dict], int | None]:
    """A page of accounts by login, from ``from_login`` on (in ``group`` if given), and the login the next
    page starts from (None: this was the last page)."""
    where, args = "a.login >= ?", [from_login]
    if group is not None:
        where, args = where + ' AND a."group" = ?', args + [group]
    return _page(db.execute(f"{_ACCOUNT} WHERE {where} ORDER BY a.login LIMIT ?", (*args, limit + 1)).fetchall(),
                 limit)


def account_password(db: sqlite3.Connection, login: int) -> str | None:
    """The password hash an account logs in with (None: it has none, or there is no such account)."""
    row = db.execute("SELECT password_hash FROM accounts WHERE login = ?", (login,)).fetchone()
    return row[0] if row else None


def record(db: sqlite3.Connection, order: int) -> bytes | None:
    """The trade record JSON of the order's current version."""
    row = db.execute(_VERSION.replace(" FROM", ", source FROM", 1) + " WHERE order_id = ? ORDER BY version DESC "
                     "LIMIT 1", (order,)).fetchone()
    return rules.record_json(Version(*row[:-1]), rules.provider_of(row[-1])) if row else None


def records(db: sqlite3.Connection, login: int, start: int | None = None, end: int | None = None,
            limit: int = 10_000) -> list[bytes]:
    """Trade records (current versions) of an account's orders opened in [start, end], by order."""
    rows = db.execute(
        _VERSION.replace(" FROM", ", source FROM", 1) + " f WHERE login = ? AND version = (SELECT MAX(version) FROM finance WHERE order_id = f.order_id) "
        "AND open_time >= ? AND open_time <= ? ORDER BY order_id LIMIT ?",
        (login, start if start is not None else -(2**62), end if end is not None else 2**62, limit))
    return [rules.record_json(Version(*row[:-1]), rules.provider_of(row[-1])) for row in rows]


def events_after(db: sqlite3.Connection, seq: int, limit: int = 1000) -> list[Event]:
    """Committed events with seq > ``seq``, oldest first, as sent (the seq inside their data)."""
    return [
        Event(s, t, order, rules.with_seq(data.encode(), s))
        for s, t, order, data in db.execute(
            "SELECT e.seq, e.type, f.order_id, e.data FROM events e JOIN finance f ON f.id = e.record_id "
            "WHERE e.seq > ? ORDER BY e.seq LIMIT ?", (seq, limit))
    ]


def manager(db: sqlite3.Connection, login: int) -> tuple[str, int, int] | None:
    """(password hash, session type, key version) of a manager that has not been removed."""
    return db.execute("SELECT password_hash, session, key_version FROM managers WHERE login = ? AND removed = 0",
                      (login,)).fetchone()


MAX_LOGIN = 2**63 - 1  # the schema's INTEGER
MAX_NAME = 128  # characters of an account's name (AddUser's bound)
# SQLite's lower() folds ASCII letters only, as PostgreSQL's does under COLLATE "C": the search folds its text alike
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def find_accounts(db: sqlite3.Connection, text: str, from_login: int, limit: int) -> tuple[list[dict], int | None]:
    """A page of accounts by login, from ``from_login`` on, whose login or name starts with ``text`` (ASCII
    letters in any case; empty: every account), and the login the next page starts from."""
    if not text:
        return accounts(db, None, from_login, limit)
    return _page(db.execute(*account_search(text, from_login, limit + 1)).fetchall(), limit)


def account_search(text: str, from_login: int, limit: int) -> tuple[str, list]:
    """The statement of :func:`find_accounts` and its arguments, every part of it bounded by an index: the
    names' prefix range on accounts_name (``+login``: never a walk of the whole key instead), and at most 19
    key ranges of logins, ``limit`` rows of each; then the first ``limit`` accounts found, by key."""
    folded = text.translate(_ASCII_LOWER)
    parts = ["SELECT login FROM accounts WHERE lower(name) >= ? AND lower(name) < ? AND +login >= ?"]
    args: list = [folded, _prefix_end(folded), from_login]
    for low, high in _login_ranges(text):
        if high >= from_login:
            parts.append(f"SELECT login FROM (SELECT login FROM accounts WHERE login BETWEEN ? AND ? ORDER BY login "
                         f"LIMIT ?) AS r{len(parts)}")
            args += [max(low, from_login), high, limit]
    found = " UNION ".join(parts) + " ORDER BY login LIMIT ?"
    return f"{_ACCOUNT} WHERE a.login IN ({found}) ORDER BY a.login", [*args, limit]


def _prefix_end(text: str) -> str:
    """The least string above every string that starts with ``text``, in code point order (that of UTF-8
    bytes: SQLite's BINARY and PostgreSQL's "C"); for a text of U+10FFFF alone, above every such name of up to
    MAX_NAME characters."""
    if not text.rstrip("\U0010ffff"):
        return text + "\U0010ffff" * MAX_NAME
    text = text.rstrip("\U0010ffff")
    following = ord(text[-1]) + 1
    return text[:-1] + chr(0xE000 if 0xD800 <= following < 0xE000 else following)  # (no surrogate in UTF-8)


def _login_ranges(text: str) -> list[tuple[int, int]]:
    """The ranges of logins (1 to MAX_LOGIN) whose decimal form starts with ``text``, in order."""
    if not (text.isascii() and text.isdigit()) or text[0] == "0":
        return []
    first, ranges, scale = int(text), [], 1
    while first * scale <= MAX_LOGIN:
        ranges.append((first * scale, min((first + 1) * scale - 1, MAX_LOGIN)))
        scale *= 10
    return ranges


def _page(rows: list[tuple], limit: int) -> tuple[list[dict], int | None]:
    """Up to ``limit`` accounts of ``rows`` (``limit + 1`` asked), and the login the next page starts from."""
    following = rows[limit][0] if len(rows) > limit else None
    return [_account_json(row) for row in rows[:limit]], following


_ROW = ("SELECT id, order_id, version, login, cmd, state, amount, delta, balance, credit, comment, open_time, "
        "close_time, source, ext_id, created, hash FROM finance")


def _row_json(row: tuple) -> dict:
    money = {name: orjson.Fragment(to_text(row[i])) for i, name in ((6, "amount"), (7, "delta"), (8, "balance"),
                                                                   (9, "credit"))}
    return {"id": row[0], "order": row[1], "version": row[2], "login": row[3], "cmd": row[4], "state": row[5],
            **money, "comment": row[10], "open_time": row[11], "close_time": row[12], "source": row[13],
            "ext_id": row[14], "created": row[15], "hash": row[16]}


def history(db: sqlite3.Connection, login: int, before: int | None, limit: int) -> tuple[list[dict], int | None]:
    """An account's finance rows (every version of every order), newest first, those with a row id below
    ``before`` (None: from the newest); and the ``before`` of the next, older page (None: this is the last)."""
    rows = db.execute(_ROW + " WHERE login = ? AND id < ? ORDER BY id DESC LIMIT ?",
                      (login, before if before is not None else 2**62, limit + 1)).fetchall()
    older = rows[limit - 1][0] if len(rows) > limit else None
    return [_row_json(row) for row in rows[:limit]], older


def versions(db: sqlite3.Connection, order: int) -> list[dict]:
    """Every version of a finance order, oldest first (empty: no such order)."""
    return [_row_json(row) for row in db.execute(_ROW + " WHERE order_id = ? ORDER BY version", (order,))]


def last_seq(db: sqlite3.Connection) -> int:
    """The seq of the newest committed event (0: none yet)."""
    return db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]


# ---- the back-office page's filtered records: each part by an index, each page bounded

SCAN = 10_000  # finance rows a filtered page examines at most (then a short page, with the next to go on from)
COMMANDS = {name: cmd for name, (cmd, _) in rules.OPERATIONS.items()}  # a record's command by name
_CHUNK = 500  # row ids looked up in one statement
# A page's row: its account's currency, and a wallet move's round (the row's ext_id is its transaction.id and its
# id that transaction's seq: found by wallet_tx's primary key).
_PAGE_ROW = (_ROW.replace(" FROM finance", ", (SELECT currency FROM accounts WHERE login = f.login), "
                          "CASE WHEN substr(f.source, 1, 7) = 'wallet:' THEN (SELECT t.game_id FROM wallet_tx t "
                          "WHERE t.provider = substr(f.source, 8) AND t.kind IN ('debit', 'credit', 'cancel', "
                          "'promo') AND t.txid = f.ext_id AND t.login = f.login AND t.seq = f.id) END "
                          "FROM finance f"))
# The rows of a manager's extID: idempotency's key is (manager, ext_id), so each manager is visited by the key (a
# loose index scan: one seek a manager) and its extID looked up.
_EXT_ID_ROWS = ("WITH RECURSIVE m(manager) AS (SELECT MIN(manager) FROM idempotency UNION ALL "
                "SELECT (SELECT MIN(manager) FROM idempotency WHERE manager > m.manager) FROM m "
                "WHERE m.manager IS NOT NULL) "
                "SELECT i.seq FROM m JOIN idempotency i ON i.manager = m.manager AND i.ext_id = ? "
                "WHERE i.seq IS NOT NULL")
# The rows of a wallet transaction id: each provider's moves of that id (a cancel's is its debit's), by the key.
_TXID_ROWS = ("SELECT t.seq FROM providers p CROSS JOIN wallet_tx t WHERE t.provider = p.name "
              "AND t.kind IN ('debit', 'credit', 'cancel', 'promo') AND t.txid = ? AND t.seq IS NOT NULL")


def _page_row_json(row: tuple) -> dict:
    record = _row_json(row)
    record["currency"], record["provider"], record["round"] = row[17], rules.provider_of(row[13]), row[18]
    return record


def find_records(db: sqlite3.Connection, *, login: int | None = None, cmd: int | None = None,
                 start: int | None = None, end: int | None = None, ext_id: str | None = None,
                 txid: str | None = None, before: int | None = None, limit: int = 50,
                 scan: int = SCAN) -> tuple[list[dict], int | None]:
    """Finance rows, newest first, with a row id below ``before``, that are of every filter given: an account, a
    command, created in [start, end), a manager's extID, a wallet transaction id; and the ``before`` of the next
    page (None: there is none). An extID or a transaction id is looked up by its key; otherwise the rows are
    walked by finance_login (an account's) or the primary key, ``scan`` of them at most a page when a command or
    a time is asked (no index has them): such a page may be short, even empty, with a next to go on from."""
    top = before if before is not None else 2**62
    where, args = ["f.id < ?"], [top]
    for clause, value in (("f.login = ?", login), ("f.cmd = ?", cmd), ("f.created >= ?", start),
                          ("f.created < ?", end)):
        if value is not None:
            where.append(clause)
            args.append(value)
    if ext_id is not None or txid is not None:
        found = [{row[0] for row in db.execute(sql, (key,))}
                 for sql, key in ((_EXT_ID_ROWS, ext_id), (_TXID_ROWS, txid)) if key is not None]
        ids = sorted((i for i in set.intersection(*found) if i < top), reverse=True)
        rows: list[tuple] = []
        for i in range(0, len(ids), _CHUNK):
            part = ids[i:i + _CHUNK]
            rows += db.execute(f"{_PAGE_ROW} WHERE {' AND '.join(where)} AND f.id IN ({','.join('?' * len(part))}) "
                               "ORDER BY f.id DESC", (*args, *part)).fetchall()
            if len(rows) > limit:
                break
        return _records(rows, limit, None)
    beyond = None  # the first row a bounded page leaves for the next one
    if cmd is not None or start is not None or end is not None:
        key, key_args = ("f.login = ? AND f.id < ?", (login, top)) if login is not None else ("f.id < ?", (top,))
        row = db.execute(f"SELECT f.id FROM finance f WHERE {key} ORDER BY f.id DESC LIMIT 1 OFFSET ?",
                         (*key_args, scan)).fetchone()
        if row is not None:
            beyond = row[0]
            where.append("f.id > ?")
            args.append(beyond)
    rows = db.execute(f"{_PAGE_ROW} WHERE {' AND '.join(where)} ORDER BY f.id DESC LIMIT ?",
                      (*args, limit + 1)).fetchall()
    return _records(rows, limit, None if beyond is None else beyond + 1)


def _records(rows: list[tuple], limit: int, following: int | None) -> tuple[list[dict], int | None]:
    """Up to ``limit`` rows of ``rows`` (newest first, ``limit + 1`` asked) as JSON, and the next page's
    ``before``: below the last shown if there were more, else ``following``."""
    older = rows[limit - 1][0] if len(rows) > limit else following
    return [_page_row_json(row) for row in rows[:limit]], older


def order_records(db: sqlite3.Connection, order: int) -> list[dict]:
    """Every version of a finance order, oldest first, as :func:`find_records` gives rows (empty: no such order)."""
    return [_page_row_json(row) for row in db.execute(_PAGE_ROW + " WHERE f.order_id = ? ORDER BY f.version",
                                                      (order,))]
