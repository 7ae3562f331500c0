"""Reconciliation (issue 23): a provider's rounds, its day report and a reconcile of its own transaction report
(ledger/report.py, ``syncledger rounds | report | reconcile``), on a ledger built by a seeded random workload of
two providers (game-wise and mixed, sharing ids): debits, credits, cancels, late debits, retries, changed
repeats, unknown refs, refused debits and promo payouts. The report is checked against a computation from the
workload's own journal (what each call was answered), the reconcile against the journal written as the provider's
CSV; on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from decimal import Decimal

import httpx
import orjson
import pytest

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, report, to_text, verify
from syncledger.ledger import wallet as w
from syncledger.ledger.commands import OpenSession, WalletCall
from syncledger.server.cli import main
from tests.conftest import FIXTURES, add_account, assert_ledger_ok, tcp_client
from tests.server.test_cli import refused
from tests.pgcluster import backend, ledger_db, pg_cluster, pg_url  # noqa: F401  (fixtures)

U = 1_000_000
START = 1_700_000_000  # 2023-11-14T22:13:20Z
PROVIDERS = {"alpha": "gamewise", "beta": "mixed"}
CURRENCY = {1000: "EUR", 1001: "USD", 1002: "EUR", 1003: "EUR"}
POOR = 1003  # starts with 3 units: some of its debits are refused (INSUFFICIENT_FUNDS)
both = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@dataclass(frozen=True)
class Sent:
    """One call of the journal: what the provider sent, and what it was answered."""

    provider: str
    action: str
    txid: str
    ref: str | None
    game: str | None
    amount: int
    login: int
    time: int
    status: str
    retransmission: bool

    @property
    def accepted(self) -> bool:
        return self.status == w.OK and not self.retransmission


class Ledger:
    def __init__(self, path: str):
        self.store = Store(path)
        self.path = path
        self.now = START
        self.journal: list[Sent] = []
        for login, currency in CURRENCY.items():
            self.one(AddAccount(f"player {login}", currency, START, login=login))
            self.one(Finance(FinanceRequest("BalanceIn", login, (3 if login == POOR else 10_000) * U), START))
            self.one(OpenSession(login, f"sid-{login}", START, 10**9))
        for name, settlement in PROVIDERS.items():
            self.store.db.execute("INSERT INTO providers (name, settlement, promo, created) VALUES (?, ?, 1, ?)",
                                  (name, settlement, START))

    def one(self, command):
        (outcome,) = self.store.apply_batch([command])
        assert outcome.error is None, outcome.error
        return outcome

    def call(self, provider: str, action: str, txid: str, ref: str | None, game: str | None, amount: int,
             login: int) -> Sent:
        payload = orjson.dumps([action, str(login), CURRENCY[login], game, "slots", txid, ref, amount]).decode()
        result = self.one(WalletCall(action, login, self.now, 10**9, sid=f"sid-{login}", currency=CURRENCY[login],
                                     txid=txid, ref_id=ref, game_id=game, amount=amount, payload=payload,
                                     provider=provider, settlement=PROVIDERS[provider], game_type="slots",
                                     game_session="s-1",
                                     promo_type="JackpotWin" if action == "promo_payout" else None)).data
        sent = Sent(provider, action, txid, ref, game, amount, login, self.now, result.status, result.retransmission)
        self.journal.append(sent)
        return sent

    def close(self) -> None:
        assert verify(self.store.db).ok
        self.store.close()


def workload(led: Ledger, seed: int, n: int = 500) -> None:
    """Seeded random calls of both providers over a few days; each provider counts its ids from 1, so both send
    the same transaction ids and game ids."""
    rng = random.Random(seed)
    count = {p: 0 for p in PROVIDERS}
    debits: dict[str, list[Sent]] = {p: [] for p in PROVIDERS}
    sent: dict[str, list[Sent]] = {p: [] for p in PROVIDERS}
    for _ in range(n):
        p = rng.choice(list(PROVIDERS))
        led.now += rng.choice((1, 1, 3, 60, 600, 3600, 4 * 3600))
        count[p] += 1
        i = count[p]
        kind = rng.choices(("debit", "credit", "cancel", "retry", "late", "promo", "unknown", "changed"),
                           (30, 25, 10, 8, 8, 8, 4, 4))[0]
        if kind == "debit" or (not debits[p] and kind in ("credit", "cancel", "late")):
            login = rng.choice(list(CURRENCY))
            one = led.call(p, "debit", f"D{i}", f"R{i}", f"g{rng.randrange(30)}", rng.randrange(1, 3 * U), login)
            if one.status == w.OK:
                debits[p].append(one)
        elif kind == "credit":
            d = rng.choice(debits[p])
            ref = rng.choice((d.txid, d.ref, d.ref))
            one = led.call(p, "credit", f"C{i}", ref, d.game, rng.choice((0, rng.randrange(1, 6 * U))), d.login)
        elif kind == "cancel":
            d = rng.choice(debits[p])  # (the cancel's own amount is not used: any will do)
            one = led.call(p, "cancel", d.txid, d.ref, d.game, rng.randrange(1, U), d.login)
        elif kind == "late":  # a debit into a round perhaps settled already
            d = rng.choice(debits[p])
            one = led.call(p, "debit", f"L{i}", f"RL{i}", d.game, rng.randrange(1, U), d.login)
            if one.status == w.OK:
                debits[p].append(one)
        elif kind == "promo":
            login = rng.choice([login for login in CURRENCY if login != POOR])
            one = led.call(p, "promo_payout", f"P{i}", None, rng.choice((None, None, "g7")),
                           rng.randrange(0, 20 * U), login)
        elif kind in ("retry", "changed") and sent[p]:  # the same request again, or changed
            s = rng.choice(sent[p])
            amount = s.amount + (1 if kind == "changed" else 0)
            one = led.call(p, s.action, s.txid, s.ref, s.game, amount, s.login)
        else:  # a credit naming no debit (a tombstone)
            one = led.call(p, "credit", f"C{i}", f"nothing-{i}", "g1", U, rng.choice(list(CURRENCY)))
        sent[p].append(one)
    for p in PROVIDERS:  # (and at least one debit refused for want of money, one promo payout repeated)
        led.now += 1
        led.call(p, "debit", f"D{count[p] + 1}", "R-big", "g1", 10**6 * U, POOR)
        s = next(s for s in sent[p] if s.action == "promo_payout")
        led.call(p, s.action, s.txid, s.ref, s.game, s.amount, s.login)


@pytest.fixture
def ledger(ledger_db):
    led = Ledger(ledger_db)
    yield led
    led.close()


def _day(seconds: int) -> date:
    return datetime.fromtimestamp(seconds, timezone.utc).date()


def accepted_debits(journal: list[Sent]) -> dict[tuple[str, str], Sent]:
    return {(s.provider, s.txid): s for s in journal if s.accepted and s.action == "debit"}


# ---- the day report


def expected_days(journal: list[Sent]) -> dict[tuple[str, date, str], dict[str, int]]:
    """(provider, day, currency) -> the report's counts and sums, from the journal alone."""
    debits = accepted_debits(journal)
    out: dict[tuple[str, date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    opened: dict[tuple[str, int, str], int] = {}
    for s in journal:
        if not s.accepted:
            continue
        totals = out[(s.provider, _day(s.time), CURRENCY[s.login])]
        name = {"debit": "bets", "credit": "wins", "cancel": "cancels", "promo_payout": "promos"}[s.action]
        totals[name] += 1
        totals[name + "_amount"] += debits[(s.provider, s.txid)].amount if s.action == "cancel" else s.amount
        if s.action == "debit":
            opened.setdefault((s.provider, s.login, s.game), s.time)
    for (provider, login, _), at in opened.items():
        out[(provider, _day(at), CURRENCY[login])]["rounds_opened"] += 1
    return out


@both
@pytest.mark.parametrize("seed", range(2))
def test_the_day_report_is_what_the_journal_says(ledger, seed):
    workload(ledger, seed)
    journal, db = ledger.journal, ledger.store.db
    assert {s.status for s in journal} >= {w.OK, w.BET_ALREADY_EXIST, w.BET_ALREADY_SETTLED, w.INSUFFICIENT_FUNDS,
                                           w.BET_DOES_NOT_EXIST, w.INVALID_PARAMETER}
    assert {s.action for s in journal if s.accepted} == {"debit", "credit", "cancel", "promo_payout"}
    assert any(s.retransmission for s in journal if s.action == "promo_payout")
    expected = expected_days(journal)
    days = sorted({_day(s.time) for s in journal})
    assert len(days) >= 3
    rounds = db.execute("SELECT provider, login, state, updated FROM wallet_rounds").fetchall()  # (read apart)
    seen = set()
    for provider in PROVIDERS:
        for day in [days[0] - (days[1] - days[0]), *days]:  # (and a day before any: all zero)
            got = report.day_report(db, provider, day)
            start, end = report.day_span(day)
            assert (got.start, got.end, end - start) == (start, end, 86_400)
            for totals in got.currencies:
                key = (provider, day, totals.currency)
                seen.add(key)
                want = expected.get(key, {})
                for name in ("bets", "bets_amount", "wins", "wins_amount", "cancels", "cancels_amount", "promos",
                             "promos_amount", "rounds_opened"):
                    assert getattr(totals, name) == want.get(name, 0), (key, name)
                assert totals.ggr == want.get("bets_amount", 0) - want.get("cancels_amount", 0) - \
                    want.get("wins_amount", 0)
                closed = [(state, CURRENCY[login]) for p, login, state, updated in rounds
                          if p == provider and start <= updated < end]
                assert totals.rounds_settled == closed.count(("settled", totals.currency)), key
                assert totals.rounds_cancelled == closed.count(("cancelled", totals.currency)), key
                assert totals.rounds_open == sum(1 for p, login, state, _ in rounds if p == provider and
                                                 state == "open" and CURRENCY[login] == totals.currency)
            data = orjson.loads(orjson.dumps(got.json()))
            assert data["note"] == report.GGR_NOTE and data["day"] == day.isoformat()
    assert seen >= set(expected)  # every (provider, day, currency) the journal has is in a report
    assert sum(t.rounds_settled + t.rounds_cancelled for p in PROVIDERS for d in days
               for t in report.day_report(db, p, d).currencies) > 0


def test_the_report_command_writes_csv_and_json_with_exact_money(tmp_path, capsys):
    led = Ledger(str(tmp_path / "l.db"))
    led.call("alpha", "debit", "D1", "R1", "g1", 1_500_001, 1000)
    led.call("alpha", "debit", "D2", "R2", "g2", 2 * U, 1000)
    led.call("alpha", "cancel", "D2", "R2", "g2", 7, 1000)  # counted by its debit's 2.0, not its own 0.000007
    led.call("alpha", "credit", "C1", "R1", "g1", 250_000, 1000)
    led.call("alpha", "promo_payout", "P1", None, None, 10 * U, 1001)
    led.call("beta", "debit", "D1", "R1", "g1", 3 * U, 1001)  # another provider's: not in alpha's report
    led.close()
    day = _day(START)
    assert main(["report", "--db", led.path, "--provider", "alpha", "--day", day.isoformat()]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["currency"], r["bets"], r["bets_amount"], r["cancels_amount"], r["wins_amount"], r["ggr"],
             r["promo_payouts_amount"], r["rounds_opened"], r["rounds_settled"], r["rounds_cancelled"],
             r["rounds_open_now"]) for r in rows] == [
        ("EUR", "2", "3.500001", "2.0", "0.25", "1.250001", "0.0", "2", "1", "1", "0"),
        ("USD", "0", "0.0", "0.0", "0.0", "0.0", "10.0", "0", "0", "0", "0")]
    assert list(rows[0])[:2] == ["provider", "day"] and rows[0]["provider"] == "alpha"
    assert main(["report", "--db", led.path, "--provider", "alpha", "--day", day.isoformat(), "--format", "json"]) == 0
    text = capsys.readouterr().out
    data = json.loads(text, parse_float=Decimal)
    assert data["currencies"][0]["ggr"] == Decimal("1.250001") and '"amount": 3.500001' in text
    assert "promo payouts are shown apart" in data["note"]
    assert main(["report", "--db", led.path, "--provider", "alpha", "--day", "2020-01-01"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # the header alone


# ---- rounds


@both
def test_rounds_pages_and_filters_are_those_of_the_whole_table(ledger):
    workload(ledger, 7, 300)
    db = ledger.store.db
    table = {(p, login, g): (opened, state) for p, login, g, opened, state in db.execute(
        "SELECT provider, login, game_id, opened, state FROM wallet_rounds")}
    assert {state for _, state in table.values()} == {"open", "settled", "cancelled"}
    cut = sorted(opened for opened, _ in table.values())[len(table) // 2]
    journal = ledger.journal
    for provider in PROVIDERS:
        for filters in ({}, {"open_only": True}, {"opened_before": cut}, {"open_only": True, "opened_before": cut},
                        {"game_id": "g3"}, {"login": 1001}, {"login": 1001, "game_id": "g3"},
                        {"game_id": "g3", "open_only": True}):
            want = sorted((opened, login, g) for (p, login, g), (opened, state) in table.items() if p == provider
                          and (not filters.get("open_only") or state == "open")
                          and opened <= filters.get("opened_before", 2**62)
                          and filters.get("login", login) == login and filters.get("game_id", g) == g)
            for limit, scan in ((1000, report.SCAN), (3, 5), (1, 1)):
                got, after, pages = [], None, 0
                while True:
                    page, after = report.rounds(db, provider, after=after, limit=limit, scan=scan, **filters)
                    assert len(page) <= limit
                    got += page
                    pages += 1
                    if after is None:
                        break
                assert [r.key for r in got] == want, (provider, filters, limit)
        for r in report.rounds(db, provider, limit=1000)[0]:  # each round's moves are its accepted rows
            mine = [s for s in journal if s.accepted and s.provider == provider and s.login == r.login and
                    s.game == r.game_id and s.action != "promo_payout"]
            assert [(m.type, m.txid, m.time) for m in r.moves] == [(s.action, s.txid, s.time) for s in mine]
            debits = accepted_debits(journal)
            assert r.total("cancel") == sum(debits[(provider, s.txid)].amount for s in mine if s.action == "cancel")
            assert (r.state, r.opened) == (table[(provider, r.login, r.game_id)][1],
                                           table[(provider, r.login, r.game_id)][0])
    assert report.parse_cursor(report.cursor_text((5, 1000, "a:b"))) == (5, 1000, "a:b")


def test_rounds_open_older_than_on_the_command_line(tmp_path, capsys):
    led = Ledger(str(tmp_path / "l.db"))
    led.call("alpha", "debit", "D1", "R1", "g1", U, 1000)  # stays open
    led.call("alpha", "debit", "D2", "R2", "g2", U, 1000)
    led.call("alpha", "credit", "C2", "R2", "g2", 3 * U, 1000)  # settled
    led.call("alpha", "debit", "D3", "R3", "g3", 2 * U, 1001)
    led.call("alpha", "cancel", "D3", "R3", "g3", 1, 1001)  # cancelled
    led.call("beta", "debit", "D1", "R1", "g1", U, 1000)  # beta's own g1
    led.close()
    assert main(["rounds", "--db", led.path, "--provider", "alpha", "--open", "--older-than", "1h"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("round g1 login 1000: open (open for ") and "D2" not in out
    assert "  debit  D1 ref R1 1.0 at 2023-11-14T22:13:20Z order " in out and err == "1 open rounds of provider alpha\n"
    # the rounds were opened in 2023: none of them is older than 100,000 days
    assert main(["rounds", "--db", led.path, "--provider", "alpha", "--open", "--older-than", "100000d"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["rounds", "--db", led.path, "--provider", "alpha", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out, parse_float=Decimal)
    assert [(r["game_id"], r["state"], r["bets"], r["wins"], r["cancelled"]) for r in data] == [
        ("g1", "open", 1, 0, 0), ("g2", "settled", 1, 3, 0), ("g3", "cancelled", 2, 0, 2)]
    assert [m["type"] for m in data[2]["moves"]] == ["debit", "cancel"]
    assert main(["rounds", "--db", led.path, "--provider", "alpha", "--game-id", "g3", "--login", "1001"]) == 0
    assert capsys.readouterr().out.startswith("round g3 login 1001: cancelled, opened")
    for argv, said in ((["--older-than", "1 hour"], "a duration"), (["--provider", "nobody"], "no provider 'nobody'"),
                       (["--login", "0"], "a login")):
        args = ["rounds", "--db", led.path, "--provider", "alpha", *argv]
        assert refused(capsys, *args).count(said) == 1, argv


# ---- reconcile


def provider_rows(journal: list[Sent], provider: str) -> list[report.Row]:
    """The provider's own report: every call it was answered OK for (a repeat once), a cancel by its bet's amount."""
    debits = accepted_debits(journal)
    return [report.Row(s.action, s.txid, debits[(provider, s.txid)].amount if s.action == "cancel" else s.amount,
                       s.game, s.time) for s in journal if s.accepted and s.provider == provider]


NAMES = {"debit": "BET", "credit": "WIN", "cancel": "REFUND", "promo_payout": "PROMO"}


def write_csv(path, rows: list[report.Row], style: str) -> None:
    """As the provider's back office writes it: ``ours`` (the default columns, Unix times), or ``theirs`` (its own
    column and type names, ISO times, amounts with trailing zeros, a BOM and a column of its own)."""
    with open(path, "w", newline="", encoding="utf-8-sig" if style == "theirs" else "utf-8") as f:
        out = csv.writer(f)
        if style == "ours":
            out.writerow(["transaction_id", "type", "amount", "round", "time"])
            for r in rows:
                out.writerow([r.txid, r.type, to_text(r.amount), r.round or "", int(r.time)])
        else:
            out.writerow(["Time", "TxID", "Kind", "Currency", "Amount", "RoundId"])
            out.writerow([report.utc(START - 5), "B-0", "BALANCE", "EUR", "0", ""])  # a row of its own
            for r in rows:
                out.writerow([report.utc(r.time), r.txid, NAMES[r.type], "EUR", f"{Decimal(r.amount) / U:.6f}",
                              r.round or ""])


THEIRS = ["--columns", "txid=TxID,type=Kind,amount=Amount,round=RoundId,time=Time",
          "--types", "BET=debit,WIN=credit,REFUND=cancel,PROMO=promo_payout,BALANCE=skip"]


def _reconcile(capsys, path: str, provider: str, file, *argv: str) -> tuple[int, list[str], str]:
    code = main(["reconcile", "--db", path, "--provider", provider, "--file", str(file), *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@both
def test_a_reconcile_round_trip_finds_every_planted_difference(ledger, tmp_path, capsys):
    workload(ledger, 3)
    journal, path = ledger.journal, ledger.path
    for provider, style in (("alpha", "theirs"), ("beta", "ours")):
        rows = provider_rows(journal, provider)
        argv = THEIRS if style == "theirs" else []
        clean = tmp_path / f"{provider}.csv"
        write_csv(clean, rows, style)
        code, out, err = _reconcile(capsys, path, provider, clean, *argv)
        assert (code, len(out), err) == (0, 1, ""), out
        assert out[0].endswith(f"{len(rows)} row(s) in the file, {len(rows)} in the ledger, {len(rows)} matched: "
                               "everything matches")

        # plant one of each: a row dropped, an amount changed, a type changed, a row the ledger lacks, a round
        rng = random.Random(provider)
        middle = rows[1:-1]  # (the first and last rows bound the file's span)
        dropped, changed, retyped, moved = rng.sample([r for r in middle if r.type != "cancel"], 4)
        refused = next(s for s in journal if s.provider == provider and s.status == w.INSUFFICIENT_FUNDS)
        planted = [r for r in rows if r is not dropped]
        planted[planted.index(changed)] = replace(changed, amount=changed.amount + 1)
        other = "credit" if retyped.type != "credit" else "debit"
        planted[planted.index(retyped)] = replace(retyped, type=other)
        planted[planted.index(moved)] = replace(moved, round="g-elsewhere")
        ghost = report.Row("credit", "C-ghost", 5 * U, "g1", middle[0].time)
        planted += [ghost, report.Row("debit", refused.txid, refused.amount, refused.game, refused.time)]
        planted.sort(key=lambda r: r.time)
        bad = tmp_path / f"{provider}-planted.csv"
        write_csv(bad, planted, style)
        code, out, err = _reconcile(capsys, path, provider, bad, *argv)
        assert code == 1 and err == "", out
        lines = "\n".join(out)
        assert out[-1].endswith(f"{len(rows) - 4} matched: 6 difference(s)")
        assert f"missing in the file: {dropped.type} {dropped.txid} amount {to_text(dropped.amount)}" in lines
        assert (f"amount differs: {changed.type} {changed.txid} (line ") in lines and \
            f"the file says {to_text(changed.amount + 1)}, the ledger {to_text(changed.amount)}" in lines
        assert f"type differs: {retyped.type} {retyped.txid} (line " in lines and \
            f"the file says {other}, the ledger {retyped.type}" in lines
        assert f"round differs: {moved.type} {moved.txid} (line " in lines and \
            f"the file says g-elsewhere, the ledger {moved.round or '(none)'}" in lines
        assert "missing in the ledger: line " in lines and "credit C-ghost amount 5.0 round g1" in lines
        assert f"debit {refused.txid} amount {to_text(refused.amount)}" in lines and \
            "(the ledger refused it: INSUFFICIENT_FUNDS)" in lines
        assert len(out) == 7  # six differences and the summary

        # one day of it, with --day: the day's rows of the ledger against the file's
        day = _day(rows[len(rows) // 2].time)
        start, end = report.day_span(day)
        one_day = tmp_path / f"{provider}-day.csv"
        write_csv(one_day, [r for r in rows if start <= r.time < end], style)
        code, out, err = _reconcile(capsys, path, provider, one_day, "--day", day.isoformat(), *argv)
        assert code == 0 and out[0].startswith(f"provider {provider}, {report.utc(start)} to {report.utc(end)}"), out
        write_csv(one_day, [r for r in rows if start <= r.time < end][1:], style)
        code, out, err = _reconcile(capsys, path, provider, one_day, "--day", day.isoformat(), *argv,
                                    "--format", "json")
        data = json.loads("\n".join(out))
        assert code == 1 and [d["what"] for d in data["differences"]] == ["missing in the file"]

    # the other provider's ids are its own: alpha's file against beta's rows is nothing but differences
    write_csv(tmp_path / "mixed-up.csv", provider_rows(journal, "alpha"), "ours")
    code, out, _ = _reconcile(capsys, path, "beta", tmp_path / "mixed-up.csv")
    assert code == 1 and len(out) > 10


def test_reconcile_compares_a_cancel_by_its_bets_amount_and_a_late_row_outside_the_span(tmp_path, capsys):
    led = Ledger(str(tmp_path / "l.db"))
    led.call("alpha", "debit", "D1", "R1", "g1", 2 * U, 1000)
    led.now += 10
    led.call("alpha", "cancel", "D1", "R1", "g1", 1, 1000)  # the request's amount (0.000001) is not the money
    led.now += 10
    led.call("alpha", "debit", "D2", "R2", "g2", U, 1000)
    led.close()
    file = tmp_path / "f.csv"
    file.write_text("transaction_id,type,amount,round,time\n"
                    f"D1,debit,2,g1,{START}\nD1,cancel,2.000000,g1,{START + 10}\n"
                    f"D2,debit,1,g2,{START + 19}.5\n")  # the provider stamped it half a second earlier
    code, out, _ = _reconcile(capsys, led.path, "alpha", file)
    assert code == 0 and out == ["provider alpha, 2023-11-14T22:13:20Z to 2023-11-14T22:13:40Z: 3 row(s) in the file, "
                                 "2 in the ledger (and 1 outside it that the file names), 3 matched: everything matches"]
    file.write_text(f"transaction_id,type,amount,time\nD1,cancel,1,{START + 10}\nD1,debit,2,{START}\n"
                    f"D1,debit,2,{START}\n")  # no round column: rounds are not compared
    code, out, _ = _reconcile(capsys, led.path, "alpha", file)
    assert code == 1 and out[0] == "repeated in the file: line 4: debit D1 amount 2.0 at 2023-11-14T22:13:20Z (the " \
                                   "debit of line 3 has this id)"  # (in the order of their times)
    assert out[1].startswith("amount differs: cancel D1 (line 2): the file says 1.0, the ledger 2.0")
    assert out[2].endswith("(the file has no rounds: not compared)") and len(out) == 3


@pytest.mark.parametrize("content, said", [
    ("transaction_id,type,amount,round,time\nD1,debit,1.0000001,g1,1700000000\n", "line 2: amount has more than 6 "
                                                                                  "decimals (got '1.0000001')"),
    ("transaction_id,type,amount,round,time\nD1,debit,1,g1,1700000000\nD2,debit,NaN,g1,1700000000\n",
     "line 3: amount must be finite (got 'NaN')"),
    ("transaction_id,type,amount,round,time\nD1,debit,1.5e,g1,1700000000\n", "line 2: amount '1.5e' is not a decimal"),
    ("transaction_id,type,amount,round,time\nD1,debit,-1,g1,1700000000\n", "line 2: amount '-1' is negative"),
    ("transaction_id,type,amount,round,time\nD1,debit,1,g1,1700000000\nD2,BET,1,g1,1700000000\n",
     "line 3: type 'BET' is not one of debit, credit, cancel, promo_payout (map it with --types BET=debit"),
    ("transaction_id,type,amount,round,time\nD1,debit,1,g1,yesterday\n", "line 2: time 'yesterday' is neither ISO"),
    ("transaction_id,type,amount,round,time\nD1,debit,1,g1,1700000000000\n", "milliseconds?"),
    ("transaction_id,type,amount,round,time\n,debit,1,g1,1700000000\n", "line 2: the transaction id is empty"),
    ("transaction_id,type,amount,round,time\nD1,debit\n", "line 2: 2 field(s), the header has more"),
    ('transaction_id,type,amount,round,time\nD1,debit,"1,g1,1700000000\n', "line 2: unexpected end of data"),
    ("id,type,amount\nD1,debit,1\n", "has no column 'transaction_id' for the txid"),
    ("", "is empty: its first line is the header"),
    ("transaction_id,type,amount\nD1,debit,1\n", "has no time column: give --day"),
    ("transaction_id,type,amount,round,time\n", "has no rows: give --day"),
])
def test_a_bad_line_of_the_providers_file_is_one_line_and_exit_2(tmp_path, capsys, content, said):
    led = Ledger(str(tmp_path / "l.db"))
    led.close()
    file = tmp_path / "f.csv"
    file.write_text(content)
    err = refused(capsys, "reconcile", "--db", led.path, "--provider", "alpha", "--file", str(file))
    assert said in err and err.startswith("syncledger: "), err


@pytest.mark.parametrize("argv, said", [
    (["--columns", "txid"], "columns as NAME=VALUE"), (["--columns", "account=A"], "account is not a field"),
    (["--types", "BET=bet"], "'bet' is not a type"), (["--day", "2024-13-01"], "month must be in 1..12"),
    (["--day", "24-01-01"], "a day as YYYY-MM-DD"), (["--file", "/no/such/file"], "cannot read /no/such/file"),
    (["--provider", "gamma"], "no provider 'gamma'"), (["--delimiter", ";;"], "one character"),
])
def test_bad_reconcile_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, said):
    led = Ledger(str(tmp_path / "l.db"))
    led.close()
    file = tmp_path / "f.csv"
    file.write_text(f"transaction_id,type,amount,round,time\nD1,debit,1,g1,{START}\n")
    base = {"--provider": "alpha", "--file": str(file)}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    err = refused(capsys, "reconcile", "--db", led.path, *[x for pair in base.items() for x in pair])
    assert said in err, err


def test_the_reports_refuse_an_older_schema_and_read_beside_a_writer(tmp_path, capsys):
    led = Ledger(str(tmp_path / "l.db"))
    led.call("alpha", "debit", "D1", "R1", "g1", U, 1000)
    try:  # the store still holds the ledger, as a server would
        assert main(["rounds", "--db", led.path, "--provider", "alpha", "--open"]) == 0
        assert capsys.readouterr().out.startswith("round g1 login 1000: open")
    finally:
        led.close()
    old = tmp_path / "v1.db"  # a ledger of an older release: read-only commands never migrate it
    shutil.copy(FIXTURES / "ledger-v1.sqlite", old)
    for argv in (["rounds"], ["report", "--day", "2024-01-01"]):
        err = refused(capsys, *argv, "--db", str(old), "--provider", "default")
        assert "schema version 1" in err and "syncledger serve" in err


# ---- beside a running server


@both
async def test_the_three_commands_read_the_ledger_a_running_server_holds(start_server, backend, ledger_db, capsys,
                                                                         tmp_path):
    """Two providers added with ``syncledger provider add`` call the wallet over HTTP with the same ids; rounds,
    report and reconcile read the ledger read-only while the server serves it."""
    db = ledger_db
    tokens = {}
    for name, settlement in (("evo", "mixed"), ("pragma", "gamewise")):
        assert main(["provider", "add", "--db", db, "--name", name, "--settlement", settlement, "--promo"]) == 0
        tokens[name] = capsys.readouterr().out.strip()
    srv = await start_server(db=db, backend=backend)
    began = _day(srv.now())
    async with tcp_client(srv) as c:
        login = await add_account(c)
        assert (await c.call("BalanceIn", {"login": login, "amount": 100})).ok
        sid = (await c.call("OpenGameSession", {"login": login})).data["sid"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.ports.wallet}/v1/", timeout=30) as h:
        async def call(provider: str, action: str, txid: str, ref: str, game: str, amount: str) -> None:
            body = {"sid": sid, "userId": str(login), "currency": "EUR", "game": {"id": game, "type": "slots"},
                    "transaction": {"id": txid, "refId": ref, "amount": amount}, "uuid": f"u-{txid}"}
            r = await h.post(action, params={"authToken": tokens[provider]}, json=body)
            assert r.json()["status"] == "OK", r.text
        for provider in ("evo", "pragma"):  # the same ids, each provider's own
            await call(provider, "debit", "D1", "R1", "7kfw", "2.5")
            await call(provider, "debit", "D2", "R2", "7kfw", "1")
        await call("evo", "credit", "C1", "R1", "7kfw", "4")  # mixed: settles D1 only, the round stays open
        await call("pragma", "credit", "C1", "R1", "7kfw", "0")  # game-wise: the round is settled
        r = await h.post("promo_payout", params={"authToken": tokens["evo"]}, json={
            "userId": str(login), "currency": "EUR", "uuid": "u-p1",
            "promoTransaction": {"type": "JackpotWin", "id": "P1", "amount": "10.000001"}})
        assert r.json()["status"] == "OK", r.text

    assert main(["rounds", "--db", db, "--provider", "evo", "--open"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"round 7kfw login {login}: open") and "credit C1 ref R1 4.0" in out
    assert main(["rounds", "--db", db, "--provider", "pragma", "--open"]) == 0
    assert capsys.readouterr().out == ""
    if _day(srv.now()) != began:
        pytest.skip("the calls went across midnight UTC: the day's report has only part of them")
    today = began.isoformat()
    assert main(["report", "--db", db, "--provider", "evo", "--day", today, "--format", "json"]) == 0
    (eur,) = json.loads(capsys.readouterr().out, parse_float=Decimal)["currencies"]
    assert (eur["bets"]["amount"], eur["wins"]["amount"], eur["ggr"], eur["promo_payouts"]["amount"],
            eur["rounds"]) == (Decimal("3.5"), 4, Decimal("-0.5"), Decimal("10.000001"),
                               {"opened": 1, "settled": 0, "cancelled": 0, "open_now": 1})
    file = tmp_path / "evo.csv"
    now = srv.now()
    file.write_text("transaction_id,type,amount,round,time\n"
                    f"D1,debit,2.5,7kfw,{now}\nD2,debit,1,7kfw,{now}\nC1,credit,4,7kfw,{now}\nP1,promo_payout,10.000001,,{now}\n")
    code, out, _ = _reconcile(capsys, db, "evo", file, "--day", today)
    assert code == 0 and out[0].endswith("4 row(s) in the file, 4 in the ledger, 4 matched: everything matches"), out
    code, out, _ = _reconcile(capsys, db, "pragma", file, "--day", today)  # pragma paid no win and no promo
    assert code == 1 and len(out) == 3, out
    assert out[0].startswith("amount differs: credit C1 (line 4): the file says 4.0, the ledger 0.0 (at ")
    assert out[1].startswith("missing in the ledger: line 5: promo_payout P1 amount 10.000001 at ")
    await assert_ledger_ok(srv)
