"""The page's reader process: reads one at a time, each followed by a rest in proportion to its length."""

from __future__ import annotations

import trio

from syncledger.server.admin.app import PageReader
from tests.conftest import add_account, tcp_client


async def test_a_loop_of_reads_keeps_the_reader_busy_a_bounded_share_of_the_time(server):
    async with tcp_client(server) as c:
        login = await add_account(c)
        for _ in range(20):
            assert (await c.call("CreditIn", {"login": login, "amount": 1, "comment": "c"})).ok
    reader = PageReader(server.config.db, timeout=30, rest=3.0)
    try:
        assert await reader("history", login, {}, None, 1000) is not None  # (the process's start)
        asked = trio.current_time()
        await reader("history", login, {}, None, 1000)
        answered, free_at = trio.current_time(), reader._free_at
        assert answered <= free_at <= answered + 3.0 * (answered - asked)  # rest: 3 x the read, at most
        page = await reader("history", login, {}, None, 1000)
        assert trio.current_time() >= free_at and page.count(b'"order"') == 20  # waited its turn, then read
    finally:
        reader.close()
