"""syncledger's storage and domain: exact money, finance rules, the append-only store and its audit. The names
the server needs are here (``from syncledger.ledger import ...``); its modules are the ledger's own layout."""

from .commands import (AddAccount, CatchUp, Event, Finance, OpenSession, Outcome, PruneSessions, Receipt, WalletCall,
                       WalletResult)
from .errors import LedgerError, LedgerException, LedgerOpenError, RolledBack, SchemaError, Unsure
from .money import MoneyError, to_micro, to_text
from .rules import FinanceRequest, Version
from .store import MAX_ID, Store, make_private
from .verify import Report, head, head_path, parse_anchor, verify, verify_path

__all__ = [
    "MAX_ID", "AddAccount", "CatchUp", "Event", "Finance", "FinanceRequest", "LedgerError", "LedgerException",
    "LedgerOpenError", "MoneyError", "OpenSession", "Outcome", "PruneSessions", "Receipt", "Report", "RolledBack",
    "SchemaError", "Store", "Unsure", "Version", "WalletCall", "WalletResult", "head", "head_path", "make_private",
    "parse_anchor", "to_micro", "to_text", "verify", "verify_path",
]
