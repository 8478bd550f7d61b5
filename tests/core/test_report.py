"""The box report's content."""

from __future__ import annotations

import io

import tokenspy


def _render() -> str:
    out = io.StringIO()
    tokenspy.report(file=out, hints=False)
    return out.getvalue()


def test_empty_tracker_says_so() -> None:
    text = _render()
    assert "no LLM calls recorded" in text and text.startswith("╔")


def test_seed_box_for_one_profiled_call() -> None:
    @tokenspy.profile
    def stream_response() -> None:
        tokenspy.record("gpt-4o", input_tokens=300, output_tokens=20)

    stream_response()
    lines = _render().splitlines()
    assert lines[1].strip("║ ").startswith("tokenspy cost report")
    assert "total: $0.0010  ·  320 tokens  ·  1 call" in lines[2]
    assert lines[4].split()[1:] == ["stream_response", "$0.0010", "████████████████", "100%", "║"]
    assert "└─ gpt-4o" in lines[5] and "$0.0010" in lines[5]
    assert "└─ 320 tokens (in 300 · out 20)" in lines[6]
    assert len({len(line) for line in lines}) == 1  # a closed box


def test_spans_sorted_by_cost_with_shares_nested_and_unpriced_marked() -> None:
    @tokenspy.profile
    def cheap() -> None:
        tokenspy.record("gpt-4o-mini", input_tokens=1000, output_tokens=0)

    @tokenspy.profile
    def pricey() -> None:
        tokenspy.record("gpt-4o", input_tokens=3000, output_tokens=0)
        cheap()

    pricey()
    tokenspy.record("mystery-model", input_tokens=5, output_tokens=5)
    text = _render()
    rows = [line[3:-1].rstrip() for line in text.splitlines()]
    assert "1 unpriced" in rows[2]
    pricey_row = next(r for r in rows if r.startswith("pricey"))
    cheap_row = next(r for r in rows if r.startswith("  cheap"))
    assert rows.index(pricey_row) < rows.index(cheap_row)
    assert pricey_row.endswith("100%") and cheap_row.endswith("2%")
    assert any(r.startswith("(unattributed)") and "unpriced" in r for r in rows)
    assert "$0" not in next(r for r in rows if "mystery-model" in r)


def test_partial_estimated_and_failed_flags_show_under_the_model() -> None:
    call = tokenspy.start_call("gpt-4o", prompt="hi")
    call.add_text("hello")
    call.abort()
    text = _render()
    assert "[1 partial, 1 estimated]" in text


def test_ascii_fallback_for_terminals_without_unicode() -> None:
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    tokenspy.report(file=out, hints=False)
    out.flush()
    text = out.buffer.getvalue().decode("ascii")  # type: ignore[attr-defined]
    assert text.startswith("+") and "#" in text


def test_a_call_whose_model_has_no_name_is_an_unknown_model_not_none() -> None:
    # A custom or fake LangChain chat model names no model: the box says so, as the HTML report does.
    from tokenspy_core import Call, default_tracker

    call = Call(default_tracker(), None)
    call.set_usage(input_tokens=5, output_tokens=2)
    call.finish()
    text = _render()
    assert "└─ (unknown model)" in text and "None" not in text
