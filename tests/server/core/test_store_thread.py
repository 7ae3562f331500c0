"""The mainLoop's own store thread (server/mainloop.py: _StoreThread), which replaced a
``trio.to_thread.run_sync`` per batch: one thread, calls in order, never abandoned, errors carried back,
and the thread ends when idle and comes back with the next call."""

import threading
import time

import pytest
import trio

from syncledger.server.core.mainloop import _StoreThread


async def test_calls_run_in_order_on_one_thread_off_the_trio_thread():
    worker = _StoreThread()
    seen = [await worker.run(lambda i=i: (i, threading.get_ident())) for i in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    idents = {ident for _, ident in seen}
    assert len(idents) == 1 and threading.get_ident() not in idents


async def test_an_error_comes_back_to_the_caller():
    worker = _StoreThread()

    def fails() -> None:
        raise ValueError("from the store thread")

    with pytest.raises(ValueError, match="from the store thread"):
        await worker.run(fails)
    assert await worker.run(lambda: 7) == 7  # the thread goes on


async def test_a_started_call_is_waited_for_even_when_cancelled():
    worker = _StoreThread()
    finished = []

    def slow() -> str:
        time.sleep(0.2)
        finished.append(True)
        return "done"

    result = None
    with trio.move_on_after(0.05):
        result = await worker.run(slow)  # as trio.to_thread.run_sync without abandon_on_cancel
    assert finished == [True] and result == "done"


async def test_a_cancelled_caller_does_not_start_its_call():
    worker = _StoreThread()
    ran = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await worker.run(ran.append, 1)
    assert ran == []


async def test_the_thread_ends_when_idle_and_comes_back():
    worker = _StoreThread(idle=0.05)
    first = await worker.run(threading.get_ident)
    for _ in range(100):
        if not worker._alive:
            break
        await trio.sleep(0.02)
    assert not worker._alive
    assert await worker.run(lambda: 42) == 42
    assert worker._alive and first is not None


async def test_no_store_thread_outlives_the_server(start_server):
    def store_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "syncledger store"]

    before = set(store_threads())  # (other tests' workers, ending on their own idle time)
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, threaded=True)
        from syncledger.server.testing import Harness
        async with Harness(srv).client() as c:
            login = await Harness(srv).add_account(c)
            assert (await c.call("BalanceIn", {"login": login, "amount": 1})).ok
        assert set(store_threads()) - before
        nursery.cancel_scope.cancel()
    assert not set(store_threads()) - before  # closed and joined with the mainLoop, not 10 idle seconds later


async def test_close_waits_for_queued_calls_and_a_later_call_starts_a_new_thread():
    worker = _StoreThread()
    slow = []

    async def call() -> None:
        slow.append(await worker.run(lambda: (time.sleep(0.05), "done")[1]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(0.01)
        await trio.to_thread.run_sync(worker.close)  # (a blocking join, kept off this test's Trio thread)
    assert slow == ["done"] and not worker._alive
    assert await worker.run(lambda: 7) == 7
    worker.close()
    assert not worker._alive
