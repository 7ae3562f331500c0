"""What an operator reconciles a game provider with (issue 23): the provider's rounds with their moves, its totals
of a UTC day, and a comparison of the provider's own transaction report with the ledger's rows. Pure reads of a
DB-API connection (sqlite3, or ledger.engine's PostgreSQL one) in the caller's snapshot, every one bounded by an
index of wallet_tx or wallet_rounds; money in exact integer micro-units (shown with money.to_text).

The ledger's side of a provider is its *accepted* wallet rows (status OK): debits (bets), credits (wins),
cancels and promo payouts. A cancel row's txid is the cancelled debit's, and the money it moved is that debit's
amount (the cancel request's own amount is not used): a cancel is counted and compared by the debit's amount."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterable, Iterator

import orjson

from .money import to_text

DAY = 86_400
STATES = ("open", "settled", "cancelled")
TYPES = ("debit", "credit", "cancel", "promo_payout")  # a move's type, as a provider's report names it
KIND = {"debit": "debit", "credit": "credit", "cancel": "cancel", "promo_payout": "promo"}  # -> wallet_tx.kind
TYPE = {kind: name for name, kind in KIND.items()}
MAX_ROUNDS = 1000  # rounds a page may ask for
SCAN = 10_000  # index entries one page of rounds examines per state at most (a filter that matches few pages on)
_CHUNK = 500  # ids looked up in one statement


def _money(micro: int) -> orjson.Fragment:
    return orjson.Fragment(to_text(micro).encode())


def _int(value: Any) -> int:
    """A count or a sum as Python's int (PostgreSQL's SUM of BIGINT is a numeric: a Decimal here)."""
    return 0 if value is None else int(value)


def day_span(day: date) -> tuple[int, int]:
    """The UTC day ``day`` as [start, end) in Unix seconds."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    return start, start + DAY


def utc(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC (``2023-11-14T22:13:20Z``; fractions of a second kept)."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    text = moment.isoformat(timespec="microseconds" if seconds != int(seconds) else "seconds")
    return text.replace("+00:00", "Z")


# ---- rounds


@dataclass(frozen=True, slots=True)
class Move:
    """An accepted move of a round: a debit, a credit or a cancel (``amount``: a cancel's is its debit's)."""

    type: str
    txid: str
    ref_id: str | None
    amount: int
    time: int
    order: int | None

    def json(self) -> dict:
        return {"type": self.type, "txid": self.txid, "ref_id": self.ref_id, "amount": _money(self.amount),
                "time": self.time, "order": self.order}


@dataclass(frozen=True, slots=True)
class Round:
    provider: str
    login: int
    game_id: str
    state: str
    opened: int  # its first accepted debit's time
    updated: int  # its last accepted move's time
    moves: tuple[Move, ...]

    def total(self, kind: str) -> int:
        return sum(m.amount for m in self.moves if m.type == kind)

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.opened, self.login, self.game_id)

    def json(self) -> dict:
        return {"provider": self.provider, "login": self.login, "game_id": self.game_id, "state": self.state,
                "opened": self.opened, "updated": self.updated, "bets": _money(self.total("debit")),
                "wins": _money(self.total("credit")), "cancelled": _money(self.total("cancel")),
                "moves": [m.json() for m in self.moves]}


def cursor_text(key: tuple[int, int, str]) -> str:
    """A page's ``next`` as text (``OPENED:LOGIN:GAME_ID``), for a URL or a command line."""
    return f"{key[0]}:{key[1]}:{key[2]}"


def parse_cursor(text: str) -> tuple[int, int, str]:
    """The key a ``next`` names (ValueError if it is not one)."""
    opened, login, game_id = text.split(":", 2)
    if not (opened.lstrip("-").isdigit() and login.isdigit()):
        raise ValueError("not a page's next")
    return int(opened), int(login), game_id


_ROUND_KEYS = ("SELECT opened, login, game_id FROM wallet_rounds WHERE provider = ? AND state = ? AND opened <= ? "
               "AND opened >= ? AND (opened > ? OR login > ? OR (login = ? AND game_id > ?)) "
               "ORDER BY opened, login, game_id LIMIT ?")
# A round's accepted moves: their keys from the index wallet_tx_round (provider, login, game_id), then each row by
# the primary key (CROSS JOIN keeps SQLite to that order: left to itself, with no statistics, it would walk the
# provider's rows of those kinds by the primary key instead).
_ROUND_MOVES = ("SELECT t.kind, t.txid, t.ref_id, t.amount, t.created, t.order_id FROM (SELECT kind, txid FROM wallet_tx "
                "WHERE provider = ? AND login = ? AND game_id = ?) k CROSS JOIN wallet_tx t WHERE t.provider = ? "
                "AND t.kind = k.kind AND t.txid = k.txid AND t.login = ? AND t.status = 'OK' "
                "AND t.kind IN ('debit', 'credit', 'cancel') ORDER BY t.seq")


def rounds(db: Any, provider: str, *, open_only: bool = False, opened_before: int | None = None,
           game_id: str | None = None, login: int | None = None, after: tuple[int, int, str] | None = None,
           limit: int = 100, scan: int = SCAN) -> tuple[list[Round], tuple[int, int, str] | None]:
    """A page of the provider's rounds, oldest opened first (by ``(opened, login, game_id)``), from after the key
    ``after``: those open (``open_only``) or in any state, opened at or before ``opened_before``, of one
    ``game_id`` and one ``login`` if given; and the key the next page starts after (None: this was the last).

    Each state's rounds are walked on the index ``wallet_rounds_state (provider, state, opened)``, ``scan``
    entries at most per state and page: a filter the index cannot bound (a game id or a login alone) may give
    a short page, even an empty one, with a ``next`` to go on from. A login and a game id together are one key."""
    limit = max(1, min(limit, MAX_ROUNDS))
    states = ("open",) if open_only else STATES
    newest = opened_before if opened_before is not None else 2**62
    if login is not None and game_id is not None:  # one round, by its key
        row = db.execute("SELECT opened, state FROM wallet_rounds WHERE provider = ? AND login = ? AND game_id = ?",
                         (provider, login, game_id)).fetchone()
        keys = [] if row is None or row[1] not in states or row[0] > newest or \
            (after is not None and (row[0], login, game_id) <= after) else [(row[0], login, game_id)]
        return _rounds(db, provider, keys), None
    start = after if after is not None else (-(2**62), -1, "")
    if login is None and game_id is None:
        scan = limit  # (every key is one of the page's)
    scanned: list[tuple[int, int, str]] = []
    boundary: tuple[int, int, str] | None = None  # every key up to it was examined in every state
    for state in states:
        keys = [tuple(row) for row in db.execute(_ROUND_KEYS, (provider, state, newest, start[0], start[0],
                                                               start[1], start[1], start[2], scan))]
        scanned += keys
        if len(keys) == scan and (boundary is None or keys[-1] < boundary):
            boundary = keys[-1]  # type: ignore[assignment]
    scanned.sort()
    found: list[tuple[int, int, str]] = []
    for key in scanned:
        if boundary is not None and key > boundary:
            break
        if (login is None or key[1] == login) and (game_id is None or key[2] == game_id):
            found.append(key)
            if len(found) == limit:
                return _rounds(db, provider, found), key
    return _rounds(db, provider, found), boundary


def _rounds(db: Any, provider: str, keys: list[tuple[int, int, str]]) -> list[Round]:
    """The rounds of these keys with their accepted moves (each by the index wallet_tx_round)."""
    out = []
    for opened, login, game_id in keys:
        row = db.execute("SELECT state, updated FROM wallet_rounds WHERE provider = ? AND login = ? AND game_id = ?",
                         (provider, login, game_id)).fetchone()
        if row is None:
            continue
        rows = db.execute(_ROUND_MOVES, (provider, login, game_id, provider, login)).fetchall()
        debits = {txid: amount for kind, txid, _, amount, _, _ in rows if kind == "debit"}
        moves = tuple(Move(kind, txid, ref, debits.get(txid, amount) if kind == "cancel" else amount, created, order)
                      for kind, txid, ref, amount, created, order in rows)
        out.append(Round(provider, login, game_id, row[0], opened, row[1], moves))
    return out


def open_rounds(db: Any) -> list[tuple[str, int, int | None]]:
    """(provider, rounds open, when the oldest of them was opened or None) of every provider: the active ones,
    and a removed one while it still has open rounds. Each by the index wallet_rounds_state: the cost is the
    open rounds, never the settled ones."""
    found = []
    for name, removed in db.execute("SELECT name, removed FROM providers ORDER BY name").fetchall():
        count, oldest = db.execute("SELECT COUNT(*), MIN(opened) FROM wallet_rounds WHERE provider = ? "
                                   "AND state = 'open'", (name,)).fetchone()
        if count or not removed:
            found.append((name, _int(count), None if oldest is None else int(oldest)))
    return found


def providers(db: Any) -> list[str]:
    """The names of the providers (removed ones included), by name."""
    return [row[0] for row in db.execute("SELECT name FROM providers ORDER BY name")]


# ---- one round and every call of it (the back-office page's round view)


@dataclass(frozen=True, slots=True)
class Call:
    """A call of a round as the ledger recorded it: accepted (``OK``, with its order and seq) or refused (the
    status it was answered, no order). An accepted cancel's amount is its debit's."""

    type: str
    txid: str
    ref_id: str | None
    amount: int
    status: str
    time: int
    order: int | None
    seq: int | None

    def json(self) -> dict:
        return {"type": self.type, "txid": self.txid, "ref_id": self.ref_id, "amount": _money(self.amount),
                "status": self.status, "time": self.time, "order": self.order, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class RoundCalls:
    provider: str
    login: int
    game_id: str
    state: str | None  # None: no debit of it was accepted
    opened: int | None
    updated: int | None
    calls: tuple[Call, ...]

    def total(self, kind: str) -> int:
        """The accepted calls' amount of a kind."""
        return sum(c.amount for c in self.calls if c.type == kind and c.status == "OK")

    def json(self) -> dict:
        return {"provider": self.provider, "login": self.login, "game_id": self.game_id, "state": self.state,
                "opened": self.opened, "updated": self.updated, "bets": _money(self.total("debit")),
                "wins": _money(self.total("credit")), "cancelled": _money(self.total("cancel")),
                "calls": [c.json() for c in self.calls]}


# A round's rows: their keys from the index wallet_tx_round, then each row by the primary key (as _ROUND_MOVES),
# in the order taken (refused ones, which have no seq, after the accepted ones of their second); an accepted
# cancel's money is its debit's. (Their kind is left to the caller.)
_ROUND_CALLS = ("SELECT t.kind, t.txid, t.ref_id, t.amount, t.status, t.created, t.order_id, t.seq, "
                "CASE WHEN t.kind = 'cancel' AND t.status = 'OK' THEN (SELECT d.amount FROM wallet_tx d "
                "WHERE d.provider = t.provider AND d.kind = 'debit' AND d.txid = t.txid AND d.login = t.login) END "
                "FROM (SELECT kind, txid FROM wallet_tx WHERE provider = ? AND login = ? AND game_id = ?) k "
                "CROSS JOIN wallet_tx t WHERE t.provider = ? AND t.kind = k.kind AND t.txid = k.txid AND t.login = ? "
                "ORDER BY t.created, t.seq IS NULL, t.seq, t.kind, t.txid")
# The provider's logins, one seek each on wallet_tx_round (a loose index scan), ``scan`` at most, each with
# whether it has a call of the round.
_ROUND_LOGINS = ("WITH RECURSIVE l(login, n) AS (SELECT (SELECT MIN(login) FROM wallet_tx WHERE provider = ? "
                 "AND login > ?), 1 UNION ALL SELECT (SELECT MIN(login) FROM wallet_tx WHERE provider = ? "
                 "AND login > l.login), l.n + 1 FROM l WHERE l.login IS NOT NULL AND l.n < ?) "
                 "SELECT l.login, EXISTS (SELECT 1 FROM wallet_tx WHERE provider = ? AND login = l.login "
                 "AND game_id = ?) FROM l WHERE l.login IS NOT NULL ORDER BY l.login")


def round_calls(db: Any, provider: str, login: int, game_id: str) -> RoundCalls | None:
    """The provider's round ``game_id`` of account ``login`` with every call of it (None: no call of it)."""
    calls = tuple(Call(TYPE[kind], txid, ref, _int(debit if debit is not None else amount), status, int(created),
                       order, seq) for kind, txid, ref, amount, status, created, order, seq, debit
                  in db.execute(_ROUND_CALLS, (provider, login, game_id, provider, login)) if kind in ("debit", "credit", "cancel"))
    if not calls:
        return None
    found = db.execute("SELECT state, opened, updated FROM wallet_rounds WHERE provider = ? AND login = ? "
                       "AND game_id = ?", (provider, login, game_id)).fetchone()
    state, opened, updated = found if found is not None else (None, None, None)
    return RoundCalls(provider, login, game_id, state, opened, updated, calls)


def round_logins(db: Any, provider: str, game_id: str, after: int | None = None, limit: int = 20,
                 scan: int = SCAN) -> tuple[list[int], int | None]:
    """The logins with calls of the provider's round ``game_id``, by login, after ``after``: ``limit`` at most,
    found among the next ``scan`` logins of the provider's calls (walked by the index wallet_tx_round); and the
    login to go on after (None: there are no more)."""
    rows = db.execute(_ROUND_LOGINS, (provider, -(2**62) if after is None else after, provider, scan, provider,
                                      game_id)).fetchall()
    found = []
    for login, hit in rows:
        if hit:
            found.append(int(login))
            if len(found) == limit:
                return found, int(login)
    return found, int(rows[-1][0]) if len(rows) == scan else None


# ---- the day report


@dataclass(slots=True)
class Totals:
    """One currency's figures of a provider's day. ``ggr`` = bets − cancelled bets − wins; promo payouts are
    shown apart and not in it. Counts and sums are of the moves accepted that day (a cancel of an earlier day's
    bet counts on the day of the cancel); rounds are counted as they stand now."""

    currency: str
    bets: int = 0
    bets_amount: int = 0
    wins: int = 0
    wins_amount: int = 0
    cancels: int = 0
    cancels_amount: int = 0  # the cancelled debits' amounts
    promos: int = 0
    promos_amount: int = 0
    rounds_opened: int = 0  # rounds whose first debit was taken that day
    rounds_settled: int = 0  # settled now, by a move made that day
    rounds_cancelled: int = 0  # every debit cancelled (and no credit), by a move made that day
    rounds_open: int = 0  # open now (whenever opened)

    @property
    def ggr(self) -> int:
        return self.bets_amount - self.cancels_amount - self.wins_amount

    def json(self) -> dict:
        return {"currency": self.currency,
                "bets": {"count": self.bets, "amount": _money(self.bets_amount)},
                "wins": {"count": self.wins, "amount": _money(self.wins_amount)},
                "cancels": {"count": self.cancels, "amount": _money(self.cancels_amount)},
                "promo_payouts": {"count": self.promos, "amount": _money(self.promos_amount)},
                "ggr": _money(self.ggr),
                "rounds": {"opened": self.rounds_opened, "settled": self.rounds_settled,
                           "cancelled": self.rounds_cancelled, "open_now": self.rounds_open}}

    def row(self) -> dict:
        """As a CSV row (money as decimal text)."""
        return {"currency": self.currency, "bets": self.bets, "bets_amount": to_text(self.bets_amount),
                "wins": self.wins, "wins_amount": to_text(self.wins_amount), "cancels": self.cancels,
                "cancels_amount": to_text(self.cancels_amount), "ggr": to_text(self.ggr),
                "promo_payouts": self.promos, "promo_payouts_amount": to_text(self.promos_amount),
                "rounds_opened": self.rounds_opened, "rounds_settled": self.rounds_settled,
                "rounds_cancelled": self.rounds_cancelled, "rounds_open_now": self.rounds_open}


GGR_NOTE = "ggr = bets - cancelled bets - wins; promo payouts are shown apart and are not in it"
CSV_COLUMNS = ("provider", "day", *Totals("").row())


@dataclass(slots=True)
class DayReport:
    provider: str
    day: date
    start: int
    end: int
    currencies: list[Totals] = field(default_factory=list)

    def json(self) -> dict:
        return {"provider": self.provider, "day": self.day.isoformat(), "from": self.start, "to": self.end,
                "note": GGR_NOTE, "currencies": [t.json() for t in self.currencies]}


_DAY_MOVES = ("SELECT a.currency, t.kind, COUNT(*), SUM(t.amount) FROM wallet_tx t JOIN accounts a ON a.login = t.login "
              "WHERE t.provider = ? AND t.created >= ? AND t.created < ? AND t.status = 'OK' "
              "AND t.kind IN ('debit', 'credit', 'promo') GROUP BY a.currency, t.kind")
_DAY_CANCELS = ("SELECT a.currency, COUNT(*), SUM(d.amount) FROM wallet_tx t JOIN wallet_tx d ON d.provider = t.provider "
                "AND d.kind = 'debit' AND d.txid = t.txid AND d.login = t.login JOIN accounts a ON a.login = t.login "
                "WHERE t.provider = ? AND t.created >= ? AND t.created < ? AND t.status = 'OK' AND t.kind = 'cancel' "
                "GROUP BY a.currency")
_DAY_OPENED = ("SELECT a.currency, COUNT(*) FROM wallet_rounds r JOIN accounts a ON a.login = r.login "
               "WHERE r.provider = ? AND r.state IN ('open', 'settled', 'cancelled') AND r.opened >= ? "
               "AND r.opened < ? GROUP BY a.currency")
# A round's updated is the time of its last accepted move, so a round closed by a move of the day is one of the
# rounds the day's rows touched: found by the index wallet_tx_day, never by a walk of every round.
_DAY_CLOSED = ("SELECT a.currency, r.state, COUNT(*) FROM (SELECT DISTINCT login, game_id FROM wallet_tx "
               "WHERE provider = ? AND created >= ? AND created < ? AND status = 'OK' "
               "AND kind IN ('debit', 'credit', 'cancel') AND game_id IS NOT NULL) m "
               "JOIN wallet_rounds r ON r.provider = ? AND r.login = m.login AND r.game_id = m.game_id "
               "JOIN accounts a ON a.login = r.login "
               "WHERE r.updated >= ? AND r.updated < ? AND r.state <> 'open' GROUP BY a.currency, r.state")
_OPEN_NOW = ("SELECT a.currency, COUNT(*) FROM wallet_rounds r JOIN accounts a ON a.login = r.login "
             "WHERE r.provider = ? AND r.state = 'open' GROUP BY a.currency")


def day_report(db: Any, provider: str, day: date) -> DayReport:
    """The provider's figures of the UTC day ``day``, per currency (the accounts'), by currency code."""
    start, end = day_span(day)
    report = DayReport(provider, day, start, end)
    per: dict[str, Totals] = {}

    def of(currency: str) -> Totals:
        return per.setdefault(currency, Totals(currency))
    for currency, kind, count, amount in db.execute(_DAY_MOVES, (provider, start, end)):
        totals = of(currency)
        if kind == "debit":
            totals.bets, totals.bets_amount = _int(count), _int(amount)
        elif kind == "credit":
            totals.wins, totals.wins_amount = _int(count), _int(amount)
        else:
            totals.promos, totals.promos_amount = _int(count), _int(amount)
    for currency, count, amount in db.execute(_DAY_CANCELS, (provider, start, end)):
        of(currency).cancels, of(currency).cancels_amount = _int(count), _int(amount)
    for currency, count in db.execute(_DAY_OPENED, (provider, start, end)):
        of(currency).rounds_opened = _int(count)
    for currency, state, count in db.execute(_DAY_CLOSED, (provider, start, end, provider, start, end)):
        if state == "settled":
            of(currency).rounds_settled = _int(count)
        else:
            of(currency).rounds_cancelled = _int(count)
    for currency, count in db.execute(_OPEN_NOW, (provider,)):
        of(currency).rounds_open = _int(count)
    report.currencies = [per[c] for c in sorted(per)]
    return report


# ---- reconciliation


@dataclass(frozen=True, slots=True)
class Row:
    """A move as a provider's report lists it (``line``: its line in the file) or as the ledger holds it
    (``login``: its account). ``time``: Unix seconds."""

    type: str  # debit | credit | cancel | promo_payout
    txid: str
    amount: int  # micro-units (a cancel: the amount of the debit it cancelled)
    round: str | None
    time: float | None  # (None: the file has no time column)
    line: int | None = None
    login: int | None = None

    @property
    def key(self) -> tuple[str, bool]:
        """What a row is matched by: its id, and whether it is a cancel (whose id is its debit's)."""
        return (self.txid, self.type == "cancel")

    def text(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        account = f", login {self.login}" if self.login is not None else ""
        game = f" round {self.round}" if self.round is not None else ""
        at = f" at {utc(self.time)}" if self.time is not None else ""
        return f"{where}{self.type} {self.txid} amount {to_text(self.amount)}{game}{at}{account}"

    def json(self) -> dict:
        return {"type": self.type, "txid": self.txid, "amount": _money(self.amount), "round": self.round,
                "time": self.time, "line": self.line, "login": self.login}


MISSING_IN_LEDGER = "missing in the ledger"
MISSING_IN_FILE = "missing in the file"
TYPE_DIFFERS = "type differs"
AMOUNT_DIFFERS = "amount differs"
ROUND_DIFFERS = "round differs"
DUPLICATE = "repeated in the file"


@dataclass(frozen=True, slots=True)
class Difference:
    what: str
    file: Row | None  # the file's row (None: missing in the file)
    ledger: Row | None  # the ledger's row (None: missing in the ledger)
    note: str = ""

    @property
    def order(self) -> tuple:
        row = self.file or self.ledger
        return (row.time or 0, row.txid, row.type, row.line or 0)  # type: ignore[union-attr]

    def text(self) -> str:
        f, led, note = self.file, self.ledger, f" ({self.note})" if self.note else ""
        if self.what == MISSING_IN_LEDGER:
            return f"{self.what}: {f.text()}{note}"  # type: ignore[union-attr]
        if self.what == MISSING_IN_FILE:
            return f"{self.what}: {led.text()}{note}"  # type: ignore[union-attr]
        if self.what == DUPLICATE:
            return f"{self.what}: {f.text()}{note}"  # type: ignore[union-attr]
        assert f is not None and led is not None
        said = {TYPE_DIFFERS: (f.type, led.type), AMOUNT_DIFFERS: (to_text(f.amount), to_text(led.amount)),
                ROUND_DIFFERS: (f.round or "(none)", led.round or "(none)")}[self.what]
        return f"{self.what}: {led.type} {f.txid} (line {f.line}): the file says {said[0]}, the ledger {said[1]}" \
               f" (at {utc(led.time)}, login {led.login}){note}"

    def json(self) -> dict:
        return {"what": self.what, "file": self.file and self.file.json(),
                "ledger": self.ledger and self.ledger.json(), "note": self.note or None}


@dataclass(slots=True)
class Reconciliation:
    provider: str
    start: int  # the ledger's rows compared: created in [start, end)
    end: int
    file_rows: int = 0
    ledger_rows: int = 0  # the ledger's accepted rows in the span
    outside: int = 0  # rows of the file found in the ledger outside the span (taken a moment after its end)
    matched: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        span = f"{utc(self.start)} to {utc(self.end)}"
        said = "everything matches" if self.ok else f"{len(self.differences)} difference(s)"
        outside = f" (and {self.outside} outside it that the file names)" if self.outside else ""
        return (f"provider {self.provider}, {span}: {self.file_rows} row(s) in the file, {self.ledger_rows} in the "
                f"ledger{outside}, {self.matched} matched: {said}")

    def json(self) -> dict:
        return {"provider": self.provider, "from": self.start, "to": self.end, "file_rows": self.file_rows,
                "ledger_rows": self.ledger_rows, "outside": self.outside, "matched": self.matched, "ok": self.ok,
                "differences": [d.json() for d in self.differences]}


def file_span(rows: Iterable[Row]) -> tuple[int, int] | None:
    """The whole seconds the rows' times fall in, as [start, end) (None: no rows)."""
    times = [r.time for r in rows if r.time is not None]
    return (math.floor(min(times)), math.floor(max(times)) + 1) if times else None


# A cancel's money is its debit's amount: looked up by the primary key for the cancels alone (a join would have
# PostgreSQL hash every debit the provider ever took).
_DEBIT_OF_CANCEL = ("CASE WHEN t.kind = 'cancel' THEN (SELECT d.amount FROM wallet_tx d WHERE d.provider = t.provider "
                    "AND d.kind = 'debit' AND d.txid = t.txid AND d.login = t.login) END")
_LEDGER_ROWS = (f"SELECT t.kind, t.txid, t.login, t.amount, t.game_id, t.created, {_DEBIT_OF_CANCEL} FROM wallet_tx t "
                "WHERE t.provider = ? AND t.created >= ? AND t.created < ? AND t.status = 'OK' "
                "AND t.kind IN ('debit', 'credit', 'cancel', 'promo')")


def _stream(db: Any, sql: str, args: tuple) -> Iterator[tuple]:
    """The rows of a read, in pages from the server on PostgreSQL (a day of a provider may be millions)."""
    stream = getattr(db, "stream", None)
    return iter(stream(sql, args) if stream is not None and db.in_transaction else db.execute(sql, args))


def _ledger_row(kind: str, txid: str, login: int, amount: int, game_id: str | None, created: int,
                debit: int | None) -> Row:
    return Row(TYPE[kind], txid, int(debit if kind == "cancel" and debit is not None else amount), game_id,
               int(created), login=int(login))


def reconcile(db: Any, provider: str, rows: Iterable[Row], start: int | None = None, end: int | None = None,
              compare_rounds: bool = True) -> Reconciliation:
    """Compare a provider's report (``rows``) with the ledger's accepted rows of that provider created in [start,
    end) (by default the span of the rows' own times): every row of the file the ledger lacks, every row of the
    span the file lacks, and every type, amount or round (``compare_rounds``) that differs. A row of the file is
    looked for in the whole ledger, so one the ledger took a moment later, past the span's end, still matches.
    Rows are matched by transaction id, a cancel apart (its id is the debit's). The file is held in memory; the
    ledger's rows stream by the index wallet_tx_day."""
    rows = list(rows)
    if start is None or end is None:
        span = file_span(rows) or (0, 0)
        start, end = (span[0] if start is None else start), (span[1] if end is None else end)
    result = Reconciliation(provider, start, end, file_rows=len(rows))
    found: dict[tuple[str, bool], Row] = {}
    differences = result.differences
    for row in rows:
        first = found.setdefault(row.key, row)
        if first is not row:
            differences.append(Difference(DUPLICATE, row, None, f"the {first.type} of line {first.line} has this id"))
    for kind, txid, login, amount, game_id, created, debit in _stream(db, _LEDGER_ROWS, (provider, start, end)):
        ledger = _ledger_row(kind, txid, login, amount, game_id, created, debit)
        result.ledger_rows += 1
        given = found.pop(ledger.key, None)
        if given is None:
            differences.append(Difference(MISSING_IN_FILE, None, ledger))
        else:
            _compare(given, ledger, compare_rounds, result)
    rest = list(found.values())  # rows of the file the span did not have: anywhere in the ledger?
    for cancels in (False, True):
        wanted = [r for r in rest if (r.type == "cancel") == cancels]
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i:i + _CHUNK]
            held = _lookup(db, provider, [r.txid for r in chunk], cancels)
            for row in chunk:
                ledger, refused = held.get(row.txid, (None, None))
                if ledger is None:
                    differences.append(Difference(MISSING_IN_LEDGER, row, None,
                                                  f"the ledger refused it: {refused}" if refused else ""))
                else:
                    result.outside += 1
                    _compare(row, ledger, compare_rounds, result,
                             f"the ledger took it at {utc(ledger.time)}, outside the span")
    differences.sort(key=lambda d: d.order)
    return result


def _compare(given: Row, ledger: Row, compare_rounds: bool, result: Reconciliation, note: str = "") -> None:
    before = len(result.differences)
    if given.type != ledger.type:
        result.differences.append(Difference(TYPE_DIFFERS, given, ledger, note))
    if given.amount != ledger.amount:
        result.differences.append(Difference(AMOUNT_DIFFERS, given, ledger, note))
    if compare_rounds and given.round != ledger.round:
        result.differences.append(Difference(ROUND_DIFFERS, given, ledger, note))
    if len(result.differences) == before:
        result.matched += 1


def _lookup(db: Any, provider: str, txids: list[str], cancels: bool) -> dict[str, tuple[Row | None, str | None]]:
    """txid -> (the ledger's accepted row of it, or None; the status a refused row of it was answered) among
    the provider's cancels, or among its debits, credits and promo payouts; by the primary key."""
    marks = ",".join("?" * len(txids))
    kinds = "('cancel')" if cancels else "('debit', 'credit', 'promo')"
    sql = (f"SELECT t.kind, t.txid, t.login, t.amount, t.game_id, t.created, {_DEBIT_OF_CANCEL}, t.status "
           f"FROM wallet_tx t WHERE t.provider = ? AND t.kind IN {kinds} AND t.txid IN ({marks}) ORDER BY t.created")
    held: dict[str, tuple[Row | None, str | None]] = {}
    for kind, txid, login, amount, game_id, created, debit, status in db.execute(sql, (provider, *txids)):
        ledger, refused = held.get(txid, (None, None))
        if status == "OK" and ledger is None:
            ledger = _ledger_row(kind, txid, login, amount, game_id, created, debit)
        elif status != "OK":
            refused = refused or status
        held[txid] = (ledger, refused)
    return held
