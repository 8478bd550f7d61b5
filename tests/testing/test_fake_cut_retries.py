"""The `cut` flag and the SDKs' retries, as docs/testing.md states them: a cut non-stream request is a
dropped connection to the SDK, retried whatever the server's headers say; a cut stream is not."""

from __future__ import annotations

import anthropic
import httpx
import httpx2
import openai
import pytest

from tokenspy.testing import FakeProvider

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_cut_non_stream_is_retried_unless_max_retries_is_0_and_a_cut_stream_is_not(
        fake_provider: FakeProvider) -> None:
    fake_provider.set_flags("cut")
    oai = openai.OpenAI(base_url=fake_provider.openai_base_url, api_key="t", max_retries=1,
                        http_client=openai.DefaultHttpxClient(verify=False))
    claude = anthropic.Anthropic(base_url=fake_provider.anthropic_base_url, api_key="t", max_retries=1,
                                 http_client=anthropic.DefaultHttpxClient(verify=False))
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert len(fake_provider.requests) == 2  # the first request and its one retry
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=QUESTION)
    assert len(fake_provider.requests) == 4
    with pytest.raises(openai.APIConnectionError):
        oai.with_options(max_retries=0).chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert len(fake_provider.requests) == 5

    with pytest.raises(httpx.RemoteProtocolError):
        list(oai.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True))
    with pytest.raises(httpx2.RemoteProtocolError):
        list(claude.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=QUESTION, stream=True))
    log = fake_provider.requests
    assert [(e["path"], e["stream"], e["outcome"]) for e in log[5:]] == [
        ("/v1/chat/completions", True, "error"), ("/v1/messages", True, "error")]
