"""The ``syncledger`` command: serve, manager add, token, session open, verify."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import time

import trio

from ledger import Store, verify_path
from ledger.migrations import SchemaError

from . import admin
from .app import Config, serve
from .auth import SESSIONS, Tokens


def _manager_add(args: argparse.Namespace) -> int:
    store = Store(args.db)
    try:
        admin.add_manager(store.db, args.login, args.password, SESSIONS[args.session], int(time.time()))
    finally:
        store.close()
    print(f"manager {args.login} ({args.session}) stored in {args.db}")
    return 0


def _token(args: argparse.Namespace) -> int:
    store = Store(args.db)
    try:
        manager = admin.get_manager(store.db, args.login)
        if manager is None:
            print(f"no manager {args.login} in {args.db}", file=sys.stderr)
            return 1
        token, _ = Tokens(admin.load_secret(store.db)).issue(args.login, manager["session"], args.ttl)
    finally:
        store.close()
    print(token)
    return 0


def _session_open(args: argparse.Namespace) -> int:
    store = Store(args.db)
    try:
        sid = admin.open_game_session(store.db, args.login)
    except LookupError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        store.close()
    print(sid)
    return 0


def _verify(args: argparse.Namespace) -> int:
    """One line: ``ok: ...`` (exit 0) or ``FAILED: ...`` naming the first problem (exit 1); a file that is not a
    ledger it can read: one line on stderr, exit 2. Reads one snapshot, read-only: safe beside a live server."""
    import sqlite3  # (imported here: the rest of this module does not need it)

    try:
        report = verify_path(args.db, args.anchor)
    except FileNotFoundError as e:
        print(f"syncledger: {e}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as e:
        print(f"syncledger: cannot verify {args.db}: {e}", file=sys.stderr)
        return 2
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _head(args: argparse.Namespace) -> int:
    """Print the ledger's head ``SEQ:HASH`` (keep it elsewhere: ``verify --anchor`` detects a truncation)."""
    import sqlite3

    from ledger import head_path

    try:
        print(head_path(args.db))
    except FileNotFoundError as e:
        print(f"syncledger: {e}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as e:
        print(f"syncledger: cannot read the head of {args.db}: {e}", file=sys.stderr)
        return 2
    return 0


def _anchor(text: str) -> str:
    from ledger import parse_anchor

    try:
        parse_anchor(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


async def _serve_until_signalled(config: Config, stopped: list[bool]) -> None:
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
            print(f"listening tcp={host}:{ports.tcp} ws={host}:{ports.ws} wallet={host}:{ports.wallet}", flush=True)
            async for _ in signals:
                await server.shutdown()
                break
        stopped.append(True)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = Config(db=args.db, host=args.host, tcp_port=args.tcp_port, ws_port=args.ws_port,
                    wallet_port=args.wallet_port, sync_timeout_ms=args.sync_timeout_ms,
                    wallet_test_endpoints=args.wallet_test_endpoints)
    stopped: list[bool] = []
    try:
        trio.run(_serve_until_signalled, config, stopped)
    except KeyboardInterrupt:
        # A signal that came while shutting down is re-delivered when the receiver closes; the server
        # has stopped cleanly by then, so it changes nothing. Before that, it is a real interrupt.
        if not stopped:
            raise
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    srv = sub.add_parser("serve", help="run the server (Ctrl-C or SIGTERM stops it cleanly)")
    srv.add_argument("--db", default="syncledger.db")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--tcp-port", type=int, default=7400)
    srv.add_argument("--ws-port", type=int, default=7401)
    srv.add_argument("--wallet-port", type=int, default=7402)
    srv.add_argument("--sync-timeout-ms", type=_positive, default=5000)
    srv.add_argument("--wallet-test-endpoints", action="store_true",
                     help="serve POST /v1/sid (a fresh sid for an account) for a provider's test suite; "
                          "never in production")
    srv.set_defaults(run=_serve)

    manager = sub.add_parser("manager", help="manage manager accounts").add_subparsers(dest="action", required=True)
    add = manager.add_parser("add", help="store a manager and its password")
    add.add_argument("--db", default="syncledger.db")
    add.add_argument("--login", type=int, required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--session", choices=["MANAGER", "DEALER", "ADMIN"], default="MANAGER")
    add.set_defaults(run=_manager_add)

    token = sub.add_parser("token", help="print a token for a stored manager")
    token.add_argument("--db", default="syncledger.db")
    token.add_argument("--login", type=int, required=True)
    token.add_argument("--ttl", type=int, default=None, help="seconds (default 24h)")
    token.set_defaults(run=_token)

    session = sub.add_parser("session", help="game sessions for the wallet API").add_subparsers(
        dest="action", required=True)
    opened = session.add_parser("open", help="print a new sid for an account")
    opened.add_argument("--db", default="syncledger.db")
    opened.add_argument("--login", type=int, required=True)
    opened.set_defaults(run=_session_open)

    ver = sub.add_parser("verify", help="check the hash chains, that totals equal their rows, keys and triggers "
                                        "(read-only, one snapshot: safe beside a live server)")
    ver.add_argument("--db", default="syncledger.db")
    ver.add_argument("--anchor", type=_anchor, default=None, metavar="SEQ:HASH",
                     help="a head printed earlier by `syncledger head`: fail if that event is no longer in the "
                          "chain (the newest rows removed, or the ledger rewritten)")
    ver.set_defaults(run=_verify)

    hd = sub.add_parser("head", help="print the ledger's head SEQ:HASH (keep it elsewhere, for verify --anchor)")
    hd.add_argument("--db", default="syncledger.db")
    hd.set_defaults(run=_head)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except SchemaError as e:  # a ledger this program cannot use: one line, not a traceback
        print(f"syncledger: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
