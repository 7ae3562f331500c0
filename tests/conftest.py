"""Shared fixtures: in-process servers (real clock on a file, or MockClock on an inline in-memory ledger)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio

from ledger import verify
from server.app import Config, Server, serve
from server.auth import SESSION_ADMIN
from server.client import Client, connect, open_client

SECRET = "test-secret-of-at-least-32-bytes-for-hs256"


def make_config(**kw) -> Config:
    base = dict(tcp_port=0, ws_port=0, wallet_port=0, secret=SECRET)
    base.update(kw)
    return Config(**base)


@pytest.fixture
async def server(nursery, tmp_path) -> Server:
    """The real server on loopback sockets and a ledger file, real clock."""
    return await nursery.start(serve, make_config(db=str(tmp_path / "ledger.db")))


@pytest.fixture
async def mem_server(nursery) -> Server:
    """The server on an in-memory ledger that never leaves the Trio thread: safe under MockClock.
    Connect with ``mem_client``."""
    return await nursery.start(serve, make_config(db=":memory:", threaded=False, epoch=1_700_000_000))


def admin_token(srv: Server, login: int = 1, session: int = SESSION_ADMIN) -> str:
    return srv.tokens.issue(login, session)[0]


@asynccontextmanager
async def tcp_client(srv: Server, token: str | None = "admin") -> AsyncIterator[Client]:
    async with connect("127.0.0.1", srv.ports.tcp, admin_token(srv) if token == "admin" else token) as c:
        yield c


@asynccontextmanager
async def mem_client(srv: Server, token: str | None = "admin") -> AsyncIterator[Client]:
    async with open_client(srv.connect_memory(), admin_token(srv) if token == "admin" else token) as c:
        yield c


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
