"""The writer's wallet handler (ledger/wallet.py) on its less common paths: the cuts of its common one (a round's
row updated in place, a debit's order state read with it) leave them as they were."""

from __future__ import annotations

from syncledger.ledger import Finance, FinanceRequest
from syncledger.ledger import wallet as w
from tests.ledger.test_rounds import U, Ledger


def test_a_credit_whose_round_has_no_row_settles_it_and_makes_the_row(tmp_path):
    """A credit's UPDATE of its round finds no row (none in wallet_rounds: never the case in a ledger the wallet
    kept): it is inserted, as the upsert did."""
    ledger = Ledger(str(tmp_path / "l.db"))
    assert ledger.call("debit", "d1", "r1", "g1", 2).status == w.OK
    ledger.store.db.execute("DELETE FROM wallet_rounds")
    assert ledger.call("credit", "c1", "d1", "g1", 5).status == w.OK
    assert ledger.rounds() == {("default", 1000, "g1"): "settled"}
    assert ledger.balance() == 103 * U
    ledger.store.close()


def test_a_credit_for_a_debit_a_manager_deleted_is_already_settled(tmp_path):
    """The debit's order state comes with the debit's row: a manager's DeleteBalance of it (in the same batch as
    the credit, or before) leaves nothing to settle."""
    ledger = Ledger(str(tmp_path / "l.db"))
    assert ledger.call("debit", "d1", "r1", "g1", 2).status == w.OK
    order = ledger.store.db.execute("SELECT order_id FROM wallet_tx WHERE txid = 'd1'").fetchone()[0]
    ledger.one(Finance(FinanceRequest("DeleteBalance", order=order), ledger.now))
    assert ledger.call("credit", "c1", "d1", "g1", 5).status == w.BET_ALREADY_SETTLED
    assert ledger.balance() == 100 * U
    ledger.close()
