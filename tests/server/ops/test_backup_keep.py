"""``syncledger backup --to FOLDER --keep N`` (issue 25): a backup named by the command into a folder of backups,
then the newest N of that ledger's kept and the older ones removed: only files the command names so, never
anything else in the folder."""

from __future__ import annotations

import os

from syncledger.ledger import AddAccount, Store, verify_path
from syncledger.server.cli import main
from syncledger.server.ops import backup


def _refused(capsys, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert (code, out, err.count("\n")) == (2, "", 1), (code, out, err)
    return err


def test_backup_keep_n_keeps_the_newest_n_of_its_own_and_nothing_else_is_touched(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    store = Store(db)
    store.apply_batch([AddAccount("a", "EUR", 1)])
    store.close()
    folder = tmp_path / "backups"
    folder.mkdir()
    others = ["notes.txt", "l.db.backup-old.sqlite", "other.db.backup-20200101T000000.000000Z.sqlite",
              "l.db.backup-20200101T000000.000000Z.sqlite.partial-1", "l.db-2026-12-01.sqlite"]
    for name in others:
        (folder / name).write_text("not a backup of this command")
    os.symlink(str(tmp_path / "elsewhere"), folder / "l.db.backup-20190101T000000.000000Z.sqlite")
    made = []
    for _ in range(4):
        assert main(["backup", "--db", db, "--to", str(folder), "--keep", "2"]) == 0
        out = capsys.readouterr().out.splitlines()
        made.append(out[0].split(" to ", 1)[1].split(":")[0])
        assert out[1:] == [f"removed the older backup {p}" for p in made[:-2][-1:]]
    names = set(os.listdir(folder))
    assert names == {*others, "l.db.backup-20190101T000000.000000Z.sqlite", *(os.path.basename(p) for p in made[-2:])}
    assert all(verify_path(p).ok for p in made[-2:])
    assert backup.prune(db, str(folder), 5) == []  # fewer than N: nothing removed
    # --keep needs a folder, and takes 1 or more; refused before anything is written
    err = _refused(capsys, "backup", "--db", db, "--to", str(tmp_path / "one.sqlite"), "--keep", "2")
    assert "--keep needs --to to be a folder" in err and not (tmp_path / "one.sqlite").exists()
    _refused(capsys, "backup", "--db", db, "--to", str(folder), "--keep", "0")
    assert set(os.listdir(folder)) == names
    # a file --to still works as before
    assert main(["backup", "--db", db, "--to", str(tmp_path / "one.sqlite")]) == 0
    assert verify_path(str(tmp_path / "one.sqlite")).ok
