"""A price over $1 per token is refused where it is set; the report formats any amount it is given."""

from __future__ import annotations

import io
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest

import tokenspy
from tokenspy_core.report import fmt_cost
from tokenspy_core.usage import MAX_TOKENS


@pytest.mark.parametrize("argument", ["input", "output", "cached_input", "cache_write", "cache_write_1h"])
@pytest.mark.parametrize("price", [1e30, "1e400", Decimal("1000000.000000001"), Fraction(10**7, 3), 10**400],
                         ids=["float", "text", "decimal", "fraction", "int"])
def test_a_price_above_a_dollar_per_token_is_refused_naming_the_argument(argument: str, price: object) -> None:
    prices: dict[str, object] = {"input": 1, "output": 1, argument: price}
    with pytest.raises(ValueError, match=rf"^{argument} must be at most 1,000,000 USD per million tokens"):
        tokenspy.set_price("m", **prices)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no price known": warned once per model, by whichever test ran first
        record = tokenspy.record("m", input_tokens=1, output_tokens=1)
    assert record is not None and record.cost_usd is None  # nothing half-set


def test_a_dollar_per_token_is_accepted_and_exact() -> None:
    from tokenspy_core.pricing import MAX_PRICE_PER_MTOK  # here: the test file also runs against older code

    assert MAX_PRICE_PER_MTOK == 1_000_000
    tokenspy.set_price("m", input=1_000_000, output="1000000")
    record = tokenspy.record("m", input_tokens=3, output_tokens=2)
    assert record is not None and record.cost_usd == 5.0


def test_a_report_of_a_cost_past_a_quadrillion_dollars_is_printed() -> None:
    tokenspy.set_price("m", input=1_000_000, output=0)  # $1 a token, the most a price can be
    for _ in range(1000):
        tokenspy.record("m", input_tokens=MAX_TOKENS, output_tokens=0)  # the most a count can be
    out = io.StringIO()
    tokenspy.report(file=out, hints=False)
    assert "total: $1.10E+15  ·  1,099,511,627,775,000 tokens  ·  1,000 calls" in out.getvalue()
    assert tokenspy.stats()["total_cost_usd"] == MAX_TOKENS * 1000


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (None, "unpriced"),
        (0.0, "$0"),
        (Decimal("-0"), "$0"),
        (0.00105, "$0.0011"),
        (Decimal("0.00105"), "$0.0011"),
        (0.0000004, "<$0.000001"),
        (1234567.891, "$1,234,567.89"),
        (999_999_999_999_999, "$999,999,999,999,999.00"),
        (1e15, "$1.00E+15"),
        (1e308, "$1.00E+308"),
        (Decimal("1e400"), "$1.00E+400"),
        (Decimal("9.999e999999"), "$1.00E+1000000"),
        (Decimal("1e-999999"), "<$0.000001"),
        (float("inf"), "$inf"),
        (float("nan"), "$nan"),
        (Decimal("sNaN"), "$nan"),
        (Decimal("-1.5"), "-$1.50"),
    ],
)
def test_fmt_cost_formats_any_amount_without_raising(amount: float | Decimal | None, shown: str) -> None:
    assert fmt_cost(amount) == shown
