"""The finance fast path (server/manager/fast.py) answers exactly as the usual path does: the same input lines
go to a server with the fast path on and to one with it off, and every line each writes back must be the same
bytes. The inputs are the manager fuzz corpus (hypothesis, ``S.manager_example``) and EDGE_CASES below.

Each run is a ``trio.run`` of its own on ``MockClock(autojump_threshold=0)`` from the same wall time, with the
fuzz server's seeded manager world: times, orders, tokens and events then repeat from run to run (only an
OpenGameSession's random sid is masked). Inputs go one at a time: an input, the server left to finish with it,
then a Ping probe; the lines written until the probe's answer are that input's (sorted: events and answers of
one input may come in either order)."""

from __future__ import annotations

import re
import time

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given

from syncledger.server import wire
from syncledger.server.manager import fast
from syncledger.server.testing import connect_memory
from tests.fuzz import strategies as S
from tests.fuzz.harness.manager import ManagerHarness, seed_manager_world
from tests.fuzz.harness.server import COUNTS, fuzz_settings, start_fuzz_server
from tests.fuzz.strategies.tokens import _EXPIRED, USER

EPOCH = int(time.time())  # wall time at the start of each run: the strategies' tokens valid, the expired ones expired
_SID = re.compile(rb'"sid":"[^"]*"')


CLOSED = b"(closed) "


async def _transcript(lines: list[bytes], fast_path: bool) -> list[list[bytes]]:
    """The lines the server writes for each input line (CLOSED and what was left: it closed the connection)."""
    out: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        srv = await start_fuzz_server(nursery, epoch=EPOCH)
        await seed_manager_world(ManagerHarness(srv))
        srv.dispatcher.fast = fast_path
        stream, buf = connect_memory(srv), bytearray()
        for i, line in enumerate(lines):
            probe = b'"extID":"probe-%d"' % i
            try:
                await stream.send_all(line)
                await trio.testing.wait_all_tasks_blocked()
                await stream.send_all(b'{"command":"Ping",%s,"__token":"%s"}\r\n' % (probe, S.ADMIN.raw.encode()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            got: list[bytes] = []
            while not got or probe not in got[-1]:
                while b"\n" not in buf and (data := await stream.receive_some(1 << 16)):
                    buf += data
                end = buf.find(b"\n") + 1
                if not end:
                    got.append(CLOSED + bytes(buf))
                    stream, buf = connect_memory(srv), bytearray()
                    break
                got.append(_SID.sub(b'"sid":"*"', bytes(buf[:end])))
                del buf[:end]
            out.append(sorted(got))
        nursery.cancel_scope.cancel()
    return out


def assert_alike(lines: list[bytes]) -> int:
    """Both paths answer ``lines`` byte for byte alike; returns how many of them the fast path took."""
    on = trio.run(_transcript, lines, True, clock=trio.testing.MockClock(autojump_threshold=0))
    off = trio.run(_transcript, lines, False, clock=trio.testing.MockClock(autojump_threshold=0))
    for line, a, b in zip(lines, on, off, strict=True):
        assert a == b, f"the fast path answers {line[:300]!r}\nwith  {a}\nrather than {b}"
    return sum(fast.finance_request(line.rstrip(b"\r\n")) is not None for line in lines)


@fuzz_settings(100)
@given(S.manager_example())
def test_fuzz_corpus_answers_alike(cases):
    COUNTS["fast-path"] += len(cases)
    COUNTS["fast-path taken"] += assert_alike([case.data for case in cases])


# ------------------------------------------------------------------------------------------- edge cases

TOKEN = S.ADMIN.raw.encode()


def finance(data: bytes, command: bytes = b"CreditIn", ext: bytes = b'"e"', token: bytes = b'"' + TOKEN + b'"',
            extra: bytes = b"") -> bytes:
    return b'{"command":"%s","extID":%s,"data":%s,"__token":%s%s}\r\n' % (command, ext, data, token, extra)


def credit(amount: bytes = b"1", comment: bytes = b'"x"', login: bytes = b"1000", more: bytes = b"") -> bytes:
    return finance(b'{"login":%s,"amount":%s,"comment":%s%s}' % (login, amount, comment, more))


COMMANDS = [b"BalanceIn", b"BalanceOut", b"CreditIn", b"CreditOut"]
AMOUNTS = [b"1", b"1.5", b"2.25", b'"1.5"', b'"300.0"', b"300.0", b"0", b"-0", b"-0.0", b"0.0", b"-1", b"-1.5",
           b"0.000001", b"0.0000001", b"1.0000000", b"1.50000000000000000000000000000000000000000000", b"1.0000001",
           b"1.10000000000000000000000000000000001", b"1e2", b"1E+2", b"1e-6", b"1e-7", b"1e400", b"-1e400",
           b"1e-400", b"1e99999999999999999999", b"9" * 50, b"9" * 5000, b"1000000000000", b"1000000000000.000001",
           b"1000000000000.000000", b"1000000000001", b"true", b"false", b"null", b"[]", b"{}", b"[1]", b"NaN",
           b"Infinity", b"-Infinity", b'"NaN"', b'"Infinity"', b"1.5e0", b"0.15e1", b"15e-1", b"00", b"01", b"1.",
           b".5", b"+1", b"0x10"]
LOGINS = [b"1000", b"1004", b"999999", b"0", b"-1", b"9223372036854775807", b"9223372036854775808", b"1000.0",
          b"1e3", b'"1000"', b"true", b"null", b"[1000]", b"-0", b"1" + b"0" * 4400]
COMMENTS = [b'""', b"5", b"null", b"true", b'["x"]', b'{"a":1}', b'"a:b"', b'"a:b:c:d"', b'"\\u0000"', b'"x\x00y"',
            b'"\\u00e9"', "\"\u00e9\u20ac\U0001F600\"".encode(), b'"\\ud83d\\ude00"', b'"\\ud800"', b'"\\udc00x"',
            b'"\\ud800\\ud800"', b'"' + b"x" * 255 + b'"', b'"' + b"x" * 256 + b'"', "\"{}\"".format("\u00e9" * 255).encode(),
            "\"{}\"".format("\u00e9" * 256).encode(), b'"' + b"\\ud83d\\ude00" * 255 + b'"',
            b'"' + b"\\ud83d\\ude00" * 256 + b'"', "\"{}\"".format("\U0001F600" * 255).encode(), b'"\\""', b'"\\\\"',
            b'"\\\\\\":"', b'"it\'s"', b'"' + b"a:" * 127 + b'"', b'"\\/\\b\\f\\n\\r\\t"', b'"\t"', b'"\\x41"',
            b'"\\u003a"', b'"NaN Infinity"', b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xef\xbb\xbf"',
            b'"' + b"y" * 60000 + b'"', b'"\x7f"', b'"\\U0041"']
OPTIONALS = [b'"order":1', b'"order":0', b'"order":null', b'"order":"1"', b'"order":1.0', b'"order":99999',
             b'"order":9223372036854775808', b'"open_time":0', b'"open_time":-1', b'"open_time":null',
             b'"open_time":1.5', b'"open_time":true', b'"close_time":9223372036854775807',
             b'"close_time":9223372036854775808', b'"open_time":1700000000,"close_time":1700000001',
             b'"order":2,"open_time":5,"close_time":6', b'"zz":1', b'"zz":[1,[2,{"a":3}]]', b'"zz":{}', b'"zz":[]',
             b'"zz":{"a":{"b":1}}', b'"zz":' + b"[" * 3000 + b"]" * 3000, b'"zz":' + b'{"a":' * 50 + b"1" + b"}" * 50,
             b'"Login":5', b'"zz":"\\ud800"', b'"zz":NaN', b'"zz":1e400', b'"zz":' + b"9" * 5000]
REPEATS = [  # a key given twice, at each level, written every way that could hide it from a count of colons
    b'{"command":"Ping","command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x"},"__token":"%s","command":"Ping"}',
    b'{"command":"CreditIn","extID":"e","extID":"f","data":{"login":1000,"amount":1,"comment":"x"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"a:b","data":{"login":1000,"amount":1,"comment":"x"},"data":{"login":1000,'
    b'"amount":2,"comment":"y"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x"},"__token":"%s","__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"login":1001,"amount":1,"comment":"x"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"amount":1,"comment":"x"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"a:b","comment":"c"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e:f","data":{"login":1000,"amount":1,"comment":"a:b","comment":"c"},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"\\u006cogin":1000,"amount":1,"comment":"x"},'
    b'"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e\\u003a","data":{"login":1000,"amount":1,"amount":1,"comment":"x"},'
    b'"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"\\":","comment":"x"},'
    b'"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x","zz":{"a":1,"a":2}},'
    b'"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x","zz":[{"a":1,"a":2}]},'
    b'"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x","zz":1,"zz":2},"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x","a:b":1,"a:b":2},'
    b'"__token":"%s"}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x"},"__token":"%s","x":{"y":1,'
    b'"y":1}}',
    b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x"},"__token":"%s","x":1,"x":1}',
    b'{"command":"DeleteBalance","extID":"e","data":{"order":1,"order":2},"__token":"%s"}',
    b'{"command":"BalanceIn","extID":"e","data":{"login":1000,"amount":1},"data":{"login":1000,"amount":1},'
    b'"__token":"%s"}',
]


def _repeats() -> list[bytes]:
    return [line.replace(b"%s", TOKEN) + b"\r\n" for line in REPEATS]


def edge_cases() -> list[bytes]:
    lines = []
    for command in COMMANDS:
        for sync in (b"", b"Sync"):
            lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}', command + sync),
                      finance(b'{"login":1000,"amount":2}', command + sync)]  # comment: default, or required
            lines += [finance(b'{"login":1001,"amount":0.5,"comment":"y","order":%d}' % order, command + sync)
                      for order in (1, 2, 4, 99999)]  # an update of an order
    for command in (b"DeleteBalance", b"DeleteCredit"):
        for sync in (b"", b"Sync"):
            lines += [finance(b'{"order":%d}' % order, command + sync) for order in (1, 2, 4, 5, 99999)]
            lines += [finance(data, command + sync) for data in (b'{"order":"1"}', b'{"order":1.0}', b"{}",
                                                                   b'{"order":0}', b'{"order":true}', b'{"login":1000}')]
    lines += [credit(amount) for amount in AMOUNTS]
    lines += [finance(b'{"login":1000,"amount":%s}' % amount, b"BalanceIn") for amount in AMOUNTS]
    lines += [credit(login=login) for login in LOGINS]
    lines += [credit(comment=comment) for comment in COMMENTS]
    lines += [credit(more=b"," + more) for more in OPTIONALS]
    lines += [finance(data) for data in (b"[]", b'"x"', b"1", b"null", b"{}", b'{"login":1000}', b'{"amount":1}',
                                          b'{"login":1000,"amount":1}', b'{"comment":"x"}')]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}').replace(b',"data"', b"")]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}', ext=ext) for ext in (
        b"null", b'""', b'"' + b"e" * 256 + b'"', b'"' + b"e" * 257 + b'"', b"5", b'["e"]', b'"a:b"', b'"\\ud800"',
        b'"\\u00e9"', "\"\u00e9\"".encode(), b'"\\u0000"', b'"' + b"\\u00e9" * 256 + b'"')]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}').replace(b'"extID":"e",', b"")]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}', token=token) for token in (
        b"null", b"5", b'""', b'"garbage"', b'"' + _EXPIRED[0].encode() + b'"', b'"' + USER.raw.encode() + b'"',
        b'"\\ud800"', b'{"t":1}')]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}').replace(b',"__token":"' + TOKEN + b'"', b"")]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}', extra=extra) for extra in (
        b',"foo":"bar"', b',"Command":"Ping"', b',"x":{"y":[1,{}]}', b',"x":NaN', b',"x":"\\udfff"', b',"x":1e400')]
    lines += [finance(b'{"login":1000,"amount":1,"comment":"x"}', command) for command in (
        b"creditin", b"CreditIn ", b"CreditInsync", b"Credit\\u0049n", b"", b"Ping")]
    good = credit().rstrip(b"\r\n")
    lines += [b"  " + good + b" \t\r\n", b"\t" + good + b"\n", good.replace(b",", b" ,\r ") + b"\r\n",
              b"\xef\xbb\xbf" + good + b"\r\n", good[:-1] + b",}\r\n", good + b"x\r\n", good + good + b"\r\n",
              good + b"\x00\r\n", b"\x00" + good + b"\r\n", good[:-5] + b"\r\n", b"\x0c" + good + b"\r\n",
              b'{"command":"CreditIn","extID":"e","data":{"login":1000,"amount":1,"comment":"x"},"__token":"'
              + TOKEN + b'"}\r\n', b"\r\n", b'["CreditIn"]\r\n', b'"CreditIn"\r\n']
    lines += _repeats()
    return [line.replace(b'"extID":"e"', b'"extID":"e%d"' % i) for i, line in enumerate(lines)]  # one key each


def test_edge_cases_answer_alike():
    lines = edge_cases()
    taken = assert_alike(lines)
    assert len(lines) > 300 and taken > 60, (len(lines), taken)  # both paths are well exercised
    COUNTS["edge cases"] += len(lines)
    COUNTS["edge cases taken"] += taken


def test_the_comparison_sees_a_divergence(monkeypatch):
    """A fast path that misses a repeated key answers otherwise, and the comparison says so."""
    monkeypatch.setattr(fast, "no_repeated_key", lambda line, members: True)
    try:
        assert_alike(_repeats())
    except AssertionError as e:
        assert "the fast path answers" in str(e)
    else:
        raise AssertionError("a fast path that accepts repeated keys went unnoticed")


@pytest.mark.parametrize("text", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":"\\ud800"}',
                                  b'{"a":"\\udc00x"}', b'{"a":"\\ud800\\ud800"}', b'{"\\udfff":1}'])
def test_msgspec_refuses_what_invalid_value_names(text):
    """The fast paths do without wire.invalid_value: msgspec itself refuses NaN, the infinities and lone
    surrogates."""
    with pytest.raises(msgspec.DecodeError):
        wire.fast_decode(text)
