"""The admin listener's reconciliation (issue 23): the page reads of ``GET /api/rounds``, ``GET /api/round`` and
``GET /api/report`` (ledger/report.py's, run where the page's other reads run: its reader process), and the
open-rounds gauges of ``/metrics`` per provider, read off the event loop when a rendering asks."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Awaitable, Callable

import orjson
import trio
from prometheus_client.core import GaugeMetricFamily

from syncledger.ledger import report

log = logging.getLogger("syncledger.admin")
ROUNDS_WAIT = 1.0  # seconds a rendering of /metrics waits for the open rounds (then it shows the last ones read)
MAX_PROVIDER = 64  # characters of a provider's name in a query


def rounds_page(db: Any, provider: str, open_only: bool, opened_before: int | None, game_id: str | None,
                login: int | None, after: str | None, limit: int) -> bytes | None:
    """A page of a provider's rounds with their moves, and the ``next`` to pass as ``after`` (None: the last
    page), as JSON; None: no such provider."""
    if provider not in report.providers(db):
        return None
    page, following = report.rounds(db, provider, open_only=open_only, opened_before=opened_before,
                                    game_id=game_id, login=login, after=report.parse_cursor(after) if after else None,
                                    limit=limit)
    currency = _currencies(db, {r.login for r in page})
    return orjson.dumps({"provider": provider, "rounds": [{**r.json(), "currency": currency[r.login]} for r in page],
                         "next": report.cursor_text(following) if following is not None else None})


def round_page(db: Any, provider: str, game_id: str, login: int | None, after: int | None,
               limit: int) -> bytes | None:
    """The provider's round ``game_id`` with every call of it, as JSON: the account ``login``'s, or those of
    up to ``limit`` accounts after ``after`` (report.round_logins: ``next`` to go on from); None: no such
    provider."""
    if provider not in report.providers(db):
        return None
    logins, following = ([login], None) if login is not None else report.round_logins(db, provider, game_id, after,
                                                                                     limit)
    found = [r for r in (report.round_calls(db, provider, one, game_id) for one in logins) if r is not None]
    currency = _currencies(db, {r.login for r in found})
    return orjson.dumps({"provider": provider, "game_id": game_id, "next": following,
                         "rounds": [{**r.json(), "currency": currency[r.login]} for r in found]})


def _currencies(db: Any, logins: set[int]) -> dict[int, str]:
    """Each account's currency, by the primary key."""
    return {login: db.execute("SELECT currency FROM accounts WHERE login = ?", (login,)).fetchone()[0]
            for login in logins}


def report_page(db: Any, provider: str | None, day: str) -> bytes | None:
    """The day's totals of one provider or (None) of every provider, per currency, as JSON; None: no such
    provider."""
    names = report.providers(db)
    if provider is not None:
        if provider not in names:
            return None
        names = [provider]
    when = date.fromisoformat(day)
    start, end = report.day_span(when)
    days = [report.day_report(db, name, when) for name in names]
    return orjson.dumps({"day": day, "from": start, "to": end, "note": report.GGR_NOTE,
                         "providers": [{"provider": d.provider, "currencies": [t.json() for t in d.currencies]}
                                       for d in days]})


def valid_cursor(text: str) -> bool:
    try:
        report.parse_cursor(text)
    except ValueError:
        return False
    return True


def valid_day(text: str) -> bool:
    if len(text) != 10:
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


class OpenRounds:
    """``syncledger_wallet_open_rounds{provider}`` and ``syncledger_wallet_oldest_open_round_seconds{provider}``
    (a Prometheus collector): every active provider's open rounds (and a removed one's while it has some), from
    wallet_rounds by its index (provider, state, opened). A rendering of /metrics (at most one a second) asks for
    them and waits ROUNDS_WAIT at most; they are read by :meth:`run`, one read at a time, on the server's read
    connections (worker threads): a ledger that stalls leaves the figures last read, and the age goes on."""

    def __init__(self, read: Callable[..., Awaitable[Any]], wall_time: Callable[[], float]):
        self._read, self._wall_time = read, wall_time
        self.figures: list[tuple[str, int, int | None]] = []  # (provider, open rounds, oldest opened)
        self.now = 0.0  # wall time of the rendering the figures are shown in (collect runs in a worker thread)
        self._asked = trio.Event()
        self._done: trio.Event | None = None

    async def run(self) -> None:
        """Read the figures each time a rendering asks (the admin listener's task)."""
        while True:
            await self._asked.wait()
            self._asked, done = trio.Event(), self._done
            try:
                self.figures = await self._read(report.open_rounds)
            except Exception as e:  # (shutting down, a read that stalled, a ledger that vanished: the last stand)
                log.warning("the open rounds for /metrics could not be read: %s", e)
            finally:
                if done is not None:
                    done.set()

    async def fresh(self) -> None:
        """Before a rendering: ask for the figures (unless a read is under way) and wait ROUNDS_WAIT at most."""
        if self._done is None or self._done.is_set():
            self._done = trio.Event()
            self._asked.set()
        with trio.move_on_after(ROUNDS_WAIT):
            await self._done.wait()
        self.now = self._wall_time()

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families(self.figures, self.now)

    @staticmethod
    def _families(figures: list[tuple[str, int, int | None]] = (), now: float = 0.0  # type: ignore[assignment]
                  ) -> list[GaugeMetricFamily]:
        count = GaugeMetricFamily("syncledger_wallet_open_rounds", "Game rounds open now (a debit neither settled "
                                  "nor cancelled), by provider", labels=["provider"])
        oldest = GaugeMetricFamily("syncledger_wallet_oldest_open_round_seconds", "How long ago the oldest open "
                                   "round's first debit was taken (0: none open), by provider", labels=["provider"])
        for name, n, opened in figures:
            count.add_metric([name], n)
            oldest.add_metric([name], 0 if opened is None else max(0.0, round(now - opened, 3)))
        return [count, oldest]
