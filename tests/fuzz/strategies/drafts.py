"""The data of each manager command: a valid :class:`Draft` (raw and normalised fields) per command,
the normalised fields of concrete data, and each field's invalid values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache

from hypothesis import strategies as st

from tests.fuzz.strategies.commands import (ACCOUNT_PASSWORDS, FINANCE, MANAGERS, MAX_USERS, SYNC, TRADE_EVENT,
                                            base_command)
from tests.fuzz.strategies.constants import MAX_ID, U
from tests.fuzz.strategies.json_text import MISSING, Lit, _digits
from tests.fuzz.strategies.values import (ACCOUNT_PASSWORD_POOL, CHANNEL_NAMES, COMMENTS, EMAILS, FROM_SEQS, GROUPS,
                                          GROUP_NAMES, LEVERAGES, LOGIN_LOGINS, NAMES, NEW_LOGINS, NEW_PASSWORDS,
                                          OPT_COMMENTS, OPT_CURRENCIES, OPT_ORDERS, OPT_TIMES, PASSWORDS,
                                          SEED_ADD_USERS, _data, _opt, bad_literals, fractions, huge_ints,
                                          invalid_amount, invalid_currency, invalid_id, invalid_text, invalid_time,
                                          logins, orders, valid_amount, wrong_scalars)


@dataclass
class Draft:
    """Valid data of one command: the raw dict, the normalised fields, and field specs to mutate."""

    data: dict
    fields: dict
    ambiguous: bool = False
    ext: str | None = None  # an extID that goes with it (a seed's: its AddUser replayed)


def _finance_draft(command: str) -> st.SearchStrategy[Draft]:
    op = base_command(command)

    @st.composite
    def build(draw: st.DrawFn) -> Draft:
        if op.startswith("Delete"):
            order = draw(orders)
            return Draft({"order": order}, {"order": order})
        login = draw(logins)
        raw_amount, micro, ambiguous = draw(valid_amount)
        credit = op.startswith("Credit")
        comment = draw(COMMENTS) if credit else draw(OPT_COMMENTS)[0]
        order_raw, order = draw(OPT_ORDERS)
        open_raw, open_t = draw(OPT_TIMES)
        close_raw, close_t = draw(OPT_TIMES)
        data = {"login": login, "amount": raw_amount, "comment": comment, "order": order_raw,
                "open_time": open_raw, "close_time": close_raw}
        fields = {"login": login, "amount": micro, "comment": "Finance" if comment is MISSING else comment,
                  "order": order, "open_time": open_t, "close_time": close_t}
        return Draft(data, fields, ambiguous)

    return build()


@st.composite
def _login_draft(draw: st.DrawFn) -> Draft:
    login = draw(LOGIN_LOGINS)
    known = MANAGERS[login][0] if login in MANAGERS else ACCOUNT_PASSWORDS.get(login, "")
    password = draw(st.sampled_from([known or "x", known or "x", known + " ", None, ACCOUNT_PASSWORD_POOL[0]]))
    if password is None:
        password = draw(PASSWORDS)
    return Draft({"login": login, "password": password}, {"login": login, "password": password})


@st.composite
def _add_user_draft(draw: st.DrawFn) -> Draft:
    """The classic form (login, name, currency, group), the SDKs' (no login, no currency; password, leverage,
    email, enable), everything at once, or a seed's AddUser again."""
    style = draw(st.sampled_from(["classic", "classic", "sdk", "sdk", "full", "seed"]))
    if style == "seed":
        ext, data = draw(st.sampled_from(SEED_ADD_USERS))
        return replace(draft_of("AddUser", data), ext=ext)
    login_raw, login = draw(NEW_LOGINS)
    cur_raw, currency = draw(OPT_CURRENCIES)
    if style == "sdk":
        (login_raw, login), (cur_raw, currency) = (MISSING, None), (MISSING, None)
    name = draw(NAMES)
    group_raw, group = draw(GROUPS)
    data = {"login": login_raw, "name": name, "currency": cur_raw, "group": group_raw}
    fields = {"login": login, "name": name, "currency": currency, "group": group or "default", "password": None,
              "leverage": 100, "email": "", "enable": True}
    if style != "classic":
        if draw(st.integers(0, 3)) == 0:  # a password costs a slow hash (about 50 ms): not too often
            data["password"] = fields["password"] = draw(NEW_PASSWORDS)
        elif draw(st.integers(0, 3)) == 0:
            data["password"] = None
        for name_, values in (("leverage", LEVERAGES), ("email", EMAILS),
                              ("enable", st.sampled_from([True, False, False]))):
            if draw(st.booleans()):
                data[name_] = fields[name_] = draw(values)
    return Draft(data, fields)


def _ref_draft(name: str, values: st.SearchStrategy) -> st.SearchStrategy[Draft]:
    return values.map(lambda v: Draft({name: v}, {name: v}))


@st.composite
def _get_trades_draft(draw: st.DrawFn) -> Draft:
    login = draw(logins)
    from_raw, start = draw(OPT_TIMES)
    to_raw, end = draw(OPT_TIMES)
    return Draft({"login": login, "from": from_raw, "to": to_raw}, {"login": login, "from": start, "to": end})


@st.composite
def _get_users_draft(draw: st.DrawFn) -> Draft:
    group_raw, group = draw(_opt(GROUP_NAMES))
    start = draw(st.sampled_from([MISSING, MISSING, 0, 1, 999, 1000, 1001, 1003, 1004, 1005, 1006, MAX_ID, None]))
    if start is None:
        start = draw(st.integers(0, MAX_ID))
    limit = draw(st.sampled_from([MISSING, 1, 2, 3, 4, 5, 1000, 1001, 10**30, None]))
    if limit is None:
        limit = draw(st.integers(1, 10**6))
    return Draft({"group": group_raw, "from_login": start, "limit": limit},
                 {"group": group, "from_login": 0 if start is MISSING else start,
                  "limit": MAX_USERS if limit is MISSING else limit})


@st.composite
def _channels_draft(draw: st.DrawFn) -> tuple[dict, dict]:
    """``chanels`` (the platform's spelling) and/or ``channels``: lists of names, empty, null or left out."""
    data: dict = {}
    fields: dict = {"chanels": None, "channels": None}
    keys = draw(st.sampled_from([("chanels",)] * 4 + [("channels",), ("chanels", "channels"), ()]))
    for key in keys:
        kind = draw(st.sampled_from(["list", "list", "list", "empty", "null"]))
        if kind == "null":
            data[key] = None
        elif kind == "empty":
            data[key], fields[key] = [], ()
        else:
            names = draw(st.lists(CHANNEL_NAMES, min_size=1, max_size=3))
            if TRADE_EVENT not in names and draw(st.booleans()):
                names.insert(draw(st.integers(0, len(names))), TRADE_EVENT)
            data[key], fields[key] = names, tuple(names)
    return data, fields


@st.composite
def _subscribe_draft(draw: st.DrawFn) -> Draft:
    data, fields = draw(_channels_draft())
    seq_raw, from_seq = draw(FROM_SEQS)
    data["from_seq"] = seq_raw
    return Draft(data, {**fields, "from_seq": from_seq})


@st.composite
def _unsubscribe_draft(draw: st.DrawFn) -> Draft:
    data, fields = draw(_channels_draft())
    if draw(st.integers(0, 5)) == 0:  # a from_seq is read and has no effect
        data["from_seq"] = draw(FROM_SEQS)[0]
    return Draft(data, fields)


def _empty_draft() -> st.SearchStrategy[Draft]:
    return st.just(Draft({}, {}))


DRAFTS: dict[str, st.SearchStrategy[Draft]] = {name: _finance_draft(name) for name in FINANCE + SYNC}
DRAFTS.update({
    "Login": _login_draft(), "AddUser": _add_user_draft(), "GetUser": _ref_draft("login", logins),
    "GetUsers": _get_users_draft(), "OpenGameSession": _ref_draft("login", logins),
    "GetTrade": _ref_draft("order", orders), "GetTrades": _get_trades_draft(), "Subscribe": _subscribe_draft(),
    "Unsubscribe": _unsubscribe_draft(), "Ping": _empty_draft(),
})


def draft_of(command: str, data: dict) -> Draft:
    """The normalised fields of concrete, valid ``data`` (amounts as int or Decimal units)."""
    op = base_command(command)
    if op in ("DeleteBalance", "DeleteCredit", "GetTrade"):
        return Draft(data, {"order": data["order"]})
    if op in FINANCE:
        return Draft(data, {"login": data["login"], "amount": int(Decimal(data["amount"]) * U),
                            "comment": data.get("comment", "Finance"), "order": data.get("order"),
                            "open_time": data.get("open_time"), "close_time": data.get("close_time")})
    if op == "AddUser":
        return Draft(data, {"login": data.get("login"), "name": data["name"], "currency": data.get("currency"),
                            "group": data.get("group", "default"), "password": data.get("password"),
                            "leverage": data.get("leverage", 100), "email": data.get("email", ""),
                            "enable": data.get("enable", True)})
    if op in ("Subscribe", "Unsubscribe"):
        fields = {k: None if data.get(k) is None else tuple(data[k]) for k in ("chanels", "channels")}
        return Draft(data, {**fields, "from_seq": data.get("from_seq")} if op == "Subscribe" else fields)
    if op == "GetTrades":
        return Draft(data, {"login": data["login"], "from": data.get("from"), "to": data.get("to")})
    if op == "GetUsers":
        return Draft(data, {"group": data.get("group"), "from_login": data.get("from_login", 0),
                            "limit": data.get("limit", MAX_USERS)})
    return Draft(data, dict(data))


# The commands whose data may be empty (or missing, or null), with what that means.
EMPTY_FIELDS = {
    "Ping": {}, "Unsubscribe": {"chanels": None, "channels": None},
    "Subscribe": {"chanels": None, "channels": None, "from_seq": None},
    "GetUsers": {"group": None, "from_login": 0, "limit": MAX_USERS},
}


def _not_null(s: st.SearchStrategy) -> st.SearchStrategy:
    """Invalid values without null (where null is a valid "absent", or where the contract does not say)."""
    return s.filter(lambda v: v[0] is not None)


invalid_leverage = st.one_of(
    _data(st.sampled_from([0, -1, 1_000_001, 10**7, "100", Lit("1e2")])), _data(st.integers(max_value=0)),
    _data(st.integers(1_000_001, 10**30)), fractions, wrong_scalars, huge_ints, bad_literals,
)
# (1 and 0 are taken for true and false, as the PHP SDK's example sends them)
invalid_enable = st.one_of(
    _data(st.sampled_from([2, -1, "true", "false", "1", "yes", [True], {}, Lit("1.0")])),
    wrong_scalars.filter(lambda v: not isinstance(v[0], bool) and v[0] not in (0, 1)), bad_literals,
)
invalid_from_login = st.one_of(
    _data(st.integers(max_value=-1)), _data(st.integers(MAX_ID + 1, 10**30)),
    _data(st.sampled_from(["0", "1000", True, False])), fractions, wrong_scalars, huge_ints, bad_literals,
)
# No upper bound (a larger limit is capped at 1,000): only an integer below 1 or not an integer is refused.
invalid_limit = st.one_of(
    _data(st.integers(max_value=0)), _data(st.sampled_from(["10", True, False, Lit("-" + _digits(5000))])),
    fractions, wrong_scalars, bad_literals,
)


@cache
def _field_spec(command: str) -> dict[str, tuple[bool, st.SearchStrategy]]:
    """name -> (required, invalid values) of a command's data fields."""
    op = base_command(command)
    if op in ("DeleteBalance", "DeleteCredit", "GetTrade"):
        return {"order": (True, invalid_id(True))}
    if op in FINANCE:
        return {"login": (True, invalid_id(True)), "amount": (True, invalid_amount),
                "comment": (op.startswith("Credit"), invalid_text(255)), "order": (False, invalid_id(False)),
                "open_time": (False, invalid_time()), "close_time": (False, invalid_time())}
    if op == "Login":
        return {"login": (True, invalid_id(True)), "password": (True, invalid_text(1024))}
    if op == "AddUser":
        return {"login": (False, invalid_id(False)), "name": (True, invalid_text(128, min_size=1)),
                "currency": (False, _not_null(invalid_currency)), "group": (False, invalid_text(64, min_size=1)),
                "password": (False, _not_null(invalid_text(1024, min_size=1))), "leverage": (False, invalid_leverage),
                "email": (False, _not_null(invalid_text(254))), "enable": (False, invalid_enable)}
    if op in ("GetUser", "OpenGameSession"):
        return {"login": (True, invalid_id(True))}
    if op == "GetTrades":
        return {"login": (True, invalid_id(True)), "from": (False, invalid_time()), "to": (False, invalid_time())}
    if op == "GetUsers":
        return {"group": (False, _not_null(invalid_text(64, min_size=1))), "from_login": (False, invalid_from_login),
                "limit": (False, invalid_limit)}
    return {}


# (data, level, the field the refusal names) of a Subscribe or Unsubscribe: a channel list that is not a list
# of strings, or a from_seq that is not a sequence number.
invalid_subscribe = st.one_of(
    st.sampled_from([({"chanels": "trade:event"}, "chanels"), ({"chanels": [1]}, "chanels"),
                     ({"chanels": [None]}, "chanels"), ({"chanels": [["trade:event"]]}, "chanels"),
                     ({"chanels": {"trade:event": 1}}, "chanels"), ({"chanels": True}, "chanels"),
                     ({"channels": "EURUSD"}, "channels"), ({"chanels": ["trade:event"], "channels": [2]}, "channels"),
                     ({"chanels": 0}, "chanels"), ({"channels": [Lit("1.5")]}, "channels"),
                     ({"chanels": ["EURUSD", False]}, "chanels")])
    .map(lambda dw: (dw[0], "data", dw[1])),
    st.tuples(st.sampled_from(["chanels", "channels"]),
              st.one_of(_data(st.integers(max_value=-1)), _data(st.integers(min_value=MAX_ID + 1, max_value=10**25)),
                        fractions, wrong_scalars, bad_literals, huge_ints))
    .map(lambda kv: ({kv[0]: ["trade:event"], "from_seq": kv[1][0]}, kv[1][1], "from_seq")),
)
