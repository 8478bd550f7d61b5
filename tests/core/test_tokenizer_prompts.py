"""`count_prompt_tokens` on every prompt shape an adapter hands the core, token ids included."""

from __future__ import annotations

from typing import Any

import pydantic

from tokenspy_core.tokenizer import count_message_tokens, count_prompt_tokens, count_tokens

IDS = list(range(1000, 1100))  # 100 token ids


def test_token_ids_count_as_themselves() -> None:
    # Legacy Completions' `prompt` and Embeddings' `input` (LangChain's OpenAIEmbeddings sends ids).
    assert count_prompt_tokens(IDS, "gpt-3.5-turbo-instruct") == 100
    assert count_prompt_tokens(tuple(IDS[:7]), "text-embedding-3-small") == 7


def test_lists_of_token_ids_count_the_sum_of_their_lengths() -> None:
    assert count_prompt_tokens([IDS, IDS[:50]], "gpt-3.5-turbo-instruct") == 150
    assert count_prompt_tokens([IDS, IDS], "text-embedding-3-small") == 200
    assert count_prompt_tokens([[], IDS[:3]], None) == 3


def test_strings_and_messages_are_still_tokenized() -> None:
    assert count_prompt_tokens("Say hello", "gpt-4o") == count_tokens("Say hello", "gpt-4o")
    assert count_prompt_tokens(["Say", "hello"], "gpt-4o") == count_tokens("Say", "gpt-4o") + count_tokens(
        "hello", "gpt-4o")
    messages = [{"role": "user", "content": "Say hello"}]
    assert count_prompt_tokens(messages, "gpt-4o") == count_message_tokens(messages, "gpt-4o")
    assert count_prompt_tokens([], "gpt-4o") == 0


class Block(pydantic.BaseModel):
    """An SDK's content block or item as the SDK returns it (anthropic's `TextBlock`, `ToolUseBlock`,
    openai's Responses `function_call`): a pydantic model with a `type`, which iterates over its fields."""

    type: str
    id: str | None = None
    text: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    arguments: str | None = None
    citations: list[Any] | None = None


TEXT = Block(type="text", text="Let me check.")
TOOL_USE = Block(type="tool_use", id="toolu_1", name="get_weather", input={"city": "Paris"})
FUNCTION_CALL = Block(type="function_call", id="fc_1", name="get_weather", arguments='{"city": "Paris"}')


def test_sdk_block_objects_in_the_history_count_as_their_dicts() -> None:
    def history(blocks: list[Any]) -> list[Any]:
        return [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": blocks}]

    objects = history([TEXT, TOOL_USE])
    dicts = history([block.model_dump(exclude_none=True) for block in (TEXT, TOOL_USE)])
    # 2 messages framed by 3 tokens each, the reply primed by 3, the roles, and the billed text: the
    # tool call as its name and compact JSON input, not the block's field names and ids.
    expected = 3 * 2 + 3 + count_tokens("user", "gpt-4o") + count_tokens("assistant", "gpt-4o") + count_tokens(
        "Weather in Paris?", "gpt-4o") + count_tokens('Let me check.get_weather{"city":"Paris"}', "gpt-4o")
    assert count_message_tokens(objects, "gpt-4o") == count_message_tokens(dicts, "gpt-4o") == expected == 25


def test_a_responses_item_object_in_the_input_counts_as_its_dict() -> None:
    # `input += response.output`: a function_call item is a message of its own with no role or content,
    # counted as the assistant message carrying the same call in a chat history.
    items = [{"role": "user", "content": "Weather in Paris?"}, FUNCTION_CALL]
    as_dicts = [items[0], FUNCTION_CALL.model_dump(exclude_none=True)]
    expected = 3 * 2 + 3 + count_tokens("user", "gpt-4o") + count_tokens("Weather in Paris?", "gpt-4o") + count_tokens(
        "assistant", "gpt-4o") + count_tokens('get_weather{"city": "Paris"}', "gpt-4o")
    assert count_prompt_tokens(items, "gpt-4o") == count_prompt_tokens(as_dicts, "gpt-4o") == expected == 23


def test_a_responses_function_call_output_counts_as_a_tool_message() -> None:
    item = {"type": "function_call_output", "call_id": "fc_1", "output": '{"temp": 21}'}
    as_chat = {"role": "tool", "content": '{"temp": 21}'}
    assert count_prompt_tokens([item], "gpt-4o") == count_prompt_tokens([as_chat], "gpt-4o")
