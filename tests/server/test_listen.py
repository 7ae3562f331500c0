"""One guarded way to listen (issue 22): every listener is served through server.listen, the admin listener
under a cap and the connect rate as the others, and TLS handshakes bounded in time and in CPU at once."""

from __future__ import annotations

import ast
import ssl

import pytest
import trio
import trustme

from syncledger.server.client import open_client
from syncledger.server.limits import Gate
from syncledger.server.testing import Harness
from tests.conftest import ROOT

SERVER = ROOT / "server"
# what opens or accepts on a listening socket, or runs a handshake or an accept loop of its own
LISTENING = {"open_tcp_listeners", "open_ssl_over_tcp_listeners", "serve_listeners", "serve_tcp",
             "serve_ssl_over_tcp", "SSLListener", "SSLStream", "WebSocketServer", "serve_websocket", "listen",
             "start_server", "create_server", "HTTPServer"}


def test_no_module_listens_but_server_listen():
    """A listener added later cannot skip the guards: nothing in server/ but listen.py opens, accepts on or
    wraps a listening socket (a call of any of LISTENING)."""
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        if path.name == "listen.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                if name in LISTENING:
                    found.append(f"{path.relative_to(SERVER)}:{node.lineno} {name}")
    assert found == []


async def test_every_listener_is_one_of_the_servers_listeners(start_server):
    srv = await start_server(max_connections=5)
    assert sorted(srv.listeners) == ["admin", "tcp", "wallet", "ws"]
    assert all(listener.serving for listener in srv.listeners.values())
    assert tuple(srv.listeners[name].port for name in srv.ports._fields) == tuple(srv.ports)
    assert {name: listener.gate.cap for name, listener in srv.listeners.items()} == {
        "tcp": 5, "ws": 5, "wallet": 5, "admin": 5}
    assert srv.gates == {name: listener.gate for name, listener in srv.listeners.items()}  # (metrics)


async def _refused(*streams: trio.SocketStream) -> list[bool]:
    """Whether each of ``streams`` (new connections) was closed at once, before anything was sent."""
    refused = []
    for stream in streams:
        closed = False
        with trio.move_on_after(0.5):
            try:
                closed = await stream.receive_some(10) == b""
            except trio.BrokenResourceError:
                closed = True
        refused.append(closed)
        await stream.aclose()
    return refused


async def _connect(port: int, n: int = 1) -> list[trio.SocketStream]:
    return [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(n)]


async def test_the_admin_listener_refuses_connections_over_its_cap(start_server, caplog):
    """Its connections used to be uncapped: a local user held 19,998 of them (a GET /healthz every 50 s
    keeps one open) until the manager listener could accept nothing."""
    caplog.set_level("WARNING", logger="syncledger.limits")
    srv = await start_server(max_connections=3)
    held = await _connect(srv.ports.admin, 3)
    await trio.sleep(0.1)
    assert await _refused(*await _connect(srv.ports.admin, 3)) == [True] * 3
    assert await _refused(*await _connect(srv.ports.tcp)) == [False]  # (another listener's cap is its own)
    await held[0].aclose()
    await trio.sleep(0.1)
    assert await _refused(*await _connect(srv.ports.admin)) == [False]  # room again
    for stream in held[1:]:
        await stream.aclose()
    assert any("admin: refused" in r.getMessage() and "at the cap of 3" in r.getMessage() for r in caplog.records)


async def test_the_admin_listener_refuses_connections_over_the_connect_rate(start_server, monkeypatch):
    monkeypatch.setitem(Gate.__init__.__kwdefaults__, "burst", 3)  # (1,000 at first by default)
    srv = await start_server(max_connect_rate=1)
    assert await _refused(*await _connect(srv.ports.admin, 5)) == [False] * 3 + [True] * 2
    await trio.sleep(1.1)
    assert await _refused(*await _connect(srv.ports.admin)) == [False]  # a token a second


async def test_the_default_caps_leave_room_for_the_admin_listener(start_server):
    from syncledger.server.limits import raise_descriptor_limit
    srv = await start_server()
    caps = [listener.gate.cap for listener in srv.listeners.values()]
    assert srv.listeners["admin"].gate.cap == 64
    assert sum(caps) + 200 <= max(raise_descriptor_limit(), 3 * 16 + 200 + 64)


# ---- TLS: handshakes bounded in time and in CPU at once


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def _tls(tmp_path, ca) -> dict[str, str]:
    """A certificate for 127.0.0.1 written under ``tmp_path``: the server's ``tls_cert`` and ``tls_key``."""
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    return {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem")}


def _client_hello(ca) -> bytes:
    """The first flight of a TLS client: its ClientHello."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def _stalled(port: int, first: bytes) -> trio.SocketStream:
    """A connection that sends ``first`` and then nothing."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(first)
    return stream


async def test_a_handshake_that_never_ends_is_closed_at_its_deadline_on_every_listener(start_server, tmp_path, ca,
                                                                                       caplog):
    """Before, a stalled handshake on the manager listener was held for the silent timeout (3600 s), on the
    wallet's for the idle one (60 s)."""
    caplog.set_level("WARNING", logger="syncledger.limits")
    srv = await start_server(**_tls(tmp_path, ca), tls_handshake_timeout=1.0)
    hello = _client_hello(ca)
    took: dict[int, float] = {}

    async def stall_on(port: int) -> None:
        start = trio.current_time()  # (before the first connection: its deadline runs from its accept)
        streams = [await _stalled(port, first) for first in (b"", hello[:20], hello)]
        for stream in streams:
            with trio.fail_after(5):
                try:
                    while await stream.receive_some(1 << 16):
                        pass  # (the server's flight, for the whole ClientHello)
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
        took[port] = trio.current_time() - start

    async with trio.open_nursery() as nursery:  # (the listeners at once: one deadline's wait, not four)
        for port in srv.ports:
            nursery.start_soon(stall_on, port)
    assert sorted(took) == sorted(srv.ports) and all(0.9 <= t < 3 for t in took.values()), took
    lines = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert 1 <= len(lines) <= 5 and any("did not end within 1 s" in line for line in lines)  # (once a second)


async def test_failed_and_late_handshakes_are_counted_by_listener(start_server, tmp_path, ca):
    """For syncledger_refused_connections_total{listener,reason}."""
    srv = await start_server(**_tls(tmp_path, ca), tls_handshake_timeout=0.5)
    for port, first in ((srv.ports.tcp, b"GET / HTTP/1.1\r\n\r\n"), (srv.ports.wallet, b"")):  # not TLS; nothing
        stream = await _stalled(port, first)
        with trio.fail_after(5):
            try:
                while await stream.receive_some(1 << 16):
                    pass
            except trio.BrokenResourceError:
                pass
        await stream.aclose()
    assert srv.gates["tcp"].refusals == {"handshake": 1} and srv.gates["wallet"].refusals == {"handshake_timeout": 1}
    assert not srv.gates["ws"].refusals and not srv.gates["admin"].refusals


async def test_stalled_handshakes_hold_no_other_beyond_the_bound(start_server, tmp_path, ca, monkeypatch):
    """With one handshake at a time computing, forty peers stalled at each point of their handshake (nothing
    sent, half a ClientHello, a whole one and never a Finished) delay no well-behaved client: a slot is held
    only while a worker thread answers a whole ClientHello, never while the server waits for a peer."""
    import threading
    srv = await start_server(**_tls(tmp_path, ca), tls_handshakes=1, tls_handshake_timeout=30)
    limiter = srv.listeners["tcp"].handshakes
    in_threads = []
    real = ssl.SSLObject.do_handshake

    def step(self):
        if self.server_side and threading.current_thread() is not threading.main_thread():
            in_threads.append(limiter.borrowed_tokens)
        return real(self)
    monkeypatch.setattr(ssl.SSLObject, "do_handshake", step)
    hello = _client_hello(ca)
    stalled = [await _stalled(srv.ports.tcp, first) for first in (b"", hello[:20], hello) for _ in range(40)]
    await trio.sleep(0.5)
    assert in_threads == [1] * 40 and limiter.borrowed_tokens == 0  # (the whole ClientHellos, one at a time)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(3):  # (the stalled ones are held for 30 s)
        for _ in range(5):
            stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.ports.tcp, ssl_context=context)
            async with open_client(stream, Harness(srv).token) as c:
                assert (await c.call("Ping")).ok
    assert in_threads == [1] * 45
    for stream in stalled:
        await stream.aclose()


async def test_a_flood_of_handshakes_waits_for_the_slots_of_its_listener(start_server, tmp_path, ca, monkeypatch):
    """Handshakes that arrive at once are answered ``tls_handshakes`` at a time (here 2), in worker threads;
    every one ends, and the event loop goes on meanwhile."""
    import threading
    import time
    srv = await start_server(**_tls(tmp_path, ca), tls_handshakes=2)
    limiter, seen = srv.listeners["tcp"].handshakes, []
    real = ssl.SSLObject.do_handshake

    def slow_step(self):
        if self.server_side and threading.current_thread() is not threading.main_thread():
            seen.append(limiter.borrowed_tokens)
            time.sleep(0.05)  # (a costly key: the thread holds its slot 50 ms)
        return real(self)
    monkeypatch.setattr(ssl.SSLObject, "do_handshake", slow_step)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ticks = []

    async def tick() -> None:
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(0.01)

    async def one() -> None:
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.ports.tcp, ssl_context=context)
        await stream.do_handshake()
        await stream.aclose()
    async with trio.open_nursery() as clients:
        clients.start_soon(tick)
        start = trio.current_time()
        async with trio.open_nursery() as flood:
            for _ in range(20):
                flood.start_soon(one)
        took = trio.current_time() - start
        clients.cancel_scope.cancel()
    assert len(seen) == 20 and max(seen) == 2 and took >= 20 / 2 * 0.05
    assert len(ticks) >= took / 0.01 / 2  # (inline, the loop would have stood still for 20 x 50 ms)


async def test_new_tls_connections_are_accepted_at_the_listeners_pace(start_server, tmp_path, ca):
    """A flood of handshakes waits in the kernel's listen backlog beyond the pace (here 10 a second after 10
    at once), where it costs nothing, while an established connection is answered at once; every one of the
    flood ends its handshake in its turn."""
    srv = await start_server(**_tls(tmp_path, ca), tls_handshake_rate=10)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ended = []

    async def one() -> None:
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.ports.wallet, ssl_context=context)
        await stream.do_handshake()
        ended.append(trio.current_time() - start)
        await stream.aclose()
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.ports.tcp, ssl_context=context)
    async with open_client(stream, Harness(srv).token) as c:
        start = trio.current_time()
        async with trio.open_nursery() as flood:
            for _ in range(30):
                flood.start_soon(one)
            await trio.sleep(0.5)
            with trio.fail_after(0.5):
                assert (await c.call("Ping")).ok
    ended.sort()
    assert len(ended) == 30 and ended[9] < 1 and 1.8 <= ended[-1] < 4, ended


async def test_a_closed_tls_connection_is_freed_at_once(start_server, tmp_path, ca):
    """Nothing of a TLS connection waits for the garbage collector once it is closed (trio's SSLStream is a
    cycle: the collector freed hundreds of them, and their SSL objects, in one pause of 50-90 ms under a
    flood of handshakes), whether its handshake ended or failed."""
    import gc
    srv = await start_server(**_tls(tmp_path, ca))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(10):
            stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.ports.tcp, ssl_context=context)
            await stream.do_handshake()
            await trio.aclose_forcefully(stream)
            plain = await trio.open_tcp_stream("127.0.0.1", srv.ports.wallet)  # (a failed handshake)
            await plain.send_all(b"GET / HTTP/1.1\r\n\r\n")
            await plain.aclose()
        await trio.sleep(0.5)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, (trio.SSLStream, ssl.SSLObject))
                and o.server_side]  # (the client's streams here are cycles too)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
