"""The HTTP/1.1 driver on httptools (llhttp, server/http.py Parser): llhttp's error paths mapped to
400/413/431/505, a body split across many reads, pipelined requests in one read, HTTP/1.0, HEAD, Upgrade."""

from __future__ import annotations

import pytest
import trio

from syncledger.server.http import CLOSED, END, NEED_DATA, Limits, Parser, ProtocolError, Request
from tests.server.test_http import _responses, _serve, post


def events(parser: Parser) -> list:
    out = []
    while (event := parser.next_event()) is not NEED_DATA:
        out.append(event)
        if event is CLOSED:
            break
    return out


def test_a_request_is_its_head_then_its_body_then_end():
    parser = Parser(16 * 1024)
    parser.receive_data(b"POST /v1/x?a=1 HTTP/1.1\r\nHost: t\r\nX-Token: AbC\r\nContent-Length: 5\r\n\r\nhello")
    request, body, end = events(parser)
    assert request == Request(b"POST", b"/v1/x?a=1", [(b"host", b"t"), (b"x-token", b"AbC"),
                                                       (b"content-length", b"5")], b"1.1", True, False)
    assert (body, end) == (b"hello", END) and parser.done


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),  # llhttp: invalid method
    (b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", 400),  # duplicate
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),  # smuggling
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),  # a bad chunk size
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n X: a\r\n\r\n", 400),  # obsolete line folding
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),  # one header, whole
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),  # HTTP/2 prior knowledge
    (b"GET / HTTP/3.0\r\n\r\n", 505),
])
def test_the_parser_maps_each_error_to_its_status(raw, status):
    parser = Parser(16 * 1024)
    parser.receive_data(raw)
    with pytest.raises(ProtocolError) as e:
        events(parser)
    assert e.value.status == status


def test_a_head_that_grows_over_many_reads_is_431_before_it_is_whole():
    parser = Parser(1000)
    parser.receive_data(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(20):
        parser.receive_data(b"a" * 100)  # llhttp hands a header over only when it is whole
    with pytest.raises(ProtocolError) as e:
        events(parser)
    assert e.value.status == 431


def test_pipelined_requests_in_one_read_keep_their_order_and_an_error_comes_after_them():
    parser = Parser(16 * 1024)
    parser.receive_data(post(b"a") + b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nbc\r\n0\r\n\r\n"
                        + b"GARBAGE\r\n\r\n")
    got = []
    with pytest.raises(ProtocolError):
        while (event := parser.next_event()) is not NEED_DATA:
            got.append(event.target if type(event) is Request else event)
    assert got == [b"/v1/x", b"a", END, b"/", b"bc", END]


async def test_a_chunked_body_split_across_many_reads_arrives_whole(autojump_clock):
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"k" * n) for n in range(1, 40)) + b"0\r\n\r\n"
    raw = b"POST /v1/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        for i in range(0, len(raw), 7):  # 7 bytes a read
            await client.send_all(raw[i:i + 7])
            await trio.sleep(0.001)
        assert await _responses(client, 1) == [200, b'{"n":%d}' % sum(range(1, 40))]
        await client.aclose()
    assert app.bodies == [b"".join(b"k" * n for n in range(1, 40))]


async def test_pipelined_requests_in_one_read_are_answered_in_order_then_the_bad_one_is_400(autojump_clock):
    client, server, app, stopping, http = await _serve()
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(b"".join(post(b"p" * i) for i in range(5)) + b"GARBAGE\r\n\r\n")
        got = await _responses(client, 6)
        assert got[:10] == [x for i in range(5) for x in (200, b'{"n":%d}' % i)] and got[10] == 400
        assert await client.receive_some(10) == b""
    assert app.bodies == [b"p" * i for i in range(5)]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_max_drain_is_413_and_closed(autojump_clock, chunked):
    client, server, app, stopping, http = await _serve(Limits(max_body=100, max_drain=1000))
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        if chunked:
            await client.send_all(b"POST /v1/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + b"400\r\n" + b"z" * 1024 + b"\r\n")
        else:
            await client.send_all(b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
        assert (await _responses(client, 1))[0] == 413
        assert await client.receive_some(10) == b""
    assert app.bodies == []


async def _exchange(raw: bytes) -> bytes:
    client, server, app, stopping, http = await _serve()
    got = b""
    async with trio.open_nursery() as n:
        n.start_soon(http.run)
        await client.send_all(raw)
        while data := await client.receive_some(65536):
            got += data
    return got


async def test_http_1_0_is_answered_and_closed(autojump_clock):
    got = await _exchange(b"POST /v1/x HTTP/1.0\r\nContent-Length: 2\r\n\r\nab")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in got and got.endswith(b'{"n":2}')


async def test_connection_close_from_the_client_is_honoured(autojump_clock):
    got = await _exchange(post(b"ab", extra=b"Connection: close\r\n") + post(b"never"))
    assert got.count(b"HTTP/1.1 200") == 1 and b"connection: close\r\n" in got


async def test_the_answer_to_a_head_request_is_its_head_alone(autojump_clock):
    got = await _exchange(b"HEAD /v1/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\n") and b"content-length: 7" in got


async def test_an_upgrade_is_answered_as_http_1_1_and_closed(autojump_clock):
    got = await _exchange(b"GET /v1/x HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                          + post(b"not served"))
    assert got.count(b"HTTP/1.1 200") == 1


def test_trailers_never_reach_the_judged_head_and_are_bounded():
    parser = Parser(1000)
    parser.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
                        b"Authorization: Bearer sneaked\r\n\r\n")
    request, body, end = events(parser)
    assert request.headers == [(b"transfer-encoding", b"chunked")] and (body, end) == (b"ab", END)
    parser = Parser(1000)
    parser.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-T: ")
    for _ in range(20):
        parser.receive_data(b"t" * 100)  # a trailer that never ends
    with pytest.raises(ProtocolError) as e:
        events(parser)
    assert e.value.status == 431
