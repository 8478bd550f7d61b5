"""anthropic clients beyond `Anthropic`: a cloud client's copies stay observed; a Messages stream that
ends before its end events was cut short."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest

import tokenspy

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL = "claude-haiku-4-5-20251001"
BODY = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "stop_reason": "end_turn",
        "stop_sequence": None, "content": [{"type": "text", "text": "Hi"}],
        "usage": {"input_tokens": 10, "output_tokens": 2}}


@pytest.mark.parametrize("how", ["with_options", "copy"])
def test_a_copy_of_an_observed_vertex_client_is_observed(how: str) -> None:
    # AnthropicVertex (and AnthropicBedrock) define a `copy` of their own, not Anthropic's.
    http = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=BODY)))
    client = tokenspy.observe(anthropic.AnthropicVertex(region="us-east5", project_id="p", access_token="t",
                                                        max_retries=0, http_client=http))
    getattr(client, how)(timeout=30).messages.create(model=MODEL, max_tokens=5, messages=MESSAGES)
    (record,) = tokenspy.calls()
    assert (record.input_tokens, record.output_tokens, record.provider) == (10, 2, "google_vertexai")


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


START = {"type": "message_start", "message": {**BODY, "content": [], "stop_reason": None,
                                              "usage": {"input_tokens": 30, "output_tokens": 1}}}
BLOCK = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
TEXT = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
        for t in ("Hello", " there")]
DELTA = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 9}}


@pytest.mark.parametrize(("events", "expected"), [
    ((START, BLOCK, *TEXT), ("aborted", True, 2, "mixed")),  # cut before message_delta: its usage never came
    ((START, BLOCK, *TEXT, DELTA), ("finished", False, 9, "provider")),  # message_stop missing: whole all the same
], ids=["no message_delta", "no message_stop"])
def test_a_messages_stream_ending_before_its_end_events_is_cut_short(
        events: tuple[dict[str, Any], ...], expected: tuple[Any, ...]) -> None:
    body = _sse(*events)
    http = httpx2.Client(transport=httpx2.MockTransport(
        lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)))
    client = tokenspy.observe(anthropic.Anthropic(api_key="k", max_retries=0, http_client=http))
    for _ in client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES, stream=True):
        pass
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.output_tokens, record.usage_source) == expected
    assert record.input_tokens == 30
