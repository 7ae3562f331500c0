"""The command line on click (issue 25): each of serve's options, from server/config.py, is also an environment
variable ``SYNCLEDGER_<OPTION>`` and a key of a ``--config`` file, the command line winning over the environment,
which wins over the file; every number is checked in its range wherever it comes from; every command's help
reads; the shell completion script is click's; and the CLI's start imports neither the server nor sqlite-utils."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys

import click
import pytest

from syncledger.ledger import Store
from syncledger.server import ops
from syncledger.server.auth import check_password
from syncledger.server.cli import COMPLETE_VAR, main, syncledger
from syncledger.server.config import INT_MAX, OPTIONS

BY_NAME = {option.name(f): (f, option) for f, option in OPTIONS}


def shown(capsys, *argv: str) -> dict[str, object]:
    """``config show ARGV``'s options, by name (its TOML lines, read back)."""
    assert main(["config", "show", *argv]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " = " in line and not line.startswith("#")]
    return {key: json.loads(value) for key, value in (line.split(" = ", 1) for line in lines)}


def refused(capsys, *argv: str) -> str:
    """``syncledger ARGV`` exits 2 with one line on stderr and nothing on stdout: that line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert (code, out, err.count("\n")) == (2, "", 1), (code, out, err)
    return err


def _sample(f, option) -> tuple[str, object]:
    """A text an option takes that is not its default, and what ``config show`` prints for it."""
    if option.kind == "boolean":
        return "true", True
    text = {"integer": "7", "number": "7.5"}.get(option.kind) or (option.choices[-1] if option.choices else "ABC")
    value = option.parse(text) if option.parse else text
    return text, option.text(value)


# ---- SYNCLEDGER_<OPTION>, for every option


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_option_is_also_an_environment_variable(capsys, monkeypatch, name):
    f, option = BY_NAME[name]
    text, printed = _sample(f, option)
    assert printed != shown(capsys).get(name)  # (the sample is not the default)
    monkeypatch.setenv(option.envvar(f), text)
    assert shown(capsys)[name] == printed


def test_the_environment_variables_are_named_from_the_options_and_leave_the_secrets_alone():
    names = {option.envvar(f) for f, option in OPTIONS}
    assert len(names) == len(OPTIONS) and "SYNCLEDGER_TCP_PORT" in names and "SYNCLEDGER_MAX_HANDSHAKE_RATE" in names
    assert not names & {"SYNCLEDGER_SECRET", "SYNCLEDGER_WALLET_TOKEN", "SYNCLEDGER_CONFIG"}
    serve = {p.name: p for p in syncledger.commands["serve"].params}
    assert all(serve[f.name].envvar == option.envvar(f) for f, option in OPTIONS)


def test_the_command_line_wins_over_the_environment_which_wins_over_the_file(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("tcp-port = 1001\nws-port = 1002\nwallet-port = 1003\ncluster = true\n")
    monkeypatch.setenv("SYNCLEDGER_WS_PORT", "2002")
    monkeypatch.setenv("SYNCLEDGER_WALLET_PORT", "2003")
    got = shown(capsys, "--config", str(config), "--wallet-port", "3003")
    assert (got["tcp-port"], got["ws-port"], got["wallet-port"], got["admin-port"]) == (1001, 2002, 3003, 7403)
    assert got["cluster"] is True and shown(capsys, "--config", str(config), "--no-cluster")["cluster"] is False
    monkeypatch.setenv("SYNCLEDGER_CLUSTER", "false")
    assert shown(capsys, "--config", str(config))["cluster"] is False


def test_the_config_file_may_come_from_the_environment_and_its_paths_stay_the_files(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "c.toml").write_text('db = "ledger.db"\ntcp-port = 1001\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYNCLEDGER_CONFIG", str(folder / "c.toml"))
    monkeypatch.setenv("SYNCLEDGER_TLS_CERT", "chain.pem")
    got = shown(capsys)
    assert got["tcp-port"] == 1001 and got["db"] == str(folder / "ledger.db")
    assert got["tls-cert"] == "chain.pem"  # (the environment's path is the shell's, as a flag's)


def test_syncledger_db_is_every_commands_db(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "l.db")
    Store(db).close()
    monkeypatch.setenv("SYNCLEDGER_DB", db)
    assert main(["head"]) == 0
    assert capsys.readouterr().out.startswith("0:")
    assert main(["head", "--db", str(tmp_path / "none.db")]) == 2  # (the flag wins)
    assert "none.db" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["70000", "-1", "x", ""])
def test_a_bad_value_in_the_environment_is_one_line_naming_the_variable(capsys, monkeypatch, value):
    monkeypatch.setenv("SYNCLEDGER_TCP_PORT", value)
    if value == "":  # an empty variable is not set (click's rule)
        assert shown(capsys)["tcp-port"] == 7400
        return
    err = refused(capsys, "config", "show")
    assert "SYNCLEDGER_TCP_PORT" in err and "from 0 to 65535" in err and repr(value) in err, err


def test_a_bad_flag_is_said_with_the_flag_alone(capsys):
    err = refused(capsys, "serve", "--tcp-port", "70000")
    assert err == ("syncledger serve: Invalid value for '--tcp-port': a port (0: a free one) from 0 to 65535 "
                   "(got '70000') (see syncledger serve --help)\n")


# ---- every option of every command: its variable (click's auto_envvar_prefix), scoped by its command


def _contexts(group: click.Group = syncledger, ctx: click.Context | None = None):
    """Each command with its click context (made as a run makes it, resilient: nothing parsed is required)."""
    ctx = ctx or syncledger.make_context("syncledger", [], resilient_parsing=True)
    for name, command in group.commands.items():
        sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        yield from _contexts(command, sub) if isinstance(command, click.Group) else [(command, sub)]


def _variables() -> list[tuple[str, click.Option, click.Context]]:
    """(the variable, the option, its command's context) of every option but --help and --version."""
    return [(option.get_help_extra(ctx).get("envvars", ("(none)",))[0], option, ctx) for command, ctx in _contexts()
            for option in command.params if isinstance(option, click.Option) and option.name != "help"]


def test_every_option_of_every_command_is_a_variable_of_its_own_shown_in_its_help(capsys, monkeypatch):
    VARIABLES = _variables()
    names = [name for name, _, _ in VARIABLES]
    serves = {option.envvar(f) for f, option in OPTIONS} | {"SYNCLEDGER_CONFIG"}  # (shared: SYNCLEDGER_DB)
    own = [name for name in names if name not in serves]  # each one option's, none a secret's
    assert len(own) == len(set(own)) and not set(names) & {"SYNCLEDGER_SECRET", "SYNCLEDGER_WALLET_TOKEN"}
    for name, option, ctx in VARIABLES:
        assert isinstance(option, ops.Option), f"{ctx.command_path} {option.opts[0]} is not an ops.Option"
        path = ctx.command_path.upper().replace(" ", "_").replace("-", "_")
        assert name in serves or name == f"{path}_{option.name.upper()}", (name, ctx.command_path)
        assert (name in serves) == (not option.allow_from_autoenv)  # (serve's names only: no second one)
        monkeypatch.setenv(name, "a value")
        assert option.resolve_envvar_value(ctx) == "a value", name
        monkeypatch.delenv(name)
    for command, ctx in _contexts():
        assert main([*ctx.command_path.split()[1:], "--help"]) == 0
        shown = capsys.readouterr().out
        assert all(name in shown for name, _, c in VARIABLES if c.command is command), ctx.command_path
    assert {"SYNCLEDGER_BACKUP_KEEP", "SYNCLEDGER_EXPORT_FORMAT", "SYNCLEDGER_MANAGER_ADD_LOGIN",
            "SYNCLEDGER_RESTORE_FROM", "SYNCLEDGER_DB", "SYNCLEDGER_TCP_PORT"} <= set(names)


def _backed_up(capsys, *argv: str) -> None:
    assert main(["backup", *argv]) == 0
    capsys.readouterr()


def test_a_commands_variable_takes_effect_and_the_command_line_wins_over_it(tmp_path, capsys, monkeypatch):
    db, folder = str(tmp_path / "l.db"), tmp_path / "backups"
    Store(db).close()
    folder.mkdir()
    monkeypatch.setenv("SYNCLEDGER_BACKUP_KEEP", "1")
    monkeypatch.setenv("SYNCLEDGER_BACKUP_TO", str(folder))
    for _ in range(2):
        _backed_up(capsys, "--db", db)
    assert len(os.listdir(folder)) == 1
    for _ in range(2):
        _backed_up(capsys, "--db", db, "--keep", "2")
    assert len(os.listdir(folder)) == 2
    monkeypatch.setenv("SYNCLEDGER_EXPORT_FORMAT", "csv")
    assert main(["export", "accounts", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("login,")
    assert main(["export", "accounts", "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_bad_value_of_a_commands_variable_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "l.db")
    Store(db).close()
    before = sorted(os.listdir(tmp_path))
    monkeypatch.setenv("SYNCLEDGER_BACKUP_KEEP", "0")
    assert refused(capsys, "backup", "--db", db, "--to", str(tmp_path)) == (
        "syncledger backup: Invalid value for SYNCLEDGER_BACKUP_KEEP: a number of backups from 1 to 100000 (got '0') "
        "(see syncledger backup --help)\n")
    assert refused(capsys, "backup", "--db", db, "--to", str(tmp_path), "--keep", "x").startswith(
        "syncledger backup: Invalid value for '--keep': ")  # (the flag's, which wins)
    monkeypatch.setenv("SYNCLEDGER_RESTORE_FORCE", "maybe")
    assert "Invalid value for SYNCLEDGER_RESTORE_FORCE: 'maybe' is not a valid boolean" in refused(
        capsys, "restore", "--from", db, "--db", str(tmp_path / "other.db"))
    assert sorted(os.listdir(tmp_path)) == before


def test_a_variable_is_its_commands_alone_and_serves_names_are_unchanged(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "l.db")
    store = Store(db)
    store.db.execute("INSERT INTO managers VALUES (7, 'no password', 3, 100, 1, 0)")  # (no slow hash)
    store.close()
    monkeypatch.setenv("SYNCLEDGER_DB", db)
    for stray in ("SYNCLEDGER_LOGIN", "SYNCLEDGER_MANAGER_ADD_LOGIN", "SYNCLEDGER_MANAGER_LOGIN",
                  "SYNCLEDGER_TOKEN_LOGIN"):
        monkeypatch.setenv(stray, "7")
    assert "Missing option '--login'" in refused(capsys, "manager", "remove")
    monkeypatch.setenv("SYNCLEDGER_MANAGER_REMOVE_LOGIN", "7")
    assert main(["manager", "remove"]) == 0 and "manager 7 removed" in capsys.readouterr().out
    # serve's variables: SYNCLEDGER_<OPTION> and no other name; --db is SYNCLEDGER_DB for every command
    for name in ("SYNCLEDGER_SERVE_TCP_PORT", "SYNCLEDGER_CONFIG_SHOW_TCP_PORT", "SYNCLEDGER_SERVE_DB",
                 "SYNCLEDGER_HEAD_DB", "SYNCLEDGER_VERSION"):
        monkeypatch.setenv(name, "1")
    assert shown(capsys)["tcp-port"] == 7400 and shown(capsys)["db"] == db
    monkeypatch.setenv("SYNCLEDGER_TCP_PORT", "1234")
    assert shown(capsys)["tcp-port"] == 1234
    assert main(["head"]) == 0 and capsys.readouterr().out.startswith("0:")


def test_a_password_may_come_from_its_variable_and_two_sources_are_refused(tmp_path, capsys, monkeypatch):
    """As PostgreSQL's PGPASSWORD (only its owner and root read a process's environment; every user sees its
    command line in ps); two sources at once are refused, each named, before anything is written."""
    db = str(tmp_path / "l.db")
    monkeypatch.setenv("SYNCLEDGER_MANAGER_ADD_PASSWORD", "pw-from-the-environment")
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-from-standard-input\n"))
    err = refused(capsys, "manager", "add", "--db", db, "--login", "1", "--password-stdin")
    assert "--password-stdin and SYNCLEDGER_MANAGER_ADD_PASSWORD: give one of them" in err
    monkeypatch.delenv("SYNCLEDGER_MANAGER_ADD_PASSWORD")
    monkeypatch.setenv("SYNCLEDGER_MANAGER_ADD_PASSWORD_STDIN", "1")
    err = refused(capsys, "manager", "add", "--db", db, "--login", "1", "--password", "pw-on-the-command-line")
    assert "SYNCLEDGER_MANAGER_ADD_PASSWORD_STDIN and --password: give one of them" in err
    assert not os.path.exists(db)
    monkeypatch.delenv("SYNCLEDGER_MANAGER_ADD_PASSWORD_STDIN")
    monkeypatch.setenv("SYNCLEDGER_MANAGER_ADD_PASSWORD", "pw-from-the-environment")
    assert main(["manager", "add", "--db", db, "--login", "1"]) == 0
    capsys.readouterr()
    stored = sqlite3.connect(db).execute("SELECT password_hash FROM managers WHERE login = 1").fetchone()[0]
    assert check_password("pw-from-the-environment", stored)


# ---- every number in range


NUMBERS = sorted(name for name, (f, option) in BY_NAME.items() if option.kind in ("integer", "number"))


@pytest.mark.parametrize("name", NUMBERS)
def test_every_number_is_refused_above_its_range(capsys, monkeypatch, name):
    f, option = BY_NAME[name]
    too_big = "65536" if "port" in name else str(INT_MAX + 1)
    assert f"--{name}" in refused(capsys, "config", "show", f"--{name}", too_big)
    assert f"--{name}" in refused(capsys, "config", "show", f"--{name}", "1e999")
    monkeypatch.setenv(option.envvar(f), too_big)
    assert option.envvar(f) in refused(capsys, "config", "show")


@pytest.mark.parametrize("name", [n for n in NUMBERS if "port" not in n])
def test_every_count_rate_and_time_is_refused_below_its_range_and_taken_at_its_ends(capsys, name):
    f, option = BY_NAME[name]
    lowest = "0" if "rate" in name else "1"
    assert f"--{name}" in refused(capsys, "config", "show", f"--{name}", "-1" if lowest == "0" else "0")
    highest = shown(capsys, f"--{name}", str(INT_MAX)).get(name)
    assert highest == INT_MAX
    assert shown(capsys, f"--{name}", lowest).get(name, 0) == int(lowest)  # (a rate of 0: no limit, not shown)


def test_a_config_files_number_out_of_range_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f"game-session-ttl = {INT_MAX + 1}\n")
    err = refused(capsys, "config", "show", "--config", str(config))
    assert err.startswith(f"syncledger: {config}: game-session-ttl = {INT_MAX + 1}: an integer from 1 to {INT_MAX}")


# ---- the commands, their help


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, group)]
    for name, command in group.commands.items():
        found += _commands(command, path + (name,)) if isinstance(command, click.Group) else [(path + (name,), command)]
    return found


COMMANDS = _commands(syncledger)


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "syncledger" for p, _ in COMMANDS])
def test_every_commands_help_names_and_explains_each_option(capsys, path, command):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: {' '.join(('syncledger',) + path)} ")
    assert command.help and " ".join(command.help.split())[:40] in " ".join(out.split())
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
            assert param.opts[0] in out


def test_the_command_list_keeps_its_order_and_a_missing_command_is_one_line(capsys):
    assert list(syncledger.commands)[:3] == ["serve", "config", "manager"]
    assert refused(capsys) == "syncledger: Missing command. (see syncledger --help)\n"
    assert refused(capsys, "manager") == "syncledger manager: Missing command. (see syncledger manager --help)\n"
    assert "No such command 'servee'" in refused(capsys, "servee")


def test_a_flag_is_never_taken_by_a_prefix_and_two_password_sources_are_refused(tmp_path, capsys):
    err = refused(capsys, "config", "show", "--tcp", "7400")
    assert re.search(r"No such option:? '?--tcp\b", err), err  # (click 8.3: "No such option: --tcp"; 8.5: quoted)
    err = refused(capsys, "manager", "add", "--db", str(tmp_path / "l.db"), "--login", "1", "--password-stdin",
                  "--password", "pw-long-enough-1")
    assert "--password-stdin and --password" in err and not (tmp_path / "l.db").exists()


def test_version(capsys):
    from syncledger.server import version
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"syncledger {version()}\n"


# ---- shell completion (click's)


@pytest.mark.parametrize("shell, says", [("bash", "complete -o nosort -F _syncledger_completion syncledger"),
                                         ("zsh", "compdef _syncledger_completion syncledger"),
                                         ("fish", "complete --no-files --command syncledger")])
def test_the_completion_script_is_generated(capsys, monkeypatch, shell, says):
    monkeypatch.setenv(COMPLETE_VAR, f"{shell}_source")
    assert main([]) == 0
    assert says in capsys.readouterr().out


@pytest.mark.parametrize("words, cword, answer", [
    ("syncledger ser", 1, ["plain,serve"]),
    ("syncledger provider r", 2, ["plain,rotate", "plain,remove"]),
    ("syncledger serve --log-l", 2, ["plain,--log-level"]),
    ("syncledger serve --log-level w", 3, ["plain,warning"]),
    ("syncledger export f", 2, ["plain,finance"]),
    ("syncledger serve --tls-cert ce", 3, ["file,ce"]),
])
def test_completion_answers_commands_options_and_their_values(capsys, monkeypatch, words, cword, answer):
    monkeypatch.setenv(COMPLETE_VAR, "bash_complete")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(cword))
    assert main([]) == 0
    assert capsys.readouterr().out.split() == answer


# ---- the start


def test_the_clis_start_imports_neither_the_server_nor_sqlite_utils():
    """What made ``syncledger --help`` take half a second (0.57-0.74 s before issue 25): each command imports
    what it runs when it runs."""
    check = ("import sys, syncledger.server.cli\n"
             "print(sorted(m for m in ('sqlite_utils', 'trio', 'jwt', 'pydantic', 'syncledger.server.app', "
             "'syncledger.server.auth', 'importlib.metadata') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-P", "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n", done.stdout


def test_python_m_syncledger_is_the_command():
    done = subprocess.run([sys.executable, "-P", "-m", "syncledger", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("Usage: syncledger [OPTIONS] COMMAND")
    assert "serve" in done.stdout and "_SYNCLEDGER_COMPLETE=bash_source" in done.stdout
