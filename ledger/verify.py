"""Offline audit of a ledger: hash chains, gap-free seq, and totals equal to the sum of their rows."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from urllib.parse import quote

from . import rules
from .rules import Version
from .store import GENESIS, event_hash, finance_hash


@dataclass(frozen=True)
class Report:
    ok: bool
    finance_rows: int
    events: int
    accounts: int
    problem: str | None = None  # names the first bad row

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.finance_rows} finance rows, {self.events} events, {self.accounts} accounts"
        return f"FAILED: {self.problem}"


class _Bad(Exception):
    pass


def verify_path(path: str) -> Report:
    """Verify the ledger file at ``path``, opened read-only."""
    # Quote the path: a "?" or "#" in it would otherwise end the URI's path and open another file.
    db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    try:
        return verify(db)
    finally:
        db.close()


def verify(db: sqlite3.Connection) -> Report:
    """Check every finance row and event of ``db``; stop at the first bad one."""
    counts = [0, 0, 0]
    try:
        _check(db, counts)
    except _Bad as bad:
        return Report(False, *counts, problem=str(bad))
    return Report(True, *counts)


def _check(db: sqlite3.Connection, counts: list[int]) -> None:
    totals: dict[int, list[int]] = {login: [0, 0] for (login,) in db.execute("SELECT login FROM accounts")}
    counts[2] = len(totals)
    orders: dict[int, Version] = {}
    prev, expected_id = GENESIS, 1
    records: dict[int, Version] = {}
    for row in db.execute("SELECT * FROM finance ORDER BY id"):
        row_id, order, version, login, cmd, state, amount, delta, balance, credit, comment, open_t, close_t, \
            source, ext_id, created, stored = row
        v = Version(order, version, login, cmd, state, amount, delta, balance, credit, comment, open_t, close_t)
        where = f"finance row {row_id} (order {order} version {version})"
        if row_id != expected_id:
            raise _Bad(f"{where}: expected row id {expected_id}, rows are missing")
        if finance_hash(prev, row_id, v, source, ext_id, created) != stored:
            raise _Bad(f"{where}: hash does not match its content and the previous row")
        last = orders.get(order)
        if last is None:
            if version != 1 or delta != v.effect:
                raise _Bad(f"{where}: a new order must be version 1 with delta equal to its amount")
        elif version != last.version + 1 or (login, cmd) != (last.login, last.cmd) or last.state == rules.TS_DELETED \
                or delta != v.effect - last.effect:
            raise _Bad(f"{where}: does not follow version {last.version} of the order")
        if login not in totals:
            raise _Bad(f"{where}: unknown account {login}")
        acc = totals[login]
        acc[0 if cmd in rules.BALANCE_CMDS else 1] += delta
        if (balance, credit) != tuple(acc):
            raise _Bad(f"{where}: account {login} totals {balance}/{credit} differ from the sum of its rows "
                       f"{acc[0]}/{acc[1]}")
        orders[order] = records[row_id] = v
        prev, expected_id = stored, expected_id + 1
        counts[0] += 1
    prev, expected_seq = GENESIS, 1
    for seq, type_, record_id, data, stored in db.execute("SELECT * FROM events ORDER BY seq"):
        where = f"event seq {seq}"
        if seq != expected_seq:
            raise _Bad(f"{where}: expected seq {expected_seq}, the sequence has a gap")
        if event_hash(prev, seq, type_, record_id, data.encode()) != stored:
            raise _Bad(f"{where}: hash does not match its content and the previous event")
        v = records.pop(record_id, None)
        if v is None or type_ != v.event_type or rules.record_json(v) != data.encode():
            raise _Bad(f"{where}: does not match finance row {record_id}")
        prev, expected_seq = stored, expected_seq + 1
        counts[1] += 1
    if records:
        raise _Bad(f"finance row {min(records)}: has no event")
    _check_keys(db)


def _check_keys(db: sqlite3.Connection) -> None:
    """Every keyed record still has its idempotency key or wallet transaction: without it a retry would
    apply again."""
    row = db.execute(
        "SELECT f.id, f.order_id, f.version FROM finance f JOIN events e ON e.record_id = f.id "
        "WHERE f.source = 'manager' AND f.ext_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM idempotency i WHERE i.seq = e.seq) ORDER BY f.id LIMIT 1").fetchone()
    if row:
        raise _Bad(f"finance row {row[0]} (order {row[1]} version {row[2]}): its idempotency key is missing")
    row = db.execute(
        "SELECT f.id, f.order_id, f.version FROM finance f JOIN events e ON e.record_id = f.id "
        "WHERE f.source = 'wallet' AND NOT EXISTS (SELECT 1 FROM wallet_tx w WHERE w.seq = e.seq) "
        "ORDER BY f.id LIMIT 1").fetchone()
    if row:
        raise _Bad(f"finance row {row[0]} (order {row[1]} version {row[2]}): its wallet transaction is missing")
