"""A "stop" button: a stream read in one thread, closed from another. The reader then fails on the
closed connection; the call was stopped by its consumer, not failed by the provider."""

from __future__ import annotations

import threading
import time
from typing import Any

import anthropic
import openai
import pytest

import tokenspy
from tokenspy.testing import FakeProvider


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_stream_closed_from_another_thread_is_aborted_not_failed(fp: FakeProvider, sdk: str) -> None:
    fp.reply = " ".join(f"word{i}" for i in range(40))
    fp.chunk_delay = 0.02
    stream: Any
    if sdk == "openai":
        client = tokenspy.observe(openai.OpenAI(base_url=fp.openai_base_url, api_key="k", max_retries=0))
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                stream=True)
    else:
        aclient = tokenspy.observe(anthropic.Anthropic(base_url=fp.anthropic_base_url, api_key="k", max_retries=0))
        stream = aclient.messages.create(model="claude-haiku-4-5", max_tokens=100,
                                         messages=[{"role": "user", "content": "hi"}], stream=True)
    received: list[Any] = []
    read_a_few = threading.Event()

    def read() -> None:
        try:
            for item in stream:
                received.append(item)
                if len(received) == 5:
                    read_a_few.set()
        except Exception as exc:  # the closed connection, as without tokenspy
            received.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert read_a_few.wait(5)
    time.sleep(0.05)
    stream.close()
    reader.join(5)
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.error) == ("aborted", True, None)
    assert record.output_tokens > 0
