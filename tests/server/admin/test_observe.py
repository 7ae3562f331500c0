"""The admin listener: Prometheus metrics that move with the work, health and readiness."""

from __future__ import annotations

import threading
import time

import httpx
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from syncledger.server.admin import app as observe
from syncledger.server.testing import faults_of
from tests.conftest import add_account, tcp_client


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


async def test_health_and_readiness(start_server):
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, shutdown_grace=5)
        base = f"http://127.0.0.1:{srv.ports.admin}"
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(base + "/healthz")).json() == {"status": "ok"}
            ready = await http.get(base + "/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
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
            assert during.status_code == 503 and "shutting down" in during.json()["problems"]


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
