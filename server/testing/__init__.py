"""Run the whole server inside a Trio test: a Harness over a running Server, with ready clients, tokens,
in-process wallet calls, fault switches and the ledger audit.

Clock policy: the default config keeps the ledger in memory and SQLite on the Trio thread
(``threaded=False``) and clients on memory streams, so ``MockClock(autojump_threshold=0)`` drives every
timeout (sync timeout, sid expiry, token expiry, idle connections) deterministically. A ledger file with
``threaded=True`` (or clients on real sockets) needs the real clock: worker threads and the kernel do not
follow a mock clock.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, AsyncIterator

import orjson
import trio
import trio.testing

from syncledger.ledger import Report, engine, verify

from ..app import Server, serve
from ..config import Config
from .faults import Faults
from ..auth import SESSION_ADMIN
from ..client import Client, connect, open_client

SECRET = "syncledger-test-secret-of-32-bytes-or-more"
WALLET_TOKEN = "syncledger-test-wallet-token"
EPOCH = 1_700_000_000  # wall time at trio.current_time() == 0: timestamps repeat from run to run


def test_config(**overrides: Any) -> Config:
    """An in-memory, single-threaded, deterministic server on free ports."""
    base: dict[str, Any] = dict(db=":memory:", threaded=False, writer="thread", tcp_port=0, ws_port=0, wallet_port=0,
                                admin_port=0, secret=SECRET, wallet_token=WALLET_TOKEN, epoch=EPOCH)
    base.update(overrides)
    return Config(**base)


def faults_of(server: Any) -> Faults:
    """The fault-injection switches of ``server`` (of a cluster fixture's: its first node's), made on first use;
    off until switched."""
    server = getattr(server, "nodes", [server])[0]
    if server.mainloop.faults is None:
        server.mainloop.faults = Faults(server)
    return server.mainloop.faults


def connect_memory(server: Any, lockstep: bool = False) -> trio.abc.Stream:
    """A manager connection to ``server`` over an in-memory stream (no socket): the client's end. With
    ``lockstep``, the server's writes wait until the client reads them, as a full socket would."""
    client, end = (trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair)()
    server.serve_stream(end, client)
    return client


test_config.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


class Harness:
    """A running server and what a test needs to drive it."""

    def __init__(self, server: Server):
        self.server = server
        self.token = self.token_for(1, SESSION_ADMIN)

    @property
    def ports(self) -> Any:
        return self.server.ports

    @property
    def faults(self) -> Faults:
        return faults_of(self.server)

    def token_for(self, login: int, session: int = SESSION_ADMIN, ttl: int | None = None) -> str:
        """A token for manager ``login`` (stored first, with no usable password, if it is not yet)."""
        if login not in self.server.keys.versions:
            add_test_manager(self.server, login, session)
        return self.server.tokens.issue(login, session, ttl, kv=self.server.keys.versions[login])[0]

    @asynccontextmanager
    async def client(self, token: str | None = "admin") -> AsyncIterator[Client]:
        """A client on an in-memory connection (deterministic under MockClock)."""
        async with open_client(connect_memory(self.server), self.token if token == "admin" else token) as c:
            yield c

    @asynccontextmanager
    async def tcp_client(self, token: str | None = "admin") -> AsyncIterator[Client]:
        """A client on a real loopback socket (use the real clock)."""
        host = self.server.config.host
        async with connect(host, self.ports.tcp, self.token if token == "admin" else token) as c:
            yield c

    async def add_account(self, client: Client, currency: str = "EUR", balance: Decimal | int = 0) -> int:
        reply = await client.call("AddUser", {"name": "test", "currency": currency})
        assert reply.ok, reply
        login = reply.data["login"]
        if balance:
            assert (await client.call("BalanceIn", {"login": login, "amount": balance})).ok
        return login

    async def wallet(self, action: str, body: dict | bytes, token: str | None = WALLET_TOKEN) -> dict:
        """Call the game-wallet API in-process (the wallet's own answer, no socket)."""
        raw = body if isinstance(body, bytes) else orjson.dumps(
            body, default=lambda d: orjson.Fragment(str(d).encode()))
        query = f"authToken={token}".encode() if token is not None else b""
        reply = await self.server.wallet.call(action, query, [], raw)
        return json.loads(reply, parse_float=Decimal)

    async def verify(self) -> Report:
        """Audit the ledger (hash chains, gap-free seq, totals equal sums) between two batches."""
        return await self.server.mainloop.read(verify, self.server.store.db)


def add_test_manager(server: Server, login: int, session: int = SESSION_ADMIN) -> None:
    """Store a manager that can hold tokens but never log in (its password hash matches nothing)."""
    sql = "INSERT INTO managers (login, password_hash, session, created) VALUES (?, '!', ?, 0) ON CONFLICT DO NOTHING"
    if server.config.db == ":memory:":  # single-threaded: between two batches, on the writer's connection
        server.store.db.execute(sql, (login, session))
    else:  # a connection of its own: the writer's may be inside a batch
        db = engine.connect(server.config.db)
        try:
            db.execute(sql, (login, session))
        finally:
            db.close()
    server.reload_keys()


@asynccontextmanager
async def running(config: Config | None = None) -> AsyncIterator[Harness]:
    """Start a server (default: :func:`test_config`) for the duration of the block."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, config or test_config())
        try:
            yield Harness(server)
        finally:
            nursery.cancel_scope.cancel()
