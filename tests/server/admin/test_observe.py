"""The admin listener: Prometheus metrics that move with the work, health and readiness."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from syncledger.server.admin import app as observe
from syncledger.server.app import FailStop
from syncledger.server.limits import Gate
from syncledger.server.testing import faults_of
from tests.conftest import add_account, admin_token, tcp_client


async def scrape(srv) -> dict[tuple, float]:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"http://127.0.0.1:{srv.ports.admin}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


async def test_metrics_move_after_a_credit(server, monkeypatch):
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.0)  # every scrape rendered anew
    async with tcp_client(server) as c:
        login = await add_account(c)
        before = await scrape(server)
        assert (await c.call("CreditInSync", {"login": login, "amount": 5, "comment": "c"})).ok
        assert (await c.call("CreditIn", {"login": login, "amount": 5, "comment": "c"})).ok
        await c.call("NoSuchCommand")
        after = await scrape(server)

    def moved(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)
    assert moved("syncledger_requests_total", command="CreditInSync", status="200") == 1
    assert moved("syncledger_requests_total", command="CreditIn", status="200") == 1
    assert moved("syncledger_requests_total", command="(unknown)", status="404") == 1
    assert moved("syncledger_request_duration_seconds_count", kind="sync") == 1
    assert moved("syncledger_batch_commands_count") >= 1 and moved("syncledger_commit_duration_seconds_count") >= 1
    assert moved("syncledger_ledger_seq") == 2
    assert after[("syncledger_connections", (("listener", "tcp"),))] == 1
    assert ("syncledger_inbox_depth", ()) in after and ("syncledger_subscribers", ()) in after


async def test_wallet_answers_are_counted_by_status(syncledger):
    await syncledger.wallet("check", {"sid": "nope", "userId": "1"})
    samples = await scrape(syncledger.server)
    assert samples[("syncledger_wallet_answers_total", (("action", "check"), ("provider", "default"),
                                                        ("status", "INVALID_PARAMETER")))] == 1


def _ready(text: str) -> float:
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}[
        "syncledger_ready"]


async def test_health_and_readiness(start_server, monkeypatch):
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.0)
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, shutdown_grace=5)
        base = f"http://127.0.0.1:{srv.ports.admin}"
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(base + "/healthz")).json() == {"status": "ok"}
            ready = await http.get(base + "/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            assert _ready((await http.get(base + "/metrics")).text) == 1
            assert (await http.post(base + "/metrics")).status_code == 405
            assert (await http.get(base + "/nothing")).status_code == 404
            async with tcp_client(srv) as c:
                login = await add_account(c)
                faults_of(srv).delay_commit(1.0)  # a batch still committing holds the shutdown for a second
                c.start("BalanceIn", {"login": login, "amount": 1})
                await trio.sleep(0.1)
                nursery.start_soon(srv.shutdown)
                await trio.sleep(0.2)
                during = await http.get(base + "/readyz")
                assert _ready((await http.get(base + "/metrics")).text) == 0  # (syncledger_ready: as /readyz)
            assert during.status_code == 503 and "shutting down" in during.json()["problems"]


async def test_a_fail_stop_is_on_metrics(start_server):
    with pytest.raises(BaseExceptionGroup) as stopped:
        async with trio.open_nursery() as nursery:
            srv = await start_server(nursery=nursery)
            assert srv.metrics.registry.get_sample_value("syncledger_fail_stop") == 0
            srv.fail_stop("a test stops it")
            assert b"\nsyncledger_fail_stop 1.0\n" in generate_latest(srv.metrics.registry)
            await trio.sleep_forever()  # (serve ends by itself)
    assert stopped.group_contains(FailStop)


async def test_failed_logins_are_counted_by_listener(server):
    assert (await scrape(server))[("syncledger_failed_logins_total", (("listener", "tcp"),))] == 0
    async with tcp_client(server, None) as c:
        for _ in range(2):
            assert (await c.login(1, "not the password")).status == 401
        assert (await c.call("Login", {"login": 1})).status == 400  # (no password: a request that does not validate)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"http://127.0.0.1:{server.ports.admin}/api/login", json={"login": 1, "password": "no"})
        assert r.status_code == 401
    server.metrics.registry.collect()
    assert server.metrics.registry.get_sample_value("syncledger_failed_logins_total", {"listener": "tcp"}) == 2
    assert server.metrics.registry.get_sample_value("syncledger_failed_logins_total", {"listener": "admin"}) == 1


def test_a_gate_counts_its_refusals_by_reason():
    now = [0.0]
    gate = Gate("tcp", 1, lambda: now[0], rate=1, burst=1)
    assert gate.enter("10.0.0.1") and not gate.enter("10.0.0.2")  # the cap
    gate.leave()
    assert not gate.enter("10.0.0.1") and gate.enter("10.0.0.2")  # 10.0.0.1's rate
    assert gate.refusals == {"cap": 1, "rate": 1}


async def test_refused_connections_are_counted_by_listener_and_reason(start_server, monkeypatch):
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.0)
    srv = await start_server(max_connections=2)
    held = [await trio.open_tcp_stream("127.0.0.1", srv.ports.tcp) for _ in range(2)]
    await trio.sleep(0.1)
    for _ in range(3):
        stream = await trio.open_tcp_stream("127.0.0.1", srv.ports.tcp)
        with trio.fail_after(5):
            assert await stream.receive_some(10) == b""  # closed at once
        await stream.aclose()
    samples = await scrape(srv)
    refused = {"{listener}:{reason}".format(**dict(labels)): value for (name, labels), value in samples.items()
               if name == "syncledger_refused_connections_total"}
    upgrades = ("bad_request", "unauthorized", "forbidden", "not_found", "too_many_subscribers", "shutting_down")
    assert refused == {f"{listener}:{reason}": 3 if (listener, reason) == ("tcp", "cap") else 0
                       for listener in ("tcp", "ws", "wallet", "admin")
                       for reason in ("cap", "rate", "handshake", "handshake_timeout", *(upgrades * (listener == "ws")))}
    for stream in held:
        await stream.aclose()


async def test_wallet_calls_are_timed_by_action(syncledger):
    await syncledger.wallet("check", {"sid": "nope", "userId": "1"})
    await syncledger.wallet("debit", {"sid": "nope"})
    await syncledger.wallet("debit", {"sid": "nope"}, token="not a provider's")  # (refused before any call)
    samples = await scrape(syncledger.server)
    counts = {dict(labels)["action"]: value for (name, labels), value in samples.items()
              if name == "syncledger_wallet_duration_seconds_count"}
    assert counts == {"check": 1, "balance": 0, "debit": 1, "credit": 0, "cancel": 0, "promo_payout": 0}
    assert samples[("syncledger_wallet_duration_seconds_bucket", (("action", "debit"), ("le", "+Inf")))] == 1


async def test_the_last_verify_is_on_metrics(server, monkeypatch):
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.0)
    assert not [name for name, _ in await scrape(server) if name.startswith("syncledger_last_verify")]
    async with tcp_client(server) as c:
        assert (await c.call("BalanceIn", {"login": await add_account(c), "amount": 5})).ok
    headers = {"authorization": f"Bearer {admin_token(server)}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.ports.admin}", headers=headers, timeout=60) as h:
        assert (await h.post("/api/verify", json={})).json()["data"]["ok"] is True
        good = await scrape(server)

        async def broken(path: str) -> dict:
            raise RuntimeError("the ledger file vanished")
        monkeypatch.setattr(observe, "_verify_process", broken)
        assert (await h.post("/api/verify", json={})).json()["data"]["ok"] is False
        bad = await scrape(server)
    assert good[("syncledger_last_verify_ok", ())] == 1
    assert abs(good[("syncledger_last_verify_timestamp_seconds", ())] - time.time()) < 60
    assert 0 < good[("syncledger_last_verify_duration_seconds", ())] < 60
    assert {table: good[("syncledger_last_verify_rows", (("table", table),))]
            for table in ("finance", "events", "accounts")} == {"finance": 1, "events": 1, "accounts": 1}
    assert bad[("syncledger_last_verify_ok", ())] == 0
    assert bad[("syncledger_last_verify_rows", (("table", "events"),))] == 0


async def test_metrics_are_rendered_at_most_once_a_second_off_the_event_loop(server, monkeypatch):
    """A flood of scrapes costs one rendering a second (in a worker thread, never on the Trio thread), and a
    connection that scrapes again before the next one is due waits for it (one answer a second a connection)."""
    renders = []

    def render(registry) -> bytes:
        renders.append((threading.current_thread(), time.monotonic()))
        return generate_latest(registry)
    monkeypatch.setattr(observe, "generate_latest", render)
    monkeypatch.setattr(observe, "METRICS_EVERY", 0.25, raising=False)
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{server.ports.admin}/metrics"
        bodies = []

        async def scrape_once() -> None:
            bodies.append((await http.get(url)).content)
        async with trio.open_nursery() as nursery:  # ten connections at once: one rendering for all
            for _ in range(10):
                nursery.start_soon(scrape_once)
        assert len(renders) == 1 and len(set(bodies)) == 1 and b"syncledger_ledger_seq" in bodies[0]
        for _ in range(2):  # again on a connection that has had it: each waits for the next rendering
            await scrape_once()
    assert len(renders) == 3 and all(thread is not threading.main_thread() for thread, _ in renders)
    assert renders[2][1] - renders[1][1] >= 0.25 and renders[1][1] - renders[0][1] >= 0.25
