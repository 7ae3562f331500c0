"""Per-listener connection caps (a connection over the cap is closed at once), caps on event subscribers,
log budgets (refusals and connection lines are logged at a bounded rate, so that a flood of connections does
not flood the log too), and giving freed memory back to the system."""

from __future__ import annotations

import ctypes
import logging
import resource
from collections import Counter
from typing import Callable, Hashable

import trio

from .logs import LineBudget  # noqa: F401  (the connection lines' budget: tcp, app)

log = logging.getLogger("syncledger.limits")
REFUSALS = ("cap", "rate", "handshake", "handshake_timeout")  # why a listener closed a connection at once
# why the ws listener refused an upgrade request, by the HTTP status it answered (its reasons beside REFUSALS)
UPGRADE_REFUSALS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                    429: "too_many_subscribers", 503: "shutting_down"}
TRIM_AFTER = 16 << 20  # unsent bytes left by closing connections that make the heap be trimmed


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None with another C library."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


MALLOC_TRIM = _malloc_trim()


def peer_address(stream: trio.abc.Stream) -> str:
    """The peer's IP address ("memory" for an in-process stream), for limits and logs."""
    return peer_endpoint(stream)[0]


def peer_endpoint(stream: trio.abc.Stream | None) -> tuple[str, str]:
    """The peer's IP address and its ``address:port`` (``[address]:port`` for IPv6), the ``peer`` of a log line;
    "memory" for both for an in-process stream (or None)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    try:
        peer = stream.socket.getpeername()  # type: ignore[union-attr]
        address, port = str(peer[0]), peer[1]
    except (AttributeError, OSError, IndexError, TypeError):
        return "memory", "memory"
    return address, f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


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
    """At most ``cap`` connections on one listener, and from one address at most ``rate`` new ones a second
    after a first ``burst`` (a token bucket; None: no rate limit). Refusals are logged once a second, and counted
    by reason: ``reasons`` are those its listener can have (REFUSALS, and the ws listener's UPGRADE_REFUSALS)."""

    def __init__(self, name: str, cap: int, clock: Callable[[], float], *, rate: float | None = None,
                 burst: int = 1000, addresses: int = 100_000, reasons: tuple[str, ...] = REFUSALS):
        self.name, self.cap, self._clock, self.reasons = name, cap, clock, reasons
        self.rate, self.burst, self.addresses = rate, burst, addresses
        self.open = 0
        self.refused = 0  # since it was last logged
        self.refused_rate = 0
        self.refusals: Counter[str] = Counter()  # every refusal so far, by reason (of reasons), for /metrics
        self._logged_at = -1e9
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when they were counted)

    def enter(self, address: str | None = None) -> bool:
        now = self._clock()
        if self.open >= self.cap:
            self.refused += 1
            self.refusals["cap"] += 1
        elif address is not None and self.rate is not None and not self._take(address, now):
            self.refused_rate += 1
            self.refusals["rate"] += 1
        else:
            self.open += 1
            return True
        if now - self._logged_at >= 1.0:
            log.warning("%s: refused %d connection(s) at the cap of %d (--max-connections) and %d over %g a "
                        "second from one address (--max-connect-rate)", self.name, self.refused, self.cap,
                        self.refused_rate, self.rate or 0,
                        extra={"listener": self.name, "refused_cap": self.refused, "refused_rate": self.refused_rate})
            self.refused = self.refused_rate = 0
            self._logged_at = now
        return False

    def _take(self, address: str, now: float) -> bool:
        tokens, then = self._buckets.get(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if len(self._buckets) >= self.addresses and address not in self._buckets:
            self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] < self.burst / self.rate}
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1.0, now)
        return True

    def leave(self) -> None:
        self.open -= 1


class SubscriberCap:
    """At most ``per_login`` trade:event subscribers (TCP and WebSocket together) for one manager login,
    whatever tokens it holds, and ``per_address`` from one address (None: no cap). A refusal is logged once a
    second at most."""

    def __init__(self, per_login: int | None = None, per_address: int | None = None):
        self.per_login, self.per_address = per_login, per_address
        self._held: dict[Hashable, tuple[int, str]] = {}  # subscriber -> (login, address)
        self._logins: Counter[int] = Counter()
        self._addresses: Counter[str] = Counter()
        self._lines = LineBudget(1, trio.current_time)

    def enter(self, sub: Hashable, login: int, address: str) -> str | None:
        """Take a slot for ``sub`` (one, however often asked); None, or why there is none left."""
        if sub in self._held:
            return None
        if self.per_login is not None and self._logins[login] >= self.per_login:
            refusal = f"manager login {login} already has {self.per_login} event subscribers, the most it may have"
        elif self.per_address is not None and self._addresses[address] >= self.per_address:
            refusal = f"{address} already has {self.per_address} event subscribers, the most one address may have"
        else:
            self._held[sub] = (login, address)
            self._logins[login] += 1
            self._addresses[address] += 1
            return None
        if (skipped := self._lines.take()) is not None:
            log.warning("refused a subscriber: %s (--max-subscribers-per-login, --max-subscribers-per-address)%s",
                        refusal, left_out(skipped), extra={"login": login, "peer": address, "left_out": skipped})
        return refusal

    def leave(self, sub: Hashable) -> None:
        """Free the slot of ``sub``, if it holds one."""
        held = self._held.pop(sub, None)
        if held is not None:
            for count, key in ((self._logins, held[0]), (self._addresses, held[1])):
                count[key] -= 1
                if not count[key]:
                    del count[key]


class HeapTrim:
    """Hands the C heap's free memory back to the system (glibc's ``malloc_trim``) a moment after connections
    that held TRIM_AFTER unsent bytes in all have closed: glibc keeps freed memory otherwise, and the server's
    RSS stays at its peak. One trim, in a worker thread, for a whole wave of closes; never on the mainLoop's
    path."""

    def __init__(self, delay: float = 1.0):
        self.delay = delay
        self._freed = 0  # unsent bytes of the connections closed since the last trim
        self._wanted = trio.Event()
        self.trims = 0

    def freed(self, held: int) -> None:
        """A connection closed with ``held`` bytes unsent."""
        self._freed += held
        if self._freed >= TRIM_AFTER and MALLOC_TRIM is not None:
            self._wanted.set()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            await trio.sleep(self.delay)  # the rest of the wave closes meanwhile
            self._wanted, self._freed = trio.Event(), 0
            await trio.to_thread.run_sync(MALLOC_TRIM, 0)
            self.trims += 1


def left_out(count: int) -> str:
    """The suffix of a line let through by a LineBudget."""
    return f" ({count} similar lines left out)" if count else ""
