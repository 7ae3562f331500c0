"""Reconciliation on the admin listener (issue 23): ``GET /api/rounds`` and ``GET /api/report`` (FINANCE sessions,
read in the page's reader process like its other reads), and the open-rounds gauges of ``/metrics`` per provider
(read off the event loop when a rendering asks); on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
import time
from decimal import Decimal
from functools import partial

import httpx
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from syncledger.ledger import engine, report
from syncledger.ledger.commands import WalletCall
from syncledger.server.admin import app as observe
from syncledger.server.admin import reports
from syncledger.server.auth import SESSION_DEALER, SESSION_USER
from syncledger.server.testing import Harness
from tests.conftest import admin_token
from tests.pgcluster import backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)

both = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
U = 1_000_000


def http(srv, token: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.ports.admin}", headers=headers, timeout=30)


def add_provider(srv, name: str, settlement: str = "gamewise") -> None:
    """A provider row, as ``syncledger provider add`` would store it (beside the running server)."""
    sql = "INSERT INTO providers (name, settlement, promo, created) VALUES (?, ?, 1, 0)"
    if srv.config.db == ":memory:":
        srv.store.db.execute(sql, (name, settlement))
        return
    db = engine.connect(srv.config.db)
    try:
        db.execute(sql, (name, settlement))
    finally:
        db.close()


class Play:
    """Wallet calls: the default provider's through the wallet API, another's as the wallet would make them."""

    def __init__(self, srv):
        self.h, self.srv = Harness(srv), srv
        self.sids: dict[int, str] = {}
        self.currency: dict[int, str] = {}

    async def account(self, currency: str) -> int:
        async with self.h.client() as c:
            login = await self.h.add_account(c, currency, 1000)
            self.sids[login] = (await c.call("OpenGameSession", {"login": login})).data["sid"]
        self.currency[login] = currency
        return login

    async def call(self, action: str, login: int, txid: str, ref: str | None, game: str | None, amount: Decimal,
                   provider: str = "default") -> str:
        if provider == "default":
            body = {"sid": self.sids[login], "userId": str(login), "currency": self.currency[login],
                    "game": {"id": game, "type": "slots"}, "transaction": {"id": txid, "refId": ref, "amount": amount},
                    "uuid": f"u-{txid}"}
            return (await self.h.wallet(action, body))["status"]
        units = int(amount * U)
        payload = orjson.dumps([action, str(login), self.currency[login], game, "slots", txid, ref, units]).decode()
        outcome = await self.srv.mainloop.run_command(WalletCall(
            action, login, self.srv.now(), 10**9, sid=self.sids[login], currency=self.currency[login], txid=txid,
            ref_id=ref, game_id=game, amount=units, payload=payload, provider=provider, game_type="slots"))
        return outcome.data.status


@both
async def test_rounds_and_day_totals_on_the_admin_api(start_server, backend, ledger_db, monkeypatch):
    srv = await start_server(db=ledger_db, backend=backend)
    add_provider(srv, "acme", "mixed")
    play = Play(srv)
    eur, usd = await play.account("EUR"), await play.account("USD")
    assert await play.call("debit", eur, "D1", "R1", "g1", Decimal("1.5")) == "OK"
    assert await play.call("debit", eur, "D2", "R2", "g2", Decimal("2")) == "OK"
    assert await play.call("credit", eur, "C2", "R2", "g2", Decimal("0.25")) == "OK"
    assert await play.call("debit", usd, "D3", "R3", "g3", Decimal("3")) == "OK"
    assert await play.call("cancel", usd, "D3", "R3", "g3", Decimal("3")) == "OK"
    assert await play.call("debit", eur, "D1", "R1", "g1", Decimal("4"), provider="acme") == "OK"  # acme's own D1

    def in_the_server(*args, **kwargs):
        raise AssertionError("a page read ran inside the server's process")
    for name in ("rounds", "day_report", "providers"):  # (they run in the page's reader process)
        monkeypatch.setattr(report, name, in_the_server)
    async with http(srv, admin_token(srv)) as h:
        async def get(path: str) -> dict:
            r = await h.get(path)
            assert r.status_code == 200, r.text
            return json.loads(r.text, parse_float=Decimal)["data"]
        page = await get("/api/rounds?provider=default")
        assert [(r["game_id"], r["login"], r["state"], r["bets"], r["wins"], r["cancelled"]) for r in page["rounds"]] == [
            ("g1", eur, "open", Decimal("1.5"), 0, 0), ("g2", eur, "settled", 2, Decimal("0.25"), 0),
            ("g3", usd, "cancelled", 3, 0, 3)]
        assert page["next"] is None and [m["txid"] for m in page["rounds"][1]["moves"]] == ["D2", "C2"]
        assert '"amount":1.5' in (await h.get("/api/rounds?provider=default&game_id=g1")).text  # exact decimal text
        assert [r["game_id"] for r in (await get("/api/rounds?provider=default&open=1"))["rounds"]] == ["g1"]
        assert (await get("/api/rounds?provider=default&open=1&older_than=3600"))["rounds"] == []
        assert [r["game_id"] for r in (await get(f"/api/rounds?provider=default&login={usd}"))["rounds"]] == ["g3"]
        first = await get("/api/rounds?provider=default&limit=2")
        rest = await get(f"/api/rounds?provider=default&limit=2&after={first['next']}")
        assert [r["game_id"] for r in first["rounds"] + rest["rounds"]] == ["g1", "g2", "g3"] and rest["next"] is None
        assert [(r["game_id"], r["bets"]) for r in (await get("/api/rounds?provider=acme"))["rounds"]] == [("g1", 4)]

        today = time.strftime("%Y-%m-%d", time.gmtime(srv.now()))
        day = await get("/api/report")  # every provider, today
        assert day["day"] == today and [p["provider"] for p in day["providers"]] == ["acme", "default"]
        assert "promo payouts are shown apart" in day["note"]
        default = day["providers"][1]["currencies"]
        assert [(t["currency"], t["bets"], t["wins"], t["cancels"], t["ggr"], t["rounds"]) for t in default] == [
            ("EUR", {"count": 2, "amount": Decimal("3.5")}, {"count": 1, "amount": Decimal("0.25")},
             {"count": 0, "amount": 0}, Decimal("3.25"), {"opened": 2, "settled": 1, "cancelled": 0, "open_now": 1}),
            ("USD", {"count": 1, "amount": 3}, {"count": 0, "amount": 0}, {"count": 1, "amount": 3}, 0,
             {"opened": 1, "settled": 0, "cancelled": 1, "open_now": 0})]
        acme = await get(f"/api/report?provider=acme&day={today}")
        assert [p["provider"] for p in acme["providers"]] == ["acme"] and acme["to"] - acme["from"] == 86_400
        (old,) = (await get("/api/report?day=2001-01-01"))["providers"][1]["currencies"]  # (open now: any day)
        assert (old["currency"], old["bets"]["count"], old["ggr"], old["rounds"]) == (
            "EUR", 0, 0, {"opened": 0, "settled": 0, "cancelled": 0, "open_now": 1})
        for path, status, code in [("/api/rounds", 400, "INVALID_DATA"), ("/api/rounds?provider=nobody", 404,
                                                                          "PROVIDER_NOT_FOUND"),
                                   ("/api/rounds?provider=default&open=maybe", 400, "INVALID_DATA"),
                                   ("/api/rounds?provider=default&after=x", 400, "INVALID_DATA"),
                                   ("/api/rounds?provider=default&limit=0", 400, "INVALID_DATA"),
                                   ("/api/rounds?provider=default&older_than=-1", 400, "INVALID_DATA"),
                                   ("/api/report?day=2024-02-30", 400, "INVALID_DATA"),
                                   ("/api/report?day=20240101", 400, "INVALID_DATA"),
                                   ("/api/report?provider=nobody", 404, "PROVIDER_NOT_FOUND")]:
            r = await h.get(path)
            assert (r.status_code, r.json()["error"]) == (status, code), path
        assert (await h.post("/api/rounds?provider=default", json={})).status_code == 405
    async with http(srv, admin_token(srv, 2, SESSION_DEALER)) as h:  # any finance session, as the other reads
        assert (await h.get("/api/report")).status_code == 200
    async with http(srv, srv.tokens.issue(9, SESSION_USER)[0]) as h:
        assert (await h.get("/api/rounds?provider=default")).status_code == 403
    async with http(srv) as h:
        assert (await h.get("/api/report")).status_code == 401


async def scrape(srv) -> dict[tuple, float]:
    async with httpx.AsyncClient(timeout=30) as h:
        r = await h.get(f"http://127.0.0.1:{srv.ports.admin}/metrics")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def rounds_of(samples: dict, provider: str) -> tuple[float, float]:
    labels = (("provider", provider),)
    return (samples[("syncledger_wallet_open_rounds", labels)],
            samples[("syncledger_wallet_oldest_open_round_seconds", labels)])


@both
async def test_open_rounds_and_the_oldest_ones_age_per_provider_on_metrics(start_server, backend, ledger_db,
                                                                           monkeypatch):
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.0)  # every scrape rendered anew
    srv = await start_server(db=ledger_db, backend=backend)
    add_provider(srv, "acme")
    add_provider(srv, "quiet")
    play = Play(srv)
    login = await play.account("EUR")
    assert rounds_of(await scrape(srv), "default") == (0, 0)
    assert await play.call("debit", login, "D1", "R1", "g1", Decimal(1)) == "OK"
    await trio.sleep(1.1)
    assert await play.call("debit", login, "D2", "R2", "g2", Decimal(1)) == "OK"
    assert await play.call("debit", login, "D1", "R1", "g1", Decimal(1), provider="acme") == "OK"
    samples = await scrape(srv)
    count, age = rounds_of(samples, "default")
    assert count == 2 and 1 <= age < 30  # the oldest open round is g1's, opened a second before g2
    assert rounds_of(samples, "acme")[0] == 1 and rounds_of(samples, "quiet") == (0, 0)
    assert await play.call("credit", login, "C1", "R1", "g1", Decimal(0)) == "OK"
    count, age = rounds_of(await scrape(srv), "default")
    assert count == 1 and age < 30
    assert await play.call("credit", login, "C2", "R2", "g2", Decimal(2)) == "OK"
    assert rounds_of(await scrape(srv), "default") == (0, 0)


async def test_a_stalled_read_leaves_metrics_answering_with_the_last_figures(start_server, monkeypatch):
    """The open rounds are waited for a second at most: a ledger that stalls leaves the figures last read (and
    the oldest's age goes on), and every other metric is answered as before."""
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.0)
    srv = await start_server()
    play = Play(srv)
    login = await play.account("EUR")
    assert await play.call("debit", login, "D1", "R1", "g1", Decimal(1)) == "OK"
    assert rounds_of(await scrape(srv), "default")[0] == 1
    stalled = trio.Event()
    real = srv.read

    async def stalling(fn, *args):
        if fn is report.open_rounds:
            await stalled.wait()
        return await real(fn, *args)
    app = srv._admin.app
    monkeypatch.setattr(app.open_rounds, "_read", stalling)
    assert await play.call("credit", login, "C1", "R1", "g1", Decimal(0)) == "OK"
    began = trio.current_time()
    for _ in range(3):
        samples = await scrape(srv)
        count, age = rounds_of(samples, "default")
        assert count == 1 and ("syncledger_ledger_seq", ()) in samples  # the last figures, with the rest
    assert trio.current_time() - began < 3 * reports.ROUNDS_WAIT + 2  # one read asked, waited for a second each
    stalled.set()
    await trio.sleep(0.1)
    assert rounds_of(await scrape(srv), "default") == (0, 0)


async def test_an_in_memory_server_reads_the_reports_on_its_own_reads(start_server, autojump_clock):
    """No file for a reader process: the page's reads stay in the server (as its other page reads do); the ages
    follow the server's clock."""
    srv = await start_server(mem=True)
    play = Play(srv)
    login = await play.account("EUR")
    assert await play.call("debit", login, "D1", "R1", "g1", Decimal(1)) == "OK"
    await trio.sleep(7200)
    app = srv._admin.app
    await app.open_rounds.fresh()
    (figure,) = [f for f in app.open_rounds.figures if f[0] == "default"]
    assert figure[1] == 1 and app.open_rounds.now - figure[2] == 7200
    page = orjson.loads(await app._read("rounds", "default", True, srv.now() - 3600, None, None, None, 10))
    assert [r["game_id"] for r in page["rounds"]] == ["g1"]



# ---- the page, in headless Chromium

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]  # (as tests/test_backoffice.py's)


def browse(base: str, token: str, eur: int) -> None:
    """An operator's look at the day's totals and a provider's open rounds (in a worker thread)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base)
            page.get_by_label("Or a token").fill(token)
            page.get_by_label("Or a token").press("Enter")
            totals = page.locator("#day-totals tbody tr")
            expect(totals).to_have_count(3)  # acme (nothing today), default EUR, default USD
            eur_row = page.locator('#day-totals tr[data-provider="default"]').first
            expect(eur_row.locator(".bets")).to_have_text("3.500001 (2)")
            expect(eur_row.locator(".ggr")).to_have_text("3.250001")
            expect(eur_row.locator(".open-now")).to_have_text("1")
            expect(page.locator("#day-note")).to_contain_text("promo payouts are shown apart")
            page.get_by_label("Provider", exact=True).select_option("default")
            page.get_by_label("Open only").check()
            page.get_by_role("button", name="Show rounds").click()
            rounds = page.locator("#rounds tbody tr")
            expect(rounds).to_have_count(2)  # g1 (EUR) and g3 (USD), oldest first
            expect(rounds.first).to_contain_text("debit D1 1.500001")
            expect(rounds.first.locator(".state")).to_have_text("open")
            expect(page).to_have_url(re.compile(r"#rounds\?provider=default&open=1$"))  # a link to this list
            page.get_by_label("Open only").uncheck()
            page.get_by_label("Game id", exact=True).fill("g2")
            page.get_by_role("button", name="Show rounds").click()
            expect(rounds).to_have_count(1)
            expect(rounds.first).to_contain_text("credit C2 0.25")
            # the round itself (its link): every call, with its status, and its account's history from there
            rounds.first.get_by_role("link", name=f"Round g2 of account {eur}").click()
            expect(page).to_have_url(re.compile(rf"#round\?provider=default&game_id=g2&login={eur}$"))
            expect(page.locator("#detail-caption")).to_have_text(f"Round g2 of provider default, account {eur}")
            calls = page.locator("#detail tbody tr")
            expect(calls).to_have_count(3)  # the debit, its credit, and a credit refused (the round was settled)
            expect(calls.nth(0)).to_contain_text("debit")
            expect(calls.nth(0)).to_contain_text("2.00")
            expect(calls.nth(2)).to_contain_text("BET_ALREADY_SETTLED")
            expect(page.locator("#detail-note")).to_have_text(
                f"account {eur}: settled, bets 2.00, wins 0.25, cancelled 0.00 EUR.")
            calls.first.get_by_role("link", name=f"History of account {eur}").click()
            expect(page.locator("#detail-caption")).to_contain_text(f"History of account {eur}")
            expect(page.locator("#detail tbody tr").first.get_by_role("link", name="Round g2 of default")).to_be_attached()
            page.get_by_label("Day (UTC)").fill("2001-01-01")
            page.get_by_role("button", name="Show the day's totals").click()
            expect(page.locator("#day-caption")).to_contain_text("2001-01-01")
            expect(eur_row.locator(".bets")).to_have_text("0.00 (0)")
            expect(page).to_have_url(re.compile(r"#day\?day=2001-01-01$"))
            assert not errors, errors
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
async def test_the_pages_day_totals_and_rounds_in_headless_chromium(server):
    add_provider(server, "acme")
    play = Play(server)
    eur, usd = await play.account("EUR"), await play.account("USD")
    assert await play.call("debit", eur, "D1", "R1", "g1", Decimal("1.500001")) == "OK"
    assert await play.call("debit", eur, "D2", "R2", "g2", Decimal("2")) == "OK"
    assert await play.call("credit", eur, "C2", "R2", "g2", Decimal("0.25")) == "OK"
    assert await play.call("debit", usd, "D3", "R3", "g3", Decimal("3")) == "OK"
    assert await play.call("credit", eur, "C2b", "R2", "g2", Decimal("1")) == "BET_ALREADY_SETTLED"
    await trio.to_thread.run_sync(partial(browse, f"http://127.0.0.1:{server.ports.admin}/", admin_token(server), eur))
