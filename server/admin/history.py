"""What the back-office page charts: credits answered and batches committed, sampled from the metrics while the
server works, in a fixed ring."""

from __future__ import annotations

from array import array
from typing import Callable

import trio

from ..metrics import Metrics

CREDITS = {("CreditIn", "200"), ("CreditInSync", "200")}  # manager credits answered (command, status)
WALLET_CREDIT = ("credit", "OK")  # and the wallet's (action, status)


class History:
    """What the back-office page charts: credits answered and batches committed (count and seconds), read
    from the metrics every ``interval`` seconds while the server works. A quiet server runs no timer (the
    sampler waits for the next answer: Metrics.wake), so an idle server, or a long MockClock jump, costs no
    wake-ups; the samples live in one fixed array, so memory never grows."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float], interval: float = 1.0, window: float = 300.0):
        self.metrics, self.clock, self.interval, self.window = metrics, clock, interval, window
        self.size = 2 * int(window / interval) + 2  # samples kept (quiet stretches take two)
        self._ring = array("d", bytes(8 * 4 * self.size))  # (time, credits, commits, seconds) each; never grows
        self._next = self._count = 0
        self.quiet = False  # waiting for work: nothing has changed since the last sample

    def totals(self) -> tuple[int, int, float]:
        """(credits answered, batches committed, seconds spent committing) since the server started."""
        m, credits, commits, seconds = self.metrics, 0, 0, 0.0
        for sample in m.requests.collect()[0].samples:
            if sample.name.endswith("_total") and (sample.labels["command"], sample.labels["status"]) in CREDITS:
                credits += int(sample.value)
        for sample in m.wallet.collect()[0].samples:
            if sample.name.endswith("_total") and (sample.labels["action"], sample.labels["status"]) == WALLET_CREDIT:
                credits += int(sample.value)
        for sample in m.commit.collect()[0].samples:
            if sample.name.endswith("_count"):
                commits = int(sample.value)
            elif sample.name.endswith("_sum"):
                seconds = sample.value
        return credits, commits, seconds

    async def run(self) -> None:
        last = None
        while True:
            now = self.totals()
            if now == last:  # quiet for a whole interval: sleep until the next answer
                woken, self.quiet = trio.Event(), True
                self.metrics.wake = woken.set
                await woken.wait()  # then the quiet stretch ends here, at the totals it had
                self.quiet = False
            self._add(self.clock(), *now)
            last = now
            await trio.sleep(self.interval)

    def _add(self, *sample: float) -> None:
        self._ring[4 * self._next:4 * self._next + 4] = array("d", sample)
        self._next, self._count = (self._next + 1) % self.size, min(self._count + 1, self.size)

    @property
    def samples(self) -> list[tuple[float, ...]]:
        """The samples kept, oldest first."""
        first = (self._next - self._count) % self.size
        return [tuple(self._ring[4 * i:4 * i + 4]) for i in ((first + k) % self.size for k in range(self._count))]

    def points(self) -> list[dict]:
        """One point per interval of the last ``window`` seconds: credits per second, batches committed and
        their mean commit time in milliseconds (None: no commit); ``t`` is the interval's end (wall time)."""
        now = self.clock()
        cutoff, out, samples = now - self.window, [], self.samples
        if self.quiet and samples:  # quiet since the last sample: nothing happened up to now
            samples.append((now, *samples[-1][1:]))
        for (t0, c0, n0, s0), (t1, c1, n1, s1) in zip(samples, samples[1:]):
            if t1 < cutoff or t1 <= t0:
                continue
            commit_ms = round((s1 - s0) * 1000 / (n1 - n0), 3) if n1 > n0 else None
            out.append({"t": round(t1, 3), "dt": round(t1 - t0, 3), "credits_per_s": round((c1 - c0) / (t1 - t0), 3),
                        "commits": int(n1 - n0), "commit_ms": commit_ms})
        return out
