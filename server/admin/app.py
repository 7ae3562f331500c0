"""The admin listener's answers (on the server.http driver, loopback by default): ``GET /metrics``
(Prometheus text exposition), ``/healthz``, ``/readyz``, and the back-office page with its JSON API."""

from __future__ import annotations

import contextvars
import dataclasses
import ipaddress
import logging
import marshal
import os
import signal
import socket
import subprocess
import sys
import time
from functools import lru_cache
from multiprocessing.connection import Connection
from importlib import resources
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import parse_qs

import orjson
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncledger.ledger import engine, reads, verify
from syncledger.ledger.verify import head

from ..auth import FINANCE_SESSIONS, SESSION_ADMIN, SESSIONS, AuthError, Claims
from ..http import HttpServer, Request, Response
from ..limits import peer_endpoint
from ..listen import Listener
from ..core.mainloop import ShuttingDown
from ..core.readpool import ReadStalled, _in_snapshot
from .history import History
from . import reports  # the reconciliation's page reads and open-rounds gauges

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("syncledger.admin")
OPS = (b"/metrics", b"/healthz", b"/readyz")
PAGE = {b"/": ("index.html", b"text/html; charset=utf-8"), b"/app.js": ("app.js", b"text/javascript; charset=utf-8"),
        b"/app.css": ("app.css", b"text/css; charset=utf-8")}
PAGE_HEADERS = ((b"content-security-policy", b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                             b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
                (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                (b"cache-control", b"no-cache"))
API_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
# path -> (method, session types allowed; None: no token needed)
API: dict[bytes, tuple[bytes, frozenset[int] | None]] = {
    b"/api/login": (b"POST", None),
    b"/api/config": (b"GET", FINANCE_SESSIONS),
    b"/api/accounts": (b"GET", FINANCE_SESSIONS),
    b"/api/history": (b"GET", FINANCE_SESSIONS),
    b"/api/order": (b"GET", FINANCE_SESSIONS),
    b"/api/head": (b"GET", FINANCE_SESSIONS),
    b"/api/metrics": (b"GET", FINANCE_SESSIONS),
    b"/api/verify": (b"POST", frozenset({SESSION_ADMIN})),  # a whole-ledger audit: ADMIN only
}
API.update({b"/api/rounds": (b"GET", FINANCE_SESSIONS), b"/api/report": (b"GET", FINANCE_SESSIONS)})  # reconciliation
API.update({b"/api/records": (b"GET", FINANCE_SESSIONS), b"/api/round": (b"GET", FINANCE_SESSIONS)})  # issue 25
SESSION_NAMES = {number: name for name, number in SESSIONS.items()}
MAX_PAGE = 1000
MAX_EXT_ID = 256  # characters of a manager's extID (the manager API's bound)
MAX_WALLET_ID = 64  # characters of a wallet transaction id or game id (the wallet API's bound)
MAX_ROUNDS = 100  # rounds of one game id a page may ask for
METRICS_EVERY = 1.0  # seconds one rendering of /metrics is served for
VERIFY_TIMEOUT = 600.0  # seconds the page's verify may take
VERIFY_REST = 3.0  # the next verify starts no sooner than this many times the last one's length after it ended
# The peer's address (for Login's throttle) and its address:port (for the log)
PEER: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("admin_peer", default=("admin", "admin"))
# The Host values that name the listener on this connection (None: an in-process stream, no address to check)
OWN: contextvars.ContextVar[frozenset[bytes] | None] = contextvars.ContextVar("admin_own", default=None)
# When the /metrics rendering this connection was last given was made (None: none yet)
SCRAPED: contextvars.ContextVar[float | None] = contextvars.ContextVar("admin_scraped", default=None)


class Refused(Exception):
    """An API request answered with an error (status, code, message), as the manager API words them."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, orjson.dumps({"status": status, "error": code, "message": message}), API_HEADERS)


def _ok(data: Any) -> Response:
    return Response(200, orjson.dumps({"status": 200, "data": data}), API_HEADERS)


@lru_cache(maxsize=None)
def page_file(name: str) -> bytes:
    """A file of the back-office page, shipped as package data (syncledger/server/backoffice/)."""
    return resources.files("syncledger.server.admin").joinpath("backoffice", name).read_bytes()


class AdminApp:
    def __init__(self, server: Services, answer_line: Callable[[bytes, str, str], Awaitable[bytes | None]]):
        """``answer_line``: the manager API's answer to one request line from an address and its address:port
        (its Login, with its throttle, scrypt and logging: Dispatcher.answer_line)."""
        self.s, self.answer_line = server, answer_line
        self.history = History(server.metrics, server.wall_time)
        self.names = frozenset(name.lower() for name in server.config.admin_names)
        self.last_verify: dict | None = None
        self._scraped: tuple[float, bytes] | None = None  # (when, the Prometheus text rendered then)
        self._rendering: trio.Event | None = None
        self._reading = trio.CapacityLimiter(1)
        config = server.config
        self.reader = PageReader(config.db, config.read_timeout) if config.threaded and config.db != ":memory:" \
            else None
        self._verifying: trio.Event | None = None
        self._verify_free = 0.0  # (Trio time) when the next verify may start
        self.api: dict[bytes, Callable[[dict[str, list[str]], bytes, Claims | None], Awaitable[Any]]] = {
            b"/api/login": self.login, b"/api/config": self.config, b"/api/accounts": self.accounts,
            b"/api/history": self.account_history, b"/api/order": self.order, b"/api/head": self.head_and_verify,
            b"/api/metrics": self.chart, b"/api/verify": self.verify,
        }
        # reconciliation (issue 23): a provider's rounds and day totals, and its open rounds on /metrics
        self.api.update({b"/api/rounds": self.rounds, b"/api/report": self.day_report})
        # issue 25: filtered records of the whole ledger, and a round by its game id
        self.api.update({b"/api/records": self.records, b"/api/round": self.round})
        self.open_rounds = reports.OpenRounds(server.read, server.wall_time)
        server.metrics.registry.register(self.open_rounds)
        server.metrics.bind_verify(lambda: self.last_verify)

    def head(self, request: Request, arrived: bytes | None) -> Response | None:
        path = request.target.partition(b"?")[0]
        headers = dict(request.headers)
        if not self._own(headers.get(b"host", b"")):
            return _error(421, "MISDIRECTED_REQUEST", "this is not a name of the admin listener: use its address "
                                                      "(or give the name with --admin-names)")
        if path in API:
            method, sessions = API[path]
            if request.method != method:
                refusal = _error(405, "METHOD_NOT_ALLOWED", f"use {method.decode()}")
                refusal.headers += ((b"allow", method),)
                return refusal
            origin = headers.get(b"origin")
            scheme = b"https://" if self.s.config.tls_cert is not None else b"http://"
            if origin is not None and not (origin.startswith(scheme) and self._own(origin[len(scheme):])):
                return _error(403, "CROSS_ORIGIN", "a request from another site's page (its Origin is not this "
                                                   "listener's)")
            if method == b"POST" and headers.get(b"content-type", b"").partition(b";")[0].strip().lower() != \
                    b"application/json":
                return _error(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be sent as Content-Type: application/json")
            claims = self._claims(request, sessions)
            return claims if isinstance(claims, Response) else None
        if path not in OPS and path not in PAGE:
            return Response(404, b'{"error":"not found"}')
        if request.method not in (b"GET", b"HEAD"):
            return Response(405, b'{"error":"use GET"}', ((b"allow", b"GET"),))
        return None

    def _own(self, host: bytes) -> bool:
        """Whether a Host (or an Origin's host) names this listener: its address and port as bound on this
        connection (``localhost`` too on loopback), or a name of ``admin_names`` with any port."""
        own = OWN.get()
        if own is None:
            return True
        host = host.lower()
        name = host.rpartition(b":")[0] if host.rpartition(b":")[2].isdigit() and not host.endswith(b"]") else host
        return host in own or name.decode("latin-1") in self.names

    def too_large(self, request: Request) -> Response:
        return _error(413, "INVALID_DATA", "the request body is too large")

    async def handle(self, request: Request, body: bytes) -> Response:
        answer = await self._answer(request, body)
        if request.method == b"HEAD":  # the head alone (the driver sends no body after a HEAD)
            answer.body = b""
        return answer

    async def _answer(self, request: Request, body: bytes) -> Response:
        path, _, query = request.target.partition(b"?")
        if path in API:
            return await self._api(request, path, query, body)
        if path in PAGE:
            name, content_type = PAGE[path]
            return Response(200, page_file(name), PAGE_HEADERS, content_type=content_type)
        if path == b"/metrics":
            return Response(200, await self._metrics(), content_type=CONTENT_TYPE_LATEST.encode())
        if path == b"/healthz":
            return Response(200, b'{"status":"ok"}')
        problems = self.not_ready()
        return Response(503 if problems else 200,
                        orjson.dumps({"status": "not ready" if problems else "ready", "problems": problems}))

    async def _metrics(self) -> bytes:
        """The Prometheus text, rendered in a worker thread at most once every METRICS_EVERY seconds: a scrape
        that comes while a rendering runs waits for it, and one whose connection has had this rendering already
        waits for the next. A flood of scrapes costs one rendering a second, and one answer a second a connection."""
        while True:
            if self._scraped is not None and trio.current_time() < self._scraped[0] + METRICS_EVERY:
                if self._scraped[0] != SCRAPED.get():
                    break
                await trio.sleep_until(self._scraped[0] + METRICS_EVERY)
            elif self._rendering is not None:
                await self._rendering.wait()
            else:
                self._rendering = done = trio.Event()
                try:
                    await self.open_rounds.fresh()  # (read off the event loop, waited for a second at most)
                    self.s.metrics.ready.set(0 if self.not_ready() else 1)
                    text = await trio.to_thread.run_sync(generate_latest, self.s.metrics.registry)
                    self._scraped = (trio.current_time(), text)
                finally:
                    self._rendering = None
                    done.set()
                break
        SCRAPED.set(self._scraped[0])  # (this connection's task: the next scrape on it sees it)
        return self._scraped[1]

    def not_ready(self) -> list[str]:
        """Why the server would not take work now (empty: it would)."""
        s, problems = self.s, []
        if s.failure is not None:
            problems.append(f"stopped: {s.failure}")
        if s.stopping:
            problems.append("shutting down")
        if s.mainloop.stopped.is_set():
            problems.append("the mainLoop is not running")
        if not s.store_writable():
            problems.append("the ledger file is not writable")
        if s.writer is not None and not s.mainloop.stopped.is_set():
            state = s.writer.state()
            if state in (None, "Z", "X"):
                problems.append("the writer process has ended")
            elif state in ("T", "t"):
                problems.append("the writer process is stopped (SIGSTOP or a debugger): no batch can be applied")
        problems += s.watch.stalled()
        return problems

    # ---- the back-office page's JSON API: the manager API's tokens, session types, reads and answers

    def _claims(self, request: Request, sessions: frozenset[int] | None) -> Claims | Response | None:
        """The claims of the request's ``Authorization: Bearer`` token, or its refusal (401, 403)."""
        if sessions is None:
            return None
        auth = dict(request.headers).get(b"authorization", b"").decode("latin-1")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        try:
            claims = self.s.tokens.verify(token)
            self.s.keys.check(claims)
        except AuthError as e:
            return _error(401, e.code, "a valid manager token is required (Authorization: Bearer)"
                          if e.code == "UNAUTHORIZED" else e.message)
        if claims.session not in sessions:
            allowed = ", ".join(SESSION_NAMES[s] for s in sorted(sessions))
            return _error(403, "FORBIDDEN", f"this is for {allowed} sessions, not {SESSION_NAMES[claims.session]}")
        return claims

    async def _api(self, request: Request, path: bytes, query: bytes, body: bytes) -> Response:
        claims = self._claims(request, API[path][1])  # again: it may have expired while the body came
        if isinstance(claims, Response):
            return claims
        if claims is not None:
            try:
                await self.s.authorize(claims)  # (the managers' keys read again, if due)
            except AuthError as e:
                return _error(401, e.code, e.message)
        try:
            if self.s.stopping:
                raise ShuttingDown()
            args = parse_qs(query.decode("ascii", "replace"), keep_blank_values=True, max_num_fields=20)
            return await self.api[path](args, body, claims)
        except Refused as e:
            return _error(e.status, e.code, e.message)
        except ValueError as e:  # parse_qs: too many fields
            return _error(400, "INVALID_DATA", str(e))
        except ShuttingDown:
            return _error(503, "SHUTTING_DOWN", "the server is shutting down")
        except ReadStalled as e:
            return _error(503, "LEDGER_UNAVAILABLE", f"{e}; nothing was changed: try again")
        except Exception:
            log.exception("%s failed", path.decode())
            return _error(500, "INTERNAL", f"{path.decode()} failed inside the server; nothing was changed")

    async def _read(self, name: str, *args: Any) -> Any:
        """A read of PAGE_READS for the page, one at a time: in the reader process (a ledger file or URL), else
        on the server's own reads (an in-memory ledger, or one kept on the Trio thread)."""
        if self.s.mainloop.failure is not None:
            raise ShuttingDown()
        if self.reader is None:
            async with self._reading:
                return await self.s.read(PAGE_READS[name], *args)
        return await self.reader(name, *args)

    async def login(self, args: dict, body: bytes, claims: None) -> Response:
        """The manager API's own Login (throttle by address and login, scrypt, logging), answered as JSON."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Refused(400, "INVALID_JSON", "the body must be a JSON object {login, password}") from None
        answer = await self.answer_line(orjson.dumps({"command": "Login", "data": data}), *PEER.get())
        if answer is None:
            raise Refused(500, "INTERNAL", "Login gave no answer")
        reply = orjson.loads(answer)
        reply.pop("extID", None)
        return Response(reply["status"], orjson.dumps(reply), API_HEADERS)

    async def config(self, args: dict, body: bytes, claims: Claims) -> Response:
        host = self.s.config.host
        ports = self.s.ports
        return _ok({"ws_port": ports.ws if ports else None, "ws_host": None if host in ("", "0.0.0.0", "::") else host,
                    "tls": self.s.config.tls_cert is not None, "login": claims.login,
                    "session": SESSION_NAMES[claims.session], "chart_interval": self.history.interval})

    async def accounts(self, args: dict, body: bytes, claims: Claims) -> Response:
        text = _text(args, "q", 100)
        page = await self._read("accounts", text, _int(args, "from_login", 0), _int(args, "limit", 100, 1, MAX_PAGE))
        return _ok(orjson.Fragment(page))

    async def account_history(self, args: dict, body: bytes, claims: Claims) -> Response:
        """An account and a page of its records, by the filters of :func:`_filters`."""
        login = _int(args, "login")
        page = await self._read("history", login, _filters(args), _int(args, "before", None, 1),
                                _int(args, "limit", 50, 1, MAX_PAGE))
        if page is None:
            raise Refused(404, "ACCOUNT_NOT_FOUND", f"no account {login}")
        return _ok(orjson.Fragment(page))

    async def records(self, args: dict, body: bytes, claims: Claims) -> Response:
        """A page of the whole ledger's records (or an account's: ``login``), by the filters of :func:`_filters`."""
        page = await self._read("records", _int(args, "login", None, 1), _filters(args),
                                _int(args, "before", None, 1), _int(args, "limit", 50, 1, MAX_PAGE))
        return _ok(orjson.Fragment(page))

    async def round(self, args: dict, body: bytes, claims: Claims) -> Response:
        """A provider's round ``game_id`` with every call of it: an account's (``login``), or a page of the
        accounts that have one (``after``: the last page's ``next``; ``limit`` rounds)."""
        provider = _text(args, "provider", reports.MAX_PROVIDER)
        game_id = _key(args, "game_id", MAX_WALLET_ID)
        if not provider or game_id is None:
            raise Refused(400, "INVALID_DATA", "provider and game_id are required")
        page = await self._read("round", provider, game_id, _int(args, "login", None, 1), _int(args, "after", None),
                                _int(args, "limit", 20, 1, MAX_ROUNDS))
        if page is None:
            raise Refused(404, "PROVIDER_NOT_FOUND", f"no provider {provider}")
        return _ok(orjson.Fragment(page))

    async def order(self, args: dict, body: bytes, claims: Claims) -> Response:
        order = _int(args, "order")
        page = await self._read("versions", order)
        if page is None:
            raise Refused(404, "ORDER_NOT_FOUND", f"no order {order}")
        return _ok(orjson.Fragment(page))

    async def head_and_verify(self, args: dict, body: bytes, claims: Claims) -> Response:
        now = await self._read("head")
        return _ok({"head": now, "seq": int(now.partition(":")[0]), "verify": self.last_verify,
                    "verifying": self._verifying is not None})

    async def chart(self, args: dict, body: bytes, claims: Claims) -> Response:
        h = self.history
        return _ok({"now": round(self.s.wall_time(), 3), "interval": h.interval, "window": h.window,
                    "points": h.points()})

    async def verify(self, args: dict, body: bytes, claims: Claims) -> Response:
        """Audit the ledger on a snapshot of its own; a request that comes while one runs (or waits for its
        turn) gets that one's result. A verify starts no sooner than VERIFY_REST times the last one's length
        after it ended: a loop of them keeps a verify process busy at most a quarter of the time."""
        if self._verifying is not None:
            await self._verifying.wait()
            return _ok(self.last_verify)
        self._verifying = done = trio.Event()
        try:
            await trio.sleep_until(self._verify_free)
            started = trio.current_time()
            self.last_verify = await self._audit(claims.login)
            self._verify_free = trio.current_time() + VERIFY_REST * (trio.current_time() - started)
        finally:
            self._verifying = None
            done.set()
        return _ok(self.last_verify)

    # ---- reconciliation (issue 23): the page's rounds view and per-provider day totals

    async def rounds(self, args: dict, body: bytes, claims: Claims) -> Response:
        """A page of a provider's rounds: ``provider`` (required), ``open`` (1: open ones only), ``older_than``
        (seconds), ``game_id``, ``login``, ``after`` (the last page's ``next``), ``limit``."""
        provider = _text(args, "provider", reports.MAX_PROVIDER)
        if not provider:
            raise Refused(400, "INVALID_DATA", "provider is required")
        open_only = _flag(args, "open")
        older = _int(args, "older_than", None)
        after = _text(args, "after", 400) or None
        if after is not None and not reports.valid_cursor(after):
            raise Refused(400, "INVALID_DATA", "after must be the next of an earlier page")
        page = await self._read("rounds", provider, open_only, None if older is None else self.s.now() - older,
                                _text(args, "game_id", 255) or None, _int(args, "login", None, 1), after,
                                _int(args, "limit", 100, 1, MAX_PAGE))
        if page is None:
            raise Refused(404, "PROVIDER_NOT_FOUND", f"no provider {provider}")
        return _ok(orjson.Fragment(page))

    async def day_report(self, args: dict, body: bytes, claims: Claims) -> Response:
        """The totals of a UTC ``day`` (YYYY-MM-DD; default today) per currency, of ``provider`` or of each."""
        day = _text(args, "day", 10) or time.strftime("%Y-%m-%d", time.gmtime(self.s.now()))
        if not reports.valid_day(day):
            raise Refused(400, "INVALID_DATA", "day must be a day as YYYY-MM-DD")
        provider = _text(args, "provider", reports.MAX_PROVIDER) or None
        page = await self._read("report", provider, day)
        if page is None:
            raise Refused(404, "PROVIDER_NOT_FOUND", f"no provider {provider}")
        return _ok(orjson.Fragment(page))

    async def _audit(self, login: int) -> dict:
        at, started = self.s.wall_time(), trio.current_time()
        path = self.s.config.db
        try:
            if path == ":memory:":  # no file to open: between two batches, on the writer's connection
                done = await self.s.mainloop.read(verify, self.s.store.db)
                report = {**dataclasses.asdict(done), "text": str(done)}
            else:  # a read-only snapshot, in a process of its own: neither the writer nor the event loop waits
                report = await _verify_process(path)
            result = {key: report[key] for key in ("ok", "text", "problem", "head", "finance_rows", "events",
                                                   "accounts")}
        except ShuttingDown:
            raise
        except Exception as e:  # not a ledger this program reads, the file vanished, too slow, ...
            result = {"ok": False, "text": f"FAILED: verify could not run: {e}", "problem": str(e), "head": None,
                      "finance_rows": 0, "events": 0, "accounts": 0}
        seconds = round(trio.current_time() - started, 3)
        log.info("verify from the back-office page (manager %d): %s", login, result["text"],
                 extra={"login": login, "ok": result["ok"], "head": result["head"],
                        "duration_ms": round(seconds * 1000), "finance_rows": result["finance_rows"],
                        "events": result["events"], "accounts": result["accounts"]})
        return {**result, "at": int(at), "seconds": seconds, "by": login}


# The verify process: the ledger's path on stdin (a command line would show a PostgreSQL URL's password to
# ps), its report as JSON on stdout; at nice 10, behind the server and its writer.
_VERIFY = ("import dataclasses, os, sys, orjson\nos.nice(10)\nfrom syncledger.ledger import verify_path\n"
           "r = verify_path(sys.stdin.read())\n"
           "sys.stdout.buffer.write(orjson.dumps({**dataclasses.asdict(r), 'text': str(r)}))\n")


async def _verify_process(path: str) -> dict:
    """``verify_path(path)`` in a child process, within VERIFY_TIMEOUT seconds."""
    with trio.move_on_after(VERIFY_TIMEOUT):
        done = await trio.run_process([sys.executable, "-P", "-c", _VERIFY], stdin=path.encode(),
                                      capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"the verify process ended with {done.returncode}")
        return orjson.loads(done.stdout)
    raise RuntimeError(f"it did not finish within {VERIFY_TIMEOUT:g} s (the ledger may be too large to verify "
                       "from the page: run syncledger verify)")


def _accounts_page(db: Any, text: str, from_login: int, limit: int) -> bytes:
    """A page of accounts and the seq of the snapshot they were read in (events after it are newer), as JSON."""
    users, following = reads.find_accounts(db, text, from_login, limit)
    return orjson.dumps({"accounts": users, "next_from_login": following, "seq": reads.last_seq(db)})


def _history_page(db: Any, login: int, filters: dict, before: int | None, limit: int) -> bytes | None:
    """An account and a page of its records by ``filters`` (reads.find_records'), as JSON (None: no such
    account)."""
    account = reads.account(db, login)
    if account is None:
        return None
    records, older = reads.find_records(db, login=login, **filters, before=before, limit=limit)
    return orjson.dumps({"account": account, "records": records, "older": older})


def _records_page(db: Any, login: int | None, filters: dict, before: int | None, limit: int) -> bytes:
    """A page of records by ``filters`` (reads.find_records'), of an account or of every one, as JSON."""
    records, older = reads.find_records(db, login=login, **filters, before=before, limit=limit)
    return orjson.dumps({"records": records, "older": older})


def _versions_page(db: Any, order: int) -> bytes | None:
    """Every version of an order, as JSON (None: no such order)."""
    found = reads.order_records(db, order)
    return orjson.dumps({"order": order, "versions": found}) if found else None


PAGE_READS: dict[str, Callable[..., Any]] = {"accounts": _accounts_page, "history": _history_page,
                                             "versions": _versions_page, "head": head}
PAGE_READS.update({"rounds": reports.rounds_page, "report": reports.report_page})  # reconciliation
PAGE_READS.update({"records": _records_page, "round": reports.round_page})  # issue 25


class PageReader:
    """The page's reads of a ledger file (or PostgreSQL URL), one at a time, in a process of its own that keeps
    a read-only connection (python -m syncledger.server.admin.app): neither their SQL nor the Python that turns
    rows into JSON runs in the server's interpreter, whose threads share one lock with the event loop. Each
    read gives JSON bytes or a head; one that takes longer than ``timeout`` is answered ReadStalled, as the
    read pool's are, and the process replaced. A read starts no sooner than ``rest`` times the last one's
    length after it ended, so that loops of reads (scripts paging the whole ledger) keep the process busy at
    most 1 / (1 + rest) of the time, and the server's own share of their bytes with it."""

    def __init__(self, path: str, timeout: float, rest: float = 1.0):
        self.path, self.timeout, self.rest = path, timeout, rest
        self._limit = trio.CapacityLimiter(1)
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._free_at = 0.0  # (Trio time) when the next read may start

    async def __call__(self, name: str, *args: Any) -> Any:
        async with self._limit:
            await trio.sleep_until(self._free_at)
            try:
                with trio.fail_after(self.timeout):
                    if self._conn is None:
                        await trio.to_thread.run_sync(self._start)
                    started = trio.current_time()  # (a read's length, without the process's start)
                    self._conn.send_bytes(marshal.dumps((name, args)))  # type: ignore[union-attr]
                    ok, value = marshal.loads(await trio.to_thread.run_sync(self._conn.recv_bytes,  # type: ignore
                                                                            abandon_on_cancel=True))
            except BaseException as e:
                self.close()  # (its answer may be on its way: the next read gets a new process)
                if isinstance(e, trio.TooSlowError):
                    raise ReadStalled(f"the ledger did not answer a read within {self.timeout:g} s") from None
                if isinstance(e, (EOFError, OSError)):
                    raise RuntimeError("the back-office page's reader process ended") from None
                raise
            self._free_at = trio.current_time() + self.rest * (trio.current_time() - started)  # (answered)
        if not ok:
            raise RuntimeError(f"in the page's reader process: {value}")
        return value

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen([sys.executable, "-P", "-m", "syncledger.server.admin.app",
                                              str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                             stdin=subprocess.DEVNULL)
        self._conn = Connection(ours.detach())
        self._conn.send_bytes(self.path.encode())  # (never on its command line: a PostgreSQL URL's password)

    def close(self) -> None:
        """End the process (it also ends by itself when the server's end of its socket closes)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            # (its socket is closed when nothing holds it: a thread abandoned in recv_bytes may, until it sees EOF)
            self._process = self._conn = None


def _page_reads(fd: int) -> None:
    """The reader process: the ledger's path first, then each (read, args) answered (True, result) or (False,
    what failed), each read in a snapshot of its own, until the server's end closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (a ^C in the server's terminal is the server's to handle)
    os.nice(10)  # behind the server and its writer, as a verify (at 19, a loaded machine starved it past its read
    # timeout; 19 measured no better p99 for the server's clients than 10: docs/benchmarks.md)
    conn = Connection(fd)
    path, db = conn.recv_bytes().decode(), None
    while True:
        try:
            name, args = marshal.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            db = db or engine.connect_ro(path, on_open=engine.bound_session)
            conn.send_bytes(marshal.dumps((True, _in_snapshot(PAGE_READS[name], db, *args))))
        except Exception as e:  # the connection is opened again for the next read
            db = _closed(db)
            conn.send_bytes(marshal.dumps((False, f"{type(e).__name__}: {e}")))


def _closed(db: Any) -> None:
    """Close ``db`` (if any) whatever state it is in."""
    try:
        if db is not None:
            db.close()
    except Exception:
        pass


def _text(args: dict[str, list[str]], name: str, longest: int) -> str:
    value = args.get(name, [""])[-1].strip()
    if len(value) > longest:
        raise Refused(400, "INVALID_DATA", f"{name} is longer than {longest} characters")
    return value


def _key(args: dict[str, list[str]], name: str, longest: int) -> str | None:
    """An id as given (not stripped: an extID or transaction id is matched exactly); None: not given."""
    value = args.get(name, [""])[-1]
    if len(value) > longest:
        raise Refused(400, "INVALID_DATA", f"{name} is longer than {longest} characters")
    return value or None


def _filters(args: dict[str, list[str]]) -> dict:
    """The record filters of a query, for reads.find_records: ``cmd`` (a command's name), ``from`` and ``to``
    (Unix seconds: recorded in [from, to)), ``ext_id`` (a manager's extID), ``txid`` (a wallet transaction id)."""
    name = _text(args, "cmd", 16)
    if name and name not in reads.COMMANDS:
        raise Refused(400, "INVALID_DATA", f"cmd must be one of {', '.join(reads.COMMANDS)}")
    start, end = _int(args, "from", None), _int(args, "to", None)
    if start is not None and end is not None and end <= start:
        raise Refused(400, "INVALID_DATA", "to must be after from")
    return {"cmd": reads.COMMANDS[name] if name else None, "start": start, "end": end,
            "ext_id": _key(args, "ext_id", MAX_EXT_ID), "txid": _key(args, "txid", MAX_WALLET_ID)}


def _flag(args: dict[str, list[str]], name: str) -> bool:
    value = args.get(name, [""])[-1].strip().lower()
    if value not in ("", "0", "1", "true", "false"):
        raise Refused(400, "INVALID_DATA", f"{name} must be 1 or 0")
    return value in ("1", "true")


_MISSING = object()


def _int(args: dict[str, list[str]], name: str, default: Any = _MISSING, low: int = 0, high: int = 2**62) -> Any:
    value = args.get(name, [""])[-1].strip()
    if not value:
        if default is _MISSING:
            raise Refused(400, "INVALID_DATA", f"{name} is required")
        return default
    if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
        raise Refused(400, "INVALID_DATA", f"{name} must be a whole number from {low} to {high}")
    return int(value)


class AdminServer(HttpServer):
    """The admin listener: the HTTP driver, each connection's peer address known to Login's throttle, and
    the sampler of the page's chart running beside it."""

    async def serve(self, listener: Listener, *, connections: trio.Nursery,
                    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        connections.start_soon(self.app.history.run)
        connections.start_soon(self.app.open_rounds.run)  # (the open rounds of /metrics)
        try:
            await super().serve(listener, connections=connections, task_status=task_status)
        finally:
            if self.app.reader is not None:
                self.app.reader.close()

    async def _connection(self, stream: trio.abc.Stream) -> None:
        PEER.set(_peer(stream))
        OWN.set(_own_hosts(stream, self.app.s.config.tls_cert is not None))
        await super()._connection(stream)


def _peer(stream: trio.abc.Stream) -> tuple[str, str]:
    address, endpoint = peer_endpoint(stream)
    return ("admin", "admin") if address == "memory" else (address, endpoint)


def _own_hosts(stream: trio.abc.Stream, tls: bool) -> frozenset[bytes] | None:
    """The Host values that name the listener's end of ``stream``: ``IP:PORT`` as bound (IP alone on the
    scheme's default port), and ``localhost:PORT`` on loopback. None: not a socket."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    try:
        address, port = stream.socket.getsockname()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, TypeError):
        return None
    ip = ipaddress.ip_address(address.partition("%")[0])
    ips = [ip, ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [ip]
    names = [f"[{a}]" if a.version == 6 else str(a) for a in ips] + (["localhost"] if ip.is_loopback else [])
    default = port == (443 if tls else 80)
    return frozenset(f"{name}:{port}".encode() for name in names) | frozenset(
        name.encode() for name in names if default)


if __name__ == "__main__":  # the page's reader process (PageReader)
    _page_reads(int(sys.argv[1]))
