"""The JSON file's amounts: plain exact decimals, and null (never $0) where nothing was priced."""

from __future__ import annotations

import json

import pytest
from plugin_files import PRELUDE

UNPRICED_AND_TINY = PRELUDE + '''

def test_unpriced():
    tokenspy.record("no-such-model-q11", input_tokens=100, output_tokens=10)


def test_tiny():
    tokenspy.record("m-small", input_tokens=1, output_tokens=0)  # 0.5 µ$
'''


def test_json_exact_cost_is_null_for_unpriced_tests_and_plain_decimal_for_tiny_ones(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=UNPRICED_AND_TINY)
    result = pytester.runpytest("--tokenspy-json", "t.json")
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "t.json").read_text())
    costs = {t["nodeid"]: (t["unpriced_calls"], t["cost_usd"], t["cost_usd_exact"]) for t in data["tests"]}
    assert costs == {
        "test_mixed.py::test_tiny": (0, 5e-07, "0.000000500000000"),  # str(Decimal) would say 5.00000000E-7
        "test_mixed.py::test_unpriced": (1, None, None),               # and 0E-15 here
    }
    total = data["total"]
    assert (total["unpriced_calls"], total["cost_usd"], total["cost_usd_exact"]) == (1, 5e-07, "0.000000500000000")


def test_json_total_of_only_unpriced_calls_is_null(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=UNPRICED_AND_TINY)
    result = pytester.runpytest("--tokenspy-json", "t.json", "-k", "unpriced")
    result.assert_outcomes(passed=1, deselected=1)
    total = json.loads((pytester.path / "t.json").read_text())["total"]
    assert (total["tests"], total["calls"], total["cost_usd"], total["cost_usd_exact"]) == (1, 1, None, None)
