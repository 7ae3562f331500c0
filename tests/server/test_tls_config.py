"""TLS on every listener (certificates made on the fly with trustme), JSON logs, the config file, and the
pruning of expired game sessions."""

from __future__ import annotations

import datetime
import json
import logging
import ssl

import httpx
import pytest
import trio
import trustme
from trio_websocket import open_websocket

from syncledger.server import logs
from syncledger.server.client import open_client
from syncledger.server.testing import Harness

DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
async def tls_server(start_server, tmp_path, ca):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return await start_server(tls_cert=str(cert_path), tls_key=str(key_path), wallet_token="t")


def client_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_on_every_listener_and_plain_refused(tls_server, ca):
    srv, context, token = tls_server, client_context(ca), Harness(tls_server).token
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.ports.tcp, ssl_context=context)
    async with open_client(stream, token) as c:
        assert (await c.call("Ping")).ok
    async with httpx.AsyncClient(verify=context, timeout=30) as http:
        r = await http.post(f"https://127.0.0.1:{srv.ports.wallet}/v1/check", params={"authToken": "t"},
                            content=b'{"sid":"s","userId":"1","uuid":"u"}')
        assert r.json()["uuid"] == "u"
        assert (await http.get(f"https://127.0.0.1:{srv.ports.admin}/healthz")).status_code == 200
    async with open_websocket("127.0.0.1", srv.ports.ws, f"/events?token={token}", use_ssl=context) as ws:
        assert ws is not None
    # a plain client gets nothing it can read
    plain = await trio.open_tcp_stream("127.0.0.1", srv.ports.tcp)
    await plain.send_all(b'{"command":"Ping"}\n')
    with trio.fail_after(10):
        try:
            got = await plain.receive_some(100)
        except trio.BrokenResourceError:
            got = b""
    assert b"status" not in got
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(httpx.HTTPError):
            await http.post(f"http://127.0.0.1:{srv.ports.wallet}/v1/check", content=b"{}")


@pytest.mark.parametrize("validity", ["expired", "not yet valid", "valid"])
async def test_a_certificate_out_of_its_validity_is_a_warning_at_start(start_server, tmp_path, ca, caplog, validity):
    """Served anyway (refusing would take down the listeners whose clients do not verify, at a restart), with a
    WARNING line, and its notAfter as a metric for an alert."""
    caplog.set_level("WARNING", logger="syncledger")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_before, not_after = {"expired": (now - DAY * 90, now - DAY * 3), "not yet valid": (now + DAY * 2, now + DAY * 90),
                             "valid": (now - DAY, now + DAY * 90)}[validity]
    cert = ca.issue_cert("127.0.0.1", not_before=not_before, not_after=not_after)
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    srv = await start_server(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "certificate" in r.getMessage()]
    if validity == "expired":
        assert len(warnings) == 1 and f"expired on {not_after:%Y-%m-%d %H:%M} UTC (3 days ago)" in warnings[0]
    elif validity == "not yet valid":
        assert len(warnings) == 1 and f"not valid before {not_before:%Y-%m-%d %H:%M} UTC (in 2 days)" in warnings[0]
    else:
        assert warnings == []
    assert "cert.pem" in "".join(warnings) or validity == "valid"
    assert srv.metrics.registry.get_sample_value("syncledger_tls_cert_not_after_seconds") == not_after.timestamp()


def test_a_wrong_certificate_is_one_line(tmp_path, capsys):
    from syncledger.server.cli import main
    (tmp_path / "c.pem").write_text("not a certificate")
    assert main(["serve", "--db", str(tmp_path / "x.db"), "--tls-cert", str(tmp_path / "c.pem"), "--tls-key",
                 str(tmp_path / "c.pem"), "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0"]) == 2
    assert "cannot use the TLS certificate" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_json_logs_are_one_object_a_line(capsys):
    logs.configure("json")
    try:
        logging.getLogger("syncledger.test").info("connection %d from %s closed", 7, "10.0.0.1")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("syncledger.test").exception("failed")
    finally:
        logs.configure("text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "connection 7 from 10.0.0.1 closed" and lines[0]["level"] == "INFO"
    assert "ValueError: boom" in lines[1]["error"]


async def test_expired_game_sessions_are_pruned(start_server, autojump_clock):
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery=nursery, mem=True, game_session_ttl=100)
        h = Harness(srv)
        async with h.client() as c:
            login = await h.add_account(c)
            await c.call("OpenGameSession", {"login": login})
            await trio.sleep(90)
            await c.call("OpenGameSession", {"login": login})
            assert srv.store.db.execute("SELECT count(*) FROM game_sessions").fetchone()[0] == 2
            await trio.sleep(100)  # the first is 190 s idle, the second 100 s: both expired by the next prune
            await trio.sleep(61)
            assert srv.store.db.execute("SELECT count(*) FROM game_sessions").fetchone()[0] == 0
        nursery.cancel_scope.cancel()


def test_a_config_file_takes_every_option_and_flags_override_it(tmp_path, capsys, monkeypatch):
    from syncledger.server.cli import main
    monkeypatch.setenv("SYNCLEDGER_SECRET", "a-secret-that-must-never-be-printed")
    conf = tmp_path / "syncledger.toml"
    conf.write_text('db = "/srv/ledger.db"\ntcp-port = 9000\nidle_timeout = 30\nlog-format = "json"\n'
                    'wallet-test-endpoints = true\ndefault-currency = "EUR"\n')
    assert main(["config", "show", "--config", str(conf), "--tcp-port", "9100"]) == 0
    shown = capsys.readouterr().out
    assert 'db = "/srv/ledger.db"' in shown and "tcp-port = 9100" in shown and "idle-timeout = 30.0" in shown
    assert 'log-format = "json"' in shown and "wallet-test-endpoints = true" in shown
    assert "ws-port = 7401" in shown and 'default-currency = "EUR"' in shown
    assert "SYNCLEDGER_SECRET: set (hidden)" in shown and "must-never" not in shown
    for bad, why in (('tcp-portt = 1\n', "unknown option"), ('idle-timeout = -1\n', "greater than 0"),
                     ('log-format = "xml"\n', "one of"), ('default-currency = "euro"\n', "three-letter"),
                     ("not toml", "cannot read")):
        conf.write_text(bad)
        assert main(["config", "show", "--config", str(conf)]) == 2
        assert why in capsys.readouterr().err
