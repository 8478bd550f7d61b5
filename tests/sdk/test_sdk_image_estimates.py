"""A prompt with an image, through the real SDK clients, when the provider's usage never arrives: the
image is estimated from the size in its header by the provider's rule (the fake provider bills text
only, so its log gives the text's share and the image's is added: docs/testing.md)."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import anthropic
import openai
from sdk_helpers import HAIKU_MODEL, anthropic_expected, responses_expected
from test_sdk_openai_chat import only_record

import tokenspy
from tokenspy.testing import FakeProvider


def png_base64(width: int, height: int) -> str:
    """A real PNG (1-bit grayscale, black), base64-encoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + b"\x00" * -(-width // 8)) * height
    image = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(image).decode()


PNG_300 = png_base64(300, 300)  # OpenAI: one 512-px tile, 85 + 170 = 255 tokens
PNG_1000 = png_base64(1000, 1000)  # Anthropic: 1,000,000 px / 750 = 1,334 tokens
QUESTION = {"type": "text", "text": "What is in this image?"}


def test_openai_stream_abandoned_without_usage_counts_the_image(oai: openai.OpenAI, fp: FakeProvider) -> None:
    messages: Any = [{"role": "user", "content": [
        QUESTION, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_300}", "detail": "high"}}]}]
    with tokenspy.session("s"):
        stream = oai.chat.completions.create(model="gpt-4o", messages=messages, stream=True,
                                             stream_options={"include_usage": False})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    # 13 for the text (the message, its framing, the reply priming) + 255 for the image, as OpenAI bills.
    assert record.input_tokens == 13 + 255 == 268


def test_responses_stream_stopped_before_usage_counts_the_image(oai: openai.OpenAI, fp: FakeProvider) -> None:
    content: Any = [{"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_300}", "detail": "auto"}]
    request: dict[str, Any] = {"model": "gpt-4o", "input": [{"role": "user", "content": content}]}
    text_billed = responses_expected(oai.responses.create(**request).model_dump()["usage"])["input_tokens"]
    tokenspy.reset()
    with tokenspy.session("s"):
        for event in oai.responses.create(**request, stream=True):
            if event.type == "response.output_text.delta":
                break
    record = only_record()
    assert (record.status, record.usage_source) == ("aborted", "estimated")
    assert record.input_tokens == text_billed + 255


def test_anthropic_stream_left_before_message_start_counts_the_image(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1000}}
    messages: Any = [{"role": "user", "content": [QUESTION, image]}]
    ant.messages.create(model=HAIKU_MODEL, max_tokens=64, messages=messages)
    text_billed = anthropic_expected(fp.requests[-1]["usage"])["input_tokens"]
    tokenspy.reset()
    with tokenspy.observe(ant).messages.stream(model=HAIKU_MODEL, max_tokens=64, messages=messages):
        pass  # left before message_start: the prompt is estimated
    record = only_record()
    assert (record.status, record.usage_source) == ("aborted", "estimated")
    assert record.input_tokens == text_billed + 1334
