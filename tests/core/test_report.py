"""The box report's content."""

from __future__ import annotations

import io
import unicodedata

import httpx
import openai
import pytest

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



@pytest.mark.filterwarnings("ignore:tokenspy. no price known")
def test_a_span_whose_calls_are_all_unpriced_has_no_bar_and_no_share() -> None:
    # As the CLI tables and the HTML page: an unpriced span is not 0% of the cost.
    with tokenspy.session("answer"):
        tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)  # $0.0035
        with tokenspy.session("inhouse"):
            tokenspy.record("acme-1", input_tokens=500, output_tokens=50)
    assert _render().splitlines()[4:10] == [
        "║  answer         $0.0035 + 1 unpriced  ████████████████  100%  ║",
        "║    └─ gpt-4o                 $0.0035                          ║",
        "║       └─ 1,100 tokens (in 1,000 · out 100)                    ║",
        "║    inhouse                  unpriced                          ║",
        "║      └─ acme-1              unpriced                          ║",
        "║         └─ 550 tokens (in 500 · out 50)                       ║",
    ]


@pytest.mark.filterwarnings("ignore:tokenspy. no price known")
def test_no_row_is_a_share_of_a_total_that_no_call_priced() -> None:
    with tokenspy.session("inhouse"):
        tokenspy.record("acme-1", input_tokens=500, output_tokens=50)
    tokenspy.record("acme-1", input_tokens=5, output_tokens=5)
    assert _render().splitlines()[2:11] == [
        "║  total: unpriced  ·  560 tokens  ·  2 calls  ·  2 unpriced  ║",
        "╠═════════════════════════════════════════════════════════════╣",
        "║  inhouse         unpriced                                   ║",
        "║    └─ acme-1     unpriced                                   ║",
        "║       └─ 550 tokens (in 500 · out 50)                       ║",
        "║  (unattributed)  unpriced                                   ║",
        "║    └─ acme-1     unpriced                                   ║",
        "║       └─ 10 tokens (in 5 · out 5)                           ║",
        "╚═════════════════════════════════════════════════════════════╝",
    ]


# A gateway serving a model name with escape sequences: OSC 0 retitles the window (BEL ends it),
# CSI 2J clears the screen; 0x9b is the 8-bit CSI, DEL and TAB the other ends of the control range.
_EVIL_MODEL = "gpt-4o\x1b]0;pwned\x07\x1b[2J"


def _gateway_client(served: str) -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 1, "model": served,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})

    return tokenspy.observe(openai.OpenAI(api_key="test", base_url="http://gw.test/v1", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(answer))))


def test_control_characters_in_served_model_and_span_names_reach_the_terminal_as_spaces() -> None:
    client = _gateway_client(_EVIL_MODEL)
    with tokenspy.session("chat\x9b2J\x7f\tend"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert tokenspy.calls()[0].model == _EVIL_MODEL  # the record keeps the name exact
    text = _render()
    assert text.splitlines()[4:7] == [
        "║  chat 2J  end               $0.000035  ████████████████  100%  ║",
        "║    └─ gpt-4o ]0;pwned  [2J  $0.000035                          ║",
        "║       └─ 11 tokens (in 10 · out 1)                             ║",
    ]
    assert not [c for c in text if unicodedata.category(c) == "Cc" and c != "\n"]
