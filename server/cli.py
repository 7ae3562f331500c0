"""The ``syncledger`` command, on click: ``serve`` and ``config show``, whose options are server/config.py's (each
also an environment variable ``SYNCLEDGER_<OPTION>`` and a key of a ``--config`` TOML file; the command line wins
over the environment, which wins over the file), and the operator's commands on a ledger, whose own options are
variables named after their command (click's ``auto_envvar_prefix``: ``SYNCLEDGER_BACKUP_KEEP``). A command
imports what it runs when it runs, so that ``--help``, ``--version`` and a refused flag start fast (not the
server's modules, nor sqlite-utils)."""

from __future__ import annotations

import gc
import getpass
import json
import os
import signal
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

import click

from syncledger.ledger import Store, engine, head_path, parse_anchor, verify_path
from syncledger.ledger.migrations import SchemaError
from syncledger.ledger.store import MAX_ID, LedgerOpenError

from . import version
from .config import OPTIONS, SETTLEMENTS, Config, ConfigError, currencies, from_toml, int_in, provider_name
from .ops import OpsError, Parsed, export, given_as, option, runs
from .ops import reports  # rounds, report, reconcile

FAIL_STOP_EXIT = 3  # the server stopped because it could not know what the ledger file holds
MAX_TTL = 366 * 24 * 3600  # the longest a token from `syncledger token` may last (a year, leap day included)
COMPLETE_VAR = "_SYNCLEDGER_COMPLETE"  # click's shell completion (README, "Operating syncledger")
Args = SimpleNamespace  # a command's parameters by name (server/ops/__init__.py's ``runs``)


def _unusable() -> tuple[type[BaseException], ...]:
    """What stops a command or a start with one line on stderr, exit 2, from the modules that raise it (imported
    here, not at the CLI's start)."""
    from .app import ProvidersError, TlsError
    from .auth import SecretExposed, SecretMissing
    from .core.lockfile import LedgerLocked
    from .listen import ListenError
    from .ops.migrate import MigrateError
    return (SchemaError, LedgerOpenError, LedgerLocked, SecretExposed, SecretMissing, TlsError, ListenError,
            ProvidersError, MigrateError)


def _new_ledger_note(path: str) -> bool:
    """Will opening ``path`` create a ledger? (said on stderr, so that a mistyped --db is noticed; a PostgreSQL
    database: the store says whether it made the schema)"""
    return path != ":memory:" and not engine.is_postgres(path) and not os.path.exists(path)


class _BadPassword(Exception):
    """No usable password was given (one line on stderr, exit 2)."""


def _password(args: Args) -> str:
    """From standard input (``--password-stdin``), a prompt, ``--password``'s variable (as PostgreSQL's
    PGPASSWORD: only its owner and root read a process's environment), or (discouraged: ``ps`` shows it to every
    user) ``--password`` itself. Two of them are refused, wherever each came from."""
    from .ops import managers
    if args.password_stdin and args.password is not None:
        ctx = click.get_current_context()
        raise click.UsageError(f"{given_as(ctx, 'password_stdin')} and {given_as(ctx, 'password')}: give one of "
                               "them", ctx)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for manager {args.login}: ")
        if getpass.getpass("again: ") != password:
            raise _BadPassword("the two passwords differ")
    else:
        raise _BadPassword("give the password on standard input with --password-stdin")
    if len(password) < managers.MIN_PASSWORD:
        raise _BadPassword(f"a manager's password has at least {managers.MIN_PASSWORD} characters")
    return password


def _manager_add(args: Args) -> int:
    from .auth import SESSIONS
    from .ops import managers
    password = _password(args)
    created = _new_ledger_note(args.db)
    store = Store(args.db)
    if created or (store.created and engine.is_postgres(args.db)):
        print(f"created new ledger at {engine.shown(args.db)}", file=sys.stderr)
    try:
        managers.add_manager(store.db, args.login, password, SESSIONS[args.session], int(time.time()))
    finally:
        store.close()
    print(f"manager {args.login} ({args.session}) stored in {args.db}; any token it had before is revoked")
    return 0


def _manager_remove(args: Args) -> int:
    from .ops import managers
    store = Store(args.db, create=False)
    try:
        removed = managers.remove_manager(store.db, args.login)
    finally:
        store.close()
    if not removed:
        print(f"no manager {args.login} in {args.db}", file=sys.stderr)
        return 1
    print(f"manager {args.login} removed from {args.db}; its tokens are refused from now on")
    return 0


def _manager_list(args: Args) -> int:
    """The managers, removed ones too (never a password hash); read-only."""
    from .ops import status
    found = _read_only("read the managers of", args.db, status.managers)
    if args.format == "json":
        print(json.dumps(found))
        return 0
    rows = [("login", "session", "created", "removed")]
    rows += [(str(m["login"]), m["session"], _when(m["created"]), "yes" if m["removed"] else "no") for m in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _status(args: Args) -> int:
    """A read-only summary of the ledger (see server/ops/status.py); its last line is the head alone."""
    from .ops import status
    found = _read_only("read the status of", args.db, status.status)
    if args.format == "json":
        print(json.dumps(found))
    else:
        print("\n".join(status.text(found)))
    return 0


def _token(args: Args) -> int:
    from .auth import Tokens, load_secret
    from .ops import managers
    store = Store(args.db, create=False)
    try:
        manager = managers.get_manager(store.db, args.login)
        if manager is None:
            print(f"no manager {args.login} in {args.db}", file=sys.stderr)
            return 1
        token, _ = Tokens(load_secret(args.db, store.db)).issue(
            args.login, manager["session"], args.ttl, kv=manager["key_version"])
    finally:
        store.close()
    print(token)
    return 0


def _session_open(args: Args) -> int:
    from .ops import managers
    store = Store(args.db, create=False)
    try:
        sid = managers.open_game_session(store.db, args.login)
    except LookupError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        store.close()
    print(sid)
    return 0


def _open(args: Args, create: bool = False) -> Store:
    created = create and _new_ledger_note(args.db)
    store = Store(args.db, create=create)
    if created or (store.created and engine.is_postgres(args.db)):
        print(f"created new ledger at {engine.shown(args.db)}", file=sys.stderr)
    return store


def _settings(args: Args) -> str:
    shown = [args.settlement or "", "any currency" if args.currency == () else ",".join(args.currency or ()),
             {True: "may send promo_payout", False: "no promo_payout", None: ""}[args.promo]]
    return ", ".join(part for part in shown if part)


def _provider_add(args: Args) -> int:
    from .ops import providers
    store = _open(args, create=True)
    try:
        token = providers.add_provider(store.db, args.name, int(time.time()), args.settlement or "gamewise",
                                       args.currency or (), bool(args.promo))
    except providers.Exists as e:
        print(f"syncledger: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    args.settlement, args.currency, args.promo = args.settlement or "gamewise", args.currency or (), bool(args.promo)
    print(token, flush=True)
    print(f"provider {args.name} ({_settings(args)}) added to {engine.shown(args.db)}; its token, above, is shown "
          f"this once: give it to the provider (a running server takes it within a second)", file=sys.stderr)
    return 0


def _provider_rotate(args: Args) -> int:
    from .ops import providers
    store = _open(args)
    try:
        token = providers.rotate_provider(store.db, args.name)
    except providers.NoProvider:
        return _no_provider(args)
    finally:
        store.close()
    print(token, flush=True)
    print(f"provider {args.name} has a new token, above, shown this once; the one it had is refused from now on "
          f"(by a running server within a second)", file=sys.stderr)
    return 0


def _provider_remove(args: Args) -> int:
    from .ops import providers
    store = _open(args)
    try:
        providers.remove_provider(store.db, args.name, int(time.time()))
    except providers.NoProvider:
        return _no_provider(args)
    finally:
        store.close()
    print(f"provider {args.name} removed from {engine.shown(args.db)}; its token is refused from now on (by a "
          f"running server within a second); its transactions stay")
    return 0


def _provider_set(args: Args) -> int:
    if args.settlement is None and args.currency is None and args.promo is None:
        print("syncledger: nothing to change: give --settlement, --currency or --promo/--no-promo", file=sys.stderr)
        return 2
    from .ops import providers
    store = _open(args)
    try:
        now = providers.set_provider(store.db, args.name, args.settlement, args.currency, args.promo)
    except providers.NoProvider:
        return _no_provider(args)
    finally:
        store.close()
    args.settlement, args.promo = now["settlement"], bool(now["promo"])
    args.currency = tuple(c for c in now["currencies"].split(",") if c)
    print(f"provider {args.name} now: {_settings(args)} (a running server applies it to the calls that follow "
          f"within a second)")
    return 0


def _no_provider(args: Args) -> int:
    print(f"syncledger: no provider {args.name} in {engine.shown(args.db)}", file=sys.stderr)
    return 1


def _when(t: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def _provider_list(args: Args) -> int:
    from .ops import providers
    store = _open(args)
    try:
        found = providers.list_providers(store.db)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(found))
        return 0
    rows = [("name", "settlement", "currencies", "promo", "token", "created", "removed")]
    rows += [(p["name"], p["settlement"], ",".join(p["currencies"]) or "any", "yes" if p["promo"] else "no",
              "stored" if p["token_stored"] else "-", _when(p["created"]), _when(p["removed"])) for p in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


class _Unreadable(Exception):
    """A ledger file that verify or head cannot read (one line on stderr, exit 2)."""


def _read_only(what: str, path: str, fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(path, *args)
    except FileNotFoundError as e:
        raise _Unreadable(str(e)) from None
    except (OSError, ImportError, *engine.errors()) as e:  # (ImportError: psycopg is not installed)
        raise _Unreadable(f"cannot {what} {engine.shown(path)}: {engine.said(e)}") from None


def _verify(args: Args) -> int:
    """One line: ``ok: ...`` (exit 0) or ``FAILED: ...`` naming the first problem (exit 1); a file that is not a
    ledger it can read: one line on stderr, exit 2. Reads one snapshot, read-only: safe beside a live server."""
    report = _read_only("verify", args.db, verify_path, args.anchor)
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _head(args: Args) -> int:
    """Print the ledger's head ``SEQ:HASH`` (keep it elsewhere: ``verify --anchor`` detects a truncation)."""
    print(_read_only("read the head of", args.db, head_path))
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so that a half-written copy is removed


def _backup(args: Args) -> int:
    from .ops import backup
    before = {signum: signal.signal(signum, _interrupted) for signum in (signal.SIGTERM, signal.SIGHUP)}
    folder = os.path.isdir(args.to)
    if args.keep is not None and not folder:
        raise OpsError(f"--keep needs --to to be a folder of backups ({args.to} is not one)")
    try:
        copied = backup.backup(args.db, backup.backup_path(args.db, args.to) if folder else args.to)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    print(f"backed up {args.db} to {copied.path}: {copied.bytes} bytes in {copied.seconds:.1f} s, head {copied.head} "
          f"({copied.report})")
    if args.keep is not None:
        for removed in backup.prune(args.db, args.to, args.keep):
            print(f"removed the older backup {removed}")
    return 0


def _restore(args: Args) -> int:
    from .ops import backup
    source = getattr(args, "from")  # (named so for its variable, SYNCLEDGER_RESTORE_FROM)
    restored = backup.restore(source, args.db, args.force)
    kept = "" if restored.kept is None else f"; the ledger it replaced is kept as {restored.kept}"
    if restored.lost is None:
        kept = f"; the ledger it replaced could not be read: it is kept as it was, as {restored.kept}"
    elif restored.lost:
        kept = f"; {restored.lost} events rolled back: they are in the ledger it replaced, kept as {restored.kept}"
    print(f"restored {source} to {restored.path}: head {restored.head} ({restored.report}){kept}")
    return 0


def _migrate(args: Args) -> int:
    from .auth import key_path
    from .ops import migrate
    source = getattr(args, "from")  # (named so for its variable, SYNCLEDGER_MIGRATE_FROM)
    done = migrate.migrate(source, args.to)
    copied = ", ".join(f"{n:,} {table}" for table, n in done.rows.items())
    print(f"migrated {source} to {engine.shown(args.to)}: {copied}; both verify, head {done.head}")
    print(f"tokens stay valid if the server signs with the same secret: SYNCLEDGER_SECRET=\"$(cat "
          f"{key_path(source)})\" (or the SYNCLEDGER_SECRET you served it with), the same on every node")
    return 0


def _export(args: Args) -> int:
    """A closed pipe (``| head``) ends it quietly with status 141 (128 + SIGPIPE, as a program SIGPIPE ends);
    an output that cannot be written (a full disk) is one line on stderr, exit 2."""
    try:
        export.export(args.db, args.what, sys.stdout, args.format, args.since)
        sys.stdout.flush()
    except OSError as e:
        # What is still buffered can never be written: standard output becomes /dev/null, so that Python's flush
        # at exit has nothing to complain about (the recipe of the signal module's documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        if isinstance(e, BrokenPipeError):
            return 128 + signal.SIGPIPE
        raise OpsError(f"cannot write the export: {e.strerror}; the export is incomplete") from None
    return 0


def _anchor(text: str) -> str:
    parse_anchor(text)  # (ValueError saying why not)
    return text


async def _serve_until_signalled(config: Config, stopped: list[bool], created: bool = False,
                                 started: list[bool] | None = None) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP, then shut down cleanly (``stopped`` is set once that is done). A
    SIGHUP stops it as SIGTERM does (the terminal it ran in has gone; its log is stderr, which has nothing to
    reopen): it never kills the server midway."""
    import trio

    from .app import serve
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, config)
            # What exists after start-up lives for the whole run: keep the collector off it, and
            # collect young objects less often (full collections paused the server for 16-30 ms).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            host = config.host
            ports = server.ports
            if created or (server.store.created and engine.is_postgres(config.db)):
                print(f"created new ledger at {engine.shown(config.db)}", file=sys.stderr, flush=True)
            admin = f" admin={config.admin_host}:{ports.admin}" if ports.admin is not None else ""
            print(f"listening tcp={host}:{ports.tcp} ws={host}:{ports.ws} wallet={host}:{ports.wallet}{admin}",
                  flush=True)
            if started is not None:
                started.append(True)
            async for _ in signals:
                await server.shutdown()
                break
        stopped.append(True)


def _serve(config: Config) -> int:
    from . import logs
    logs.configure(config.log_format, config.log_level)
    created = _new_ledger_note(config.db)
    made = _files_made_by_a_start(config.db) if created else []
    started: list[bool] = []
    try:
        return _run_serve(config, created, started)
    finally:
        if not started:  # it never listened: nothing was served from the ledger it created
            _remove(made)


def _run_serve(config: Config, created: bool, started: list[bool]) -> int:
    import trio

    from .app import FailStop
    stopped: list[bool] = []
    try:
        trio.run(_serve_until_signalled, config, stopped, created, started)
    except KeyboardInterrupt:
        # A signal that came while shutting down is re-delivered when the receiver closes; the server
        # has stopped cleanly by then, so it changes nothing. Before that, it is a real interrupt.
        if not stopped:
            raise
    except BaseExceptionGroup as group:  # raised in the server's nursery: what matters is what it holds
        failed, rest = group.split(FailStop)
        if failed is not None and rest is None:
            return FAIL_STOP_EXIT  # its CRITICAL line is already logged
        unusable, rest = group.split(_unusable())
        if unusable is not None and rest is None:
            print(f"syncledger: {_first(unusable)}", file=sys.stderr)
            return 2
        raise
    return 0


def _files_made_by_a_start(db: str) -> list[str]:
    """What a start that creates the SQLite ledger ``db`` makes beside it and is not there yet: removed again if
    the start fails before it listens (a busy port), so that the next start creates the ledger anew and says so.
    A file that was there before is never in the list (the ledger itself is only listed when it did not exist)."""
    real = os.path.realpath(db)
    names = [db] + [real + suffix for suffix in ("-wal", "-shm", "-journal", ".key", ".lock")]
    return [name for name in names if not os.path.lexists(name)]


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _first(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


# ---- the options


def _default_text(option: Any, value: Any) -> str | None:
    """A Config field's default as it would be given (``60``, not ``60.0``): the click option's default, which
    the option's own parse then reads, as it reads what a user gives."""
    if value is None:
        return None
    value = option.text(value)
    return str(int(value) if isinstance(value, float) and value.is_integer() else value)


def _config_option(name: str) -> Callable[[Callable], Callable]:
    """The option of the Config field ``name`` (server/config.py): its flag, its help, its environment variable
    ``SYNCLEDGER_<OPTION>`` (the only one: not one named from the command), its default."""
    f, given = next((f, given) for f, given in OPTIONS if f.name == name)
    flag, common = given.name(f), {"help": given.help, "envvar": given.envvar(f), "allow_from_autoenv": False}
    if given.kind == "boolean":
        return option(f"--{flag}/--no-{flag}", f.name, default=f.default, **common)
    kind = (click.Choice(given.choices) if given.choices else Parsed(given.parse) if given.parse else
            click.Path() if given.path else click.STRING)
    default = _default_text(given, f.default)
    return option(f"--{flag}", f.name, type=kind, default=default, show_default=bool(default),
                  metavar=given.metavar, **common)


def _read_config(ctx: click.Context, param: click.Parameter, path: str | None) -> None:
    """``--config FILE``: its options become the defaults of this command's options (the command line and the
    environment still win); its game providers are kept for the Config."""
    if path is not None:
        found = from_toml(path)
        ctx.meta["syncledger.providers"] = found.pop("providers", ())
        ctx.default_map = found


def _config_options(command: Callable) -> Callable:
    """``command`` with ``--config FILE`` and every option of the Config, in the Config's order."""
    for f, _ in reversed(OPTIONS):
        command = _config_option(f.name)(command)
    return option("--config", type=click.Path(dir_okay=False), metavar="FILE", is_eager=True, expose_value=False,
                  callback=_read_config, envvar="SYNCLEDGER_CONFIG", allow_from_autoenv=False,
                  help="a TOML file of these options (tcp-port = 7400); an option given on the command line or in "
                       "the environment wins over it")(command)


def _config(ctx: click.Context, values: dict[str, Any]) -> Config:
    """The Config of ``serve`` and ``config show`` from their options' values and the config file's providers."""
    return Config(**values, providers=ctx.meta.get("syncledger.providers", ()))


_db = _config_option("db")  # every command's --db is serve's (SYNCLEDGER_DB too)
_LOGIN = Parsed(int_in(1, MAX_ID, "a login"), "login")  # as the schema's INTEGER and the TCP API take them
_login = option("--login", type=_LOGIN, required=True, help="the manager's login")
_name = option("--name", type=Parsed(provider_name), required=True, metavar="NAME",
               help="the provider's name: 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit")
_settlement = option("--settlement", type=click.Choice(SETTLEMENTS), default=None,
                     help="gamewise: one credit settles its round (a new provider's default); mixed: each "
                          "credit or cancel settles the debit its refId names")
_currency = option("--currency", type=Parsed(currencies), default=None, metavar="CODES",
                   help="the currencies it may use, e.g. EUR,USD ('': any, a new provider's default)")


def _format(*choices: str) -> Callable[[Callable], Callable]:
    return option("--format", type=click.Choice(choices), default=choices[0], show_default=True,
                  help="how the answer is printed")


# ---- the commands


class _Group(click.Group):
    """click's group, its commands listed in the order they are defined; a missing command is refused as a bad
    flag is (not answered with the help)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, no_args_is_help=False, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _command(group: click.Group, name: str, run: Callable[[Args], int], *options: Callable[[Callable], Callable],
             short_help: str, help: str | None = None) -> None:
    """``run(args)`` as the command ``name`` of ``group``, its options in the order given; its help page opens
    with ``help`` (by default, ``short_help``: what ``syncledger --help`` lists)."""
    callback = runs(run)
    for option in reversed(options):
        callback = option(callback)
    group.command(name, short_help=short_help, help=help or f"{short_help[0].upper()}{short_help[1:]}.")(callback)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        print(f"syncledger {version()}")
        ctx.exit()


@click.group("syncledger", cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                               "auto_envvar_prefix": "SYNCLEDGER"},
             epilog="Shell completion: eval \"$(_SYNCLEDGER_COMPLETE=bash_source syncledger)\" in ~/.bashrc "
                    "(zsh_source in ~/.zshrc; fish: _SYNCLEDGER_COMPLETE=fish_source syncledger | source).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              allow_from_autoenv=False, help="Show the version and exit.")
def syncledger() -> None:
    """A wallet-ledger server (serve) and the commands on its ledger. Each option of serve is also an
    environment variable, SYNCLEDGER_<OPTION> (SYNCLEDGER_TCP_PORT=7400; SYNCLEDGER_DB for every command's
    --db), and a key of a --config TOML file: the command line wins over the environment, which wins over the
    file. A command's own options: syncledger COMMAND --help, each with its variable, named after the command
    (SYNCLEDGER_BACKUP_KEEP for backup --keep)."""


@syncledger.command("serve", short_help="run the server (Ctrl-C, SIGTERM or SIGHUP stops it cleanly)")
@_config_options
@click.pass_context
def _serve_command(ctx: click.Context, **values: Any) -> int:
    """Run the server until Ctrl-C, SIGTERM or SIGHUP, which stop it cleanly (exit 0). A refused start (a bad
    option, a busy port, a locked ledger) is one line on stderr, exit 2; a fail-stop, exit 3."""
    return _serve(_config(ctx, values))


@syncledger.group("config", cls=_Group, short_help="the effective configuration")
def _config_group() -> None:
    """The effective configuration."""


@_config_group.command("show", short_help="print what serve would run with (file, environment, then flags), "
                                          "secrets masked")
@_config_options
@click.pass_context
def _config_show(ctx: click.Context, **values: Any) -> int:
    """Print the options serve would run with, as TOML (the file's, then the environment's, then the command
    line's); of the secrets in the environment, only whether each is set."""
    config = _config(ctx, values)
    for f, option in sorted(OPTIONS, key=lambda fo: fo[1].name(fo[0])):
        value = getattr(config, f.name)
        if value is None:
            continue
        value = option.text(value)
        print(f"{option.name(f)} = {json.dumps(engine.shown(value) if f.name == 'db' else value)}")
    for name in ("SYNCLEDGER_SECRET", "SYNCLEDGER_WALLET_TOKEN"):
        print(f"# {name}: {'set (hidden)' if os.environ.get(name) else 'not set'}")
    for p in config.providers:
        print(f"\n[providers.{p.name}]\ntoken_env = {json.dumps(p.token_env)}  # "
              f"{'set (hidden)' if os.environ.get(p.token_env) else 'not set'}\nsettlement = {json.dumps(p.settlement)}"
              f"\ncurrencies = {json.dumps(','.join(p.currencies))}\npromo = {json.dumps(p.promo)}")
    return 0


@syncledger.group("manager", cls=_Group, short_help="manage manager accounts")
def _manager() -> None:
    """Manager accounts: the logins of the manager TCP API."""


_command(_manager, "add", _manager_add, _db, _login,
         option("--password-stdin", is_flag=True, help="read the password from standard input"),
         option("--password", default=None, metavar="PASSWORD",
                help="the password (on the command line, other users see it in ps: prefer --password-stdin, the "
                     "prompt or this variable)"),
         option("--session", type=click.Choice(["MANAGER", "DEALER", "ADMIN"]), default="MANAGER",
                show_default=True, help="what the manager may do"),
         short_help="store a manager and its password",
         help="Store a manager and its password (from standard input with --password-stdin, else asked twice on "
              "a terminal); any token it had before is revoked. A ledger that does not exist is created.")
_command(_manager, "remove", _manager_remove, _db, _login,
         short_help="remove a manager; its tokens are refused at once")
_command(_manager, "list", _manager_list, _db, _format("text", "json"),
         short_help="the managers, removed ones too (never a password hash)")


@syncledger.group("provider", cls=_Group, short_help="game providers of the wallet API (each with its own token)")
def _provider() -> None:
    """Game providers of the wallet API, each with its own token (a running server takes a change within a
    second)."""


_command(_provider, "add", _provider_add, _db, _name, _settlement, _currency,
         option("--promo", is_flag=True, help="it may send promo_payout"),
         short_help="store a provider; prints its token once")
_command(_provider, "list", _provider_list, _db, _format("text", "json"),
         short_help="the providers, removed ones too (never a token)")
_command(_provider, "rotate", _provider_rotate, _db, _name,
         short_help="a new token for a provider, printed once; the old one is refused")
_command(_provider, "remove", _provider_remove, _db, _name,
         short_help="remove a provider: its token is refused; its transactions stay")
_command(_provider, "set", _provider_set, _db, _name, _settlement, _currency,
         option("--promo/--no-promo", default=None, help="whether it may send promo_payout"),
         short_help="change a provider's settings (for the calls that follow)")

_command(syncledger, "token", _token, _db, _login,
         option("--ttl", type=Parsed(int_in(1, MAX_TTL, "a number of seconds")), default=None,
                metavar="SECONDS", help=f"how long the token is good for: from 1 to {MAX_TTL} (366 days; "
                                        "default 24 h)"),
         short_help="print a token for a stored manager")


@syncledger.group("session", cls=_Group, short_help="game sessions for the wallet API")
def _session() -> None:
    """Game sessions (sids) for the wallet API."""


_command(_session, "open", _session_open, _db,
         option("--login", type=_LOGIN, required=True, help="the account's login"),
         short_help="print a new sid for an account")

_command(syncledger, "verify", _verify, _db,
         option("--anchor", type=Parsed(_anchor), default=None, metavar="SEQ:HASH",
                help="a head printed earlier by `syncledger head`: fail if that event is no longer in the "
                     "chain (the newest rows removed, or the ledger rewritten)"),
         short_help="check the hash chains, that totals equal their rows, keys and triggers (read-only, one "
                    "snapshot: safe beside a live server)",
         help="Check the hash chains, that totals equal their rows, keys and triggers: one line, ok (exit 0) or "
              "FAILED naming the first problem (exit 1). Read-only, one snapshot: safe beside a live server.")
_command(syncledger, "backup", _backup, _db,
         option("--to", required=True, type=click.Path(), metavar="FILE|FOLDER",
                help="the copy (never overwritten); a folder: a copy named NAME.backup-TIME.sqlite in it"),
         option("--keep", type=Parsed(int_in(1, 100_000, "a number of backups")), default=None, metavar="N",
                help="after the backup, keep the newest N backups of this ledger in the --to folder and "
                     "remove the older ones (only files named as this command names them)"),
         short_help="a consistent, verified copy of the ledger, safe while the server runs")
_command(syncledger, "restore", _restore,
         option("--from", "from", required=True, type=click.Path(dir_okay=False), metavar="FILE",
                help="the backup"),
         _db,
         option("--force", is_flag=True, help="restore even a backup that lacks events the ledger holds (they "
                                              "are rolled back), or over a ledger that cannot be read; the "
                                              "ledger replaced is kept beside it, whole"),
         short_help="put a verified backup in place of a ledger no server holds")
_command(syncledger, "export", _export,
         click.argument("what", type=click.Choice(sorted(export.EXPORTS)), metavar="WHAT"), _db,
         option("--format", type=click.Choice(export.FORMATS), default="ndjson", show_default=True,
                help="how the rows are written"),
         option("--since", type=Parsed(int_in(0, MAX_ID, "an event seq")), default=None, metavar="SEQ",
                help="only what came after this event seq"),
         short_help="stream a table as CSV, JSON or NDJSON (read-only, one snapshot)",
         help="Stream one table of the ledger, WHAT: accounts, events, finance or wallet, as CSV, JSON or NDJSON, "
              "money in integer micro-units, from one read-only snapshot.")
_command(syncledger, "migrate", _migrate,
         option("--from", "from", required=True, type=click.Path(dir_okay=False), metavar="PATH",
                help="the SQLite ledger file"),
         option("--to", required=True, metavar="URL", help="postgresql://... (a database or schema with no "
                                                           "ledger)"),
         short_help="copy an SQLite ledger no server holds into a new PostgreSQL ledger, verified on both sides")

reports.register(syncledger, _db, _LOGIN)  # rounds, report, reconcile: a game provider's (server/ops/reports.py)

_command(syncledger, "head", _head, _db,
         short_help="print the ledger's head SEQ:HASH (keep it elsewhere, for verify --anchor)")
_command(syncledger, "status", _status, _db, _format("text", "json"),
         short_help="a read-only summary: ledger, modes, schema, head, counts, lock holder, secrets set (names "
                    "only), last backup; its last line is the head alone")


def main(argv: list[str] | None = None) -> int:
    """Run ``syncledger ARGV`` and return its exit status: bad input is one line on stderr, 2, never a traceback.
    With ``_SYNCLEDGER_COMPLETE`` set, it answers the shell's completion instead (click's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:
        from click.shell_completion import shell_complete
        return shell_complete(syncledger, {}, "syncledger", COMPLETE_VAR, instruction)
    try:
        with syncledger.make_context("syncledger", argv) as ctx:
            return syncledger.invoke(ctx)
    except click.exceptions.Exit as e:  # --help, --version
        return e.exit_code
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "syncledger"
        print(f"{where}: {' '.join(e.format_message().split())} (see {where} --help)", file=sys.stderr)
        return 2
    except (_Unreadable, _BadPassword, OpsError, ConfigError, SchemaError, LedgerOpenError) as e:
        print(f"syncledger: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not isinstance(e, _unusable()):
            raise
        print(f"syncledger: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
