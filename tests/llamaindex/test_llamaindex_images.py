"""An image in a LlamaIndex chat message is part of the prompt an estimate counts."""

from __future__ import annotations

import struct
import zlib

from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
from llama_index.llms.openai import OpenAI

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_message_tokens


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + b"\x00" * -(-width // 8)) * height  # 1-bit grayscale, all black
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_an_image_block_is_estimated_with_the_text(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    # LlamaIndex asks for no stream usage: the prompt is estimated. The ImageBlock was dropped before the
    # estimate (text only: 13 tokens, where OpenAI bills 13 + 255 for a 400x400 image at high detail).
    message = ChatMessage(role="user", blocks=[TextBlock(text="What is in this image?"),
                                               ImageBlock(image=_png(400, 400), image_mimetype="image/png")])
    llm = OpenAI(model="gpt-4o", api_base=fp.openai_base_url, api_key="test", max_retries=0)
    for _ in llm.stream_chat([message]):
        pass
    (record,) = tokenspy.calls()
    text = count_message_tokens([{"role": "user", "content": "What is in this image?"}], "gpt-4o")
    assert (record.usage_source, record.input_tokens) == ("estimated", text + 85 + 170 * 1)
