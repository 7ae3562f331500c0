"""The finance and account commands on the store: a finance request applied by the rules (ledger/rules.py) to the
batch's state, idempotent by (manager, extID); an account opened, idempotent the same way. Registered with the
store as the wallet's commands are (see :func:`install`)."""

from __future__ import annotations

from . import reads, rules
from .commands import AddAccount, Finance, Host, Outcome, Receipt, ReceiptRow
from .errors import LedgerError
from .rules import Event, FinanceRequest, Version

MAX_ID = 2**63 - 1  # SQLite INTEGER (PostgreSQL BIGINT): the largest login or order


def next_version(store: Host, req: FinanceRequest, now: int, new_order: int | None) -> Version:
    """The order's next version for ``req``, by the rules, on the batch's current state."""
    current = store.current_version(req.order) if req.order is not None else None
    login = req.login
    if req.op in rules.DELETES:
        login = current.login if current else None  # None: rules.apply answers ORDER_NOT_FOUND
    elif current is None and new_order is None:
        new_order = store.reserve()
    account = store.accounts.get(login)
    if account is None and store.cluster:
        account = store.account(login)
    if account is None and login is not None:
        raise LedgerError(404, "ACCOUNT_NOT_FOUND", f"no account {login}")
    if login in store.disabled:
        raise LedgerError(403, "ACCOUNT_DISABLED", f"account {login} is disabled")
    return rules.apply(req, account[1:] if account else (0, 0), current, new_order or 0, now)


def apply_finance(store: Host, req: FinanceRequest, now: int, source: str, ext_id: str | None,
                  new_order: int | None = None) -> tuple[Version, Event]:
    """Apply one finance request by the rules and append its version and event (inside a batch; a command
    other than Finance: its rows are written at once)."""
    v = next_version(store, req, now, new_order)
    return v, store.append(v, now, source, ext_id)


class _Finance:
    def __init__(self, store: Host):
        self.store = store

    def finance(self, c: Finance) -> Outcome | ReceiptRow:
        """The request applied: its receipt row (see commands.ReceiptRow), or a replay's or conflict's Outcome."""
        store, req = self.store, c.request
        keyed = c.manager is not None and c.ext_id is not None
        if keyed:
            payload = req.payload()
            replay = self._replay(c, payload)
            if replay is not None:
                return replay
        v = next_version(store, req, c.now, c.new_order)
        # ext_id is kept on the row only as the idempotency key it is (verify checks the key is there)
        seq, etype, record = store.stage_record(v, c.now, c.source, c.ext_id if keyed else None)
        row = (seq, v.order, v.login, v.cmd, v.amount, etype, record)
        if keyed:
            store.stage_key(c, payload, 200, seq=seq, receipt=row)
        return row

    def _replay(self, c: Finance, payload: str) -> Outcome | None:
        """The stored outcome of an earlier request with the same (manager, extID), if any."""
        seen = self.store.stored_key(c.manager, c.ext_id, payload)
        if seen is None or isinstance(seen, Outcome):
            return seen
        status, error, message, seq, _, row = seen
        if seq is None:
            return Outcome(error=LedgerError(status, error, message), replay=True)
        if row is not None:  # applied earlier in this batch
            return Outcome(data=Receipt(*row[1:]), replay=True)
        etype, data, order, login, cmd, amount = self.store.db.execute(
            "SELECT e.type, e.data, f.order_id, f.login, f.cmd, f.amount FROM events e "
            "JOIN finance f ON f.id = e.record_id WHERE e.seq = ?", (seq,)).fetchone()
        return Outcome(data=Receipt(order, login, cmd, amount, etype, rules.with_seq(data.encode(), seq)),
                       replay=True)

    def add_account(self, c: AddAccount) -> Outcome:
        store, db = self.store, self.store.db
        keyed = c.manager is not None and c.ext_id is not None
        if keyed:
            seen = store.stored_key(c.manager, c.ext_id, c.payload())
            if isinstance(seen, Outcome):
                return seen
            if seen is not None:
                status, error, message, _, login, _ = seen
                if login is None:
                    return Outcome(error=LedgerError(status, error, message), replay=True)
                return Outcome(data=reads.account(db, login), replay=True)
        login = c.login
        if login is None:
            top = db.execute("SELECT MAX(login) FROM accounts").fetchone()[0] if store.cluster else \
                max(store.accounts, default=999)  # (a cluster's other nodes add accounts too)
            login = max(top or 999, 999) + 1  # from 1000, even after smaller explicit logins
            if login > MAX_ID:
                raise LedgerError(409, "NO_FREE_LOGIN", f"no login above {login - 1} is left: give one explicitly")
        elif store.account(login) is not None:
            raise LedgerError(409, "ACCOUNT_EXISTS", f"account {login} already exists")
        db.execute("INSERT INTO accounts VALUES (?,?,?,?,?,?,?,?,?)",
                   (login, c.name, c.group, c.currency, c.now, c.leverage, c.email, int(c.enable), c.password_hash))
        if not c.enable:
            store.disabled.add(login)
        if keyed:
            store.stage_key(c, c.payload(), 200, login=login)
        store.remember(store.accounts, login, (c.currency, 0, 0))
        return Outcome(data=reads.account(db, login))


def install(store: Host) -> None:
    """Teach ``store`` the finance and account commands."""
    handlers = _Finance(store)
    store.register(Finance, handlers.finance)
    store.register(AddAccount, handlers.add_account)
