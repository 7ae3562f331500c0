"""The ``syncledger`` command: serve, manager add/remove, provider add/list/rotate/remove/set, token, session
open, verify, head, backup, restore, export, migrate."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import os
import signal
import sys
import time
from typing import Any, Callable, NoReturn

import trio

from syncledger.ledger import Store, engine, head_path, parse_anchor, verify_path
from syncledger.ledger.migrations import SchemaError
from syncledger.ledger.store import MAX_ID, LedgerOpenError

from . import auth, logs, version
from .ops import OpsError, arg_type, backup, export, managers, migrate, providers, status
from .ops import reports  # rounds, report, reconcile
from .app import FailStop, ProvidersError, TlsError, serve
from .auth import SESSIONS, SecretExposed, SecretMissing, Tokens
from .config import DEFAULT_DB, OPTIONS, SETTLEMENTS, Config, ConfigError, currencies, from_toml, int_in, provider_name
from .core.lockfile import LedgerLocked
from .listen import ListenError

FAIL_STOP_EXIT = 3  # the server stopped because it could not know what the ledger file holds
MAX_TTL = 366 * 24 * 3600  # the longest a token from `syncledger token` may last (a year, leap day included)
# one line on stderr, exit 2
UNUSABLE = (SchemaError, LedgerOpenError, LedgerLocked, SecretExposed, SecretMissing, TlsError, ListenError,
            ProvidersError)


def _new_ledger_note(path: str) -> bool:
    """Will opening ``path`` create a ledger? (said on stderr, so that a mistyped --db is noticed; a PostgreSQL
    database: the store says whether it made the schema)"""
    return path != ":memory:" and not engine.is_postgres(path) and not os.path.exists(path)


class _BadPassword(Exception):
    """No usable password was given (one line on stderr, exit 2)."""


def _password(args: argparse.Namespace) -> str:
    """From standard input (``--password-stdin``), a prompt, or (discouraged: ``ps`` shows it) ``--password``."""
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


def _manager_add(args: argparse.Namespace) -> int:
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


def _manager_remove(args: argparse.Namespace) -> int:
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


def _manager_list(args: argparse.Namespace) -> int:
    """The managers, removed ones too (never a password hash); read-only."""
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


def _status(args: argparse.Namespace) -> int:
    """A read-only summary of the ledger (see server/ops/status.py); its last line is the head alone."""
    found = _read_only("read the status of", args.db, status.status)
    if args.format == "json":
        print(json.dumps(found))
    else:
        print("\n".join(status.text(found)))
    return 0


def _token(args: argparse.Namespace) -> int:
    store = Store(args.db, create=False)
    try:
        manager = managers.get_manager(store.db, args.login)
        if manager is None:
            print(f"no manager {args.login} in {args.db}", file=sys.stderr)
            return 1
        token, _ = Tokens(auth.load_secret(args.db, store.db)).issue(
            args.login, manager["session"], args.ttl, kv=manager["key_version"])
    finally:
        store.close()
    print(token)
    return 0


def _session_open(args: argparse.Namespace) -> int:
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


def _open(args: argparse.Namespace, create: bool = False) -> Store:
    created = create and _new_ledger_note(args.db)
    store = Store(args.db, create=create)
    if created or (store.created and engine.is_postgres(args.db)):
        print(f"created new ledger at {engine.shown(args.db)}", file=sys.stderr)
    return store


def _settings(args: argparse.Namespace) -> str:
    shown = [args.settlement or "", "any currency" if args.currency == () else ",".join(args.currency or ()),
             {True: "may send promo_payout", False: "no promo_payout", None: ""}[args.promo]]
    return ", ".join(part for part in shown if part)


def _provider_add(args: argparse.Namespace) -> int:
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


def _provider_rotate(args: argparse.Namespace) -> int:
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


def _provider_remove(args: argparse.Namespace) -> int:
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


def _provider_set(args: argparse.Namespace) -> int:
    if args.settlement is None and args.currency is None and args.promo is None:
        print("syncledger: nothing to change: give --settlement, --currency or --promo/--no-promo", file=sys.stderr)
        return 2
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


def _no_provider(args: argparse.Namespace) -> int:
    print(f"syncledger: no provider {args.name} in {engine.shown(args.db)}", file=sys.stderr)
    return 1


def _when(t: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def _provider_list(args: argparse.Namespace) -> int:
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


def _verify(args: argparse.Namespace) -> int:
    """One line: ``ok: ...`` (exit 0) or ``FAILED: ...`` naming the first problem (exit 1); a file that is not a
    ledger it can read: one line on stderr, exit 2. Reads one snapshot, read-only: safe beside a live server."""
    report = _read_only("verify", args.db, verify_path, args.anchor)
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _head(args: argparse.Namespace) -> int:
    """Print the ledger's head ``SEQ:HASH`` (keep it elsewhere: ``verify --anchor`` detects a truncation)."""
    print(_read_only("read the head of", args.db, head_path))
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so that a half-written copy is removed


def _backup(args: argparse.Namespace) -> int:
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


def _restore(args: argparse.Namespace) -> int:
    restored = backup.restore(args.source, args.db, args.force)
    kept = "" if restored.kept is None else f"; the ledger it replaced is kept as {restored.kept}"
    if restored.lost is None:
        kept = f"; the ledger it replaced could not be read: it is kept as it was, as {restored.kept}"
    elif restored.lost:
        kept = f"; {restored.lost} events rolled back: they are in the ledger it replaced, kept as {restored.kept}"
    print(f"restored {args.source} to {restored.path}: head {restored.head} ({restored.report}){kept}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    done = migrate.migrate(args.source, args.to)
    copied = ", ".join(f"{n:,} {table}" for table, n in done.rows.items())
    print(f"migrated {args.source} to {engine.shown(args.to)}: {copied}; both verify, head {done.head}")
    print(f"tokens stay valid if the server signs with the same secret: SYNCLEDGER_SECRET=\"$(cat "
          f"{auth.key_path(args.source)})\" (or the SYNCLEDGER_SECRET you served it with), the same on every node")
    return 0


def _export(args: argparse.Namespace) -> int:
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
    try:
        parse_anchor(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


async def _serve_until_signalled(config: Config, stopped: list[bool], created: bool = False,
                                 started: list[bool] | None = None) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP, then shut down cleanly (``stopped`` is set once that is done). A
    SIGHUP stops it as SIGTERM does (the terminal it ran in has gone; its log is stderr, which has nothing to
    reopen): it never kills the server midway."""
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


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_format, args.log_level)
    config = Config(**{f.name: getattr(args, f.name) for f, _ in OPTIONS}, providers=getattr(args, "providers", ()))
    created = _new_ledger_note(args.db)
    made = _files_made_by_a_start(args.db) if created else []
    started: list[bool] = []
    try:
        return _run_serve(config, created, started)
    finally:
        if not started:  # it never listened: nothing was served from the ledger it created
            _remove(made)


def _run_serve(config: Config, created: bool, started: list[bool]) -> int:
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
        unusable, rest = group.split(UNUSABLE)
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


_login = arg_type(int_in(1, MAX_ID, "a login"))  # as the schema's INTEGER and the TCP API take them


def _db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help=f"the ledger (default {DEFAULT_DB}; or a postgresql:// URL)")


def _serve_options(p: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (and of ``config show``), made from the Config's; each can also come from
    ``--config FILE``."""
    p.add_argument("--config", metavar="FILE", help="a TOML file of these options (flags given here override it)")
    for f, option in OPTIONS:
        if option.kind == "boolean":
            p.add_argument(f"--{option.name(f)}", dest=f.name, action="store_true", help=option.help)
            continue
        p.add_argument(f"--{option.name(f)}", dest=f.name, default=f.default, help=option.help,
                       type=arg_type(option.parse) if option.parse else None, metavar=option.metavar,
                       choices=option.choices)


def _apply_config(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make the options in ``--config FILE`` the defaults of ``p``; flags on the command line still win."""
    known, _ = p.parse_known_args(argv)
    if getattr(known, "config", None):
        p.set_defaults(**from_toml(known.config))


def _config_show(args: argparse.Namespace) -> int:
    """The effective options as TOML, and whether the secrets from the environment are set (never them)."""
    for f, option in sorted(OPTIONS, key=lambda fo: fo[1].name(fo[0])):
        value = getattr(args, f.name)
        if value is None:
            continue
        value = option.text(value)
        print(f"{option.name(f)} = {json.dumps(engine.shown(value) if f.name == 'db' else value)}")
    for name in ("SYNCLEDGER_SECRET", "SYNCLEDGER_WALLET_TOKEN"):
        print(f"# {name}: {'set (hidden)' if os.environ.get(name) else 'not set'}")
    for p in getattr(args, "providers", ()):
        print(f"\n[providers.{p.name}]\ntoken_env = {json.dumps(p.token_env)}  # "
              f"{'set (hidden)' if os.environ.get(p.token_env) else 'not set'}\nsettlement = {json.dumps(p.settlement)}"
              f"\ncurrencies = {json.dumps(','.join(p.currencies))}\npromo = {json.dumps(p.promo)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's, but a bad flag is one line on stderr and exit 2, as every other refusal (not the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="syncledger", description=__doc__)
    p.add_argument("--version", action="version", version=f"syncledger {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    srv = sub.add_parser("serve", help="run the server (Ctrl-C, SIGTERM or SIGHUP stops it cleanly)")
    _serve_options(srv)
    srv.set_defaults(run=_serve)
    config = sub.add_parser("config", help="the effective configuration").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="print what serve would run with (file, then flags), secrets masked")
    _serve_options(show)
    show.set_defaults(run=_config_show)
    p.serve_options = {"serve": srv, "config show": show}  # type: ignore[attr-defined]  # for --config

    manager = sub.add_parser("manager", help="manage manager accounts").add_subparsers(dest="action", required=True)
    add = manager.add_parser("add", help="store a manager and its password")
    _db_option(add)
    add.add_argument("--login", type=_login, required=True)
    given = add.add_mutually_exclusive_group()
    given.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    given.add_argument("--password", help="the password on the command line (visible to other users in ps: "
                                          "prefer --password-stdin or the prompt)")
    add.add_argument("--session", choices=["MANAGER", "DEALER", "ADMIN"], default="MANAGER")
    add.set_defaults(run=_manager_add)
    remove = manager.add_parser("remove", help="remove a manager; its tokens are refused at once")
    _db_option(remove)
    remove.add_argument("--login", type=_login, required=True)
    remove.set_defaults(run=_manager_remove)
    mlist = manager.add_parser("list", help="the managers, removed ones too (never a password hash)")
    _db_option(mlist)
    mlist.add_argument("--format", choices=("text", "json"), default="text")
    mlist.set_defaults(run=_manager_list)

    provider = sub.add_parser("provider", help="game providers of the wallet API (each with its own token)"
                              ).add_subparsers(dest="action", required=True)
    name = {"type": arg_type(provider_name), "required": True, "metavar": "NAME",
            "help": "1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit"}
    settlement = {"choices": SETTLEMENTS, "help": "gamewise: one credit settles its round (a new provider's "
                                                  "default); mixed: each credit or cancel settles the debit its "
                                                  "refId names"}
    currency = {"type": arg_type(currencies), "metavar": "CODES",
                "help": "the currencies it may use, e.g. EUR,USD ('': any, a new provider's default)"}
    padd = provider.add_parser("add", help="store a provider; prints its token once")
    _db_option(padd)
    padd.add_argument("--name", **name)
    padd.add_argument("--settlement", **settlement)
    padd.add_argument("--currency", **currency)
    padd.add_argument("--promo", action="store_true", default=None, help="it may send promo_payout")
    padd.set_defaults(run=_provider_add)
    plist = provider.add_parser("list", help="the providers, removed ones too (never a token)")
    _db_option(plist)
    plist.add_argument("--format", choices=("text", "json"), default="text")
    plist.set_defaults(run=_provider_list)
    prot = provider.add_parser("rotate", help="a new token for a provider, printed once; the old one is refused")
    _db_option(prot)
    prot.add_argument("--name", **name)
    prot.set_defaults(run=_provider_rotate)
    prem = provider.add_parser("remove", help="remove a provider: its token is refused; its transactions stay")
    _db_option(prem)
    prem.add_argument("--name", **name)
    prem.set_defaults(run=_provider_remove)
    pset = provider.add_parser("set", help="change a provider's settings (for the calls that follow)")
    _db_option(pset)
    pset.add_argument("--name", **name)
    pset.add_argument("--settlement", **settlement)
    pset.add_argument("--currency", **currency)
    pset.add_argument("--promo", action=argparse.BooleanOptionalAction, default=None,
                      help="whether it may send promo_payout")
    pset.set_defaults(run=_provider_set)

    token = sub.add_parser("token", help="print a token for a stored manager")
    _db_option(token)
    token.add_argument("--login", type=_login, required=True)
    token.add_argument("--ttl", type=arg_type(int_in(1, MAX_TTL, "a number of seconds")), default=None, metavar="SECONDS",
                       help=f"how long the token is good for: from 1 to {MAX_TTL} (366 days; default 24 h)")
    token.set_defaults(run=_token)

    session = sub.add_parser("session", help="game sessions for the wallet API").add_subparsers(
        dest="action", required=True)
    opened = session.add_parser("open", help="print a new sid for an account")
    _db_option(opened)
    opened.add_argument("--login", type=_login, required=True)
    opened.set_defaults(run=_session_open)

    ver = sub.add_parser("verify", help="check the hash chains, that totals equal their rows, keys and triggers "
                                        "(read-only, one snapshot: safe beside a live server)")
    _db_option(ver)
    ver.add_argument("--anchor", type=_anchor, default=None, metavar="SEQ:HASH",
                     help="a head printed earlier by `syncledger head`: fail if that event is no longer in the "
                          "chain (the newest rows removed, or the ledger rewritten)")
    ver.set_defaults(run=_verify)

    bk = sub.add_parser("backup", help="a consistent, verified copy of the ledger, safe while the server runs")
    _db_option(bk)
    bk.add_argument("--to", required=True, metavar="FILE|FOLDER",
                    help="the copy (never overwritten); a folder: a copy named NAME.backup-TIME.sqlite in it")
    bk.add_argument("--keep", type=arg_type(int_in(1, 100_000, "--keep")), default=None, metavar="N",
                    help="after the backup, keep the newest N backups of this ledger in the --to folder and remove "
                         "the older ones (only files named as this command names them)")
    bk.set_defaults(run=_backup)
    rs = sub.add_parser("restore", help="put a verified backup in place of a ledger no server holds")
    rs.add_argument("--from", dest="source", required=True, metavar="FILE")
    _db_option(rs)
    rs.add_argument("--force", action="store_true",
                    help="restore even a backup that lacks events the ledger holds (they are rolled back), or over "
                         "a ledger that cannot be read; the ledger replaced is kept beside it, whole")
    rs.set_defaults(run=_restore)
    ex = sub.add_parser("export", help="stream a table as CSV, JSON or NDJSON (read-only, one snapshot)")
    ex.add_argument("what", choices=sorted(export.EXPORTS))
    _db_option(ex)
    ex.add_argument("--format", choices=export.FORMATS, default="ndjson")
    ex.add_argument("--since", type=arg_type(int_in(0, MAX_ID, "an event seq")), default=None, metavar="SEQ",
                    help="only what came after this event seq")
    ex.set_defaults(run=_export)

    mg = sub.add_parser("migrate", help="copy an SQLite ledger no server holds into a new PostgreSQL ledger, "
                                        "verified on both sides")
    mg.add_argument("--from", dest="source", required=True, metavar="PATH", help="the SQLite ledger file")
    mg.add_argument("--to", required=True, metavar="URL", help="postgresql://... (a database or schema with no ledger)")
    mg.set_defaults(run=_migrate)

    reports.register(sub, _db_option, _login)  # rounds, report, reconcile: a game provider's (server/ops/reports.py)

    hd = sub.add_parser("head", help="print the ledger's head SEQ:HASH (keep it elsewhere, for verify --anchor)")
    _db_option(hd)
    hd.set_defaults(run=_head)
    st = sub.add_parser("status", help="a read-only summary: ledger, modes, schema, head, counts, lock holder, "
                                       "secrets set (names only); its last line is the head alone")
    _db_option(st)
    st.add_argument("--format", choices=("text", "json"), default="text")
    st.set_defaults(run=_status)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    try:
        if argv[:1] == ["serve"]:
            _apply_config(p.serve_options["serve"], argv[1:])  # type: ignore[attr-defined]
        elif argv[:2] == ["config", "show"]:
            _apply_config(p.serve_options["config show"], argv[2:])  # type: ignore[attr-defined]
        args = p.parse_args(argv)
        return args.run(args)
    except (*UNUSABLE, _Unreadable, _BadPassword, OpsError, ConfigError, migrate.MigrateError) as e:  # one line, not a traceback
        print(f"syncledger: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
