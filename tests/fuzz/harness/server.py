"""The fuzz server and the run's settings: a server on an in-memory ledger whose managers hold the
workload's tokens, how many examples a fuzz test draws, and the error log an example must leave empty."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypothesis import HealthCheck, settings

from syncledger.server.app import Config
from tests.conftest import launch, server_config
from tests.fuzz import strategies as S
from tests.fuzz.strategies import SECRET
from tests.fuzz.strict import Failed

EXAMPLES = int(os.environ.get("SYNCLEDGER_FUZZ_EXAMPLES", "0") or 0)

COUNTS: Counter = Counter()  # inputs sent, by test


async def start_fuzz_server(nursery: trio.Nursery, **kw: Any) -> Any:
    """A fuzz server whose managers 1 (ADMIN), 2 (MANAGER) and 3 (DEALER) hold the strategies' tokens."""
    from syncledger.server.testing import add_test_manager
    srv = await launch(nursery, fuzz_config(**kw))
    for tok in (S.ADMIN, S.MANAGER, S.DEALER):
        add_test_manager(srv, tok.login, tok.session)
    return srv


def fuzz_config(**kw: Any) -> Config:
    """An in-memory ledger on the Trio thread (conftest's ``mem=True``), the real clock (tokens are minted before the
    server starts), no admin listener, the strategies' secret and wallet token (and Config's default writer, which
    an in-memory ledger does not use). Each example is a ``trio.run`` of its own: no fixture reaches it, so it starts
    its server by what the ``start_server`` fixture calls."""
    return server_config(mem=True, **{"epoch": None, "admin_port": None, "writer": "process", "secret": SECRET,
                                      "wallet_token": S.WALLET_TOKEN, **kw})


def fuzz_settings(default: int) -> settings:
    return settings(max_examples=EXAMPLES or default, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


def cheap_hash(password: str) -> str:
    """A valid ``scrypt$n$r$p$salt$hash`` with tiny parameters, so that Login costs nothing in the fuzzer."""
    salt = b"fuzz-salt-16byte"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    return f"scrypt$2$1$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class ErrorLog(logging.Handler):
    """Collects records at ERROR and above from the server's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLog:
        logging.getLogger("syncledger").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("syncledger").removeHandler(self)

    def check(self) -> None:
        if self.records:
            r = self.records[0]
            raise Failed(f"the server logged an error: {r.getMessage()}\n{self.format(r)}")


EXAMPLE_TIMEOUT = 120.0  # seconds for one example, whatever happens


@asynccontextmanager
async def fuzz_server(**kw: Any):
    async with trio.open_nursery() as nursery:
        srv = await start_fuzz_server(nursery, **kw)
        yield srv
        nursery.cancel_scope.cancel()
