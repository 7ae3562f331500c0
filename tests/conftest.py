"""Shared fixtures: in-process servers (real clock on a file, or MockClock on an inline in-memory ledger).

Clock rule (issue 10): a test that touches time on an in-memory server runs on
``trio.testing.MockClock(autojump_threshold=0)`` by naming ``autojump_clock`` (or ``mock_clock``) among
its OWN arguments. pytest-trio hands ``trio.run`` only a clock found in the test function's arguments: a
clock that only a fixture requests is silently ignored and the test runs on the real clock.
:func:`pytest_runtest_setup` below refuses such a test.
"""

from __future__ import annotations

import inspect

import pytest

from syncledger.ledger import verify
from syncledger.server.app import Config, Server, serve
from syncledger.server.auth import SESSION_ADMIN
from syncledger.server import logs
from syncledger.server.client import Client
from syncledger.server.testing import Harness, test_config

CLOCK_FIXTURES = ("autojump_clock", "mock_clock")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test whose fixtures request a mock clock that the test function itself does not name."""
    function = getattr(item, "function", None)
    if function is None:
        return
    own = set(inspect.signature(function).parameters)
    wanted = [name for name in CLOCK_FIXTURES if name in getattr(item, "fixturenames", ())]
    if wanted and not own.intersection(CLOCK_FIXTURES):
        pytest.fail(f"{item.nodeid}: a fixture requests {wanted[0]!r} but the test function does not; "
                    f"pytest-trio would ignore that clock and run the test on the real clock. Add "
                    f"{wanted[0]!r} to the test's own arguments.", pytrace=False)


@pytest.fixture(autouse=True)
def _log_handler_left_behind():
    """A test that configured syncledger's log (``cli.main(["serve", ...])``) leaves no handler for the
    next one: its counts of left-out lines are told in its own output, not in a later test's stderr."""
    yield
    logs.reset()


def make_config(**kw) -> Config:
    """The deterministic test config (server.testing), by default on the real clock with a worker thread."""
    return test_config(**{"threaded": True, "epoch": None, **kw})


@pytest.fixture
async def server(nursery, tmp_path) -> Server:
    """The real server on loopback sockets and a ledger file, real clock."""
    return await nursery.start(serve, make_config(db=str(tmp_path / "ledger.db")))


@pytest.fixture
async def mem_server(nursery) -> Server:
    """The server on an in-memory ledger that never leaves the Trio thread: safe under MockClock.
    Connect with ``mem_client``."""
    return await nursery.start(serve, test_config())


def admin_token(srv: Server, login: int = 1, session: int = SESSION_ADMIN) -> str:
    return Harness(srv).token_for(login, session)


def tcp_client(srv: Server, token: str | None = "admin"):
    return Harness(srv).tcp_client(token)


def mem_client(srv: Server, token: str | None = "admin"):
    return Harness(srv).client(token)


async def add_account(client: Client, login: int | None = None, currency: str = "EUR") -> int:
    data = {"name": "player", "currency": currency}
    if login is not None:
        data["login"] = login
    reply = await client.call("AddUser", data)
    assert reply.ok, reply
    return reply.data["login"]


async def assert_ledger_ok(srv: Server) -> None:
    report = await srv.mainloop.read(verify, srv.store.db)
    assert report.ok, report


async def event_count(srv: Server) -> int:
    return await srv.mainloop.read(lambda: srv.store.seq)
