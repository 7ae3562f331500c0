"""syncledger's storage and domain: exact money, finance rules, the append-only store and its audit."""

from .money import MoneyError, to_micro, to_text
from .rules import FinanceRequest, LedgerError, Version
from .store import AddAccount, Event, Finance, Outcome, Receipt, Store
from .verify import Report, verify, verify_path

__all__ = [
    "AddAccount", "Event", "Finance", "FinanceRequest", "LedgerError", "MoneyError", "Outcome", "Receipt",
    "Report", "Store", "Version", "to_micro", "to_text", "verify", "verify_path",
]
