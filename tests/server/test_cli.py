"""The ``syncledger`` command's input (issue 21): bad input is one line on stderr and exit 2, never a traceback,
and changes nothing; every command reads a ledger of an older schema or says to run ``serve`` once; an older
release's ledger is made private on open, and its moved-out secret leaves no copy in the file."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store
from syncledger.server import auth
from syncledger.server.cli import main, syncledger
from tests.conftest import FIXTURES

FIXTURE = FIXTURES / "ledger-v1.sqlite"
FIXTURE_SECRET = b"fixture-secret-not-for-production"
HUGE = str(2**70)


def refused(capsys, *argv: str) -> str:
    """Run ``syncledger ARGV``: it must exit 2 with one line on stderr and nothing on stdout; returns the line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert (code, out, err.count("\n")) == (2, "", 1), (code, out, err)
    return err


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> str:
    """A ledger with manager 1 and account 1000 (shared: the tests that use it change nothing)."""
    path = str(tmp_path_factory.mktemp("cli") / "l.db")
    store = Store(path)
    store.apply_batch([AddAccount("a", "EUR", 1)])
    store.db.execute("INSERT INTO managers VALUES (1, 'no password', 3, 0, 1, 0)")  # (no slow hash: no login here)
    store.close()
    return path


def _managers(path: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT login, key_version, removed FROM managers ORDER BY login").fetchall()
    finally:
        db.close()


# ---- logins, --ttl, --since: within the schema's range


@pytest.mark.parametrize("login", [HUGE, str(2**63), "0", "-1", "x"])
@pytest.mark.parametrize("command", [["token"], ["manager", "add", "--password", "pw-long-enough-1"],
                                     ["manager", "remove"], ["session", "open"]])
def test_a_login_out_of_range_is_one_line_and_changes_nothing(ledger, capsys, command, login):
    before = _managers(ledger)
    err = refused(capsys, *command, "--db", ledger, "--login", login)
    assert "--login" in err and f"from 1 to {2**63 - 1}" in err
    assert _managers(ledger) == before


@pytest.mark.parametrize("ttl", ["-100", "0", str(10**12), HUGE, "1.5"])
def test_a_token_ttl_out_of_range_is_one_line(ledger, capsys, ttl):
    err = refused(capsys, "token", "--db", ledger, "--login", "1", "--ttl", ttl)
    assert "--ttl" in err and "from 1 to 31622400" in err


@pytest.mark.parametrize("ttl", ["1", "31622400"])
def test_a_token_ttl_in_range_is_taken(ledger, capsys, ttl):
    assert main(["token", "--db", ledger, "--login", "1", "--ttl", ttl]) == 0
    assert capsys.readouterr().out.count(".") == 2  # a JWT


@pytest.mark.parametrize("since", [HUGE, str(2**63), "-1"])
def test_an_export_since_out_of_range_is_one_line(ledger, capsys, since):
    assert "--since" in refused(capsys, "export", "events", "--db", ledger, "--since", since)


@pytest.mark.parametrize("option, value", [("--tcp-port", "70000"), ("--ws-port", HUGE), ("--wallet-port", "-1"),
                                           ("--admin-port", "-2"), ("--admin-port", "65536")])
def test_a_port_out_of_range_is_one_line(capsys, option, value):
    """(``serve --tcp-port 70000`` listened on port 4464, and said so; 2**70 was a traceback)"""
    assert option in refused(capsys, "config", "show", option, value)


# ---- the config file: every value of the wrong TOML type


@pytest.mark.parametrize("line, wants", [
    ("host = 127", "a string"), ("db = 5", "a string"), ("tls-cert = [1]", "a string"),
    ("log-format = 1", "a string"), ("default-currency = 840", "a string"),
    ("tcp-port = \"7400\"", "an integer"), ("admin-port = 1.5", "an integer"), ("ws-port = true", "an integer"),
    ("wallet-port = 70000", "a port"),
    ("idle-timeout = true", "a number"), ("idle-timeout = \"60\"", "a number"),
    ("wallet-test-endpoints = \"yes\"", "true or false"), ("cluster = 1", "true or false"),
])
def test_a_config_value_of_the_wrong_type_is_one_line_naming_it(tmp_path, capsys, line, wants):
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    err = refused(capsys, "config", "show", "--config", str(config))
    assert err.startswith(f"syncledger: {config}: {line.split(' =')[0]} ") and wants in err


def test_serve_with_a_config_value_of_the_wrong_type_is_one_line_and_touches_nothing(tmp_path, capsys):
    """(serve checks its config file with config show's code: this case was a 51-line traceback)"""
    config = tmp_path / "c.toml"
    config.write_text("host = 127\n")
    err = refused(capsys, "serve", "--config", str(config), "--db", str(tmp_path / "never.db"), "--tcp-port", "0",
                  "--ws-port", "0", "--wallet-port", "0", "--admin-port", "-1", "--writer", "thread")
    assert err == f"syncledger: {config}: host = 127: wants a string, not an integer\n"
    assert os.listdir(tmp_path) == ["c.toml"]


def test_config_show_masks_a_url_password(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('db = "postgresql://ledger:s3cret-pw@db.internal/ledger"\n')
    for argv in (["--config", str(config)], ["--db", "postgresql://ledger:s3cret-pw@db.internal/ledger"]):
        assert main(["config", "show", *argv]) == 0
        out = capsys.readouterr().out
        assert 'db = "postgresql://ledger:***@db.internal/ledger"' in out and "s3cret-pw" not in out


# ---- a ledger of an older schema (tests/fixtures/ledger-v1.sqlite)


@pytest.fixture
def v1(tmp_path, monkeypatch) -> str:
    monkeypatch.delenv("SYNCLEDGER_SECRET", raising=False)
    path = str(tmp_path / "v1.db")
    shutil.copy(FIXTURE, path)  # as an older release left it: mode 0644
    return path


@pytest.mark.parametrize("what", ["accounts", "finance", "events", "wallet"])
def test_export_of_an_older_schema_says_to_run_serve_once(v1, capsys, what):
    err = refused(capsys, "export", what, "--db", v1)
    assert "schema version 1" in err and "syncledger serve" in err


@pytest.mark.parametrize("argv", [["head"], ["verify"], ["backup", "--to", "BACKUP"], ["token", "--login", "1"],
                                  ["session", "open", "--login", "1000"], ["manager", "remove", "--login", "1"],
                                  ["manager", "add", "--login", "2", "--password", "pw-long-enough-1"]])
def test_every_other_command_reads_an_older_schema(v1, capsys, argv):
    argv = [v1 + ".backup" if a == "BACKUP" else a for a in argv]
    assert main([*argv, "--db", v1]) == 0
    assert capsys.readouterr().err == ""


# ---- a closed pipe, quietly


def _pipe_stdout(monkeypatch):
    """Standard output as a pipe whose reader has gone (``| head -1`` after its line)."""
    read, write = os.pipe()
    os.close(read)
    monkeypatch.setattr(sys, "stdout", os.fdopen(write, "w"))


@pytest.fixture
def long_ledger(tmp_path) -> str:
    """A ledger whose finance export is larger than a pipe's buffer."""
    path = str(tmp_path / "long.db")
    store = Store(path)
    login = store.apply_batch([AddAccount("a", "EUR", 1)])[0].data["login"]
    store.apply_batch([Finance(FinanceRequest("BalanceIn", login, 1_000_000), 1) for _ in range(400)])
    store.close()
    return path


def test_an_export_into_a_closed_pipe_ends_quietly_141(long_ledger, monkeypatch, capsys):
    _pipe_stdout(monkeypatch)
    assert main(["export", "finance", "--db", long_ledger]) == 128 + signal.SIGPIPE
    assert capsys.readouterr().err == ""


def test_syncledger_export_into_head_is_quiet(long_ledger):
    """The one subprocess: what Python flushes at exit must not complain either."""
    export = subprocess.Popen([sys.executable, "-P", "-m", "syncledger.server.cli", "export", "finance", "--db",
                               long_ledger], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert export.stdout.readline().startswith(b'{"id": 1,')
    export.stdout.close()  # head -1 is done
    assert export.wait(timeout=30) == 141
    assert export.stderr.read() == b""


# ---- an older release's ledger made private; its moved-out secret leaves no copy


def _mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


def test_an_older_releases_ledger_and_its_side_files_become_0600_on_open(v1, capsys):
    os.close(os.open(v1 + ".lock", os.O_CREAT | os.O_WRONLY, 0o644))
    os.close(os.open(v1 + "-journal", os.O_CREAT | os.O_WRONLY, 0o644))  # (empty: not a hot journal)
    os.chmod(v1 + ".lock", 0o644)
    os.chmod(v1 + "-journal", 0o644)
    old = sqlite3.connect(v1)  # a connection of the older release: its -wal and -shm exist, mode 0644
    old.execute("SELECT count(*) FROM accounts").fetchone()
    sides = [v1 + s for s in ("-wal", "-shm", "-journal", ".lock")]
    assert _mode(v1) == 0o644 and all(_mode(p) == 0o644 for p in sides)
    assert main(["session", "open", "--db", v1, "--login", "1000"]) == 0
    assert _mode(v1) == 0o600 and all(_mode(p) == 0o600 for p in sides)
    old.close()


def test_a_ledger_file_that_cannot_be_made_private_is_a_warning(v1, capsys, caplog, monkeypatch):
    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "chmod", refuse)
    with caplog.at_level(logging.WARNING):
        assert main(["session", "open", "--db", v1, "--login", "1000"]) == 0
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert v1 in warning and "644" in warning and "\n" not in warning


def test_the_secret_moved_out_of_an_older_ledger_is_not_left_in_its_pages(v1):
    """Its bytes are in neither the file nor its -wal once moved out, while the ledger is still open (as the
    server keeps it), also where SQLite is built without SQLITE_SECURE_DELETE (its own default; Debian's build
    turns it on): the connection starts with secure_delete off."""
    assert FIXTURE_SECRET in open(v1, "rb").read()
    store = Store(v1)
    try:
        store.db.execute("PRAGMA secure_delete = OFF")
        assert auth.load_secret(v1, store.db) == FIXTURE_SECRET.decode()
        for name in (v1, v1 + "-wal"):
            if os.path.exists(name):
                assert FIXTURE_SECRET not in open(name, "rb").read(), name
    finally:
        store.close()


# ---- one definition of every option (server/config.py)


def test_serve_with_no_flags_runs_on_the_configs_own_defaults():
    """The flags' defaults are the Config's (the writer's disagreed: thread in Config, process in the CLI)."""
    from syncledger.server.config import Config
    assert Config(**syncledger.commands["serve"].make_context("serve", []).params) == Config()
    assert Config().writer == "process"


def test_a_relative_path_in_a_config_file_is_the_files_folders(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "syncledger.toml"
    config.write_text('db = "ledger.db"\ntls-cert = "certs/chain.pem"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "--config", str(config), "--tls-key", "key.pem"]) == 0
    out = capsys.readouterr().out
    assert f'db = "{folder / "ledger.db"}"' in out and f'tls-cert = "{folder / "certs" / "chain.pem"}"' in out
    assert 'tls-key = "key.pem"' in out  # (a flag's path is the shell's: relative to where it runs)


# ---- a failed start leaves no ledger behind (issue 25)


def test_a_start_on_a_busy_port_leaves_no_ledger_and_the_next_start_creates_it(tmp_path, monkeypatch, capsys):
    """A busy port: exit 2, one line, and nothing of the ledger it would have created left beside it; the next
    start creates the ledger and says so. A ledger that was there before is never removed."""
    import socket
    monkeypatch.delenv("SYNCLEDGER_SECRET", raising=False)
    db = tmp_path / "new.db"
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    flags = ["--tcp-port", "0", "--ws-port", "0", "--wallet-port", "0", "--admin-port", str(port)]
    try:
        err = refused(capsys, "serve", "--db", str(db), *flags)
        assert err == f"syncledger: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        assert os.listdir(tmp_path) == []
        # a ledger that exists stays, with its key
        store = Store(str(db))
        store.close()
        auth.load_secret(str(db), sqlite3.connect(db))
        refused(capsys, "serve", "--db", str(db), *flags)
        assert {"new.db", "new.db.key"} <= set(os.listdir(tmp_path))  # (SQLite removes its -wal, -shm on close)
    finally:
        held.close()
    os.unlink(db)
    os.unlink(str(db) + ".key")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "syncledger", "serve", "--db", str(db), "--tcp-port", "0",
                             "--ws-port", "0", "--wallet-port", "0", "--admin-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("listening ")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert f"created new ledger at {db}" in err, err
    assert proc.returncode == 0
