"""``--log-level`` (issue 25): one option (server/config.py's), applied by server/logs.py to the server and its
writer process; a bad level is refused as every bad flag is."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys

from syncledger.server import logs
from syncledger.server.cli import main, syncledger
from syncledger.server.config import Config
from tests.conftest import FIXTURES


def test_log_level_is_one_option_and_sets_the_level(capsys):
    serve = syncledger.commands["serve"]
    assert Config.log_level == "info" and serve.make_context("serve", []).params["log_level"] == "info"
    assert serve.make_context("serve", ["--log-level", "warning"]).params["log_level"] == "warning"
    try:
        logs.configure("text", "warning")
        assert logging.getLogger().level == logging.WARNING
        logs.configure("json", "debug")
        assert logging.getLogger().level == logging.DEBUG
    finally:
        logs.reset()
        logging.getLogger().setLevel(logging.WARNING)
    assert main(["serve", "--log-level", "loud"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--log-level" in err and "loud" in err
    assert main(["config", "show", "--log-level", "error"]) == 0
    assert 'log-level = "error"' in capsys.readouterr().out.splitlines()


def _serve_busy(db: str, *level: str) -> tuple[int, list[str]]:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        done = subprocess.run([sys.executable, "-P", "-m", "syncledger", "serve", "--db", db, "--tcp-port", "0",
                               "--ws-port", "0", "--wallet-port", "0", "--admin-port", str(held.getsockname()[1]),
                               *level], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SYNCLEDGER_SECRET": "s" * 32})
    finally:
        held.close()
    return done.returncode, done.stderr.splitlines()


def test_log_level_warning_leaves_out_the_info_lines(tmp_path):
    """An upgrade's lines are INFO: shown by default, left out at --log-level warning (the start then fails on
    a busy port: its one line is not a log line, and is always said)."""
    quiet, loud = str(tmp_path / "quiet.db"), str(tmp_path / "loud.db")
    for path in (quiet, loud):
        shutil.copy(FIXTURES / "ledger-v1.sqlite", path)
        os.chmod(path, 0o600)
    code, lines = _serve_busy(loud)
    assert code == 2 and any("schema version 1 -> 2" in line for line in lines), lines
    code, lines = _serve_busy(quiet, "--log-level", "warning")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("syncledger: cannot listen on "), lines
