"""pytest plugin (registered as a ``pytest11`` entry point): the complete syncledger server in a
pytest-trio test. Works with ``trio_mode`` and with the ``autojump_clock`` fixture.

Fixtures:
    syncledger_config  the Config to start with (override it in a conftest.py to change anything)
    syncledger         a running server.testing.Harness: .server, .ports, .token, .client(), .tcp_client(),
                       .wallet(), .faults, .verify(); the ledger is audited when the test ends
    syncledger_client  a ready client (ADMIN token) on an in-memory connection
    syncledger_token   an ADMIN token
    syncledger_ports   the bound ports (tcp, ws, wallet)
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from ..app import serve
from ..config import Config
from ..client import Client
from . import Harness, test_config


@pytest.fixture
def syncledger_config() -> Config:
    return test_config()


@pytest.fixture
async def syncledger(nursery: Any, syncledger_config: Config) -> AsyncIterator[Harness]:
    server = await nursery.start(serve, syncledger_config)
    harness = Harness(server)
    yield harness
    report = await harness.verify()
    assert report.ok, f"ledger audit failed after the test: {report}"


@pytest.fixture
async def syncledger_client(syncledger: Harness) -> AsyncIterator[Client]:
    async with syncledger.client() as client:
        yield client


@pytest.fixture
def syncledger_token(syncledger: Harness) -> str:
    return syncledger.token


@pytest.fixture
def syncledger_ports(syncledger: Harness) -> Any:
    return syncledger.ports
