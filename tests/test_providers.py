"""Game providers (issue 23), the server's side: ``syncledger provider add|list|rotate|remove|set`` on SQLite and
PostgreSQL, providers declared in the config file, each wallet call authenticated to one provider (its token, its
settlement mode, its currencies, whether it may send promo_payout), a change taking effect within a second on a
running server, ``POST /v1/promo_payout``, and the answers counted per provider."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from decimal import Decimal

import httpx
import orjson
import pytest
import trio

from syncledger.ledger import engine
from syncledger.server import config as config_module
from syncledger.server.app import ProvidersError, Server, serve
from syncledger.server.auth import Provider, ProviderKeys, token_hash
from syncledger.server.cli import main
from syncledger.server.config import ConfigError, ProviderConfig, from_toml
from syncledger.server.testing import Harness, test_config
from tests.conftest import add_account, assert_ledger_ok, event_count, make_config, tcp_client
from tests.pgcluster import backend, every_backend, ledger_db, pg_cluster, pg_url, serve_on  # noqa: F401

DEFAULT_TOKEN = "default-provider-token"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``syncledger ARGV``: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # (argparse's refusals)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys, db: str, name: str, *options: str) -> str:
    """``provider add``: its token (the one line on stdout)."""
    code, out, err = cli(capsys, "provider", "add", "--db", db, "--name", name, *options)
    assert code == 0, err
    assert out.count("\n") == 1 and "shown this once" in err and out.strip() not in err
    return out.strip()


def rows(db: str) -> dict[str, tuple]:
    """The providers table: name -> (token_hash, settlement, currencies, promo, removed)."""
    conn = engine.connect(db)
    try:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT name, token_hash, settlement, currencies, promo, removed FROM providers")}
    finally:
        conn.close()


# ---- the CLI


def test_add_prints_the_token_once_and_stores_only_its_hash(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    token = add(capsys, db, "evo", "--settlement", "mixed", "--currency", "EUR,USD", "--promo")
    assert len(token) >= 43 and token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert rows(db) == {"default": (None, "gamewise", "", 0, 0),
                        "evo": (token_hash(token), "mixed", "EUR,USD", 1, 0)}
    other = add(capsys, db, "pragmatic-2")
    assert other != token and rows(db)["pragmatic-2"] == (token_hash(other), "gamewise", "", 0, 0)


def test_list_shows_settings_and_whether_a_token_is_stored_never_the_token_or_its_hash(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    token = add(capsys, db, "evo", "--currency", "EUR", "--promo")
    code, out, _ = cli(capsys, "provider", "list", "--db", db, "--format", "json")
    listed = json.loads(out)
    assert code == 0 and [p["name"] for p in listed] == ["default", "evo"]
    assert listed[0] == {"name": "default", "settlement": "gamewise", "currencies": [], "promo": False, "created": 0,
                         "removed": None, "token_stored": False}
    assert listed[1]["currencies"] == ["EUR"] and listed[1]["promo"] and listed[1]["token_stored"]
    code, text, _ = cli(capsys, "provider", "list", "--db", db)
    lines = text.splitlines()
    assert code == 0 and lines[0].split() == ["name", "settlement", "currencies", "promo", "token", "created",
                                               "removed"]
    assert lines[1].split()[:5] == ["default", "gamewise", "any", "no", "-"]
    assert lines[2].split()[:5] == ["evo", "gamewise", "EUR", "yes", "stored"] and lines[2].split()[6] == "-"
    for shown in (out, text):
        assert token not in shown and token_hash(token) not in shown


@pytest.mark.parametrize("argv, wants", [
    (["add", "--name", "Evo"], "--name"), (["add", "--name", "-evo"], "--name"), (["add", "--name", ""], "--name"),
    (["add", "--name", "a" * 33], "--name"), (["add", "--name", "e vo"], "--name"), (["add", "--name", "é"], "--name"),
    (["add", "--name", "x", "--settlement", "roundwise"], "--settlement"),
    (["add", "--name", "x", "--currency", "EURO"], "--currency"), (["add", "--name", "x", "--currency", "eur"],
                                                                   "--currency"),
    (["add", "--name", "x", "--currency", ",,"], "--currency"), (["add"], "--name"),
    (["set", "--name", "evo", "--settlement", "x"], "--settlement"), (["set", "--name", "evo"], "nothing to change"),
    (["rotate", "--name", "EVO"], "--name"), (["remove"], "--name"), (["list", "--format", "csv"], "--format"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, capsys, argv, wants):
    db = str(tmp_path / "l.db")
    add(capsys, db, "evo")
    before = rows(db)
    code, out, err = cli(capsys, "provider", *argv[:1], "--db", db, *argv[1:])
    assert (code, out, err.count("\n")) == (2, "", 1), (code, out, err)
    assert wants in err
    assert rows(db) == before


def test_a_provider_that_is_not_there_or_already_there_is_exit_1(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    add(capsys, db, "evo")
    before = rows(db)
    for argv in (["rotate", "--name", "nope"], ["remove", "--name", "nope"], ["set", "--name", "nope", "--promo"],
                 ["add", "--name", "evo"], ["add", "--name", "default"]):
        code, out, err = cli(capsys, "provider", argv[0], "--db", db, *argv[1:])
        assert (code, out, err.count("\n")) == (1, "", 1), (argv, code, out, err)
        assert ("no provider nope" in err) or ("exists" in err)
    assert rows(db) == before


def test_a_command_on_a_ledger_that_is_not_there_is_exit_2_and_creates_nothing(tmp_path, capsys):
    db = str(tmp_path / "none.db")
    for argv in (["list"], ["rotate", "--name", "evo"], ["remove", "--name", "evo"], ["set", "--name", "evo",
                                                                                      "--promo"]):
        code, out, err = cli(capsys, "provider", argv[0], "--db", db, *argv[1:])
        assert (code, out, err.count("\n")) == (2, "", 1) and "no ledger" in err
    assert list(tmp_path.iterdir()) == []


def test_rotate_remove_set_and_add_again(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    first = add(capsys, db, "evo", "--currency", "EUR")
    code, out, err = cli(capsys, "provider", "rotate", "--db", db, "--name", "evo")
    second = out.strip()
    assert code == 0 and out.count("\n") == 1 and second != first and "shown this once" in err
    assert rows(db)["evo"][0] == token_hash(second)

    code, out, _ = cli(capsys, "provider", "set", "--db", db, "--name", "evo", "--settlement", "mixed", "--promo")
    assert code == 0 and "mixed, EUR, may send promo_payout" in out
    assert rows(db)["evo"] == (token_hash(second), "mixed", "EUR", 1, 0)
    code, out, _ = cli(capsys, "provider", "set", "--db", db, "--name", "evo", "--currency", "", "--no-promo")
    assert code == 0 and "mixed, any currency, no promo_payout" in out
    assert rows(db)["evo"] == (token_hash(second), "mixed", "", 0, 0)

    code, out, _ = cli(capsys, "provider", "remove", "--db", db, "--name", "evo")
    token, settlement, _, _, removed = rows(db)["evo"]
    assert code == 0 and "removed" in out and token is None and removed > 0 and settlement == "mixed"
    code, out, _ = cli(capsys, "provider", "list", "--db", db, "--format", "json")
    assert json.loads(out)[1]["removed"] == removed and not json.loads(out)[1]["token_stored"]
    assert cli(capsys, "provider", "rotate", "--db", db, "--name", "evo")[0] == 1  # removed: nothing to rotate
    assert cli(capsys, "provider", "remove", "--db", db, "--name", "evo")[0] == 1

    third = add(capsys, db, "evo", "--promo")  # back, under its name (and its ids), with a new token
    assert rows(db)["evo"] == (token_hash(third), "gamewise", "", 1, 0)


def test_the_default_provider_can_be_set_and_given_a_stored_token(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    add(capsys, db, "evo")  # (makes the ledger)
    assert cli(capsys, "provider", "set", "--db", db, "--name", "default", "--settlement", "mixed")[0] == 0
    code, out, _ = cli(capsys, "provider", "rotate", "--db", db, "--name", "default")
    assert code == 0 and rows(db)["default"] == (token_hash(out.strip()), "mixed", "", 0, 0)


def test_the_provider_commands_on_postgresql(pg_url, capsys):
    token = add(capsys, pg_url, "evo", "--settlement", "mixed", "--currency", "USD")
    assert rows(pg_url)["evo"] == (token_hash(token), "mixed", "USD", 0, 0)
    assert add(capsys, pg_url, "evo2") != token
    assert cli(capsys, "provider", "add", "--db", pg_url, "--name", "evo")[0] == 1
    code, out, _ = cli(capsys, "provider", "rotate", "--db", pg_url, "--name", "evo")
    assert code == 0 and rows(pg_url)["evo"][0] == token_hash(out.strip())
    assert cli(capsys, "provider", "set", "--db", pg_url, "--name", "evo", "--promo", "--currency", "EUR,USD")[0] == 0
    assert rows(pg_url)["evo"][1:] == ("mixed", "EUR,USD", 1, 0)
    assert cli(capsys, "provider", "remove", "--db", pg_url, "--name", "evo2")[0] == 0
    assert rows(pg_url)["evo2"][0] is None and rows(pg_url)["evo2"][4] > 0
    code, out, _ = cli(capsys, "provider", "list", "--db", pg_url, "--format", "json")
    assert code == 0 and [p["name"] for p in json.loads(out)] == ["default", "evo", "evo2"]
    assert cli(capsys, "provider", "rotate", "--db", pg_url, "--name", "nope")[0] == 1


# ---- the config file


def test_config_file_providers(tmp_path, capsys, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('tcp-port = 7400\n[providers.evo]\ntoken_env = "EVO_TOKEN"\nsettlement = "mixed"\n'
                    'currencies = "EUR,USD"\npromo = true\n[providers.pragma]\ntoken_env = "PRAGMA_TOKEN"\n'
                    'currencies = ["EUR"]\n')
    assert from_toml(str(path))["providers"] == (
        ProviderConfig("evo", "EVO_TOKEN", "mixed", ("EUR", "USD"), True),
        ProviderConfig("pragma", "PRAGMA_TOKEN", "gamewise", ("EUR",), False))
    monkeypatch.setenv("EVO_TOKEN", "evo-secret")
    monkeypatch.delenv("PRAGMA_TOKEN", raising=False)
    code, out, _ = cli(capsys, "config", "show", "--config", str(path))
    assert code == 0 and "evo-secret" not in out
    assert '[providers.evo]\ntoken_env = "EVO_TOKEN"  # set (hidden)\nsettlement = "mixed"\ncurrencies = "EUR,USD"' \
           '\npromo = true' in out
    assert 'token_env = "PRAGMA_TOKEN"  # not set' in out


@pytest.mark.parametrize("table, wants", [
    ('[providers.Evo]\ntoken_env = "T"', "[providers.Evo]: a provider's name"),
    ('[providers.evo]\nsettlement = "mixed"', "token_env names the environment variable"),
    ('[providers.evo]\ntoken_env = "T"\nsettlement = "roundwise"', "settlement = roundwise: one of gamewise, mixed"),
    ('[providers.evo]\ntoken_env = "T"\ncurrencies = "EURO"', "currencies = EURO: a three-letter"),
    ('[providers.evo]\ntoken_env = "T"\npromo = 1', "promo = 1: wants true or false"),
    ('[providers.evo]\ntoken_env = 5', "token_env = 5: wants a string"),
    ('[providers.evo]\ntoken_env = "T"\ntoken = "in the file"', "unknown key token"),
    ('providers = 5', "providers wants tables"),
    ('[providers]\nevo = 5', "[providers.evo] wants a table"),
])
def test_a_bad_config_file_provider_is_one_line(tmp_path, capsys, table, wants):
    path = tmp_path / "c.toml"
    path.write_text(table + "\n")
    with pytest.raises(ConfigError) as e:
        from_toml(str(path))
    assert wants in str(e.value) and "\n" not in str(e.value)
    code, out, err = cli(capsys, "config", "show", "--config", str(path))
    assert (code, out, err.count("\n")) == (2, "", 1) and wants in err


def test_serve_refuses_a_config_provider_that_is_also_in_the_table_or_has_no_token(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "l.db")
    add(capsys, db, "evo")
    path = tmp_path / "c.toml"
    flags = ["--db", db, "--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0", "--admin-port", "-1",
             "--writer", "thread"]
    for name, wants in (("evo", "provider evo is in the config file and in the ledger's providers table"),
                        ("default", "provider default is in the config file and in the ledger's providers table"),
                        ("pragma", "its token_env PRAGMA_TOKEN is not set")):
        path.write_text(f'[providers.{name}]\ntoken_env = "PRAGMA_TOKEN"\n')
        monkeypatch.setenv("PRAGMA_TOKEN", "secret")
        if name == "pragma":
            monkeypatch.delenv("PRAGMA_TOKEN")
        code, out, err = cli(capsys, "serve", "--config", str(path), *flags)
        assert (code, out) == (2, "") and wants in err and err.count("\n") == 1, err


async def test_two_providers_with_one_token_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PRAGMA_TOKEN", DEFAULT_TOKEN)
    config = test_config(db=str(tmp_path / "l.db"), wallet_token=DEFAULT_TOKEN,
                         providers=(ProviderConfig("pragma", "PRAGMA_TOKEN"),))
    with pytest.raises(ProvidersError, match="providers default and pragma have the same token"):
        Server(config)


# ---- the map of tokens (pure)


def test_provider_keys_name_one_provider_per_token():
    now = [0.0]
    keys = ProviderKeys({"default": "env-token", "cfg": "cfg-token"}, {"cfg": Provider("cfg", "mixed")},
                        lambda: now[0])
    keys.load([("default", None, "mixed", "EUR", 0, 0), ("evo", token_hash("evo-token"), "gamewise", "", 1, 0),
               ("gone", token_hash("gone-token"), "gamewise", "", 0, 123)])
    assert keys.find([b"env-token"]) == Provider("default", "mixed", frozenset({"EUR"}), False)
    assert keys.find([b"evo-token"]) == Provider("evo", "gamewise", frozenset(), True)
    assert keys.find([b"cfg-token"]) == Provider("cfg", "mixed")
    assert keys.find([b"gone-token"]) is None and keys.find([]) is None and keys.find([b"x", b""]) is None
    assert keys.find([b"gateway-bearer", b"evo-token"]).name == "evo"  # any token that matches
    assert keys.find([b"evo-token", b"evo-token"]).name == "evo"
    assert keys.find([b"evo-token", b"cfg-token"]) is None  # two providers: neither
    keys.load([("default", None, "gamewise", "", 0, 99)])  # the default provider removed: its env token too
    assert keys.find([b"env-token"]) is None and keys.find([b"cfg-token"]).name == "cfg"
    woken = []
    keys.wake = lambda: woken.append(True)
    keys.find([b"unknown"])
    assert woken == [True]
    assert Provider("p", currencies=frozenset({"EUR"})).takes("EUR") and not Provider(
        "p", currencies=frozenset({"EUR"})).takes("USD")
    assert Provider("p").takes("USD") and Provider("p", currencies=frozenset({"EUR"})).takes(None)


# ---- the wallet, one provider a call


def spy(srv) -> list:
    """Every WalletCall the wallet makes from now on."""
    made: list = []
    run = srv.wallet._run

    async def recorded(call):
        made.append(call)
        return await run(call)
    srv.wallet._run = recorded
    return made


def store_provider(srv, name: str, token: str | None, settlement: str = "gamewise", currencies: str = "",
                   promo: int = 0) -> None:
    """A provider in an in-memory server's table (what `provider add` does to a file), read at once."""
    srv.store.db.execute("INSERT INTO providers VALUES (?, ?, ?, ?, ?, 1, 0) ON CONFLICT (name) DO UPDATE SET "
                         "token_hash = excluded.token_hash, settlement = excluded.settlement, "
                         "currencies = excluded.currencies, promo = excluded.promo",
                         (name, token_hash(token) if token else None, settlement, currencies, promo))
    srv.reload_providers()


async def player(h: Harness, balance: int = 100, currency: str = "EUR") -> tuple[int, str]:
    """An account with ``balance`` and a game session: (login, sid)."""
    async with h.client() as c:
        login = await add_account(c, currency=currency)
        if balance:
            assert (await c.call("BalanceIn", {"login": login, "amount": balance})).ok
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    return login, sid


def move(login: int, sid: str | None, txid: str, amount=None, ref_id: str | None = None, game: dict | None = None,
         currency: str = "EUR", uuid: str = "u") -> dict:
    tx = {"id": txid, **({"amount": amount} if amount is not None else {}), **({"refId": ref_id} if ref_id else {})}
    body = {"sid": sid, "userId": str(login), "currency": currency, "transaction": tx, "uuid": uuid}
    if game is not None:
        body["game"] = game
    return body


def promo(login: int, txid: str, amount, kind: str = "JackpotWin", sid: str | None = None, game: dict | None = None,
          uuid: str = "p", currency: str = "EUR", **extra) -> dict:
    body = {"userId": str(login), "currency": currency, "uuid": uuid,
            "promoTransaction": {"type": kind, "id": txid, "amount": amount, **extra}}
    if sid is not None:
        body["sid"] = sid
    if game is not None:
        body["game"] = game
    return body


async def test_each_call_is_made_in_its_providers_name(mem_server):
    srv, h = mem_server, Harness(mem_server)
    store_provider(srv, "evo", "evo-token", "mixed")
    made = spy(srv)
    login, sid = await player(h)
    game = {"id": "r1", "type": "blackjack", "session": "table-4"}
    assert (await h.wallet("debit", move(login, sid, "D1", 5, game=game), "evo-token"))["status"] == "OK"
    assert (await h.wallet("debit", move(login, sid, "D2", 5, game={"id": "r2"})))["status"] == "OK"
    assert (await h.wallet("balance", {"sid": sid, "userId": str(login), "currency": "EUR"}, "evo-token")
            )["status"] == "OK"
    assert [(c.provider, c.settlement, c.game_type, c.game_session) for c in made] == [
        ("evo", "mixed", "blackjack", "table-4"), ("default", "gamewise", None, None),
        ("evo", "mixed", None, None)]
    assert (await h.wallet("debit", move(login, sid, "D3", 5), "nobody's"))["status"] == "INVALID_TOKEN_ID"
    assert len(made) == 3
    value = srv.metrics.registry.get_sample_value
    assert value("syncledger_wallet_answers_total", {"action": "debit", "status": "OK", "provider": "evo"}) == 1
    assert value("syncledger_wallet_answers_total", {"action": "debit", "status": "OK", "provider": "default"}) == 1
    assert value("syncledger_wallet_answers_total", {"action": "debit", "status": "INVALID_TOKEN_ID",
                                                     "provider": ""}) == 1


async def test_a_currency_the_provider_may_not_use_is_refused_and_writes_nothing(mem_server):
    srv, h = mem_server, Harness(mem_server)
    store_provider(srv, "usd-only", "usd-token", currencies="USD")
    store_provider(srv, "both", "both-token", currencies="EUR,USD")
    login, sid = await player(h)
    before = await event_count(srv)
    for action, body in (("debit", move(login, sid, "D1", 5)), ("credit", move(login, sid, "C1", 5, "D1")),
                         ("balance", {"sid": sid, "userId": str(login), "currency": "EUR", "uuid": "u"})):
        reply = await h.wallet(action, body, "usd-token")
        assert reply == {"status": "INVALID_PARAMETER", "uuid": "u"}, (action, reply)
    assert await event_count(srv) == before
    assert (await h.wallet("check", {"sid": sid, "userId": str(login)}, "usd-token"))["status"] == "OK"  # no currency
    assert (await h.wallet("debit", move(login, sid, "D1", 5), "both-token"))["status"] == "OK"
    assert await event_count(srv) == before + 1
    await assert_ledger_ok(srv)


async def test_syncledger_wallet_token_is_still_the_default_provider(nursery, monkeypatch):
    monkeypatch.setenv("SYNCLEDGER_WALLET_TOKEN", "from-the-environment")
    srv = await nursery.start(serve, test_config(wallet_token=None))
    h = Harness(srv)
    made = spy(srv)
    login, sid = await player(h)
    body = {"sid": sid, "userId": str(login), "currency": "EUR"}
    assert (await h.wallet("balance", body, "from-the-environment"))["status"] == "OK"
    assert (await h.wallet("balance", body, "syncledger-test-wallet-token"))["status"] == "INVALID_TOKEN_ID"
    # `provider rotate --name default` gives it a stored token beside it; `provider set` its settings
    store_provider(srv, "default", "stored-default", "mixed", "EUR")
    assert (await h.wallet("balance", body, "stored-default"))["status"] == "OK"
    assert (await h.wallet("balance", body, "from-the-environment"))["status"] == "OK"
    assert [(c.provider, c.settlement) for c in made] == [("default", "gamewise"), ("default", "mixed"),
                                                          ("default", "mixed")]


async def test_without_a_token_every_call_is_refused(nursery, monkeypatch):
    monkeypatch.delenv("SYNCLEDGER_WALLET_TOKEN", raising=False)
    srv = await nursery.start(serve, test_config(wallet_token=None))
    h = Harness(srv)
    login, sid = await player(h)
    for token in ("", "anything", None):
        assert (await h.wallet("balance", {"sid": sid, "userId": str(login), "currency": "EUR"}, token)
                )["status"] == "INVALID_TOKEN_ID"


# ---- a change on a running server: within a second, no restart


async def until(predicate, within: float = 2.0, step: float = 0.02) -> float:
    """Seconds (on Trio's clock) until ``await predicate()`` holds; fails after ``within``."""
    start = trio.current_time()
    while not await predicate():
        assert trio.current_time() - start < within, f"not within {within} s"
        await trio.sleep(step)
    return trio.current_time() - start


@every_backend
async def test_providers_added_rotated_set_and_removed_on_a_running_server(nursery, backend, ledger_db, capsys):
    """Real clock, real sockets, the CLI on the ledger the server holds (on PostgreSQL too, and on two nodes of
    one PostgreSQL ledger: each call goes to the next node, and both must have read the change)."""
    db = ledger_db
    srv = await serve_on(nursery, backend, make_config(db=db, wallet_token=DEFAULT_TOKEN))
    async with tcp_client(srv) as c:
        login = await add_account(c)
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    body = orjson.dumps({"sid": sid, "userId": str(login), "currency": "EUR", "uuid": "u"})

    async with httpx.AsyncClient(timeout=30) as http:
        async def answers(token: str) -> set[str]:
            """The statuses of two calls (on a cluster, one to each node)."""
            found = set()
            for _ in range(2):
                url = f"http://127.0.0.1:{srv.ports.wallet}/v1/balance"  # (a cluster: the next node's)
                found.add((await http.post(url, params={"authToken": token}, content=body)).json()["status"])
            return found

        def now(token: str, status: str):
            async def holds() -> bool:
                return await answers(token) == {status}
            return holds
        # (each within a second: half a second at most, but a loaded CI machine's threads may wait; the bound
        # itself is checked on Trio's mock clock, below)

        token = add(capsys, db, "late")
        await until(now(token, "OK"))
        code, out, _ = cli(capsys, "provider", "rotate", "--db", db, "--name", "late")
        new = out.strip()
        await until(now(token, "INVALID_TOKEN_ID"))
        await until(now(new, "OK"))
        assert cli(capsys, "provider", "set", "--db", db, "--name", "late", "--currency", "USD")[0] == 0
        await until(now(new, "INVALID_PARAMETER"))
        assert cli(capsys, "provider", "remove", "--db", db, "--name", "late")[0] == 0
        await until(now(new, "INVALID_TOKEN_ID"))
        assert await answers(DEFAULT_TOKEN) == {"OK"}
    await assert_ledger_ok(srv)


async def test_a_removed_provider_is_refused_within_a_second_of_mock_time(autojump_clock, nursery, tmp_path, capsys):
    """The map of tokens is read again every half second (Trio's clock), and at once after an unknown token."""
    db = str(tmp_path / "l.db")
    token = add(capsys, db, "evo")
    srv = await nursery.start(serve, test_config(db=db))
    h = Harness(srv)
    login, sid = await player(h)
    body = {"sid": sid, "userId": str(login), "currency": "EUR"}

    async def status(t: str) -> str:
        return (await h.wallet("balance", body, t))["status"]
    assert await status(token) == "OK"
    assert cli(capsys, "provider", "remove", "--db", db, "--name", "evo")[0] == 0

    async def refused() -> bool:
        return await status(token) == "INVALID_TOKEN_ID"
    assert await until(refused) <= 0.55  # the next read: half a second at most
    back = add(capsys, db, "evo")  # a new token, unknown to the map: its first call wakes a read

    async def taken() -> bool:
        return await status(back) == "OK"
    assert await until(taken) <= 0.3
    await trio.sleep(600)  # ten minutes of quiet: the map is read again, and still right
    assert await status(back) == "OK" and await status(token) == "INVALID_TOKEN_ID"


# ---- promo_payout


async def test_promo_payout_is_refused_for_a_provider_not_allowed_to_send_it(mem_server):
    srv, h = mem_server, Harness(mem_server)
    store_provider(srv, "evo", "evo-token")  # promo 0
    login, _ = await player(h)
    before = await event_count(srv)
    for token in ("evo-token", "syncledger-test-wallet-token"):  # (the default provider may not either)
        reply = await h.wallet("promo_payout", promo(login, "P1", 5, uuid="p1"), token)
        assert reply == {"status": "FINAL_ERROR_ACTION_FAILED", "uuid": "p1"}
    assert await event_count(srv) == before
    store_provider(srv, "evo", "evo-token", promo=1)  # `provider set --name evo --promo`
    reply = await h.wallet("promo_payout", promo(login, "P1", 5, uuid="p1"), "evo-token")
    assert (reply["status"], reply["balance"], reply["uuid"]) == ("OK", 105, "p1")
    assert await event_count(srv) == before + 1


async def test_promo_payout_exact_idempotent_and_retransmitted(mem_server):
    srv, h = mem_server, Harness(mem_server)
    store_provider(srv, "evo", "evo-token", promo=1)
    login, sid = await player(h)
    before = await event_count(srv)

    async def pay(body: dict) -> dict:
        return await h.wallet("promo_payout", body, "evo-token")
    first = await pay(promo(login, "P1", "12.345678", "FreeRoundPlayableSpent", game={"id": "g9", "type": "slots"},
                            voucherId="v-1", remainingRounds=0))
    assert first == {"status": "OK", "balance": Decimal("112.345678"), "bonus": 0, "uuid": "p"}
    again = await pay(promo(login, "P1", Decimal("12.345678"), "FreeRoundPlayableSpent", game={"id": "g9"},
                            uuid="p-again"))
    assert again == {"status": "OK", "balance": Decimal("112.345678"), "bonus": 0, "uuid": "p-again",
                     "retransmission": True}
    changed = await pay(promo(login, "P1", "12.345679", "FreeRoundPlayableSpent", game={"id": "g9"}))
    assert changed["status"] == "INVALID_PARAMETER"
    assert await event_count(srv) == before + 1
    # the sid may be expired, empty, null or missing; 0 is an amount; no game at all is fine
    for n, (sid_given, amount) in enumerate(((None, 0), ("", 1), ("expired-or-unknown", "0.000001"), (sid, 2))):
        body = promo(login, f"Q{n}", amount, "JackpotWin", sid=sid_given)
        reply = await pay(body)
        assert reply["status"] == "OK", (n, reply)
    assert (await pay({**promo(login, "Q9", 1), "sid": None}))["status"] == "OK"
    assert await h.wallet("balance", {"sid": sid, "userId": str(login), "currency": "EUR"}, "evo-token") == {
        "status": "OK", "balance": Decimal("116.345679"), "bonus": 0, "uuid": None}
    await assert_ledger_ok(srv)


@pytest.mark.parametrize("body", [
    {"promoTransaction": {"type": "JackpotWin", "id": "X", "amount": -1}},
    {"promoTransaction": {"type": "JackpotWin", "id": "X", "amount": "1.0000001"}},
    {"promoTransaction": {"type": "JackpotWin", "id": "X", "amount": "NaN"}},
    {"promoTransaction": {"type": "JackpotWin", "id": "X"}},
    {"promoTransaction": {"type": "", "id": "X", "amount": 1}},
    {"promoTransaction": {"id": "X", "amount": 1}},
    {"promoTransaction": {"type": "JackpotWin", "id": "", "amount": 1}},
    {"promoTransaction": None}, {"promoTransaction": "X"}, {"promoTransaction": ...}, {"userId": ...},
    {"currency": ...}, {"currency": "EURO"}, {"currency": "USD"}, {"userId": "01000"}, {"game": {"id": 5}},
])
async def test_a_bad_promo_payout_is_invalid_parameter_and_writes_nothing(mem_server, body):
    srv, h = mem_server, Harness(mem_server)
    store_provider(srv, "evo", "evo-token", promo=1)
    login, _ = await player(h)
    before = await event_count(srv)
    request = {"userId": str(login), "currency": "EUR", "uuid": "bad",
               "promoTransaction": {"type": "JackpotWin", "id": "X", "amount": 1}}
    request.update(body)
    request = {k: v for k, v in request.items() if v is not ...}  # (...: left out)
    reply = await h.wallet("promo_payout", request, "evo-token")
    assert reply["status"] == "INVALID_PARAMETER" and reply["uuid"] == "bad"
    assert await event_count(srv) == before


async def test_a_promo_payout_id_that_names_a_debit_is_invalid_parameter(mem_server):
    srv, h = mem_server, Harness(mem_server)
    store_provider(srv, "evo", "evo-token", promo=1)
    login, sid = await player(h)
    assert (await h.wallet("debit", move(login, sid, "T1", 5, game={"id": "g"}), "evo-token"))["status"] == "OK"
    before = await event_count(srv)
    assert (await h.wallet("promo_payout", promo(login, "T1", 5), "evo-token"))["status"] == "INVALID_PARAMETER"
    assert await event_count(srv) == before


# ---- end to end: several providers on one running server, real sockets


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_providers_with_their_own_tokens_on_one_server_each_get_their_own(nursery, backend, ledger_db, capsys,
                                                                                monkeypatch):
    """A provider from the table (mixed, EUR), one from the config file and the default one, each with its own
    token, send the same transaction.id and game.id: each call is made in its own provider's name, recorded
    under it, and each gets its own debit; promo_payout for the one allowed to send it."""
    db = ledger_db
    evo = add(capsys, db, "evo", "--settlement", "mixed", "--currency", "EUR", "--promo")
    monkeypatch.setenv("PRAGMA_TOKEN", "pragma-secret")
    srv = await nursery.start(serve, make_config(db=db, wallet_token=DEFAULT_TOKEN, providers=(
        ProviderConfig("pragma", "PRAGMA_TOKEN", currencies=("EUR", "USD")),)))
    made = spy(srv)
    async with tcp_client(srv) as c:
        login = await add_account(c)
        assert (await c.call("BalanceIn", {"login": login, "amount": 100})).ok
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    base = f"http://127.0.0.1:{srv.ports.wallet}/v1"
    game = {"id": "12345", "type": "roulette", "session": "t-1"}
    async with httpx.AsyncClient(timeout=30) as http:
        async def post(action: str, body: dict, token: str, bearer: str | None = None) -> dict:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            r = await http.post(f"{base}/{action}", params={"authToken": token}, headers=headers,
                                content=orjson.dumps(body))
            return json.loads(r.content, parse_float=Decimal)
        for token in (evo, "pragma-secret", DEFAULT_TOKEN):
            reply = await post("debit", move(login, sid, "1001", 10, game=game), token, bearer="gateway-own")
            assert reply["status"] == "OK", reply
        assert reply["balance"] == 70
        promo_reply = await post("promo_payout", promo(login, "P1", "0.5"), evo)
        assert (promo_reply["status"], promo_reply["balance"]) == ("OK", Decimal("70.5"))
        own_debit = await post("promo_payout", promo(login, "1001", "0.5"), evo)  # its own debit's id
        assert own_debit["status"] == "INVALID_PARAMETER"
        refused = await post("promo_payout", promo(login, "1002", 1), "pragma-secret")
        assert refused["status"] == "FINAL_ERROR_ACTION_FAILED"
        assert (await post("debit", move(login, sid, "1003", 1), "no-one's"))["status"] == "INVALID_TOKEN_ID"
        # each credit settles its own provider's debit 1001, whatever the others did with theirs
        for token, balance in (("pragma-secret", "75.5"), (evo, "80.5")):
            reply = await post("credit", move(login, sid, "C1", 5, "1001", game=game), token)
            assert (reply["status"], reply["balance"]) == ("OK", Decimal(balance))
        async with tcp_client(srv) as c:
            trades = (await c.call("GetTrades", {"login": login})).data["trades"]
        assert sorted(t.get("provider", "-") for t in trades) == ["-", "default", "evo", "evo", "evo", "pragma",
                                                                  "pragma"]
    assert [(c.provider, c.settlement, c.game_type, c.game_session) for c in made] == [
        ("evo", "mixed", "roulette", "t-1"), ("pragma", "gamewise", "roulette", "t-1"),
        ("default", "gamewise", "roulette", "t-1"), ("evo", "mixed", None, None), ("evo", "mixed", None, None),
        ("pragma", "gamewise", "roulette", "t-1"), ("evo", "mixed", "roulette", "t-1")]
    assert made[3].action == "promo_payout" and made[3].promo_type == "JackpotWin"

    def recorded(conn) -> list[tuple]:
        return sorted(conn.execute("SELECT provider, kind, txid, game_id, game_type, game_session FROM wallet_tx "
                                   "WHERE kind IN ('debit', 'promo')").fetchall())
    assert await srv.read(recorded) == [("default", "debit", "1001", "12345", "roulette", "t-1"),
                                        ("evo", "debit", "1001", "12345", "roulette", "t-1"),
                                        ("evo", "promo", "P1", None, None, None),
                                        ("pragma", "debit", "1001", "12345", "roulette", "t-1")]
    await assert_ledger_ok(srv)
