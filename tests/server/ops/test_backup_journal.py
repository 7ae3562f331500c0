"""The journal of backups (server/backups.py): each backup ``syncledger backup`` wrote and verified is one line
beside the ledger, which ``status`` and ``/metrics`` read; a failed or interrupted backup records nothing, and
neither ``--keep``'s pruning nor a restore loses a line."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store
from syncledger.server import backups
from syncledger.server.admin import app as admin
from syncledger.server.cli import main
from syncledger.server.ops import backup


@pytest.fixture
def ledger(tmp_path) -> str:
    path = str(tmp_path / "l.db")
    store = Store(path)
    store.apply_batch([AddAccount("a", "EUR", 1)])
    store.apply_batch([Finance(FinanceRequest("BalanceIn", 1000, 1_000_000), 1)])
    store.close()
    return path


def _journal(path: str) -> list[dict]:
    with open(backups.journal_path(path)) as f:
        return [json.loads(line) for line in f]


def _status(capsys, path: str) -> tuple[str, dict]:
    assert main(["status", "--db", path]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("last backup: "))
    assert main(["status", "--db", path, "--format", "json"]) == 0
    return line, json.loads(capsys.readouterr().out)


def test_a_backup_is_recorded_beside_the_ledger_and_status_shows_it(ledger, tmp_path, capsys):
    line, found = _status(capsys, ledger)
    assert line == f"last backup: never (none recorded in {ledger}.backups)" and found["last_backup"] is None
    to = str(tmp_path / "one.sqlite")
    started = time.time()
    assert main(["backup", "--db", ledger, "--to", to]) == 0
    said = capsys.readouterr().out
    [record] = _journal(ledger)
    assert stat.S_IMODE(os.stat(backups.journal_path(ledger)).st_mode) == 0o600
    assert started <= record["time"] <= time.time() and record["to"] == to and record["bytes"] == os.path.getsize(to)
    assert record["head"].startswith("1:") and f"head {record['head']}" in said and 0 <= record["seconds"] < 60
    line, found = _status(capsys, ledger)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["time"]))
    assert re.fullmatch(r"last backup: [01] s ago ", line[:len("last backup: 0 s ago ")])
    assert line[len("last backup: 0 s ago "):] == (f"({when}), to {to}, head {record['head']}, {record['bytes']:,} "
                                                   f"bytes in {record['seconds']:.1f} s")
    assert found["backups"] == f"{ledger}.backups" and found["last_backup_unknown"] is None
    assert found["last_backup"] == {**record, "age_seconds": found["last_backup"]["age_seconds"], "exists": True}
    os.remove(to)  # (shipped elsewhere, say)
    assert _status(capsys, ledger)[0].endswith(f"to {to} (no longer there), head {record['head']}, "
                                               f"{record['bytes']:,} bytes in {record['seconds']:.1f} s")


def test_a_failed_or_interrupted_backup_records_nothing(ledger, tmp_path, capsys, monkeypatch):
    assert main(["backup", "--db", ledger, "--to", str(tmp_path / "first.sqlite")]) == 0
    before = open(backups.journal_path(ledger), "rb").read()
    assert main(["backup", "--db", ledger, "--to", str(tmp_path / "first.sqlite")]) == 2  # (it exists)
    real = backup.verify_path

    def killed(path: str):  # SIGTERM while the copy is verified (cli._interrupted raises SystemExit)
        real(path)
        raise SystemExit(143)
    monkeypatch.setattr(backup, "verify_path", killed)
    with pytest.raises(SystemExit):
        main(["backup", "--db", ledger, "--to", str(tmp_path / "second.sqlite")])
    assert open(backups.journal_path(ledger), "rb").read() == before and not (tmp_path / "second.sqlite").exists()


def test_a_backup_that_cannot_be_recorded_is_one_line_and_keeps_its_copy(ledger, tmp_path, capsys):
    os.mkdir(backups.journal_path(ledger))  # (a journal that cannot be written)
    to = str(tmp_path / "one.sqlite")
    assert main(["backup", "--db", ledger, "--to", to]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"to {to} (verified, head 1:" in err and "cannot record it" in err
    assert os.path.exists(to)
    line, found = _status(capsys, ledger)  # status says why it cannot know
    assert line == f"last backup: unknown (cannot read {ledger}.backups: Is a directory)"
    assert found["last_backup"] is None


def test_keep_and_restore_lose_no_line_of_the_journal(ledger, tmp_path, capsys):
    folder = tmp_path / "backups"
    folder.mkdir()
    for _ in range(4):
        assert main(["backup", "--db", ledger, "--to", str(folder), "--keep", "2"]) == 0
    records = _journal(ledger)
    kept = sorted(os.listdir(folder))
    assert len(records) == 4 and [os.path.basename(r["to"]) for r in records][-2:] == kept
    assert _status(capsys, ledger)[1]["last_backup"]["to"] == records[-1]["to"]
    with open(backups.journal_path(ledger), "rb") as f:
        journal = f.read()
    assert main(["restore", "--from", records[-1]["to"], "--db", ledger]) == 0
    assert "kept as" in capsys.readouterr().out
    with open(backups.journal_path(ledger), "rb") as f:
        assert f.read() == journal


def test_the_last_record_that_reads_is_the_last_backup(ledger, tmp_path):
    backups.record(ledger, 1000.0, str(tmp_path / "a"), "1:aa", 10, 0.5)
    backups.record(ledger, 2000.0, str(tmp_path / "b"), "2:bb", 20, 0.5)
    with open(backups.journal_path(ledger), "a") as f:
        f.write('{"time": 3000, "to": "torn')  # (a line a crash cut short)
    assert backups.last(ledger)["time"] == 2000.0
    assert backups.last(str(tmp_path / "none.db")) is None


async def test_metrics_show_the_last_backups_time_read_off_the_event_loop(start_server, tmp_path, monkeypatch):
    """0 before any backup (an alert on its age fires), then the journal's last record; read in the rendering's
    worker thread, never on the Trio thread."""
    monkeypatch.setattr(admin, "METRICS_EVERY", 0.0)  # every scrape rendered anew
    read_in = []
    real = backups.last

    def last(db_path: str):
        read_in.append(threading.current_thread())
        return real(db_path)
    monkeypatch.setattr(backups, "last", last)
    srv = await start_server()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.ports.admin}", timeout=30) as http:
        async def value() -> float:
            text = (await http.get("/metrics")).text
            return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}[
                "syncledger_last_backup_timestamp_seconds"]
        assert await value() == 0
        backups.record(srv.config.db, 1_765_000_000.25, str(tmp_path / "copy"), "1:aa", 10, 0.5)
        assert await value() == 1_765_000_000.25
    assert len(read_in) == 2 and threading.main_thread() not in read_in


async def test_an_in_memory_ledger_has_no_backup_series(start_server):
    srv = await start_server(mem=True)
    assert srv.metrics.registry.get_sample_value("syncledger_last_backup_timestamp_seconds") is None
