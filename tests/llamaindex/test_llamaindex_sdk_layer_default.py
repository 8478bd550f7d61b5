"""A `TokenSpyHandler` switches the SDK layer on, as a profile or session does: the same plain
LlamaIndex call is recorded alike whether or not a session was ever opened earlier in the process.

Fresh interpreters: the SDK layer is patched in once per process, so a test process that opened a
session before would hide the difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tokenspy.testing import DEFAULT_REPLY
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

PLAIN_CALLS = """
    import json, sys
    import tokenspy
    from llama_index.core.llms import ChatMessage
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai import OpenAI
    from tokenspy.llamaindex import TokenSpyHandler
    from tokenspy.testing import FakeProvider

    if sys.argv[1] == "off":
        tokenspy.init(auto_instrument=False)
    tokenspy.set_handler(TokenSpyHandler())
    with FakeProvider(reasoning_tokens=50) as fp:
        # No stream usage asked for (llama-index-llms-openai never asks), no session or profile.
        llm = OpenAI(model="o4-mini", api_base=fp.openai_base_url, api_key="x", max_retries=0)
        for _ in llm.stream_chat([ChatMessage(role="user", content="Capital of France?")]):
            pass
        OpenAIEmbedding(model="text-embedding-3-small", api_base=fp.openai_base_url, api_key="x",
                        max_retries=0).get_text_embedding("Paris")
        sent = [entry["usage"] for entry in fp.requests]
    records = [(r.operation, r.usage_source, r.input_tokens, r.output_tokens, r.reasoning_tokens)
               for r in tokenspy.calls()]
    print(json.dumps({"records": records, "sent": sent}))
"""


def _run(tmp_path: Path, sdk_layer: str) -> dict[str, Any]:
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(PLAIN_CALLS), encoding="utf-8")
    env = {**os.environ, "TOKENSPY_STRICT": "1"}
    done = subprocess.run([sys.executable, str(script), sdk_layer], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_handler_alone_merges_the_sdks_exact_usage_into_its_records(tmp_path: Path) -> None:
    result = _run(tmp_path, "on")
    chat, embedding = result["sent"]
    assert chat["completion_tokens_details"]["reasoning_tokens"] == 50
    assert result["records"] == [
        ["chat", "provider", chat["prompt_tokens"], chat["completion_tokens"], 50],
        ["embeddings", "provider", embedding["prompt_tokens"], 0, 0],
    ]


def test_init_auto_instrument_false_keeps_the_sdk_layer_off(tmp_path: Path) -> None:
    result = _run(tmp_path, "off")
    # LlamaIndex alone: the stream carries no usage (nor its reasoning, never streamed as text), and
    # LlamaIndex drops the embedding's.
    assert result["sent"][0] is None
    prompt = count_message_tokens([{"role": "user", "content": "Capital of France?"}], "o4-mini")
    assert result["records"] == [
        ["chat", "estimated", prompt, count_tokens(DEFAULT_REPLY, "o4-mini"), 0],
        ["embeddings", "estimated", count_tokens("Paris", "text-embedding-3-small"), 0, 0],
    ]
