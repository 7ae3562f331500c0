"""The manager oracle: an independent model of the manager contract that predicts, from a snapshot of
the ledger before a request, its answer and the ledger's change. Its numbers are written here from the
contract, deliberately not imported from ``ledger/``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jwt
from hypothesis import event

from tests.fuzz import strategies as S
from tests.fuzz.connection import Conn, Run
from tests.fuzz.snapshot import Account, Snap
from tests.fuzz.strategies import SECRET
from tests.fuzz.strict import Failed, micro

BALANCE_CMDS, CREDIT_CMDS = (6, 8), (7, 9)
OPS = {"BalanceIn": (6, 1), "CreditIn": (7, 1), "BalanceOut": (8, -1), "CreditOut": (9, -1)}
MAX_TOTAL = 9 * 10**18  # largest balance or credit the ledger keeps (ledger/rules.py)
ACCEPT_STATE = {0: 10, 1: 11, 2: 12}
TS_CLOSED, TS_DELETED = 3, 6


@dataclass
class KeyRec:
    """What the first attempt of a keyed request (finance or AddUser) got: idempotency is per (manager, extID)
    whatever the command."""

    payload: tuple
    error: tuple[int, str] | None = None
    acceptance: dict | None = None
    record: Any = None  # a finance request's record, as its …Sync form answers it (with the event's seq)
    login: int | None = None  # the account an AddUser created


@dataclass
class Pred:
    """The oracle's answer: status and error code, then content checks and the ledger change."""

    status: int
    code: str | None = None
    check: Callable[[Any, Snap, Snap], None] | None = None
    deltas: dict = field(default_factory=dict)
    commit: Callable[[Any, Snap], None] | None = None


def payload_of(op: str, f: dict) -> tuple:
    if op.startswith("Delete"):
        return (op, None, None, "Finance", f["order"], None, None)
    return (op, f["login"], f["amount"], f["comment"], f["order"], f["open_time"], f["close_time"])


def add_user_payload(f: dict) -> tuple:
    """What an AddUser asks, for idempotency: everything but the password (kept only as a salted hash)."""
    return ("AddUser", f["name"], f["currency"] or S.DEFAULT_CURRENCY, f["group"], f["login"], f["leverage"],
            f["email"], f["enable"])


def check_record(rec: Any, exp: dict, t0: int, t1: int) -> None:
    """A trade record against the expected version (None times: the server's now)."""
    if not isinstance(rec, dict):
        raise Failed(f"a trade record is an object: {rec!r}")
    for key in ("order", "login", "cmd", "state", "profit", "comment", "open_time", "close_time"):
        if key not in rec:
            raise Failed(f"trade record without {key}: {rec!r}")
    got = {"order": rec["order"], "login": rec["login"], "cmd": rec["cmd"], "state": rec["state"],
           "amount": micro(rec["profit"], "profit"), "comment": rec["comment"]}
    want = {k: exp[k] for k in got}
    if got != want:
        raise Failed(f"trade record {got} != expected {want}")
    for key in ("open_time", "close_time"):
        value = rec[key]
        if exp[key] is None:
            if type(value) is not int or not t0 <= value <= t1:
                raise Failed(f"{key} {value!r} is not the server's now [{t0}, {t1}]")
        elif value != exp[key]:
            raise Failed(f"{key} {value!r} != {exp[key]}")
    if "version" in rec and rec["version"] != exp["version"]:
        raise Failed(f"version {rec['version']} != {exp['version']}")
    for key in ("balance", "credit"):
        if key in rec and micro(rec[key], key) != exp[key]:
            raise Failed(f"record {key} {rec[key]} != {exp[key]}")


ACCOUNT_KEYS = {"login", "name", "group", "currency", "created", "leverage", "email", "enable", "balance", "credit"}


def check_account(data: Any, login: int, acc: Account, what: str = "the account") -> None:
    """An account as the API answers it: its fields, balance and credit; never its password."""
    if not isinstance(data, dict) or not ACCOUNT_KEYS <= set(data):
        raise Failed(f"{what} has {sorted(ACCOUNT_KEYS)}: {data!r}")
    if any("password" in k or "hash" in k for k in data):
        raise Failed(f"{what} shows its password: {data!r}")
    want = {"login": login, "name": acc.name, "group": acc.group, "currency": acc.currency, "created": acc.created,
            "leverage": acc.leverage, "email": acc.email, "enable": acc.enable}
    got = {k: data[k] for k in want}
    if got != want or type(data["enable"]) is not bool or type(data["leverage"]) is not int \
            or (micro(data["balance"], "balance"), micro(data["credit"], "credit")) != (acc.balance, acc.credit):
        raise Failed(f"{what}: {data!r} != {want} balance {acc.balance} credit {acc.credit}")


class ManagerOracle:
    """An independent model of the manager contract, evaluated on a snapshot of the ledger."""

    def __init__(self, srv: Any):
        self.srv = srv
        self.keys: dict[tuple[int, str], KeyRec] = {}
        self.passwords: dict[int, str] = dict(S.ACCOUNT_PASSWORDS)  # accounts that log in, and with what
        self.t0 = self.t1 = 0

    def predict(self, call: S.Call, conn: Conn, before: Snap) -> Pred:
        command = S.base_command(call.command)
        f = dict(call.fields)
        if command in S.FINANCE:
            return self.finance(call, command, f, before)
        return getattr(self, "cmd_" + command)(call, f, before, conn)

    def _key(self, call: S.Call) -> tuple[int, str] | None:
        return (call.login, call.ext_id) if call.ext_id is not None else None

    def _remember_refusal(self, key: Any, payload: tuple, refusal: tuple) -> Pred:
        """A keyed request refused by the ledger's rules: the refusal is kept (an idempotency row) and
        answered again to a retry."""
        def remember(data: Any, a: Snap) -> None:
            if key:
                self.keys[key] = KeyRec(payload, error=refusal)
        return Pred(refusal[0], refusal[1], deltas={"idempotency": 1} if key else {}, commit=remember)

    # ---- finance

    def finance(self, call: S.Call, op: str, f: dict, before: Snap) -> Pred:
        sync = call.command.endswith("Sync")
        payload = payload_of(op, f)
        key = self._key(call)
        rec = self.keys.get(key) if key else None
        if rec is not None:
            if rec.payload != payload:
                event("model:idempotency-conflict")
                return Pred(409, "IDEMPOTENCY_CONFLICT")
            if rec.error is not None:
                event("model:finance-replay-refused")
                return Pred(*rec.error)
            event(f"model:finance-replay{'-sync' if sync else ''}")
            want = rec.record if sync else rec.acceptance

            def check_replay(data: Any, b: Snap, a: Snap) -> None:
                if data != want:
                    raise Failed(f"a replay must answer as the first attempt did: {data!r} != {want!r}")
            return Pred(200, None, check_replay)
        result = self.rules(op, f, before)
        keyed = {"idempotency": 1} if key else {}
        if isinstance(result, tuple):  # refused by the ledger's rules
            return self._remember_refusal(key, payload, result)
        exp = result

        def check(data: Any, b: Snap, a: Snap) -> None:
            if a.seq != b.seq + 1:
                raise Failed(f"an accepted finance command adds one event: seq {b.seq} -> {a.seq}")
            etype, _ = a.events[a.seq]
            record = a.event_data(a.seq)
            if "seq" in record:
                raise Failed(f"the stored record carries no seq (GetTrade answers it): {record!r}")
            order = record.get("order")
            if exp["order"] is None:  # a new order: a fresh number
                if order in b.orders or type(order) is not int or order <= max(b.orders, default=0):
                    raise Failed(f"a new order needs a fresh number, got {order!r}")
                exp["order"] = order
            if etype != exp["type"]:
                raise Failed(f"event type {etype} != {exp['type']}")
            check_record(record, exp, self.t0, self.t1)
            row = a.orders[exp["order"]]
            if (row.version, row.state, row.amount, row.login, row.cmd) != \
                    (exp["version"], exp["state"], exp["amount"], exp["login"], exp["cmd"]):
                raise Failed(f"stored version {row} differs from {exp}")
            want_acc = b.accounts[exp["login"]]
            acc = a.accounts[exp["login"]]
            if (acc.balance, acc.credit) != (exp["balance"], exp["credit"]):
                raise Failed(f"account totals {acc.balance}/{acc.credit} != {exp['balance']}/{exp['credit']}")
            if {k: v for k, v in a.accounts.items() if k != exp["login"]} != \
                    {k: v for k, v in b.accounts.items() if k != exp["login"]} or \
                    replace(acc, balance=0, credit=0) != replace(want_acc, balance=0, credit=0):
                raise Failed("another account changed")
            if {k: v for k, v in a.orders.items() if k != exp["order"]} != \
                    {k: v for k, v in b.orders.items() if k != exp["order"]}:
                raise Failed("another order changed")
            acceptance = {"accepted": True, "order": exp["order"], "state": ACCEPT_STATE[exp["type"]],
                          "login": exp["login"], "cmd": exp["cmd"], "amount": data.get("amount") if
                          isinstance(data, dict) else None}
            sent = a.sent_data(a.seq)
            if sync:
                if data != sent:  # exactly the event's data: the record and its seq
                    raise Failed(f"a …Sync answer is its event's data: {data!r} != {sent!r}")
            else:
                if not isinstance(data, dict) or set(data) != set(acceptance) or \
                        {k: v for k, v in data.items() if k != "amount"} != \
                        {k: v for k, v in acceptance.items() if k != "amount"} \
                        or micro(data["amount"]) != exp["amount"]:
                    raise Failed(f"acceptance {data!r} != {acceptance!r} (amount {exp['amount']})")
            exp["_acceptance"], exp["_record"] = acceptance, sent

        def commit(data: Any, a: Snap) -> None:
            if key:
                acceptance = exp["_acceptance"]
                if sync:  # the plain form of a replay answers with the acceptance
                    acceptance = {**acceptance, "amount": exp["_record"]["profit"]}
                self.keys[key] = KeyRec(payload, acceptance=acceptance, record=exp["_record"])
        return Pred(200, None, check, {"finance": 1, "events": 1, **keyed}, commit)

    def rules(self, op: str, f: dict, snap: Snap) -> dict | tuple:
        """The next version an accepted request writes (dict), or the refusal (status, code). A disabled
        account takes no finance command, the delete of one of its orders included."""
        if op.startswith("Delete"):
            cur = snap.orders.get(f["order"])
            if cur is not None and not snap.accounts[cur.login].enable:
                event("model:order-of-a-disabled-account")
                return (403, "ACCOUNT_DISABLED")
            kinds = BALANCE_CMDS if op == "DeleteBalance" else CREDIT_CMDS
            if cur is None or cur.cmd not in kinds:
                return (404, "ORDER_NOT_FOUND")
            if cur.state == TS_DELETED:
                return (409, "ORDER_DELETED")
            totals = self.totals(snap, cur.login, cur.cmd, -cur.amount)
            if isinstance(totals, tuple) and isinstance(totals[1], str):
                return totals
            return dict(order=cur.order, version=cur.version + 1, login=cur.login, cmd=cur.cmd, state=TS_DELETED,
                        amount=cur.amount, comment=cur.comment, open_time=cur.open_time, close_time=None, type=2,
                        balance=totals[0], credit=totals[1])
        cmd, sign = OPS[op]
        login = f["login"]
        cur = snap.orders.get(f["order"]) if f["order"] is not None else None
        if login not in snap.accounts:
            return (404, "ACCOUNT_NOT_FOUND")
        if not snap.accounts[login].enable:
            event("model:account-disabled")
            return (403, "ACCOUNT_DISABLED")
        signed = sign * f["amount"]
        if cur is None:
            delta, version, open_time, etype, order = signed, 1, f["open_time"], 0, None
        else:
            if cur.state == TS_DELETED:
                return (409, "ORDER_DELETED")
            if (cur.login, cur.cmd) != (login, cmd):
                return (400, "ORDER_MISMATCH")
            delta, version, etype, order = signed - cur.amount, cur.version + 1, 1, cur.order
            open_time = f["open_time"] if f["open_time"] is not None else cur.open_time
        totals = self.totals(snap, login, cmd, delta)
        if isinstance(totals[1], str):
            return totals
        return dict(order=order, version=version, login=login, cmd=cmd, state=TS_CLOSED, amount=signed,
                    comment=f["comment"], open_time=open_time, close_time=f["close_time"], type=etype,
                    balance=totals[0], credit=totals[1])

    @staticmethod
    def totals(snap: Snap, login: int, cmd: int, delta: int) -> tuple:
        acc = snap.accounts[login]
        balance, credit = acc.balance, acc.credit
        if cmd in BALANCE_CMDS:
            balance += delta
            if delta < 0 and balance < 0:
                return (409, "NO_MONEY")
        else:
            credit += delta
            if delta < 0 and credit < 0:
                return (409, "NO_MONEY")
        if delta > 0 and max(balance, credit) > MAX_TOTAL:
            return (400, "INVALID_DATA")
        return (balance, credit)

    # ---- other commands

    def cmd_Ping(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or data.get("pong") is not True or type(data.get("time")) is not int \
                    or not self.t0 <= data["time"] <= self.t1:
                raise Failed(f"Ping answers {{pong: true, time: now}}: {data!r}")
        return Pred(200, None, check)

    def cmd_Login(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """A manager's login, else an account's with the password AddUser gave it (session type USER)."""
        login = f["login"]
        if login in S.MANAGERS:
            password, session = S.MANAGERS[login]
        elif login in before.accounts and login in self.passwords:
            password, session = self.passwords[login], S.SESSION_USER
        else:
            return Pred(401, "INVALID_CREDENTIALS")
        if password != f["password"]:
            return Pred(401, "INVALID_CREDENTIALS")
        event(f"model:login-session-{session}")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or set(data) != {"token", "session", "expires_at"} \
                    or data["session"] != session:
                raise Failed(f"Login answers {{token, session {session}, expires_at}}: {data!r}")
            claims = jwt.decode(data["token"], SECRET, algorithms=["HS256"], options={"verify_exp": False})
            if (claims["sub"], claims["session"], claims["exp"]) != (str(login), session, data["expires_at"]):
                raise Failed(f"token claims {claims} do not match {data!r}")
            if not self.t0 < data["expires_at"]:
                raise Failed(f"the token is already expired: {data!r}")
        return Pred(200, None, check)

    def cmd_AddUser(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """Idempotent by (manager, extID) like a finance request: the same payload answers the same account
        (as it is now) or the same refusal; another payload is IDEMPOTENCY_CONFLICT."""
        payload = add_user_payload(f)
        key = self._key(call)
        rec = self.keys.get(key) if key else None
        if rec is not None:
            if rec.payload != payload:
                return Pred(409, "IDEMPOTENCY_CONFLICT")
            if rec.error is not None:
                event("model:add-user-replay-refused")
                return Pred(*rec.error)
            event("model:add-user-replay")
            return Pred(200, None, lambda data, b, a: check_account(data, rec.login, b.accounts[rec.login],
                                                                    "a replayed AddUser answers the account"))
        login = f["login"]
        if login is not None and login in before.accounts:
            return self._remember_refusal(key, payload, (409, "ACCOUNT_EXISTS"))
        if login is None:
            login = max(max(before.accounts, default=999), 999) + 1
        if login > S.MAX_ID:  # no login is left above the largest: it must be given
            return self._remember_refusal(key, payload, (409, "NO_FREE_LOGIN"))
        currency = f["currency"] or S.DEFAULT_CURRENCY

        def check(data: Any, b: Snap, a: Snap) -> None:
            acc = a.accounts.get(login)
            want = (f["name"], f["group"], currency, f["leverage"], f["email"], f["enable"], 0, 0)
            if acc is None or (acc.name, acc.group, acc.currency, acc.leverage, acc.email, acc.enable, acc.balance,
                               acc.credit) != want or not self.t0 <= acc.created <= self.t1:
                raise Failed(f"account {login} is not stored as asked {want}: {acc}")
            if (acc.password_hash is None) != (f["password"] is None) or \
                    (f["password"] is not None and (acc.password_hash == f["password"] or
                                                    len(f["password"]) >= 8 and f["password"] in acc.password_hash)):
                raise Failed(f"a password is stored as a salted hash, and only when given: {acc.password_hash!r}")
            check_account(data, login, acc, "AddUser answers the new account")
            if {k: v for k, v in a.accounts.items() if k != login} != b.accounts or a.seq != b.seq:
                raise Failed("AddUser changed other accounts or the events")

        def commit(data: Any, a: Snap) -> None:
            if key:
                self.keys[key] = KeyRec(payload, login=login)
            if f["password"] is not None:
                self.passwords[login] = f["password"]
        return Pred(200, None, check, {"accounts": 1, **({"idempotency": 1} if key else {})}, commit)

    def cmd_GetUser(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        login = f["login"]
        if login not in before.accounts:
            return Pred(404, "ACCOUNT_NOT_FOUND")
        return Pred(200, None, lambda data, b, a: check_account(data, login, b.accounts[login]))

    def cmd_GetUsers(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """A page of accounts by login from from_login (in group, when given), at most limit and 1,000, and
        where the next page starts (null: none)."""
        logins = sorted(login for login, acc in before.accounts.items()
                        if login >= f["from_login"] and f["group"] in (None, acc.group))
        page = logins[:min(f["limit"], S.MAX_USERS)]
        following = logins[len(page)] if len(logins) > len(page) else None
        event(f"model:get-users:{'more' if following else 'last'}-page")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or set(data) != {"users", "next_from_login"} \
                    or not isinstance(data["users"], list) or len(data["users"]) != len(page) \
                    or data["next_from_login"] != following:
                raise Failed(f"GetUsers answers {{users: {page}, next_from_login: {following}}}: {data!r}")
            for user, login in zip(data["users"], page, strict=True):
                check_account(user, login, b.accounts[login], f"GetUsers' account {login}")
        return Pred(200, None, check)

    def cmd_GetTrade(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        row = before.orders.get(f["order"])
        if row is None:
            return Pred(404, "ORDER_NOT_FOUND")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if data != b.event_data(row.seq):  # a record, not an event: no seq
                raise Failed(f"GetTrade answers the order's current record: {data!r}")
        return Pred(200, None, check)

    def cmd_GetTrades(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        if f["login"] not in before.accounts:
            return Pred(404, "ACCOUNT_NOT_FOUND")
        start = f["from"] if f["from"] is not None else -1
        end = f["to"] if f["to"] is not None else S.MAX_ID
        rows = sorted((r for r in before.orders.values() if r.login == f["login"] and start <= r.open_time <= end),
                      key=lambda r: r.order)

        def check(data: Any, b: Snap, a: Snap) -> None:
            want = {"login": f["login"], "trades": [b.event_data(r.seq) for r in rows], "more": False}
            if data != want:
                raise Failed(f"GetTrades: {data!r} != {want!r}")
        return Pred(200, None, check)

    def cmd_OpenGameSession(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        if f["login"] not in before.accounts:
            return Pred(404, "ACCOUNT_NOT_FOUND")
        ttl = self.srv.config.game_session_ttl

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or data.get("login") != f["login"] or not isinstance(data.get("sid"), str) \
                    or len(data["sid"]) < 16 or type(data.get("expires_at")) is not int \
                    or not self.t0 + ttl <= data["expires_at"] <= self.t1 + ttl:
                raise Failed(f"OpenGameSession answers {{sid, login, expires_at}}: {data!r}")
        return Pred(200, None, check, {"game_sessions": 1})

    @staticmethod
    def _names(f: dict) -> list[str]:
        return list(f["chanels"] or ()) + list(f["channels"] or ())

    def cmd_Subscribe(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """Additive: the channels published here are added (one already subscribed is no error), the others
        reported in ``unknown``; from_seq replays when trade:event is newly subscribed (beyond the newest
        event: FROM_SEQ_AHEAD, nothing subscribed)."""
        names = self._names(f)
        unknown = [n for n in names if n != S.TRADE_EVENT]
        fresh = S.TRADE_EVENT in names and not conn.subscribed
        from_seq = f["from_seq"]
        if fresh and from_seq is not None and from_seq > before.seq:
            return Pred(400, "FROM_SEQ_AHEAD")
        event(f"model:subscribe:{'fresh' if fresh else 'again' if S.TRADE_EVENT in names else 'no-op'}"
              f"{':unknown' if unknown else ''}{':replay' if fresh and from_seq is not None else ''}")
        channels = sorted(conn.channels | ({S.TRADE_EVENT} if fresh else set()))

        def check(data: Any, b: Snap, a: Snap) -> None:
            if not isinstance(data, dict) or set(data) != {"channels", "unknown", "from_seq"} \
                    or data["channels"] != channels or data["from_seq"] != (from_seq if fresh else None) \
                    or not isinstance(data["unknown"], list) \
                    or Counter(data["unknown"]) not in (Counter(unknown), Counter(dict.fromkeys(unknown))):
                raise Failed(f"Subscribe answers {{channels: {channels}, unknown: {unknown}, from_seq: "
                             f"{from_seq if fresh else None}}}: {data!r}")

        def commit(data: Any, a: Snap) -> None:
            if fresh:
                conn.channels.add(S.TRADE_EVENT)
                conn.runs.append(Run({from_seq + 1 if from_seq is not None else before.seq + 1}))
        return Pred(200, None, check, commit=commit)

    def cmd_Unsubscribe(self, call: S.Call, f: dict, before: Snap, conn: Conn) -> Pred:
        """Removes the channels named (no list: all); answers what is still subscribed."""
        named = f["chanels"] is not None or f["channels"] is not None
        remaining = conn.channels - set(self._names(f)) if named else set()
        ends = conn.subscribed and not remaining
        event(f"model:unsubscribe:{'named' if named else 'all'}:{'ends' if ends else 'keeps'}")

        def check(data: Any, b: Snap, a: Snap) -> None:
            if data != {"channels": sorted(remaining)}:
                raise Failed(f"Unsubscribe answers {{channels: {sorted(remaining)}}}: {data!r}")

        def commit(data: Any, a: Snap) -> None:
            if conn.subscribed and S.TRADE_EVENT not in remaining:
                conn.runs[-1].end = before.seq
            conn.channels = set(remaining)
        return Pred(200, None, check, commit=commit)
