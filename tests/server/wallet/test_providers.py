"""Game providers (issue 23), the wallet's side: providers declared in the config file, each wallet call
authenticated to one provider (its token, its settlement mode, its currencies, whether it may send promo_payout), a
change taking effect within a second on a running server (SQLite, PostgreSQL, two nodes), ``POST
/v1/promo_payout``, and the answers counted per provider. (The CLI's own tests: tests/server/ops/.)"""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import orjson
import pytest
import trio

from syncledger.server.app import ProvidersError, Server
from syncledger.server.auth import Provider, ProviderKeys, token_hash
from syncledger.server.config import ConfigError, ProviderConfig, from_toml
from syncledger.server.testing import Harness
from tests.conftest import add_account, assert_ledger_ok, event_count, server_config, tcp_client
from tests.pgcluster import backend, every_backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)
from tests.server.ops.test_providers import add, cli

DEFAULT_TOKEN = "default-provider-token"


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
    config = server_config(tmp_path, mem=True, db=str(tmp_path / "l.db"), wallet_token=DEFAULT_TOKEN,
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


async def test_syncledger_wallet_token_is_still_the_default_provider(start_server, monkeypatch):
    monkeypatch.setenv("SYNCLEDGER_WALLET_TOKEN", "from-the-environment")
    srv = await start_server(mem=True, wallet_token=None)
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


async def test_without_a_token_every_call_is_refused(start_server, monkeypatch):
    monkeypatch.delenv("SYNCLEDGER_WALLET_TOKEN", raising=False)
    srv = await start_server(mem=True, wallet_token=None)
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
async def test_providers_added_rotated_set_and_removed_on_a_running_server(start_server, backend, ledger_db, capsys):
    """Real clock, real sockets, the CLI on the ledger the server holds (on PostgreSQL too, and on two nodes of
    one PostgreSQL ledger: each call goes to the next node, and both must have read the change)."""
    db = ledger_db
    srv = await start_server(db=db, wallet_token=DEFAULT_TOKEN, backend=backend)
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


async def test_a_removed_provider_is_refused_within_a_second_of_mock_time(autojump_clock, start_server, tmp_path,
                                                                          capsys):
    """The map of tokens is read again every half second (Trio's clock), and at once after an unknown token."""
    db = str(tmp_path / "l.db")
    token = add(capsys, db, "evo")
    srv = await start_server(mem=True, db=db)  # (a ledger file, inline on the Trio thread)
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
async def test_providers_with_their_own_tokens_on_one_server_each_get_their_own(start_server, backend, ledger_db,
                                                                                capsys, monkeypatch):
    """A provider from the table (mixed, EUR), one from the config file and the default one, each with its own
    token, send the same transaction.id and game.id: each call is made in its own provider's name, recorded
    under it, and each gets its own debit; promo_payout for the one allowed to send it."""
    db = ledger_db
    evo = add(capsys, db, "evo", "--settlement", "mixed", "--currency", "EUR", "--promo")
    monkeypatch.setenv("PRAGMA_TOKEN", "pragma-secret")
    srv = await start_server(db=db, wallet_token=DEFAULT_TOKEN, backend=backend, providers=(
        ProviderConfig("pragma", "PRAGMA_TOKEN", currencies=("EUR", "USD")),))
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
