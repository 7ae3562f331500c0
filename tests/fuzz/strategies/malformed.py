"""Manager inputs whose line itself is broken: truncated, not UTF-8, nested deep, binary, not an
object, oversized or at the 64 KiB boundary, blank, holding a NaN, a lone surrogate or a repeated key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies.commands import COMMANDS, TRADE_EVENT, Call, Case, Closed, Expect, Fixed, Oracle, Req, Silent
from tests.fuzz.strategies.constants import MAX_LINE
from tests.fuzz.strategies.drafts import EMPTY_FIELDS, _field_spec
from tests.fuzz.strategies.json_text import MISSING, Lit, Pairs, enc, json_values, text
from tests.fuzz.strategies.lines import protocol_expect
from tests.fuzz.strategies.manager_cases import _case, _cuts, compose, encode_line, ends, styles, valid_request
from tests.fuzz.strategies.tokens import ADMIN
from tests.fuzz.strategies.values import NON_FINITE


@st.composite
def case_truncated(draw: st.DrawFn) -> Case:
    req, *_ = draw(valid_request())
    full = encode_line(req, draw(styles))
    cut = draw(st.integers(1, len(full) - 1))  # the closing brace is always cut off
    end = draw(ends)
    line = full[:cut]
    return Case(line, end, Expect([Fixed(400, "INVALID_JSON", None)]), draw(_cuts(len(line) + len(end))),
                "truncated")


BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80",
            b"\xf4\x90\x80\x80", b"\xc3", b"\xe9", b"\xff\xfe", b"\xef\xbb"]


@st.composite
def case_non_utf8(draw: st.DrawFn) -> Case:
    req, *_ = draw(valid_request())
    full = encode_line(req, (draw(st.booleans()), True))
    at = draw(st.integers(0, len(full)))
    line = full[:at] + draw(st.sampled_from(BAD_UTF8)) + full[at:]
    end = draw(ends)
    return Case(line, end, Expect([Fixed(400, "INVALID_JSON", None)]), draw(_cuts(len(line) + len(end))),
                "non-utf8")


def _nest(kind: str, depth: int) -> Lit:
    if kind == "list":
        return Lit("[" * depth + "]" * depth)
    return Lit('{"a":' * depth + "1" + "}" * depth)


@st.composite
def case_deep(draw: st.DrawFn) -> Case:
    """Deep nesting: shallow enough to parse, or far deeper than the parser's recursion limit."""
    kind = draw(st.sampled_from(["list", "dict"]))
    deep = draw(st.booleans())
    depth = draw(st.integers(5000, 9000) if deep else st.integers(1, 60))
    nest = _nest(kind, depth)
    where = draw(st.sampled_from(["extra", "data", "field", "line", "ext"]))
    command = draw(st.sampled_from([c for c in COMMANDS if c not in EMPTY_FIELDS]))
    req, call, draft, (_, ext), tok = draw(valid_request(command=command))
    if where == "extra":
        req = replace(req, data={**req.data, "zz": nest})
        expect = compose(command, ext, tok, None, call, draft.ambiguous)
    elif where == "data":
        req = replace(req, data=nest)
        expect = Expect([Fixed(400, "INVALID_DATA", ext, ("data",))])
        if kind == "dict":  # {"a": {...}} is an object: its fields are missing
            expect = compose(command, ext, tok, "data", call)
    elif where == "field":
        name = draw(st.sampled_from(sorted(_field_spec(command))))
        req = replace(req, data={**req.data, name: nest})
        expect = compose(command, ext, tok, "data", call, where=(name,))
    elif where == "ext":
        req = replace(req, ext_id=nest)
        expect = Expect([Fixed(400, "INVALID_REQUEST", None)])
    else:
        req = None
        expect = Expect([Fixed(400, "INVALID_REQUEST", None)])
    # (too deep to parse: protocol_expect answers INVALID_JSON with the extID when it can be read)
    if req is None:
        line = str(nest).encode()
        end = draw(ends)
        return Case(line, end, expect, draw(_cuts(len(line) + len(end))), f"deep:{where}:{deep}")
    return _case(req, expect, f"deep:{where}:{deep}", draw)


def _classify(raw: bytes) -> Expect | None:
    """What the server must answer to an arbitrary line (None: the bytes happen to make a request)."""
    if not raw.strip():
        return Expect([Silent()])
    alts, _ = protocol_expect(raw)
    return None if alts is None else Expect(alts)


@st.composite
def case_binary(draw: st.DrawFn) -> Case:
    raw = draw(st.one_of(st.binary(max_size=120), st.sampled_from([b"", b" ", b"\t", b"\r", b" \t ", b"{", b"}",
                                                                 b"[", b"\"", b"\x00", b"null", b"{}"]))
               .map(lambda b: b.replace(b"\n", b"")))
    expect = _classify(raw)
    if expect is None:  # a request: make it an array
        raw, expect = b"[" + raw + b"]", Expect([Fixed(400, "INVALID_REQUEST", None)])
    end = draw(ends)
    return Case(raw, end, expect, draw(_cuts(len(raw) + len(end))), "binary")


@st.composite
def case_non_object(draw: st.DrawFn) -> Case:
    value = draw(st.one_of(st.lists(json_values, max_size=4), text(max_size=20), st.integers(-(2**80), 2**80),
                           st.booleans(), st.none(), st.sampled_from([Lit("1.5"), Lit("-0"), Lit("1e400")]),
                           st.just([{"command": "Ping", "__token": ADMIN.raw}])))
    line = enc(value, ascii_only=draw(st.booleans())).encode()
    end = draw(ends)
    return Case(line, end, Expect([Fixed(400, "INVALID_REQUEST", None)]), draw(_cuts(len(line) + len(end))),
                "non-object")


def _padded_ping(size: int, ext: str = "edge") -> bytes:
    head = b'{"command":"Ping","extID":"' + ext.encode() + b'","__token":"' + ADMIN.raw.encode() + b'","pad":"'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


PING_CALL = Call("Ping", (), ADMIN.login, ADMIN.session, "edge")


@st.composite
def case_oversized(draw: st.DrawFn) -> Case:
    """A line over 64 KiB: 400 LINE_TOO_LONG, then the connection is closed."""
    size = draw(st.one_of(st.integers(MAX_LINE + 2, MAX_LINE + 100), st.integers(MAX_LINE + 2, 5 * MAX_LINE)))
    filler = draw(st.sampled_from(["ping", "json", "binary"]))
    if filler == "ping":
        line = _padded_ping(size)
    elif filler == "json":
        line = b'{"command":"CreditIn","data":{"comment":"' + b"y" * size + b'"}}'
    else:
        line = bytes(draw(st.binary(min_size=1, max_size=64)).replace(b"\n", b"")) or b"z"
        line = (line * (size // len(line) + 1))[:size]
    end = draw(st.sampled_from([b"\n", b"\r\n", b""]))
    return Case(line, end, Expect([Closed()]), draw(_cuts(len(line) + len(end))), f"oversized:{filler}")


@st.composite
def case_boundary(draw: st.DrawFn) -> Case:
    """A Ping padded to a line length around 64 KiB: up to 65,536 bytes it is served."""
    size = draw(st.integers(MAX_LINE - 3, MAX_LINE + 3))
    end = draw(ends)
    line = _padded_ping(size)
    if size <= MAX_LINE:
        expect = Expect([Oracle(PING_CALL, "edge")])
    else:
        expect = Expect([Closed()])
    return Case(line, end, expect, draw(_cuts(len(line) + len(end))), f"boundary:{size - MAX_LINE}")


@st.composite
def case_blank(draw: st.DrawFn) -> Case:
    line = draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"  \t  "]))
    return Case(line, draw(ends), Expect([Silent()]), (), "blank")


def _data_of(req: Req) -> dict:
    return dict(req.data) if isinstance(req.data, dict) else {}


LONE_SURROGATES = ["\ud800", "a\udfffb", "\udc00'", "O'Brien \ud83d", "\ud800\ud800"]


@st.composite
def case_non_finite(draw: st.DrawFn) -> Case:
    """NaN, Infinity or -Infinity somewhere in a request (in a field, an unknown field, deep in one, beside
    the envelope, as the token, the data, the command or the extID): protocol_expect decides the answer
    (400 INVALID_DATA naming where, with the extID, unless the envelope is wrong first)."""
    req, *_ = draw(valid_request())
    value: Any = Lit(draw(st.sampled_from(NON_FINITE)))
    where = draw(st.sampled_from(["field", "field", "field", "extra", "nested", "top", "token", "data", "command",
                                  "ext"]))
    data = _data_of(req)
    if where == "field":
        names = sorted(_field_spec(req.command)) or ["amount"]
        req = replace(req, data={**data, draw(st.sampled_from(names)): value})
    elif where == "extra":
        req = replace(req, data={**data, "zz": value})
    elif where == "nested":
        req = replace(req, data={**data, "zz": [1, {"x": value}], "yy": {"deep": [[value]]}})
    elif where == "top":
        req = replace(req, extra={"meta": value})
    elif where == "token":
        req = replace(req, token=value)
    elif where == "data":
        req = replace(req, data=value)
    elif where == "command":
        req = replace(req, command=value)
    else:
        req = replace(req, ext_id=value)
    return _case(req, Expect([]), f"non-finite:{where}", draw)


@st.composite
def case_surrogate(draw: st.DrawFn) -> Case:
    """A lone surrogate in a string of a request: a text field, an unknown field or its key, the token, the
    command, a channel name, the extID."""
    req, *_ = draw(valid_request())
    bad = draw(st.sampled_from(LONE_SURROGATES))
    where = draw(st.sampled_from(["field", "field", "extra", "key", "top-key", "token", "command", "ext", "list"]))
    data = _data_of(req)
    if where == "field":
        texts = [n for n in ("comment", "name", "password", "group", "email") if n in _field_spec(req.command)]
        req = replace(req, data={**data, draw(st.sampled_from(texts or ["comment"])): bad})
    elif where == "extra":
        req = replace(req, data={**data, "note": {"text": bad}})
    elif where == "key":
        req = replace(req, data={**data, bad: 1})
    elif where == "top-key":
        req = replace(req, extra={bad: "x"})
    elif where == "token":
        req = replace(req, token=bad)
    elif where == "command":
        req = replace(req, command=bad)
    elif where == "ext":
        req = replace(req, ext_id=bad)
    else:
        req = replace(req, data={**data, "chanels": [TRADE_EVENT, bad]})
    return _case(req, Expect([]), f"surrogate:{where}", draw)


@st.composite
def case_repeated_key(draw: st.DrawFn) -> Case:
    """A key given twice in one object (``"command":"Ping","command":"BalanceIn"``): INVALID_JSON, with the
    extID when the line names exactly one."""
    req, *_ = draw(valid_request())
    style = draw(styles)
    where = draw(st.sampled_from(["top", "top", "data", "nested"]))
    obj = {k: v for k, v in req.obj().items() if v is not MISSING}
    data = obj.get("data")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if v is not MISSING}
    if where == "nested" or (where == "data" and not (isinstance(data, dict) and data)):
        obj["data"] = {**(data if isinstance(data, dict) else {}), "zz": Pairs([("a", 1), ("a", 1)])}
    elif where == "data":
        key = draw(st.sampled_from(sorted(data)))
        again = draw(st.one_of(st.just(data[key]), json_values))
        pairs = list(data.items())
        pairs.insert(draw(st.integers(0, len(pairs))), (key, again))
        obj["data"] = Pairs(pairs)
    pairs = list(obj.items())
    if where == "top":
        key = draw(st.sampled_from(sorted(obj)))
        again = draw(st.one_of(st.just(obj[key]), st.sampled_from(["Ping", "BalanceIn", "x-2"]), json_values))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, again))
    line = enc(Pairs(pairs), ascii_only=style[0], compact=style[1]).encode()
    end = draw(ends)
    return Case(line, end, Expect([]), draw(_cuts(len(line) + len(end))), f"repeated-key:{where}")
