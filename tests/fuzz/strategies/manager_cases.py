"""Manager inputs built from a valid request: valid, with a bad token, a bad field, a bad envelope or
an unknown command, each with the answer the contract gives it (:func:`compose`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies.commands import (ALLOWED, COMMANDS, FIELD_NAMES, FINANCE, SYNC, Call, Case, Expect, Fixed,
                                            Oracle, Req)
from tests.fuzz.strategies.drafts import DRAFTS, EMPTY_FIELDS, Draft, _field_spec, invalid_subscribe
from tests.fuzz.strategies.json_text import MISSING, Lit, enc, json_values, text
from tests.fuzz.strategies.tokens import Tok, bad_tokens, finance_tokens, good_tokens
from tests.fuzz.strategies.values import ext_ids, invalid_ext_ids


def compose(command: Any, echo: str | None, tok: Tok, level: str | None, call: Call | None,
            ambiguous: bool = False, where: tuple = ()) -> Expect:
    """The answer of a request with a valid envelope, following the server's order of checks: JSON, Login,
    unknown command, token (401), session type (403), data (400, naming ``where``), then the command itself.
    (A line that is not JSON, or holds a NaN or a lone surrogate, is answered before any of these: level
    "json" leaves its answer to protocol_expect.)"""
    if level == "json":
        return Expect([Fixed(400, "INVALID_JSON", None)])
    alts: list = []
    if command == "Login":
        main = Fixed(400, "INVALID_DATA", echo, where) if level else Oracle(call, echo)
    elif command not in COMMANDS:
        main = Fixed(404, "UNKNOWN_COMMAND", echo)
    elif tok.error:
        main = Fixed(401, tok.error, echo)
    elif tok.session not in ALLOWED[command]:
        main = Fixed(403, "FORBIDDEN", echo)
    elif level:
        main = Fixed(400, "INVALID_DATA", echo, where)
    else:
        main = Oracle(call, echo)
        if ambiguous:
            alts.append(Fixed(400, "INVALID_DATA", echo))
    return Expect(alts + [main])


def make_call(command: str, draft: Draft, tok: Tok, ext: str | None) -> Call:
    return Call(command, tuple(sorted(draft.fields.items())), tok.login, tok.session, ext)


def encode_line(req: Req, style: tuple[bool, bool]) -> bytes:
    return enc(req.obj(), ascii_only=style[0], compact=style[1]).encode()


styles = st.tuples(st.booleans(), st.booleans())
ends = st.sampled_from([b"\r\n", b"\n"])


CUT_COUNTS = st.sampled_from([0, 0, 0, 1, 2, 3])


def _cuts(size: int) -> st.SearchStrategy[tuple]:
    """Where to split ``size`` bytes into separate writes (mostly one write)."""
    if size < 2:
        return st.just(())
    return st.lists(st.integers(1, size - 1), max_size=3).map(lambda xs: tuple(sorted(set(xs))))


EXTRA_DATA = st.dictionaries(text(max_size=8).filter(lambda k: k not in FIELD_NAMES), json_values, min_size=1,
                             max_size=3)
EXTRA_TOP = st.dictionaries(text(max_size=8).filter(lambda k: k not in ("command", "extID", "data", "__token")),
                            json_values, min_size=1, max_size=2)
# Commands drawn more often than the others: the ones whose answer depends on what came before.
MORE_OFTEN = ["Subscribe", "Subscribe", "Subscribe", "Unsubscribe", "Unsubscribe", "AddUser", "AddUser", "GetUsers",
              "GetUsers"]
KEY_ORDERS = st.permutations(["command", "extID", "data", "__token"])
FINANCE_OR_GOOD = st.booleans()


@st.composite
def valid_request(draw: st.DrawFn, command: str | None = None, tok: Tok | None = None
                  ) -> tuple[Req, Call, Draft, tuple, Tok]:
    command = command or draw(st.sampled_from(COMMANDS + MORE_OFTEN))
    tok = tok or draw(finance_tokens if command in FINANCE + SYNC and draw(st.booleans()) else good_tokens)
    ext_raw, ext = draw(ext_ids)
    draft = draw(DRAFTS[command])
    if draft.ext is not None and draw(st.booleans()):
        ext_raw = ext = draft.ext
    data: Any = dict(draft.data)
    if command in EMPTY_FIELDS and (command == "Ping" or draw(st.integers(0, 4)) == 0):
        data = draw(st.sampled_from([MISSING, None, {}]))  # the same as {}
        draft = Draft({}, EMPTY_FIELDS[command])
    if draw(st.integers(0, 9)) == 0 and isinstance(data, dict):  # unknown fields are ignored
        data.update(draw(EXTRA_DATA))
    order = tuple(draw(KEY_ORDERS))
    extra = {}
    if draw(st.integers(0, 9)) == 0:
        extra = draw(EXTRA_TOP)
    req = Req(command, ext_raw, data, tok.raw, extra, order)
    return req, make_call(command, draft, tok, ext), draft, (ext_raw, ext), tok


def _case(req: Req, expect: Expect, label: str, draw: st.DrawFn, call: Call | None = None) -> Case:
    style = draw(styles)
    line = encode_line(req, style)
    if draw(st.integers(0, 7)) == 0:
        line = draw(st.sampled_from([b" ", b"\t", b"\r", b"  "])) + line + draw(st.sampled_from([b"", b" ", b"\t"]))
    end = draw(ends)
    return Case(line, end, expect, draw(_cuts(len(line) + len(end))), label, req, call, style)


@st.composite
def case_valid(draw: st.DrawFn) -> Case:
    req, call, draft, (_, ext), tok = draw(valid_request())
    return _case(req, compose(req.command, ext, tok, None, call, draft.ambiguous), "valid", draw, call)


@st.composite
def case_bad_token(draw: st.DrawFn) -> Case:
    tok = draw(bad_tokens)
    req, call, draft, (_, ext), _ = draw(valid_request(tok=tok))
    return _case(req, compose(req.command, ext, tok, None, call, draft.ambiguous), f"token:{tok.label}", draw, call)


@st.composite
def case_bad_field(draw: st.DrawFn) -> Case:
    """One field of the data replaced by a value of a wrong type or out of range, or left out."""
    command = draw(st.sampled_from([c for c in COMMANDS if c != "Ping"]))
    req, call, _, (_, ext), tok = draw(valid_request(command=command))
    data = dict(req.data) if isinstance(req.data, dict) else {}
    if command in ("Subscribe", "Unsubscribe"):
        bad, level, name = draw(invalid_subscribe)
        data = dict(bad)
        label = f"field:{command.lower()}"
    else:
        spec = _field_spec(command)
        name = draw(st.sampled_from(sorted(spec)))
        required, invalid = spec[name]
        if required and draw(st.integers(0, 4)) == 0:
            data[name], level, label = MISSING, "data", f"missing:{name}"
        else:
            data[name], level = draw(invalid)
            label = f"field:{name}:{level}"
    req = replace(req, data=data)
    return _case(req, compose(command, ext, tok, level, call, where=(name,)), label, draw)


@st.composite
def case_bad_envelope(draw: st.DrawFn) -> Case:
    """command, extID or data of a wrong type, or missing."""
    req, _, _, (_, ext), tok = draw(valid_request())
    what = draw(st.sampled_from(["command", "command-missing", "ext", "data", "data-empty"]))
    if what == "command":
        req = replace(req, command=draw(st.one_of(st.integers(-2, 2), st.none(), st.booleans(), st.just(""),
                                                  st.lists(st.just(req.command), max_size=2),
                                                  st.just({"name": req.command}), st.just(Lit("1.5")))))
        return _case(req, Expect([Fixed(400, "INVALID_REQUEST", ext)]), "envelope:command", draw)
    if what == "command-missing":
        req = replace(req, command=MISSING)
        return _case(req, Expect([Fixed(400, "INVALID_REQUEST", ext)]), "envelope:command", draw)
    if what == "ext":
        bad = draw(invalid_ext_ids)
        req = replace(req, ext_id=bad)
        # a string extID is echoed even when refused, so that the client can match the error
        echo = bad if type(bad) is str else None  # (Lit, a raw JSON literal, is a str subclass)
        return _case(req, Expect([Fixed(400, "INVALID_REQUEST", echo)]), "envelope:extID", draw)
    if what == "data":
        req = replace(req, data=draw(st.one_of(st.lists(json_values, max_size=3), text(max_size=10),
                                               st.integers(-5, 5), st.booleans(), st.just(Lit("1.5")))))
        return _case(req, Expect([Fixed(400, "INVALID_DATA", ext, ("data",))]), "envelope:data", draw)
    # no data, or null data: the same as {}
    req = replace(req, data=draw(st.sampled_from([MISSING, None, {}])))
    command = req.command
    level = None if command in EMPTY_FIELDS else "data"
    empty = make_call(command, Draft({}, EMPTY_FIELDS.get(command, {})), tok, ext)
    return _case(req, compose(command, ext, tok, level, empty), "envelope:no-data", draw, empty)


NEAR_MISSES = ["ping", "PING", "Ping ", " Ping", "PingSync", "LoginSync", "GetUserSync", "CreditInSyncSync",
               "Creditin", "creditIn", "Balance", "Sync", "__init__", "handle", "finance", "login", "commands",
               "Ping\u0000", "Ping\n", "AddUserSync", "SubscribeSync", "Delete", "DeleteOrder", "Ping\u01c3"]


@st.composite
def case_unknown_command(draw: st.DrawFn) -> Case:
    name = draw(st.one_of(st.sampled_from(NEAR_MISSES), text(min_size=1, max_size=60))
                .filter(lambda n: n not in COMMANDS))
    tok = draw(st.one_of(good_tokens, bad_tokens))
    req, _, _, (_, ext), _ = draw(valid_request(tok=tok))
    req = replace(req, command=name)
    return _case(req, Expect([Fixed(404, "UNKNOWN_COMMAND", ext)]), "unknown-command", draw)
