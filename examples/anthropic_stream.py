"""Anthropic's `messages.stream()` helper, observed: exact tokens (cache reads and writes included).

Runs offline against tokenspy's fake provider (which here reports part of the prompt read from the cache
and part written to it); delete the FakeProvider lines to run it against the real API with
ANTHROPIC_API_KEY set.
"""

import os

from tokenspy.testing import FakeProvider

fake = FakeProvider(reply="A haiku: tokens fall like rain, each one counted, none wasted.", cached_tokens=6,
                    cache_write_tokens=4)
fake.start()
os.environ["ANTHROPIC_BASE_URL"] = fake.anthropic_base_url
os.environ["ANTHROPIC_API_KEY"] = "sk-ant-fake"

from anthropic import Anthropic  # noqa: E402

import tokenspy  # noqa: E402

client = tokenspy.observe(Anthropic())  # tracked everywhere, also outside profiled functions


@tokenspy.profile
def write_haiku(topic: str) -> None:
    messages = [{"role": "user", "content": f"A haiku about {topic}"}]
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=256, messages=messages) as stream:
        for text in stream.text_stream:
            print(text, end="", flush=True)
    print()
    usage = stream.get_final_message().usage
    print(f"(the SDK's own usage: {usage.input_tokens} input + {usage.cache_read_input_tokens} read from the "
          f"cache + {usage.cache_creation_input_tokens} written to it, {usage.output_tokens} output)")


write_haiku("tokens")
tokenspy.report()
fake.stop()
