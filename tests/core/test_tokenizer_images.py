"""Images and documents in a prompt, estimated when the provider's usage did not arrive: each image by
its provider's published rule from the size its file header states (OpenAI: 512-px tiles after fitting
2048×2048 and a 768-px shortest side; Anthropic: width × height / 750 within 1568 px and ~1,600 tokens),
an Anthropic text document as its text. The images are real files built here, byte by byte."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from tokenspy_core.tokenizer import count_message_tokens, count_prompt_tokens

QUESTION = {"type": "text", "text": "What is in this image?"}
TEXT_ONLY = [{"role": "user", "content": [QUESTION]}]
TEXT = 13  # count_message_tokens(TEXT_ONLY, "gpt-4o"): the message, its framing and the reply priming


def png(width: int, height: int) -> bytes:
    """A real PNG: 1-bit grayscale, all black (so even a 4096×8192 one is a few kilobytes)."""
    row = b"\x00" + b"\x00" * -(-width // 8)  # filter byte, then the packed pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


def jpeg(width: int, height: int, exif_bytes: int = 0) -> bytes:
    """A baseline JPEG's header as a camera writes it: JFIF, an EXIF segment (`exif_bytes` long, as a
    thumbnail makes it), a quantization table, then the frame header with the size."""
    def segment(marker: int, data: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack(">H", len(data) + 2) + data

    exif = segment(0xE1, b"Exif\x00\x00" + b"\x00" * exif_bytes) if exif_bytes else b""
    frame = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return (b"\xff\xd8" + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00") + exif
            + segment(0xDB, b"\x00" + bytes(range(1, 65))) + segment(0xC0, frame) + b"\xff\xd9")


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def chat(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [QUESTION, *parts]}]


def image_url(url: str, detail: str | None = None) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url} if detail is None else {"url": url, "detail": detail}}


def anthropic_image(image: bytes) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                        "data": base64.b64encode(image).decode()}}


def test_the_text_alone_is_the_baseline() -> None:
    assert count_prompt_tokens(TEXT_ONLY, "gpt-4o") == count_message_tokens(TEXT_ONLY, "gpt-4o") == TEXT


# -- OpenAI ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "image_tokens"), [
    ((300, 300), 85 + 170),          # one tile
    ((512, 512), 85 + 170),
    ((513, 512), 85 + 2 * 170),      # a pixel over: two tiles
    ((1024, 1024), 85 + 4 * 170),    # shortest side to 768: 2×2 tiles (OpenAI's example)
    ((2048, 4096), 85 + 6 * 170),    # fit 2048 (1024×2048), then 768×1536: 2×3 (OpenAI's example)
    ((100, 3000), 85 + 4 * 170),     # fit 2048: 68×2048, shortest side already under 768: 1×4
])
def test_an_openai_image_is_tiled_by_the_size_in_its_header(size: tuple[int, int], image_tokens: int) -> None:
    assert count_prompt_tokens(chat(image_url(data_url(png(*size)), "high")), "gpt-4o") == TEXT + image_tokens
    assert count_prompt_tokens(chat(image_url(data_url(png(*size)))), "gpt-4o") == TEXT + image_tokens  # auto


def test_the_estimate_of_a_300px_png_is_what_openai_bills() -> None:
    assert count_prompt_tokens(chat(image_url(data_url(png(300, 300)))), "gpt-4o") == 268


def test_low_detail_is_85_whatever_the_size() -> None:
    assert count_prompt_tokens(chat(image_url(data_url(png(4096, 8192)), "low")), "gpt-4o") == TEXT + 85
    assert count_prompt_tokens(chat(image_url("https://example.com/cat.png", "low")), "gpt-4o") == TEXT + 85


def test_an_image_of_unknown_size_is_taken_as_1024_square() -> None:
    # An https URL (tokenspy never fetches it) or a file id: 765, OpenAI's 1024×1024 high-detail example.
    assert count_prompt_tokens(chat(image_url("https://example.com/cat.png")), "gpt-4o") == TEXT + 765
    file_image = {"type": "input_image", "file_id": "file-abc"}
    assert count_prompt_tokens(chat(file_image), "gpt-4o") == TEXT + 765


def test_gpt_4o_mini_bills_its_own_tile_numbers() -> None:
    # ~33× the tokens at ~1/33 of gpt-4o's rate: an estimate with gpt-4o's numbers would be 33× cheap.
    assert count_prompt_tokens(chat(image_url(data_url(png(300, 300)))), "gpt-4o-mini") == TEXT + 2833 + 5667
    assert count_prompt_tokens(chat(image_url("https://x.test/a.png", "low")), "gpt-4o-mini") == TEXT + 2833


def test_a_jpeg_size_is_found_past_its_exif_segment() -> None:
    url = data_url(jpeg(2048, 4096, exif_bytes=60_000), "image/jpeg")
    assert count_prompt_tokens(chat(image_url(url)), "gpt-4o") == TEXT + 1105


def test_base64_wrapped_in_lines_is_read_too() -> None:
    wrapped = "data:image/jpeg;base64," + base64.encodebytes(jpeg(1024, 1024, exif_bytes=5_000)).decode()
    assert "\n" in wrapped[:200]
    assert count_prompt_tokens(chat(image_url(wrapped)), "gpt-4o") == TEXT + 765


def test_responses_input_images_and_tool_outputs() -> None:
    url = data_url(png(300, 300))
    message = [{"role": "user", "content": [{"type": "input_text", "text": "What is in this image?"},
                                            {"type": "input_image", "image_url": url, "detail": "auto"}]}]
    assert count_prompt_tokens(message, "gpt-4o") == TEXT + 255
    low = [{"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "low"}]}]
    assert count_prompt_tokens(low, "gpt-4o") == count_prompt_tokens([{"role": "user", "content": ""}], "gpt-4o") + 85
    # A tool's output holding an image, and a computer-use screenshot, are images of the prompt too.
    outputs = [{"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_image", "image_url": url}]},
               {"type": "computer_call_output", "call_id": "c2",
                "output": {"type": "computer_screenshot", "image_url": url}}]
    assert count_prompt_tokens(outputs, "gpt-4o") == count_prompt_tokens(
        [{"type": "function_call_output", "call_id": "c1", "output": ""},
         {"type": "computer_call_output", "call_id": "c2", "output": ""}], "gpt-4o") + 2 * 255


def test_an_unreadable_image_counts_at_the_default_and_never_raises() -> None:
    broken = "data:image/png;base64,iVBORw0K" + "@" * 50  # a PNG's first bytes, then not base64
    assert count_prompt_tokens(chat(image_url(broken)), "gpt-4o") == TEXT + 765
    assert count_prompt_tokens(chat(image_url("data:image/svg+xml,<svg/>")), "gpt-4o") == TEXT + 765


class Payload(str):
    """A data URL that records every slice taken from it."""

    slices: list[int]

    def __getitem__(self, key: Any) -> str:
        taken = str.__getitem__(self, key)
        self.slices.append(len(taken))
        return taken


def test_a_data_url_is_read_only_at_its_header() -> None:
    url = Payload(data_url(png(300, 300)) + "A" * 10_000_000)  # a 10 MB payload
    url.slices = []
    assert count_prompt_tokens(chat(image_url(url)), "gpt-4o") == TEXT + 255
    assert url.slices and max(url.slices) <= 1024


# -- Anthropic ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "image_tokens"), [
    ((200, 200), 54),        # 40,000 px / 750, rounded up (Anthropic's table: ~54)
    ((1000, 1000), 1334),    # Anthropic's table: ~1,334
    ((1092, 1092), 1590),    # the largest square not scaled down
    ((2000, 1000), 1600),    # long edge to 1568: 1568×784 = 1,639: capped at ~1,600
])
def test_an_anthropic_image_is_its_pixels_over_750(size: tuple[int, int], image_tokens: int) -> None:
    messages = chat(anthropic_image(png(*size)))
    assert count_prompt_tokens(messages, "claude-sonnet-4-5") == TEXT + image_tokens


def test_an_anthropic_image_by_url_is_taken_as_the_largest() -> None:
    by_url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    by_file = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    assert count_prompt_tokens(chat(by_url, by_file), "claude-sonnet-4-5") == TEXT + 2 * 1600


def test_the_provider_picks_the_rule_not_the_block_shape() -> None:
    # An OpenAI-shaped part sent to Claude (LangChain's ChatAnthropic converts it) is billed by Anthropic,
    # an Anthropic-shaped block on an unnamed model by Anthropic; gpt-4o's is OpenAI's whatever its shape.
    image = png(1000, 1000)
    assert count_prompt_tokens(chat(image_url(data_url(image))), "claude-haiku-4-5") == TEXT + 1334
    assert count_prompt_tokens(chat(image_url(data_url(image))), "claude-via-gateway") == TEXT + 1334
    assert count_prompt_tokens(chat(image_url(data_url(image))), "kimi-k2", provider="anthropic") == TEXT + 1334
    assert count_prompt_tokens(chat(anthropic_image(image)), None) == TEXT + 1334
    assert count_prompt_tokens(chat(anthropic_image(image)), "gpt-4o") == TEXT + 765
    assert count_prompt_tokens(chat(image_url(data_url(image))), None) == TEXT + 765


def test_a_tool_result_holding_an_image_counts_it() -> None:
    result = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                            "content": [anthropic_image(png(200, 200))]}]}]
    empty = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": []}]}]
    assert count_prompt_tokens(result, "claude-sonnet-4-5") == count_prompt_tokens(empty, "claude-sonnet-4-5") + 54


def test_anthropic_text_documents_count_their_text_title_and_context() -> None:
    body = "The grass is green. The sky is blue."
    plain = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": body},
             "title": "My Document", "context": "Trustworthy."}
    content = {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": body}]}}
    model = "claude-sonnet-4-5"

    def as_text(text: str) -> int:
        return count_message_tokens(chat({"type": "text", "text": text}), model)

    assert count_prompt_tokens(chat(plain), model) == as_text("My DocumentTrustworthy." + body) == 27
    assert count_prompt_tokens(chat(content), model) == as_text(body) == 23


def test_pdfs_files_and_audio_are_not_estimated_offline() -> None:
    pdf = base64.b64encode(b"%PDF-1.7\n" + b"0" * 3000).decode()
    parts = [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}},
        {"type": "input_file", "file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"},
        {"type": "input_audio", "input_audio": {"data": pdf, "format": "wav"}},
    ]
    assert count_prompt_tokens(chat(*parts), "gpt-4o") == TEXT
    assert count_prompt_tokens(chat(*parts[:2]), "claude-sonnet-4-5") == TEXT


def test_the_fake_providers_count_stays_text_only() -> None:
    # `count_message_tokens` is the fake provider's prompt formula (docs/testing.md): images add nothing.
    assert count_message_tokens(chat(image_url(data_url(png(300, 300)))), "gpt-4o") == TEXT


# -- LangChain and LlamaIndex blocks ------------------------------------------------------------------------
def test_langchain_image_blocks() -> None:
    messages_module = pytest.importorskip("langchain_core.messages")
    b64 = base64.b64encode(png(300, 300)).decode()
    blocks = [
        {"type": "image_url", "image_url": data_url(png(300, 300))},  # v0, the URL as a bare string
        {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/png"},  # v0 standard
        {"type": "image", "base64": b64, "mime_type": "image/png"},  # v1
        {"type": "image", "url": "https://example.com/cat.png"},  # v1, unknown size
    ]
    message = messages_module.HumanMessage(content=[QUESTION, *blocks])
    assert count_prompt_tokens([message], "gpt-4o") == TEXT + 3 * 255 + 765
    assert count_prompt_tokens([message], "claude-sonnet-4-5") == TEXT + 3 * 120 + 1600  # 90,000 / 750


def test_llamaindex_image_blocks(tmp_path: Path) -> None:
    llms = pytest.importorskip("llama_index.core.llms")
    path = tmp_path / "wide.png"
    path.write_bytes(png(2000, 1000))
    message = llms.ChatMessage(role="user", blocks=[
        llms.TextBlock(text="What is in this image?"),
        llms.ImageBlock(image=png(300, 300), image_mimetype="image/png"),  # kept as base64 bytes
        llms.ImageBlock(path=path),  # only the file's header is read
        llms.ImageBlock(url="https://example.com/cat.png", detail="low"),
    ])
    assert count_prompt_tokens([message], "gpt-4o") == TEXT + 255 + 1105 + 85
    # The blocks in a content list, as an adapter may hand them on.
    parts = [{"role": "user", "content": [QUESTION, *message.blocks[1:]]}]
    assert count_prompt_tokens(parts, "gpt-4o") == TEXT + 255 + 1105 + 85


# -- other formats, as a real encoder writes them ---------------------------------------------------------
@pytest.mark.parametrize(("fmt", "options"), [
    ("JPEG", {"progressive": True, "icc_profile": b"\x00" * 20_000}),
    ("GIF", {}),
    ("WEBP", {}),                     # lossy: VP8
    ("WEBP", {"lossless": True}),     # VP8L
    ("WEBP", {"exif": b"Exif\x00\x00MM"}),  # extended: VP8X
])
def test_encoder_output_of_other_formats(fmt: str, options: dict[str, Any]) -> None:
    image_module = pytest.importorskip("PIL.Image")
    out = io.BytesIO()
    image_module.new("RGB", (2048, 4096), "white").save(out, fmt, **options)
    url = data_url(out.getvalue(), f"image/{fmt.lower()}")
    assert count_prompt_tokens(chat(image_url(url)), "gpt-4o") == TEXT + 1105
