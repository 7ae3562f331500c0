"""Manager examples: the case kinds and their frequencies, a case settled by :func:`protocol_expect`,
the inputs written out for explicit examples, and a few inputs on one connection with retries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies.commands import FINANCE, SYNC, TRADE_EVENT, Case, Closed, Expect, Fixed, Oracle, Req, Silent
from tests.fuzz.strategies.drafts import Draft, draft_of
from tests.fuzz.strategies.json_text import MISSING
from tests.fuzz.strategies.lines import protocol_expect, readable_ext_id
from tests.fuzz.strategies.malformed import (case_binary, case_blank, case_boundary, case_deep, case_non_finite,
                                             case_non_object, case_non_utf8, case_oversized, case_repeated_key,
                                             case_surrogate, case_truncated)
from tests.fuzz.strategies.manager_cases import (_case, case_bad_envelope, case_bad_field, case_bad_token,
                                                 case_unknown_command, case_valid, compose, encode_line, make_call,
                                                 valid_request)
from tests.fuzz.strategies.tokens import ADMIN, Tok
from tests.fuzz.strategies.values import _opt

# Frequencies: valid requests first (hypothesis shrinks towards the first alternatives).
CASE_KINDS = ([case_valid] * 10 + [case_bad_token] * 3 + [case_bad_field] * 7 + [case_bad_envelope] * 2
              + [case_unknown_command] * 2 + [case_truncated] * 2 + [case_non_utf8] * 2 + [case_deep]
              + [case_binary] + [case_non_object] + [case_oversized] + [case_boundary] + [case_blank]
              + [case_non_finite] * 2 + [case_surrogate] * 2 + [case_repeated_key] * 2)


@st.composite
def manager_case(draw: st.DrawFn) -> Case:
    return settle(draw(draw(st.sampled_from(CASE_KINDS))()))


@st.composite
def case_subscribe(draw: st.DrawFn) -> Case:
    """A Subscribe as the admin (an example may start with one, so that the events of what follows are
    checked)."""
    req, call, draft, (_, ext), tok = draw(valid_request(command="Subscribe", tok=ADMIN))
    names = draw(st.sampled_from([[TRADE_EVENT], [TRADE_EVENT], [TRADE_EVENT, "EURUSD"], ["EURUSD", TRADE_EVENT]]))
    from_raw, from_seq = draw(_opt(st.integers(0, 16)))  # the seeds make events 1..16
    draft = Draft({"chanels": names, "from_seq": from_raw},
                  {"chanels": tuple(names), "channels": None, "from_seq": from_seq})
    req, call = replace(req, data=draft.data), make_call("Subscribe", draft, tok, ext)
    return _case(req, compose(req.command, ext, tok, None, call), "valid", draw, call)


def settle(case: Case) -> Case:
    """``case`` with the answer protocol_expect gives its line, when it gives one."""
    if case.expect.has(Closed) or case.expect.has(Silent):
        return case
    alts, beyond = protocol_expect(case.line)
    if alts is None:
        if not case.expect.alts or case.expect.alts == [Fixed(400, "INVALID_JSON", None)]:
            raise AssertionError(f"{case.label}: a line the generator made malformed parses: {case.line[:300]!r}")
    else:
        case.expect = Expect(alts)
        case.label += f">{alts[0].code.lower()}"
    if beyond:
        case.expect = Expect([Fixed(400, "INVALID_JSON", readable_ext_id(case.line))] + case.expect.alts)
        case.label += ">beyond-decimal"
    return case


def scripted(command: str, data: Any = MISSING, ext: Any = MISSING, tok: Tok = ADMIN, level: str | None = None,
             where: tuple = (), style: tuple = (False, True)) -> Case:
    """One input written out (the explicit examples of tests/fuzz/test_manager_fuzz.py): ``data`` valid unless ``level``
    says how it is not (then ``where`` is the field its refusal names)."""
    draft = draft_of(command, data if isinstance(data, dict) else {}) if level is None else Draft({}, {})
    call = make_call(command, draft, tok, ext if isinstance(ext, str) else None)
    req = Req(command, ext, data, tok.raw)
    expect = compose(command, call.ext_id, tok, level, call, where=where)
    line = encode_line(req, style)
    return settle(Case(line, b"\r\n", expect, (), "valid" if level is None else "scripted", req, call, style))


def flip_sync(case: Case) -> Case:
    """The same finance request in its other form (plain <-> …Sync), same extID: an idempotent replay."""
    req, call = case.req, case.call
    command = call.command[:-4] if call.command.endswith("Sync") else call.command + "Sync"
    new_call = replace(call, command=command)
    alts = [Oracle(new_call, a.echo) if isinstance(a, Oracle) else a for a in case.expect.alts]
    new_req = replace(req, command=command)
    return replace(case, line=encode_line(new_req, case.style), expect=Expect(alts), req=new_req, call=new_call,
                   cuts=(), label="retry:flip")


@st.composite
def manager_example(draw: st.DrawFn, max_size: int = 6) -> list[Case]:
    """A few inputs on one connection; some repeat an earlier finance request or AddUser (same extID), as a
    client retrying would."""
    cases = draw(st.lists(manager_case(), min_size=1, max_size=max_size))
    if draw(st.integers(0, 3)) == 0:
        cases.insert(0, settle(draw(case_subscribe())))
    out: list[Case] = []
    for case in cases:
        earlier = [c for c in out if c.label == "valid" and c.expect.has(Oracle)
                   and c.call.command in FINANCE + SYNC + ["AddUser"]]
        if earlier and draw(st.integers(0, 3)) == 0:
            again = draw(st.sampled_from(earlier))
            flip = again.call.command != "AddUser" and draw(st.booleans())
            out.append(flip_sync(again) if flip else replace(again, label="retry:same"))
        out.append(case)
    return out
