"""Shared fixtures: ``start_server``, the one factory of in-process servers (real clock on a file, or MockClock on
an inline in-memory ledger), and the ``server`` and ``mem_server`` made by it.

Clock rule (issue 10): a test that touches time on an in-memory server runs on
``trio.testing.MockClock(autojump_threshold=0)`` by naming ``autojump_clock`` (or ``mock_clock``) among
its OWN arguments. pytest-trio hands ``trio.run`` only a clock found in the test function's arguments: a
clock that only a fixture requests is silently ignored and the test runs on the real clock.
:func:`pytest_runtest_setup` below refuses such a test.
"""

from __future__ import annotations

import compileall
import inspect
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from syncledger.ledger import verify
from syncledger.server.app import Config, Server, serve
from syncledger.server.auth import SESSION_ADMIN
from syncledger.server import logs
from syncledger.server.client import Client
from syncledger.server.testing import Harness, test_config

CLOCK_FIXTURES = ("autojump_clock", "mock_clock")
ROOT = Path(__file__).resolve().parent.parent  # the repository
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # ledgers of older releases (fixtures/README.md)


def pytest_configure(config: pytest.Config) -> None:
    """Where the environment keeps Python from writing bytecode (``PYTHONDONTWRITEBYTECODE``, as here), every
    server, writer and CLI process a test starts would compile syncledger's modules again: they are compiled once
    per run instead, beside their sources (``__pycache__/``, as Python itself writes them without the variable;
    git ignores them). Only syncledger's: every other module has its bytecode from its install."""
    if not sys.flags.dont_write_bytecode or hasattr(config, "workerinput"):
        return
    import syncledger.ledger
    import syncledger.server
    for package in (syncledger.server, syncledger.ledger):
        for path in package.__path__:
            compileall.compile_dir(path, quiet=1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pyproject's addopts): one xdist worker more than the usable cores. Much of the suite waits
    rather than computes (server and PostgreSQL processes starting, fsync, a browser, real-clock timeouts): on
    2 cores the run took about a quarter less with 3 workers than with 2, and no less with 4, measured by turns.
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


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


@pytest.fixture(scope="session", autouse=True)
def _one_default_ssl_context():
    """Every ``httpx.AsyncClient()`` built with the default ``verify=True`` shares one SSLContext (the same CA
    bundle, so the same checks): httpx loads the bundle anew for each client, 40-130 ms of CPU here, and the
    suite makes some 300 clients, most of them for plain-http URLs that never use it (a test's own ``verify=``
    builds its own context, as before). Without httpx's hook (a later httpx), each client loads it again."""
    try:
        from httpx._transports import default
    except ImportError:  # (a later httpx's layout)
        default = None
    build = getattr(default, "create_ssl_context", None)
    if build is None:
        yield
        return
    made: dict[tuple, Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in made:
            made[key] = build(verify=verify, cert=cert, trust_env=trust_env)
        return made[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(default, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(autouse=True)
def _log_handler_left_behind():
    """A test that configured syncledger's log (``cli.main(["serve", ...])``) leaves no handler for the
    next one: its counts of left-out lines are told in its own output, not in a later test's stderr."""
    yield
    logs.reset()


def server_config(tmp_path: Path | None = None, *, mem: bool = False, **overrides: Any) -> Config:
    """The one place a test server's Config is made: server.testing's :func:`test_config` (free ports, the test
    secret and wallet token), then ``overrides`` (Config fields) last.

    * by default, a real ledger file (``tmp_path / "ledger.db"``) with a worker thread and the real wall clock
      (``threaded=True, epoch=None``): for the real clock;
    * ``mem=True``: test_config as it stands, an in-memory ledger inline on the Trio thread (``threaded=False``)
      with wall time counted from EPOCH: safe under MockClock. ``db=`` may still name a file or a PostgreSQL
      ledger, kept inline all the same."""
    if mem:
        return test_config(**overrides)
    if "db" not in overrides:
        assert tmp_path is not None, "a ledger file needs tmp_path (or pass db=...)"
        overrides["db"] = str(tmp_path / "ledger.db")
    return test_config(**{"threaded": True, "epoch": None, **overrides})


async def launch(nursery: trio.Nursery, config: Config, backend: str = "sqlite") -> Server:
    """``serve(config)`` started in ``nursery``; on the ``cluster`` backend two nodes of ``config`` (cluster=True) on
    its ledger, shown to the test as one server (:class:`tests.pgcluster.Nodes`). Tests call it through the
    :func:`start_server` fixture; directly only where no fixture reaches (the fuzz suite's hypothesis examples,
    each a ``trio.run`` of its own)."""
    if backend != "cluster":
        return await nursery.start(serve, config)
    from tests.pgcluster import Nodes
    return Nodes([await nursery.start(serve, replace(config, cluster=True)) for _ in range(2)])


@pytest.fixture
async def start_server(nursery, tmp_path):
    """The one way a test starts an in-process server: ``srv = await start_server(**config_overrides)``.

    Its Config is :func:`server_config`'s (a ledger file under ``tmp_path`` on the real clock; ``mem=True``: an
    inline in-memory ledger, safe under MockClock; any Config field overridden by name); it runs in the test's
    ``nursery`` fixture, or in ``nursery=`` (a test's own, to stop it mid-test); ``backend=`` is a
    :data:`tests.pgcluster.BACKENDS` name (``cluster``: two nodes on the ledger, shown as one). Returns the
    started Server once it listens."""
    tests_nursery = nursery

    async def start(*, nursery: trio.Nursery | None = None, mem: bool = False, backend: str = "sqlite",
                    **overrides: Any) -> Server:
        return await launch(tests_nursery if nursery is None else nursery,
                            server_config(tmp_path, mem=mem, **overrides), backend)
    return start


@pytest.fixture
async def server(start_server) -> Server:
    """The real server on loopback sockets and a ledger file, real clock."""
    return await start_server()


@pytest.fixture
async def mem_server(start_server) -> Server:
    """The server on an in-memory ledger that never leaves the Trio thread: safe under MockClock.
    Connect with ``mem_client``."""
    return await start_server(mem=True)


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
