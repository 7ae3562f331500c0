"""WebSocket fan-out by bytes: a piece of events is framed once for every WebSocket subscriber and written to
each with one send, under trio-websocket's send lock; on the wire nothing changes (one text frame an event,
byte for byte what ``send_message`` made), nor for a slow, broken or pinging client; refused upgrades are
counted in syncledger_refused_connections_total{listener="ws"}."""

from __future__ import annotations

import logging
import socket
import struct
from collections import Counter

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url, wrap_client_stream
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage
from wsproto.frame_protocol import FrameProtocol, Opcode

from syncledger.ledger import reads
from syncledger.server.auth import SESSION_USER
from syncledger.server.core.broker import event_line
from syncledger.server.core.mainloop import ShuttingDown
from syncledger.server.events import ws as ws_module
from tests.conftest import add_account, admin_token, tcp_client

UPGRADE = ("GET /events?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")


async def _raw_subscriber(srv, query: str, extra: str = "") -> tuple[trio.SocketStream, bytes, bytearray]:
    """A subscriber on a plain socket: (its stream, the 101 answer's head, the bytes after it)."""
    stream = await trio.open_tcp_stream("127.0.0.1", srv.ports.ws)
    await stream.send_all(UPGRADE.format(query=f"token={admin_token(srv)}&{query}", extra=extra).encode())
    got = b""
    while b"\r\n\r\n" not in got:
        got += await stream.receive_some()
    head, rest = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream, head, bytearray(rest)


async def _credits(c, login: int, n: int, chunk: int = 100) -> None:
    """``n`` BalanceIn, ``chunk`` at a time in flight (batches of many events: pieces of many lines)."""
    for start in range(0, n, chunk):
        calls = [c.start("BalanceIn", {"login": login, "amount": 1}) for _ in range(min(chunk, n - start))]
        for call in calls:
            assert (await call.reply()).ok


def _as_send_message_framed_them(lines: list[bytes]) -> bytes:
    """The bytes trio-websocket's ``send_message(line.decode())`` put on the wire for each line, before."""
    conn = Connection(ConnectionType.SERVER)
    return b"".join(conn.send(TextMessage(data=line.decode())) for line in lines)


def _frames(data: bytes) -> list[tuple[Opcode, str, bool]]:
    """The frames a client reads in ``data``: (opcode, text, whether it ends its message)."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    return [(f.opcode, f.payload, f.message_finished) for f in proto.received_frames()]


async def _event_lines(srv, after: int = 0) -> list[bytes]:
    events = await srv.mainloop.read(reads.events_after, srv.store.db, after, 100_000)
    return [event_line(e)[:-2] for e in events]


async def test_many_subscribers_get_byte_for_byte_the_frames_of_before_replayed_and_live(start_server):
    """Three replaying (from seq 0, two pages of pieces) and three live subscribers, on plain sockets, one of
    them offering permessage-deflate (never accepted): each reads exactly what send_message made, one text
    frame an event, whatever batches and pieces the events came in."""
    srv = await start_server(max_subscribers_per_login=8)
    async with tcp_client(srv) as c:
        login = await add_account(c)
        await _credits(c, login, 150)
        subs = [await _raw_subscriber(srv, "from_seq=0") for _ in range(3)]
        subs += [await _raw_subscriber(srv, "", "Sec-WebSocket-Extensions: permessage-deflate\r\n")]
        subs += [await _raw_subscriber(srv, "") for _ in range(2)]
        with trio.fail_after(5):
            while len(srv.broker.subscribers) < 6:
                await trio.sleep(0.01)
        live_from = srv.mainloop.committed_seq
        await _credits(c, login, 250, chunk=125)
    every, live = await _event_lines(srv), await _event_lines(srv, live_from)
    assert len(live) == 250 and len(every) == live_from + 250 >= 400
    assert all(b"sec-websocket-extensions" not in head.lower() for _, head, _ in subs)
    for i, (stream, _, got) in enumerate(subs):
        expected = _as_send_message_framed_them(every if i < 3 else live)
        with trio.fail_after(5):
            while len(got) < len(expected):
                got += await stream.receive_some()
        assert bytes(got) == expected
        assert _frames(got) == [(Opcode.TEXT, line.decode(), True) for line in (every if i < 3 else live)]
        await stream.aclose()


async def test_a_piece_is_framed_once_for_every_subscriber_and_sent_to_each_in_one_write(start_server, monkeypatch):
    """Eight subscribers, 300 events: each event is framed once (wsproto's send_data, counted: 8 x 300
    before), each subscriber is sent each piece (a batch) in one write, and its outbox is empty again once
    they are all out."""
    framed = [0]
    real_send_data = FrameProtocol.send_data

    def send_data(self, *args, **kwargs):
        framed[0] += 1
        return real_send_data(self, *args, **kwargs)
    monkeypatch.setattr(FrameProtocol, "send_data", send_data)
    pieces, writes = [0], Counter()
    real_frames, real_writer = getattr(ws_module, "frames", None), getattr(ws_module, "_frame_writer", None)

    def frames(piece: bytes) -> bytes:
        pieces[0] += 1
        return real_frames(piece)

    def frame_writer(ws):
        write = real_writer(ws)

        async def counted(data: bytes) -> None:
            writes[ws] += 1
            await write(data)
        return counted
    monkeypatch.setattr(ws_module, "frames", frames, raising=False)
    monkeypatch.setattr(ws_module, "_frame_writer", frame_writer, raising=False)
    srv = await start_server(max_subscribers_per_login=8)
    url = f"ws://127.0.0.1:{srv.ports.ws}/events?token={admin_token(srv)}"
    async with tcp_client(srv) as c, trio.open_nursery() as nursery:
        login = await add_account(c)
        got: list[list[int]] = [[] for _ in range(8)]

        async def subscriber(i: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with open_websocket_url(url) as ws:
                task_status.started()
                while len(got[i]) < 300:
                    got[i].append(orjson.loads(await ws.get_message())["seq"])
                await checked.wait()
        checked = trio.Event()
        for i in range(8):
            await nursery.start(subscriber, i)
        with trio.fail_after(5):
            while len(srv.broker.subscribers) < 8:
                await trio.sleep(0.01)
        first = srv.mainloop.committed_seq + 1
        await _credits(c, login, 300)
        with trio.fail_after(5):
            while any(len(seqs) < 300 for seqs in got):
                await trio.sleep(0.01)
            # every byte buffered is counted as sent once it is (the outboxes hold framed bytes)
            while any(sub.outbox.buffered or sub.outbox.queued for sub in srv.broker.subscribers):
                await trio.sleep(0.01)
        assert len(srv.broker.subscribers) == 8
        checked.set()
    assert framed[0] == 300  # (2,400 when each connection framed its own)
    assert got == [list(range(first, first + 300))] * 8
    assert 3 <= pieces[0] <= 300 and sorted(writes.values()) == [pieces[0]] * 8


async def test_a_ping_during_the_stream_gets_its_pong_and_no_frame_is_cut(start_server):
    """Pings while large pieces are written to a client with a small receive buffer (the server's writes wait
    on it): each is answered (the pong waits for the piece under way, never lands inside it) and every event
    arrives whole, in order."""
    srv = await start_server()
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", srv.ports.ws))
    async with tcp_client(srv) as c, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, trio.SocketStream(sock), "x", f"/events?token={admin_token(srv)}")
        login = await add_account(c)
        seqs: list[int] = []
        pongs = 0

        async def read() -> None:
            while len(seqs) < 2000:
                seqs.append(orjson.loads(await ws.get_message())["seq"])
                if len(seqs) % 50 == 0:
                    await trio.sleep(0.001)  # (the server's socket fills meanwhile)

        async def ping() -> None:
            nonlocal pongs
            while len(seqs) < 2000:
                with trio.fail_after(5):
                    await ws.ping()
                pongs += 1
        with trio.fail_after(20):
            async with trio.open_nursery() as flow:
                flow.start_soon(read)
                flow.start_soon(ping)
                await _credits(c, login, 2000, chunk=250)
        await ws.aclose()
    assert seqs == list(range(1, 2001)) and pongs >= 5


async def test_a_slow_subscriber_is_closed_with_1013_and_resumes_from_seq(start_server):
    """One that does not read is dropped (1013) with its outbox bounded; reconnecting with from_seq = the last
    seq it got, it gets the rest: no gap, no duplicate."""
    srv = await start_server(outbox_size=64)
    url = f"ws://127.0.0.1:{srv.ports.ws}/events?token={admin_token(srv)}"
    async with tcp_client(srv) as c:
        login = await add_account(c)
        seqs: list[int] = []
        async with open_websocket_url(url + "&from_seq=0", message_queue_size=1) as ws:
            for _ in range(300):
                await _credits(c, login, 32, chunk=32)
                sub = next(iter(srv.broker.subscribers), None)
                if sub is not None:
                    assert sub.outbox.queued <= 64 and sub.outbox.buffered <= srv.config.outbox_bytes
                if srv.broker.dropped:
                    break
            code = None
            with trio.fail_after(10):
                try:
                    while True:
                        seqs.append(orjson.loads(await ws.get_message())["seq"])
                except ConnectionClosed as closed:
                    code = closed.reason.code
        assert code == 1013 and srv.broker.dropped == 1
        newest = srv.mainloop.committed_seq
        async with open_websocket_url(url + f"&from_seq={seqs[-1]}") as ws:
            with trio.fail_after(10):
                while seqs[-1] < newest:
                    seqs.append(orjson.loads(await ws.get_message())["seq"])
    assert seqs == list(range(1, newest + 1))


async def test_a_broken_stream_ends_its_own_client_alone(start_server, caplog):
    """A subscriber whose stream breaks while an event is written to it (here a memory stream that raises)
    ends as a failed send_message did: ConnectionClosed, quietly, and out of the broker; another one, and the
    server, go on."""
    caplog.set_level(logging.INFO, logger="syncledger")
    srv = await start_server()
    url = f"ws://127.0.0.1:{srv.ports.ws}/events?token={admin_token(srv)}"
    client_end, server_end = trio.testing.memory_stream_pair()
    async with tcp_client(srv) as c, open_websocket_url(url) as other, trio.open_nursery() as nursery:
        login = await add_account(c)
        nursery.start_soon(ws_module.serve_stream, srv, server_end)
        broken = await wrap_client_stream(nursery, client_end, "x", f"/events?token={admin_token(srv)}")
        with trio.fail_after(5):
            while len(srv.broker.subscribers) < 2:
                await trio.sleep(0.01)

        async def broken_pipe() -> None:
            raise trio.BrokenResourceError("the peer is gone")
        server_end.send_stream.send_all_hook = broken_pipe
        first = srv.mainloop.committed_seq + 1
        await _credits(c, login, 50)
        with trio.fail_after(5):
            seqs = [orjson.loads(await other.get_message())["seq"] for _ in range(50)]
            while len(srv.broker.subscribers) > 1:
                await trio.sleep(0.01)
        assert (await c.call("Ping")).ok
        nursery.cancel_scope.cancel()
    assert seqs == list(range(first, first + 50))
    assert broken is not None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("websocket client closed" in r.getMessage() and "(1006)" in r.getMessage() for r in caplog.records)


async def test_without_trio_websocket_internals_events_go_one_message_each(start_server, monkeypatch, caplog):
    """If trio-websocket no longer has what _frame_writer uses, it says so once and events go one
    send_message each, as before: the same frames on the wire."""
    monkeypatch.setattr(ws_module, "_TRIO_WEBSOCKET", (*ws_module._TRIO_WEBSOCKET, "_gone"))
    ws_module._one_at_a_time.cache_clear()
    srv = await start_server(max_subscribers_per_login=8)
    async with tcp_client(srv) as c:
        login = await add_account(c)
        await _credits(c, login, 120)
        subs = [await _raw_subscriber(srv, "from_seq=0") for _ in range(2)]
        await _credits(c, login, 30)
    expected = _as_send_message_framed_them(await _event_lines(srv))
    for stream, _, got in subs:
        with trio.fail_after(5):
            while len(got) < len(expected):
                got += await stream.receive_some()
        assert bytes(got) == expected
        await stream.aclose()
    said = [r.getMessage() for r in caplog.records if "one message at a time" in r.getMessage()]
    assert said == ["websocket events are sent one message at a time (trio-websocket has no _gone)"]
    ws_module._one_at_a_time.cache_clear()


async def test_refused_upgrades_are_counted_by_reason(start_server, monkeypatch):
    """Each refusal at the handshake (404, 401, 403, 400, 429, 503) is counted on the ws listener's gate, by
    reason, as the listeners' own refusals are (syncledger_refused_connections_total)."""
    srv = await start_server(max_subscribers_per_login=1)
    base = f"ws://127.0.0.1:{srv.ports.ws}"
    token, user = admin_token(srv), admin_token(srv, session=SESSION_USER)

    async def refused(path: str) -> int:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(base + path):
                pass
        return rejected.value.status_code
    assert await refused(f"/other?token={token}") == 404
    assert await refused("/events?token=nope") == 401
    assert await refused("/events") == 401
    assert await refused(f"/events?token={user}") == 403
    assert await refused(f"/events?token={token}&from_seq=x") == 400
    assert await refused(f"/events?token={token}&from_seq=99") == 400  # (beyond the newest event)
    async with open_websocket_url(f"{base}/events?token={token}"):
        assert await refused(f"/events?token={token}") == 429

    async def shutting_down(wanted: int) -> int:
        raise ShuttingDown()
    monkeypatch.setattr(srv, "newest_seq", shutting_down)
    assert await refused(f"/events?token={token}&from_seq=0") == 503
    assert srv.gates["ws"].refusals == {"not_found": 1, "unauthorized": 2, "forbidden": 1, "bad_request": 2,
                                        "too_many_subscribers": 1, "shutting_down": 1}
    assert not any(gate.refusals for name, gate in srv.gates.items() if name != "ws")
    srv.metrics.registry.collect()
    sample = srv.metrics.registry.get_sample_value
    assert sample("syncledger_refused_connections_total", {"listener": "ws", "reason": "unauthorized"}) == 2
    assert sample("syncledger_refused_connections_total", {"listener": "ws", "reason": "cap"}) == 0
    assert sample("syncledger_refused_connections_total", {"listener": "tcp", "reason": "unauthorized"}) is None


async def _reset(stream: trio.SocketStream) -> None:
    """Close with RST, the way a crashed client goes away."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def test_a_subscriber_reset_mid_stream_ends_alone(start_server, caplog):
    """Real sockets: of three subscribers, one resets while large pieces flow; the two others get every event,
    nothing is logged as a failure."""
    caplog.set_level(logging.INFO, logger="syncledger")
    srv = await start_server(max_subscribers_per_login=8)
    async with tcp_client(srv) as c:
        login = await add_account(c)
        subs = [await _raw_subscriber(srv, "") for _ in range(3)]
        with trio.fail_after(5):
            while len(srv.broker.subscribers) < 3:
                await trio.sleep(0.01)
        live_from = srv.mainloop.committed_seq
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_credits, c, login, 1000, 250)
            await trio.sleep(0.005)
            await _reset(subs[0][0])
        expected = _as_send_message_framed_them(await _event_lines(srv, live_from))
        for stream, _, got in subs[1:]:
            with trio.fail_after(5):
                while len(got) < len(expected):
                    got += await stream.receive_some()
            assert bytes(got) == expected
            await stream.aclose()
        with trio.fail_after(5):
            while srv.broker.subscribers:
                await trio.sleep(0.01)
        assert (await c.call("Ping")).ok
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_large_piece_is_sent_in_segments_of_whole_frames_and_a_drop_stops_after_one():
    """A batch's frames over SEGMENT bytes go in sends of whole frames, SEGMENT at most: the same bytes in all;
    a subscriber dropped while one is out is sent no more (its close, 1013, waits on that one alone)."""
    lines = [b'{"event":"trade:event","type":7,"seq":%d,"data":{"comment":"%s"}}' % (i, b"x" * 250)
             for i in range(1, 1201)]
    piece = ws_module.frames(b"".join(line + b"\r\n" for line in lines))
    assert bytes(piece) == _as_send_message_framed_them(lines) and len(piece) > 4 * ws_module.SEGMENT
    for dropped in (False, True):
        sub = ws_module.WsSubscriber(16384, 16 << 20)
        assert sub.offer(piece, len(lines))
        sub.outbox.close()  # (nothing more: _send_events ends once it is sent)
        sent: list[bytes] = []

        async def write(data) -> None:
            sent.append(bytes(data))
            if dropped:
                sub.drop("too slow")
        await ws_module._send_events(None, sub, write)
        assert all(len(segment) <= ws_module.SEGMENT for segment in sent)
        assert all(_frames(segment)[-1][2] for segment in sent)  # (each ends with a whole frame)
        if dropped:
            assert len(sent) == 1 and piece.startswith(sent[0])
        else:
            assert len(sent) == len(piece.cuts) + 1 >= 5 and b"".join(sent) == piece
            assert sub.outbox.buffered == 0
