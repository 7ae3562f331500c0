"""Audit of a ledger, offline or beside a live server: hash chains, gap-free seq, totals equal to the sum of
their rows, order versions that follow each other, events that match their records, idempotency keys and
wallet transactions that match their records, accounts that every row and key names, and the schema's
append-only triggers.

Everything is read from ONE read transaction (``BEGIN`` ... ``ROLLBACK``): in WAL mode that is one snapshot
of the file (on PostgreSQL, a REPEATABLE READ transaction), so a server committing batches meanwhile cannot
make verify see half of a batch (a finance row without its event, a total without its row) and report
corruption that is not there.

Verify streams: finance rows and events are read together in one pass in id/seq order (every append writes
finance row N and event seq N together, so event seq k has record k), idempotency keys and wallet
transactions are merged into that pass in seq order, and the order-version chains are checked in a second
pass over the (order_id, version) index. Memory is one small entry per account, not per row or per order;
time is O(n log n) (the two sorts SQLite does for the key merges, and the index pass's row lookups).

Truncation and the anchor. Removing the newest rows (finance rows, their events and their keys) leaves a
ledger that is exactly what the honest ledger was a moment earlier: every hash still chains to the one before,
seq is still gap-free from 1, every total still equals the sum of the rows left. Nothing inside the file can
tell that rows are missing, so the only defence is a head kept somewhere else (``syncledger head`` prints
``SEQ:HASH``; the server logs it at shutdown; a backup or a client's last seen event has it too): ``verify
--anchor SEQ:HASH`` then fails if event SEQ is gone (the tail was removed) or has another hash (the ledger was
rewritten at or before it). The same holds for a row edited with its whole chain re-hashed after it.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import orjson

from . import engine, migrations, rules
from .rules import TS_DELETED, Version
from .chain import GENESIS, event_hash, finance_hash

# Triggers of schema.sql that a ledger of an earlier schema version does not have yet (version they came in).
_TRIGGER_SINCE = {"accounts_no_delete": 3, "accounts_fixed": 3}
# What each append-only trigger protects, for the message naming a missing one.
_TRIGGER_GUARDS = {
    "accounts_no_delete": "accounts can be deleted",
    "accounts_fixed": "an account's login, currency or creation time can be changed",
    "finance_no_update": "finance rows can be changed",
    "finance_no_delete": "finance rows can be deleted",
    "events_no_update": "events can be changed",
    "events_no_delete": "events can be deleted",
    "idempotency_no_update": "idempotency keys can be changed",
    "idempotency_no_delete": "idempotency keys can be deleted",
    "wallet_tx_no_update": "wallet transactions can be changed",
    "wallet_tx_no_delete": "wallet transactions can be deleted",
}


@dataclass(frozen=True)
class Report:
    ok: bool
    finance_rows: int
    events: int
    accounts: int
    problem: str | None = None  # names the first bad row (then any other problem found)
    head: str | None = None  # the head verified, "SEQ:HASH" (None if the chain was not read to its end)
    anchor: str | None = None  # the anchor it was checked against, if any

    def __str__(self) -> str:
        if self.ok:
            text = f"ok: {self.finance_rows} finance rows, {self.events} events, {self.accounts} accounts"
            if self.head is not None:
                text += f", head {self.head}"
            if self.anchor is not None:
                text += f", anchor {self.anchor.split(':')[0]} in the chain"
            return text
        return f"FAILED: {self.problem}"


class _Bad(Exception):
    pass


def parse_anchor(text: str) -> tuple[int, str]:
    """``"SEQ:HASH"`` (as ``head`` prints it) as (seq, hash); ValueError if it is not one."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{text!r} is not an anchor SEQ:HASH (a seq and a 64-digit hex hash)")
    return int(seq), digest


def verify_path(path: str, anchor: str | tuple[int, str] | None = None) -> Report:
    """Verify the ledger file (or PostgreSQL URL) at ``path``, opened read-only (it may be in use by a live
    server)."""
    db = engine.connect_ro(path)
    try:
        return verify(db, anchor)
    finally:
        db.close()


def head(db: sqlite3.Connection) -> str:
    """The ledger's head, ``"SEQ:HASH"`` of its last event (``"0:" + 64 zeros`` when it has none). One
    statement: one snapshot, also beside a live server."""
    row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    seq, digest = row if row else (0, GENESIS)
    return f"{seq}:{digest}"


def head_path(path: str) -> str:
    """The head of the ledger file (or PostgreSQL URL) at ``path``, opened read-only."""
    db = engine.connect_ro(path)
    try:
        return head(db)
    finally:
        db.close()


def verify(db: sqlite3.Connection, anchor: str | tuple[int, str] | None = None) -> Report:
    """Check every finance row, event, key and trigger of ``db``; name the first bad row.

    Runs in one read transaction of its own when ``db`` has none open (it is rolled back: verify writes
    nothing), so every query reads the same snapshot; inside a transaction the caller opened, it reads that.
    ``anchor`` (``"SEQ:HASH"`` or a (seq, hash) pair, from :func:`head` earlier) must still be in the chain.
    Raises SchemaError for a database that is not a ledger this program understands."""
    if isinstance(anchor, str):
        anchor = parse_anchor(anchor)
    own = not db.in_transaction
    if own:
        db.execute(engine.snapshot(db))
    try:
        return _Audit(db, anchor).run()
    finally:
        if own and db.in_transaction:
            db.execute("ROLLBACK")


@lru_cache(maxsize=1)
def _expected_triggers() -> dict[str, str]:
    """name -> normalised definition of every trigger of schema.sql."""
    found = re.findall(r"(CREATE\s+TRIGGER\s+IF\s+NOT\s+EXISTS\s+(\w+)\b.*?\bEND\s*;)",
                       migrations.schema_sql(), flags=re.S | re.I)
    return {name: _normalise(re.sub(r"IF\s+NOT\s+EXISTS\s+", "", sql, count=1, flags=re.I)) for sql, name in found}


@lru_cache(maxsize=1)
def _expected_pg() -> tuple[dict[str, str], str]:
    """PostgreSQL: name -> normalised definition of every trigger of schema.pg.sql, and the body of the
    function they call."""
    schema = migrations.schema_pg_sql()
    found = re.findall(r"^(CREATE TRIGGER (\w+) .*?;)$", schema, flags=re.M)
    body = re.search(r"CREATE FUNCTION syncledger_refuse\(\).*?AS \$\$(.*?)\$\$;", schema, flags=re.S)[1]
    return {name: engine.normalise_trigger(sql) for sql, name in found}, " ".join(body.split())


def _normalise(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").rstrip()


class _Audit:
    def __init__(self, db: Any, anchor: tuple[int, str] | None):
        self.db, self.anchor = db, anchor
        self.counts = [0, 0, 0]
        self.head: str | None = None
        self._cursors: list[Any] = []
        # PostgreSQL: server-side cursors, so that rows stream in pages (sqlite3 steps its statements anyway)
        self._execute = db.stream if isinstance(db, engine.PgConnection) else db.execute

    def _query(self, sql: str, *args: object) -> Any:
        cursor = self._execute(sql, args)
        self._cursors.append(cursor)
        return cursor

    def run(self) -> Report:
        try:
            return self._run()
        finally:
            for cursor in self._cursors:  # reset every statement before the ROLLBACK
                cursor.close()

    def _run(self) -> Report:
        db = self.db
        version = migrations.version_of(db)  # the first read: it fixes the snapshot
        if version > migrations.LATEST:
            raise migrations.SchemaError(f"the ledger has schema version {version}, newer than this syncledger "
                                         f"understands ({migrations.LATEST}): run a newer syncledger")
        if version == 0:
            raise migrations.SchemaError("not a syncledger ledger (no schema version)")
        triggers = self._triggers(version)
        problems: list[tuple[tuple[int, int], str]] = []  # (where in the ledger, message)
        totals: dict[int, list[int]] = {login: [0, 0] for (login,) in self._query("SELECT login FROM accounts")}
        self.counts[2] = len(totals)
        first = self._rows(totals)
        if first is not None:
            problems.append(first)
        order_problem = self._orders(first[0][0] if first else None)
        if order_problem is not None:
            problems.append(order_problem)
        problems.sort(key=lambda p: p[0])  # stable: at the same row, the row pass's finding comes first
        messages = [message for _, message in problems[:1]]
        if not messages:
            messages += self._account_keys(version)
            if self.anchor is not None:
                messages += self._check_anchor()
        messages += triggers
        if messages:
            return Report(False, *self.counts, problem="; ".join(messages))
        anchor = f"{self.anchor[0]}:{self.anchor[1]}" if self.anchor else None
        return Report(True, *self.counts, head=self.head, anchor=anchor)

    # ------------------------------------------------------------------ schema

    def _triggers(self, version: int) -> list[str]:
        """Every append-only trigger of the schema is there, with its definition; no other trigger."""
        if isinstance(self.db, engine.PgConnection):
            return self._pg_triggers()
        stored = {name: (table, sql) for name, table, sql in self.db.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")}
        problems = []
        for name, definition in _expected_triggers().items():
            if _TRIGGER_SINCE.get(name, 1) > version:
                continue
            guards = _TRIGGER_GUARDS.get(name, "the ledger is not protected")
            if name not in stored:
                problems.append(f"trigger {name} is missing ({guards})")
            elif _normalise(stored[name][1] or "") != definition:
                problems.append(f"trigger {name} is not the schema's ({guards})")
        for name in sorted(set(stored) - set(_expected_triggers())):
            problems.append(f"trigger {name} on {stored[name][0]} is not part of the schema")
        return problems

    def _pg_triggers(self) -> list[str]:
        """PostgreSQL: the same, and each trigger enabled, and the function they call the schema's."""
        expected, body = _expected_pg()
        stored = {name: (table, sql, enabled) for name, table, sql, enabled in self.db.execute(
            "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid), t.tgenabled FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
            "AND c.relnamespace = current_schema()::regnamespace")}
        problems = []
        for name, definition in expected.items():
            guards = _TRIGGER_GUARDS.get(name, "the ledger is not protected")
            if name not in stored:
                problems.append(f"trigger {name} is missing ({guards})")
            elif engine.normalise_trigger(stored[name][1]) != definition:
                problems.append(f"trigger {name} is not the schema's ({guards})")
            elif stored[name][2] not in ("O", "A"):
                problems.append(f"trigger {name} is disabled ({guards})")
        for name in sorted(set(stored) - set(expected)):
            problems.append(f"trigger {name} on {stored[name][0]} is not part of the schema")
        found = [" ".join(src.split()) for (src,) in self.db.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'syncledger_refuse' "
            "AND pronamespace = current_schema()::regnamespace")]
        if found != [body]:
            problems.append("function syncledger_refuse is not the schema's (the append-only triggers may let "
                            "changes through)")
        return problems

    # ------------------------------------------------------------------ finance rows, events and their keys

    def _rows(self, totals: dict[int, list[int]]) -> tuple[tuple[int, int], str] | None:
        """One pass over finance rows and events together, with idempotency keys and wallet transactions
        merged in by seq. Returns the first problem ((row, 0 for a finance row or 1 for an event), message)."""
        finance = self._query(
            "SELECT id, order_id, version, login, cmd, state, amount, delta, balance, credit, comment, open_time, "
            "close_time, source, ext_id, created, hash FROM finance ORDER BY id")
        events = self._query("SELECT seq, type, record_id, data, hash FROM events ORDER BY seq")
        keys = _Merge(self._query("SELECT seq, manager, ext_id FROM idempotency WHERE seq IS NOT NULL ORDER BY seq"),
                      "idempotency key (manager {1}, extID {2!r})", "idempotency key")
        wallet = _Merge(self._query("SELECT seq, kind, txid FROM wallet_tx WHERE seq IS NOT NULL ORDER BY seq"),
                        "wallet transaction ({1} {2!r})", "wallet transaction")
        balance_cmds, record_json, provider_of = rules.BALANCE_CMDS, rules.record_json, rules.provider_of
        counts = self.counts
        anchor_seq, anchor_hash = self.anchor if self.anchor else (-1, "")
        fprev = eprev = GENESIS
        n = 0
        at = (0, 0)
        try:
            for row_id, order, version, login, cmd, state, amount, delta, balance, credit, comment, open_t, \
                    close_t, source, ext_id, created, stored in finance:
                n += 1
                at = (n, 0)
                if row_id != n:
                    raise _Bad(f"{_row(row_id, order, version)}: expected row id {n}, rows are missing")
                v = Version(order, version, login, cmd, state, amount, delta, balance, credit, comment, open_t,
                            close_t)
                if finance_hash(fprev, row_id, v, source, ext_id, created) != stored:
                    raise _Bad(f"{_row(row_id, order, version)}: hash does not match its content and the previous row")
                acc = totals.get(login)
                if acc is None:
                    raise _Bad(f"{_row(row_id, order, version)}: unknown account {login}")
                acc[0 if cmd in balance_cmds else 1] += delta
                if balance != acc[0] or credit != acc[1]:
                    raise _Bad(f"{_row(row_id, order, version)}: account {login} totals {balance}/{credit} differ "
                               f"from the sum of its rows {acc[0]}/{acc[1]}")
                # Its key: a keyed manager request has its idempotency key, a wallet move its transaction
                # (the key of a keyed record is its ext_id; a wallet move's is its transaction.id).
                provider = provider_of(source)
                wallet_move = provider is not None or source == "wallet"
                if keys.seq <= row_id or (ext_id is not None and not wallet_move):
                    keys.match(row_id, order, version, None if wallet_move else ext_id)
                if wallet.seq <= row_id or wallet_move:
                    wallet.match(row_id, order, version, ext_id if wallet_move else None)
                fprev = stored
                counts[0] += 1
                # Its event: seq n, chained, and the record's JSON.
                at = (n, 1)
                event = next(events, None)
                if event is None:
                    raise _Bad(f"{_row(row_id, order, version)}: has no event")
                seq, type_, record_id, data, estored = event
                if seq != n:
                    raise _Bad(f"event seq {seq}: expected seq {n}, the sequence has a gap")
                data = data.encode()
                if event_hash(eprev, seq, type_, record_id, data) != estored:
                    raise _Bad(f"event seq {seq}: hash does not match its content and the previous event")
                if record_id != row_id or type_ != v.event_type or record_json(v, provider) != data:
                    raise _Bad(f"event seq {seq}: does not match finance row {row_id}")
                if seq == anchor_seq and estored != anchor_hash:
                    raise _Bad(f"event seq {seq}: its hash {estored} is not the anchor's {anchor_hash}: the ledger "
                               "was rewritten at or before it")
                eprev = estored
                counts[1] += 1
            at = (n + 1, 0)
            event = next(events, None)
            if event is not None:
                raise _Bad(f"event seq {event[0]}: its record (finance row {event[2]}) is missing")
            keys.finish(n)
            wallet.finish(n)
        except _Bad as bad:
            return at, str(bad)
        self.head = f"{n}:{eprev}"
        return None

    def _orders(self, before: int | None) -> tuple[tuple[int, int], str] | None:
        """Each order's versions follow each other: 1, 2, ... in row order, same account and cmd, nothing
        after a delete, each delta what the version changed. One pass over the (order_id, version) index;
        returns the problem at the smallest row id (below ``before``)."""
        bad: tuple[tuple[int, int], str] | None = None
        last = None  # (order, version, id, login, cmd, state, effect)
        for order, version, row_id, login, cmd, state, amount, delta in self._query(
                "SELECT order_id, version, id, login, cmd, state, amount, delta FROM finance "
                "ORDER BY order_id, version"):
            effect = 0 if state == TS_DELETED else amount
            current = (order, version, row_id, login, cmd, state, effect)
            if last is None or last[0] != order:
                problem = None if version == 1 and delta == effect else \
                    "a new order must be version 1 with delta equal to its amount"
            elif version != last[1] + 1 or row_id <= last[2] or (login, cmd) != last[3:5] \
                    or last[5] == TS_DELETED or delta != effect - last[6]:
                problem = f"does not follow version {last[1]} of the order"
            else:
                problem = None
            last = current
            if problem is not None and (before is None or row_id < before) and (bad is None or row_id < bad[0][0]):
                bad = ((row_id, 0), f"finance row {row_id} (order {order} version {version}): {problem}")
        return bad

    def _account_keys(self, version: int) -> list[str]:
        """A keyed AddUser names an existing account, created as its key says (currency, creation time)."""
        if version < 3:
            return []  # keys name accounts from schema version 3
        for manager, ext_id, login, payload, created, found, currency, since in self._query(
                "SELECT i.manager, i.ext_id, i.login, i.payload, i.created, a.login, a.currency, a.created "
                "FROM idempotency i LEFT JOIN accounts a ON a.login = i.login WHERE i.login IS NOT NULL "
                "ORDER BY i.manager, i.ext_id"):
            where = f"idempotency key (manager {manager}, extID {ext_id!r})"
            if found is None:
                return [f"{where}: names account {login}, which does not exist"]
            try:
                asked = orjson.loads(payload)
                ok = asked[0] == "AddUser" and asked[2] == currency and since == created
            except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
                ok = False
            if not ok:
                return [f"{where}: account {login} (currency {currency}, created {since}) is not the account "
                        f"it created"]
        return []

    def _check_anchor(self) -> list[str]:
        seq, digest = self.anchor
        last = self.counts[1]
        if seq > last:
            return [f"anchor {seq}:{digest}: the ledger ends at event seq {last}: its newest events were removed "
                    "(truncated)"]
        if seq == 0 and digest != GENESIS:
            return [f"anchor {seq}:{digest}: seq 0 has the hash {GENESIS}"]
        return []


def _row(row_id: int, order: int, version: int) -> str:
    return f"finance row {row_id} (order {order} version {version})"


class _Merge:
    """Rows (seq, a, key) in seq order, each naming the one finance row whose key it is, merged into the pass
    over finance rows."""

    def __init__(self, cursor: Any, name: str, what: str):
        self._rows: Iterator[tuple] = iter(cursor)
        self._name, self._what = name, what
        self._next()

    def _next(self) -> None:
        self.row = next(self._rows, None)
        self.seq = self.row[0] if self.row is not None else _END

    def _named(self) -> str:
        return self._name.format(*self.row) + f" names event seq {self.row[0]}"

    def match(self, row_id: int, order: int, version: int, key: str | None) -> None:
        """Finance row ``row_id`` must have the key ``key`` here (None: none of this kind)."""
        if self.seq == row_id and key is not None and self.row[2] == key:
            self._next()
            if self.seq != row_id:
                return
            raise _Bad(f"{_row(row_id, order, version)}: {self._named()} too: two keys for one record")
        if self.seq < row_id:  # passed over: it names no record
            raise _Bad(f"{self._named()}, which is no record")
        where = _row(row_id, order, version)
        if self.seq > row_id:
            raise _Bad(f"{where}: its {self._what} is missing (a retry would apply again)")
        if key is None:
            raise _Bad(f"{where}: {self._named()}, but the record has no such key")
        raise _Bad(f"{where}: {self._named()}, but the record's key is {key!r}")

    def finish(self, last: int) -> None:
        if self.row is not None:
            raise _Bad(f"{self._named()}, beyond the last event ({last}): the newest events were removed "
                       "(truncated)")


_END = 2**64  # past any seq
