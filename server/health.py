"""What may stall the server without the event loop noticing: blocking work in flight (a database read in a
thread, a batch in the writer), each with the time it began, so that ``/readyz`` names one that has not
answered within its bound. Pure bookkeeping on the caller's clock (no I/O)."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Callable, Iterator


class Watch:
    def __init__(self, clock: Callable[[], float], stall: float = 5.0):
        self._clock, self.stall = clock, stall
        self._running: dict[int, tuple[str, float]] = {}  # id -> (what, when it began)
        self._ids = itertools.count()

    def begin(self, what: str) -> int:
        """Note that ``what`` began; :meth:`end` it with the id returned."""
        key = next(self._ids)
        self._running[key] = (what, self._clock())
        return key

    def end(self, key: int) -> None:
        self._running.pop(key, None)

    @contextmanager
    def running(self, what: str) -> Iterator[None]:
        key = self.begin(what)
        try:
            yield
        finally:
            self.end(key)

    def stalled(self) -> list[str]:
        """Each piece of work running for longer than ``stall`` seconds, oldest first, said for /readyz."""
        now = self._clock()
        late = sorted((began, what) for what, began in self._running.values() if now - began > self.stall)
        return [f"{what} has not answered for {now - began:.0f} s" for began, what in late]
