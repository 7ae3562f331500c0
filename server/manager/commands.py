"""Manager API commands: authenticate the token, authorise the session type, validate ``data`` with
the models, and run the command (every write through the mainLoop)."""

from __future__ import annotations

import logging
import math
import secrets
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
import trio
from pydantic import ValidationError

from syncledger.ledger import AddAccount, Finance, FinanceRequest, OpenSession, Outcome, reads, rules, to_text

from . import fast, models, protocol
from ..auth import (FINANCE_SESSIONS, SESSION_ADMIN, SESSION_MANAGER, SESSION_USER, AuthError, Claims,
                   check_password, hash_password)
from ..core.mainloop import Job, ShuttingDown
from ..core.readpool import ReadStalled
from .models import FINANCE_MODELS
from .pending import Pending
from .protocol import ProtocolError, Request
from ..fields import describe
from ..wire import quoted

if TYPE_CHECKING:
    from ..services import Services
    from .tcp import Connection

log = logging.getLogger("syncledger.commands")
Handler = Callable[["Connection", Pending, Request, Claims], Awaitable[None]]

ACCOUNT_ADMINS = frozenset({SESSION_MANAGER, SESSION_ADMIN})
ANY_SESSION = frozenset(range(4))
CHANNELS = ("trade:event",)
MAX_TRADES = 10_000  # records in one GetTrades answer
MAX_USERS = 1_000  # accounts in one GetUsers page
_WRITTEN = frozenset({rules.EV_RECORD_ADD, rules.EV_RECORD_UPDATE})  # a finance job's event: a new order or an update
_DELETED = frozenset({rules.EV_RECORD_DELETE})
# Checked when the login is unknown, so that a wrong login costs as much as a wrong password.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class Dispatcher:
    def __init__(self, server: Services):
        self.s = server
        self.fast = True  # finance lines through fast.py first (False: every line through protocol and pydantic)
        self.commands: dict[str, tuple[Handler, frozenset[int]]] = {
            "Ping": (self.ping, ANY_SESSION),
            "AddUser": (self.add_user, ACCOUNT_ADMINS),
            "GetUser": (self.get_user, FINANCE_SESSIONS),
            "GetUsers": (self.get_users, FINANCE_SESSIONS),
            "GetTrade": (self.get_trade, FINANCE_SESSIONS),
            "GetTrades": (self.get_trades, FINANCE_SESSIONS),
            "Subscribe": (self.subscribe, FINANCE_SESSIONS),
            "Unsubscribe": (self.unsubscribe, FINANCE_SESSIONS),
            "OpenGameSession": (self.open_game_session, FINANCE_SESSIONS),
        }
        for name in FINANCE_MODELS:
            self.commands[name] = (partial(self.finance, name, False), FINANCE_SESSIONS)
            self.commands[name + "Sync"] = (partial(self.finance, name, True), FINANCE_SESSIONS)

    async def answer_line(self, line: bytes, address: str, endpoint: str | None = None) -> bytes | None:
        """The answer to one request line from ``address`` (``endpoint``: with its port, for the log), as a
        connection of its own would get it."""
        one = _OneLine(address, endpoint)
        await self.handle(one, line)
        return one.line

    async def handle(self, conn: Connection, line: bytes) -> None:
        """Answer one request line (now, or later through its Pending). Whatever goes wrong in one request
        is answered on that request alone; the connection and its other requests go on."""
        req = fast.finance_request(line) if self.fast else None
        try:
            if req is None:
                req = protocol.parse_request(line)
        except ProtocolError as e:
            conn.send(protocol.error(e.ext_id, e.status, e.code, e.message))
            self.s.metrics.answered("(unparsed)", e.status, 0.0, False)
            return
        if len(conn.pending) >= self.s.config.max_inflight:
            conn.send(protocol.error(req.ext_id, 429, "TOO_MANY_REQUESTS",
                                     f"at most {self.s.config.max_inflight} requests may be pending"))
            return
        pending = conn.open_pending(req.ext_id, req.command if req.command in self.commands or req.command == "Login"
                                    else "(unknown)", self.s.metrics)
        try:
            if self.s.stopping:
                raise ShuttingDown()
            if req.command == "Login":
                await self.login(conn, pending, req)
                return
            entry = self.commands.get(req.command)
            if entry is None:
                raise ProtocolError(404, "UNKNOWN_COMMAND", f"unknown command {quoted(req.command)}")
            handler, sessions = entry
            claims = self.s.tokens.verify(req.token)
            await self.s.authorize(claims)
            conn.authenticated, conn.login = True, claims.login
            if claims.session not in sessions:
                raise ProtocolError(403, "FORBIDDEN", f"{req.command} is not allowed for session type {claims.session}")
            await handler(conn, pending, req, claims)
        except ProtocolError as e:
            pending.error(e.status, e.code, e.message)
        except AuthError as e:
            pending.error(401, e.code, e.message)
        except ValidationError as e:
            pending.error(400, "INVALID_DATA", describe(e))
        except ShuttingDown:
            pending.error(503, "SHUTTING_DOWN", "the server is shutting down")
        except ReadStalled as e:
            pending.error(503, "LEDGER_UNAVAILABLE", f"{e}; nothing was changed: try again")
        except Exception:  # a bug or a failing read: this request alone fails
            log.exception("%s failed", req.command)
            pending.error(500, "INTERNAL", f"{req.command} failed inside the server; nothing was changed")

    # ---- finance

    async def finance(self, op: str, sync: bool, conn: Connection, pending: Pending, req: Request,
                      claims: Claims) -> None:
        job, types = self.finance_job(op, sync, pending, req, claims)
        if sync:
            self.wait(pending, types)  # registered BEFORE the job can be applied and its event published
        await self.s.mainloop.submit(job)

    def finance_job(self, op: str, sync: bool, pending: Pending, req: Request,
                    claims: Claims) -> tuple[Job, frozenset[int]]:
        """The mainLoop job of a finance request, and the event types its …Sync form waits for (a finance
        job makes one event; a new order's number is given by the writer, in commit order)."""
        request = req.finance if req.finance is not None else _finance_request(op, req.data)
        types = _DELETED if op in rules.DELETES else _WRITTEN
        command = Finance(request, self.s.now(), manager=claims.login, ext_id=req.ext_id)
        if sync:
            return Job(command, pending.on_outcome, waiter=pending), types
        return Job(command, partial(_accepted, pending)), types

    def wait(self, pending: Pending, types: frozenset[int]) -> None:
        """Make ``pending`` a …Sync waiter for its job's event of one of ``types``, answered 504 at the
        sync timeout."""
        ms = self.s.config.sync_timeout_ms
        pending.wait_for(types, self.s.timeouts, trio.current_time() + ms / 1000, ms)

    # ---- accounts and reads

    async def add_user(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        data = models.AddUserData.model_validate(req.data)
        hashed = await self.s.offload(hash_password, data.password) if data.password is not None else None
        command = AddAccount(data.name, data.currency or self.s.config.default_currency, self.s.now(), data.group,
                             data.login, manager=claims.login, ext_id=req.ext_id, leverage=data.leverage,
                             email=data.email, enable=data.enable, password_hash=hashed)
        await self.s.mainloop.submit(Job(command, partial(_answer, pending)))

    async def get_user(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        login = models.LoginRef.model_validate(req.data).login
        pending.ok(await self._account(login))

    async def get_users(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        data = models.GetUsersData.model_validate(req.data)
        users, following = await self.s.read(reads.accounts, data.group, data.from_login,
                                                      min(data.limit, MAX_USERS))
        pending.ok({"users": users, "next_from_login": following})

    async def get_trade(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        order = models.OrderRef.model_validate(req.data).order
        record = await self.s.read(reads.record, order)
        if record is None:
            raise ProtocolError(404, "ORDER_NOT_FOUND", f"no order {order}")
        pending.ok(record)

    async def get_trades(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        data = models.GetTradesData.model_validate(req.data)
        await self._account(data.login)
        records = await self.s.read(reads.records, data.login, data.from_, data.to,
                                             MAX_TRADES + 1)
        pending.ok({"login": data.login, "trades": [orjson.Fragment(r) for r in records[:MAX_TRADES]],
                    "more": len(records) > MAX_TRADES})  # more: narrow from/to to see the rest

    async def _account(self, login: int) -> dict:
        account = await self.s.read(reads.account, login)
        if account is None:
            raise ProtocolError(404, "ACCOUNT_NOT_FOUND", f"no account {login}")
        return account

    async def open_game_session(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        login = models.LoginRef.model_validate(req.data).login
        command = OpenSession(login, secrets.token_urlsafe(18), self.s.now(), self.s.config.game_session_ttl)
        await self.s.mainloop.submit(Job(command, partial(_answer, pending)))

    # ---- events

    async def subscribe(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        """Add channels, as the platform does: naming one already subscribed is no error, and a channel this
        server does not publish (a quote symbol) is reported in ``unknown`` rather than refused. A manager
        login (or an address) with all its subscriber slots taken is refused 429."""
        data = models.SubscribeData.model_validate(req.data)
        names = data.names()
        known = [n for n in names if n in CHANNELS]
        unknown = [n for n in names if n not in CHANNELS]
        fresh = [n for n in dict.fromkeys(known) if n not in conn.channels]
        if data.from_seq is not None and fresh:
            newest = await self.s.newest_seq(data.from_seq)  # committed and published: it only grows
            if data.from_seq > newest:
                raise ProtocolError(400, "FROM_SEQ_AHEAD",
                                    f"from_seq {data.from_seq} is beyond the newest event {newest}")
        if "trade:event" in fresh and (refusal := self.s.broker.cap.enter(conn, claims.login, conn.address)):
            raise ProtocolError(429, "TOO_MANY_SUBSCRIBERS", refusal)
        conn.channels.update(fresh)
        pending.ok({"channels": sorted(conn.channels), "unknown": unknown,
                    "from_seq": data.from_seq if fresh else None})  # before a replay that may be long
        if "trade:event" in fresh:
            try:
                await self.s.broker.subscribe(conn, self.s.mainloop, data.from_seq, self.s.read)
            except BaseException:
                conn.channels.discard("trade:event")  # not subscribed after all: a later Subscribe tries again
                self.s.broker.remove(conn)
                raise

    async def unsubscribe(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        """Remove the channels named (none named: all); the answer lists what is still subscribed."""
        data = models.SubscribeData.model_validate(req.data)
        names = data.names() if (data.chanels is not None or data.channels is not None) else list(conn.channels)
        conn.channels.difference_update(names)
        if "trade:event" not in conn.channels:
            self.s.broker.remove(conn)
        pending.ok({"channels": sorted(conn.channels)})

    # ---- session

    async def ping(self, conn: Connection, pending: Pending, req: Request, claims: Claims) -> None:
        pending.ok({"pong": True, "time": self.s.now()})

    async def login(self, conn: Connection, pending: Pending, req: Request) -> None:
        """A manager's login, or an account's (with the password AddUser gave it) as a USER session. An
        address that keeps failing waits longer and longer (429); every failure is logged with it."""
        data = models.LoginData.model_validate(req.data)
        wait = self.s.throttle.attempt(conn.address, data.login)
        if wait > 0:
            if not conn.authenticated:
                conn.stop_reading()  # answered, then closed: a throttled address gets no free connection either
            raise ProtocolError(429, "TOO_MANY_REQUESTS", f"too many failed logins from this address: retry in "
                                                          f"{math.ceil(wait)} s")
        manager = await self.s.read(reads.manager, data.login)
        if manager is not None:
            stored, session, kv = manager
        else:
            account = await self.s.read(reads.account_password, data.login)
            stored, session, kv = (account, SESSION_USER, 1) if account is not None else (_DUMMY_HASH, None, 1)
        good = await self.s.offload(check_password, data.password, stored)
        if not good or session is None:  # already counted by attempt()
            self.s.metrics.failed_logins.labels(conn.listener).inc()
            log.warning("failed login for %s from %s", data.login, conn.address,
                        extra={"login": data.login, "peer": conn.endpoint, "listener": conn.listener, "status": 401})
            raise ProtocolError(401, "INVALID_CREDENTIALS", "wrong login or password")
        self.s.throttle.succeeded(conn.address, data.login)
        token, expires_at = self.s.tokens.issue(data.login, session, kv=kv)
        conn.authenticated, conn.login = True, data.login
        pending.ok({"token": token, "session": session, "expires_at": expires_at})


def _finance_request(op: str, raw: dict) -> FinanceRequest:
    """The request of finance command ``op`` with data ``raw``, validated by its model."""
    data = FINANCE_MODELS[op].model_validate(raw)
    if op in rules.DELETES:
        return FinanceRequest(op, order=data.order)
    return FinanceRequest(op, data.login, data.amount, data.comment, data.order, data.open_time, data.close_time)


def _answer(pending: Pending, outcome: Outcome) -> None:
    if not pending.refused(outcome):
        pending.ok(outcome.data)


def _accepted(pending: Pending, outcome: Outcome) -> None:
    """The plain (non-Sync) answer of a finance command: an acceptance once committed."""
    if pending.refused(outcome):
        return
    r = outcome.data
    pending.ok({"accepted": True, "order": r.order, "state": rules.ACCEPT_STATE[r.type], "login": r.login,
                "cmd": r.cmd, "amount": orjson.Fragment(to_text(r.amount))})


class _OneLine:
    """Stands in for a manager connection, so that a request from elsewhere (the admin page's Login) runs the
    Dispatcher's own code (authentication, login throttle, validation, metrics) and its one answer line is
    kept."""

    max_reply = 8 << 20
    listener = "admin"

    def __init__(self, address: str, endpoint: str | None = None):
        self.address, self.authenticated, self.pending, self.line = address, False, set(), None
        self.endpoint, self.login = endpoint or address, None

    def open_pending(self, ext_id: str | None, command: str = "", metrics: Any = None) -> Pending:
        pending = Pending(self, ext_id, command, metrics)
        self.pending.add(pending)
        return pending

    def send(self, line: bytes) -> None:
        self.line = line

    def answered(self, pending: Pending) -> None:
        self.pending.discard(pending)

    def stop_reading(self) -> None:
        """(A throttled address's TCP connection is closed; an HTTP answer ends the exchange anyway.)"""
