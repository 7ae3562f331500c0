"""A snapshot of the ledger (row counts, accounts with their totals, current orders, events) and the
checks that compare two: nothing moved, or exactly the rows expected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.fuzz.strict import Failed, strict_json


@dataclass(frozen=True)
class Row:
    """The current version of a finance order, with its event's seq."""

    order: int
    version: int
    login: int
    cmd: int
    state: int
    amount: int
    comment: str
    open_time: int
    close_time: int
    balance: int
    credit: int
    seq: int


@dataclass(frozen=True)
class Account:
    name: str
    group: str
    currency: str
    created: int
    leverage: int
    email: str
    enable: bool
    password_hash: str | None
    balance: int
    credit: int


@dataclass
class Snap:
    counts: dict[str, int]
    seq: int
    accounts: dict[int, Account]
    orders: dict[int, Row]
    events: dict[int, tuple[int, bytes]]  # seq -> (type, record) as stored (the record without its seq)

    def event_data(self, seq: int) -> Any:
        """The trade record of an event, as GetTrade and GetTrades answer it (no seq)."""
        return strict_json(self.events[seq][1])

    def sent_data(self, seq: int) -> Any:
        """An event's data as sent (and answered to its …Sync request): the record with the event's seq."""
        return {**self.event_data(seq), "seq": seq}


def take_snapshot(srv: Any) -> Snap:
    db = srv.store.db
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    counts = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    accounts = {}
    for login, *fields in db.execute(
            'SELECT login, name, "group", currency, created, leverage, email, enable, password_hash FROM accounts'):
        row = db.execute("SELECT balance, credit FROM finance WHERE login = ? ORDER BY id DESC LIMIT 1",
                         (login,)).fetchone()
        fields[6] = bool(fields[6])
        accounts[login] = Account(*fields, *(row or (0, 0)))
    orders = {r[0]: Row(*r) for r in db.execute(
        "SELECT f.order_id, f.version, f.login, f.cmd, f.state, f.amount, f.comment, f.open_time, f.close_time, "
        "f.balance, f.credit, e.seq FROM finance f JOIN events e ON e.record_id = f.id "
        "WHERE f.id IN (SELECT MAX(id) FROM finance GROUP BY order_id)")}
    events = {seq: (type_, data.encode()) for seq, type_, data in db.execute("SELECT seq, type, data FROM events")}
    seq = max(events, default=0)
    if srv.store.seq != seq:
        raise Failed(f"store.seq is {srv.store.seq} but the last event is {seq}")
    return Snap(counts, seq, accounts, orders, events)


def assert_unchanged(before: Snap, after: Snap, allow: dict[str, int] | None = None) -> None:
    """Nothing in the ledger moved (``allow``: tables that may gain exactly that many rows)."""
    allow = allow or {}
    for table, n in after.counts.items():
        if n - before.counts.get(table, 0) != allow.get(table, 0):
            raise Failed(f"table {table} went from {before.counts.get(table)} to {n} rows "
                         f"(expected +{allow.get(table, 0)})")
    if after.seq != before.seq or after.orders != before.orders or after.accounts != before.accounts:
        raise Failed("the ledger changed: events, orders or account totals differ")


def expect_counts(before: Snap, after: Snap, deltas: dict[str, int]) -> None:
    for table, n in after.counts.items():
        d = n - before.counts.get(table, 0)
        if d != deltas.get(table, 0):
            raise Failed(f"table {table} changed by {d} rows, expected {deltas.get(table, 0)}")
