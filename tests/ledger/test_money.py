"""Money parsing and formatting (ledger/money.py): exact micro-units, every edge the contract names."""

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncledger.ledger.money import MAX_MICRO, MoneyError, to_decimal, to_micro, to_text


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        (0, 0),
        (1, 1_000_000),
        (-3, -3_000_000),
        (10**12, 10**18),
        (-(10**12), -(10**18)),
        (Decimal("0.1"), 100_000),
        (Decimal("0.000001"), 1),
        (Decimal("-0.000001"), -1),
        (Decimal("1.556179"), 1_556_179),
        (Decimal("300.0"), 300_000_000),
        (Decimal("1.5000000"), 1_500_000),  # 7 decimals, but the 7th is a zero: exact
        (Decimal("2.100000000000000000000"), 2_100_000),
        (Decimal("1E+2"), 100_000_000),
        (Decimal("1.2E-5"), 12),
        (Decimal("-0"), 0),
        (Decimal("0E-30"), 0),
        (Decimal("1000000000000"), 10**18),
        (Decimal("1000000000000.000000"), 10**18),
        (Decimal("999999999999.999999"), 10**18 - 1),
        (Decimal("-999999999999.999999"), -(10**18) + 1),
    ],
)
def test_exact_values_parse(value, micro):
    assert to_micro(value) == micro
    assert type(to_micro(value)) is int


def test_decimal_sum_is_exact():
    # The 0.1 + 0.2 bug cannot happen: parsed separately and added as integers.
    assert to_micro(Decimal("0.1")) + to_micro(Decimal("0.2")) == to_micro(Decimal("0.3")) == 300_000


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0.0000001"),
        Decimal("1.0000001"),
        Decimal("-1.0000001"),
        Decimal("1.5000001"),
        Decimal("1E-7"),
        Decimal("1E-1000000"),  # tiny but not zero
        Decimal("123456.1234567"),
    ],
)
def test_more_than_six_decimals_rejected(value):
    with pytest.raises(MoneyError, match="6 decimals"):
        to_micro(value)


@pytest.mark.parametrize(
    "text",
    [
        # 30 significant digits: the default 28-digit context would round these to something
        # that looks like a valid amount.
        "1.00000000000000000000000000001",
        "0.100000000000000000000000000001",
        "999999999999.999999000000000000000001",
        "1.999999999999999999999999999999",
    ],
)
def test_thirty_digit_values_are_rejected_not_rounded(text):
    value = Decimal(text)
    with localcontext() as ctx:
        ctx.prec = 28
        # Precondition: a naive context really would silently turn it into an acceptable amount.
        assert +value != value
        assert (+value).quantize(Decimal("0.000001")) == +value
    with pytest.raises(MoneyError):
        to_micro(value)


@pytest.mark.parametrize("text", ["NaN", "-NaN", "sNaN", "-sNaN", "Infinity", "-Infinity", "inf"])
def test_non_finite_rejected(text):
    with pytest.raises(MoneyError, match="finite"):
        to_micro(Decimal(text))


@pytest.mark.parametrize(
    "value",
    [
        10**12 + 1,
        -(10**12) - 1,
        10**100,
        Decimal("1000000000000.000001"),
        Decimal("-1000000000000.000001"),
        Decimal("1E+13"),
        Decimal("1E+1000000"),  # beyond the default context's Emax: must not leak decimal.Overflow
        Decimal("-1E+1000000"),
        Decimal("1E+999999999999999999"),
    ],
)
def test_magnitude_beyond_10_to_12_rejected(value):
    with pytest.raises(MoneyError, match="magnitude"):
        to_micro(value)


@pytest.mark.parametrize(
    "value",
    [0.1, 1.0, float("nan"), float("inf"), True, False, "1", "1.5", b"1", None, [1], {"amount": 1}, 1 + 0j],
)
def test_non_numbers_rejected(value):
    with pytest.raises(MoneyError, match="JSON number"):
        to_micro(value)


def test_money_error_is_a_value_error():
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (300_000_000, "300.0"),
        (-1, "-0.000001"),
        (1_556_179, "1.556179"),
        (0, "0.0"),
        (1, "0.000001"),
        (1_500_000, "1.5"),
        (-1_500_000, "-1.5"),
        (100_000, "0.1"),
        (1_000_010, "1.00001"),
        (MAX_MICRO, "1000000000000.0"),
        (-MAX_MICRO + 1, "-999999999999.999999"),
        (9 * 10**18, "9000000000000.0"),
    ],
)
def test_to_text(micro, text):
    assert to_text(micro) == text


def test_to_decimal():
    assert to_decimal(1_556_179) == Decimal("1.556179")
    assert to_decimal(-1) == Decimal("-0.000001")


@given(st.integers(min_value=-MAX_MICRO, max_value=MAX_MICRO))
def test_round_trip_micro_text_micro(m):
    text = to_text(m)
    assert to_micro(Decimal(text)) == m
    # The text is a plain JSON number: no exponent, at most 6 decimals, never a trailing zero beyond ".0".
    assert "e" not in text.lower()
    whole, frac = text.lstrip("-").split(".")
    assert whole.isdigit() and frac.isdigit() and 1 <= len(frac) <= 6
    assert frac == "0" or not frac.endswith("0")


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6,
                   min_value=-(10**12), max_value=10**12))
def test_round_trip_decimal_micro_decimal(d):
    m = to_micro(d)
    assert to_decimal(m) == d
    assert Decimal(to_text(m)) == d
