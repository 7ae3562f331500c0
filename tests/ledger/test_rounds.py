"""Several game providers on one ledger (ledger/wallet.py, schema step 8): every id scoped by its provider, rounds
settled game-wise or mixed, promo payouts, each round's state in wallet_rounds; on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import shutil

import orjson
import pytest

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, migrations, verify, verify_path
from syncledger.ledger import wallet as w
from syncledger.ledger.commands import OpenSession, WalletCall
from tests.conftest import FIXTURES
from tests.pgcluster import backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)

U = 1_000_000
NOW = 1_700_000_000
V7 = FIXTURES / "ledger-v7.sqlite"  # the release before providers
both = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


class Ledger:
    """A store with accounts 1000 (EUR) and 1001 (EUR), 100 each, and a session for each."""

    def __init__(self, path: str):
        self.store = Store(path)
        self.now = NOW
        self.one(AddAccount("a", "EUR", NOW, login=1000))
        self.one(AddAccount("b", "EUR", NOW, login=1001))
        for login in (1000, 1001):
            self.one(Finance(FinanceRequest("BalanceIn", login, 100 * U), NOW))
            self.one(OpenSession(login, f"sid-{login}", NOW, 10**9))

    def one(self, command):
        (outcome,) = self.store.apply_batch([command])
        assert outcome.error is None, outcome.error
        return outcome

    def call(self, action: str, txid: str, ref: str | None = None, game: str | None = "g1", amount: float = 0, *,
             login: int = 1000, provider: str = "default", settlement: str = "gamewise",
             promo_type: str | None = None) -> w.WalletResult:
        self.now += 1
        units = round(amount * U)
        payload = orjson.dumps([action, str(login), "EUR", game, promo_type or "slots", txid, ref, units]).decode()
        return self.one(WalletCall(action, login, self.now, 10**9, sid=f"sid-{login}", currency="EUR", txid=txid,
                                   ref_id=ref, game_id=game, amount=units, payload=payload, provider=provider,
                                   settlement=settlement, game_type="slots", game_session="s-1",
                                   promo_type=promo_type)).data

    def balance(self, login: int = 1000) -> int:
        return self.store.accounts[login][1]

    def rounds(self) -> dict[tuple[str, int, str], str]:
        return {(p, login, g): state for p, login, g, state in self.store.db.execute(
            "SELECT provider, login, game_id, state FROM wallet_rounds")}

    def close(self) -> None:
        assert verify(self.store.db).ok
        self.store.close()


@pytest.fixture
def ledger(ledger_db):
    led = Ledger(ledger_db)
    yield led
    led.close()


@both
def test_two_providers_with_the_same_ids_each_get_their_own_exactly_once(ledger):
    for provider in ("a", "b"):
        assert ledger.call("debit", "1001", "r1", "12345", 5, provider=provider).status == w.OK
    assert ledger.balance() == 90 * U
    for provider in ("a", "b"):  # each provider's repeat is its own repeat
        again = ledger.call("debit", "1001", "r1", "12345", 5, provider=provider)
        assert (again.status, again.retransmission) == (w.BET_ALREADY_EXIST, True)
    assert ledger.call("credit", "C1", "1001", "12345", 7, provider="a").status == w.OK
    # a's round 12345 is settled; b's round 12345 is not, and its credit pays
    assert ledger.call("credit", "C1", "1001", "12345", 3, provider="b").status == w.OK
    assert ledger.call("credit", "C2", "1001", "12345", 3, provider="b").status == w.BET_ALREADY_SETTLED
    assert ledger.balance() == 100 * U
    assert ledger.rounds() == {("a", 1000, "12345"): "settled", ("b", 1000, "12345"): "settled"}
    rows = ledger.store.db.execute("SELECT provider, kind, txid, game_type, game_session FROM wallet_tx "
                                   "WHERE status = 'OK' ORDER BY seq").fetchall()
    assert [tuple(r) for r in rows] == [("a", "debit", "1001", "slots", "s-1"), ("b", "debit", "1001", "slots", "s-1"),
                                        ("a", "credit", "C1", "slots", "s-1"), ("b", "credit", "C1", "slots", "s-1")]


@both
def test_a_provider_cannot_touch_another_providers_round(ledger):
    assert ledger.call("debit", "D1", "R1", "g1", 10, provider="a").status == w.OK
    # b names a's debit: no such debit of b's (and the id is b's tombstone from now on)
    assert ledger.call("credit", "C1", "D1", "g1", 50, provider="b").status == w.BET_DOES_NOT_EXIST
    assert ledger.call("cancel", "D1", "R1", "g1", 10, provider="b").status == w.BET_DOES_NOT_EXIST
    assert ledger.balance() == 90 * U and ledger.rounds() == {("a", 1000, "g1"): "open"}
    assert ledger.call("cancel", "D1", "R1", "g1", 10, provider="a").status == w.OK
    assert ledger.balance() == 100 * U and ledger.rounds() == {("a", 1000, "g1"): "cancelled"}
    # b's tombstone is b's: b can never be debited with D1, a is not concerned
    assert ledger.call("debit", "D1", "R9", "g2", 1, provider="b").status == w.FINAL_ERROR_ACTION_FAILED


@both
def test_a_mixed_round_of_three_debits_and_three_credits_pays_all_three_wins(ledger):
    mixed = {"provider": "live", "settlement": "mixed"}
    for i in (1, 2, 3):
        assert ledger.call("debit", f"D{i}", f"R{i}", "table-7", 10, **mixed).status == w.OK
    assert ledger.balance() == 70 * U
    assert ledger.call("credit", "C1", "R1", "table-7", 20, **mixed).status == w.OK
    assert ledger.rounds()[("live", 1000, "table-7")] == "open"
    assert ledger.call("credit", "C2", "D2", "table-7", 0, **mixed).status == w.OK  # by the debit's own id
    assert ledger.call("credit", "C1b", "R1", "table-7", 20, **mixed).status == w.BET_ALREADY_SETTLED
    assert ledger.call("credit", "C3", "R3", "table-7", 15.5, **mixed).status == w.OK
    assert ledger.balance() == 105_500_000
    assert ledger.rounds()[("live", 1000, "table-7")] == "settled"
    # the same calls from a game-wise provider: the first credit closes the round, the other wins are refused
    for i in (1, 2, 3):
        assert ledger.call("debit", f"D{i}", f"R{i}", "table-7", 10, provider="gw").status == w.OK
    assert ledger.call("credit", "C1", "R1", "table-7", 20, provider="gw").status == w.OK
    assert ledger.call("credit", "C2", "D2", "table-7", 0, provider="gw").status == w.BET_ALREADY_SETTLED


@both
def test_a_mixed_round_with_a_cancel_closes_when_every_debit_is_settled_or_cancelled(ledger):
    mixed = {"provider": "live", "settlement": "mixed"}
    assert ledger.call("debit", "D1", "R1", "g", 10, **mixed).status == w.OK
    assert ledger.call("debit", "D2", "R2", "g", 10, **mixed).status == w.OK
    assert ledger.call("cancel", "D1", "R1", "g", 10, **mixed).status == w.OK
    assert ledger.rounds()[("live", 1000, "g")] == "open"
    assert ledger.call("cancel", "D2", "R2", "g", 10, **mixed).status == w.OK
    assert ledger.rounds()[("live", 1000, "g")] == "cancelled" and ledger.balance() == 100 * U
    assert ledger.call("debit", "D3", "R3", "g", 1, **mixed).status == w.OK  # a new bet opens it again
    assert ledger.rounds()[("live", 1000, "g")] == "open"
    assert ledger.call("credit", "C3", "R3", "g", 2, **mixed).status == w.OK
    assert ledger.rounds()[("live", 1000, "g")] == "settled" and ledger.balance() == 101 * U
    # a credit for a cancelled debit settles nothing
    assert ledger.call("credit", "C1", "R1", "g", 5, **mixed).status == w.BET_ALREADY_SETTLED


@both
def test_promo_payout_is_a_credit_with_no_debit_idempotent_and_exact(ledger):
    promo = ledger.call("promo_payout", "P1", None, None, 12.345678, promo_type="JackpotWin")
    assert (promo.status, promo.balance, promo.retransmission) == (w.OK, 112_345_678, False)
    again = ledger.call("promo_payout", "P1", None, None, 12.345678, promo_type="JackpotWin")
    assert (again.status, again.balance, again.retransmission) == (w.OK, 112_345_678, True)
    changed = ledger.call("promo_payout", "P1", None, None, 13, promo_type="JackpotWin")
    assert changed.status == w.INVALID_PARAMETER and ledger.balance() == 112_345_678
    assert ledger.call("promo_payout", "P0", None, "g9", 0, promo_type="FreeRoundPlayableSpent").status == w.OK
    # its id names one transaction of the provider: no debit or credit may take it; another provider may
    assert ledger.call("debit", "P1", "R1", "g1", 1).status == w.INVALID_PARAMETER
    assert ledger.call("credit", "P1", "R1", "g1", 1).status == w.INVALID_PARAMETER
    assert ledger.call("promo_payout", "P1", None, None, 1, provider="other", promo_type="JackpotWin").status == w.OK
    assert ledger.balance() == 113_345_678 and ledger.rounds() == {}
    row = ledger.store.db.execute("SELECT f.cmd, f.amount, f.comment, f.source, e.data FROM finance f JOIN events e "
                                  "ON e.record_id = f.id WHERE f.ext_id = 'P1' ORDER BY f.id").fetchone()
    assert tuple(row[:4]) == (6, 12_345_678, "promo_payout P1 JackpotWin", "wallet:default")
    assert orjson.loads(row[4])["provider"] == "default"


def _workload(ledger: Ledger, seed: int, n: int = 300) -> None:
    """Seeded random game-wise calls: debits, credits, cancels, late debits, retries, unknown refs."""
    rng = random.Random(seed)
    txids: list[tuple[str, str, str]] = []  # (txid, ref, game) of debits sent
    login_of: dict[str, int] = {}
    for i in range(n):
        kind = rng.choice(("debit", "debit", "credit", "credit", "cancel", "cancel", "retry", "late"))
        game = f"g{rng.randrange(60)}"
        if kind == "debit" or not txids:
            txids.append((f"D{i}", f"R{i}", game))
            login_of[f"D{i}"] = rng.choice((1000, 1001))
            ledger.call("debit", f"D{i}", f"R{i}", game, rng.choice((0.5, 1, 2)), login=login_of[f"D{i}"])
        elif kind == "credit":
            txid, ref, game = rng.choice(txids)
            ledger.call("credit", f"C{i}", rng.choice((txid, ref, ref, "nothing")), game, rng.choice((0, 1, 3)),
                        login=login_of[txid])
        elif kind == "cancel":
            txid, ref, game = rng.choice(txids)
            ledger.call("cancel", txid, ref, game, 1, login=rng.choice((login_of[txid],) * 3 + (1000, 1001)))
        elif kind == "retry":
            txid, ref, game = rng.choice(txids)
            ledger.call("debit", txid, ref, game, 1, login=login_of[txid])
        else:  # a late debit into a round perhaps already settled
            txid, ref, game = rng.choice(txids)
            txids.append((f"L{i}", f"RL{i}", game))
            login_of[f"L{i}"] = login_of[txid]
            ledger.call("debit", f"L{i}", f"RL{i}", game, 1, login=login_of[txid])


@both
@pytest.mark.parametrize("seed", range(3))
def test_each_rounds_state_is_what_the_wallets_rows_say(ledger, seed):
    """The state the wallet keeps move by move equals the state derived from wallet_tx alone (the migration's
    derivation: game-wise)."""
    _workload(ledger, seed)
    db = ledger.store.db
    kept = ledger.rounds()
    db.execute("BEGIN")
    try:
        db.execute("DELETE FROM wallet_rounds")
        db.execute(migrations._ROUNDS_OF_WALLET_TX)
        derived = ledger.rounds()
    finally:
        db.execute("ROLLBACK")
    assert kept == derived and {"open", "settled", "cancelled"} <= set(kept.values()), kept


def test_the_previous_release_migrates_to_providers_and_goes_on_as_two_providers(tmp_path):
    path = str(tmp_path / "v7.db")
    shutil.copyfile(V7, path)
    assert verify_path(path).ok
    store = Store(path)
    try:
        assert store.migrated == [8] and migrations.version_of(store.db) == migrations.LATEST
        db = store.db
        assert db.execute("SELECT name, token_hash, settlement FROM providers").fetchall() == [
            ("default", None, "gamewise")]
        assert db.execute("SELECT DISTINCT provider FROM wallet_tx").fetchall() == [("default",)]
        assert db.execute("SELECT DISTINCT game_type FROM wallet_tx").fetchall() == [("slots",)]
        rounds = {(login, g): state for login, g, state in db.execute(
            "SELECT login, game_id, state FROM wallet_rounds")}
        assert rounds == {(1000, "g-1"): "settled", (1000, "g-2"): "open", (1000, "g-3"): "cancelled",
                          (1001, "g-5"): "open"}
        balances = {login: store.accounts[login][1] for login in (1000, 1001)}
        # the old provider's ids stay its own: g-1 is settled for default, new for another provider
        for provider, status in (("default", w.BET_ALREADY_EXIST), ("acme", w.OK)):
            payload = orjson.dumps(["debit", "1000", "EUR", "g-1", "slots", "D1", "R1", 5 * U]).decode()
            (o,) = store.apply_batch([WalletCall("debit", 1000, NOW + 100, 10**9, sid="sid-alice", currency="EUR",
                                                 txid="D1", ref_id="R1", game_id="g-1", amount=5 * U,
                                                 payload=payload, provider=provider)])
            assert o.data.status == status, provider
        assert store.accounts[1000][1] == balances[1000] - 5 * U
        # the open round g-2 is settled as the provider would
        payload = orjson.dumps(["credit", "1000", "EUR", "g-2", "slots", "C2", "R2", 2 * U]).decode()
        (o,) = store.apply_batch([WalletCall("credit", 1000, NOW + 101, 10**9, currency="EUR", txid="C2",
                                             ref_id="R2", game_id="g-2", amount=2 * U, payload=payload)])
        assert o.data.status == w.OK
        assert db.execute("SELECT state FROM wallet_rounds WHERE game_id = 'g-2'").fetchone()[0] == "settled"
    finally:
        store.close()
    assert verify_path(path).ok


def test_an_upgrade_logs_each_step_it_applied(tmp_path, caplog):
    path = str(tmp_path / "v7.db")
    shutil.copyfile(V7, path)
    with caplog.at_level("INFO", logger="syncledger.ledger"):
        Store(path).close()
        Store(path).close()  # a current ledger: nothing to log
    lines = [r.getMessage() for r in caplog.records if "schema version" in r.getMessage()]
    assert lines == [f"{path}: schema version 7 -> 8: {migrations.STEPS[-1][1]}"]
