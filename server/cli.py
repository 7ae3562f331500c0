"""The ``syncledger`` command: serve, manager add/remove, token, session open, verify, head, backup, restore,
export, migrate."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import math
import os
import signal
import sys
import time
import tomllib
from typing import Callable, NoReturn

import trio

from syncledger.ledger import Store, engine, head_path, parse_anchor, verify_path
from syncledger.ledger.migrations import SchemaError
from syncledger.ledger.store import MAX_ID, LedgerOpenError

from . import admin, auth, logs, migrate, ops
from .app import Config, FailStop, TlsError, serve
from .auth import SESSIONS, SecretExposed, SecretMissing, Tokens
from .core.lockfile import LedgerLocked
from .listen import ListenError

FAIL_STOP_EXIT = 3  # the server stopped because it could not know what the ledger file holds
MAX_TTL = 366 * 24 * 3600  # the longest a token from `syncledger token` may last (a year, leap day included)
# one line on stderr, exit 2
UNUSABLE = (SchemaError, LedgerOpenError, LedgerLocked, SecretExposed, SecretMissing, TlsError, ListenError)


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
    if len(password) < admin.MIN_PASSWORD:
        raise _BadPassword(f"a manager's password has at least {admin.MIN_PASSWORD} characters")
    return password


def _manager_add(args: argparse.Namespace) -> int:
    password = _password(args)
    created = _new_ledger_note(args.db)
    store = Store(args.db)
    if created or (store.created and engine.is_postgres(args.db)):
        print(f"created new ledger at {engine.shown(args.db)}", file=sys.stderr)
    try:
        admin.add_manager(store.db, args.login, password, SESSIONS[args.session], int(time.time()))
    finally:
        store.close()
    print(f"manager {args.login} ({args.session}) stored in {args.db}; any token it had before is revoked")
    return 0


def _manager_remove(args: argparse.Namespace) -> int:
    store = Store(args.db, create=False)
    try:
        removed = admin.remove_manager(store.db, args.login)
    finally:
        store.close()
    if not removed:
        print(f"no manager {args.login} in {args.db}", file=sys.stderr)
        return 1
    print(f"manager {args.login} removed from {args.db}; its tokens are refused from now on")
    return 0


def _token(args: argparse.Namespace) -> int:
    store = Store(args.db, create=False)
    try:
        manager = admin.get_manager(store.db, args.login)
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
        sid = admin.open_game_session(store.db, args.login)
    except LookupError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        store.close()
    print(sid)
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
    before = signal.signal(signal.SIGTERM, _interrupted)
    try:
        copied = ops.backup(args.db, args.to)
    finally:
        signal.signal(signal.SIGTERM, before)
    print(f"backed up {args.db} to {copied.path}: {copied.bytes} bytes in {copied.seconds:.1f} s, head {copied.head} "
          f"({copied.report})")
    return 0


def _restore(args: argparse.Namespace) -> int:
    restored = ops.restore(args.source, args.db, args.force)
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
        ops.export(args.db, args.what, sys.stdout, args.format, args.since)
        sys.stdout.flush()
    except OSError as e:
        # What is still buffered can never be written: standard output becomes /dev/null, so that Python's flush
        # at exit has nothing to complain about (the recipe of the signal module's documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        if isinstance(e, BrokenPipeError):
            return 128 + signal.SIGPIPE
        raise ops.OpsError(f"cannot write the export: {e.strerror}; the export is incomplete") from None
    return 0


def _anchor(text: str) -> str:
    try:
        parse_anchor(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


async def _serve_until_signalled(config: Config, stopped: list[bool], created: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (``stopped`` is set once that is done)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
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
            async for _ in signals:
                await server.shutdown()
                break
        stopped.append(True)


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_format)
    config = Config(db=args.db, host=args.host, tcp_port=args.tcp_port, ws_port=args.ws_port,
                    wallet_port=args.wallet_port, sync_timeout_ms=args.sync_timeout_ms,
                    wallet_test_endpoints=args.wallet_test_endpoints, idle_timeout=args.idle_timeout,
                    silent_timeout=args.silent_timeout,
                    default_currency=args.default_currency, max_connections=args.max_connections,
                    admin_max_connections=args.admin_max_connections,
                    tls_handshake_rate=args.max_handshake_rate or None,
                    max_connect_rate=args.max_connect_rate or None,
                    max_subscribers_per_login=args.max_subscribers_per_login,
                    max_subscribers_per_address=args.max_subscribers_per_address,
                    replay_stall=args.replay_stall, admin_host=args.admin_host,
                    admin_names=tuple(name.strip() for name in args.admin_names.split(",") if name.strip()),
                    admin_port=None if args.admin_port < 0 else args.admin_port, tls_cert=args.tls_cert,
                    tls_key=args.tls_key, game_session_ttl=args.game_session_ttl, writer=args.writer,
                    cluster=args.cluster, log_format=args.log_format)
    created = _new_ledger_note(args.db)
    stopped: list[bool] = []
    try:
        trio.run(_serve_until_signalled, config, stopped, created)
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


def _first(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: ``what``, an integer from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} from {low} to {high}")
        return value
    return parse


_login = _int_in(1, MAX_ID, "a login")  # as the schema's INTEGER and the TCP API take them
_port = _int_in(0, 65535, "a port (0: a free one)")
_admin_port = _int_in(-1, 65535, "a port (0: a free one; -1: none)")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _rate(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError("a number of seconds greater than 0")
    return value


def _currency(text: str) -> str:
    if len(text) != 3 or not text.isascii() or not text.isupper() or not text.isalpha():
        raise argparse.ArgumentTypeError("a three-letter ISO 4217 code such as USD")
    return text


def _serve_options(p: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (and of ``config show``); each can also come from ``--config FILE``."""
    p.add_argument("--config", metavar="FILE", help="a TOML file of these options (flags given here override it)")
    p.add_argument("--db", default="syncledger.db", help="the ledger: an SQLite file (default syncledger.db) or a "
                                                        "postgresql:// URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tcp-port", type=_port, default=7400)
    p.add_argument("--ws-port", type=_port, default=7401)
    p.add_argument("--wallet-port", type=_port, default=7402)
    p.add_argument("--sync-timeout-ms", type=_positive, default=5000)
    p.add_argument("--admin-port", type=_admin_port, default=7403,
                   help="health (/healthz, /readyz) and metrics (/metrics); -1: none (default 7403)")
    p.add_argument("--admin-host", default="127.0.0.1", help="the admin listener's address (default loopback)")
    p.add_argument("--admin-names", default="", metavar="NAMES",
                   help="comma-separated host names the admin listener is reached by (a proxy's, a DNS name): it "
                        "answers only requests whose Host is its own address or one of these (421 otherwise)")
    p.add_argument("--tls-cert", metavar="PATH", help="PEM certificate chain: TLS on every listener")
    p.add_argument("--tls-key", metavar="PATH", help="its private key")
    p.add_argument("--game-session-ttl", type=_positive, default=1800, metavar="SECONDS",
                   help="idle time after which a game session (sid) expires and is forgotten (default 1800)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--writer", choices=("process", "thread"), default="process",
                   help="where batches are applied: a process of its own (default: the server then uses a second "
                        "core) or a thread of the server (one process; see README, Benchmarks)")
    p.add_argument("--cluster", action="store_true",
                   help="one node of several serving one PostgreSQL ledger (each node takes its own clients)")
    p.add_argument("--idle-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="close a connection that has not presented a valid token this long after its first byte "
                        "(default 60)")
    p.add_argument("--silent-timeout", type=_seconds, default=Config.silent_timeout, metavar="SECONDS",
                   help="close a manager connection that has sent nothing at all after this long (default "
                        "%(default)g; the SDKs connect long before their first request)")
    p.add_argument("--max-connections", type=_positive, default=None, metavar="N",
                   help="connections per listener (default: sized to the open-file limit, which serve raises "
                        "to its hard limit)")
    p.add_argument("--admin-max-connections", type=_positive, default=Config.admin_max_connections, metavar="N",
                   help="connections to the admin listener (default %(default)s; at most --max-connections)")
    p.add_argument("--max-connect-rate", type=_rate, default=200, metavar="N",
                   help="new connections a second from one address on each listener, after a first 1,000 "
                        "(default 200; 0: no limit, e.g. behind a proxy that keeps its connections open)")
    p.add_argument("--max-handshake-rate", type=_rate, default=Config.tls_handshake_rate, metavar="N",
                   help="with TLS, new connections a second on each listener, after a first N at once; the rest "
                        "wait for their turn (default %(default)g; 0: no limit)")
    p.add_argument("--max-subscribers-per-login", type=_positive, default=Config.max_subscribers_per_login,
                   metavar="N", help="trade:event subscribers (TCP and WebSocket together) of one manager login, "
                                     "whatever tokens it holds (default %(default)s)")
    p.add_argument("--max-subscribers-per-address", type=_positive, default=Config.max_subscribers_per_address,
                   metavar="N", help="trade:event subscribers from one address (default %(default)s)")
    p.add_argument("--replay-stall", type=_seconds, default=30.0, metavar="SECONDS",
                   help="drop a replaying subscriber that takes nothing for this long (default 30); it resumes "
                        "with from_seq")
    p.add_argument("--default-currency", default="USD", type=_currency,
                   help="currency of an account AddUser creates without one (default USD)")
    p.add_argument("--wallet-test-endpoints", action="store_true",
                   help="serve POST /v1/sid (a fresh sid for an account) for a provider's test suite; "
                        "never in production")


def _apply_config(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make the options in ``--config FILE`` (TOML: ``tcp-port = 7400`` or ``tcp_port = 7400``) the defaults
    of ``p``, checked as the flags are; flags on the command line still win."""
    known, _ = p.parse_known_args(argv)
    if not getattr(known, "config", None):
        return
    try:
        with open(known.config, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {known.config}: {e}") from None
    actions = {a.dest: a for a in p._actions if a.dest not in ("help", "config")}
    defaults = {}
    for key, value in values.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            raise ConfigError(f"{known.config}: unknown option {key} (see syncledger serve --help)")
        kinds, wanted = _toml_type(action)
        if not isinstance(value, kinds) or isinstance(value, bool) != (kinds == (bool,)):
            raise ConfigError(f"{known.config}: {key} = {value!s}: wants {wanted}, not "
                              f"{_TOML_NAMES.get(type(value), type(value).__name__)}")
        try:
            if action.type is not None:
                value = action.type(str(value))
            if action.choices is not None and value not in action.choices:
                raise ValueError(f"one of {', '.join(action.choices)}")
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise ConfigError(f"{known.config}: {key} = {value!s}: {e}") from None
        defaults[action.dest] = value
    p.set_defaults(**defaults)


class ConfigError(Exception):
    """A config file that cannot be used (one line, exit 2)."""


_TOML_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
               dict: "a table"}


def _toml_type(action: argparse.Action) -> tuple[tuple[type, ...], str]:
    """The TOML types a config value for ``action`` may have, and what to call them."""
    if isinstance(action, argparse._StoreTrueAction):
        return (bool,), "true or false"
    if action.type is _seconds:
        return (int, float), "a number"
    if action.type in (_port, _admin_port, _positive, _rate):
        return (int,), "an integer"
    return (str,), "a string"


def _config_show(args: argparse.Namespace) -> int:
    """The effective options as TOML, and whether the secrets from the environment are set (never them)."""
    for key, value in sorted(vars(args).items()):
        if key in ("run", "command", "action", "config") or value is None:
            continue
        print(f"{key.replace('_', '-')} = {json.dumps(engine.shown(value) if key == 'db' else value)}")
    for name in ("SYNCLEDGER_SECRET", "SYNCLEDGER_WALLET_TOKEN"):
        print(f"# {name}: {'set (hidden)' if os.environ.get(name) else 'not set'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's, but a bad flag is one line on stderr and exit 2, as every other refusal (not the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="syncledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    srv = sub.add_parser("serve", help="run the server (Ctrl-C or SIGTERM stops it cleanly)")
    _serve_options(srv)
    srv.set_defaults(run=_serve)
    config = sub.add_parser("config", help="the effective configuration").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="print what serve would run with (file, then flags), secrets masked")
    _serve_options(show)
    show.set_defaults(run=_config_show)
    p.serve_options = {"serve": srv, "config show": show}  # type: ignore[attr-defined]  # for --config

    manager = sub.add_parser("manager", help="manage manager accounts").add_subparsers(dest="action", required=True)
    add = manager.add_parser("add", help="store a manager and its password")
    add.add_argument("--db", default="syncledger.db")
    add.add_argument("--login", type=_login, required=True)
    given = add.add_mutually_exclusive_group()
    given.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    given.add_argument("--password", help="the password on the command line (visible to other users in ps: "
                                          "prefer --password-stdin or the prompt)")
    add.add_argument("--session", choices=["MANAGER", "DEALER", "ADMIN"], default="MANAGER")
    add.set_defaults(run=_manager_add)
    remove = manager.add_parser("remove", help="remove a manager; its tokens are refused at once")
    remove.add_argument("--db", default="syncledger.db")
    remove.add_argument("--login", type=_login, required=True)
    remove.set_defaults(run=_manager_remove)

    token = sub.add_parser("token", help="print a token for a stored manager")
    token.add_argument("--db", default="syncledger.db")
    token.add_argument("--login", type=_login, required=True)
    token.add_argument("--ttl", type=_int_in(1, MAX_TTL, "a number of seconds"), default=None, metavar="SECONDS",
                       help=f"how long the token is good for: from 1 to {MAX_TTL} (366 days; default 24 h)")
    token.set_defaults(run=_token)

    session = sub.add_parser("session", help="game sessions for the wallet API").add_subparsers(
        dest="action", required=True)
    opened = session.add_parser("open", help="print a new sid for an account")
    opened.add_argument("--db", default="syncledger.db")
    opened.add_argument("--login", type=_login, required=True)
    opened.set_defaults(run=_session_open)

    ver = sub.add_parser("verify", help="check the hash chains, that totals equal their rows, keys and triggers "
                                        "(read-only, one snapshot: safe beside a live server)")
    ver.add_argument("--db", default="syncledger.db")
    ver.add_argument("--anchor", type=_anchor, default=None, metavar="SEQ:HASH",
                     help="a head printed earlier by `syncledger head`: fail if that event is no longer in the "
                          "chain (the newest rows removed, or the ledger rewritten)")
    ver.set_defaults(run=_verify)

    bk = sub.add_parser("backup", help="a consistent, verified copy of the ledger, safe while the server runs")
    bk.add_argument("--db", default="syncledger.db")
    bk.add_argument("--to", required=True, metavar="FILE", help="the copy (never overwritten)")
    bk.set_defaults(run=_backup)
    rs = sub.add_parser("restore", help="put a verified backup in place of a ledger no server holds")
    rs.add_argument("--from", dest="source", required=True, metavar="FILE")
    rs.add_argument("--db", default="syncledger.db")
    rs.add_argument("--force", action="store_true",
                    help="restore even a backup that lacks events the ledger holds (they are rolled back), or over "
                         "a ledger that cannot be read; the ledger replaced is kept beside it, whole")
    rs.set_defaults(run=_restore)
    ex = sub.add_parser("export", help="stream a table as CSV, JSON or NDJSON (read-only, one snapshot)")
    ex.add_argument("what", choices=sorted(ops.EXPORTS))
    ex.add_argument("--db", default="syncledger.db")
    ex.add_argument("--format", choices=ops.FORMATS, default="ndjson")
    ex.add_argument("--since", type=_int_in(0, MAX_ID, "an event seq"), default=None, metavar="SEQ",
                    help="only what came after this event seq")
    ex.set_defaults(run=_export)

    mg = sub.add_parser("migrate", help="copy an SQLite ledger no server holds into a new PostgreSQL ledger, "
                                        "verified on both sides")
    mg.add_argument("--from", dest="source", required=True, metavar="PATH", help="the SQLite ledger file")
    mg.add_argument("--to", required=True, metavar="URL", help="postgresql://... (a database or schema with no ledger)")
    mg.set_defaults(run=_migrate)

    hd = sub.add_parser("head", help="print the ledger's head SEQ:HASH (keep it elsewhere, for verify --anchor)")
    hd.add_argument("--db", default="syncledger.db")
    hd.set_defaults(run=_head)
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
    except (*UNUSABLE, _Unreadable, _BadPassword, ops.OpsError, ConfigError, migrate.MigrateError) as e:  # one line, not a traceback
        print(f"syncledger: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
