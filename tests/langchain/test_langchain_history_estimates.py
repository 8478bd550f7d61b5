"""A LangChain history is estimated as the provider is sent it: the estimate of a call without usage."""

from __future__ import annotations

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessageChunk, ToolMessageChunk
from lc_helpers import CLAUDE, GPT

from tokenspy_core.tokenizer import count_message_tokens

TOOL_CALLS = [{"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1", "type": "tool_call"}]


def test_a_streamed_answer_kept_in_the_history_is_an_assistant_message() -> None:
    # Its type is "AIMessageChunk": as a role, two tokens more than "assistant", on every later call.
    streamed = AIMessageChunk("Paris.") + AIMessageChunk(" It is lovely.")
    history = [HumanMessage("Capital of France?"), streamed, HumanMessage("Why?")]
    sent = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris. It is lovely."},
            {"role": "user", "content": "Why?"}]
    assert count_message_tokens(history, GPT) == count_message_tokens(sent, GPT)


def test_a_tool_call_held_as_a_block_and_as_a_tool_call_counts_once() -> None:
    # ChatAnthropic's answer: the `tool_use` block in its content, and the same call in `tool_calls`.
    block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    invoked = AIMessage(content=[block], tool_calls=TOOL_CALLS)
    # Streamed, LangChain merges the block with `input: {}` and the arguments as `partial_json`.
    streamed = AIMessage(content=[{**block, "input": {}, "partial_json": '{"city":"Paris"}'}], tool_calls=TOOL_CALLS)
    sent = [{"role": "assistant", "content": [block]}]
    for message in (invoked, streamed):
        assert count_message_tokens([message], CLAUDE) == count_message_tokens(sent, CLAUDE)


def test_system_and_tool_message_chunks_count_their_roles_as_sent() -> None:
    history = [SystemMessageChunk("Be brief."), HumanMessage("Weather?"),
               AIMessage("", tool_calls=TOOL_CALLS), ToolMessageChunk("sunny", tool_call_id="toolu_1")]
    sent = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": TOOL_CALLS},
            {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"}]
    assert count_message_tokens(history, GPT) == count_message_tokens(sent, GPT)
