"""The timeout scheduler: a heap of deadlines on ``trio.current_time()``; expires entries still pending, and wakes
only for those."""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio


class Expirable(Protocol):
    done: bool

    def expire(self) -> None: ...


class Timeouts:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Expirable]] = []
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None
        self._finished = 0  # entries in the heap already done (removed lazily)

    def __len__(self) -> int:
        return len(self._heap) - self._finished

    def add(self, deadline: float, entry: Expirable) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), entry))
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    def finished(self) -> None:
        """An entry finished before its deadline; compact the heap once most entries are finished."""
        self._finished += 1
        if self._finished > 1024 and self._finished * 2 > len(self._heap):
            self._heap = [item for item in self._heap if not item[2].done]
            heapq.heapify(self._heap)
            self._finished = 0

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as self._scope:
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            # (finished entries are dropped too, due or not: the next sleep lasts until a pending entry's
            # deadline, not one per finished entry, which at light load would be one wake-up per …Sync request)
            while self._heap and (self._heap[0][0] <= now or self._heap[0][2].done):
                entry = heapq.heappop(self._heap)[2]
                if entry.done:
                    self._finished -= 1
                else:
                    entry.expire()
