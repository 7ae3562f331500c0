"""Per-listener connection caps (a connection over the cap is closed at once) and log budgets: refusals and
connection lines are logged at a bounded rate, so that a flood of connections does not flood the log too."""

from __future__ import annotations

import logging
import resource
from typing import Callable

log = logging.getLogger("syncledger.limits")


def raise_descriptor_limit() -> int:
    """Raise this process's open-file limit to its hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def default_cap(descriptors: int, listeners: int = 3, reserve: int = 200) -> int:
    """A cap per listener that keeps every listener, and the ledger's own files, within the limit."""
    return max(16, (min(descriptors, 1 << 20) - reserve) // listeners)


class Gate:
    """At most ``cap`` connections on one listener."""

    def __init__(self, name: str, cap: int, clock: Callable[[], float]):
        self.name, self.cap, self._clock = name, cap, clock
        self.open = 0
        self.refused = 0  # since it was last logged
        self._logged_at = -1e9

    def enter(self) -> bool:
        if self.open < self.cap:
            self.open += 1
            return True
        self.refused += 1
        now = self._clock()
        if now - self._logged_at >= 1.0:
            log.warning("%s: refused %d connection(s): at the cap of %d (--max-connections)", self.name,
                        self.refused, self.cap)
            self.refused, self._logged_at = 0, now
        return False

    def leave(self) -> None:
        self.open -= 1


class LineBudget:
    """At most ``per_second`` lines a second of one kind; the next line let through says how many were left
    out (``take()`` -> None: leave this one out; else the count left out since the last one)."""

    def __init__(self, per_second: int, clock: Callable[[], float]):
        self.per_second, self._clock = per_second, clock
        self._window, self._used, self._left_out = -1.0, 0, 0

    def take(self) -> int | None:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._used = now, 0
        if self._used >= self.per_second:
            self._left_out += 1
            return None
        self._used += 1
        left_out, self._left_out = self._left_out, 0
        return left_out


def left_out(count: int) -> str:
    """The suffix of a line let through by a LineBudget."""
    return f" ({count} similar lines left out)" if count else ""
