"""The timeout scheduler (server/core/timeouts.py): expires what is still pending at its deadline, and is not
woken for entries that finished before theirs."""

from __future__ import annotations

import trio
import trio.testing

from syncledger.server.core.timeouts import Timeouts


class _Entry:
    def __init__(self) -> None:
        self.done = False
        self.expired = False

    def expire(self) -> None:
        self.done = self.expired = True


class _Steps(trio.abc.Instrument):
    """Counts the steps of the tasks named ``name``."""

    def __init__(self, name: str) -> None:
        self.name, self.steps = name, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.steps += 1


async def test_finished_entries_do_not_wake_the_scheduler_and_pending_ones_expire(
        autojump_clock: trio.testing.MockClock):
    timeouts, steps = Timeouts(), _Steps("Timeouts.run")
    async with trio.open_nursery() as nursery:
        await nursery.start(timeouts.run)
        trio.lowlevel.add_instrument(steps)
        start = trio.current_time()
        finished = []
        for i in range(1000):  # ten …Sync requests a second for 100 s, each answered at once: its entry finishes
            entry = _Entry()
            timeouts.add(start + i / 10 + 5, entry)
            entry.done = True
            timeouts.finished()
            finished.append(entry)
            await trio.sleep(0.1)
        late = _Entry()
        timeouts.add(trio.current_time() + 5, late)
        await trio.sleep(4.9)
        assert not late.expired
        await trio.sleep(0.2)
        assert late.expired and not any(e.expired for e in finished)
        assert len(timeouts) == 0
        trio.lowlevel.remove_instrument(steps)
        nursery.cancel_scope.cancel()
    # once a timeout's span (5 s) at most, as the earliest entry's deadline is taken when it is added; not 1,000
    assert steps.steps <= 100 / 5 + 2, f"the scheduler woke {steps.steps} times in 100 s for 1,000 finished entries"
