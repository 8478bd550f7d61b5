"""`python -m tokenspy.testing [--port 8765]`: run the fake provider in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ._server import DEFAULT_REPLY, FakeProvider, parse_flags
from ._wire import FLAGS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenspy.testing",
        description="Fake OpenAI/Anthropic API with honest token usage (Ctrl-C to stop).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default: %(default)s)")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the assistant's text answer")
    parser.add_argument("--cached-tokens", type=int, default=0)
    parser.add_argument("--cache-write-tokens", type=int, default=0)
    parser.add_argument("--reasoning-tokens", type=int, default=0)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed events")
    parser.add_argument("--flags", default="", help=f"comma-separated, from: {', '.join(sorted(FLAGS))}")
    args = parser.parse_args(argv)
    try:
        flags = parse_flags([args.flags])
        provider = FakeProvider(
            args.reply,
            cached_tokens=args.cached_tokens,
            cache_write_tokens=args.cache_write_tokens,
            reasoning_tokens=args.reasoning_tokens,
            chunk_delay=args.chunk_delay,
            host=args.host,
            port=args.port,
        )
    except ValueError as exc:
        parser.error(str(exc))
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    with provider:
        provider.set_flags(*flags)
        print(provider.base_url, flush=True)  # first line: machine-readable
        print(f"  OpenAI:    base_url={provider.openai_base_url}", flush=True)
        print(f"  Anthropic: base_url={provider.anthropic_base_url}", flush=True)
        print(f"  log: GET {provider.base_url}/_log   reset: POST {provider.base_url}/_reset", flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
