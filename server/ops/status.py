"""``syncledger status``: a read-only summary of a ledger for its operator (as ``pg_controldata``): where it is,
its files' modes, its schema version and head, what it holds, who holds its lock, which secrets the environment
sets (names only, never a value), its last backup (server/backups.py's journal); and ``manager list`` (never a
password hash). Nothing is written, nothing is locked: safe beside a running server."""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from syncledger.ledger import engine, head
from syncledger.ledger.migrations import LATEST, version_of

from .. import backups
from ..auth import SESSIONS, key_path

SECRETS = ("SYNCLEDGER_SECRET", "SYNCLEDGER_WALLET_TOKEN")
PG_BACKUPS = ("a PostgreSQL ledger is backed up with pg_dump, not syncledger backup: syncledger records nothing "
              "of it")
SESSION_NAMES = {number: name for name, number in SESSIONS.items()}


def status(db_path: str) -> dict[str, Any]:
    """What ``syncledger status`` shows, as a dict (the JSON of ``--format json``). FileNotFoundError if an SQLite
    ledger is not there."""
    postgres = engine.is_postgres(db_path)
    db = engine.connect_ro(db_path)
    try:
        version = version_of(db)
        found: dict[str, Any] = {
            "ledger": engine.shown(db_path),
            "engine": "postgresql" if postgres else "sqlite",
            "mode": None if postgres else _mode(db_path),
            "key_file": None if postgres else key_path(db_path),
            "key_mode": None if postgres else _mode(key_path(db_path)),
            "schema_version": version,
            "schema_latest": LATEST,
            "head": head(db),
            "accounts": _count(db, "accounts"),
            "events": _count(db, "events"),
            "managers": _count(db, "managers", "removed = 0"),
            "providers": _count(db, "providers", "removed = 0"),
        }
    finally:
        db.close()
    found["lock"] = None if postgres else _lock(db_path)
    found["secrets_set"] = [name for name in SECRETS if os.environ.get(name)]
    found.update(_last_backup(db_path, postgres))
    return found


def _last_backup(db_path: str, postgres: bool) -> dict[str, Any]:
    """``backups``: the journal's path; ``last_backup``: its last record, with its age and whether the copy is
    still where it went (None: none recorded); ``last_backup_unknown``: why it cannot be known (else None)."""
    if postgres:
        return {"backups": None, "last_backup": None, "last_backup_unknown": PG_BACKUPS}
    path = backups.journal_path(db_path)
    try:
        last = backups.last(db_path)
    except OSError as e:
        return {"backups": path, "last_backup": None, "last_backup_unknown": f"cannot read {path}: {e.strerror}"}
    if last is not None:
        last = {**last, "age_seconds": round(max(time.time() - last["time"], 0.0), 3),
                "exists": os.path.exists(last["to"])}
    return {"backups": path, "last_backup": last, "last_backup_unknown": None}


def text(found: dict[str, Any]) -> list[str]:
    """The lines ``syncledger status`` prints, one fact a line (the head alone on its last line, for scripts)."""
    mode = lambda m: "missing" if m is None else m  # noqa: E731
    lines = [f"ledger: {found['ledger']} ({found['engine']})"]
    if found["engine"] == "sqlite":
        lines.append(f"mode: {mode(found['mode'])}; key file {found['key_file']}: {mode(found['key_mode'])}")
        lock = found["lock"]
        holders = ", ".join(f"{p['pid']} ({'alive' if p['alive'] else 'not running'})" for p in lock["pids"])
        lines.append(f"lock: {lock['path']}: " + (holders or "no holder recorded"))
    upgrade = "" if found["schema_version"] >= found["schema_latest"] else " (serve upgrades it once)"
    lines.append(f"schema version: {found['schema_version']} (this syncledger: {found['schema_latest']}){upgrade}")
    lines.append(f"accounts: {_n(found['accounts'])}; events: {_n(found['events'])}; managers: "
                 f"{_n(found['managers'])}; providers: {_n(found['providers'])}")
    lines.append(f"secrets set: {', '.join(found['secrets_set']) or 'none'} (of {', '.join(SECRETS)})")
    lines.append(f"last backup: {_backup_text(found)}")
    lines.append(f"head: {found['head']}")
    lines.append(found["head"])
    return lines


def managers(db_path: str) -> list[dict[str, Any]]:
    """Every manager, removed ones too: login, session type, created (seconds), removed; never the hash."""
    db = engine.connect_ro(db_path)
    try:
        rows = db.execute("SELECT login, session, created, removed FROM managers ORDER BY login").fetchall()
    finally:
        db.close()
    return [{"login": login, "session": SESSION_NAMES.get(session, str(session)), "created": created,
             "removed": bool(removed)} for login, session, created, removed in rows]


def _backup_text(found: dict[str, Any]) -> str:
    last = found["last_backup"]
    if found["last_backup_unknown"] is not None:
        return f"unknown ({found['last_backup_unknown']})"
    if last is None:
        return f"never (none recorded in {found['backups']})"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last["time"]))
    gone = "" if last["exists"] else " (no longer there)"
    return (f"{_age(last['age_seconds'])} ago ({when}), to {last['to']}{gone}, head {last['head']}, "
            f"{_n(last['bytes'])} bytes in {last['seconds']:.1f} s")


def _age(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3 h 12 min``, ``2 d 4 h``."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _n(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _mode(path: str) -> str | None:
    try:
        return f"{stat.S_IMODE(os.stat(path).st_mode):04o}"
    except FileNotFoundError:
        return None


def _count(db: Any, table: str, where: str | None = None) -> int | None:
    """Rows of ``table`` (None: no such table, a ledger of an older schema)."""
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")).fetchone()[0]
    except engine.errors():  # (autocommit: nothing to roll back)
        return None


def _lock(db_path: str) -> dict[str, Any]:
    """The lock file's pids (``SERVER_PID [WRITER_PID]``, see core/lockfile.py) and whether each runs. Read
    only: the lock is never taken (a server starting now must not find it held)."""
    path = os.path.realpath(db_path) + ".lock"
    try:
        with open(path) as f:
            written = f.read(64)
    except FileNotFoundError:
        written = ""
    return {"path": path, "pids": [{"pid": int(p), "alive": _alive(int(p))} for p in written.split() if p.isdigit()]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it runs
        return True
    return True
