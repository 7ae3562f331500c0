"""The only writer: drains its inbox in batches, applies each batch with one Store.apply_batch (one
commit), then publishes the batch's events and answers its jobs. Nothing is answered before commit, and
no answer says more than the writer knows (a batch whose fate is unknown stops the server)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import trio
from outcome import acapture

from syncledger.ledger import LedgerError, Outcome, Store
from syncledger.ledger.store import Event, Unsure

log = logging.getLogger("syncledger.mainloop")


class ShuttingDown(Exception):
    """The mainLoop no longer takes jobs."""


NOT_APPLIED = Outcome(error=LedgerError(503, "SHUTTING_DOWN", "the server stopped before applying this request: "
                                                              "nothing was applied"))
COMMIT_FAILED = Outcome(error=LedgerError(500, "INTERNAL", "the ledger could not commit; nothing was applied"))


@dataclass(slots=True, eq=False)
class Job:
    command: Any
    done: Callable[[Outcome], None]  # called once, after commit
    waiter: Any = None  # a …Sync request: its ``on_event(event)`` sees the job's events after broadcast


class MainLoop:
    """Owns the Store. ``threaded=False`` keeps SQLite on the Trio thread (for MockClock tests)."""

    def __init__(self, store: Store, publish: Callable[[Event], None], *, batch_max: int = 1024,
                 inbox_size: int = 8192, threaded: bool = True):
        self.store, self.publish, self.batch_max, self.threaded = store, publish, batch_max, threaded
        self._send, self._recv = trio.open_memory_channel[Job](inbox_size)
        self.lock = trio.Lock()  # held while the store is in use: batches and reads never overlap
        self._limiter = trio.CapacityLimiter(1)
        self._running = trio.Event()
        self._running.set()
        self.stopped = trio.Event()  # set once run() has applied its last batch
        self.batches = self.jobs = self.submitted = 0
        self.faults: Any = None  # a server.faults.Faults when a test injects faults
        self.dropping = False  # queued jobs are answered NOT_APPLIED instead of applied (shutdown, fail-stop)
        self.failure: str | None = None  # why the store's state became unknowable: nothing more is read either
        self.committed_seq = store.seq  # the newest event committed and published (store.seq runs ahead in a batch)
        self.on_unsure: Callable[[str], None] = _no_handler  # the server's fail-stop
        self.metrics: Any = None  # a server.metrics.Metrics
        self._committed: tuple[list[Job], list[Outcome]] | None = None  # a committed batch not yet answered

    def deliver(self, event: Event, waiter: Any) -> None:
        """Broadcast a committed event, then show it to the …Sync waiter of the job that made it."""
        self.publish(event)
        if waiter is not None:
            waiter.on_event(event)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the store: in a worker thread (never abandoned) or inline."""
        if self.threaded:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        return fn(*args)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A read of committed state, serialised with batches; none once the state is unknowable."""
        async with self.lock:
            if self.failure is not None:
                raise ShuttingDown()  # memory may not match the file: never serve from it
            return await self.call(fn, *args)

    async def submit(self, job: Job) -> None:
        """Queue a job; waits while the inbox is full (backpressure to the submitting connection)."""
        self.submitted += 1
        try:
            try:
                self._send.send_nowait(job)  # the common case: no scheduler round trip per request
            except trio.WouldBlock:
                await self._send.send(job)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ShuttingDown() from None

    @property
    def queued(self) -> int:
        """Jobs waiting in the inbox."""
        return self._recv.statistics().current_buffer_used

    def pause(self) -> None:
        """Hold batches back (queued jobs wait) until :meth:`resume`."""
        if self._running.is_set():
            self._running = trio.Event()

    def resume(self) -> None:
        self._running.set()

    def close(self) -> None:
        """Take no more jobs; :meth:`run` returns once the queued ones are applied (or dropped)."""
        self._send.close()

    def drop_queued(self) -> None:
        """Apply no more batches: every job not yet applied is answered NOT_APPLIED (the batch being
        committed, if any, is answered by its outcome)."""
        self.dropping = True
        self.resume()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._loop()
        finally:
            self.stopped.set()

    async def _loop(self) -> None:
        """Batches in order. Pipelined when threaded: once batch N has committed and batch N+1 is waiting,
        N+1 goes to the SQLite thread at once and N is answered meanwhile on this one (the commit's fsync and
        SQLite's C code run without the GIL). Nothing is answered before its own commit returned, and a
        committed batch is always answered, also when the loop is cancelled."""
        try:
            async with self._recv:
                while True:
                    batch = self._take(self.batch_max)
                    if not batch:
                        self._answer_committed()  # nothing else to do meanwhile
                        try:
                            batch = [await self._recv.receive()]
                        except trio.EndOfChannel:
                            return
                        batch += self._take(self.batch_max - 1)
                    await self._running.wait()
                    if self.dropping:
                        self._answer_committed()
                        self._answer(batch, [NOT_APPLIED] * len(batch))
                        continue
                    async with self.lock:
                        await self._apply(batch)
        finally:
            self._answer_committed()

    def _take(self, most: int) -> list[Job]:
        """Up to ``most`` queued jobs, without waiting."""
        batch: list[Job] = []
        while len(batch) < most:
            try:
                batch.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    def _answer_committed(self) -> None:
        done, self._committed = self._committed, None
        if done is not None:
            self._answer(*done)

    async def _apply(self, batch: list[Job]) -> None:
        """Apply ``batch`` (one commit) while the previous one is answered; this batch's answers wait in
        ``_committed`` for the next batch (or an empty inbox)."""
        commands = [job.command for job in batch]
        if not self.threaded or self.faults is not None:
            self._answer_committed()  # single-threaded, or under test faults: strictly one batch at a time
        if self.faults is not None:
            commands = await self.faults.before_commit(commands)
        started = trio.current_time()
        if self._committed is None:
            result = await acapture(self.call, self.store.apply_batch, commands)
        else:
            async with trio.open_nursery() as answering:
                answering.start_soon(self._answer_soon)  # runs while the SQLite thread works
                result = await acapture(self.call, self.store.apply_batch, commands)
        try:
            outcomes = result.unwrap()
        except Unsure as e:
            # Whether this batch is in the file cannot be known: its jobs get no answer, nothing more is
            # applied, and the server stops so that a restart reads the truth from the file.
            self.failure = str(e)
            self.dropping = True
            self.on_unsure(self.failure)
            return
        except Exception:
            log.exception("batch of %d commands failed to commit; none was applied", len(batch))
            outcomes = [COMMIT_FAILED] * len(batch)
        self.batches += 1
        self.jobs += len(batch)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.commit.observe(trio.current_time() - started)
        self._committed = (batch, outcomes)
        if not self.threaded or self.faults is not None:
            self._answer_committed()

    async def _answer_soon(self) -> None:
        self._answer_committed()

    def _answer(self, batch: list[Job], outcomes: list[Outcome]) -> None:
        """Publish a committed batch's events, then answer its jobs, in order."""
        for job, outcome in zip(batch, outcomes, strict=True):
            try:
                for event in outcome.events:
                    if self.faults is None:
                        self.deliver(event, job.waiter)
                    else:
                        self.faults.deliver(event, job.waiter, self.deliver)
                    self.committed_seq = max(self.committed_seq, event.seq)
                job.done(outcome)
            except Exception:  # a bug in one answer must not stop the writer
                log.exception("answering a job failed")


def _no_handler(reason: str) -> None:
    raise Unsure(reason)
