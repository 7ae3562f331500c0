"""Regression tests for bugs found in review: each failed before its fix.

The others have moved to the test files of their subjects. This one pins ``MainLoop.pause`` through the
toolkit's fault switches: its home is ``tests/test_toolkit.py``, beside ``test_pause_and_resume``."""

from __future__ import annotations

import trio

from tests.conftest import mem_client


async def test_pausing_twice_then_resuming_runs_again(mem_server, autojump_clock):
    async with mem_client(mem_server) as c:
        mem_server.faults.pause()
        mem_server.faults.pause()
        call = c.start("AddUser", {"name": "x", "currency": "EUR"})
        await trio.sleep(1)
        mem_server.faults.resume()
        assert (await call.reply()).ok
