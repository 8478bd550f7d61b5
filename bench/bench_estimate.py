"""Estimation: what ending an aborted 100k-token stream costs (its usage must be estimated).

    python bench/bench_estimate.py [--quick] [--repeats N]

A `Call` gets 100,000 one-token deltas through `add_text` (as an adapter feeds a stream), then
`abort()`: no provider usage arrived, so the core joins the text once and tokenizes it with tiktoken
(and the prompt). Alternated against the floor, tiktoken encoding the same joined text directly.
Also timed: the `add_text` calls themselves, per delta.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from _common import Case, Options, Row, Thunk, alternate, main, paired_ratio

from tokenspy_core import Call, Tracker
from tokenspy_core.tokenizer import encoding_for_model

MODEL = "gpt-4o"
PROMPT = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
# Each is one o200k_base token (checked in run()).
WORDS = (" the", " keeper", " climbed", " stairs", ",", " counting", " every", " wave", " below", ".")


def deltas(tokens: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(tokens)]


def _fed(parts: list[str]) -> Call:
    call = Call(Tracker(), MODEL, provider="openai", prompt=PROMPT, streamed=True)
    add = call.add_text
    for part in parts:
        add(part)
    return call


def _abort(parts: list[str]) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        call = _fed(parts)

        def thunk() -> None:
            record = call.abort()
            assert record is not None and record.output_tokens == len(parts), record

        return thunk

    return prepare


def _tiktoken(parts: list[str]) -> Callable[[], Thunk]:
    encoding = encoding_for_model(MODEL)

    def prepare() -> Thunk:
        def thunk() -> None:
            len(encoding.encode("".join(parts), disallowed_special=()))

        return thunk

    return prepare


def _add_text(parts: list[str]) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        call = Call(Tracker(), MODEL, provider="openai", prompt=PROMPT, streamed=True)

        def thunk() -> None:
            add = call.add_text
            for part in parts:
                add(part)

        return thunk

    return prepare


def run(opts: Options) -> list[Row]:
    tokens = opts.size(100_000, 10_000)
    parts = deltas(tokens)
    counted = len(encoding_for_model(MODEL).encode("".join(parts), disallowed_special=()))
    if counted != tokens:
        raise AssertionError(f"the deltas are {counted} tokens, not {tokens}")
    floor = "tiktoken encode (floor)"
    cases = [Case(floor, _tiktoken(parts)), Case("Call.abort() → estimate", _abort(parts)),
             Case("Call.add_text × deltas", _add_text(parts))]
    m = alternate(cases, repeats=opts.repeats, warmup=opts.warmup, progress="estimate")
    bench = f"estimate: aborted stream of {tokens:,} tokens"
    abort = m["Call.abort() → estimate"]
    return [
        Row(bench=bench, variant=floor, value=m[floor].median * 1e3, unit="ms", ratio=1.0, baseline="floor",
            note="join + encode of the same text"),
        Row(bench=bench, variant="Call.abort() → estimate", value=abort.median * 1e3, unit="ms",
            ratio=paired_ratio(abort, m[floor]), baseline="floor",
            note=f"{abort.median / tokens * 1e9:.0f} ns/token"),
        Row(bench=bench, variant=f"Call.add_text × {tokens:,} deltas", value=m["Call.add_text × deltas"].median
            / tokens * 1e6, unit="µs/delta", note="before the end: O(1) per delta, no tokenization"),
    ]


def cli(argv: Sequence[str] | None = None) -> None:
    main("bench_estimate: estimating an aborted 100k-token stream", run, argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
