"""The back-office page: its JSON API on the admin listener (tokens, session types, reads, verify, the chart's
history), and the page itself end to end in headless Chromium against a real server on real sockets."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import threading
import time
from decimal import Decimal
from functools import partial

import httpx
import orjson
import pytest
import trio

from syncledger.server.admin import app as observe
from syncledger.server.ops import managers
from syncledger.ledger import reads
from syncledger.server.auth import SESSION_ADMIN, SESSION_DEALER, SESSION_MANAGER, SESSION_USER, LoginThrottle
from syncledger.server.admin.history import History
from syncledger.server.metrics import Metrics
from syncledger.server.testing import faults_of
from tests.conftest import add_account, admin_token, tcp_client

PASSWORD = "correct horse battery staple"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
GETS = ["/api/config", "/api/accounts", "/api/history?login=1000", "/api/order?order=1", "/api/head", "/api/metrics"]


def add_manager(srv, login: int, session: int = SESSION_ADMIN, password: str = PASSWORD) -> None:
    """A manager that can log in (as ``syncledger manager add`` stores it), beside the running server."""
    db = sqlite3.connect(srv.config.db, isolation_level=None, timeout=10)
    try:
        managers.add_manager(db, login, password, session, int(time.time()))
    finally:
        db.close()
    srv.reload_keys()


def http(srv, token: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.ports.admin}", headers=headers, timeout=30)


# ---- the JSON API


async def test_every_api_call_needs_a_valid_manager_token(server):
    async with http(server) as h:
        for path in GETS:
            r = await h.get(path)
            assert (r.status_code, r.json()["error"]) == (401, "UNAUTHORIZED"), path
            r = await h.get(path, headers={"authorization": "Bearer not-a-token"})
            assert (r.status_code, r.json()["error"]) == (401, "INVALID_TOKEN"), path
        r = await h.post("/api/verify", json={})
        assert (r.status_code, r.json()["error"]) == (401, "UNAUTHORIZED")
        assert r.headers["cache-control"] == "no-store"
        assert (await h.post("/api/accounts")).status_code == 405
        assert (await h.get("/api/verify")).status_code == 405
        assert (await h.get("/api/nothing")).status_code == 404


async def test_a_page_of_another_site_gets_nothing(server):
    """DNS rebinding (a name of the attacker's that resolves to loopback) and cross-site requests (a form or a
    fetch of another page, which cannot set Content-Type: application/json without CORS): refused before any
    token, password or ledger is looked at, and the connection goes on."""
    add_manager(server, 7)
    port = server.ports.admin
    own = {"login": 7, "password": "wrong password"}
    async with http(server) as h:
        for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"localhost.evil.example:{port}"):
            for path in ("/metrics", "/healthz", "/", "/api/head"):
                r = await h.get(path, headers={"host": host})
                assert (r.status_code, r.json()["error"]) == (421, "MISDIRECTED_REQUEST"), (host, path)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):  # its own address, loopback
            assert (await h.get("/metrics", headers={"host": host})).status_code == 200, host
        r = await h.post("/api/login", content=orjson.dumps(own), headers={"content-type": "text/plain"})
        assert (r.status_code, r.json()["error"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
        r = await h.post("/api/login", content=orjson.dumps(own))  # no Content-Type at all
        assert r.status_code == 415
        for origin in ("http://evil.example", "null", f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"):
            r = await h.post("/api/login", json=own, headers={"origin": origin})
            assert (r.status_code, r.json()["error"]) == (403, "CROSS_ORIGIN"), origin
            r = await h.get("/api/head", headers={"origin": origin, "authorization": f"Bearer {admin_token(server)}"})
            assert r.status_code == 403, origin
        # nothing of those counted as a failed login: manager 7 is not throttled
        for _ in range(4):  # (the fifth failure would be the last free one)
            r = await h.post("/api/login", json=own, headers={"origin": f"http://localhost:{port}"})
            assert r.status_code == 401
        r = await h.post("/api/login", json={"login": 7, "password": PASSWORD},
                         headers={"content-type": "application/json; charset=utf-8"})
        assert r.status_code == 200


async def test_names_the_listener_is_reached_by_can_be_configured(start_server):
    srv = await start_server(admin_names=("ledger.example",))
    async with http(srv) as h:
        for host in ("ledger.example", "ledger.example:8443", f"LEDGER.example:{srv.ports.admin}"):
            assert (await h.get("/healthz", headers={"host": host})).status_code == 200, host
        r = await h.get("/api/head", headers={"host": "ledger.example", "origin": "http://ledger.example:8443",
                                              "authorization": f"Bearer {admin_token(srv)}"})
        assert r.status_code == 200
        assert (await h.get("/healthz", headers={"host": "other.example"})).status_code == 421


async def test_session_types_rule_as_in_the_manager_api(server):
    async with tcp_client(server) as c:
        login = await add_account(c)
    user = server.tokens.issue(login, SESSION_USER)[0]  # an account's own session: Ping only
    dealer, manager, admin_ = (admin_token(server, n, s) for n, s in ((2, SESSION_DEALER), (3, SESSION_MANAGER),
                                                                       (4, SESSION_ADMIN)))
    async with http(server, user) as h:
        r = await h.get("/api/accounts")
        assert (r.status_code, r.json()["error"]) == (403, "FORBIDDEN")
    for token in (dealer, manager):
        async with http(server, token) as h:
            for path in GETS[:2] + [f"/api/history?login={login}", "/api/head", "/api/metrics"]:
                assert (await h.get(path)).status_code == 200, path
            r = await h.post("/api/verify", json={})  # a whole-ledger audit: ADMIN only
            assert (r.status_code, r.json()["error"]) == (403, "FORBIDDEN") and "ADMIN" in r.json()["message"]
    async with http(server, admin_) as h:
        assert (await h.post("/api/verify", json={})).json()["data"]["ok"] is True
        config = (await h.get("/api/config")).json()["data"]
    assert config["ws_port"] == server.ports.ws and (config["login"], config["session"]) == (4, "ADMIN")
    db = sqlite3.connect(server.config.db, isolation_level=None, timeout=10)
    managers.remove_manager(db, 2)
    db.close()
    server.reload_keys()
    async with http(server, dealer) as h:  # a removed manager's token: refused by the same check as on TCP
        r = await h.get("/api/head")
    assert (r.status_code, r.json()["error"]) == (401, "TOKEN_REVOKED")


async def test_login_is_the_manager_apis_login_throttle_included(server):
    add_manager(server, 7)
    async with http(server) as h:
        r = await h.post("/api/login", json={"login": 7, "password": PASSWORD})
        assert r.status_code == 200 and r.json()["data"]["session"] == SESSION_ADMIN
        token = r.json()["data"]["token"]
        assert (await h.get("/api/head", headers={"authorization": f"Bearer {token}"})).status_code == 200
        r = await h.post("/api/login", content=b"not json", headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (400, "INVALID_JSON")
        r = await h.post("/api/login", json={"login": 7})
        assert (r.status_code, r.json()["error"]) == (400, "INVALID_DATA") and "password" in r.json()["message"]
        assert (await h.get("/api/login")).status_code == 405
        for _ in range(5):  # the first failures from an address are free ...
            r = await h.post("/api/login", json={"login": 7, "password": "wrong password"})
            assert (r.status_code, r.json()) == (401, {"status": 401, "error": "INVALID_CREDENTIALS",
                                                       "message": "wrong login or password"})
        r = await h.post("/api/login", json={"login": 7, "password": PASSWORD})  # ... then it waits, as on TCP
        assert (r.status_code, r.json()["error"]) == (429, "TOO_MANY_REQUESTS")
    async with tcp_client(server, None) as c:  # the same address, the same throttle
        assert (await c.login(7, PASSWORD)).status == 429


async def test_one_logins_failures_lock_out_no_other_login(server):
    """The throttle counts per (address, login): a page that fails login 7 again and again (or any local
    process) leaves manager 8 free to log in from the same address; a spray over many logins still waits."""
    add_manager(server, 7)
    add_manager(server, 8)
    async with http(server) as h:
        for _ in range(12):
            await h.post("/api/login", json={"login": 7, "password": "wrong password"})
        r = await h.post("/api/login", json={"login": 7, "password": PASSWORD})
        assert (r.status_code, r.json()["error"]) == (429, "TOO_MANY_REQUESTS")
        r = await h.post("/api/login", json={"login": 8, "password": PASSWORD})
        assert r.status_code == 200 and r.json()["data"]["session"] == SESSION_ADMIN
    async with tcp_client(server, None) as c:  # the TCP API's Login shares the throttle: 8 is free there too
        assert (await c.login(8, PASSWORD)).ok and (await c.login(7, PASSWORD)).status == 429


def test_the_throttle_bounds_an_address_that_sprays_many_logins():
    now = [0.0]
    t = LoginThrottle(lambda: now[0], free=2, spray=5)
    assert [t.attempt("a", 1) for _ in range(3)] == [0, 0, 1.0]  # login 1: two free, then it waits
    assert t.attempt("a", 2) == 0 and t.attempt("b", 1) == 0  # another login, another address: free
    assert [t.attempt("a", login) for login in range(3, 6)] == [0, 0, 1.0]  # the address's bound: 5 in all
    now[0] = 1.0
    t.succeeded("a", 3)  # a success clears that login's count, not the address's
    assert t.attempt("a", 6) == 0 and t.attempt("a", 7) == 2.0
    now[0] = 2000.0  # past the window: all forgotten
    assert t.attempt("a", 1) == 0 and t.attempt("a", 7) == 0


async def test_accounts_history_and_order_versions(server):
    async with tcp_client(server) as c:
        alice = (await c.call("AddUser", {"name": "Alice Example", "currency": "EUR"})).data["login"]
        bob = (await c.call("AddUser", {"name": "Bob_100%", "currency": "USD"})).data["login"]
        big = Decimal("123456789012.345678")
        order = (await c.call("CreditInSync", {"login": alice, "amount": big, "comment": "big"})).data["order"]
        assert (await c.call("BalanceInSync", {"login": alice, "amount": Decimal("0.000001")})).ok
        assert (await c.call("CreditInSync", {"login": alice, "amount": 5, "comment": "fixed", "order": order})).ok
    async with http(server, admin_token(server)) as h:
        async def get(path: str) -> dict:
            r = await h.get(path)
            assert r.status_code == 200, r.text
            return json.loads(r.text, parse_float=Decimal)["data"]
        found = await get("/api/accounts?q=ALICE")
        assert [a["login"] for a in found["accounts"]] == [alice] and found["seq"] == 3
        assert [a["login"] for a in (await get(f"/api/accounts?q={bob}"))["accounts"]] == [bob]  # login prefix
        assert [a["login"] for a in (await get("/api/accounts?q=bob_100%25"))["accounts"]] == [bob]  # % and _ are
        assert [a["login"] for a in (await get("/api/accounts?q=b%25"))["accounts"]] == []  # characters
        assert [a["login"] for a in (await get("/api/accounts?q=example"))["accounts"]] == []  # a prefix, not a part
        page = await get("/api/accounts?limit=1")
        assert [a["login"] for a in page["accounts"]] == [alice] and page["next_from_login"] == bob
        r = await h.get("/api/accounts?q=alice")
        assert '"balance":0.000001,"credit":5.0' in r.text  # exact decimal text, as on the manager API

        first = await get(f"/api/history?login={alice}&limit=2")
        assert first["account"]["name"] == "Alice Example"
        assert [(x["order"], x["version"]) for x in first["records"]] == [(order, 2), (order + 1, 1)]
        rest = await get(f"/api/history?login={alice}&limit=2&before={first['older']}")
        assert [(x["order"], x["version"]) for x in rest["records"]] == [(order, 1)] and rest["older"] is None
        assert '"amount":123456789012.345678' in (await h.get(f"/api/history?login={alice}&before=2")).text

        versions = (await get(f"/api/order?order={order}"))["versions"]
        assert [(v["version"], v["comment"]) for v in versions] == [(1, "big"), (2, "fixed")]
        assert versions[1]["delta"] == Decimal("5") - big and versions[1]["credit"] == 5
        for path, status, code in [("/api/order?order=999", 404, "ORDER_NOT_FOUND"),
                                   ("/api/order?order=x1", 400, "INVALID_DATA"),
                                   ("/api/history?login=999", 404, "ACCOUNT_NOT_FOUND"),
                                   ("/api/history", 400, "INVALID_DATA"),
                                   ("/api/accounts?limit=0", 400, "INVALID_DATA")]:
            r = await h.get(path)
            assert (r.status_code, r.json()["error"]) == (status, code), path


async def test_the_pages_reads_run_in_a_process_of_its_own(server, monkeypatch):
    """Neither the SQL of the page's reads nor the Python that turns their rows into JSON runs in the server's
    interpreter (whose worker threads share its lock with the event loop): one process, one read at a time,
    while the manager API's reads keep the server's read connections."""
    def in_the_server(*args, **kwargs):
        raise AssertionError("a page read ran inside the server's process")
    async with tcp_client(server) as c:
        login = (await c.call("AddUser", {"name": "Alice Example"})).data["login"]
        order = (await c.call("CreditInSync", {"login": login, "amount": 5, "comment": "x"})).data["order"]
    for name in ("find_accounts", "history", "versions"):  # (the manager API reads accounts itself)
        monkeypatch.setattr(reads, name, in_the_server)
    async with http(server, admin_token(server)) as h, tcp_client(server) as c:
        async def one(path: str) -> None:
            assert (await h.get(path)).status_code == 200, path
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                for path in (f"/api/history?login={login}", "/api/accounts?q=ali", f"/api/order?order={order}"):
                    nursery.start_soon(one, path)
            nursery.start_soon(partial(c.call, "GetUser", {"login": login}))
        assert (await h.get("/api/history?login=999")).status_code == 404
        assert (await c.call("GetUser", {"login": login})).ok
    reader = server._admin.app.reader
    assert reader._process.pid != os.getpid() and reader._process.poll() is None
    process = reader._process
    await server.shutdown()
    with trio.fail_after(10):  # ended with the server
        while reader._process is not None:
            await trio.sleep(0.01)
    assert process.poll() is not None


async def test_verify_runs_on_a_snapshot_of_its_own_beside_the_writer(server):
    async with tcp_client(server) as c, http(server, admin_token(server)) as h:
        login = await add_account(c)
        assert (await c.call("CreditInSync", {"login": login, "amount": 7, "comment": "x"})).ok
        head = (await h.get("/api/head")).json()["data"]
        assert head["seq"] == 1 and head["verify"] is None
        faults_of(server).delay_commit(3.0)  # the writer holds its next batch (and its lock) for 3 s
        held = c.start("BalanceIn", {"login": login, "amount": 1})
        with trio.fail_after(10):
            while not server.mainloop.lock.locked():
                await trio.sleep(0.01)
        answers = []

        async def verify() -> None:
            answers.append((await h.post("/api/verify", json={})).json()["data"])
        async with trio.open_nursery() as nursery:  # two at once (one joins the other if it is still running)
            nursery.start_soon(verify)
            nursery.start_soon(verify)
        assert server.mainloop.lock.locked()  # done while the writer still held its batch: it was not needed
        assert [(a["ok"], a["head"]) for a in answers] == [(True, head["head"])] * 2
        assert answers[0]["text"].startswith("ok: 1 finance rows, 1 events, 1 accounts")
        assert (await held.reply()).ok
        after = (await h.get("/api/head")).json()["data"]
        assert after["seq"] == 2 and after["verify"] in answers


async def test_verify_runs_in_a_process_of_its_own(server, monkeypatch):
    """Never in the server's interpreter (its worker threads share the GIL with the event loop): a process,
    given the ledger's path on stdin (a PostgreSQL URL's password never on a command line), with a deadline."""
    def in_the_server(*args, **kwargs):
        raise AssertionError("verify ran inside the server's process")
    monkeypatch.setattr(observe, "verify_path", in_the_server, raising=False)
    commands = []
    run_process = trio.run_process

    async def spy(command, **kwargs):
        commands.append(command)
        return await run_process(command, **kwargs)
    monkeypatch.setattr(trio, "run_process", spy)
    async with tcp_client(server) as c, http(server, admin_token(server)) as h:
        login = await add_account(c)
        assert (await c.call("CreditInSync", {"login": login, "amount": 7, "comment": "x"})).ok
        done = (await h.post("/api/verify", json={})).json()["data"]
        assert done["ok"] is True and done["text"].startswith("ok: 1 finance rows, 1 events, 1 accounts"), done
        assert done["head"].startswith("1:") and done["by"] == 1
        assert len(commands) == 1 and commands[0][0] == sys.executable and server.config.db not in commands[0]
        monkeypatch.setattr(observe, "VERIFY_TIMEOUT", 0.0, raising=False)  # one that runs too long: a true answer
        monkeypatch.setattr(observe, "VERIFY_REST", 0.0, raising=False)  # (and at once)
        late = (await h.post("/api/verify", json={})).json()["data"]
        assert late["ok"] is False and "did not finish within" in late["text"] and late["head"] is None


async def test_a_loop_of_verifies_keeps_a_verify_process_busy_a_quarter_of_the_time(server, monkeypatch):
    """A verify starts no sooner than three times the last one's length after it ended (a request meanwhile
    waits for it, and is given a verify that started after it asked)."""
    runs = []

    async def audit(path: str) -> dict:
        start = trio.current_time()
        await trio.sleep(0.1)
        runs.append((start, trio.current_time()))
        return {"ok": True, "text": "ok: stand-in", "problem": None, "head": "0:0", "finance_rows": 0, "events": 0,
                "accounts": 0}
    monkeypatch.setattr(observe, "_verify_process", audit)
    async with http(server, admin_token(server)) as h:
        for _ in range(3):
            asked = trio.current_time()
            assert (await h.post("/api/verify", json={})).json()["data"]["ok"] is True
            assert runs[-1][0] >= asked  # its own run, not an earlier one's result
    for (_, ended), (started, _) in zip(runs, runs[1:]):
        assert started - ended >= 3 * 0.1 - 0.01


async def test_the_page_and_its_files_are_served(server):
    async with http(server) as h:
        page = await h.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<label for="login-password">' in page.text and "http" not in page.text.replace("http://www.w3", "")
        js = await h.get("/app.js")
        assert js.headers["content-type"].startswith("text/javascript") and "new WebSocket" in js.text
        assert (await h.get("/app.css")).headers["content-type"].startswith("text/css")
        head = await h.head("/")
        assert head.status_code == 200 and head.content == b""
        assert (await h.post("/")).status_code == 405
        assert (await h.get("/index.html.bak")).status_code == 404


async def test_the_chart_history_sleeps_while_the_server_is_quiet(autojump_clock):
    metrics = Metrics()
    history = History(metrics, trio.current_time, interval=1.0, window=300.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(history.run)
        await trio.sleep(100)
        assert len(history.samples) == 1 and history.quiet  # one sample, then no timer at all
        for _ in range(3):
            metrics.answered("CreditIn", 200, 0.001, False)
        metrics.answered("CreditInSync", 409, 0.001, True)  # refused: not a credit
        metrics.wallet_answer("credit", "OK")
        metrics.commit.observe(0.004)
        metrics.commit.observe(0.002)
        await trio.sleep(1.5)
        points = history.points()
        assert [(p["t"], p["credits_per_s"], p["commits"], p["commit_ms"]) for p in points[:2]] == [
            (100, 0, 0, None), (101, 4, 2, 3)]
        await trio.sleep(10_000)  # quiet again: a day of mock time costs no wake-ups
        assert len(history.samples) == 3 and history.quiet
        assert history.points()[-1]["credits_per_s"] == 0 and history.points()[-1]["t"] == trio.current_time()
        nursery.cancel_scope.cancel()


# ---- the page in a real browser


def browse(base: str, login: int, shot: str, call, drop_websockets) -> dict:
    """The operator's session, in Chromium (this runs in a worker thread; ``call`` and ``drop_websockets``
    reach the server's Trio thread)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    seen: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base)
            page.evaluate("window.notReloaded = true")

            # a wrong password, then a wrong token: each says clearly what is wrong
            page.get_by_label("Manager login").fill("7")
            page.get_by_label("Password").fill("not the password")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#login-error")).to_have_text("Wrong login or password.")
            page.get_by_label("Or a token").fill("eyJ.not-a.token")
            page.get_by_label("Or a token").press("Enter")
            expect(page.locator("#login-error")).to_contain_text("This token is not accepted (INVALID_TOKEN)")
            expect(page.locator("#main")).to_be_hidden()

            # log in (keyboard only) and see the account
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_label("Password").press("Enter")
            expect(page.locator("#whoami")).to_have_text("Manager 7 (ADMIN)")
            row = page.locator(f'#accounts tr[data-login="{login}"]')
            expect(row.locator(".credit")).to_have_text("10.00")  # EUR: two decimals
            expect(page.locator("#stream-status")).to_have_text("live")
            expect(page.locator("#tail td.seq")).to_have_text(["1"])
            page.get_by_label("Search by login or name").fill("alice")
            page.get_by_label("Search by login or name").press("Enter")
            expect(page.locator("#accounts tbody tr")).to_have_count(1)
            expect(page.locator("#accounts tbody tr td").nth(1)).to_have_text("Alice Example")
            page.get_by_label("Search by login or name").fill("")
            page.get_by_role("button", name="Search", exact=True).click()
            expect(row).to_be_visible()

            # a credit over TCP: the balance and the tail change without a reload
            call("CreditInSync", {"login": login, "amount": Decimal("2.5"), "comment": "from the test"})
            expect(row.locator(".credit")).to_have_text("12.50")
            first = page.locator("#tail tbody tr").first
            expect(first).to_contain_text("from the test")
            expect(first).to_contain_text("CreditIn")
            expect(first.locator("td.seq")).to_have_text("2")

            # pause: the tail stands still, balances go on; resume shows what came meanwhile
            page.get_by_role("button", name="Pause").click()
            expect(page.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
            call("BalanceInSync", {"login": login, "amount": Decimal("100.000001"), "comment": "while paused"})
            expect(row.locator(".balance")).to_have_text("100.000001")  # (never rounded to the currency's)
            expect(page.locator("#tail-note")).to_have_text("Paused: 1 new event(s) waiting.")
            expect(first.locator("td.seq")).to_have_text("2")
            page.get_by_role("button", name="Resume").click()
            expect(page.locator("#tail tbody tr").first.locator("td.seq")).to_have_text("3")

            # the server closes the WebSocket; an event committed meanwhile comes with the resume (from_seq)
            deadline = time.monotonic() + 20
            while not drop_websockets():
                assert time.monotonic() < deadline, "the page's subscriber never went live"
                time.sleep(0.05)
            call("CreditInSync", {"login": login, "amount": 3, "comment": "while the stream was down"})
            expect(page.locator("#stream-status")).to_contain_text("resumed 1× (last from seq 3)")
            expect(row.locator(".credit")).to_have_text("15.50")
            call("CreditOutSync", {"login": login, "amount": Decimal("0.5"), "comment": "after the resume"})
            expect(row.locator(".credit")).to_have_text("15.00")
            expect(page.locator("#tail td.seq")).to_have_text(["5", "4", "3", "2", "1"])  # no gap, no repeat
            expect(page.locator("#tail tbody tr").nth(1)).to_contain_text("while the stream was down")

            # one Tab stop a row; the arrows move between a row's links and between rows
            expect(page.locator("#tail tbody tr a:not([tabindex='-1'])")).to_have_count(5)
            page.locator("#tail tbody tr").first.get_by_role("link").first.focus()
            page.keyboard.press("ArrowRight")
            expect(page.locator("#tail tbody tr").first.get_by_role("link").nth(1)).to_be_focused()
            page.keyboard.press("ArrowDown")
            expect(page.locator("#tail tbody tr").nth(1).get_by_role("link").nth(1)).to_be_focused()

            # the tail filtered where it stands (a login, a command), and a CSV of the rows it shows
            page.locator("#tail-login").fill(str(login + 1))
            expect(page.locator("#tail-shown")).to_have_text("Showing 0 of the 5 newest events.")
            page.locator("#tail-login").fill(str(login))
            page.locator("#tail-cmd").select_option("CreditOut")
            expect(page.locator("#tail tbody tr:visible")).to_have_count(1)
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV of the live events shown").click()
            seen["tail.csv"] = open(download.value.path(), encoding="utf-8", newline="").read()
            page.locator("#tail-cmd").select_option("")
            expect(page.locator("#tail tbody tr:visible")).to_have_count(5)

            # an account's history is a link (its URL names it); an order's versions; Back
            row.get_by_role("link", name=f"History of account {login}").click()
            expect(page).to_have_url(re.compile(rf"#history\?login={login}$"))
            expect(page.locator("#detail-caption")).to_contain_text(
                f"History of account {login} (player): balance 100.000001, credit 15.00 EUR")
            expect(page.locator("#detail tbody tr")).to_have_count(5)
            page.locator("#detail tbody tr").first.get_by_role("link").first.click()
            expect(page.locator("#detail-caption")).to_have_text("Versions of order 5")
            expect(page.locator("#detail tbody tr")).to_have_count(1)
            page.go_back()
            expect(page.locator("#detail-caption")).to_contain_text(f"History of account {login}")

            # the history by command (filtered by the server), and a CSV of it: exact amounts, as shown
            page.locator("#records-cmd").select_option("CreditIn")
            page.get_by_role("button", name="Find records").click()
            expect(page).to_have_url(re.compile(rf"#history\?login={login}&cmd=CreditIn$"))
            expect(page.locator("#detail tbody tr")).to_have_count(3)
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV of this view").click()
            assert download.value.suggested_filename == f"history-{login}.csv"
            seen["history.csv"] = open(download.value.path(), encoding="utf-8", newline="").read()

            # Verify, by keyboard from the top of the page: a few Tab presses
            page.locator(".skip").focus()
            presses = 0
            while page.evaluate("document.activeElement.id") != "verify":
                page.keyboard.press("Tab")
                presses += 1
                assert presses <= 10, page.evaluate("document.activeElement.outerHTML")
            page.keyboard.press("Enter")
            expect(page.locator("#verify-result")).to_contain_text("ok: 5 finance rows, 5 events, 2 accounts")
            expect(page.locator("#verify-result")).to_have_class("ok")
            expect(page.locator("#head")).to_contain_text("5:")

            # the chart has drawn the credits (sampled each second while the server works)
            expect(page.locator("#chart-credits path.series")).to_have_attribute("d", re.compile("^M"))
            expect(page.locator("#chart-credits-caption")).to_have_text(re.compile(r"peak (0\.\d*[1-9]|[1-9])"))
            seen["caption"] = page.locator("#chart-credits-caption").text_content()

            assert page.evaluate("window.notReloaded") is True and not errors, errors
            seen["head"] = page.locator("#head").text_content()
            page.screenshot(path=shot, full_page=True)

            # a reload keeps the session (this tab's) and the view (the URL's)
            page.reload()
            expect(page.locator("#whoami")).to_have_text("Manager 7 (ADMIN)")
            expect(page.locator("#detail tbody tr")).to_have_count(3)
            expect(row.locator(".credit")).to_have_text("15.00")
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            # logging out ends it; so does a token the server no longer takes (401)
            page.get_by_role("button", name="Log out").click()
            assert page.evaluate("sessionStorage.length") == 0
            page.reload()
            expect(page.locator("#login")).to_be_visible()
            page.evaluate("sessionStorage.setItem('syncledger.token', 'eyJ.not-a.token')")
            page.reload()
            expect(page.locator("#login-error")).to_contain_text("Your session ended (INVALID_TOKEN)")
            assert page.evaluate("sessionStorage.length") == 0 and not errors, errors
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
async def test_the_page_in_headless_chromium(server, tmp_path):
    add_manager(server, 7)
    async with tcp_client(server) as c:
        login = await add_account(c)
        await c.call("AddUser", {"name": "Alice Example"})
        assert (await c.call("CreditInSync", {"login": login, "amount": 10, "comment": "opening credit"})).ok

        def call(command: str, data: dict) -> None:
            reply = trio.from_thread.run(c.call, command, data)
            assert reply.ok, reply

        shot = tmp_path / "backoffice.png"
        seen = await trio.to_thread.run_sync(partial(
            browse, f"http://127.0.0.1:{server.ports.admin}/", login, str(shot), call,
            lambda: trio.from_thread.run_sync(faults_of(server).drop_websockets)))
    assert shot.stat().st_size > 10_000
    if os.environ.get("SYNCLEDGER_SCREENSHOT"):  # how the README's picture is made
        shutil.copyfile(shot, os.environ["SYNCLEDGER_SCREENSHOT"])
    assert seen["head"].startswith("5:") and "Credits per second" in seen["caption"]
    header, *lines = seen["history.csv"].split("\r\n")
    assert header == ("Row,Order,Version,Command,State,Change,Balance after,Credit after,Currency,Recorded (UTC),"
                      "extID / transaction,Round,Comment") and lines[-1] == ""
    assert [line.split(",")[:9] for line in lines[:-1]] == [
        ["4", "4", "1", "CreditIn", "closed", "3.00", "100.000001", "15.50", "EUR"],
        ["2", "2", "1", "CreditIn", "closed", "2.50", "0.00", "12.50", "EUR"],
        ["1", "1", "1", "CreditIn", "closed", "10.00", "0.00", "10.00", "EUR"]]
    assert lines[0].endswith(",while the stream was down") and lines[1].endswith(",from the test")
    (tail_row,) = seen["tail.csv"].split("\r\n")[1:-1]  # the one row the filter left shown
    assert tail_row.startswith("5,") and f",5,{login},CreditOut,-0.50,after the resume" in tail_row
