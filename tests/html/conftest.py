"""A known run with exact prices: the tree every HTML test renders."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import tokenspy

# USD per million tokens, so every cost below is exact.
PRICES = {"model-a": (2.0, 8.0), "model-b": (0.5, 1.0)}


def make_known_run() -> dict[str, Any]:
    """pipeline(session) > retrieve, answer > rerank, summarize (one unpriced call); one unattributed call."""
    for model, (inp, out) in PRICES.items():
        tokenspy.set_price(model, input=inp, output=out)

    @tokenspy.profile
    def retrieve() -> None:
        tokenspy.record("model-b", input_tokens=20_000, output_tokens=1_000)  # $0.011

    @tokenspy.profile
    def rerank() -> None:
        tokenspy.record("model-b", input_tokens=8_000, output_tokens=0)  # $0.004

    @tokenspy.profile
    def answer() -> None:
        rerank()
        tokenspy.record("model-a", input_tokens=30_000, output_tokens=2_500, cached_input_tokens=10_000,
                        reasoning_tokens=500)  # $0.08 (cached input billed at the input price here)

    @tokenspy.profile
    def summarize() -> None:
        tokenspy.record("model-a", input_tokens=5_000, output_tokens=500)  # $0.014
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no price known" is the point of this call
            tokenspy.record("unpriced-model", input_tokens=4_000, output_tokens=400)

    with tokenspy.session("pipeline"):
        retrieve()
        answer()
        summarize()
        call = tokenspy.start_call("model-a", prompt="a prompt the tokenizer estimates")
        call.add_text("a partial answer")
        call.abort()
    tokenspy.record("model-b", input_tokens=2_000, output_tokens=0)  # $0.001, outside any span
    return tokenspy.stats()


@pytest.fixture
def known_stats() -> dict[str, Any]:
    return make_known_run()
