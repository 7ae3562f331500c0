"""Game providers in a ledger (issue 23): ``syncledger provider add|list|rotate|remove|set`` on SQLite and
PostgreSQL: a token shown once and stored as its SHA-256, bad input one line and exit 2."""

from __future__ import annotations

import hashlib
import json

import pytest

from syncledger.ledger import engine
from syncledger.server.auth import token_hash
from syncledger.server.cli import main
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  (fixtures)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``syncledger ARGV``: (exit code, stdout, stderr)."""
    code = main(list(argv))
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
