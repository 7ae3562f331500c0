"""The log lines an operator searches and alerts on (issue 25): in JSON, a line carries its peer (address and
port), listener, login, status and duration as fields beside its message; a refused wallet call is a line,
one a second at most of each provider, call and status, the next one counting those left out."""

from __future__ import annotations

import logging

import httpx
import orjson
import trio

from syncledger.server import logs
from syncledger.server.testing import WALLET_TOKEN, Harness
from tests.conftest import add_account, mem_client, tcp_client


def _entries(err: str) -> list[dict]:
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


async def test_json_lines_carry_peer_listener_login_status_and_duration(server, capsys):
    logs.configure("json")
    async with tcp_client(server, None) as c:
        port = c.stream.socket.getsockname()[1]
        assert (await c.login(1, "not the password")).status == 401
    async with tcp_client(server) as c:  # (a token of manager 1)
        token_port = c.stream.socket.getsockname()[1]
        assert (await c.call("Ping")).ok
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.ports.wallet}/v1", timeout=30) as http:
        r = await http.post("/balance?authToken=nope", json={"sid": "s", "userId": "1", "uuid": "u1"})
        assert r.json()["status"] == "INVALID_TOKEN_ID"
        r = await http.post(f"/debit?authToken={WALLET_TOKEN}", json={"sid": "s", "userId": "1", "uuid": "u2"})
        assert r.json()["status"] == "INVALID_PARAMETER"
    entries: list[dict] = []
    with trio.fail_after(5):  # (a connection's "closed" line comes once the server has seen it close)
        while sum(e["message"].startswith("connection ") and "closed" in e["message"] for e in entries) < 2:
            await trio.sleep(0.05)
            entries += _entries(capsys.readouterr().err)
    [failed] = [e for e in entries if e["message"].startswith("failed login")]
    assert failed["message"] == "failed login for 1 from 127.0.0.1"
    assert {k: failed[k] for k in ("peer", "listener", "login", "status")} == {
        "peer": f"127.0.0.1:{port}", "listener": "tcp", "login": 1, "status": 401}
    [closed] = [e for e in entries if e.get("peer") == f"127.0.0.1:{token_port}" and "closed" in e["message"]]
    assert closed["listener"] == "tcp" and closed["login"] == 1 and closed["reason"] == "closed by the peer"
    assert isinstance(closed["duration_ms"], int) and closed["message"].endswith("closed by the peer")
    bad_token, bad_body = [e for e in entries if e["logger"] == "syncledger.wallet.refused"]
    assert bad_token["message"].startswith("balance refused INVALID_TOKEN_ID: provider=- login=- peer=127.0.0.1:")
    assert {k: bad_token[k] for k in ("call", "status", "provider", "login", "listener", "left_out")} == {
        "call": "balance", "status": "INVALID_TOKEN_ID", "provider": "", "login": None, "listener": "wallet",
        "left_out": 0}
    assert "duration_ms" not in bad_token  # (refused at its head: no call was made)
    assert bad_body["peer"] == bad_token["peer"]  # (one kept-alive connection)
    assert (bad_body["call"], bad_body["status"], bad_body["provider"]) == ("debit", "INVALID_PARAMETER", "default")
    assert bad_body["duration_ms"] >= 0


def _refused(caplog) -> list[tuple]:
    return [(r.call, r.status, r.provider, r.login, r.left_out) for r in caplog.records
            if r.name == "syncledger.wallet.refused"]


async def test_a_flood_of_refused_calls_is_a_line_a_second_of_each_kind(start_server, autojump_clock, caplog):
    caplog.set_level(logging.WARNING, "syncledger.wallet.refused")
    srv = await start_server(mem=True)
    h = Harness(srv)
    async with mem_client(srv) as c:
        login = await add_account(c)
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    session = {"sid": sid, "userId": str(login), "currency": "EUR"}
    assert (await h.wallet("check", session))["status"] == "OK"  # (an answer that refuses nothing: no line)
    for _ in range(100):
        assert (await h.wallet("balance", session, token="nope"))["status"] == "INVALID_TOKEN_ID"
    assert (await h.wallet("balance", {**session, "sid": "gone"}))["status"] == "INVALID_SID"  # another kind
    assert (await h.wallet("check", session, token="nope"))["status"] == "INVALID_TOKEN_ID"  # another call
    assert _refused(caplog) == [("balance", "INVALID_TOKEN_ID", "", None, 0),
                                ("balance", "INVALID_SID", "default", login, 0),
                                ("check", "INVALID_TOKEN_ID", "", None, 0)]
    await trio.sleep(1)
    await h.wallet("balance", session, token="nope")
    assert _refused(caplog)[3:] == [("balance", "INVALID_TOKEN_ID", "", None, 99)]
    assert caplog.records[-1].getMessage() == ("balance refused INVALID_TOKEN_ID: provider=- login=- peer=memory "
                                               "(99 similar lines left out)")


async def test_no_refusal_line_is_made_when_warnings_are_not_logged(start_server, autojump_clock, caplog):
    """Nothing is built for a line that would be dropped (a flood of refusals at --log-level error costs a
    level check each)."""
    caplog.set_level(logging.ERROR, "syncledger.wallet.refused")
    srv = await start_server(mem=True)
    for _ in range(10):
        await Harness(srv).wallet("balance", {"sid": "s", "userId": "1"}, token="nope")
    assert _refused(caplog) == [] and srv.wallet._lines == {}
