"""The finance rules (ledger/rules.py) as pure functions: creates, updates by order, deletes, refusals."""

import orjson
import pytest

from syncledger.ledger import rules
from syncledger.ledger.rules import (
    EV_RECORD_ADD, EV_RECORD_DELETE, EV_RECORD_UPDATE, OP_BALANCE_IN, OP_BALANCE_OUT, OP_CREDIT_IN,
    OP_CREDIT_OUT, TS_CLOSED_NORMAL, TS_DELETED, FinanceRequest, LedgerError, Version, apply, record_json,
)

LOGIN = 1000
NOW = 1_700_000_000
U = 1_000_000  # one unit in micro-units


def create(op, amount, totals=(0, 0), *, order=77, now=NOW, **kw):
    return apply(FinanceRequest(op, LOGIN, amount, **kw), totals, None, order, now)


def refused(status, code, req, totals=(0, 0), current=None, order=77, now=NOW):
    with pytest.raises(LedgerError) as info:
        apply(req, totals, current, order, now)
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


# ------------------------------------------------------------------ creates


@pytest.mark.parametrize(
    ("op", "cmd", "totals", "signed", "after"),
    [
        ("BalanceIn", OP_BALANCE_IN, (5 * U, 7 * U), 2 * U, (7 * U, 7 * U)),
        ("CreditIn", OP_CREDIT_IN, (5 * U, 7 * U), 2 * U, (5 * U, 9 * U)),
        ("BalanceOut", OP_BALANCE_OUT, (5 * U, 7 * U), -2 * U, (3 * U, 7 * U)),
        ("CreditOut", OP_CREDIT_OUT, (5 * U, 7 * U), -2 * U, (5 * U, 5 * U)),
    ],
)
def test_create(op, cmd, totals, signed, after):
    v = create(op, 2 * U, totals, comment="c1")
    assert v == Version(77, 1, LOGIN, cmd, TS_CLOSED_NORMAL, signed, signed, *after, "c1", NOW, NOW)
    assert v.event_type == EV_RECORD_ADD
    assert v.effect == signed


def test_create_keeps_given_times():
    v = create("BalanceIn", U, open_time=100, close_time=200)
    assert (v.open_time, v.close_time) == (100, 200)


@pytest.mark.parametrize(("op", "what"), [("BalanceOut", "balance"), ("CreditOut", "credit")])
def test_out_may_reach_exactly_zero(op, what):
    totals = (3 * U, 3 * U)
    v = create(op, 3 * U, totals)
    assert getattr(v, what) == 0


@pytest.mark.parametrize(
    ("op", "totals"),
    [
        ("BalanceOut", (3 * U - 1, 100 * U)),  # plenty of credit does not pay for balance
        ("CreditOut", (100 * U, 3 * U - 1)),  # nor plenty of balance for credit
        ("BalanceOut", (0, 0)),
        ("CreditOut", (0, 0)),
    ],
)
def test_out_below_zero_is_no_money(op, totals):
    err = refused(409, "NO_MONEY", FinanceRequest(op, LOGIN, 3 * U), totals)
    assert str(LOGIN) in err.message


@pytest.mark.parametrize("op", ["BalanceIn", "CreditIn", "BalanceOut", "CreditOut"])
def test_zero_amount_refused_unless_allowed(op):
    refused(400, "INVALID_DATA", FinanceRequest(op, LOGIN, 0), (U, U))
    v = apply(FinanceRequest(op, LOGIN, 0, allow_zero=True), (U, U), None, 5, NOW)
    assert (v.amount, v.delta, v.balance, v.credit, v.version) == (0, 0, U, U, 1)


@pytest.mark.parametrize("amount", [None, -1, -U])
def test_missing_or_negative_amount_refused(amount):
    refused(400, "INVALID_DATA", FinanceRequest("BalanceIn", LOGIN, amount), (U, U))
    refused(400, "INVALID_DATA", FinanceRequest("CreditOut", LOGIN, amount, allow_zero=True), (U, U))


def test_missing_login_refused():
    refused(400, "INVALID_DATA", FinanceRequest("BalanceIn", None, U))


def test_amount_beyond_range_refused():
    assert create("BalanceIn", 10**18).balance == 10**18
    refused(400, "INVALID_DATA", FinanceRequest("BalanceIn", LOGIN, 10**18 + 1))


def test_totals_stay_storable():
    # A total beyond SQLite's 64-bit INTEGER could not be stored and would sink the whole batch.
    refused(400, "INVALID_DATA", FinanceRequest("BalanceIn", LOGIN, 10**18), (rules.MAX_TOTAL, 0))
    refused(400, "INVALID_DATA", FinanceRequest("CreditIn", LOGIN, 1), (0, rules.MAX_TOTAL))
    assert create("BalanceIn", 1, (rules.MAX_TOTAL - 1, 0)).balance == rules.MAX_TOTAL
    assert rules.MAX_TOTAL < 2**63
    # Taking money out of a full account is still possible.
    assert create("BalanceOut", 1, (rules.MAX_TOTAL, rules.MAX_TOTAL)).balance == rules.MAX_TOTAL - 1


# ------------------------------------------------------------------ updates by order


def existing(op="BalanceIn", amount=10 * U, totals=(0, 0), **kw):
    return apply(FinanceRequest(op, LOGIN, amount, comment="first", open_time=500, close_time=600, **kw),
                 totals, None, 42, NOW)


@pytest.mark.parametrize(
    ("op", "first", "second", "delta"),
    [
        ("BalanceIn", 10 * U, 15 * U, 5 * U),
        ("BalanceIn", 10 * U, 4 * U, -6 * U),
        ("CreditIn", 10 * U, 12 * U, 2 * U),
        ("BalanceOut", 10 * U, 4 * U, 6 * U),  # -4 - (-10)
        ("BalanceOut", 4 * U, 10 * U, -6 * U),
        ("CreditOut", 2 * U, 3 * U, -1 * U),
    ],
)
def test_update_by_order(op, first, second, delta):
    start = (20 * U, 20 * U)
    cur = existing(op, first, start)
    req = FinanceRequest(op, LOGIN, second, comment="second", order=42)
    v = apply(req, (cur.balance, cur.credit), cur, 999, NOW + 60)
    sign = rules.OPERATIONS[op][1]
    assert v.order == 42  # not the fresh number offered
    assert v.version == 2
    assert v.amount == sign * second
    assert v.delta == delta == v.amount - cur.amount
    assert v.state == TS_CLOSED_NORMAL and v.event_type == EV_RECORD_UPDATE
    assert v.comment == "second"
    assert v.open_time == 500  # kept
    assert v.close_time == NOW + 60  # now
    if v.cmd in rules.BALANCE_CMDS:
        assert (v.balance, v.credit) == (cur.balance + delta, cur.credit)
    else:
        assert (v.balance, v.credit) == (cur.balance, cur.credit + delta)


def test_update_takes_given_times():
    cur = existing()
    v = apply(FinanceRequest("BalanceIn", LOGIN, U, order=42, open_time=1, close_time=2), (10 * U, 0), cur, 0, NOW)
    assert (v.open_time, v.close_time) == (1, 2)


def test_update_of_third_version():
    cur = existing()
    v2 = apply(FinanceRequest("BalanceIn", LOGIN, 12 * U, order=42), (10 * U, 0), cur, 0, NOW)
    v3 = apply(FinanceRequest("BalanceIn", LOGIN, 11 * U, order=42), (12 * U, 0), v2, 0, NOW)
    assert (v3.version, v3.delta, v3.balance) == (3, -U, 11 * U)


def test_update_that_lowers_an_in_below_zero_is_no_money():
    cur = existing("BalanceIn", 10 * U)  # balance 10
    spent = (3 * U, 0)  # 7 units already went out through another order
    refused(409, "NO_MONEY", FinanceRequest("BalanceIn", LOGIN, 2 * U, order=42), spent, cur)
    # Lowering to exactly what is left is fine.
    v = apply(FinanceRequest("BalanceIn", LOGIN, 7 * U, order=42), spent, cur, 0, NOW)
    assert (v.delta, v.balance) == (-3 * U, 0)


def test_update_that_raises_an_out_beyond_the_balance_is_no_money():
    cur = existing("CreditOut", 4 * U, (10 * U, 10 * U))  # credit 6
    refused(409, "NO_MONEY", FinanceRequest("CreditOut", LOGIN, 11 * U, order=42), (10 * U, 6 * U), cur)
    v = apply(FinanceRequest("CreditOut", LOGIN, 10 * U, order=42), (10 * U, 6 * U), cur, 0, NOW)
    assert (v.delta, v.credit) == (-6 * U, 0)


@pytest.mark.parametrize(
    "req",
    [
        FinanceRequest("CreditIn", LOGIN, U, order=42),  # other cmd
        FinanceRequest("BalanceOut", LOGIN, U, order=42),  # other cmd, same kind
        FinanceRequest("BalanceIn", LOGIN + 1, U, order=42),  # other login
    ],
)
def test_update_mismatch(req):
    cur = existing("BalanceIn")
    refused(400, "ORDER_MISMATCH", req, (10 * U, 10 * U), cur)


def deleted_version():
    cur = existing("BalanceIn", 10 * U)
    return apply(FinanceRequest("DeleteBalance", order=42), (10 * U, 0), cur, 0, NOW)


def test_update_of_deleted_order():
    refused(409, "ORDER_DELETED", FinanceRequest("BalanceIn", LOGIN, U, order=42), (0, 0), deleted_version())


# ------------------------------------------------------------------ deletes


@pytest.mark.parametrize(
    ("op", "delete", "amount", "totals", "after"),
    [
        ("BalanceIn", "DeleteBalance", 10 * U, (10 * U, 5 * U), (0, 5 * U)),
        ("BalanceOut", "DeleteBalance", 4 * U, (6 * U, 5 * U), (10 * U, 5 * U)),
        ("CreditIn", "DeleteCredit", 5 * U, (10 * U, 5 * U), (10 * U, 0)),
        ("CreditOut", "DeleteCredit", 2 * U, (10 * U, 3 * U), (10 * U, 5 * U)),
    ],
)
def test_delete(op, delete, amount, totals, after):
    cur = existing(op, amount, (20 * U, 20 * U))
    v = apply(FinanceRequest(delete, order=42), totals, cur, 999, NOW + 5)
    assert v.order == 42 and v.version == 2
    assert v.login == LOGIN and v.cmd == cur.cmd
    assert v.state == TS_DELETED and v.event_type == EV_RECORD_DELETE
    assert v.amount == cur.amount  # the record keeps what it was
    assert v.delta == -cur.amount
    assert v.effect == 0
    assert (v.balance, v.credit) == after
    assert (v.comment, v.open_time, v.close_time) == ("first", 500, NOW + 5)


@pytest.mark.parametrize(("op", "delete"), [("BalanceIn", "DeleteBalance"), ("CreditIn", "DeleteCredit")])
def test_delete_of_an_in_that_would_go_negative_is_no_money(op, delete):
    cur = existing(op, 10 * U)
    refused(409, "NO_MONEY", FinanceRequest(delete, order=42), (9 * U, 9 * U), cur)


@pytest.mark.parametrize(
    ("op", "delete"),
    [("BalanceIn", "DeleteCredit"), ("BalanceOut", "DeleteCredit"), ("CreditIn", "DeleteBalance"),
     ("CreditOut", "DeleteBalance")],
)
def test_delete_of_wrong_kind_is_not_found(op, delete):
    cur = existing(op, U, (10 * U, 10 * U))
    refused(404, "ORDER_NOT_FOUND", FinanceRequest(delete, order=42), (10 * U, 10 * U), cur)


@pytest.mark.parametrize("delete", ["DeleteBalance", "DeleteCredit"])
def test_delete_of_missing_order_is_not_found(delete):
    err = refused(404, "ORDER_NOT_FOUND", FinanceRequest(delete, order=4242), (10 * U, 10 * U), None)
    assert "4242" in err.message


def test_delete_of_deleted_order():
    refused(409, "ORDER_DELETED", FinanceRequest("DeleteBalance", order=42), (0, 0), deleted_version())


def test_errors_compare_by_status_and_code():
    assert LedgerError(409, "NO_MONEY", "a") == LedgerError(409, "NO_MONEY", "b")
    assert LedgerError(409, "NO_MONEY", "a") != LedgerError(404, "NO_MONEY", "a")
    assert LedgerError(409, "NO_MONEY", "a") != LedgerError(409, "ORDER_DELETED", "a")


# ------------------------------------------------------------------ records


def test_record_json():
    v = Version(7, 2, LOGIN, OP_BALANCE_OUT, TS_CLOSED_NORMAL, -1_556_179, -1, 300_000_000, 1, "pay-out",
                100, 200)
    raw = record_json(v)
    assert raw == (b'{"order":7,"login":1000,"cmd":8,"state":3,"profit":-1.556179,"comment":"pay-out",'
                   b'"open_time":100,"close_time":200,"version":2,"balance":300.0,"credit":0.000001}')
    # Money is written as exact JSON numbers, never through a float.
    assert b"1.5561790" not in raw and b"e-" not in raw


def test_record_json_of_deleted_order():
    d = deleted_version()
    rec = orjson.loads(record_json(d))
    assert rec["state"] == TS_DELETED
    assert rec["order"] == 42 and rec["version"] == 2
    assert rec["profit"] == 10.0 and rec["balance"] == 0.0


def test_payload_distinguishes_requests():
    base = FinanceRequest("BalanceIn", LOGIN, U, "c", 1, 2, 3)
    assert base.payload() == FinanceRequest("BalanceIn", LOGIN, U, "c", 1, 2, 3).payload()
    variants = [
        FinanceRequest("CreditIn", LOGIN, U, "c", 1, 2, 3),
        FinanceRequest("BalanceIn", LOGIN + 1, U, "c", 1, 2, 3),
        FinanceRequest("BalanceIn", LOGIN, U + 1, "c", 1, 2, 3),
        FinanceRequest("BalanceIn", LOGIN, U, "d", 1, 2, 3),
        FinanceRequest("BalanceIn", LOGIN, U, "c", None, 2, 3),
        FinanceRequest("BalanceIn", LOGIN, U, "c", 1, 9, 3),
        FinanceRequest("BalanceIn", LOGIN, U, "c", 1, 2, 9),
    ]
    assert len({v.payload() for v in variants} | {base.payload()}) == len(variants) + 1
