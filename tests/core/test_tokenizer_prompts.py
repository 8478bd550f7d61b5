"""`count_prompt_tokens` on every prompt shape an adapter hands the core, token ids included."""

from __future__ import annotations

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

