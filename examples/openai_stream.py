"""The seed example: stream a chat completion inside a profiled function, then print the cost box.

It runs offline: the first lines start tokenspy's fake provider and point the SDK at it through the
environment variables `OpenAI()` reads. Delete them to run the very same code against the real API.
The streamed text is exactly what the SDK prints without tokenspy; the report follows it.
"""

import os

from tokenspy.testing import FakeProvider

fake = FakeProvider(reply="Why do programmers prefer dark mode? Because light attracts bugs.").start()
os.environ["OPENAI_BASE_URL"] = fake.openai_base_url
os.environ["OPENAI_API_KEY"] = "sk-fake"

# ---- the seed example, unchanged ----
import tokenspy  # noqa: E402, I001  (the seed's own import order)
from openai import OpenAI  # noqa: E402

client = OpenAI()


@tokenspy.profile
def stream_response(prompt):
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=True)
    for chunk in stream:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
    print()


stream_response("Tell me a joke")
tokenspy.report()
# ---- end of the seed example ----

fake.stop()
