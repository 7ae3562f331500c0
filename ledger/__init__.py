"""syncledger's storage and domain: exact money, finance rules, the append-only store and its audit."""

from .money import MoneyError, to_micro, to_text
from .rules import FinanceRequest, LedgerError, Version
from .store import AddAccount, Event, Finance, Outcome, Receipt, Store
from .verify import Report, head, head_path, parse_anchor, verify, verify_path

__all__ = [
    "AddAccount", "Event", "Finance", "FinanceRequest", "LedgerError", "MoneyError", "Outcome", "Receipt",
    "Report", "Store", "Version", "head", "head_path", "parse_anchor", "to_micro", "to_text", "verify",
    "verify_path",
]
