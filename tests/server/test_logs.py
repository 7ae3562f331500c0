"""The log cannot fill a disk (issue 21): a repeated warning or error is one line a second of its kind, then
a line that counts the rest; what is left out is never formatted. CRITICAL lines always pass."""

from __future__ import annotations

import logging

import orjson
import pytest

from syncledger.server import logs
from tests.conftest import ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    """A clock for :func:`configure` that the test moves; the root logger as it was afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield Clock()
    for handler in root.handlers:
        if isinstance(handler, logs._Stderr):
            handler.close()
    root.handlers[:], root.level = saved


def configure(clock: Clock, fmt: str = "text") -> logging.Handler:
    """logs.configure(), its handler alone on the root logger (pytest's would format every record)."""
    logs.configure(fmt, clock=clock)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logs._Stderr)]
    return root.handlers[0]


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_flood_of_one_error_is_one_line_then_a_count(clock, capsys, monkeypatch, fmt):
    formatter = configure(clock, fmt).formatter
    real, formatted = formatter.formatException, []
    monkeypatch.setattr(formatter, "formatException", lambda ei: formatted.append(ei) or real(ei))
    log = logging.getLogger("syncledger.mainloop")
    clock.now = 5.0
    for i in range(10_000):
        try:
            raise OSError("database unreachable")
        except OSError:
            log.exception("batch of %d commands failed to commit; none was applied", i)
    assert len(formatted) == 1  # the tracebacks left out were never formatted
    clock.now = 6.5
    logging.getLogger("syncledger").info("the database answers again")
    lines = [line for line in _lines(capsys) if not line.startswith(("Traceback", "  ", "OSError"))]
    messages = [orjson.loads(line)["message"] for line in lines] if fmt == "json" else lines
    assert len(messages) == 3, messages
    assert "batch of 0 commands failed" in messages[0]
    assert "… and 9,999 more like 'batch of %d commands failed to commit; none was applied'" in messages[1]
    assert ("ERROR" in lines[1]) and ("syncledger.mainloop" in lines[1])
    assert "the database answers again" in messages[2]


def test_each_kind_has_its_own_line_a_second(clock, capsys):
    configure(clock)
    mainloop, wallet = logging.getLogger("syncledger.mainloop"), logging.getLogger("syncledger.wallet")
    for second in range(3):
        clock.now = float(second)
        for i in range(1000):
            mainloop.error("batch failed: %s", i)
            wallet.error("batch failed: %s", i)  # another logger: another kind
            wallet.warning("batch failed: %s", i)  # another level: another kind
            wallet.warning("debit %s met a closed round", i)  # another template: another kind
    lines = _lines(capsys)
    assert len(lines) == 3 * 4 + 2 * 4, lines  # a line of each kind each second, the last second's 999 untold
    assert sum("… and 999 more like" in line for line in lines) == 2 * 4
    configure(clock)  # a configure() that replaces the handler tells what it had left out
    lines = _lines(capsys)
    assert len(lines) == 4 and all("… and 999 more like" in line for line in lines), lines


def test_critical_lines_and_lines_below_warning_are_never_left_out(clock, capsys):
    configure(clock)
    log = logging.getLogger("syncledger")
    for i in range(100):
        log.critical("stopping: %s", i)
        log.info("connection %d opened", i)  # (connection lines have their own budget: limits.LineBudget)
    assert len(_lines(capsys)) == 200


def test_a_json_line_carries_the_fields_of_its_call_and_a_text_line_its_message(clock, capsys):
    """Issue 25: peer, listener, login, status and duration were inside the message alone."""
    fields = {"peer": "127.0.0.1:5555", "listener": "tcp", "login": 1, "status": 401, "duration_ms": 12.5,
              "path": ROOT}  # (a value JSON has no type for is said as text)
    for fmt in ("json", "text"):
        configure(clock, fmt)
        logging.getLogger("syncledger.commands").warning("failed login for %s from %s", 1, "127.0.0.1", extra=fields)
    json_line, text_line = _lines(capsys)
    entry = orjson.loads(json_line)
    assert list(entry) == ["time", "level", "logger", "message", *fields]
    assert entry["message"] == "failed login for 1 from 127.0.0.1" and entry["level"] == "WARNING"
    assert {key: entry[key] for key in fields} == {**fields, "path": str(ROOT)}
    assert text_line.endswith(" syncledger.commands WARNING failed login for 1 from 127.0.0.1")  # (as before)


def test_a_line_its_own_budget_let_through_is_not_left_out_again(clock, capsys):
    """A line that carries ``left_out`` was let through by a LineBudget of its own (one a second of each
    provider, call and status for the wallet's refusals): the handler's one line a second of each message
    template does not cut it again."""
    configure(clock)
    log = logging.getLogger("syncledger.wallet.refused")
    for status in ("INVALID_TOKEN_ID", "INSUFFICIENT_FUNDS", "INVALID_SID"):
        log.warning("debit refused %s", status, extra={"left_out": 0})
    for status in ("A", "B"):  # no budget of its own: one line a second of its template
        log.warning("credit refused %s", status)
    assert len(_lines(capsys)) == 4
