"""The only writer: drains its inbox in batches, applies each batch with one Store.apply_batch (one
commit), then publishes the batch's events and answers its jobs. Nothing is answered before commit, and
no answer says more than the writer knows (a batch whose fate is unknown stops the server)."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import trio
from outcome import Error, acapture, capture

from syncledger.ledger import CatchUp, Event, LedgerError, Outcome, Store, Unsure
from ..health import Watch
from .writer import WriterEnded, WriterProcess

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
    """Owns the Store. ``threaded=False`` keeps SQLite on the Trio thread (for MockClock tests); a ``writer``
    (ledger.writer.WriterProcess) applies the batches in a process of its own, ``store`` then only reads."""

    def __init__(self, store: Store, publish: Callable[[list[Event]], None], *, batch_max: int = 1024,
                 inbox_size: int = 8192, threaded: bool = True, writer: WriterProcess | None = None,
                 cluster: bool = False):
        self.store, self.publish, self.batch_max, self.threaded = store, publish, batch_max, threaded or writer is not None
        self.writer = writer
        # A node of a cluster: each batch begins with a CatchUp, whose outcome carries the events other nodes
        # committed since, published before the batch's own (one publisher, in seq order).
        self._catch_up = [Job(CatchUp(), _ignore)] if cluster else []
        # a writer process is spoken to from the Trio thread (its socket); a Store in this process, in the store thread
        self._apply_batch = writer.apply if writer is not None else partial(self.call, store.apply_batch)
        self._send, self._recv = trio.open_memory_channel[Job](inbox_size)
        self.lock = trio.Lock()  # held while the store is in use: batches and reads never overlap
        self._thread = _StoreThread() if self.threaded else None
        self._running = trio.Event()
        self._running.set()
        self.stopped = trio.Event()  # set once run() has applied its last batch
        self.batches = self.jobs = self.submitted = 0
        self.faults: Any = None  # a server.faults.Faults when a test injects faults
        self.dropping = False  # queued jobs are answered NOT_APPLIED instead of applied (shutdown, fail-stop)
        self.failure: str | None = None  # why the store's state became unknowable: nothing more is read either
        self.committed_seq = store.seq  # the newest event committed and published (store.seq runs ahead in a batch)
        self.fail_stop: Callable[[str], None] = _no_handler  # the server's fail-stop (the file's state unknown, or
        # nothing more can be applied to it)
        self.on_skip: Callable[[int], None] = lambda seq: None  # a node of a cluster skipped publishing events up to a seq
        self.metrics: Any = None  # a server.metrics.Metrics
        self.watch: Watch | None = None  # where a batch in the writer is noted while it runs (for /readyz)
        self.applying = False  # a batch is in the writer (its fate, should the writer end, is the batch's to tell)
        self.abandoned = False  # a batch in the writer was given up (see abandon): the store is not ours to close
        self._committed: tuple[list[Job], list[Outcome]] | None = None  # a committed batch not yet answered

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest event the writer holds (after :meth:`run` returned: the ledger's head)."""
        if self.writer is not None:
            return self.writer.head or (self.committed_seq, "unknown")
        return self.store.seq, self.store.event_head

    def deliver(self, event: Event, waiter: Any) -> None:
        """Broadcast one committed event, then show it to the …Sync waiter of the job that made it (the path of
        test faults, which hold or drop events one by one)."""
        self.publish([event])
        if waiter is not None:
            waiter.on_event(event)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the store: in the store's own thread (never abandoned) or inline."""
        if self._thread is not None:
            return await self._thread.run(fn, *args)
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

    async def run_command(self, command: Any) -> Outcome:
        """Submit ``command`` and wait for its outcome (once its batch is committed and its events published)."""
        done = trio.Event()
        box: list[Outcome] = []

        def finished(outcome: Outcome) -> None:
            box.append(outcome)
            done.set()

        await self.submit(Job(command, finished))
        await done.wait()
        return box[0]

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

    def abandon(self, reason: str) -> None:
        """Give up the batch in the writer that does not answer (a stalled database or disk, a stopped writer
        process): it is Unsure (the server fail-stops), and the store thread is left to finish alone."""
        if self._thread is not None and self.applying:
            self.abandoned = True
            if self.writer is not None:
                self.writer.interrupt(reason)
            self._thread.abandon(Unsure(reason))

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._loop()
        finally:
            if self._thread is not None:
                self._thread.close()
            if self.writer is not None:
                self.writer.close()  # no batch is in it (the store thread has ended), or it was abandoned
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
                    if not self._running.is_set():  # (a set Event's wait() is one more scheduler pass)
                        await self._running.wait()
                    if self.dropping:
                        self._answer_committed()
                        self._answer(batch, [NOT_APPLIED] * len(batch))
                        continue
                    try:
                        self.lock.acquire_nowait()  # free unless a read holds it: no scheduler pass for it
                    except trio.WouldBlock:
                        await self.lock.acquire()
                    try:
                        await self._apply(batch)
                    finally:
                        self.lock.release()
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
        taken = len(batch)
        batch = self._catch_up + batch
        commands = [job.command for job in batch]
        if not self.threaded or self.faults is not None:
            self._answer_committed()  # single-threaded, or under test faults: strictly one batch at a time
        if self.faults is not None:
            commands = await self.faults.before_commit(commands)
        started = trio.current_time()
        watched = self.watch.begin("a batch in the ledger's writer") if self.watch is not None else None
        self.applying = True
        try:
            if self._committed is None:
                result = await acapture(self._apply_batch, commands)
            else:
                async with trio.open_nursery() as answering:
                    answering.start_soon(self._answer_soon)  # runs while the writer works
                    result = await acapture(self._apply_batch, commands)
        finally:
            self.applying = False
            if watched is not None:
                self.watch.end(watched)
        try:
            outcomes = result.unwrap()
        except Unsure as e:
            # Whether this batch is in the file cannot be known: its jobs get no answer, nothing more is
            # applied, and the server stops so that a restart reads the truth from the file.
            self.failure = str(e)
            self.dropping = True
            self.fail_stop(self.failure)
            return
        except WriterEnded as e:  # the batch never reached the writer: known unapplied, and nothing more can be
            self.dropping = True
            self.fail_stop(str(e))
            self._answer(batch, [Outcome(error=LedgerError(503, "SHUTTING_DOWN", f"{e}; the server stops"))] * len(batch))
            return
        except Exception:
            log.exception("batch of %d commands failed to commit; none was applied", len(batch))
            outcomes = [COMMIT_FAILED] * len(batch)
        self.batches += 1
        self.jobs += taken
        if self.metrics is not None:
            self.metrics.batch_size.observe(taken)
            self.metrics.commit.observe(trio.current_time() - started)
        self._committed = (batch, outcomes)
        if not self.threaded or self.faults is not None:
            self._answer_committed()

    async def _answer_soon(self) -> None:
        self._answer_committed()

    def _answer(self, batch: list[Job], outcomes: list[Outcome]) -> None:
        """Publish a committed batch's events, all at once (each subscriber is offered them once), then show
        each …Sync waiter its job's events and answer the jobs, in order."""
        if self.faults is not None:
            return self._answer_one_by_one(batch, outcomes)
        events: list[Event] = []
        for job, outcome in zip(batch, outcomes, strict=True):
            if type(job.command) is CatchUp and outcome.data is not None:
                self._publish(events)  # (what came before the skip: none, a CatchUp is a batch's first job)
                events = []
                self.committed_seq = max(self.committed_seq, outcome.data)  # (too many to publish)
                try:
                    self.on_skip(outcome.data)
                except Exception:
                    log.exception("dropping the subscribers failed")
            events += outcome.events
        self._publish(events)
        for job, outcome in zip(batch, outcomes):
            try:
                if job.waiter is not None:
                    for event in outcome.events:
                        job.waiter.on_event(event)
                job.done(outcome)
            except Exception:  # a bug in one answer must not stop the writer
                log.exception("answering a job failed")

    def _publish(self, events: list[Event]) -> None:
        if events:
            try:
                self.publish(events)
            except Exception:  # (nor a bug in the fan-out)
                log.exception("publishing events failed")
            self.committed_seq = max(self.committed_seq, events[-1].seq)

    def _answer_one_by_one(self, batch: list[Job], outcomes: list[Outcome]) -> None:
        """Under test faults: each event is delivered (or held, or dropped) alone, then its job answered."""
        for job, outcome in zip(batch, outcomes, strict=True):
            try:
                if type(job.command) is CatchUp and outcome.data is not None:
                    self.committed_seq = max(self.committed_seq, outcome.data)  # (too many to publish)
                    self.on_skip(outcome.data)
                for event in outcome.events:
                    self.faults.deliver(event, job.waiter, self.deliver)
                    self.committed_seq = max(self.committed_seq, event.seq)
                job.done(outcome)
            except Exception:  # a bug in one answer must not stop the writer
                log.exception("answering a job failed")


class _StoreThread:
    """One long-lived thread for the store's calls, one call at a time, in order. It costs about half of a
    ``trio.to_thread.run_sync`` per call (no thread-cache dispatch, no OS thread renaming, no limiter): one
    hand-off per batch, which at light load is one per request. The thread ends after ``idle`` seconds
    without work and is started again by the next call."""

    def __init__(self, idle: float = 10.0):
        self.idle = idle
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple, Any, trio.lowlevel.TrioToken]] = \
            queue.SimpleQueue()
        self._guard = threading.Lock()
        self._alive = False
        self._thread: threading.Thread | None = None
        self._waiting: set[trio.lowlevel.Task] = set()  # callers not yet answered (Trio thread only)
        self.abandoned = False  # see abandon()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the thread; once started it is waited for, whatever cancels the caller (unless
        :meth:`abandon`)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        with self._guard:
            self._jobs.put((fn, args, task, trio.lowlevel.current_trio_token()))
            if not self._alive:
                self._alive = True
                self._thread = threading.Thread(target=self._work, name="syncledger store", daemon=True)
                self._thread.start()
        self._waiting.add(task)
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)  # the outcome's value

    def _answer(self, task: trio.lowlevel.Task, result: Any) -> None:
        if task in self._waiting:  # (not if abandoned)
            self._waiting.discard(task)
            trio.lowlevel.reschedule(task, result)

    def abandon(self, error: Exception) -> None:
        """Stop waiting for the call in hand (the shutdown's last resort, when it has not answered): its
        caller gets ``error`` now, and the thread, left to finish alone, is never waited for again."""
        self.abandoned = True
        for task in list(self._waiting):
            self._answer(task, Error(error))

    def close(self) -> None:
        """End the thread once the calls queued before this are done, and wait for it (nothing outlives
        the mainLoop, unless abandoned). A later call starts a new thread."""
        with self._guard:
            thread = self._thread if self._alive else None
            if thread is not None:
                self._jobs.put(None)
        if thread is not None and not self.abandoned:
            thread.join()

    def _work(self) -> None:
        quiet = False  # ended for lack of work, or closed
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=self.idle)
                    if job is None:
                        with self._guard:  # (a call queued after the close keeps the thread)
                            if self._jobs.empty():
                                self._alive, quiet = False, True
                                return
                        continue
                    fn, args, task, token = job
                except queue.Empty:
                    with self._guard:  # (a call queued meanwhile is taken, or finds the thread gone)
                        if self._jobs.empty():
                            self._alive, quiet = False, True
                            return
                    continue
                result = capture(fn, *args)
                del fn, args
                try:
                    token.run_sync_soon(self._answer, task, result)
                except trio.RunFinishedError:  # the caller's run is gone (abandoned, and ended since)
                    pass
                del task, token, result
        finally:
            if not quiet:  # this thread failed: the next call starts another
                with self._guard:
                    self._alive = False


def _no_handler(reason: str) -> None:
    raise Unsure(reason)


def _ignore(outcome: Outcome) -> None:
    pass
