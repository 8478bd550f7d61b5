"""The span name `@tokenspy.profile` gives callables that are not plain functions: stable across runs
and objects (never a repr with a memory address), as `compare` and the cost tree need."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

import tokenspy
from tokenspy.testing import FakeProvider

MESSAGES = [{"role": "user", "content": "Tell me a joke"}]


@pytest.fixture
def fp() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def oai(fp: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fp.openai_base_url, api_key="sk-fake", max_retries=0)


def answer(client: openai.OpenAI, question: str) -> str:
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": question}])
    return reply.choices[0].message.content or ""


class Agent:
    def __init__(self, client: openai.OpenAI) -> None:
        self.client = client

    def __call__(self, question: str) -> str:
        return answer(self.client, question)

    def run(self, question: str) -> str:
        return answer(self.client, question)


def paths() -> list[tuple[str, ...]]:
    return [r.span_path for r in tokenspy.calls()]


def tree_rows() -> dict[str, int]:
    return {node["name"]: node["calls"] for node in tokenspy.stats()["tree"]["children"]}


def test_a_partial_is_named_after_the_function_it_wraps(oai: openai.OpenAI, fp: FakeProvider) -> None:
    tokenspy.profile(functools.partial(answer, oai))("hi")
    tokenspy.profile(functools.partial(functools.partial(answer), oai, "hi"))()  # partial of a partial
    assert paths() == [("answer",), ("answer",)]
    assert tree_rows() == {"answer": 2}
    usage = fp.requests[0]["usage"]
    record = tokenspy.calls()[0]
    assert (record.input_tokens, record.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.cost == (Decimal("2.5") * usage["prompt_tokens"] + 10 * usage["completion_tokens"]) / 10**6


def test_callable_objects_are_named_after_their_class_one_tree_row_for_all(
        oai: openai.OpenAI, fp: FakeProvider) -> None:
    tokenspy.profile(Agent(oai))("hi")
    tokenspy.profile(Agent(oai))("hi")  # another object of the class: the same row
    tokenspy.profile(functools.partial(Agent(oai), "hi"))()
    assert paths() == [("Agent",)] * 3
    assert tree_rows() == {"Agent": 3}
    assert len(fp.requests) == 3


def test_a_bound_method_is_named_as_the_decorated_method_is(oai: openai.OpenAI) -> None:
    class Decorated:
        @tokenspy.profile
        def run(self, question: str) -> str:
            return answer(oai, question)

    Decorated().run("hi")
    tokenspy.profile(Agent(oai).run)("hi")
    assert paths() == [("run",), ("run",)]


def test_an_async_partial_and_an_async_callable_object_are_named_and_awaited(fp: FakeProvider) -> None:
    client = openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key="sk-fake", max_retries=0)

    async def ask(question: str) -> str:
        reply = await client.chat.completions.create(model="gpt-4o",
                                                     messages=[{"role": "user", "content": question}])
        return reply.choices[0].message.content or ""

    class AsyncAgent:
        async def __call__(self, question: str) -> str:
            return await ask(question)

    async def main() -> None:
        await tokenspy.profile(functools.partial(ask, "hi"))()
        await tokenspy.profile(AsyncAgent())("hi")

    asyncio.run(main())
    assert paths() == [("ask",), ("AsyncAgent",)]
    assert tree_rows() == {"ask": 1, "AsyncAgent": 1}


def test_an_explicit_name_still_wins(oai: openai.OpenAI) -> None:
    tokenspy.profile(name="triage")(functools.partial(answer, oai))("hi")
    tokenspy.profile(name="triage")(Agent(oai))("hi")
    assert paths() == [("triage",), ("triage",)]
