"""The wallet's HTTP/1.1 driver (server/http.py): framing, keep-alive, pipelining, the head checked before
the body, deadlines and limits. Memory streams under MockClock, then the real wallet on a real socket."""

from __future__ import annotations


import pytest
import trio
import trio.testing

from syncledger.server.http import HttpConnection, Limits, Request, Response


class EchoApp:
    """Answers with the body it got; refuses the path /refused from the head alone."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived: list[bytes | None] = []

    def head(self, request: Request, arrived: bytes | None) -> Response | None:
        self.arrived.append(arrived)
        if request.target == b"/refused":
            return Response(401, b'{"refused":true}', close=True)
        if request.target == b"/refused-kept":
            return Response(403, b'{"refused":true}')
        return None

    def too_large(self, request: Request) -> Response:
        return Response(200, b'{"too":"large"}')

    async def handle(self, request: Request, body: bytes) -> Response:
        self.bodies.append(body)
        return Response(200, b'{"n":%d}' % len(body))


def post(body: bytes, target: bytes = b"/v1/x", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (target, len(body), extra, body)


async def _serve(limits: Limits | None = None, app: EchoApp | None = None):
    client, server = trio.testing.memory_stream_pair()
    app = app or EchoApp()
    stopping = trio.Event()
    return client, server, app, stopping, HttpConnection(server, app, limits or Limits(), stopping)


async def _responses(client: trio.abc.Stream, n: int) -> list[int | bytes]:
    """Read n responses as [status, body, status, body, ...] (fewer if the server closes first)."""
    buf, out = b"", []
    while len(out) < 2 * n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1").split("\r\n")
            length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
            if len(buf) >= head_end + 4 + length:
                out += [int(head[0].split()[1]), buf[head_end + 4:head_end + 4 + length]]
                buf = buf[head_end + 4 + length:]
                continue
        data = await client.receive_some(65536)
        if not data:
            break
        buf += data
    return out


async def test_keep_alive_and_pipelining(autojump_clock):
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        for i in range(50):  # one connection, many requests
            await client.send_all(post(b"x" * i))
            assert await _responses(client, 1) == [200, b'{"n":%d}' % i]
        await client.send_all(b"".join(post(b"y" * i) for i in range(10)))  # pipelined
        got = await _responses(client, 10)
        assert got == [x for i in range(10) for x in (200, b'{"n":%d}' % i)]
        await client.aclose()
    assert len(app.bodies) == 60


async def test_a_body_split_anywhere_arrives_whole(autojump_clock):
    raw = post(b'{"uuid":"u","transaction":{"id":"t","amount":"1.5"}}')
    for k in range(1, len(raw)):
        client, server, app, stopping, http = await _serve()
        async with trio.open_nursery() as n:
            n.start_soon(http.run)
            await client.send_all(raw[:k])
            await trio.sleep(0.01)
            await client.send_all(raw[k:])
            assert (await _responses(client, 1))[0] == 200
            await client.aclose()
        assert app.bodies == [raw.split(b"\r\n\r\n", 1)[1]]


async def test_the_head_is_answered_before_the_body_is_read(autojump_clock):
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(b"POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\n\r\n")  # no body
        assert await _responses(client, 1) == [401, b'{"refused":true}']
        assert await client.receive_some(10) == b""  # and closed: the body is never read
    assert app.bodies == []


@pytest.mark.parametrize("raw, status", [
    (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),  # HTTP/2 prior knowledge: HTTP/1.1 only
    (b"GARBAGE\r\n\r\n", 400),
    (post(b"", extra=b"Content-Length: 5\r\n"), 400),
])
async def test_bad_framing_is_answered_and_closed(autojump_clock, raw, status):
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(raw)
        assert (await _responses(client, 1))[0] == status
        assert await client.receive_some(10) == b""


async def test_a_large_body_is_drained_and_answered_a_huge_one_is_413(autojump_clock):
    limits = Limits(max_body=100, max_drain=1000)
    client, server, app, stopping, http = await _serve(limits)
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(post(b"z" * 500))
        assert await _responses(client, 1) == [200, b'{"too":"large"}']
        await client.send_all(post(b"ok"))  # the connection is still good
        assert await _responses(client, 1) == [200, b'{"n":2}']
        await client.send_all(post(b"z" * 5000))
        assert (await _responses(client, 1))[0] == 413
    assert app.bodies == [b"ok"]


async def test_deadlines_for_head_body_and_idle(autojump_clock):
    limits = Limits(head_timeout=10, body_timeout=10, idle_timeout=75)
    for raw, lasts in ((b"POST /v1/x HTTP/1.1\r\nHost", 10),  # slowloris head
                       (post(b"x" * 100)[:-50], 10),  # stops mid-body
                       (b"", 60)):  # idle before any request: untrusted_idle
        client, server, app, stopping, http = await _serve(limits)
        async with trio.open_nursery() as n:
            n.start_soon(http.run)
            start = trio.current_time()
            if raw:
                await client.send_all(raw)
            assert await client.receive_some(10) == b""
            assert lasts <= trio.current_time() - start < lasts + 1
        assert app.bodies == []


async def test_only_a_connection_whose_request_passed_its_head_may_idle_long(autojump_clock):
    """Untrusted (no request has passed the app's head(), the token check): closed after untrusted_idle;
    a kept-alive connection of a caller who passed: after idle_timeout."""
    limits = Limits(idle_timeout=75, untrusted_idle=20)
    for requests, lasts in ((0, 20), (1, 75)):
        client, server, app, stopping, http = await _serve(limits)
        async with trio.open_nursery() as n:
            n.start_soon(http.run)
            for _ in range(requests):
                await client.send_all(post(b"x"))
                assert (await _responses(client, 1))[0] == 200
            start = trio.current_time()
            assert await client.receive_some(10) == b""
            assert lasts <= trio.current_time() - start < lasts + 1


async def test_a_refused_request_slows_the_connection_that_sent_it(autojump_clock):
    """Refusals at the head (a page of another site in a loop) on a kept-alive connection: each answered at
    once, the next request read refusal_pause later; a request that passed the head is not paced, and a
    shutdown ends a pause at once."""
    client, server, app, stopping, http = await _serve(Limits(refusal_pause=0.5))
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        start = trio.current_time()
        await client.send_all(post(b"", b"/refused-kept") * 4 + post(b"a") * 2)
        assert (await _responses(client, 6))[::2] == [403] * 4 + [200] * 2
        assert trio.current_time() - start == pytest.approx(4 * 0.5)
        await client.send_all(post(b"", b"/refused-kept"))
        assert (await _responses(client, 1))[0] == 403
        stopping.set()
        for scope in list(http.idle):  # as HttpServer's shutdown does
            scope.cancel()
        assert await client.receive_some(10) == b""
    assert trio.current_time() - start < 2.5


async def test_bytes_do_not_extend_a_head_deadline(autojump_clock):
    client, server, app, stopping, http = await _serve(Limits(head_timeout=10))
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        start = trio.current_time()
        await client.send_all(b"POST /v1/x HTTP/1.1\r\n")
        with trio.move_on_after(30):
            try:
                while True:
                    await trio.sleep(1)
                    await client.send_all(b"X-A: b\r\n")
            except trio.BrokenResourceError:
                pass
        assert 10 <= trio.current_time() - start < 12


async def test_shutdown_closes_idle_connections_and_finishes_calls(autojump_clock):
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(post(b"a"))
        assert (await _responses(client, 1))[0] == 200
        stopping.set()
        await client.send_all(post(b"b"))  # one more call in flight is answered, with Connection: close
        assert (await _responses(client, 1))[0] == 200
        assert await client.receive_some(10) == b""


# ---- the wallet on a real socket


async def test_the_wallet_answers_an_unauthenticated_call_without_reading_its_body(syncledger):
    stream = await trio.open_tcp_stream("127.0.0.1", syncledger.ports.wallet)
    await stream.send_all(b"POST /v1/debit HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n")
    got = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(4096):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and b'"status":"INVALID_TOKEN_ID"' in got
    await stream.aclose()


async def test_the_wallet_is_http_1_1_only(syncledger):
    stream = await trio.open_tcp_stream("127.0.0.1", syncledger.ports.wallet)
    await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    with trio.fail_after(5):
        got = await stream.receive_some(4096)
    assert got.startswith(b"HTTP/1.1 505")
    await stream.aclose()


async def test_expect_100_continue_is_answered(autojump_clock):
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        with trio.fail_after(0.5):  # .NET and curl wait a second for this before sending the body
            assert (await client.receive_some(100)).startswith(b"HTTP/1.1 100 Continue\r\n")
        await client.send_all(b"hello")
        assert await _responses(client, 1) == [200, b'{"n":5}']
        await client.aclose()


async def test_a_shutdown_closes_a_connection_waiting_for_its_next_request_at_once(autojump_clock):
    from syncledger.server.http import HttpServer
    client, server = trio.testing.memory_stream_pair()
    http = HttpServer(EchoApp())
    async with trio.open_nursery() as n:
        n.start_soon(http._connection, server)
        await client.send_all(post(b"a"))
        assert (await _responses(client, 1))[0] == 200
        start = trio.current_time()
        http.stop()
        assert await client.receive_some(10) == b""
        assert trio.current_time() - start < 0.1


async def test_wallet_calls_in_flight_at_shutdown_are_answered_whole(start_server):
    import httpx
    from tests.conftest import add_account, tcp_client
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, wallet_token="t")
        async with tcp_client(srv) as c:
            login = await add_account(c)
            await c.call("BalanceIn", {"login": login, "amount": 1000})
            sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
        answered, cut = [], []

        async def debit(i: int, http: httpx.AsyncClient) -> None:
            body = {"sid": sid, "userId": str(login), "currency": "EUR", "game": {"id": f"g{i}"},
                    "transaction": {"id": f"d{i}", "amount": 1}, "uuid": f"u{i}"}
            try:
                r = await http.post(f"http://127.0.0.1:{srv.ports.wallet}/v1/debit", params={"authToken": "t"},
                                    json=body)
                answered.append(r.json()["status"])
            except httpx.RemoteProtocolError as e:
                if "complete message body" in str(e):
                    cut.append(str(e))  # an answer cut in two: what the shutdown must never do
            except httpx.TransportError:
                pass  # not connected, or closed before its request was read: no answer, nothing applied

        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=300)) as http:
            async with trio.open_nursery() as calls:
                for i in range(300):
                    calls.start_soon(debit, i, http)
                while len(answered) < 30:
                    await trio.sleep(0.001)
                await srv.shutdown()
    assert not cut and answered and set(answered) <= {"OK", "TEMPORARY_ERROR"}


async def test_a_small_body_is_awaited_briefly_before_the_head_is_judged(autojump_clock):
    """So that a refusal can echo the body's uuid, yet a body that does not come costs at most a second."""
    head = b"POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n"
    for delay, arrived in ((0.5, b'{"u":"x"}'), (None, None)):
        client, server, app, stopping, http = await _serve()
        async with trio.open_nursery() as n:
            n.start_soon(http.run)
            start = trio.current_time()
            await client.send_all(head)
            if delay is not None:
                await trio.sleep(delay)
                await client.send_all(b'{"u":"x"}')
            assert (await _responses(client, 1))[0] == 401
            assert trio.current_time() - start <= 1.0
        assert app.arrived == [arrived]


async def _status_line(port: int, request: bytes) -> bytes:
    """The first line of the answer to ``request`` on a raw socket."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    got = b""
    with trio.fail_after(5):
        while b"\r\n" not in got and (chunk := await stream.receive_some(4096)):
            got += chunk
    await stream.aclose()
    return got.split(b"\r\n", 1)[0]


async def test_every_answer_has_its_reason_phrase(syncledger):
    """h2load and other strict clients count ``HTTP/1.1 200 `` (no phrase) as a failure: the wallet and the
    admin listener (one driver) give each status its standard phrase."""
    wallet, admin = syncledger.ports.wallet, syncledger.ports.admin
    cases = [
        (wallet, post(b'{"sid":"s","userId":"1"}', b"/v1/check"), b"HTTP/1.1 200 OK"),
        (wallet, post(b"{}", b"/v1/nothing"), b"HTTP/1.1 404 Not Found"),
        (wallet, b"GET /v1/credit HTTP/1.1\r\nHost: t\r\n\r\n", b"HTTP/1.1 405 Method Not Allowed"),
        (wallet, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"HTTP/1.1 505 HTTP Version Not Supported"),
        (wallet, b"POST /v1/check HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (admin, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % admin, b"HTTP/1.1 200 OK"),
        (admin, b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % admin, b"HTTP/1.1 404 Not Found"),
        (admin, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", b"HTTP/1.1 421 Misdirected Request"),  # not its name
    ]
    assert [await _status_line(port, request) for port, request, _ in cases] == [line for _, _, line in cases]
