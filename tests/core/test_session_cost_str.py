"""`Session.cost_str` and its repr say what the report says: unpriced calls are never hidden."""

from __future__ import annotations

import io

import pytest

import tokenspy

pytestmark = pytest.mark.filterwarnings("ignore:tokenspy. no price known")


def test_a_mixed_session_cost_str_names_its_unpriced_calls_as_the_box_does() -> None:
    with tokenspy.session("mix") as s:
        tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)  # $0.0035
        tokenspy.record("acme-1", input_tokens=500, output_tokens=50)
        tokenspy.record("acme-2", input_tokens=5, output_tokens=5)
    assert (s.cost, s.cost_str) == (0.0035, "$0.0035 + 2 unpriced")
    assert repr(s) == "<tokenspy.session 'mix': $0.0035 + 2 unpriced, 1660 tokens, 3 calls>"
    box = io.StringIO()
    tokenspy.report(file=box, hints=False)
    assert f"  mix          {s.cost_str}  " in box.getvalue()  # the session's row in the box


def test_an_all_unpriced_or_all_priced_session_cost_str_is_the_plain_amount() -> None:
    with tokenspy.session("inhouse") as unpriced:
        tokenspy.record("acme-1", input_tokens=500, output_tokens=50)
    with tokenspy.session("priced") as priced:
        tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)
    with tokenspy.session("idle") as idle:
        pass
    assert [s.cost_str for s in (unpriced, priced, idle)] == ["unpriced", "$0.0035", "$0"]
