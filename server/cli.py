"""The ``syncledger`` command: serve, manager add, token, verify."""

from __future__ import annotations

import argparse
import sys
import time

from ledger import Store, verify_path

from . import admin
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


def _verify(args: argparse.Namespace) -> int:
    report = verify_path(args.db)
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    manager = sub.add_parser("manager", help="manage manager accounts").add_subparsers(dest="action", required=True)
    add = manager.add_parser("add", help="store a manager and its password")
    add.add_argument("--db", default="syncledger.db")
    add.add_argument("--login", type=int, required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--session", choices=list(SESSIONS), default="MANAGER")
    add.set_defaults(run=_manager_add)

    token = sub.add_parser("token", help="print a token for a stored manager")
    token.add_argument("--db", default="syncledger.db")
    token.add_argument("--login", type=int, required=True)
    token.add_argument("--ttl", type=int, default=None, help="seconds (default 24h)")
    token.set_defaults(run=_token)

    ver = sub.add_parser("verify", help="check the hash chains and that totals equal their rows")
    ver.add_argument("--db", default="syncledger.db")
    ver.set_defaults(run=_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
